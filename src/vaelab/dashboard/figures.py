"""Matplotlib figures of the latent space, rendered to RGB arrays.

Plain numpy and matplotlib (no pyplot), so the dashboard callbacks can draw them in a worker thread while training
goes on (see :meth:`vaelab.dashboard.base.DashboardCallback.in_background`).

Every figure is the size of TensorBoard's image card, which shows an image in at most about 330-370 × 215 CSS pixels
(Time Series, three or two cards to a row) or 350 pixels wide (Images) and scales it with ``image-rendering:
pixelated`` (a larger figure, shrunk to the card, loses whole rows and columns of pixels and its text breaks up):
3.3 × 2.1 inches at 100 dpi, with 7- to 8.5-point text, 10 to 12 pixels high. Constrained layout keeps every label
inside the figure.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Circle
from matplotlib.ticker import MaxNLocator

from vaelab.dashboard.health import CodeHealth

SIZE = (3.3, 2.1)  # inches: the card's size at 100 dpi
DPI = 100
FONT = 8  # points
ALERT = "#c81414"
#: the half-width of the latent scatter's axes for a VAE: the N(0, I) prior's scale, so a collapsed code is a dot
PRIOR_LIMIT = 4.0
#: up to this many dimensions, the KL bars get a tick each
TICK_EVERY_DIM = 20


def new_figure(size: tuple[float, float] = SIZE) -> Figure:
    """A figure with constrained layout (nothing clipped) and the dashboard's font sizes."""
    fig = Figure(figsize=size, dpi=DPI, layout="constrained")
    fig.get_layout_engine().set(w_pad=2 / 72, h_pad=2 / 72)
    return fig


def _style(ax, title: str, alert: bool = False) -> None:
    ax.set_title(title, fontsize=FONT + 0.5, color=ALERT if alert else "black",
                 fontweight="bold" if alert else "normal", wrap=True)
    ax.tick_params(labelsize=FONT - 0.5, length=2, pad=1.5)
    ax.xaxis.label.set_size(FONT)
    ax.yaxis.label.set_size(FONT)
    ax.yaxis.get_offset_text().set_size(FONT - 1)


def to_rgb(fig: Figure) -> np.ndarray:
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def project_2d(codes: np.ndarray) -> tuple[np.ndarray, str]:
    """The codes themselves when they are 2-D (1-D codes get a zero second axis), else their projection on their
    first two principal components (or, for a single code, which has none, its first two dimensions). A PCA is a
    rotation of the centred codes, so the axes keep the codes' scale. Returns the points and the axes' name."""
    if codes.shape[1] <= 2 or len(codes) < 2:
        return np.pad(codes[:, :2], ((0, 0), (0, max(0, 2 - codes.shape[1])))), "z"
    centred = codes - codes.mean(0)
    # the eigenvectors of the D × D scatter matrix: the same axes as an SVD of the N × D codes, for much less work
    _, vectors = np.linalg.eigh(centred.T @ centred)
    components = vectors[:, ::-1][:, :2].T.copy()  # the two largest, largest first
    components *= np.sign(components[np.arange(2), np.abs(components).argmax(1)])[:, None]  # a fixed sign
    return centred @ components.T, "PC"


def _collapse_title(health: CodeHealth | None, default: str) -> tuple[str, bool]:
    if health is not None and health.collapsed:
        return health.headline(), True
    return default, False


def latent_scatter_figure(
    codes: np.ndarray, labels: np.ndarray, names: Sequence[str] | None, prior_scale: bool = True,
    health: CodeHealth | None = None,
) -> Figure:
    """Posterior means in 2-D (as they are, or their PCA), coloured by class, with a legend.

    With ``prior_scale`` (a VAE) the axes are fixed at ±4, the N(0, I) prior's scale, with its 1 and 2 sd circles:
    a collapsed code is a dot at the origin, not an auto-scaled cloud that looks structured. Each axis label gives
    the codes' spread (standard deviation) along it.
    """
    points, axis = project_2d(codes)
    fig = new_figure()
    ax = fig.subplots()
    dots = ax.scatter(points[:, 0], points[:, 1], c=labels % 10, cmap="tab10", vmin=0, vmax=9, s=3, alpha=0.8,
                      linewidths=0)
    handles, _ = dots.legend_elements(markersize=2)  # one per class present, in sorted order
    present = np.unique(labels % 10)
    shown = [names[k] if names is not None and k < len(names) else str(k) for k in present]
    ax.legend(handles, shown, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=FONT - 1, frameon=False,
              handletextpad=0.1, borderaxespad=0.3, labelspacing=0.25)
    spread = points.std(0) if len(points) else np.zeros(2)
    what = "μ" if prior_scale else "code"
    if axis == "z":
        ax.set_xlabel(f"z 1 (sd {spread[0]:.2g})")
        ax.set_ylabel(f"z 2 (sd {spread[1]:.2g})" if codes.shape[1] > 1 else "(1-D code)")
    else:
        ax.set_xlabel(f"PC 1 of {what} (sd {spread[0]:.2g})")
        ax.set_ylabel(f"PC 2 (sd {spread[1]:.2g})")
    if prior_scale:
        reach = float(np.abs(points).max()) if len(points) else 0.0
        limit = max(PRIOR_LIMIT, float(np.ceil(reach)))
        ax.set_xlim(-limit, limit)
        ax.set_ylim(-limit, limit)
        for radius in (1.0, 2.0):
            ax.add_patch(Circle((0, 0), radius, fill=False, color="0.6", lw=0.5, ls="--"))
    ax.set_aspect("equal", adjustable="box" if prior_scale else "datalim")
    ax.xaxis.set_major_locator(MaxNLocator(nbins=5, integer=prior_scale))
    ax.yaxis.set_major_locator(MaxNLocator(nbins=5, integer=prior_scale))
    d = codes.shape[1]
    title, alert = _collapse_title(health, f"{what} of {len(codes)} val images ({d}-D)")
    _style(ax, title, alert)
    return fig


def latent_scatter(codes: np.ndarray, labels: np.ndarray, names: Sequence[str] | None, prior_scale: bool = True,
                   health: CodeHealth | None = None) -> np.ndarray:
    """:func:`latent_scatter_figure` as an RGB image."""
    return to_rgb(latent_scatter_figure(codes, labels, names, prior_scale, health))


def kl_bars_figure(kl: np.ndarray, active: np.ndarray | None = None, health: CodeHealth | None = None) -> Figure:
    """Mean KL (nats) of each latent dimension as bars, active units (``active``) in colour and the others grey;
    an integer tick per dimension (up to 20 of them, else integer ticks)."""
    fig = new_figure()
    ax = fig.subplots()
    dims = np.arange(len(kl))
    colours = ["C0" if a else "0.65" for a in (active if active is not None else np.ones(len(kl), bool))]
    ax.bar(dims, kl, color=colours, width=0.8)
    ax.set_xlim(-0.6, len(kl) - 0.4)
    if len(kl) <= TICK_EVERY_DIM:
        ax.set_xticks(dims)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("latent dimension" + (" (grey: inactive)" if active is not None and not active.all() else ""))
    ax.set_ylabel("KL (nats)")
    ax.set_ylim(bottom=0)
    count = f", {int(active.sum())}/{len(kl)} active" if active is not None else ""
    title, alert = _collapse_title(health, f"KL per dim: {kl.sum():.3g} nats in all{count}")
    _style(ax, title, alert)
    return fig


def kl_bars(kl: np.ndarray, active: np.ndarray | None = None, health: CodeHealth | None = None) -> np.ndarray:
    """:func:`kl_bars_figure` as an RGB image."""
    return to_rgb(kl_bars_figure(kl, active, health))
