"""Image grids: reconstructions, samples from the prior and latent traversals."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torchvision.utils import make_grid

from vaelab.callbacks.base import DashboardCallback
from vaelab.models.distributions import kl_per_dimension


def upscale(images: torch.Tensor, min_side: int) -> torch.Tensor:
    """Nearest-neighbour enlargement so that 8×8 digits are visible in TensorBoard."""
    factor = max(1, -(-min_side // min(images.shape[-2:])))
    return F.interpolate(images, scale_factor=factor, mode="nearest") if factor > 1 else images


def image_grid(images: torch.Tensor, nrow: int, min_side: int = 56) -> torch.Tensor:
    return make_grid(upscale(images.float().clamp(0, 1).cpu(), min_side), nrow=nrow, padding=2, pad_value=0.5)


class ReconstructionGrid(DashboardCallback):
    """``<split>/reconstructions``: rows of inputs, each above the row of its reconstructions."""

    def __init__(self, nrow: int = 8, min_side: int = 56, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.nrow, self.min_side = nrow, min_side

    def draw(self, writer, tag_prefix, step, module, x, y, out) -> None:
        rows = []
        for start in range(0, len(x), self.nrow):
            rows += [x[start : start + self.nrow], out.x_mean[start : start + self.nrow]]
        pairs = torch.cat([F.pad(r, (0, 0, 0, 0, 0, 0, 0, self.nrow - len(r)), value=0.5) for r in rows])
        grid = image_grid(pairs, self.nrow, self.min_side)
        self.in_background(lambda: writer.add_image(f"{tag_prefix}/reconstructions", grid, step))  # PNG encoding


class PriorSamples(DashboardCallback):
    """``<split>/samples``: images decoded from the same draws z ~ N(0, I) each epoch (VAEs only)."""

    def __init__(self, nrow: int = 8, min_side: int = 56, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.nrow, self.min_side = nrow, min_side

    def draw(self, writer, tag_prefix, step, module, x, y, out) -> None:
        if out.logvar is None:  # a deterministic autoencoder has no prior to sample from
            return
        samples = module.sample(self.num_images)  # the base class seeded the RNG: the same z every epoch
        grid = image_grid(samples, self.nrow, self.min_side)
        self.in_background(lambda: writer.add_image(f"{tag_prefix}/samples", grid, step))


class LatentTraversal(DashboardCallback):
    """``<split>/traversal``: one row per latent dimension, walking it from −``span`` to +``span`` around the
    posterior mean of the first image while the other dimensions stay put. For a VAE the rows are the
    ``max_dims`` dimensions with the most KL on the fixed images, most first (the ones the decoder uses);
    for an AE the first ``max_dims``."""

    def __init__(self, max_dims: int = 10, steps: int = 9, span: float = 3.0, min_side: int = 56,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_dims, self.steps, self.span, self.min_side = max_dims, steps, span, min_side

    def draw(self, writer, tag_prefix, step, module, x, y, out) -> None:
        dims = min(self.max_dims, out.mu.shape[1])
        if out.logvar is None:
            order = torch.arange(dims)
        else:
            order = kl_per_dimension(out.mu, out.logvar).mean(0).argsort(descending=True)[:dims]
        values = torch.linspace(-self.span, self.span, self.steps, device=out.mu.device)
        z = out.mu[:1].repeat(dims * self.steps, 1)
        for row, d in enumerate(order.tolist()):
            z[row * self.steps : (row + 1) * self.steps, d] += values
        images = module.likelihood.mean(module.decode(z))
        grid = image_grid(images, self.steps, self.min_side)
        self.in_background(lambda: writer.add_image(f"{tag_prefix}/traversal", grid, step))
