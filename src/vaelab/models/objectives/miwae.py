"""The multiply importance-weighted autoencoder's objective: the average of M independent K-sample bounds.

Rainforth, Kosiorek, Le, Maddison, Igl, Wood & Teh (2018), *Tighter Variational Bounds are Not Necessarily Better*,
ICML. Also the draw-count checks and the grouped bound that CIWAE and PIWAE share.
"""

from __future__ import annotations

import math
import numbers

import torch

from vaelab import rules
from vaelab.errors import ConfigError
from vaelab.models.importance import log_importance_weights
from vaelab.models.objectives.base import Objective, ObjectiveValue


def check_draws(m: int, k: int) -> None:
    """Refuse M < 1 or K < 1 (``model.objective.m``, ``model.objective.k``) with a message naming the key."""
    if not (isinstance(m, numbers.Integral) and not isinstance(m, bool) and m >= 1):
        raise ConfigError(f"model.objective.m = {m!r} is invalid: it must be an integer >= 1 (the number of "
                          "independent groups of draws), e.g. model.objective.m=8")
    rules.check("model.objective.k", k)


def grouped_bound(log_w: torch.Tensor, m: int, k: int) -> torch.Tensor:
    """(1/M) Σ_m L_K^{(m)} per image, shape ``(B,)``, from M·K log weights ``(M·K, B)``: draws m·K … m·K + K − 1
    form group m, and L_K^{(m)} = log (1/K) Σ_k w_{m,k} (Rainforth et al. 2018, eq. 7).

    M = 1 is IWAE's L_K (Burda et al. 2016, eq. 8); K = 1 is the M-draw Monte-Carlo ELBO (1/M) Σ_m log w_m.
    """
    if log_w.shape[0] != m * k:
        raise ValueError(f"grouped_bound needs M·K = {m * k} log weights per image, got {log_w.shape[0]}")
    groups = log_w.reshape(m, k, *log_w.shape[1:])
    return (torch.logsumexp(groups, dim=1) - math.log(k)).mean(dim=0)


class MIWAE(Objective):
    """loss = −(1/M) Σ_{m=1}^{M} L_K^{(m)}, batch mean, each L_K^{(m)} = log (1/K) Σ_k w_{m,k} an importance-weighted
    bound over its own K draws z_{m,k} ~ q(z|x), w = p(x, z)/q(z|x) (Rainforth et al. 2018, eq. 7, sec. 4).

    Its expectation is L_K, the K-sample IWAE bound, for any M; the M groups average the encoder's gradient over
    more draws, raising its signal-to-noise ratio, which K alone lowers (sec. 3). M = 1 is IWAE(K), K = 1 the
    M-draw ELBO (a Monte-Carlo KL). The M·K draws are decoded as one batch. No β: ``model.beta`` plays no part.

    Logged: ``miwae_bound`` (the objective, −loss) and ``iw_bound``, L_{M·K} over the same M·K draws: the tightest
    bound on log p(x) they give, comparable with IWAE's ``iw_bound`` at K = M·K. ``val/elbo`` stays the model's
    one-sample −(recon + KL), comparable across families.

    Args:
        m: M, the number of independent groups (``model.objective.m``).
        k: K, the draws in each group (``model.objective.k``).
    """

    term_names = ("miwae_bound", "iw_bound")
    beta_name = None

    def __init__(self, m: int = 8, k: int = 8, schedule=None) -> None:
        super().__init__(schedule)
        check_draws(m, k)
        self.m, self.k = int(m), int(k)

    def forward(self, model, x, out, step) -> ObjectiveValue:
        log_w = log_importance_weights(model, x, out.features, self.m * self.k)
        bound = grouped_bound(log_w, self.m, self.k).mean()
        tightest = (torch.logsumexp(log_w, dim=0) - math.log(self.m * self.k)).mean()
        return ObjectiveValue(-bound, {"miwae_bound": bound.detach(), "iw_bound": tightest.detach()})

    def weights(self, step: int) -> dict[str, float]:
        return {}

    def schedules(self) -> list:
        return []
