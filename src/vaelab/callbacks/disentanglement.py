"""Disentanglement scores while training: ``val/mig``, ``val/factor_vae``, ``val/sap`` (and DCI) every few validation
epochs, ``test/…`` when testing, for data with ground-truth factors (``data=shapes``); nothing at all for other data.

The scores are logged like the model's own metrics (``self.log``), so they reach every logger (TensorBoard's
scalars), ``trainer.callback_metrics`` (and so ``metrics.json``'s ``val``/``test`` sections, ModelCheckpoint's
``monitor`` and the value handed to sweepers).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from lightning import Callback, LightningModule, Trainer

from vaelab.metrics.factors import disentanglement_metrics, has_factors

log = logging.getLogger(__name__)


class DisentanglementMetrics(Callback):
    """Log :func:`vaelab.metrics.factors.disentanglement_metrics` of the model at the end of every
    ``every_n_epochs``-th validation epoch (and of the last), and at the end of testing.

    A no-op (no cost, no error, nothing logged) when the DataModule has no factors (no ``factor_sizes``).

    Under DDP rank 0 computes the scores on its own (the fixed sample and the rendered images are the same on every
    rank) and broadcasts them; every rank then logs the same values, so ``sync_dist`` only averages equal numbers
    and ModelCheckpoint sees the metric on every rank.

    Args:
        every_n_epochs: score at the end of every this many validation epochs (and at the last epoch).
        num_samples: the fixed sample of the split that MIG, SAP and DCI are computed on.
        seed: seeds the sample, the FactorVAE votes and the SAP/DCI splits (the same every epoch).
        factor_vae: FactorVAE score options (vote counts, batch size) over
            :data:`vaelab.metrics.factors.DEFAULT_FACTOR_VAE`.
        dci: also compute the DCI scores.
        test: also score when testing (``test/mig`` …).
        protocol: ``disentanglement_lib`` (comparable with Locatello et al. 2019) or ``vaelab`` (see
            :func:`~vaelab.metrics.factors.disentanglement_metrics`).
        dci_predictor: the DCI importance model (None: the protocol's; ``forest``: a small random forest, about a
            second, where the protocol's gradient-boosted trees take about a minute a scoring on a CPU).
    """

    def __init__(
        self,
        every_n_epochs: int = 5,
        num_samples: int = 10_000,
        seed: int = 0,
        factor_vae: Mapping[str, Any] | None = None,
        dci: bool = True,
        test: bool = True,
        protocol: str = "disentanglement_lib",
        dci_predictor: str | None = "forest",
    ) -> None:
        super().__init__()
        if every_n_epochs < 1 or num_samples < 2:
            raise ValueError("every_n_epochs must be >= 1 and num_samples >= 2")
        self.every_n_epochs, self.num_samples, self.seed = int(every_n_epochs), int(num_samples), int(seed)
        self.factor_vae = dict(factor_vae or {})
        self.dci, self.test = bool(dci), bool(test)
        self.protocol, self.dci_predictor = protocol, dci_predictor
        #: seconds the last scoring took (on rank 0), for the curious and for the tests
        self.last_seconds: float | None = None

    def due(self, trainer: Trainer) -> bool:
        """Every ``every_n_epochs``-th validation epoch, and the last (as the dashboards decide)."""
        last_epoch = trainer.max_epochs not in (None, -1) and trainer.current_epoch + 1 >= trainer.max_epochs
        return last_epoch or (trainer.current_epoch + 1) % self.every_n_epochs == 0

    def score(self, trainer: Trainer, pl_module: LightningModule, split: str) -> None:
        datamodule = trainer.datamodule
        if not has_factors(datamodule):
            return
        metrics = None
        if trainer.is_global_zero:
            start = time.perf_counter()
            metrics = disentanglement_metrics(
                getattr(pl_module, "model", pl_module), datamodule, split, num_samples=self.num_samples, seed=self.seed,
                factor_vae=self.factor_vae, dci=self.dci, protocol=self.protocol, dci_predictor=self.dci_predictor,
            )
            self.last_seconds = time.perf_counter() - start
            log.debug("disentanglement scores on %s in %.2f s: %s", split, self.last_seconds, metrics)
        if trainer.world_size > 1:
            metrics = trainer.strategy.broadcast(metrics, src=0)
        pl_module.log_dict({f"{split}/{k}": v for k, v in metrics.items()}, sync_dist=True)

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking or not self.due(trainer):
            return
        self.score(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.test:
            self.score(trainer, pl_module, "test")
