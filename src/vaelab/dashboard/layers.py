"""What each latent layer of a hierarchical code draws (the Ladder VAE's code,
:class:`~vaelab.models.ladder_code.HierarchicalCode`): samples with the layers above one layer held and that layer
and those below it drawn afresh (:class:`LayerSamples`), and the walk along each of a layer's dimensions from the first
image's code with the layers above held (:class:`LayerTraversal`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch.distributions import Normal, kl_divergence

from vaelab.dashboard.base import DashboardCallback, classes_of
from vaelab.dashboard.grids import MUTED, Label, cell_side, image_grid, labelled_grid, signed, to_uint8

__all__ = ["LayerSamples", "LayerTraversal", "layer_kl_per_dimension"]


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


def layer_kl_per_dimension(layer: dict[str, torch.Tensor | None]) -> torch.Tensor:
    """KL(q(z_i | ·) ‖ p(z_i | z_{i+1})) of one layer of a top-down pass, one column per dimension, ``(B, d_i)``:
    against the conditional prior N(μ_p,i, σ²_p,i), or N(0, I) at the top (``mu_p`` None). The per-layer KL of
    Sønderby et al. 2016 before its sum over the layer's dimensions (closed form, torch.distributions)."""
    mu, scale = layer["mu"], torch.exp(0.5 * layer["logvar"])
    if layer["mu_p"] is None:
        prior = Normal(torch.zeros_like(mu), torch.ones_like(mu), validate_args=False)
    else:
        prior = Normal(layer["mu_p"], torch.exp(0.5 * layer["logvar_p"]), validate_args=False)
    return kl_divergence(Normal(mu, scale, validate_args=False), prior)


class LayerTraversal(DashboardCallback):
    """``<split>/layer_traversal``: for each latent layer i, from the top down, one row per walked dimension of z_i,
    from the first image's code.

    The code is the noise-free top-down pass (every layer at its posterior mean given the layer above). In the rows
    of layer i, z_{i+1} … z_L stay at the first image's posterior means; z_i is its posterior mean μ_q,i with one
    dimension d moved by k conditional-prior standard deviations, z_i,d = μ_q,i,d + k·σ_p,i,d (σ_p,i of
    p(z_i | z_{i+1}) at the held z_{i+1}; 1 at the top, whose prior is N(0, I)), k in ``steps`` even steps from
    −``span`` to +``span``; the layers below follow without noise, z_j = μ_p,j(z_{j+1}), and z_1 is decoded. So a row
    shows what one dimension of layer i decides with everything above it fixed (Sønderby et al. 2016 show such
    per-layer views of a hierarchy's code).

    The rows of a layer are its ``max_dims`` dimensions with the most KL(q(z_i|·) ‖ p(z_i|z_{i+1})) on the fixed images
    (from the same noise-free pass), most first; each is labelled ``z<i>[<d>]`` with that KL and σ_p,i,d, greyed
    below 0.01 nats (a dimension the model does not use). Nothing for a code without layers (any code but a
    hierarchical one).
    """

    def __init__(self, max_dims: int = 4, steps: int = 9, span: float = 3.0, min_side: int = 16,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        for key, value, least in (("max_dims", max_dims, 1), ("steps", steps, 2)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"callbacks.layer_traversal.{key} = {value!r} is invalid: it must be an integer >= "
                                 f"{least}")
        if isinstance(span, bool) or not isinstance(span, (int, float)) or not span > 0:
            raise ValueError(f"callbacks.layer_traversal.span = {span!r} is invalid: it must be a number > 0 (the "
                             "walk goes from −span to +span conditional-prior standard deviations)")
        self.max_dims, self.steps, self.span, self.min_side = max_dims, steps, float(span), min_side

    def walk(self, code: Any, h: torch.Tensor) -> tuple[list[torch.Tensor], list[tuple[int, int]], list[Label]]:
        """Every layer's z (bottom first) in every cell, ``(rows × steps, d_j)`` each, row after row; the (layer,
        dimension) each row walks (0-based, top layer first); and each row's label. ``h``: the net's encoder output
        for the fixed images (the first is walked; all of them rank the dimensions)."""
        layers = code.posterior_means(h)
        held = [layer["z"][:1] for layer in layers]  # the first image's noise-free code, every layer
        offsets = torch.linspace(-self.span, self.span, self.steps, device=h.device, dtype=held[0].dtype)
        cells: list[list[torch.Tensor]] = [[] for _ in layers]
        rows, labels = [], []
        for i in range(len(layers) - 1, -1, -1):
            kl = layer_kl_per_dimension(layers[i]).mean(0)
            top = layers[i]["logvar_p"] is None
            sigma = torch.ones_like(held[i][0]) if top else torch.exp(0.5 * layers[i]["logvar_p"][0])
            for d in kl.argsort(descending=True)[: self.max_dims].tolist():
                z_i = held[i].repeat(self.steps, 1)
                z_i[:, d] = z_i[:, d] + offsets * sigma[d]
                below = code.prior_means_below(i, z_i)
                for j in range(len(layers)):
                    cells[j].append(below[j] if j <= i else held[j].expand(self.steps, -1))
                rows.append((i, d))
                dead = kl[d].item() < 0.01
                labels.append((f"z{i + 1}[{d}] · {kl[d].item():.2f} nats · σp {sigma[d].item():.2g}",
                               MUTED if dead else (20, 20, 20)))
        return [torch.cat(parts) for parts in cells], rows, labels

    def draw(self, writer, tag_prefix, step, module, x, y, out) -> None:
        code = getattr(module, "code", None)
        if getattr(code, "depth", None) is None or getattr(code, "posterior_means", None) is None:
            return
        h = module.features(x, **classes_of(module, y, len(x)))
        layers, _, labels = self.walk(code, h)
        z1 = layers[0]
        images = module.mean(module.decode(z1, **classes_of(module, y[:1], len(z1))))
        grid, side = to_uint8(image_grid(images, self.steps, self.min_side)), cell_side(images, self.min_side)
        cols = [signed(k) for k in torch.linspace(-self.span, self.span, self.steps).tolist()]
        caption = "zᵢ = μq + k·σp, k:"
        tag = f"{tag_prefix}/layer_traversal"
        self.in_background(lambda: writer.add_image(
            tag, labelled_grid(grid, side, labels, cols, col_caption=caption), step, dataformats="HWC"))
