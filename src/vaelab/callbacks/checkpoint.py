"""The run's checkpoints: Lightning's ``ModelCheckpoint`` with three rules of vaelab's (``callbacks.model_checkpoint``).

1. ``last.ckpt`` is the last finished epoch, always. With ``save_last=True`` Lightning 2.6 rewrites ``last.ckpt``
   only when a top-k checkpoint is saved in the same step, so once the monitored metric stops improving
   ``last.ckpt`` falls behind, and a resume from it repeats the epochs since. Here it is written at the end of
   every epoch (where Lightning saves top-k checkpoints: after validation, or at the end of the training epoch when
   there is none), so the work a stopped run loses is at most the epoch in progress.
2. A file is named in the run's record before the file it replaces is deleted. Lightning deletes the old best
   checkpoint as soon as the new one is written; the run's ``metrics.json`` is rewritten when the next epoch starts
   (:class:`vaelab.tasks.record.EpochRecord`, which the task places before this callback), so a run killed in
   between left a record naming a deleted file. Superseded files are deleted when the next epoch starts (after
   the record is rewritten) and when training ends; a run stopped by an error or a signal keeps them.
3. A save that fails (full disk, unwritable folder) leaves the best and last checkpoints as they were, so the
   record never names a file that was not written; with :class:`vaelab.tasks.checkpoint_io.AtomicCheckpointIO`
   no half-written file is left under a checkpoint's name either.
"""

from __future__ import annotations

from typing import Any

from lightning import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn

#: the attributes that say which checkpoints are the best (restored when a save fails)
_BEST_STATE = ("best_k_models", "kth_best_model_path", "kth_value", "best_model_path", "best_model_score",
               "current_score")


class RunCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` (same arguments) that keeps ``last.ckpt`` at the last epoch, deletes a superseded file
    only after the run's record names its successor, and rolls back its state when a save fails (see the module)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._last_saved_step: int | None = None
        self._superseded: list[str] = []

    # ------------------------------------------------------------------------------------ 1. last.ckpt every epoch
    def _save_last_every_epoch(self, trainer: Trainer) -> None:
        if (not self.save_last or trainer.fast_dev_run or trainer.sanity_checking
                or trainer.state.fn != TrainerFn.FITTING or self._last_saved_step == trainer.global_step):
            return
        self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._save_last_every_epoch(trainer)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._save_last_every_epoch(trainer)

    # ------------------------------------------------------------------- 2. delete after the record names the new
    def _remove_checkpoint(self, trainer: Trainer, filepath: str) -> None:
        self._superseded.append(filepath)

    def _remove_superseded(self, trainer: Trainer) -> None:
        kept = {self.best_model_path, self.last_model_path, *self.best_k_models}
        for filepath in self._superseded:
            if filepath not in kept:
                super()._remove_checkpoint(trainer, filepath)
        self._superseded.clear()

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_epoch_start(trainer, pl_module)
        self._remove_superseded(trainer)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        self._remove_superseded(trainer)

    # ------------------------------------------------------------------------------ 3. a failed save changes nothing
    def _update_best_and_save(self, current: Any, trainer: Trainer, monitor_candidates: dict[str, Any]) -> None:
        before = {name: getattr(self, name) for name in _BEST_STATE}
        before["best_k_models"] = dict(self.best_k_models)
        try:
            super()._update_best_and_save(current, trainer, monitor_candidates)
        except BaseException:
            for name, value in before.items():
                setattr(self, name, value)
            raise

    def _save_none_monitor_checkpoint(self, trainer: Trainer, monitor_candidates: dict[str, Any]) -> None:
        before = self.best_model_path
        try:
            super()._save_none_monitor_checkpoint(trainer, monitor_candidates)
        except BaseException:
            self.best_model_path = before
            raise

    def _save_last_checkpoint(self, trainer: Trainer, monitor_candidates: dict[str, Any]) -> None:
        before = self.last_model_path
        try:
            super()._save_last_checkpoint(trainer, monitor_candidates)
        except BaseException:
            self.last_model_path = before
            raise
        if self.save_last:
            self._last_saved_step = trainer.global_step
