"""The run's record after every epoch, so a run killed outright still says how far it got."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lightning import Callback, LightningModule, Trainer

from vaelab.record import UPDATED, write_json


class EpochRecord(Callback):
    """Rewrite the run's ``metrics.json`` with ``status: running`` as each training epoch is done, so a run killed
    outright (SIGKILL, out of memory, a lost node) still says how far it got: the last finished epoch's metrics, the
    epochs done, the best checkpoint so far.

    It writes once an epoch, when the next epoch starts (by then every epoch-end hook has run: the module has logged
    its means, the checkpoint callbacks, which Lightning calls last, have saved) and when training ends; rank 0
    only; atomically (see :func:`write_json`). The task places it before the checkpoint callback, whose deletion
    of superseded checkpoints (:class:`vaelab.callbacks.checkpoint.RunCheckpoint`) then follows this write.

    Args:
        path: the ``metrics.json`` to write.
        record: the task's record (updated in place, so the final write starts from it).
        progress: what training has reached, from the trainer (``vaelab.tasks.train.fit_record``).
    """

    def __init__(self, path: Path, record: dict[str, Any], progress: Callable[[Trainer], dict[str, Any]]) -> None:
        super().__init__()
        self.path, self.record, self.progress = Path(path), record, progress
        self._first_epoch = 0

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._first_epoch = trainer.current_epoch  # (a resumed run starts later)

    def write(self, trainer: Trainer) -> None:
        if not trainer.is_global_zero or trainer.sanity_checking:
            return
        self.record.update(self.progress(trainer))
        self.record[UPDATED] = time.strftime("%Y-%m-%dT%H:%M:%S")
        write_json(self.path, self.record)  # (a folder gone read-only or full: RecordWriteError stops the run)

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.current_epoch > self._first_epoch:
            self.write(trainer)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.write(trainer)


