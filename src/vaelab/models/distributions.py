"""Densities and draws of the latent Gaussians, kept apart from any architecture or objective.

Per-image functions return one value per image (shape ``(batch,)``, summed over latent dimensions); the
``*_per_dimension`` ones keep the latent dimension.
"""

from __future__ import annotations

import math

import torch

LOG_2PI = math.log(2.0 * math.pi)


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


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I), summed over the last dimension."""
    return -0.5 * (z.pow(2) + LOG_2PI).sum(dim=-1)


def normal_log_prob_per_dimension(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z_j; μ_j, σ_j²) for every dimension j, broadcasting z against (μ, log σ²) (no sum)."""
    return -0.5 * (LOG_2PI + logvar + (z - mu).pow(2) * torch.exp(-logvar))


def gaussian_draws(
    mu: torch.Tensor, logvar: torch.Tensor, n: int, generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` draws z_k = μ + σ·ε_k ~ N(μ, diag σ²) per row, shape ``(n, B, D)``, and log N(z_k; μ, σ²) of each,
    shape ``(n, B)``.

    The density is evaluated through ε, as log N(ε; 0, I) − Σ_j log σ_j (the change of variables z = μ + σ·ε),
    without the round-off of (z − μ)/σ when σ is tiny. Draws and densities are in float32 at least (never
    bf16-coarse under bf16-mixed precision).
    """
    batch, latent_dim = mu.shape
    dtype = torch.promote_types(mu.dtype, torch.float32)
    mu, logvar = mu.to(dtype), logvar.to(dtype)
    eps = torch.randn((n, batch, latent_dim), generator=generator, dtype=dtype, device=mu.device)
    z = mu + torch.exp(0.5 * logvar) * eps
    return z, standard_normal_log_prob(eps) - 0.5 * logvar.sum(dim=-1)
