"""The terms of the autoencoder objectives, kept apart from any architecture.

Every function returns one value *per image* (shape ``(batch,)``): sums over pixels and over latent dimensions.
The model averages over the batch, so each logged term is in nats per image and β means what it means in
Kingma & Welling (2014) and Higgins et al. (2017).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

LOG_2PI = math.log(2.0 * math.pi)

#: A latent unit u is active when Cov_x(E_q(z|x)[z_u]) exceeds this (Burda et al. 2016, sec. 5.2).
ACTIVE_UNIT_THRESHOLD = 0.01


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Draw z ~ N(μ, σ²) as z = μ + σ·ε with ε ~ N(0, I) (Kingma & Welling 2014, eq. 10).

    σ = exp(½ log σ²), so gradients flow to both μ and log σ².
    """
    eps = torch.randn_like(mu, dtype=torch.promote_types(mu.dtype, torch.float32))  # never a bf16-coarse ε
    return mu + torch.exp(0.5 * logvar) * eps


def kl_to_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(μ, σ²) ‖ N(0, I)) in closed form, summed over latent dimensions (Kingma & Welling 2014, app. B):

    −½ Σⱼ (1 + log σⱼ² − μⱼ² − σⱼ²).

    Zero exactly at μ = 0, σ = 1 and positive everywhere else.
    """
    return kl_per_dimension(mu, logvar).sum(dim=1)


def kl_per_dimension(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """The same KL, one column per latent dimension (shape ``(batch, latent_dim)``)."""
    return -0.5 * (1.0 + logvar - mu.pow(2) - logvar.exp())


def bernoulli_nll(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Bernoulli reconstruction error J = −Σᵢ [xᵢ log yᵢ + (1 − xᵢ) log(1 − yᵢ)] with y = sigmoid(logits).

    Computed from the logits (log-sum-exp form of binary cross-entropy), so it stays finite where y would
    round to 0 or 1. ``x`` may be any intensity in [0, 1], as in the classic PyTorch VAE example.
    """
    return F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(dim=1)


def gaussian_nll(mean: torch.Tensor, x: torch.Tensor, std: float) -> torch.Tensor:
    """Negative log-likelihood of x under N(mean, std² I), in nats, constant included:

    Σᵢ [ (xᵢ − meanᵢ)² / (2 std²) + log std + ½ log 2π ].
    """
    per_pixel = 0.5 * ((x - mean) / std).pow(2) + math.log(std) + 0.5 * LOG_2PI
    return per_pixel.flatten(1).sum(dim=1)


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I), summed over the last dimension."""
    return -0.5 * (z.pow(2) + LOG_2PI).sum(dim=-1)


class Likelihood:
    """A decoder likelihood p(x | z): turns the decoder's raw output into an NLL and a mean image."""

    name: str = ""

    def nll(self, output: torch.Tensor, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def mean(self, output: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError


class BernoulliLikelihood(Likelihood):
    """The decoder outputs logits; the image is the Bernoulli mean sigmoid(logits)."""

    name = "bernoulli"

    def nll(self, output: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return bernoulli_nll(output, x)

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


LIKELIHOODS = ("bernoulli", "gaussian")


def make_likelihood(name: str, std: float = 0.1) -> Likelihood:
    """Build the likelihood named ``name`` (one of :data:`LIKELIHOODS`)."""
    if name == "bernoulli":
        return BernoulliLikelihood()
    if name == "gaussian":
        return GaussianLikelihood(std)
    raise ValueError(f"unknown likelihood {name!r}: choose one of {', '.join(LIKELIHOODS)}")
