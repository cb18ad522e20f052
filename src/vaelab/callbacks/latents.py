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
        codes, labels, names = out.mu.float().cpu().numpy(), y.cpu().numpy(), self.class_names
        self.in_background(lambda: self.render(writer, f"{tag_prefix}/latent_space", step, codes, labels, names))

    @staticmethod
    def render(writer, tag, step, codes, labels, names) -> None:
        points, axis = project_2d(codes)
        # One scatter call and a fixed layout: drawing this every epoch must stay cheap next to an epoch of training.
        fig = Figure(figsize=(6, 4.5), dpi=90)
        fig.subplots_adjust(left=0.11, right=0.75, bottom=0.12, top=0.92)
        ax = fig.subplots()
        dots = ax.scatter(points[:, 0], points[:, 1], c=labels % 10, cmap="tab10", vmin=0, vmax=9, s=6, alpha=0.7)
        handles, _ = dots.legend_elements()  # one per class present, in sorted order
        present = np.unique(labels % 10)
        names = [names[k] if names is not None and k < len(names) else str(k) for k in present]
        ax.legend(handles, names, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7)
        ax.set_xlabel(f"{axis} 1")
        ax.set_ylabel(f"{axis} 2")
        ax.set_title(f"latent space, step {step}")
        writer.add_figure(tag, fig, step)


class KLPerDimension(DashboardCallback):
    """``<split>/kl_per_dim``: mean KL (nats) of each latent dimension over the fixed images; dimensions near
    zero are inactive (collapsed to the prior). VAEs only."""

    def __init__(self, num_images: int = 1000, **kwargs: Any) -> None:
        super().__init__(num_images=num_images, **kwargs)

    def draw(self, writer, tag_prefix, step, module, x, y, out) -> None:
        if out.logvar is None:
            return
        kl = kl_per_dimension(out.mu, out.logvar).mean(0).float().cpu().numpy()
        self.in_background(lambda: self.render(writer, f"{tag_prefix}/kl_per_dim", step, kl))

    @staticmethod
    def render(writer, tag, step, kl) -> None:
        fig = Figure(figsize=(6, 3), dpi=90)
        fig.subplots_adjust(left=0.11, right=0.97, bottom=0.17, top=0.88)
        ax = fig.subplots()
        ax.bar(np.arange(len(kl)), kl)
        ax.set_xlabel("latent dimension")
        ax.set_ylabel("KL (nats)")
        ax.set_title(f"KL per dimension, total {kl.sum():.2f} nats, step {step}")
        writer.add_figure(tag, fig, step)
