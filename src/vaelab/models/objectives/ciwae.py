"""The combination importance-weighted autoencoder's objective: a convex combination of the ELBO and the IWAE bound.

Rainforth, Kosiorek, Le, Maddison, Igl, Wood & Teh (2018), *Tighter Variational Bounds are Not Necessarily Better*,
ICML.
"""

from __future__ import annotations

import math

import torch

from vaelab.errors import ConfigError
from vaelab.models.importance import log_importance_weights
from vaelab.models.objectives.base import Objective, ObjectiveValue
from vaelab.models.objectives.miwae import check_draws
from vaelab.models.schedules import ConstantBeta

#: β when none is given from Python: halfway between the ELBO and IWAE
DEFAULT_BETA = 0.5


def combined_bound(log_w: torch.Tensor, beta: float) -> dict[str, torch.Tensor]:
    """From K log weights per image ``(K, B)``: the K-draw ELBO (1/K) Σ_k log w_k (``mc_elbo``), the IWAE bound
    L_K = log (1/K) Σ_k w_k (``iw_bound``), and CIWAE's β·ELBO + (1 − β)·L_K (``ciwae_bound``), each ``(B,)``
    (Rainforth et al. 2018, eq. 8). β = 1 is the ELBO, β = 0 IWAE."""
    elbo = log_w.mean(dim=0)
    iw = torch.logsumexp(log_w, dim=0) - math.log(log_w.shape[0])
    return {"ciwae_bound": beta * elbo + (1.0 - beta) * iw, "iw_bound": iw, "mc_elbo": elbo}


def check_beta_schedule(schedule: ConstantBeta) -> None:
    """Refuse a β schedule that leaves [0, 1] (β is a mixing weight): its target ``model.beta`` and a warm-up's
    ``model.beta_schedule.start`` (every schedule moves between those, or 0, and its target)."""
    for key, value in (("model.beta", schedule.beta), ("model.beta_schedule.start", getattr(schedule, "start", 0.0))):
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"{key} = {value!r} is invalid for CIWAE: it must be a number in [0, 1], the weight of "
                              "the ELBO against the IWAE bound (1: the ELBO, 0: IWAE), e.g. model.beta=0.5")


class CIWAE(Objective):
    """loss = −[β·ELBO + (1 − β)·L_K], batch mean (Rainforth et al. 2018, eq. 8), β ∈ [0, 1], where over the same
    K draws z_k ~ q(z|x) and w_k = p(x, z_k)/q(z_k|x), ELBO = (1/K) Σ_k log w_k and L_K = log (1/K) Σ_k w_k.

    A lower bound on log p(x) between the ELBO (β = 1) and IWAE's L_K (β = 0); the ELBO's part keeps a strong
    gradient signal for the encoder that L_K alone loses as K grows (sec. 3). β is ``model.beta`` (under its paper's
    name ``beta``), so a β schedule (``model/beta_schedule``) may move it, within [0, 1]. The K draws are decoded as
    one batch.

    Logged: ``ciwae_bound`` (the objective, −loss), ``iw_bound`` (L_K) and ``mc_elbo`` (the K-draw ELBO, a Monte-Carlo
    KL; ``val/elbo`` stays the model's one-sample −(recon + KL) with the closed-form KL).

    Args:
        k: K, the draws per image (``model.objective.k``).
    """

    term_names = ("ciwae_bound", "iw_bound", "mc_elbo")
    beta_name = "beta"

    def __init__(self, k: int = 64, schedule: ConstantBeta | None = None) -> None:
        super().__init__(schedule if schedule is not None else ConstantBeta(DEFAULT_BETA))
        check_draws(1, k)
        check_beta_schedule(self.schedule)
        self.k = int(k)

    def forward(self, model, x, out, step) -> ObjectiveValue:
        terms = {name: value.mean() for name, value in
                 combined_bound(log_importance_weights(model, x, out.features, self.k), self.schedule(step)).items()}
        return ObjectiveValue(-terms["ciwae_bound"], terms)
