"""What the score callbacks share: when to score (every few validation epochs, the last, and when testing), rank 0
computing and broadcasting, and logging like the model's own metrics.

The scores are logged with ``self.log``, so they reach every logger (TensorBoard's scalars),
``trainer.callback_metrics`` (and so ``metrics.json``'s ``val``/``test`` sections, the HParams tab's ``hparams/test_…``
columns, ModelCheckpoint's ``monitor`` and the value handed to sweepers). Subclasses say what they score
(:meth:`ScoreCallback.compute`).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.utilities.seed import isolate_rng

log = logging.getLogger(__name__)


class ScoreCallback(Callback):
    """Log :meth:`compute`'s scores of the pure model at the end of every ``every_n_epochs``-th validation epoch (and
    of the last, with ``last_epoch``), and at the end of testing (with ``test``).

    Under DDP rank 0 computes the scores on its own (they are over fixed samples, the same on every rank) and
    broadcasts them; every rank then logs the same values, so ``sync_dist`` only averages equal numbers. Nothing here
    changes the global random number generators (the scores draw from their own seeded ones, and whatever draws from
    the global ones, such as building a network, runs inside Lightning's ``isolate_rng``), so a run trains the same
    with the scores on or off.
    """

    def __init__(self, every_n_epochs: int = 5, test: bool = True, last_epoch: bool = True) -> None:
        super().__init__()
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be >= 1, got {every_n_epochs}")
        self.every_n_epochs, self.test, self.last_epoch = int(every_n_epochs), bool(test), bool(last_epoch)
        #: seconds the last scoring took (on rank 0), for the curious and for the tests
        self.last_seconds: float | None = None

    def compute(self, model: Any, datamodule: Any, split: str) -> dict[str, float]:  # pragma: no cover - interface
        """The scores of the pure ``model`` on ``split`` of ``datamodule`` (``{}``: nothing to score here)."""
        raise NotImplementedError

    def due(self, trainer: Trainer) -> bool:
        """Every ``every_n_epochs``-th validation epoch, and the last with ``last_epoch`` (as the dashboards decide)."""
        last = trainer.max_epochs not in (None, -1) and trainer.current_epoch + 1 >= trainer.max_epochs
        return (self.last_epoch and last) or (trainer.current_epoch + 1) % self.every_n_epochs == 0

    def score(self, trainer: Trainer, pl_module: LightningModule, split: str) -> None:
        metrics = None
        if trainer.is_global_zero:
            start = time.perf_counter()
            model = getattr(pl_module, "model", pl_module)
            was_training = model.training
            model.eval()
            try:
                with isolate_rng():  # e.g. building the feature network draws its initial weights
                    metrics = self.compute(model, trainer.datamodule, split)
            finally:
                model.train(was_training)
            self.last_seconds = time.perf_counter() - start
            log.debug("%s on %s in %.2f s: %s", type(self).__name__, split, self.last_seconds, metrics)
        if trainer.world_size > 1:
            metrics = trainer.strategy.broadcast(metrics, src=0)
        if metrics:
            pl_module.log_dict({f"{split}/{k}": float(v) for k, v in metrics.items()}, sync_dist=True)

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking or not self.due(trainer):
            return
        self.score(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.test:
            self.score(trainer, pl_module, "test")
