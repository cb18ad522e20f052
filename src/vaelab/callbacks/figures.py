"""Matplotlib figures of the latent space, rendered to RGB arrays.

Plain numpy and matplotlib (no pyplot), so the dashboard callbacks can draw them in a worker thread while training
goes on (see :meth:`vaelab.callbacks.base.DashboardCallback.in_background`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def project_2d(codes: np.ndarray) -> tuple[np.ndarray, str]:
    """The codes themselves when they are 2-D (1-D codes get a zero second axis), else their PCA to 2-D (or, for a
    single code, which has no PCA, its first two dimensions)."""
    if codes.shape[1] <= 2 or len(codes) < 2:
        return np.pad(codes[:, :2], ((0, 0), (0, max(0, 2 - codes.shape[1])))), "z"
    from sklearn.decomposition import PCA

    return PCA(n_components=2).fit_transform(codes), "PCA of μ"


def _rgb(fig: Figure) -> np.ndarray:
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def latent_scatter(codes: np.ndarray, labels: np.ndarray, names: Sequence[str] | None, step: int) -> np.ndarray:
    """Posterior means in 2-D (as they are, or their PCA), coloured by class, with a legend; an RGB image."""
    points, axis = project_2d(codes)
    fig = Figure(figsize=(6, 4.5), dpi=90)
    fig.subplots_adjust(left=0.11, right=0.75, bottom=0.12, top=0.92)
    ax = fig.subplots()
    dots = ax.scatter(points[:, 0], points[:, 1], c=labels % 10, cmap="tab10", vmin=0, vmax=9, s=6, alpha=0.7)
    handles, _ = dots.legend_elements()  # one per class present, in sorted order
    present = np.unique(labels % 10)
    shown = [names[k] if names is not None and k < len(names) else str(k) for k in present]
    ax.legend(handles, shown, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7)
    if axis == "z":  # the latent axes themselves: their values mean something next to the N(0, I) prior
        ax.locator_params(nbins=5)
    else:  # a PCA rotation: no tick labels, which are also most of the drawing time
        ax.set_xticks([])
        ax.set_yticks([])
    ax.set_xlabel(f"{axis} 1")
    ax.set_ylabel(f"{axis} 2")
    ax.set_title(f"latent space, step {step}")
    return _rgb(fig)


def kl_bars(kl: np.ndarray, step: int) -> np.ndarray:
    """Mean KL (nats) of each latent dimension as bars; an RGB image."""
    fig = Figure(figsize=(6, 3), dpi=90)
    fig.subplots_adjust(left=0.11, right=0.97, bottom=0.17, top=0.88)
    ax = fig.subplots()
    ax.bar(np.arange(len(kl)), kl)
    ax.set_xlabel("latent dimension")
    ax.set_ylabel("KL (nats)")
    ax.set_title(f"KL per dimension, total {kl.sum():.2f} nats, step {step}")
    return _rgb(fig)
