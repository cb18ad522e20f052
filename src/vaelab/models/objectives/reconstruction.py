"""The deterministic autoencoder's objective: the reconstruction error alone."""

from __future__ import annotations

from vaelab.models.objectives.base import Objective, ObjectiveValue


class Reconstruction(Objective):
    """loss = −log p(x | z) with z = encoder(x), a point: no posterior, no prior, no KL, no β.

    With the Bernoulli likelihood this is the summed binary cross-entropy, with the Gaussian one the summed squared
    error scaled by 1/(2σ²) plus a constant.
    """

    needs_posterior = False
    beta_name = None

    def forward(self, model, x, out, step) -> ObjectiveValue:
        return ObjectiveValue(out.recon.mean())

    def weights(self, step: int) -> dict[str, float]:
        return {}

    def schedules(self) -> list:
        return []
