"""Figures of the latent space: a 2-D scatter coloured by class, and the KL carried by each dimension."""

from __future__ import annotations

from typing import Any

from vaelab.dashboard import figures
from vaelab.dashboard.base import DashboardCallback
from vaelab.dashboard.health import code_health


class LatentScatter(DashboardCallback):
    """``<split>/latent_space``: posterior means of ``num_images`` fixed images, coloured by class label (the two
    latent dimensions when there are two, their PCA otherwise). A VAE's axes are fixed at the prior's scale (±4),
    so a collapsed code shows as a dot; every axis label gives the codes' spread along it."""

    def __init__(self, num_images: int = 1000, **kwargs: Any) -> None:
        super().__init__(num_images=num_images, **kwargs)

    def draw(self, writer, tag_prefix, step, module, x, y, out) -> None:
        codes, labels = out.mu.flatten(1).float().cpu().numpy(), y.cpu().numpy()  # (a code grid as one vector)
        names, tag = self.class_names, f"{tag_prefix}/latent_space"
        health, prior = code_health(out), out.logvar is not None
        self.in_background(lambda: writer.add_image(
            tag, figures.latent_scatter(codes, labels, names, prior, health), step, dataformats="HWC"))


class KLPerDimension(DashboardCallback):
    """``<split>/kl_per_dim``: mean KL (nats) of each latent dimension over the fixed images, inactive dimensions
    (collapsed to the prior: Cov_x(μ) ≤ 0.01) in grey, and a red title when the whole code has collapsed. VAEs
    only."""

    def __init__(self, num_images: int = 1000, **kwargs: Any) -> None:
        super().__init__(num_images=num_images, **kwargs)

    def draw(self, writer, tag_prefix, step, module, x, y, out) -> None:
        health = code_health(out)
        if health is None:
            return
        tag = f"{tag_prefix}/kl_per_dim"
        self.in_background(lambda: writer.add_image(
            tag, figures.kl_bars(health.kl_per_dim, health.active, health), step, dataformats="HWC"))
