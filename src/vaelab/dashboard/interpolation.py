"""Decoding along lines and grids in the latent space: interpolations between images, and the 2-D manifold."""

from __future__ import annotations

import logging
from typing import Any

import torch

from vaelab.dashboard.base import DashboardCallback, classes_of
from vaelab.dashboard.grids import cell_side, image_grid, labelled_grid, signed, to_uint8

log = logging.getLogger(__name__)


def _name(label: int, names) -> str:
    return names[label] if names is not None and 0 <= label < len(names) else str(label)


class Interpolations(DashboardCallback):
    """``<split>/interpolations``: one row per pair of fixed images (image i with image i + ``num_pairs``): the first
    image, the decoder's means along the straight line from its posterior mean (code) to the second's,
    z = (1 − α) μ(A) + α μ(B) for ``steps`` even values of α from 0 to 1 (0, 0.2, …, 1 by default), then the second
    image. A smooth row is a
    latent space without holes between the data."""

    def __init__(self, num_pairs: int = 6, steps: int = 6, min_side: int = 24, **kwargs: Any) -> None:
        if num_pairs < 1 or steps < 2:
            raise ValueError("num_pairs must be >= 1 and steps >= 2")
        super().__init__(num_images=2 * num_pairs, **kwargs)
        self.num_pairs, self.steps, self.min_side = num_pairs, steps, min_side

    def draw(self, writer, tag_prefix, step, module, x, y, out) -> None:
        pairs = len(x) // 2
        if pairs == 0:
            return
        a, b = out.mu[:pairs].flatten(1), out.mu[pairs : 2 * pairs].flatten(1)  # (a code grid as one vector)
        alphas = torch.linspace(0, 1, self.steps, device=a.device, dtype=a.dtype)
        z = a[:, None] + alphas[None, :, None] * (b - a)[:, None]  # (pairs, steps, D)
        # (a conditional model decodes each pair's path with A's class)
        given = classes_of(module, y[:pairs].repeat_interleave(self.steps), pairs * self.steps)
        decoded = module.likelihood.mean(module.decode(z.reshape(pairs * self.steps, *out.mu.shape[1:]), **given))
        decoded = decoded.reshape(pairs, self.steps, *decoded.shape[1:])
        rows = torch.cat([x[:pairs, None], decoded, x[pairs : 2 * pairs, None]], dim=1).flatten(0, 1)
        grid, side = to_uint8(image_grid(rows, self.steps + 2, self.min_side)), cell_side(rows, self.min_side)
        labels = [f"{_name(int(y[i]), self.class_names)} → {_name(int(y[pairs + i]), self.class_names)}"
                  for i in range(pairs)]
        cols = ["A", *(signed(v) for v in alphas.tolist()), "B"]
        title = "A → B: decoded (1 − α)·μ(A) + α·μ(B)"
        tag = f"{tag_prefix}/interpolations"
        self.in_background(lambda: writer.add_image(
            tag, labelled_grid(grid, side, labels, cols, title=title), step, dataformats="HWC"))


class LatentManifold(DashboardCallback):
    """``<split>/manifold``, for a 2-D code only: the decoder's means on an ``n`` × ``n`` grid of z (Kingma & Welling
    2014, fig. 4). A VAE's grid is at the prior's quantiles ``quantile`` … 1 − ``quantile`` of each axis (even
    steps of probability, so each cell covers as much prior mass); an AE, which has no prior, gets the same quantiles
    of its codes over the fixed images. z 1 grows to the right, z 2 upwards; the margins give the values."""

    def __init__(self, n: int = 10, quantile: float = 0.05, min_side: int = 16, num_images: int = 1000,
                 **kwargs: Any) -> None:
        if n < 2 or not 0.0 < quantile < 0.5:
            raise ValueError("n must be >= 2 and quantile in (0, 0.5)")
        super().__init__(num_images=num_images, **kwargs)
        self.n, self.quantile, self.min_side = n, quantile, min_side
        self._told = False

    def axes(self, out) -> torch.Tensor:
        """The grid's values along each axis, (2, n), ascending."""
        probs = torch.linspace(self.quantile, 1 - self.quantile, self.n, dtype=torch.float64)
        if out.logvar is not None:
            values = torch.distributions.Normal(0.0, 1.0).icdf(probs)
            return values.expand(2, -1).to(out.mu)
        return torch.quantile(out.mu.double().T, probs.to(out.mu.device), dim=1).T.to(out.mu)

    def draw(self, writer, tag_prefix, step, module, x, y, out) -> None:
        if out.mu.dim() != 2 or out.mu.shape[1] != 2:
            if not self._told:
                log.info("LatentManifold draws only a 2-D code (model.latent_dim=2); this one has %d dimensions",
                         out.mu.shape[1])
                self._told = True
            return
        z1, z2 = self.axes(out)
        rows = z2.flip(0)  # the top row is the largest z 2, as on a plot
        z = torch.stack([z1.repeat(self.n), rows.repeat_interleave(self.n)], dim=1)
        images = module.likelihood.mean(module.decode(z, **classes_of(module, y[:1], len(z))))
        grid, side = to_uint8(image_grid(images, self.n, self.min_side)), cell_side(images, self.min_side)
        source = "the prior's" if out.logvar is not None else "the codes'"
        title = f"z 1 →, z 2 ↑ at {source} {self.quantile:.0%}…{1 - self.quantile:.0%} quantiles"
        row_labels, col_labels = [signed(v, 1) for v in rows.tolist()], [signed(v, 1) for v in z1.tolist()]
        tag = f"{tag_prefix}/manifold"
        self.in_background(lambda: writer.add_image(
            tag, labelled_grid(grid, side, row_labels, col_labels, title=title), step, dataformats="HWC"))
