"""VQ-VAE's code: a grid of codebook vectors, with a uniform or a learned (PixelCNN) prior over their indices.

van den Oord, Vinyals & Kavukcuoglu (2017), *Neural Discrete Representation Learning*, NeurIPS, sec. 3. The encoder
gives a feature map z_e(x) of shape (D, h, w); each of its h·w vectors is replaced by the nearest of the K codebook
vectors (:class:`~vaelab.models.codebook.Codebook`), and the decoder sees the quantised map z_q(x). The gradient
passes the quantisation straight through: the decoder's input is z_e + sg[z_q − z_e], whose value is z_q and whose
gradient with respect to z_e is the gradient at z_q (sec. 3.2).

q(z|x) is one-hot: the nearest index at each position with probability 1 (eq. 1). So KL(q(z|x) ‖ p(z)) = −log p(k)
of the chosen indices k: h·w·log K nats under the uniform prior of the first stage (sec. 3.1), and −log p_θ(k)
under a learned prior p_θ (the gated PixelCNN of the second stage, :mod:`vaelab.models.pixelcnn`, sec. 3.2). With
the reconstruction term this is a valid ELBO, which is logged as ``elbo`` like a VAE's; there is no Gaussian
posterior, so no importance-weighted bound and no active units.

The code's batch terms (``CodeOutput.extras``), batch means of per-image sums over the grid's h·w·D values:

* ``codebook``: ‖sg[z_e] − e‖², the term that trains the codebook (0 with ``ema``: the moving averages do);
* ``commitment``: ‖z_e − sg[e]‖², which the objective weights by β (:class:`~vaelab.models.objectives.VQVAE`);

and two measures of the codebook's use over the batch's B·h·w vectors: ``perplexity``, exp of the entropy of the
codes' frequencies (K for even use, 1 for one code), and ``usage``, how many distinct codes were chosen.

Config: ``model/code=quantized`` (``model=vqvae``); the model's ``latent_dim`` is D.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from vaelab.models.codebook import Codebook, perplexity
from vaelab.models.codes import Code, CodeOutput


def _forget_grid(module: QuantizedCode, incompatible_keys: object) -> None:
    """After a ``load_state_dict``, ``grid`` holds the checkpoint's value: the next pass records its own again."""
    module._grid = None


class QuantizedCode(Code):
    """A grid of K codebook vectors of size ``latent_dim``, with a prior over the indices.

    Args:
        num_codes: K.
        ema: update the codebook by exponential moving averages instead of its loss term (decay ``decay``,
            Laplace smoothing ``epsilon``).
        decay, epsilon: of the moving averages.
        dead_code_steps: move a code unused for this many training steps onto a random encoder output (0: never).
        prior: the learned prior over grids of indices, a module or a callable that makes one given
            ``num_codes`` (a ``_partial_`` config of :class:`~vaelab.models.pixelcnn.GatedPixelCNN`), or None for
            the uniform prior. Its weights are part of the model's, so a checkpoint rebuilds it.
    """

    variational = False
    has_prior = True
    has_kl = True
    continuous = False  # (a grid of codebook vectors: sampled through its prior over indices)

    def __init__(self, num_codes: int = 64, ema: bool = False, decay: float = 0.99, epsilon: float = 1e-5,
                 dead_code_steps: int = 100, prior: nn.Module | Callable[..., nn.Module] | None = None) -> None:
        super().__init__()
        self.num_codes = int(num_codes)
        self.options = {"ema": bool(ema), "decay": float(decay), "epsilon": float(epsilon),
                        "dead_code_steps": int(dead_code_steps)}
        self.codebook: Codebook | None = None  # made by build(), which knows D
        if prior is not None and not isinstance(prior, nn.Module):
            prior = prior(num_codes=self.num_codes)
        self.prior: nn.Module | None = prior
        #: the (h, w) of the grids the encoder gives, recorded at each pass (and kept in checkpoints) for sampling
        self.register_buffer("grid", torch.zeros(2, dtype=torch.long))
        self._grid: tuple[int, int] | None = None  # what ``grid`` holds, known without reading the device
        self.register_load_state_dict_post_hook(_forget_grid)

    def build(self, latent_dim: int) -> None:
        self.codebook = Codebook(self.num_codes, latent_dim, **self.options)

    @property
    def ema(self) -> bool:
        return self.options["ema"]

    # ------------------------------------------------------------------ quantisation
    def _flat(self, h: torch.Tensor) -> torch.Tensor:
        """The encoder's vectors (B·h·w, D) of a feature map (B, D, h, w), in raster order per image."""
        if h.dim() != 4 or self.codebook is None or h.shape[1] != self.codebook.dim:
            wanted = getattr(self.codebook, "dim", "latent_dim")
            raise ValueError(f"a QuantizedCode needs encoder features of shape (B, D={wanted}, h, w), got "
                             f"{tuple(h.shape)}: use a net with a code grid (model/net=vqvae)")
        size = tuple(h.shape[-2:])
        if self._grid != size:
            self.grid.copy_(torch.tensor(size))
            self._grid = size  # type: ignore[assignment]
        return h.permute(0, 2, 3, 1).reshape(-1, h.shape[1])

    def _grid_of(self, vectors: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        b, _, height, width = like.shape
        return vectors.reshape(b, height, width, -1).permute(0, 3, 1, 2)

    def indices(self, h: torch.Tensor) -> torch.Tensor:
        """The index grid (B, h, w) of encoder features ``h``: the nearest codebook vector at each position."""
        b, _, height, width = h.shape
        return self.codebook.nearest(self._flat(h)).view(b, height, width)

    def vectors(self, indices: torch.Tensor) -> torch.Tensor:
        """The quantised feature map (B, D, h, w) of an index grid (B, h, w)."""
        return self.codebook.lookup(indices).permute(0, 3, 1, 2)

    def locate(self, h: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.vectors(self.indices(h)), None

    def forward(self, h: torch.Tensor) -> CodeOutput:
        flat = self._flat(h)
        index = self.codebook.nearest(flat)
        e = self.codebook.lookup(index)
        batch = h.shape[0]
        commitment = (flat - e.detach()).pow(2).reshape(batch, -1).sum(1).mean()
        if self.ema:
            codebook_term = commitment.new_zeros(())
        else:
            codebook_term = (flat.detach() - e).pow(2).reshape(batch, -1).sum(1).mean()
        z_q = self._grid_of(e, h)
        z = h + (z_q - h).detach()  # straight through: the value of z_q, the gradient of z_e
        counts = torch.bincount(index, minlength=self.num_codes)
        if self.training:
            self.codebook.update(flat, index)
        extras = {"codebook": codebook_term, "commitment": commitment, "perplexity": perplexity(counts),
                  "usage": (counts > 0).sum().to(torch.float32)}
        kl = self.kl(index.view(batch, *h.shape[-2:]))
        return CodeOutput(z=z, mu=z, logvar=None, kl=kl, extras=extras)

    # ------------------------------------------------------------------ the prior
    def kl(self, indices: torch.Tensor) -> torch.Tensor:
        """KL(q(z|x) ‖ p(z)) = −log p(indices) per image (B,) for the one-hot q: h·w·log K under the uniform prior,
        the learned prior's negative log-likelihood otherwise."""
        if self.prior is None:
            positions = indices[0].numel()
            return torch.full((indices.shape[0],), positions * math.log(self.num_codes),
                              device=indices.device, dtype=self.codebook.vectors.dtype)
        return self.prior.nll(indices)

    def grid_shape(self) -> tuple[int, int]:
        """(h, w) of the code grid: recorded at the model's passes, and kept in its checkpoints."""
        height, width = (int(v) for v in self.grid.tolist())
        if height == 0:
            raise ValueError("the code grid's size is not known yet: pass a batch of images through the model "
                             "(or load a trained checkpoint) before sampling")
        return height, width

    def prior_sample(self, n: int, latent_dim: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """The quantised maps (n, D, h, w) of index grids drawn from the prior (uniform, or the learned one
        autoregressively); the indices are drawn on the CPU with ``generator``."""
        shape = self.grid_shape()
        if self.prior is None:
            indices = torch.randint(self.num_codes, (n, *shape), generator=generator)
        else:
            indices = self.prior.sample(n, shape, generator)
        return self.vectors(indices.to(self.codebook.vectors.device))

    def extra_repr(self) -> str:
        return f"num_codes={self.num_codes}, " + ", ".join(f"{k}={v}" for k, v in self.options.items())
