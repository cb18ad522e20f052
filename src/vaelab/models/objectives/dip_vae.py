"""DIP-VAE: the ELBO plus a penalty pulling the covariance of the aggregate posterior q(z) towards the identity, so
the inferred factors are decorrelated (disentangled inferred prior).

Kumar, Sattigeri & Balakrishnan (2018), *Variational Inference of Disentangled Latent Concepts from Unlabeled
Observations*, ICLR.
"""

from __future__ import annotations

import math

import torch

from vaelab.errors import ConfigError
from vaelab.models.objectives.base import Objective, ObjectiveValue

KINDS = ("i", "ii")
#: λ_d / λ_od as the paper sets it for each kind (λ_d = 10·λ_od for DIP-VAE-I, λ_d = λ_od for DIP-VAE-II)
PAPER_DIAGONAL_RATIO = {"i": 10.0, "ii": 1.0}


def batch_covariance(mu: torch.Tensor) -> torch.Tensor:
    """Cov_p(x)[μ(x)] over a batch of posterior means (B, d): (1/B) Σ_b (μ_b − μ̄)(μ_b − μ̄)ᵀ, the covariance of
    the batch's empirical distribution (the paper's estimate from a minibatch)."""
    centred = mu - mu.mean(dim=0, keepdim=True)
    return centred.T @ centred / mu.shape[0]


def code_covariance(mu: torch.Tensor, logvar: torch.Tensor | None, kind: str) -> torch.Tensor:
    """The covariance DIP-VAE pulls towards I, from a batch: Cov_p(x)[μ(x)] for DIP-VAE-I (Kumar et al. 2018,
    eq. 6); Cov_q(z)[z] = E_p(x)[Σ(x)] + Cov_p(x)[μ(x)] for DIP-VAE-II (eq. 7), Σ(x) = diag σ²(x)."""
    cov = batch_covariance(mu)
    if kind == "ii":
        cov = cov + torch.diag_embed(logvar.flatten(1).exp().mean(dim=0))
    return cov


def covariance_penalties(cov: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(Σ_{i≠j} C_ij², Σ_i (C_ii − 1)²) of a covariance C: how far it is from the identity off and on its diagonal."""
    diagonal = cov.diagonal()
    off = cov.pow(2).sum() - diagonal.pow(2).sum()
    return off, (diagonal - 1.0).pow(2).sum()


def _weight(key: str, value) -> float:
    if not (isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < math.inf):
        raise ConfigError(f"model.objective.{key} = {value!r} is invalid: it must be a finite number >= 0, e.g. "
                          f"model.objective.{key}=10")
    return float(value)


class DIPVAE(Objective):
    """loss = recon + β(step)·KL + λ_od Σ_{i≠j} C_ij² + λ_d Σ_i (C_ii − 1)², recon and KL per image, batch mean, C the
    covariance of :func:`code_covariance` estimated on the batch (Kumar et al. 2018, eq. 6 for ``kind: i``, eq. 7
    for ``kind: ii``).

    DIP-VAE-I penalises the covariance of the posterior means; DIP-VAE-II that of the codes themselves (the means'
    covariance plus the mean posterior variance), which also counts the posterior's own spread. ``lambda_d`` null
    takes the paper's ratio (:data:`PAPER_DIAGONAL_RATIO`): 10·λ_od for I, λ_od for II. β is ``model.beta`` (the
    paper's ELBO: 1). The penalty is of the batch, a number per batch, not per image.

    Logged: ``dip_offdiag`` (Σ_{i≠j} C_ij²), ``dip_diag`` (Σ_i (C_ii − 1)²) and ``dip_penalty`` (their weighted sum).
    """

    term_names = ("dip_penalty", "dip_offdiag", "dip_diag")

    def __init__(self, kind: str = "i", lambda_od: float = 10.0, lambda_d: float | None = None,
                 schedule=None) -> None:
        super().__init__(schedule)
        if kind not in KINDS:
            raise ConfigError(f"model.objective.kind = {kind!r} is invalid: it must be one of {', '.join(KINDS)} "
                              "(DIP-VAE-I: the covariance of the posterior means; II: of the codes)")
        self.kind = kind
        self.lambda_od = _weight("lambda_od", lambda_od)
        self.lambda_d = (PAPER_DIAGONAL_RATIO[kind] * self.lambda_od if lambda_d is None
                         else _weight("lambda_d", lambda_d))

    def forward(self, model, x, out, step) -> ObjectiveValue:
        off, diag = covariance_penalties(code_covariance(out.mu.flatten(1), out.logvar, self.kind))
        penalty = self.lambda_od * off + self.lambda_d * diag
        loss = out.recon.mean() + self.schedule(step) * out.kl.mean() + penalty
        return ObjectiveValue(loss, {"dip_penalty": penalty, "dip_offdiag": off, "dip_diag": diag})
