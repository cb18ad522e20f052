"""Figures of the latent space: a 2-D scatter coloured by class, and the KL carried by each dimension."""

from __future__ import annotations

from typing import Any

from vaelab.callbacks import figures
from vaelab.callbacks.base import DashboardCallback
from vaelab.models.distributions import kl_per_dimension


class LatentScatter(DashboardCallback):
    """``<split>/latent_space``: posterior means of ``num_images`` fixed images, coloured by class label (the two
    latent dimensions when there are two, their PCA otherwise)."""

    def __init__(self, num_images: int = 1000, **kwargs: Any) -> None:
        super().__init__(num_images=num_images, **kwargs)

    def draw(self, writer, tag_prefix, step, module, x, y, out) -> None:
        codes, labels = out.mu.float().cpu().numpy(), y.cpu().numpy()
        names, tag = self.class_names, f"{tag_prefix}/latent_space"
        self.in_background(
            lambda: writer.add_image(tag, figures.latent_scatter(codes, labels, names, step), step, dataformats="HWC")
        )


class KLPerDimension(DashboardCallback):
    """``<split>/kl_per_dim``: mean KL (nats) of each latent dimension over the fixed images; dimensions near
    zero are inactive (collapsed to the prior). VAEs only."""

    def __init__(self, num_images: int = 1000, **kwargs: Any) -> None:
        super().__init__(num_images=num_images, **kwargs)

    def draw(self, writer, tag_prefix, step, module, x, y, out) -> None:
        if out.logvar is None:
            return
        kl = kl_per_dimension(out.mu, out.logvar).mean(0).float().cpu().numpy()
        tag = f"{tag_prefix}/kl_per_dim"
        self.in_background(lambda: writer.add_image(tag, figures.kl_bars(kl, step), step, dataformats="HWC"))
