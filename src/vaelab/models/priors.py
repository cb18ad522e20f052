"""Priors p(z) of the model's own, in place of a code's fixed N(0, I) (``model.prior``).

A prior is built from config (``model.prior._target_``) and then sized by the model: the model calls
``build(model)`` once its encoder and code exist, and passes itself to ``log_prob(z, model)`` and
``sample(n, model, generator)`` (a prior never stores the model: no module cycles). With a prior the model's KL is
the one-sample estimate log q(z|x) − log p(z) (:meth:`vaelab.models.autoencoder.Autoencoder.forward`), and
sampling and the importance-weighted bound use it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vaelab.errors import ConfigError
from vaelab.models.codes import GaussianCode
from vaelab.models.distributions import normal_log_prob_per_dimension

#: the pseudo-inputs' initialisation in the authors' code for binary images (N(0.05, 0.01²) before the hardtanh)
PSEUDO_INPUT_MEAN = 0.05
PSEUDO_INPUT_STD = 0.01
#: at most this many values of (row, component, dimension) are held at once by a mixture's log-density
MIXTURE_CHUNK = 2**22


def mixture_log_prob(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log (1/K) Σ_k N(z; μ_k, diag σ_k²) for every row of ``z`` (shape ``(..., D)``), components ``mu`` and
    ``logvar`` of shape ``(K, D)``; shape ``(...)``.

    Evaluated as logsumexp_k(Σ_d log N(z_d; μ_kd, σ_kd²)) − log K, a few rows at a time so that ``(rows, K, D)``
    stays within :data:`MIXTURE_CHUNK` values (evaluation asks for n·B codes at once).
    """
    k, d = mu.shape
    flat = z.reshape(-1, d)
    rows = max(1, MIXTURE_CHUNK // (k * d))
    parts = [torch.logsumexp(normal_log_prob_per_dimension(chunk.unsqueeze(-2), mu, logvar).sum(-1), dim=-1)
             for chunk in flat.split(rows)]
    return torch.cat(parts).reshape(z.shape[:-1]) - math.log(k)


def check_count(key: str, value: object) -> int:
    """A number of mixture components, refused unless an integer ≥ 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{key} = {value!r} is invalid: it must be an integer >= 1 (the mixture's number of "
                          "components; Tomczak & Welling 2018 use 500)")
    return value


def check_std(key: str, value: object) -> float:
    """An initialisation's standard deviation, refused unless a finite number ≥ 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ConfigError(f"{key} = {value!r} is invalid: it must be a finite number >= 0, e.g. 0.01")
    return float(value)


class VampPrior(nn.Module):
    """The variational mixture of posteriors (Tomczak & Welling 2018, eq. 9):

        p_λ(z) = (1/K) Σ_k q(z | u_k),

    the model's own Gaussian posterior q(z|x) = N(μ(x), diag σ²(x)) at K learned pseudo-inputs u_k, image-shaped
    and trained with the rest of the model. Its log-density is a log-sum-exp over the K components, whose μ_k and
    log σ_k² come from the encoder (``model.features(u)``, then ``model.code.locate``) at every call, so they move
    with the encoder. Sampling picks a component uniformly and draws z = μ_k + σ_k·ε from it.

    Each pseudo-input is a free parameter squashed into the images' range [0, 1] by hardtanh(·, 0, 1), initialised
    from N(``init_mean``, ``init_std``²) before the squash, as the authors' code (jmtomczak/vae_vampprior) does for
    binary and grey images: mean 0.05, std 0.01. Their other option, pseudo-inputs started at random training
    images, is not offered here. A coordinate squashed to 0 or 1 gets no gradient, as in their code.

    Args:
        num_pseudo_inputs: K (``model.prior.num_pseudo_inputs``; the paper's 500), an integer ≥ 1.
        init_mean, init_std: the pseudo-inputs' initial normal distribution, before the squash.
    """

    def __init__(self, num_pseudo_inputs: int = 500, init_mean: float = PSEUDO_INPUT_MEAN,
                 init_std: float = PSEUDO_INPUT_STD) -> None:
        super().__init__()
        # checked by build, so that a bad value reaches the user as itself, not wrapped by Hydra's instantiation
        self.num_pseudo_inputs, self.init_mean, self.init_std = num_pseudo_inputs, init_mean, init_std

    def build(self, model) -> None:
        """Check the settings against the model and make the K image-shaped pseudo-inputs."""
        k = check_count("model.prior.num_pseudo_inputs", self.num_pseudo_inputs)
        std = check_std("model.prior.init_std", self.init_std)
        if isinstance(self.init_mean, bool) or not isinstance(self.init_mean, (int, float)) \
                or not math.isfinite(self.init_mean):
            raise ConfigError(f"model.prior.init_mean = {self.init_mean!r} is invalid: it must be a finite number, "
                              "e.g. 0.05")
        if not isinstance(model.code, GaussianCode):
            raise ConfigError(
                f"model.prior (a VampPrior) needs model.code=gaussian, not a {type(model.code).__name__}: its "
                "components are the posterior q(z|u_k) evaluated at any z, which only the diagonal Gaussian code "
                "gives in closed form")
        raw = torch.randn(k, *model.image_shape) * std + float(self.init_mean)
        self.raw_pseudo_inputs = nn.Parameter(raw)

    @property
    def pseudo_inputs(self) -> torch.Tensor:
        """The K pseudo-inputs u_k as images, ``(K, C, H, W)``, each value in [0, 1]."""
        return F.hardtanh(self.raw_pseudo_inputs, 0.0, 1.0)

    def components(self, model) -> tuple[torch.Tensor, torch.Tensor]:
        """μ_k and log σ_k² of q(z | u_k) for the K pseudo-inputs, each ``(K, D)``."""
        return model.code.locate(model.features(self.pseudo_inputs))

    def log_prob(self, z: torch.Tensor, model) -> torch.Tensor:
        """log p_λ(z) = log (1/K) Σ_k N(z; μ_k, σ_k²), summed over the last dimension (``z``: ``(B, D)`` or
        ``(n, B, D)``)."""
        mu, logvar = self.components(model)
        dtype = torch.promote_types(z.dtype, torch.float32)
        return mixture_log_prob(z.to(dtype), mu.to(dtype), logvar.to(dtype))

    def sample(self, n: int, model, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` codes z ~ p_λ(z), ``(n, D)``: a component k uniform over the K, then z = μ_k + σ_k·ε. The
        component and ε are drawn on the CPU with ``generator`` (the same draws on any device)."""
        mu, logvar = self.components(model)
        k = torch.randint(mu.shape[0], (n,), generator=generator, device="cpu").to(mu.device)
        eps = torch.randn(n, mu.shape[1], generator=generator, device="cpu").to(mu)
        return mu[k] + torch.exp(0.5 * logvar[k]) * eps
