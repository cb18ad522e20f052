"""The adversarial autoencoder (AAE): a deterministic code matched to a prior p(z) by a discriminator.

Makhzani, Shlens, Jaitly, Goodfellow & Frey (2016), *Adversarial Autoencoders*, ICLR workshop (arXiv:1511.05644),
sec. 2. The encoder q(z|x) is the generator of a GAN (Goodfellow et al. 2014) on the code space: a discriminator
D(z), the probability that z is a draw of the prior p(z) rather than a code of a training image, plays the
two-player game of the paper's eq. 1 (sec. 1.1), played on the codes,

    min_enc max_D  E_{z ~ p(z)}[log D(z)] + E_{x ~ p_data}[log(1 − D(enc(x)))],

which, at D's optimum, makes the encoder minimise the Jensen–Shannon divergence between the aggregate code
distribution q(z) and p(z) (Goodfellow et al. 2014, Theorem 1). At that optimum logit D(z) = log p(z) − log q(z).
The encoder's side uses the non-saturating loss −log D(enc(x)) (Goodfellow et al. 2014, sec. 3), which has the
same fixed point and strong gradients when D wins.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from vaelab.errors import ConfigError
from vaelab.models.objectives.base import Objective, ObjectiveValue
from vaelab.models.objectives.factor_vae import Discriminator

#: D's hidden layers: the paper's MNIST discriminator, two layers of 1000 ReLU units
PAPER_HIDDEN_DIMS = (1000, 1000)


def discriminator_loss(logits_prior: torch.Tensor, logits_codes: torch.Tensor) -> torch.Tensor:
    """D's side of eq. 1 as a loss to minimise: the cross-entropy of the two classes, each class's mean weighted one
    half, prior draws labelled 1 (real) and the encoder's codes labelled 0 (fake):
    −½ E_p[log D(z)] − ½ E_q[log(1 − D(z))]."""
    real = F.binary_cross_entropy_with_logits(logits_prior, torch.ones_like(logits_prior))
    fake = F.binary_cross_entropy_with_logits(logits_codes, torch.zeros_like(logits_codes))
    return 0.5 * (real + fake)


def generator_loss(logits_codes: torch.Tensor) -> torch.Tensor:
    """The encoder's non-saturating loss −log D(z) = softplus(−logit D(z)) of each code (Goodfellow et al. 2014,
    sec. 3), in nats per image: 0 where D is sure the code is a prior draw, growing linearly in −logit where D is
    sure it is not (the saturating log(1 − D(z)) flattens there)."""
    return F.softplus(-logits_codes)


def discriminator_accuracy(logits_prior: torch.Tensor, logits_codes: torch.Tensor) -> torch.Tensor:
    """The fraction of D's calls that are right, each class weighted one half (½: chance, codes match the prior)."""
    return 0.5 * ((logits_prior > 0).float().mean() + (logits_codes < 0).float().mean())


def _positive(key: str, value: float, allowed: str) -> float:
    """``value`` as a float, or one ConfigError naming ``model.objective.<key>`` when it is not finite and > 0."""
    if not (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0):
        raise ConfigError(f"model.objective.{key} = {value!r} is invalid: it must be {allowed}")
    return float(value)


class AdversarialAutoencoder(Objective):
    """loss = recon + λ(step) · E[−log D(z)], z = enc(x) a point code, per image, batch mean (Makhzani et al. 2016,
    sec. 2); D is trained alongside on :func:`discriminator_loss` of prior draws against the detached codes.

    λ is the model's β schedule (``model.beta``), named ``lambda``; with λ = 0 the model is the plain autoencoder
    with a discriminator watching. The paper alternates a reconstruction phase and a regularisation phase (the
    encoder's adversarial step) on each mini-batch; here both are one step on their weighted sum, and D's step
    follows on the same batch (the Lightning module's manual optimisation, as for FactorVAE).

    The adversarial term's gradient reaches the encoder only: D is called with its weights detached
    (``torch.func.functional_call``), so the model's backward pass leaves nothing on D, and D's loss, on detached
    codes, reaches D's weights only. Prior draws come from the model's code (``model.code.prior=normal``:
    N(0, I)), one per code of the batch.

    Logged terms: ``adversarial`` (E[−log D(z)] over the batch's codes; log 2 = 0.693 when D cannot tell),
    ``disc_loss`` (D's cross-entropy; log 2 is chance) and ``disc_accuracy`` (½ is chance).

    Args:
        latent_dim: the code's size (``model.latent_dim``, filled in by the config).
        hidden_dims: D's hidden layers (:class:`~vaelab.models.objectives.factor_vae.Discriminator`), default the
            paper's two of 1000.
        negative_slope: the slope of D's rectifiers below 0 (0: the paper's ReLU).
        lr, betas: D's Adam optimiser, built here from these numbers.
    """

    needs_posterior = False
    term_names = ("adversarial", "disc_loss", "disc_accuracy")
    beta_name = "lambda"

    def __init__(self, latent_dim: int, hidden_dims: Sequence[int] = PAPER_HIDDEN_DIMS, negative_slope: float = 0.0,
                 lr: float = 2e-4, betas: Sequence[float] = (0.5, 0.999), schedule=None) -> None:
        super().__init__(schedule)
        hidden_dims = list(hidden_dims) if hidden_dims is not None else []
        if not hidden_dims or not all(isinstance(h, int) and not isinstance(h, bool) and h >= 1
                                      for h in hidden_dims):
            raise ConfigError(f"model.objective.hidden_dims = {hidden_dims!r} is invalid: it must be a non-empty list "
                              "of integers >= 1, e.g. [1000, 1000] (the paper's discriminator)")
        if not (isinstance(negative_slope, (int, float)) and 0 <= negative_slope < 1):
            raise ConfigError(f"model.objective.negative_slope = {negative_slope!r} is invalid: it must be in [0, 1), "
                              "e.g. 0 (ReLU)")
        self.lr = _positive("lr", lr, "a finite number > 0, e.g. 2.0e-4")
        betas = tuple(betas) if betas is not None else ()
        if len(betas) != 2 or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in betas):
            raise ConfigError(f"model.objective.betas = {list(betas)!r} is invalid: it must be two numbers in [0, 1), "
                              "e.g. [0.5, 0.999]")
        self.betas = (float(betas[0]), float(betas[1]))
        self.discriminator = Discriminator(latent_dim, hidden_dims, float(negative_slope))

    def prior_draws(self, model, z: torch.Tensor) -> torch.Tensor:
        """One draw of the model code's prior per code of ``z``, on ``z``'s device and dtype."""
        code = model.code
        if not getattr(code, "has_prior", False):
            raise ConfigError(f"model.code = {type(code).__name__} without a prior is invalid for the adversarial "
                              "autoencoder: its discriminator tells the codes from draws of the prior. Set "
                              "model.code.prior=normal (the aae preset does)")
        return code.prior_sample(z.shape[0], model.latent_dim).to(device=z.device, dtype=z.dtype)

    def forward(self, model, x, out, step) -> ObjectiveValue:
        z = out.z
        if z.dim() != 2 or z.shape[1] != self.discriminator.latent_dim:
            raise ValueError(f"the adversarial autoencoder's discriminator takes codes of "
                             f"{self.discriminator.latent_dim} dimensions (model.objective.latent_dim), but the "
                             f"model's codes have shape {tuple(z.shape)[1:]}")
        frozen = {name: p.detach() for name, p in self.discriminator.named_parameters()}
        adversarial = generator_loss(functional_call(self.discriminator, frozen, (z,))).mean()
        prior = self.prior_draws(model, z)
        logits = self.discriminator(torch.cat([prior, z.detach()]))  # (one pass over both classes)
        logits_prior, logits_codes = logits[:len(prior)], logits[len(prior):]
        disc_loss = discriminator_loss(logits_prior, logits_codes)
        terms = {"adversarial": adversarial, "disc_loss": disc_loss,
                 "disc_accuracy": discriminator_accuracy(logits_prior.detach(), logits_codes.detach())}
        loss = out.recon.mean() + self.schedule(step) * adversarial
        return ObjectiveValue(loss, terms, adversary_loss=disc_loss)

    def adversary_parameters(self) -> list[nn.Parameter]:
        return list(self.discriminator.parameters())

    def adversary_optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.adversary_parameters(), lr=self.lr, betas=self.betas)
