"""The Ladder VAE's code: a hierarchy of Gaussian latent layers z_1 … z_L (Sønderby, Raiko, Maaløe, Sønderby &
Winther 2016, *Ladder Variational Autoencoders*, NeurIPS).

The generative model is top-down:

    p(z_L) = N(0, I),    p(z_i | z_{i+1}) = N(μ_p,i(z_{i+1}), σ²_p,i(z_{i+1})),    p(x | z_1) the decoder's.

Inference is a deterministic bottom-up pass, then a stochastic top-down pass that shares the generative path.
Bottom-up, d_1 = a(h) (h: the net's encoder output), d_i = a(W_i d_{i−1}) above, and each layer reads its bottom-up
estimate μ̂_i, log σ̂²_i from d_i. Top-down, q(z_L | x) = N(μ̂_L, σ̂²_L), and each lower layer merges its bottom-up
estimate with the generative path's p(z_i | z_{i+1}) by precision weighting (eq. 17–19):

    σ²_q,i = 1 / (σ̂_i⁻² + σ_p,i⁻²),    μ_q,i = (μ̂_i σ̂_i⁻² + μ_p,i σ_p,i⁻²) σ²_q,i.

The KL of the ELBO is a sum over layers, each in closed form given the drawn z_{i+1} (the paper's analytic per-layer
KL): KL(q(z_L|x) ‖ N(0, I)) at the top, KL(q(z_i | ·) ‖ p(z_i | z_{i+1})) between two diagonal Gaussians below. The
decoder sees z_1, so ``model.latent_dim`` = d_1.

The paper parameterises σ² with a softplus; here, as for the VAE's code, the heads give log σ² (the merge is then a
log-sum-exp of precisions, stable for any scale). Config group ``model/code=ladder``; the family is ``model=hvae``.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.distributions import Normal, kl_divergence

from vaelab.errors import ConfigError
from vaelab.models.codes import Code, CodeOutput
from vaelab.models.distributions import kl_to_standard_normal, normal_log_prob_per_dimension, standard_normal_log_prob
from vaelab.models.nets import ACTIVATIONS


# ---------------------------------------------------------------------------------------------------- the rules
def precision_weighted_merge(mu_hat: torch.Tensor, logvar_hat: torch.Tensor, mu_p: torch.Tensor,
                             logvar_p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The Ladder VAE's posterior of a lower layer from its bottom-up estimate (μ̂, σ̂²) and its top-down prior
    (μ_p, σ²_p) (Sønderby et al. 2016, eq. 17–19):

        σ²_q = 1 / (σ̂⁻² + σ_p⁻²),    μ_q = (μ̂ σ̂⁻² + μ_p σ_p⁻²) σ²_q.

    In log-variances: log σ²_q = −logaddexp(−log σ̂², −log σ²_p), and μ_q = w μ̂ + (1 − w) μ_p with
    w = σ̂⁻² σ²_q = sigmoid(log σ²_p − log σ̂²), so no precision is ever formed on its own."""
    logvar_q = -torch.logaddexp(-logvar_hat, -logvar_p)
    weight = torch.sigmoid(logvar_p - logvar_hat)
    return weight * mu_hat + (1 - weight) * mu_p, logvar_q


def gaussian_kl(mu_q: torch.Tensor, logvar_q: torch.Tensor, mu_p: torch.Tensor,
                logvar_p: torch.Tensor) -> torch.Tensor:
    """KL(N(μ_q, σ²_q) ‖ N(μ_p, σ²_p)) between diagonal Gaussians, summed over the last dimension, in closed form
    (torch.distributions): ½ Σ_j [log σ²_p − log σ²_q + (σ²_q + (μ_q − μ_p)²) / σ²_p − 1]."""
    q = Normal(mu_q, torch.exp(0.5 * logvar_q), validate_args=False)
    p = Normal(mu_p, torch.exp(0.5 * logvar_p), validate_args=False)
    return kl_divergence(q, p).sum(dim=-1)


# ---------------------------------------------------------------------------------------------------- settings
def _check_sizes(key: str, value: object, example: str) -> tuple[int, ...]:
    sizes = tuple(value) if isinstance(value, Sequence) and not isinstance(value, str) else None
    if not sizes or not all(isinstance(n, numbers.Integral) and not isinstance(n, bool) and n >= 1 for n in sizes):
        raise ConfigError(f"{key} = {value!r} is invalid: it must be a non-empty list of integers >= 1, one per "
                          f"latent layer from the bottom (z_1) up, e.g. {key}={example}")
    return tuple(int(n) for n in sizes)


@dataclass(frozen=True)
class LadderLayout:
    """The checked sizes of a hierarchy: d_i of each latent layer and the width of its deterministic features."""

    latent_dims: tuple[int, ...]
    hidden_dims: tuple[int, ...]

    @property
    def depth(self) -> int:
        return len(self.latent_dims)


def ladder_layout(latent_dims: object, hidden_dims: object) -> LadderLayout:
    """``model.code.latent_dims`` and ``model.code.hidden_dims``, refused unless lists of integers ≥ 1 of one
    length (the depth L ≥ 1)."""
    latent = _check_sizes("model.code.latent_dims", latent_dims, "[32,16]")
    hidden = _check_sizes("model.code.hidden_dims", hidden_dims, "[256,128]")
    if len(hidden) != len(latent):
        raise ConfigError(f"model.code.hidden_dims = {list(hidden)} is invalid with model.code.latent_dims = "
                          f"{list(latent)}: it must give one deterministic width per latent layer ({len(latent)})")
    return LadderLayout(latent, hidden)


# ---------------------------------------------------------------------------------------------------- the blocks
def _block(n_in: int, n_out: int, activation: str, batch_norm: bool) -> nn.Sequential:
    """Linear → (batch norm) → activation: one deterministic layer of either path."""
    parts: list[nn.Module] = [nn.Linear(n_in, n_out)]
    if batch_norm:
        parts.append(nn.BatchNorm1d(n_out))
    parts.append(ACTIVATIONS[activation]())
    return nn.Sequential(*parts)


class GaussianHead(nn.Module):
    """A linear map of deterministic features to the mean and log-variance of a diagonal Gaussian."""

    def __init__(self, n_in: int, latent_dim: int) -> None:
        super().__init__()
        self.mu, self.logvar = nn.Linear(n_in, latent_dim), nn.Linear(n_in, latent_dim)

    def forward(self, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mu(d), self.logvar(d)


def _draw(mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    return mu + torch.exp(0.5 * logvar) * eps


class HierarchicalCode(Code):
    """L Gaussian latent layers with the Ladder VAE's inference (see the module's docstring).

    Args:
        latent_dims: d_1 … d_L from the bottom up (``model.code.latent_dims``); d_1 is the decoder's
            ``model.latent_dim``.
        hidden_dims: the width of each layer's deterministic features, bottom-up d_i and top-down (the net's encoder
            gives d_1's, ``hidden_dims[0]`` features).
        activation: the deterministic layers' nonlinearity (relu, elu, tanh).
        batch_norm: batch normalisation in every deterministic layer but d_1 (as the paper trains).

    The pass (:meth:`forward`) gives z = z_1, ``kl`` = Σ_i KL_i and ``extras`` ``kl_layer1`` … ``kl_layerL`` (per
    image). ``mu`` (the deterministic code: embeddings, reconstructions, active units) is z_1's posterior mean from a
    noise-free top-down pass (every z_{i+1} at its posterior mean; in training mode, where nothing reads it, μ_q,1
    given the drawn z_2, sparing batch norm a second pass); ``logvar`` is None, since z_1's prior is
    p(z_1 | z_2), not the N(0, I) that the per-dimension views measure a log-variance against. Images are drawn
    ancestrally from the top (:meth:`prior_sample`); the importance-weighted bound draws the whole hierarchy
    (:meth:`importance_draws`). Neither z_1's marginal prior nor its marginal posterior has a closed form, so
    :meth:`draw`, :meth:`log_q` and :meth:`prior_log_prob` are refused.
    """

    variational = True
    has_prior = True
    has_kl = True

    def __init__(self, latent_dims: Sequence[int] = (32, 16), hidden_dims: Sequence[int] = (256, 128),
                 activation: str = "relu", batch_norm: bool = False) -> None:
        super().__init__()
        self.settings = (latent_dims, hidden_dims, activation, bool(batch_norm))  # (checked and built by build)
        self.layout: LadderLayout | None = None

    @property
    def depth(self) -> int:
        return self.layout.depth

    def build(self, latent_dim: int) -> None:
        """Check the settings (here rather than in ``__init__``, so that a bad one reaches the user as itself, not
        wrapped in Hydra's errors of the nested instantiation) and make both paths' layers."""
        latent_dims, hidden_dims, activation, batch_norm = self.settings
        if activation not in ACTIVATIONS:
            raise ConfigError(f"model.code.activation = {activation!r} is invalid: it must be one of "
                              f"{', '.join(ACTIVATIONS)}")
        self.layout = ladder_layout(latent_dims, hidden_dims)
        dims, widths = self.layout.latent_dims, self.layout.hidden_dims
        if latent_dim != dims[0]:
            raise ConfigError(
                f"model.latent_dim = {latent_dim} is invalid with model.code.latent_dims = {list(dims)}: the decoder "
                f"sees z_1, so it must be the first size, {dims[0]} (model=hvae sets model.latent_dim from "
                "model.code.latent_dims)"
            )
        self.first = ACTIVATIONS[activation]()  # d_1 = a(h)
        #: bottom-up: d_i = a(W_i d_{i−1}) for i = 2 … L
        self.up = nn.ModuleList(_block(widths[i - 1], widths[i], activation, batch_norm) for i in range(1, len(dims)))
        #: each layer's bottom-up μ̂_i, log σ̂²_i from d_i
        self.up_heads = nn.ModuleList(GaussianHead(widths[i], dims[i]) for i in range(len(dims)))
        #: top-down, layer i < L: μ_p,i, log σ²_p,i from z_{i+1} (one hidden layer of width hidden_dims[i])
        self.down = nn.ModuleList(_block(dims[i + 1], widths[i], activation, batch_norm) for i in range(len(dims) - 1))
        self.down_heads = nn.ModuleList(GaussianHead(widths[i], dims[i]) for i in range(len(dims) - 1))

    def encoder_features(self, latent_dim: int) -> int:
        return self.layout.hidden_dims[0]

    # ------------------------------------------------------------------ the two paths
    def bottom_up(self, h: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(μ̂_i, log σ̂²_i) of every layer, bottom (i = 1) first."""
        d = self.first(h)
        estimates = [self.up_heads[0](d)]
        for block, head in zip(self.up, self.up_heads[1:], strict=True):
            d = block(d)
            estimates.append(head(d))
        return estimates

    def conditional_prior(self, i: int, z_above: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """μ_p and log σ²_p of p(z_i | z_{i+1}) for layer ``i`` (0-based, below the top) given ``z_above``."""
        return self.down_heads[i](self.down[i](z_above))

    def _top_down(self, estimates: list[tuple[torch.Tensor, torch.Tensor]],
                  noise: Sequence[torch.Tensor | None]) -> list[dict[str, torch.Tensor]]:
        """The stochastic top-down pass. ``noise[i]`` is layer i's ε (None: no noise, z_i = μ_q,i). Returns, per
        layer bottom first, its z, the posterior's μ_q and log σ²_q and the prior's μ_p and log σ²_p (None at the
        top, whose prior is N(0, I))."""
        top = self.depth - 1
        mu, logvar = estimates[top]
        z = mu if noise[top] is None else _draw(mu, logvar, noise[top])
        layers = [{"z": z, "mu": mu, "logvar": logvar, "mu_p": None, "logvar_p": None}]
        for i in range(top - 1, -1, -1):
            mu_p, logvar_p = self.conditional_prior(i, z)
            mu, logvar = precision_weighted_merge(*estimates[i], mu_p, logvar_p)
            z = mu if noise[i] is None else _draw(mu, logvar, noise[i])
            layers.append({"z": z, "mu": mu, "logvar": logvar, "mu_p": mu_p, "logvar_p": logvar_p})
        return layers[::-1]

    @staticmethod
    def layer_kls(layers: list[dict[str, torch.Tensor]]) -> list[torch.Tensor]:
        """KL_i per image, bottom first: closed forms given the drawn z_{i+1}."""
        kls = []
        for layer in layers:
            if layer["mu_p"] is None:
                kls.append(kl_to_standard_normal(layer["mu"], layer["logvar"]))
            else:
                kls.append(gaussian_kl(layer["mu"], layer["logvar"], layer["mu_p"], layer["logvar_p"]))
        return kls

    # ------------------------------------------------------------------ the pass
    def forward(self, h: torch.Tensor) -> CodeOutput:
        estimates = self.bottom_up(h)
        noise = [torch.randn_like(mu, dtype=torch.promote_types(mu.dtype, torch.float32)) for mu, _ in estimates]
        layers = self._top_down(estimates, noise)
        kls = self.layer_kls(layers)
        extras = {f"kl_layer{i + 1}": kl for i, kl in enumerate(kls)}
        # (training reads no deterministic code: μ_q,1 given the drawn z_2 spares a second pass through batch norm)
        mean = layers[0]["mu"] if self.training else self._top_down(estimates, [None] * self.depth)[0]["mu"]
        return CodeOutput(z=layers[0]["z"], mu=mean, logvar=None, kl=torch.stack(kls).sum(dim=0), extras=extras)

    def locate(self, h: torch.Tensor) -> tuple[torch.Tensor, None]:
        """z_1's posterior mean from a noise-free top-down pass; no log-variance (see the class's docstring)."""
        return self._top_down(self.bottom_up(h), [None] * self.depth)[0]["mu"], None

    # ------------------------------------------------------------------ the prior
    def prior_noise(self, n: int, generator: torch.Generator | None = None) -> list[torch.Tensor]:
        """ε of every layer for ``n`` ancestral draws, bottom first, drawn on the CPU top first (a seeded generator
        gives the same draws on any device)."""
        top_first = [torch.randn(n, d, generator=generator, device="cpu") for d in self.layout.latent_dims[::-1]]
        return top_first[::-1]

    def ancestral(self, noise: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """z_L = ε_L, z_i = μ_p,i(z_{i+1}) + σ_p,i(z_{i+1}) ε_i: every layer's draw from the prior, bottom first,
        for the ε of each layer (bottom first) on the code's device."""
        weight = self.up_heads[0].mu.weight
        top = self.depth - 1
        z = noise[top].to(weight.device, weight.dtype)
        draws = [z]
        for i in range(top - 1, -1, -1):
            z = _draw(*self.conditional_prior(i, z), noise[i].to(weight.device, weight.dtype))
            draws.append(z)
        return draws[::-1]

    def prior_sample(self, n: int, latent_dim: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """z_1 of ``n`` ancestral draws from the top (the noise from the CPU, the draws on the code's device)."""
        return self.ancestral(self.prior_noise(n, generator))[0]

    # ------------------------------------------------------------------ a layer's traversal (the dashboard's)
    def posterior_means(self, h: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """The noise-free top-down pass: per layer, bottom first, z_i = μ_q,i with every layer above at its own
        posterior mean, and the posterior's and conditional prior's μ and log σ² there (``mu_p``, ``logvar_p``:
        None at the top, whose prior is N(0, I))."""
        return self._top_down(self.bottom_up(h), [None] * self.depth)

    def prior_means_below(self, i: int, z_i: torch.Tensor) -> list[torch.Tensor]:
        """z_1 … z_i, bottom first, for ``z_i`` of layer ``i`` (0-based) with every layer below it at its conditional
        prior's mean given the one above: z_j = μ_p,j(z_{j+1}) for j = i − 1 … 1 (the generative path without noise)."""
        draws = [z_i]
        for j in range(i - 1, -1, -1):
            draws.append(self.conditional_prior(j, draws[-1])[0])
        return draws[::-1]

    # ------------------------------------------------------------------ densities
    def draw(self, h: torch.Tensor, n: int,
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        raise ValueError("a HierarchicalCode has no closed-form marginal q(z_1|x): draw the whole hierarchy with "
                         "importance_draws")

    def log_q(self, out: CodeOutput) -> torch.Tensor:
        raise ConfigError("model.prior cannot be combined with model.code=ladder: the hierarchy's prior is its own "
                          "top-down p(z_L) p(z_{L-1}|z_L) …; set model.prior=null")

    def prior_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        raise ValueError("a HierarchicalCode has no closed-form marginal p(z_1): use importance_draws, which scores "
                         "every layer")

    def importance_draws(self, h: torch.Tensor, n: int, generator: torch.Generator | None = None,
                         prior_log_prob=None) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` draws of the whole hierarchy per image, z_1 of each ``(n, B, d_1)``, and
        Σ_i [log p(z_i | z_{i+1}) − log q(z_i | ·)] of each ``(n, B)`` at the drawn values (Burda et al. 2016, eq. 8,
        with z = (z_1 … z_L)). The bottom-up pass runs once; the top-down pass once over all n·B draws."""
        if prior_log_prob is not None:
            self.log_q(None)  # (refused: a model prior of its own)
        batch = h.shape[0]
        dtype = torch.promote_types(h.dtype, torch.float32)
        estimates = [(mu.to(dtype).repeat(n, 1), logvar.to(dtype).repeat(n, 1)) for mu, logvar in self.bottom_up(h)]
        noise = [torch.randn((n * batch, mu.shape[1]), generator=generator, dtype=dtype, device=h.device)
                 for mu, _ in estimates]
        layers = self._top_down(estimates, noise)
        log_ratio = torch.zeros(n * batch, dtype=dtype, device=h.device)
        for layer, eps in zip(layers, noise, strict=True):
            log_q = standard_normal_log_prob(eps) - 0.5 * layer["logvar"].sum(dim=-1)  # z = μ + σ ε
            if layer["mu_p"] is None:
                log_p = standard_normal_log_prob(layer["z"])
            else:
                log_p = normal_log_prob_per_dimension(layer["z"], layer["mu_p"], layer["logvar_p"]).sum(dim=-1)
            log_ratio = log_ratio + log_p - log_q
        z1 = layers[0]["z"]
        return z1.reshape(n, batch, z1.shape[1]), log_ratio.reshape(n, batch)
