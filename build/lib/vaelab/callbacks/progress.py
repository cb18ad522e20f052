"""Progress for a person at a terminal, and for a log file: a redrawn bar, or one plain line per epoch.

A scheduler (SLURM, a CI job, ``nohup … > train.log``) writes stdout to a file, where a progress bar's carriage-return
redraws pile up as thousands of partial lines. :func:`progress_bar`, the ``callbacks.progress_bar`` of
``conf/callbacks``, keeps Lightning's bar when stdout is a terminal and prints :class:`EpochLines` otherwise.
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any

from lightning import LightningModule, Trainer
from lightning.pytorch.callbacks import ProgressBar, TQDMProgressBar


def is_terminal(stream: IO[str] | None = None) -> bool:
    stream = sys.stdout if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def progress_bar(refresh_rate: int = 10, stream: IO[str] | None = None) -> ProgressBar:
    """Lightning's bar (redrawn every ``refresh_rate`` steps) when stdout is a terminal, else :class:`EpochLines`."""
    if is_terminal(stream):
        return TQDMProgressBar(refresh_rate=refresh_rate)
    return EpochLines(stream=stream)


def _number(value: float) -> str:
    return f"{value:.4g}" if abs(value) < 1e-3 or abs(value) >= 1e5 else f"{value:.2f}"


class EpochLines(ProgressBar):
    """One line per finished training epoch, e.g.
    ``Epoch 3/20  41 steps  1.2 s  train/loss 31.52  val/loss 30.87  val/elbo -30.87``: the training and
    validation loss and the metric checkpoints are chosen on (``model.monitor``)."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        super().__init__()
        self._enabled = True
        self._stream = stream
        self._first_epoch = 0
        self._epoch_start = 0.0
        self._step_start = 0

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def print(self, *args: Any, **kwargs: Any) -> None:
        if self._enabled:
            print(*args, file=self._stream or sys.stdout, flush=True, **kwargs)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._first_epoch = trainer.current_epoch
        self._epoch_start, self._step_start = time.perf_counter(), trainer.global_step

    def line(self, trainer: Trainer, pl_module: LightningModule, epoch: int) -> str:
        metrics = trainer.callback_metrics
        names = ["train/loss", "val/loss", getattr(pl_module, "hparams", {}).get("monitor")]
        shown = [f"{name} {_number(float(metrics[name]))}" for name in dict.fromkeys(names)
                 if name and name in metrics]
        total = trainer.max_epochs if trainer.max_epochs not in (None, -1) else "?"
        seconds = time.perf_counter() - self._epoch_start
        steps = trainer.global_step - self._step_start
        return "  ".join([f"Epoch {epoch + 1}/{total}", f"{steps} steps", f"{seconds:.1f} s", *shown])

    def _epoch_done(self, trainer: Trainer, pl_module: LightningModule, epoch: int) -> None:
        # (printed once the next epoch starts or training ends: by then the module has logged the epoch's means)
        if trainer.is_global_zero:
            self.print(self.line(trainer, pl_module, epoch))
        self._epoch_start, self._step_start = time.perf_counter(), trainer.global_step

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.current_epoch > self._first_epoch:
            self._epoch_done(trainer, pl_module, trainer.current_epoch - 1)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._epoch_done(trainer, pl_module, trainer.current_epoch - 1)
