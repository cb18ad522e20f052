"""The contractive autoencoder's objective: the reconstruction error plus the encoder's sensitivity to its input."""

from __future__ import annotations

import torch
from torch.func import jacrev, vmap

from vaelab.models.objectives.base import Objective, ObjectiveValue


def encoder_jacobian(model, x: torch.Tensor) -> torch.Tensor:
    """J_f(x) = ∂h/∂x of the model's deterministic code h = f(x) for every image of the batch, exactly (reverse-mode
    automatic differentiation, ``torch.func``): shape ``(B, d, *x.shape[1:])``. Differentiable, so a loss may hold
    it."""

    def code_of_one(image: torch.Tensor) -> torch.Tensor:
        return model.encode(image.unsqueeze(0))[0].flatten(1).squeeze(0)

    return vmap(jacrev(code_of_one))(x)


def frobenius_sq(jacobian: torch.Tensor) -> torch.Tensor:
    """‖J‖²_F = Σ_ij J_ij² of every image's Jacobian: shape ``(B,)``."""
    return jacobian.pow(2).flatten(1).sum(dim=1)


class Contractive(Objective):
    """loss = recon + λ · ‖J_f(x)‖²_F, per image, batch mean (Rifai, Vincent, Muller, Glorot & Bengio 2011,
    "Contractive Auto-Encoders: Explicit Invariance During Feature Extraction", ICML, eq. 3 and 4).

    J_f(x) is the Jacobian of the encoder's code h = f(x) with respect to the input pixels, computed exactly (not
    by finite differences or a stochastic estimate), at the cost of one reverse-mode pass per code unit. For the
    paper's one-layer sigmoid encoder h = s(Wx + b) it equals Σⱼ (hⱼ(1 − hⱼ))² Σᵢ Wⱼᵢ² (eq. 5). Logged:
    ``contraction`` (the batch mean of ‖J‖²_F). ``weight`` is λ.
    """

    needs_posterior = False
    term_names = ("contraction",)
    beta_name = None

    def __init__(self, weight: float = 0.1, schedule=None) -> None:
        super().__init__(schedule)
        if not weight >= 0:
            raise ValueError(f"model.objective.weight = {weight!r} is invalid: it must be >= 0, e.g. 0.1")
        self.weight = float(weight)

    def forward(self, model, x, out, step) -> ObjectiveValue:
        if torch.is_inference_mode_enabled():  # validation and testing: the value, outside inference mode
            with torch.inference_mode(False):
                contraction = frobenius_sq(encoder_jacobian(model, x.clone())).mean().detach()
        else:
            contraction = frobenius_sq(encoder_jacobian(model, x)).mean()
        return ObjectiveValue(out.recon.mean() + self.weight * contraction, {"contraction": contraction})

    def weights(self, step: int) -> dict[str, float]:
        return {}

    def schedules(self) -> list:
        return []
