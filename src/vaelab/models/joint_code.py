"""JointVAE's code: a Gaussian part and one or more categorical parts side by side (Dupont 2018).

z = [z_cont, c_1, …, c_m]: z_cont ~ q(z_cont|x) = N(μ, diag σ²) as in the VAE, and each c_i a relaxed one-hot
vector of n_i categories, drawn with the Gumbel-softmax trick at a temperature τ in training (Jang, Gu & Poole 2017,
eq. 2; Maddison, Mnih & Teh 2017, the Concrete distribution). In eval mode each c_i is the one-hot argmax of its
logits (z_cont is still drawn, as the VAE's is); the deterministic code (``encode``, ``reconstruct``, ``embed``) is
[μ, one-hot argmax …].

The prior is p(z) = N(0, I) × Π_i Uniform{1..n_i}; q factorises into the two parts, and so does the KL (Dupont
2018, sec. 3):

    KL_cont = KL(N(μ, σ²) ‖ N(0, I))          (Kingma & Welling 2014, app. B)
    KL_disc = Σ_i Σ_k q_ik log(q_ik · n_i)     (KL of Categorical(q_i) to the uniform, on the softmax probabilities)

``model.latent_dim`` is the width of the whole z, d_cont + Σ n_i (what the decoder reads and samplers draw), and
``model.code.discrete`` the list of the n_i: ``latent_dim=20, discrete=[10]`` is Dupont's MNIST code, 10 continuous
dimensions and one 10-way category.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch.distributions import RelaxedOneHotCategorical

from vaelab.errors import ConfigError
from vaelab.models.codes import Code, CodeOutput
from vaelab.models.distributions import kl_to_standard_normal, reparameterize

#: Dupont's (2018) temperature, after Maddison et al. (2017)
DEFAULT_TEMPERATURE = 0.67


def check_discrete(discrete: Sequence[int]) -> tuple[int, ...]:
    """The categorical parts' sizes, refused unless a non-empty list of integers ≥ 2 (``model.code.discrete``)."""
    sizes = tuple(discrete) if isinstance(discrete, Sequence) and not isinstance(discrete, str) else None
    if not sizes or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 2 for n in sizes):
        raise ConfigError(
            f"model.code.discrete = {discrete!r} is invalid: it must be a non-empty list of category counts, each an "
            "integer >= 2 (a category of one value carries no information), e.g. model.code.discrete=[10]"
        )
    return sizes


def check_temperature(key: str, value: float) -> float:
    """A Gumbel-softmax temperature, refused unless a finite number > 0 (softmax(·/τ) is undefined at τ = 0)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{key} = {value!r} is invalid: the Gumbel-softmax temperature must be a finite number > 0, "
                          "e.g. 0.67 (Dupont 2018)")
    return float(value)


def kl_to_uniform(logits: torch.Tensor) -> torch.Tensor:
    """KL(Categorical(q) ‖ Uniform{1..n}) = Σ_k q_k log(q_k · n) over the last dimension, q = softmax(logits).

    Computed on the log-softmax, so a q_k that underflows to 0 adds 0 (the limit of q log q). Zero for uniform q,
    log n for a one-hot q."""
    log_q = F.log_softmax(logits, dim=-1)
    return (log_q.exp() * (log_q + math.log(logits.shape[-1]))).sum(dim=-1)


def relaxed_one_hot(logits: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
    """A Gumbel-softmax draw y = softmax((logits + g) / τ), g_k ~ Gumbel(0, 1) (Jang et al. 2017, eq. 2), with
    gradients to the logits (torch's ``RelaxedOneHotCategorical``). As τ → 0 it tends to the one-hot
    argmax_k(logits_k + g_k), which is category k with probability softmax(logits)_k (the Gumbel-max trick, eq. 1)."""
    return RelaxedOneHotCategorical(temperature, logits=logits, validate_args=False).rsample()


def one_hot_argmax(logits: torch.Tensor) -> torch.Tensor:
    """The one-hot vector of each row's most probable category."""
    return F.one_hot(logits.argmax(dim=-1), logits.shape[-1]).to(logits.dtype)


class JointCode(Code):
    """z = [z_cont ~ N(μ, σ²), Gumbel-softmax c_1 … c_m] with p(z) = N(0, I) × Π_i Uniform{1..n_i} (Dupont 2018).

    The encoder gives μ and log σ² (``2 · d_cont`` features) and the logits of each categorical part (``n_i``
    each), d_cont = ``latent_dim − Σ n_i``. ``kl`` is KL_cont + KL_disc per image; ``extras`` holds the two parts
    per image (``kl_cont``, ``kl_disc``), which the JointVAE objective steers to its two capacities.

    ``temperature`` τ is the relaxation's temperature at the start of training (Dupont's 0.67); the objective
    (:class:`~vaelab.models.objectives.joint_vae.JointVAE`) may anneal it, writing each step's τ into the buffer
    ``temperature`` (saved with the weights, so a resumed run draws with the τ it stopped at).

    Not ``variational``: a relaxed categorical has no density that the importance-weighted bound −L_K (Burda et
    al. 2016) could use as its proposal q(z|x) (the Concrete density of Maddison et al. 2017 is that of the relaxed
    draw, not of the one-hot code the prior is over), so evaluation reports the ELBO-like recon + KL
    and no −L_K, and no active units.
    """

    variational = False
    has_prior = True
    has_kl = True
    continuous = True

    def __init__(self, discrete: Sequence[int] = (10,), temperature: float = DEFAULT_TEMPERATURE) -> None:
        super().__init__()
        self.discrete, self.start_temperature = discrete, temperature  # (checked by build)
        self.continuous_dim = 0

    # ------------------------------------------------------------------ the layout of z
    def build(self, latent_dim: int) -> None:
        """Check the settings (here rather than in ``__init__``, so that a bad one reaches the user as itself, not
        wrapped in Hydra's errors of the nested instantiation), lay out z and make the temperature's buffer."""
        self.discrete = check_discrete(self.discrete)
        tau = check_temperature("model.code.temperature", self.start_temperature)
        self.register_buffer("temperature", torch.tensor(tau))
        cont = latent_dim - sum(self.discrete)
        if cont < 1:
            raise ConfigError(
                f"model.latent_dim = {latent_dim} is invalid with model.code.discrete = {list(self.discrete)}: "
                f"latent_dim is the width of the whole code, d_cont + Σ n_i, so it must be more than "
                f"{sum(self.discrete)} (e.g. model.latent_dim={sum(self.discrete) + 10}: 10 continuous dimensions)"
            )
        self.continuous_dim = cont

    def encoder_features(self, latent_dim: int) -> int:
        return 2 * (latent_dim - sum(self.discrete)) + sum(self.discrete)

    def discrete_slices(self) -> list[slice]:
        """Where each categorical part lies in z (after the ``continuous_dim`` Gaussian dimensions)."""
        starts = [self.continuous_dim + sum(self.discrete[:i]) for i in range(len(self.discrete))]
        return [slice(s, s + n) for s, n in zip(starts, self.discrete, strict=True)]

    def split(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """μ, log σ² and the logits of each categorical part, from the encoder's features ``h``."""
        d = self.continuous_dim
        mu, logvar, rest = h[:, :d], h[:, d : 2 * d], h[:, 2 * d :]
        return mu, logvar, list(rest.split(list(self.discrete), dim=1))

    # ------------------------------------------------------------------ the pass
    def locate(self, h: torch.Tensor) -> tuple[torch.Tensor, None]:
        """The deterministic code [μ, one-hot argmax of each part]; no log-variance (the code is not one Gaussian)."""
        mu, _, logits = self.split(h)
        return torch.cat([mu, *(one_hot_argmax(lg) for lg in logits)], dim=1), None

    def forward(self, h: torch.Tensor) -> CodeOutput:
        mu, logvar, logits = self.split(h)
        if self.training:
            tau = self.temperature.to(h.dtype, copy=True)  # (the objective rewrites the buffer before backward)
            parts = [relaxed_one_hot(lg, tau) for lg in logits]
        else:
            parts = [one_hot_argmax(lg) for lg in logits]
        kl_cont = kl_to_standard_normal(mu, logvar)
        kl_disc = torch.stack([kl_to_uniform(lg) for lg in logits]).sum(dim=0)
        z = torch.cat([reparameterize(mu, logvar), *parts], dim=1)
        deterministic = torch.cat([mu, *(one_hot_argmax(lg) for lg in logits)], dim=1)
        return CodeOutput(z=z, mu=deterministic, logvar=None, kl=kl_cont + kl_disc,
                          extras={"kl_cont": kl_cont, "kl_disc": kl_disc})

    def prior_sample(self, n: int, latent_dim: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """z_cont ~ N(0, I) and each c_i a one-hot category drawn uniformly."""
        cont = torch.randn(n, latent_dim - sum(self.discrete), generator=generator, device="cpu")
        parts = [F.one_hot(torch.randint(0, k, (n,), generator=generator, device="cpu"), k).to(cont.dtype)
                 for k in self.discrete]
        return torch.cat([cont, *parts], dim=1)
