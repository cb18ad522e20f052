"""What a code is: how the encoder's output becomes the z the decoder sees, and what the prior over z is.

A family of autoencoders is a code, an objective and a default net: the VAE's code is a Gaussian posterior with a
standard normal prior, the deterministic autoencoder's a point, VQ-VAE's a grid of codebook vectors
(:mod:`vaelab.models.quantizer`). A code turns the encoder's features ``h`` into a :class:`CodeOutput`; the pure
model (:class:`vaelab.models.autoencoder.Autoencoder`) decodes its ``z``.

Config group ``model/code`` (one YAML per class).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from vaelab.models.distributions import (
    gaussian_draws,
    kl_to_standard_normal,
    normal_log_prob_per_dimension,
    reparameterize,
    standard_normal_log_prob,
)


@dataclass
class CodeOutput:
    """A code's pass over a batch of encoder features.

    ``z`` is what the decoder gets (a draw for a Gaussian posterior); ``mu`` the deterministic code (the posterior
    mean, the point, the quantised vectors); ``logvar`` the posterior's log-variance or None; ``kl`` the per-image
    KL(q(z|x) ‖ p(z)) in nats (zero for a code without a prior; a one-sample estimate log q(z|x) − log p(z) where
    there is no closed form); ``extras`` batch terms the code computes on the way (VQ-VAE's codebook and commitment
    losses, its perplexity), which objectives and the logs read; ``log_q`` the per-image log q(z|x) of the drawn
    ``z``, for a code whose density is not the diagonal Gaussian of ``mu`` and ``logvar`` (a flow's), else None.
    """

    z: torch.Tensor
    mu: torch.Tensor
    logvar: torch.Tensor | None
    kl: torch.Tensor
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    log_q: torch.Tensor | None = None


class Code(nn.Module):
    """Base class of the codes.

    Attributes a subclass sets:
        variational: q(z|x) is a density to draw from and evaluate (the ELBO's KL and the importance-weighted bound
            are defined), as for the Gaussian posterior.
        has_prior: the code has a prior p(z) to sample from (images can be generated without a fitted sampler).
        has_kl: the pass gives a KL(q(z|x) ‖ p(z)), so an ELBO is defined and logged.
        continuous: the code is a vector of real numbers, so a density such as a Gaussian mixture can be fitted on
            codes and sampled (not so a grid of codebook indices).
    """

    variational: bool = False
    has_prior: bool = False
    has_kl: bool = False
    continuous: bool = True

    def build(self, latent_dim: int) -> None:
        """Make what the code holds for a code of ``latent_dim`` dimensions (VQ-VAE's codebook of vectors of that
        size); the model calls it once, right after making the code. Most codes hold nothing."""

    def encoder_features(self, latent_dim: int) -> int:
        """How many features the encoder must give for a code of ``latent_dim`` dimensions."""
        return latent_dim

    def locate(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The deterministic code of features ``h`` and the posterior's log-variance (None where there is none)."""
        raise NotImplementedError  # pragma: no cover - interface

    def forward(self, h: torch.Tensor) -> CodeOutput:  # pragma: no cover - interface
        raise NotImplementedError

    def prior_sample(self, n: int, latent_dim: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` codes z ~ p(z) on the CPU (drawn there so a seeded generator gives the same z on any device)."""
        raise ValueError(
            f"a {type(self).__name__} has no prior to sample from: fit a sampler on the codes of the training images "
            "instead (sampler=gmm, Ghosh et al. 2020)"
        )

    # ------------------------------------------------------------------ densities (variational codes)
    def draw(self, h: torch.Tensor, n: int,
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` draws z ~ q(z|x) per image of features ``h``, ``(n, B, D)``, and log q(z|x) of each, ``(n, B)``."""
        raise ValueError(f"a {type(self).__name__} has no posterior density q(z|x) to draw from")

    def log_q(self, out: CodeOutput) -> torch.Tensor:
        """log q(z|x) of the ``z`` drawn in the pass ``out``, per image."""
        if out.log_q is not None:
            return out.log_q
        raise ValueError(f"a {type(self).__name__} has no posterior density q(z|x)")

    def prior_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z) of the code's own prior, summed over the last dimension."""
        raise ValueError(f"a {type(self).__name__} has no prior density p(z)")

    def importance_draws(self, h: torch.Tensor, n: int, generator: torch.Generator | None = None,
                         prior_log_prob: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        """What an importance-weighted bound needs of the latent side: ``n`` draws z_k ~ q(z|x) per image, ``(n, B,
        D)``, the codes the decoder sees, and log p(z_k) − log q(z_k|x) of each, ``(n, B)`` (Burda et al. 2016,
        eq. 8, without the decoder's term). ``prior_log_prob`` is the model's prior when it has one of its own
        (a VampPrior), else the code's. A code whose prior and posterior span more than the decoder's z (a
        hierarchy of latent layers) overrides this to sum over all of them."""
        z, log_q = self.draw(h, n, generator)
        log_p = (prior_log_prob or self.prior_log_prob)(z)
        return z, log_p - log_q


class GaussianCode(Code):
    """q(z|x) = N(μ, diag σ²) with p(z) = N(0, I): the VAE's code (Kingma & Welling 2014).

    The encoder gives μ and log σ² (``2 · latent_dim`` features); z = μ + σ·ε with ε ~ N(0, I) (eq. 10), and the KL
    is in closed form (app. B).
    """

    variational = True
    has_prior = True
    has_kl = True

    def encoder_features(self, latent_dim: int) -> int:
        return 2 * latent_dim

    def locate(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = h.chunk(2, dim=1)
        return mu, logvar

    def forward(self, h: torch.Tensor) -> CodeOutput:
        mu, logvar = self.locate(h)
        return CodeOutput(z=reparameterize(mu, logvar), mu=mu, logvar=logvar, kl=kl_to_standard_normal(mu, logvar))

    def prior_sample(self, n: int, latent_dim: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randn(n, latent_dim, generator=generator, device="cpu")

    def draw(self, h: torch.Tensor, n: int,
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return gaussian_draws(*self.locate(h), n, generator)

    def log_q(self, out: CodeOutput) -> torch.Tensor:
        if out.log_q is not None:
            return out.log_q
        return normal_log_prob_per_dimension(out.z, out.mu, out.logvar).sum(dim=-1)

    def prior_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return standard_normal_log_prob(z)


#: the squashing functions a point code may apply to the encoder's output
ACTIVATIONS = {"sigmoid": torch.sigmoid, "tanh": torch.tanh}


class PointCode(Code):
    """z = a(h): a deterministic code with no posterior and no prior (the autoencoder's).

    ``activation`` squashes the code: ``sigmoid`` keeps every unit in (0, 1), as the sparse autoencoder's KL penalty
    on mean activations needs (Ng 2011); None (default) leaves it linear.

    ``prior="normal"`` gives the point code the prior p(z) = N(0, I) that a regulariser matches the codes to (the
    WAE's MMD, Tolstikhin et al. 2018; the adversarial autoencoder's discriminator, Makhzani et al. 2016): images
    are then generated from it like a VAE's. None (default): no prior, generate with a fitted sampler.
    """

    def __init__(self, activation: str | None = None, prior: str | None = None) -> None:
        super().__init__()
        if activation is not None and activation not in ACTIVATIONS:
            raise ValueError(f"model.code.activation = {activation!r} is invalid: it must be null or one of "
                             f"{', '.join(ACTIVATIONS)}")
        if prior not in (None, "normal"):
            raise ValueError(f"model.code.prior = {prior!r} is invalid: it must be null (no prior) or normal")
        self.activation = activation
        self.prior = prior
        self.has_prior = prior is not None

    def prior_sample(self, n: int, latent_dim: int, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.prior is None:
            return super().prior_sample(n, latent_dim, generator)
        return torch.randn(n, latent_dim, generator=generator, device="cpu")

    def locate(self, h: torch.Tensor) -> tuple[torch.Tensor, None]:
        return (h if self.activation is None else ACTIVATIONS[self.activation](h)), None

    def forward(self, h: torch.Tensor) -> CodeOutput:
        z, _ = self.locate(h)
        return CodeOutput(z=z, mu=z, logvar=None, kl=z.new_zeros(z.shape[0]))
