"""Figures of the latent space: a 2-D scatter coloured by class, and the KL carried by each dimension."""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.figure import Figure

from vaelab.callbacks.base import DashboardCallback
from vaelab.models.objectives import kl_per_dimension


def project_2d(codes: np.ndarray) -> tuple[np.ndarray, str]:
    """The codes themselves when they are 2-D (1-D codes get a zero second axis), else their PCA to 2-D."""
    if codes.shape[1] <= 2:
        return np.pad(codes, ((0, 0), (0, 2 - codes.shape[1]))), "z"
    from sklearn.decomposition import PCA

    return PCA(n_components=2).fit_transform(codes), "PCA of μ"


class LatentScatter(DashboardCallback):
    """``<split>/latent_space``: posterior means of ``num_images`` fixed images, coloured by class label."""

    def __init__(self, num_images: int = 1000, **kwargs: Any) -> None:
        super().__init__(num_images=num_images, **kwargs)

    def draw(self, writer, tag_prefix, step, module, x, y, out) -> None:
        points, axis = project_2d(out.mu.float().cpu().numpy())
        labels = y.cpu().numpy()
        names = self.class_names
        fig = Figure(figsize=(6, 5), dpi=100)
        ax = fig.subplots()
        cmap = fig.colormaps["tab10"] if hasattr(fig, "colormaps") else None
        for k in np.unique(labels):
            sel = labels == k
            colour = cmap(int(k) % 10) if cmap is not None else None
            label = names[int(k)] if names is not None and int(k) < len(names) else str(int(k))
            ax.scatter(points[sel, 0], points[sel, 1], s=6, alpha=0.7, color=colour, label=label)
        ax.set_xlabel(f"{axis} 1")
        ax.set_ylabel(f"{axis} 2")
        ax.set_title(f"latent space, step {step}")
        ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7, markerscale=2)
        fig.tight_layout()
        writer.add_figure(f"{tag_prefix}/latent_space", fig, step)


class KLPerDimension(DashboardCallback):
    """``<split>/kl_per_dim``: mean KL (nats) of each latent dimension over the fixed images; dimensions near
    zero are inactive (collapsed to the prior). VAEs only."""

    def __init__(self, num_images: int = 1000, **kwargs: Any) -> None:
        super().__init__(num_images=num_images, **kwargs)

    def draw(self, writer, tag_prefix, step, module, x, y, out) -> None:
        if out.logvar is None:
            return
        kl = kl_per_dimension(out.mu, out.logvar).mean(0).float().cpu().numpy()
        fig = Figure(figsize=(6, 3), dpi=100)
        ax = fig.subplots()
        ax.bar(np.arange(len(kl)), kl)
        ax.set_xlabel("latent dimension")
        ax.set_ylabel("KL (nats)")
        ax.set_title(f"KL per dimension, total {kl.sum():.2f} nats, step {step}")
        fig.tight_layout()
        writer.add_figure(f"{tag_prefix}/kl_per_dim", fig, step)
