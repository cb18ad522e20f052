"""FactorVAE: the total correlation of the code penalised through a discriminator that tells q(z) from ∏_j q(z_j).

Kim & Mnih (2018), *Disentangling by Factorising*, ICML.

The total correlation TC(z) = KL(q(z) ‖ ∏_j q(z_j)) of the aggregate posterior q(z) has no closed form. FactorVAE
estimates it with the density-ratio trick (sec. 3): a discriminator D(z), the probability that z is a sample of q(z)
rather than of ∏_j q(z_j), trained to tell the two apart, gives at its optimum D(z) / (1 − D(z)) = q(z) / ∏_j q(z_j),
so TC ≈ E_q[log(D(z) / (1 − D(z)))] = E_q[logit D(z)]. Samples of ∏_j q(z_j) are made from samples of q(z)
by shuffling each dimension across a batch on its own (Algorithm 1).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torch import nn

from vaelab.errors import ConfigError
from vaelab.models.autoencoder import plain
from vaelab.models.objectives.base import DataFacts, Objective, ObjectiveValue
from vaelab.rules import FACTOR_VAE_MIN_BATCH, factor_vae_batch_problems

#: the paper's optimiser of the discriminator (its appendix: Adam, lr 1e-4, β1 = 0.5, β2 = 0.9)
DEFAULT_OPTIMIZER = {"_target_": "torch.optim.Adam", "lr": 1e-4, "betas": [0.5, 0.9], "fused": True}


def permute_dims(z: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each column of the codes ``z`` (B, D) shuffled across the batch by a permutation of its own (Kim & Mnih 2018,
    Algorithm 1). Every column keeps its values, so each dimension keeps its (empirical) marginal q(z_j); the rows
    no longer belong together, so they are samples of the product ∏_j q(z_j)."""
    if z.dim() != 2:
        raise ValueError(f"permute_dims takes codes of shape (batch, dimensions), got {tuple(z.shape)}")
    order = torch.rand(z.shape, generator=generator, device=z.device).argsort(dim=0)
    return z.gather(0, order)


def split_batch(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(codes the discriminator sees as samples of q(z), codes it sees permuted as samples of ∏_j q(z_j)): the first
    and the second half of the batch, the paper's two batches (Algorithm 2) drawn as one. A batch of one code plays
    both parts (there is nothing to tell apart). Training refuses any batch of fewer than
    :data:`~vaelab.rules.FACTOR_VAE_MIN_BATCH` codes, before it starts (:meth:`FactorVAE.bind`)."""
    half = z.shape[0] // 2
    return (z, z) if half == 0 else (z[:half], z[half:])


def discriminator_loss(logits_joint: torch.Tensor, logits_product: torch.Tensor) -> torch.Tensor:
    """The cross-entropy of the two classes, each class's mean weighted one half: samples of q(z) labelled 1, samples
    of ∏_j q(z_j) labelled 0 (the paper's Algorithm 2 maximises ½ E[log D(z)] + ½ E[log(1 − D(z_perm))])."""
    joint = F.binary_cross_entropy_with_logits(logits_joint, torch.ones_like(logits_joint))
    product = F.binary_cross_entropy_with_logits(logits_product, torch.zeros_like(logits_product))
    return 0.5 * (joint + product)


def discriminator_accuracy(logits_joint: torch.Tensor, logits_product: torch.Tensor) -> torch.Tensor:
    """The fraction of the discriminator's calls that are right, each class weighted one half (0.5: chance)."""
    return 0.5 * ((logits_joint > 0).float().mean() + (logits_product < 0).float().mean())


PAPER_HIDDEN_DIMS = (1000, 1000, 1000, 1000, 1000)  # the discriminator's hidden layers in the paper's appendix


class Discriminator(nn.Sequential):
    """An MLP from a code (B, D) to one logit per code, logit D(z) = log(D(z) / (1 − D(z))), with leaky ReLUs.

    The default is the paper's: 6 linear layers, 5 hidden of 1000 units (Kim & Mnih 2018, appendix)."""

    def __init__(self, latent_dim: int, hidden_dims: Sequence[int] = PAPER_HIDDEN_DIMS,
                 negative_slope: float = 0.2) -> None:
        if latent_dim < 1 or not hidden_dims or min(hidden_dims) < 1:
            raise ValueError(f"FactorVAE discriminator: latent_dim and every one of model.objective.hidden_dims must "
                             f"be >= 1 (and hidden_dims not empty), got latent_dim={latent_dim}, "
                             f"hidden_dims={list(hidden_dims)}")
        sizes = [int(latent_dim), *(int(h) for h in hidden_dims)]
        layers: list[nn.Module] = []
        for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True):
            layers += [nn.Linear(n_in, n_out), nn.LeakyReLU(negative_slope)]
        super().__init__(*layers, nn.Linear(sizes[-1], 1), nn.Flatten(0))
        self.latent_dim = int(latent_dim)


class FactorVAE(Objective):
    """loss = recon + KL + γ(step) · TC, with TC ≈ E_q[logit D(z)] over the batch's codes (Kim & Mnih 2018, sec. 3),
    per image, batch mean; the discriminator D is trained alongside on its own loss with its own optimiser.

    γ is the model's β schedule (``model.beta``), logged as ``beta``; the KL's weight is 1. The discriminator is
    this objective's adversary: the Lightning module steps the model on ``loss`` (D's weights are not stepped,
    and the TC term's gradient reaches the encoder through z), then D on :func:`discriminator_loss` of detached codes.

    Where the paper draws a second batch for the samples of ∏_j q(z_j) (Algorithm 2), each batch is split in halves
    (:func:`split_batch`): D sees the first half's codes as samples of q(z) and the second half's, permuted, as
    samples of the product. The model's loss, TC term included, uses every image of the batch, so the model trains on
    the same batches as the other families; D's batch is B/2 codes of each class (permutations over B/2 codes), and
    nothing is encoded twice. Both halves come from the encoder before the model's step (the paper encodes the second
    batch after it). Every batch, a split's last, partial one too, must hold at least
    :data:`~vaelab.rules.FACTOR_VAE_MIN_BATCH` codes (one of q(z), two to shuffle): settings that would give a smaller
    one are refused before training (:func:`vaelab.rules.validate_config` and :meth:`bind`), and a training batch
    that small anyway (data that :meth:`bind` could not see) raises, never training D on meaningless classes.

    Logged terms: ``tc`` (the estimate, in nats), ``disc_loss`` (D's cross-entropy) and ``disc_accuracy`` (0.5 is
    chance: D cannot tell q(z) from the product, e.g. because the code is factorised).

    Args:
        latent_dim: the code's size (``model.latent_dim``, filled in by the config).
        hidden_dims, negative_slope: the discriminator's MLP (:class:`Discriminator`).
        optimizer: the discriminator's optimiser, a ``_target_`` config (instantiated as a partial and handed D's
            weights) or a callable taking ``params``; default the paper's Adam(lr 1e-4, betas (0.5, 0.9)).
    """

    term_names = ("tc", "disc_loss", "disc_accuracy")
    beta_name = "gamma"

    def __init__(self, latent_dim: int, hidden_dims: Sequence[int] = PAPER_HIDDEN_DIMS, negative_slope: float = 0.2,
                 optimizer: Mapping[str, Any] | Callable[..., torch.optim.Optimizer] | None = None,
                 schedule=None) -> None:
        super().__init__(schedule)
        self.discriminator = Discriminator(latent_dim, list(hidden_dims), negative_slope)
        optimizer = DEFAULT_OPTIMIZER if optimizer is None else plain(optimizer)
        if not callable(optimizer) and not (isinstance(optimizer, Mapping) and "_target_" in optimizer):
            raise ValueError(f"model.objective.optimizer = {optimizer!r} is invalid: it must be a _target_ config of "
                             "an optimiser, e.g. {_target_: torch.optim.Adam, lr: 1.0e-4, betas: [0.5, 0.9]}")
        self.optimizer = optimizer

    def bind(self, data: DataFacts) -> None:
        """Refuse, when fitting starts, batch sizes that leave a batch (a split's last one too) too small for the
        discriminator to see both classes (:func:`vaelab.rules.factor_vae_batch_problems`): one ConfigError naming
        the key (``data.batch_size``, ``data.eval_batch_size``) and sizes that fit."""
        problems = factor_vae_batch_problems(data.batch_sizes, data.shards)
        if problems:
            raise ConfigError("Invalid configuration, nothing was trained:\n" + "\n".join(f"  {p}" for p in problems))

    def forward(self, model, x, out, step) -> ObjectiveValue:
        z = out.z
        if z.dim() != 2 or z.shape[1] != self.discriminator.latent_dim:
            raise ValueError(f"FactorVAE's discriminator takes codes of {self.discriminator.latent_dim} dimensions "
                             f"(model.objective.latent_dim), but the model's codes have shape {tuple(z.shape)[1:]}")
        if self.training and z.shape[0] < FACTOR_VAE_MIN_BATCH:
            raise ValueError(f"FactorVAE got a training batch of {z.shape[0]} code(s): its discriminator needs at "
                             f"least {FACTOR_VAE_MIN_BATCH} (one of q(z), two to shuffle). Give a data.batch_size "
                             "that leaves no smaller last batch")
        tc = self.discriminator(z).mean()
        joint, product = split_batch(z.detach())
        # (one pass over both classes: on a CPU every extra small layer call costs more than its arithmetic)
        logits = self.discriminator(torch.cat([joint, permute_dims(product)]))
        logits_joint, logits_product = logits[:len(joint)], logits[len(joint):]
        disc_loss = discriminator_loss(logits_joint, logits_product)
        terms = {"tc": tc, "disc_loss": disc_loss,
                 "disc_accuracy": discriminator_accuracy(logits_joint.detach(), logits_product.detach())}
        loss = out.recon.mean() + out.kl.mean() + self.schedule(step) * tc
        return ObjectiveValue(loss, terms, adversary_loss=disc_loss)

    def adversary_parameters(self) -> list[nn.Parameter]:
        return list(self.discriminator.parameters())

    def adversary_optimizer(self) -> torch.optim.Optimizer:
        build = self.optimizer if callable(self.optimizer) else instantiate(dict(self.optimizer), _partial_=True,
                                                                            _convert_="all")
        return build(params=self.adversary_parameters())
