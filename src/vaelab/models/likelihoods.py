"""Decoder likelihoods p(x | z): the reconstruction term of every objective.

``nll`` returns one value per image (shape ``(batch,)``): a sum over pixels, in nats.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from vaelab.models.distributions import LOG_2PI
from vaelab.rules import LIKELIHOODS


def bernoulli_nll_broadcast(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The Bernoulli reconstruction error of ``x`` ``(B, …)`` under each of several decoder outputs ``(n, B, …)``:
    shape ``(n, B)``, without repeating ``x`` n times.

    J = Σᵢ [softplus(lᵢ) − xᵢ lᵢ], the same value as :func:`bernoulli_nll` (x log σ(l) + (1 − x) log(1 − σ(l)) =
    x l − softplus(l) for any x in [0, 1]), in two passes over the logits: what the importance-weighted bound's K
    decodes per image cost besides their matrix products.
    """
    dims = tuple(range(2, logits.dim()))
    return F.softplus(logits).sum(dim=dims) - (logits * x.unsqueeze(0)).sum(dim=dims)


def bernoulli_nll(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Bernoulli reconstruction error J = −Σᵢ [xᵢ log yᵢ + (1 − xᵢ) log(1 − yᵢ)] with y = sigmoid(logits).

    Computed from the logits (log-sum-exp form of binary cross-entropy), so it stays finite where y would
    round to 0 or 1. ``x`` may be any intensity in [0, 1], as in the classic PyTorch VAE example; only for binary x
    is it a log-likelihood (see :func:`vaelab.metrics.likelihood.comparability_notes`).
    """
    return F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(dim=1)


def gaussian_nll(mean: torch.Tensor, x: torch.Tensor, std: float) -> torch.Tensor:
    """Negative log-likelihood of x under N(mean, std² I), in nats, constant included:

    Σᵢ [ (xᵢ − meanᵢ)² / (2 std²) + log std + ½ log 2π ].
    """
    per_pixel = 0.5 * ((x - mean) / std).pow(2) + math.log(std) + 0.5 * LOG_2PI
    return per_pixel.flatten(1).sum(dim=1)


class Likelihood:
    """A decoder likelihood p(x | z): turns the decoder's raw output into an NLL and a mean image."""

    name: str = ""

    def nll(self, output: torch.Tensor, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def nll_samples(self, output: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """−log p(x | z_k) of images ``x`` ``(B, …)`` for decoder outputs of n codes per image ``(n, B, …)``: shape
        ``(n, B)`` (x is broadcast, not copied)."""
        n, batch = output.shape[:2]
        return self.nll(output.flatten(0, 1), x.unsqueeze(0).expand(n, *x.shape).flatten(0, 1)).reshape(n, batch)

    def mean(self, output: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError


class BernoulliLikelihood(Likelihood):
    """The decoder outputs logits; the image is the Bernoulli mean sigmoid(logits)."""

    name = "bernoulli"

    def nll(self, output: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return bernoulli_nll(output, x)

    def nll_samples(self, output: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return bernoulli_nll_broadcast(output, x)

    def mean(self, output: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(output)


class GaussianLikelihood(Likelihood):
    """The decoder outputs the mean of N(mean, std² I) with a fixed std."""

    name = "gaussian"

    def __init__(self, std: float) -> None:
        if not std > 0:
            raise ValueError(f"the Gaussian likelihood needs std > 0, got {std}")
        self.std = float(std)

    def nll(self, output: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return gaussian_nll(output, x, self.std)

    def mean(self, output: torch.Tensor) -> torch.Tensor:
        return output


def make_likelihood(name: str, std: float = 0.1) -> Likelihood:
    """Build the likelihood named ``name`` (one of :data:`vaelab.rules.LIKELIHOODS`)."""
    if name == "bernoulli":
        return BernoulliLikelihood()
    if name == "gaussian":
        return GaussianLikelihood(std)
    raise ValueError(f"unknown likelihood {name!r}: choose one of {', '.join(LIKELIHOODS)}")
