"""VQ-VAE-2's code: two grids of codebook vectors, a top grid half the bottom grid's side, the bottom conditioned on
the top.

Razavi, van den Oord & Vinyals (2019), *Generating Diverse High-Fidelity Images with VQ-VAE-2*, NeurIPS, sec. 3.1,
fig. 2a and Algorithm 1. Given the bottom grid's features h_b = E_b(x) (B, C, h, w), from the net's encoder:

    h_top    = E_top(h_b)                              a stride-2 conv stack: (B, D, h/2, w/2)
    e_top    = Quantize_top(h_top)                     nearest vectors of the top codebook (K_top of size D)
    h_bottom = W [h_b ; D_top(e_top)]                  a 1×1 conv of h_b beside the decoded top, at (h, w)
    e_bottom = Quantize_bottom(h_bottom)               nearest vectors of the bottom codebook (K_bottom of size D)
    z        = [e_bottom ; U(e_top)]                   what the net's decoder reads: (B, 2D, h, w)

D_top (a conv stack ending in a stride-2 transposed conv) and U (a stride-2 transposed conv) bring the top grid to
the bottom's size, so the bottom quantiser's input depends on the top code, as the paper's does ("the bottom
latent is conditioned on the top"), and the decoder reads both levels. Each quantisation is
:class:`~vaelab.models.quantizer.QuantizedCode`'s (nearest neighbour, straight-through gradient, codebook and
commitment terms, EMA updates and restarts: van den Oord et al. 2017, eq. 1–3 and sec. 3.2), one per level.

Where the pure model's split falls (encoder → code → decoder): the net is the image side of the paper's fig. 2a,
the bottom encoder E_b and the decoder (:mod:`vaelab.models.two_level_nets`, VQ-VAE's grid nets); everything that
knows of two levels (E_top, both quantisers, D_top, W, U) is this code's, so the model's contract (one map in, one
map out) and its sampling (prior draws → decoder) hold as for every other code.

``model.latent_dim`` is z's channels, both levels' vectors side by side: 2D, so it must be even. q(z|x) is one-hot
at each level, so KL(q ‖ p) = −log p(k_top, k_bottom): (h/2·w/2)·log K_top + h·w·log K_bottom under the uniform
prior of the first stage, −log p_top(k_top) − log p_bottom(k_bottom | k_top) under the learned prior of the second
(:class:`~vaelab.models.two_level_prior.TwoLevelPixelCNNPrior`, sec. 3.2). The code's batch terms (``extras``):
each level's ``codebook``, ``commitment``, ``perplexity`` and ``usage`` with the suffix ``_top`` or ``_bottom``,
which :class:`~vaelab.models.objectives.vqvae2.VQVAE2` sums into the loss.

Config: ``model/code=quantized2`` (``model=vqvae2``), with ``model/net=vqvae2``.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable

import torch
from torch import nn

from vaelab.errors import ConfigError
from vaelab.models.codes import Code, CodeOutput
from vaelab.models.grid_nets import GridDecoder, GridEncoder
from vaelab.models.quantizer import QuantizedCode

#: the levels, as the suffixes of their batch terms in ``extras``
LEVELS = ("top", "bottom")


def _check_int(key: str, value: object, minimum: int, why: str) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"{key} = {value!r} is invalid: it must be an integer >= {minimum} ({why})")
    return int(value)


def _halving(channels: int) -> list[int]:
    """The image shape to build a one-stage grid net for: the sides of the grids are not known when the code is
    built, and the layers of a stride-2 stage are the same for every even side (the only sides the code accepts),
    so any even side gives them: 2."""
    return [channels, 2, 2]


class TwoLevelQuantizedCode(Code):
    """VQ-VAE-2's two-level quantised code (see the module's docstring).

    Args:
        top_codes, bottom_codes: K of each level's codebook (>= 2).
        channels: C, the channels of the bottom grid's features the net's encoder gives, and the width of the top
            encoder and decoder.
        residual_channels, residual_blocks: of the top encoder and decoder (VQ-VAE's residual blocks).
        ema, decay, epsilon, dead_code_steps: each codebook's (:class:`~vaelab.models.quantizer.QuantizedCode`).
        prior: the learned prior over pairs of index grids, a module or a callable that makes one given
            ``top_codes`` and ``bottom_codes`` (a ``_partial_`` config of
            :class:`~vaelab.models.two_level_prior.TwoLevelPixelCNNPrior`), or None for the uniform prior.
    """

    variational = False
    has_prior = True
    has_kl = True
    continuous = False  # (two grids of codebook vectors: sampled through the prior over their indices)

    def __init__(self, top_codes: int = 64, bottom_codes: int = 64, channels: int = 32, residual_channels: int = 32,
                 residual_blocks: int = 2, ema: bool = True, decay: float = 0.99, epsilon: float = 1e-5,
                 dead_code_steps: int = 100, prior: nn.Module | Callable[..., nn.Module] | None = None) -> None:
        super().__init__()
        why = "a codebook needs at least 2 vectors"
        top_codes = _check_int("model.code.top_codes", top_codes, 2, why)
        bottom_codes = _check_int("model.code.bottom_codes", bottom_codes, 2, why)
        self.channels = _check_int("model.code.channels", channels, 1, "the width of the code's convolutions")
        self.residual = (_check_int("model.code.residual_channels", residual_channels, 1, "a residual block's width"),
                         _check_int("model.code.residual_blocks", residual_blocks, 0, "0: none"))
        options = {"ema": ema, "decay": decay, "epsilon": epsilon, "dead_code_steps": dead_code_steps}
        self.top = QuantizedCode(top_codes, **options)
        self.bottom = QuantizedCode(bottom_codes, **options)
        if prior is not None and not isinstance(prior, nn.Module):
            prior = prior(top_codes=top_codes, bottom_codes=bottom_codes)
        self.prior: nn.Module | None = prior
        self.dim: int | None = None  # D, set by build()

    def build(self, latent_dim: int) -> None:
        if latent_dim < 2 or latent_dim % 2:
            raise ConfigError(f"model.latent_dim = {latent_dim} is invalid for VQ-VAE-2's code: it is the channels of "
                              "the map the decoder reads, both levels' codebook vectors side by side (D each), so it "
                              "must be even and >= 2, e.g. model.latent_dim=32 for D = 16")
        d = self.dim = latent_dim // 2
        self.top.build(d)
        self.bottom.build(d)
        residual_channels, residual_blocks = self.residual
        self.top_encoder = GridEncoder(_halving(self.channels), out_features=d, channels=self.channels,
                                       residual_channels=residual_channels, residual_blocks=residual_blocks,
                                       downsamples=1)
        self.top_decoder = GridDecoder(_halving(d), latent_dim=d, channels=self.channels,
                                       residual_channels=residual_channels, residual_blocks=residual_blocks,
                                       downsamples=1)
        self.bottom_input = nn.Conv2d(self.channels + d, d, 1)
        self.upsample_top = nn.ConvTranspose2d(d, d, 4, stride=2, padding=1)

    def encoder_features(self, latent_dim: int) -> int:
        return self.channels

    # ------------------------------------------------------------------ the two levels
    def _check(self, h: torch.Tensor) -> None:
        if h.dim() != 4 or h.shape[1] != self.channels:
            raise ValueError(f"VQ-VAE-2's code needs the bottom grid's features (B, C={self.channels}, h, w) "
                             f"(model.code.channels), got {tuple(h.shape)}: use model/net=vqvae2")
        if any(side < 2 or side % 2 for side in h.shape[-2:]):
            raise ConfigError(f"model.net.encoder.downsamples: the encoder gives a {h.shape[-2]}x{h.shape[-1]} bottom "
                              "code grid, whose sides do not halve into VQ-VAE-2's top grid (they must be even and "
                              ">= 2): use model/net=vqvae2 with downsamples null, which chooses a grid that halves")

    def bottom_input_of(self, h: torch.Tensor, e_top: torch.Tensor) -> torch.Tensor:
        """The bottom quantiser's input W [h_b ; D_top(e_top)] (B, D, h, w): the bottom features beside the decoded
        top code."""
        return self.bottom_input(torch.cat([h, self.top_decoder(e_top)], dim=1))

    def join(self, e_bottom: torch.Tensor, e_top: torch.Tensor) -> torch.Tensor:
        """What the decoder reads, [e_bottom ; U(e_top)] (B, 2D, h, w)."""
        return torch.cat([e_bottom, self.upsample_top(e_top)], dim=1)

    def _levels(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The top and bottom index grids of the bottom grid's features ``h``, and their vectors (no pass: nothing
        is updated, no term computed)."""
        self._check(h)
        top_index = self.top.indices(self.top_encoder(h))
        e_top = self.top.vectors(top_index)
        bottom_index = self.bottom.indices(self.bottom_input_of(h, e_top))
        return top_index, e_top, bottom_index, self.bottom.vectors(bottom_index)

    def indices(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The index grids (B, h/2, w/2) and (B, h, w) of the bottom grid's features ``h``."""
        top_index, _, bottom_index, _ = self._levels(h)
        return top_index, bottom_index

    def locate(self, h: torch.Tensor) -> tuple[torch.Tensor, None]:
        _, e_top, _, e_bottom = self._levels(h)
        return self.join(e_bottom, e_top), None

    def forward(self, h: torch.Tensor) -> CodeOutput:
        self._check(h)
        top_in = self.top_encoder(h)
        # (the indices for the learned prior's KL, found before the pass's codebook update)
        top_index = self.top.indices(top_in) if self.prior is not None else None
        top = self.top(top_in)
        bottom_in = self.bottom_input_of(h, top.z)  # (straight through: the bottom's terms reach E_top too)
        bottom_index = self.bottom.indices(bottom_in) if self.prior is not None else None
        bottom = self.bottom(bottom_in)
        z = self.join(bottom.z, top.z)
        extras = {f"{name}_{level}": value
                  for level, out in zip(LEVELS, (top, bottom), strict=True) for name, value in out.extras.items()}
        kl = top.kl + bottom.kl if self.prior is None else self.prior.nll(top_index, bottom_index)
        return CodeOutput(z=z, mu=z, logvar=None, kl=kl, extras=extras)

    # ------------------------------------------------------------------ the prior
    def grid_shapes(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """(h/2, w/2) and (h, w): the top and bottom grids' sizes, recorded at the model's passes and kept in its
        checkpoints."""
        return self.top.grid_shape(), self.bottom.grid_shape()

    def prior_sample(self, n: int, latent_dim: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """The decoder's inputs (n, 2D, h, w) of index grids drawn from the prior: both grids uniformly and
        independently (the first stage's prior), or the top grid from the learned prior and then the bottom
        grid given it; the indices are drawn on the CPU with ``generator``."""
        top_shape, bottom_shape = self.grid_shapes()
        if self.prior is None:
            top = torch.randint(self.top.num_codes, (n, *top_shape), generator=generator)
            bottom = torch.randint(self.bottom.num_codes, (n, *bottom_shape), generator=generator)
        else:
            top, bottom = self.prior.sample(n, top_shape, bottom_shape, generator)
        device = self.upsample_top.weight.device
        return self.join(self.bottom.vectors(bottom.to(device)), self.top.vectors(top.to(device)))

    def extra_repr(self) -> str:
        return f"channels={self.channels}, D={self.dim}"
