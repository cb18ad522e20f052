"""Disentanglement scores while training: ``val/mig``, ``val/factor_vae``, ``val/sap`` (and DCI) every few validation
epochs, ``test/…`` when testing, for data with ground-truth factors (``data=shapes``); nothing at all for other data.

The scores are logged like the model's own metrics (``self.log``), so they reach every logger (TensorBoard's
scalars), ``trainer.callback_metrics`` (and so ``metrics.json``'s ``val``/``test`` sections, ModelCheckpoint's
``monitor`` and the value handed to sweepers).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vaelab.callbacks.scores import ScoreCallback
from vaelab.metrics.factors import disentanglement_metrics, has_factors


class DisentanglementMetrics(ScoreCallback):
    """Log :func:`vaelab.metrics.factors.disentanglement_metrics` of the model at the end of every
    ``every_n_epochs``-th validation epoch (and of the last), and at the end of testing.

    A no-op (no cost, no error, nothing logged) when the DataModule has no factors (no ``factor_sizes``).

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
        super().__init__(every_n_epochs, test)
        if num_samples < 2:
            raise ValueError("num_samples must be >= 2")
        self.num_samples, self.seed = int(num_samples), int(seed)
        self.factor_vae = dict(factor_vae or {})
        self.dci = bool(dci)
        self.protocol, self.dci_predictor = protocol, dci_predictor

    def compute(self, model: Any, datamodule: Any, split: str) -> dict[str, float]:
        if not has_factors(datamodule):
            return {}
        return disentanglement_metrics(
            model, datamodule, split, num_samples=self.num_samples, seed=self.seed, factor_vae=self.factor_vae,
            dci=self.dci, protocol=self.protocol, dci_predictor=self.dci_predictor,
        )
