"""The sparse autoencoder's objective: the reconstruction error plus penalties that keep most code units near zero."""

from __future__ import annotations

import torch

from vaelab.models.objectives.base import Objective, ObjectiveValue


def bernoulli_kl(rho: float, rho_hat: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """KL(ρ ‖ ρ̂) = ρ log(ρ/ρ̂) + (1 − ρ) log((1 − ρ)/(1 − ρ̂)) of two Bernoulli distributions, per unit (Ng 2011,
    "Sparse autoencoder", CS294A lecture notes, sec. 2.2). Zero at ρ̂ = ρ, growing without bound as ρ̂ → 0 or 1
    (ρ̂ is clamped to [eps, 1 − eps], so the penalty stays finite)."""
    rho_hat = rho_hat.clamp(eps, 1.0 - eps)
    return rho * torch.log(rho / rho_hat) + (1.0 - rho) * torch.log((1.0 - rho) / (1.0 - rho_hat))


class Sparse(Objective):
    """loss = recon + λ₁ · E[Σⱼ |zⱼ|] + w · Σⱼ KL(ρ ‖ ρ̂ⱼ), per image, batch mean.

    * the L1 penalty on the code (Goodfellow, Bengio & Courville 2016, *Deep Learning*, sec. 14.2.1, eq. 14.7), with
      weight ``l1``, averaged over the batch;
    * the KL penalty of mean activations (Ng 2011, eq. in sec. 2.2): ρ̂ⱼ is unit j's mean activation over the batch
      (the minibatch estimate of its mean over the data), pulled towards the target ``rho``; it needs units in
      (0, 1), so the preset's code is ``model.code.activation=sigmoid``. Weight ``kl_weight`` (Ng's β = 3).

    The KL is of the batch's mean activation, not a mean of per-image KLs: sparsity is a property of a unit over the
    data. Logged: ``l1`` (E[Σⱼ |zⱼ|]), ``sparsity_kl`` (Σⱼ KL(ρ ‖ ρ̂ⱼ)) and ``mean_activation`` (the mean of ρ̂).
    """

    needs_posterior = False
    term_names = ("l1", "sparsity_kl", "mean_activation")
    beta_name = None

    def __init__(self, l1: float = 0.0, rho: float = 0.05, kl_weight: float = 3.0, schedule=None) -> None:
        super().__init__(schedule)
        if not 0.0 < rho < 1.0:
            raise ValueError(f"model.objective.rho = {rho!r} is invalid: it must be in (0, 1), e.g. 0.05")
        if not (l1 >= 0 and kl_weight >= 0):
            raise ValueError(f"model.objective.l1 and kl_weight must be >= 0, got l1={l1!r}, kl_weight={kl_weight!r}")
        self.l1, self.rho, self.kl_weight = float(l1), float(rho), float(kl_weight)

    def forward(self, model, x, out, step) -> ObjectiveValue:
        code = out.mu.flatten(1)
        l1 = code.abs().sum(dim=1).mean()
        rho_hat = code.mean(dim=0)
        sparsity = bernoulli_kl(self.rho, rho_hat).sum()
        loss = out.recon.mean() + self.l1 * l1 + self.kl_weight * sparsity
        return ObjectiveValue(loss, {"l1": l1, "sparsity_kl": sparsity, "mean_activation": rho_hat.mean()})

    def weights(self, step: int) -> dict[str, float]:
        return {}

    def schedules(self) -> list:
        return []
