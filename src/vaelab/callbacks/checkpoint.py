"""The run's checkpoints: Lightning's ``ModelCheckpoint`` with three rules of vaelab's (``callbacks.model_checkpoint``).

1. ``last.ckpt`` is the last finished epoch, always. With ``save_last=True`` Lightning 2.6 rewrites ``last.ckpt``
   only when a top-k checkpoint is saved in the same step, so once the monitored metric stops improving
   ``last.ckpt`` falls behind, and a resume from it repeats the epochs since. Here it is written at the end of
   every epoch (where Lightning saves top-k checkpoints: after validation, or at the end of the training epoch when
   there is none), so the work a stopped run loses is at most the epoch in progress.
2. A file is named in the run's record before the file it replaces is deleted. Lightning deletes the old best
   checkpoint as soon as the new one is written; the run's ``metrics.json`` is rewritten when the next epoch starts
   (:class:`vaelab.callbacks.epoch_record.EpochRecord`, which the task places before this callback), so a run killed in
   between left a record naming a deleted file. Superseded files are deleted when the next epoch starts (after
   the record is rewritten) and when training ends; a run stopped by an error or a signal keeps them.
3. A save that fails (full disk, unwritable folder) leaves the best and last checkpoints as they were, so the
   record never names a file that was not written; with :class:`vaelab.tasks.checkpoint_io.AtomicCheckpointIO`
   no half-written file is left under a checkpoint's name either.
4. A resume deletes nothing outside the checkpoint folder. The state a checkpoint restores names files
   (``best_k_models``, ``kth_best_model_path``, ``best_model_path``, ``last_model_path``) that Lightning deletes
   once they are superseded, and its "inside the folder" test does not resolve ``..``. Whoever can write a
   ``last.ckpt`` could so make a resume delete any file the user may delete. Every such path that is not inside
   the checkpoint folder once ``..`` and symlinks are resolved is dropped when the state is loaded, with a warning,
   and a deletion outside that folder is refused whatever asked for it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lightning import LightningModule, Trainer
from lightning.fabric.utilities.cloud_io import _is_local_file_protocol
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_warn

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
            if filepath not in kept and self.holds(filepath):
                super()._remove_checkpoint(trainer, filepath)
        self._superseded.clear()

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_epoch_start(trainer, pl_module)
        self._remove_superseded(trainer)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        self._remove_superseded(trainer)

    # ------------------------------------------------------------------ 4. a resume touches nothing outside the folder
    def holds(self, filepath: str | os.PathLike | None) -> bool:
        """Whether ``filepath`` is a file inside this callback's folder once ``..`` and symlinks are resolved (a
        remote folder, ``s3://…``, is compared as written)."""
        if not filepath or self.dirpath is None:
            return False
        if not _is_local_file_protocol(str(filepath)) or not _is_local_file_protocol(str(self.dirpath)):
            return str(filepath).startswith(str(self.dirpath).rstrip("/") + "/") and ".." not in str(filepath)
        folder, path = Path(os.path.realpath(self.dirpath)), Path(os.path.realpath(filepath))
        return path != folder and path.is_relative_to(folder)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Lightning's, after dropping every path of ``state_dict`` outside this folder: with a warning when the
        state says it is this folder's (a checkpoint vaelab wrote there names only files inside it), silently for
        another run's checkpoint, whose files are that run's."""
        state = dict(state_dict)
        dropped = []
        for key in ("best_model_path", "kth_best_model_path", "last_model_path"):
            if state.get(key) and not self.holds(state[key]):
                dropped.append(str(state[key]))
                state[key] = ""
        if isinstance(state.get("best_k_models"), dict):
            dropped += [str(p) for p in state["best_k_models"] if not self.holds(p)]
            state["best_k_models"] = {p: v for p, v in state["best_k_models"].items() if self.holds(p)}
        if not state.get("best_model_path"):
            state["best_model_score"] = None
        ours = state.get("dirpath") is not None and self.dirpath is not None and (
            os.path.realpath(str(state["dirpath"])) == os.path.realpath(str(self.dirpath)))
        if dropped and ours:
            rank_zero_warn(f"The checkpoint's state names files outside its folder {self.dirpath}: "
                           f"{', '.join(sorted(set(dropped)))}. They were dropped from the state and will never be "
                           "touched (a checkpoint vaelab wrote names only files in its own folder: this one was "
                           "edited or crafted)")
        super().load_state_dict(state)

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
