"""The structured output every autoencoder returns, so callbacks and evaluation never ask which model they face."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from vaelab.models.likelihoods import Likelihood


@dataclass
class AutoencoderOutput:
    """The pure model's pass over a batch (:meth:`vaelab.models.autoencoder.Autoencoder.forward`), and, in training,
    what the objective made of it (``loss``, ``terms``, ``weights``, set by the Lightning module).

    Per-image terms have shape ``(batch,)`` and are in nats; ``loss`` is the batch-mean training objective.
    For a deterministic autoencoder ``logvar`` is ``None``, ``mu`` is the code and ``kl`` is zero.
    """

    x_out: torch.Tensor  # raw decoder output (logits for Bernoulli, means for Gaussian), image-shaped
    z: torch.Tensor  # the latent code the decoder saw (a sample for a VAE)
    mu: torch.Tensor  # posterior mean (the code itself for an AE)
    logvar: torch.Tensor | None  # posterior log-variance, None for an AE
    recon: torch.Tensor  # −log p(x | z) per image
    kl: torch.Tensor  # KL(q(z|x) ‖ p(z)) per image, closed form
    loss: torch.Tensor | None = None  # scalar training objective (batch mean), set by the objective
    adversary_loss: torch.Tensor | None = None  # the loss of the objective's adversary (FactorVAE's discriminator)
    terms: dict[str, torch.Tensor] = field(default_factory=dict)  # the objective's extra terms (batch means)
    weights: dict[str, float] = field(default_factory=dict)  # the settings the loss used: β, a capacity C, …
    likelihood: Likelihood | None = field(default=None, repr=False)  # turns x_out into an image
    x_in: torch.Tensor | None = field(default=None, repr=False)  # what the encoder saw (a denoising AE's corrupted x)
    extras: dict[str, torch.Tensor] = field(default_factory=dict)  # the code's batch terms (VQ-VAE's losses, …)
    features: torch.Tensor | None = field(default=None, repr=False)  # the encoder's output h (what the code read)

    @property
    def x_mean(self) -> torch.Tensor:
        """The reconstruction as an image: the likelihood's mean of ``x_out`` (computed when asked for, so
        training steps do not pay for it)."""
        return self.x_out if self.likelihood is None else self.likelihood.mean(self.x_out)

    @property
    def elbo(self) -> torch.Tensor:
        """The evidence lower bound per image, −(recon + KL), whatever the objective weighted."""
        return -(self.recon + self.kl)

    @property
    def beta(self) -> float:
        """The KL weight the loss used (0 when it has none, as for the AE)."""
        return float(self.weights.get("beta", 0.0))

    @property
    def capacity(self) -> float:
        """The KL target C the loss used (capacity control), else 0."""
        return float(self.weights.get("capacity", 0.0))
