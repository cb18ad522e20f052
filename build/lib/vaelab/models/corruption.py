"""Corruptions of the input for the denoising autoencoder (Vincent, Larochelle, Bengio & Manzagol 2008, "Extracting
and Composing Robust Features with Denoising Autoencoders", ICML; Vincent et al. 2010, JMLR, sec. 4.2).

The encoder sees x̃ ~ q_D(x̃ | x); the loss scores the reconstruction against the clean x. Each corruption maps images
in [0, 1] to images in [0, 1] and draws from ``generator`` when given (else from the global generator), so a seeded
view shows the same corrupted images every epoch. Config group ``model/corruption``.
"""

from __future__ import annotations

import torch
from torch import nn


def _uniform(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    # (drawn on the CPU when a CPU generator is given, so a seeded draw is the same on any device)
    if generator is None:
        return torch.rand_like(x)
    return torch.rand(x.shape, generator=generator, device=generator.device).to(x.device, x.dtype)


def _check_fraction(name: str, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"model.corruption.{name} = {value!r} is invalid: it must be in [0, 1]")
    return float(value)


class GaussianNoise(nn.Module):
    """x̃ = clip(x + σ·ε, 0, 1) with ε ~ N(0, I): additive isotropic Gaussian noise (Vincent et al. 2010, sec. 4.2).
    ``clip=False`` leaves x̃ unbounded (for a Gaussian likelihood on unbounded data)."""

    def __init__(self, std: float = 0.3, clip: bool = True) -> None:
        super().__init__()
        if not std >= 0:
            raise ValueError(f"model.corruption.std = {std!r} is invalid: it must be >= 0")
        self.std, self.clip = float(std), bool(clip)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if generator is None:
            noise = torch.randn_like(x)
        else:
            noise = torch.randn(x.shape, generator=generator, device=generator.device).to(x.device, x.dtype)
        noisy = x + self.std * noise
        return noisy.clamp(0.0, 1.0) if self.clip else noisy


class Masking(nn.Module):
    """Masking noise: each pixel is set to 0 with probability ν, independently (Vincent et al. 2008, sec. 2.3: "a
    fixed number νd of components chosen at random"; here each one with probability ν, the same on average)."""

    def __init__(self, fraction: float = 0.25) -> None:
        super().__init__()
        self.fraction = _check_fraction("fraction", fraction)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return x * (_uniform(x, generator) >= self.fraction)


class SaltAndPepper(nn.Module):
    """Salt-and-pepper noise: each pixel is, with probability ν, set to 0 or 1 (each with probability ½),
    independently (Vincent et al. 2010, sec. 4.2)."""

    def __init__(self, fraction: float = 0.25) -> None:
        super().__init__()
        self.fraction = _check_fraction("fraction", fraction)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        u = _uniform(x, generator)
        hit = u < self.fraction
        salt = u < 0.5 * self.fraction  # (the lower half of the hits: 1, the upper half: 0)
        return torch.where(hit, salt.to(x.dtype), x)
