"""What each latent layer of a hierarchical code draws: samples with the layers above one layer held and that layer
and those below it drawn afresh (the Ladder VAE's code, :class:`~vaelab.models.ladder_code.HierarchicalCode`).
"""

from __future__ import annotations

from typing import Any

import torch

from vaelab.dashboard.base import DashboardCallback
from vaelab.dashboard.grids import cell_side, image_grid, labelled_grid, to_uint8

__all__ = ["LayerSamples"]


def _span(first: int, last: int) -> str:
    """The layers z_first … z_last as a label (one layer by its name alone)."""
    return f"z{first}" if first == last else f"z{first}…z{last}"


class LayerSamples(DashboardCallback):
    """``<split>/layer_samples``: for each latent layer i, from the top down, ``rows_per_layer`` rows of ``ncol``
    ancestral samples (Sønderby et al. 2016). Within a row, z_{i+1} … z_L are one draw, held; z_i … z_1
    are drawn afresh in every column. The top layer's rows are plain samples; the lower a layer, the more a row
    shows only what that layer and those below it decide (stroke, thickness: the details a lower layer carries).
    Each row is labelled ``z_i…z_1 new`` (and the layers held). The same ε every epoch (the base class's seed);
    nothing for a code without layers (any code but a hierarchical one).
    """

    def __init__(self, ncol: int = 8, rows_per_layer: int = 2, min_side: int = 24, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if ncol < 1 or rows_per_layer < 1:
            raise ValueError(f"callbacks.layer_samples: ncol = {ncol} and rows_per_layer = {rows_per_layer} must "
                             "both be >= 1")
        self.ncol, self.rows_per_layer, self.min_side = ncol, rows_per_layer, min_side

    def layer_noise(self, code: Any, generator: torch.Generator) -> tuple[list[torch.Tensor], list[str]]:
        """ε of every layer (bottom first) for all rows at once, and each row's label: in the rows of layer i, the
        ε of the layers above i repeat across the row's columns."""
        depth, n = code.depth, self.ncol
        rows = [(i, r) for i in range(depth - 1, -1, -1) for r in range(self.rows_per_layer)]
        noise = [[] for _ in range(depth)]
        labels = []
        for i, _ in rows:
            fresh = code.prior_noise(n, generator)  # every layer, one column each
            held = code.prior_noise(1, generator)
            for j in range(depth):
                noise[j].append(fresh[j] if j <= i else held[j].expand(n, -1))
            labels.append(f"{_span(i + 1, 1)} new" + (f" · {_span(i + 2, depth)} held" if i + 1 < depth else ""))
        return [torch.cat(parts) for parts in noise], labels

    def draw(self, writer, tag_prefix, step, module, x, y, out) -> None:
        code = getattr(module, "code", None)
        if getattr(code, "depth", None) is None or getattr(code, "ancestral", None) is None:
            return
        noise, labels = self.layer_noise(code, torch.Generator().manual_seed(self.seed))
        z1 = code.ancestral(noise)[0]
        images = module.mean(module.decode(z1))
        grid, side = to_uint8(image_grid(images, self.ncol, self.min_side)), cell_side(images, self.min_side)
        tag = f"{tag_prefix}/layer_samples"
        self.in_background(lambda: writer.add_image(tag, labelled_grid(grid, side, labels), step, dataformats="HWC"))
