"""The TensorBoard dashboard callbacks: what each one draws, when it draws, and that drawing leaves training alone."""

from __future__ import annotations

import io
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import lightning
import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from vaelab.dashboard import (
    CollapseAlarm,
    Interpolations,
    KLPerDimension,
    LatentHistograms,
    LatentScatter,
    LatentTraversal,
    PriorSamples,
    Projector,
    ReconstructionGrid,
    figures,
    grids,
    images,
)
from vaelab.dashboard.health import code_health
from vaelab.data import DigitsDataModule
from vaelab.models import Autoencoder
from vaelab.models.distributions import kl_per_dimension
from vaelab.models.output import AutoencoderOutput
from vaelab.training import AutoencoderModule

PAD = 2  # make_grid's padding in image_grid
PAD_VALUE = 0.5
SIDE = 8  # the digits are 8×8
LEVEL = 0.5 / 255 + 1e-6  # a labelled grid is uint8: each value rounded to the nearest of 256 levels

AE = {"_target_": "vaelab.models.objectives.Reconstruction"}  # the deterministic autoencoder


# ---------------------------------------------------------------------------------------------------- helpers
@dataclass
class Written:
    tag: str
    image: Any
    step: int
    dataformats: str
    thread: threading.Thread


class RecordingWriter:
    """Stands in for TensorBoard's SummaryWriter: keeps every ``add_image`` call (and ``add_histogram`` and
    ``add_text`` ones, their kind in ``dataformats``)."""

    def __init__(self) -> None:
        self.calls: list[Written] = []

    def add_image(self, tag, img_tensor, global_step=None, walltime=None, dataformats="CHW") -> None:
        self.calls.append(Written(tag, img_tensor, global_step, dataformats, threading.current_thread()))

    def add_histogram(self, tag, values, global_step=None, bins="tensorflow", walltime=None, max_bins=None) -> None:
        self.calls.append(Written(tag, values, global_step, "histogram", threading.current_thread()))

    def add_text(self, tag, text_string, global_step=None, walltime=None) -> None:
        self.calls.append(Written(tag, text_string, global_step, "text", threading.current_thread()))

    def tags(self) -> list[str]:
        return [c.tag for c in self.calls]


def make_module(latent_dim: int = 4, variational: bool = True, seed: int = 0) -> Autoencoder:
    """The pure model the views are drawn from (a VAE's Gaussian code, or an AE's point code)."""
    torch.manual_seed(seed)
    return AutoencoderModule(image_shape=[1, SIDE, SIDE], latent_dim=latent_dim,
                             objective=None if variational else AE).model.eval()


def make_batch(n: int = 8, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, SIDE, SIDE, generator=gen), torch.arange(n) % 10


def forward(module: Autoencoder, x: torch.Tensor) -> AutoencoderOutput:
    with torch.no_grad():
        return module(x)


def hand_made_output(x_out: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor | None, likelihood=None):
    zeros = torch.zeros(len(mu))
    return AutoencoderOutput(x_out=x_out, z=mu, mu=mu, logvar=logvar, recon=zeros, kl=zeros, loss=zeros.sum(),
                             weights={"beta": 1.0}, likelihood=likelihood)


def draw(callback, module, x, y, out, step: int = 7, writer: RecordingWriter | None = None) -> RecordingWriter:
    """One drawing as the base class makes it (no gradients), then wait for the worker thread."""
    writer = writer or RecordingWriter()
    try:
        with torch.no_grad():
            callback.draw(writer, "val", step, module, x, y, out)
        callback.wait()
    finally:
        callback.teardown(None, module, "fit")
    return writer


def grid_size(rows: int, cols: int, side: int) -> tuple[int, int]:
    return rows * (side + PAD) + PAD, cols * (side + PAD) + PAD


def cells(grid: torch.Tensor, side: int = SIDE, atol: float = 1e-6) -> list[list[torch.Tensor]]:
    """The images of a make_grid grid (padding 2), row by row, checking that the padding is the pad value."""
    _, height, width = grid.shape
    rows, cols = (height - PAD) // (side + PAD), (width - PAD) // (side + PAD)
    assert (height, width) == grid_size(rows, cols, side)
    mask = torch.ones(height, width, dtype=torch.bool)
    out = []
    for r in range(rows):
        row = []
        for c in range(cols):
            top, left = PAD + r * (side + PAD), PAD + c * (side + PAD)
            row.append(grid[:, top : top + side, left : left + side])
            mask[top : top + side, left : left + side] = False
        out.append(row)
    torch.testing.assert_close(grid[:, mask], torch.full_like(grid[:, mask], PAD_VALUE), atol=atol, rtol=0)
    return out


def corner(image: Any, rows: int, cols: int, side: int) -> torch.Tensor:
    """The grid of a labelled grid (its bottom-right corner, pixel for pixel) as a (3, H, W) float tensor."""
    array = np.asarray(image)
    assert array.dtype == np.uint8 and array.ndim == 3 and array.shape[2] == 3
    height, width = grid_size(rows, cols, side)
    assert array.shape[0] >= height and array.shape[1] > width  # a margin for the row labels on the left
    return torch.from_numpy(array[-height:, -width:].copy()).permute(2, 0, 1).float() / 255


def spy_on_labels(monkeypatch, module) -> list[dict]:
    """Record the labels each ``labelled_grid`` call of ``module`` gets (and still draw them)."""
    seen: list[dict] = []
    real = grids.labelled_grid

    def spy(grid, side, row_labels, col_labels=None, title=None, font_size=None, col_caption=None):
        seen.append({"rows": [grids._text(r)[0] for r in row_labels],
                     "cols": None if col_labels is None else [grids._text(c)[0] for c in col_labels],
                     "title": None if title is None else grids._text(title),
                     "caption": None if col_caption is None else grids._text(col_caption)[0]})
        return real(grid, side, row_labels, col_labels, title, font_size, col_caption)

    monkeypatch.setattr(module, "labelled_grid", spy)
    return seen


def same_image(cell: torch.Tensor, image: torch.Tensor, atol: float = 1e-6) -> None:
    """A grid cell (3 channels, make_grid's copy of a grey image) against a (1, H, W) image."""
    assert cell.shape == (3, *image.shape[-2:])
    torch.testing.assert_close(cell, image.float().clamp(0, 1).expand(3, -1, -1), atol=atol, rtol=0)


# ---------------------------------------------------------------------------------------------------- reconstructions
@pytest.mark.parametrize("variational", [True, False])
def test_reconstruction_rows_alternate_inputs_and_their_reconstructions(variational, monkeypatch):
    module = make_module(variational=variational)
    x, y = make_batch(8)
    out = forward(module, x)
    labels = spy_on_labels(monkeypatch, images)
    callback = ReconstructionGrid(nrow=4, min_side=8, num_images=8)
    writer = draw(callback, module, x, y, out, step=7)

    assert [(c.tag, c.step, c.dataformats) for c in writer.calls] == [("val/reconstructions", 7, "HWC")]
    grid = corner(writer.calls[0].image, 4, 4, SIDE)  # no upscaling: min_side is the images' side
    rows = cells(grid, atol=LEVEL)
    for block in range(2):
        for col in range(4):
            same_image(rows[2 * block][col], x[4 * block + col], atol=LEVEL)
            same_image(rows[2 * block + 1][col], out.x_mean[4 * block + col], atol=LEVEL)
    assert not torch.allclose(rows[0][0], rows[1][0])  # the reconstruction is not a copy of the input
    # every row says what it is
    assert labels[0]["rows"] == ["input", "recon", "input", "recon"]


def test_reconstruction_grid_pads_the_last_row_and_clamps_to_the_unit_interval():
    x, y = make_batch(6)
    x_out = torch.linspace(-0.5, 1.5, 6 * SIDE * SIDE).reshape(6, 1, SIDE, SIDE)  # outside [0, 1] on purpose
    out = hand_made_output(x_out, torch.zeros(6, 3), None)
    writer = draw(ReconstructionGrid(nrow=4, min_side=8, num_images=6), None, x, y, out)

    rows = cells(corner(writer.calls[0].image, 4, 4, SIDE), atol=LEVEL)
    assert len(rows) == 4 and all(len(r) == 4 for r in rows)
    for i in range(6):
        same_image(rows[2 * (i // 4)][i % 4], x[i], atol=LEVEL)
        same_image(rows[2 * (i // 4) + 1][i % 4], x_out[i].clamp(0, 1), atol=LEVEL)
    for r in (2, 3):  # the last pair of rows has 2 images and 2 blank cells in each
        for c in (2, 3):
            torch.testing.assert_close(rows[r][c], torch.full((3, SIDE, SIDE), PAD_VALUE), atol=LEVEL, rtol=0)


def test_reconstruction_grid_upscales_small_images_by_nearest_neighbour():
    module = make_module()
    x, y = make_batch(4)
    writer = draw(ReconstructionGrid(nrow=4, min_side=20, num_images=4), module, x, y, forward(module, x))
    big = cells(corner(writer.calls[0].image, 2, 4, 24), side=24, atol=LEVEL)  # 8 px → ×3 = 24 px, ≥ 20
    same_image(big[0][1], x[1].repeat_interleave(3, -1).repeat_interleave(3, -2), atol=LEVEL)


def test_reconstruction_grid_of_a_collapsed_vae_has_a_red_title(monkeypatch):
    module = make_module(latent_dim=3)
    x, y = make_batch(8)
    labels = spy_on_labels(monkeypatch, images)
    # q(z|x) = p(z) for every image: the code carries nothing
    collapsed = hand_made_output(torch.zeros(8, 1, SIDE, SIDE), torch.zeros(8, 3), torch.zeros(8, 3))
    draw(ReconstructionGrid(nrow=4, min_side=8, num_images=8), module, x, y, collapsed)
    healthy = hand_made_output(torch.zeros(8, 1, SIDE, SIDE), torch.randn(8, 3) * 2, torch.full((8, 3), -3.0))
    draw(ReconstructionGrid(nrow=4, min_side=8, num_images=8), module, x, y, healthy)
    text, colour = labels[0]["title"]
    assert text.startswith("COLLAPSED: 0/3 active, KL 0 nats") and colour == grids.ALERT
    assert labels[1]["title"] is None


# ---------------------------------------------------------------------------------------------------- prior samples
def test_prior_samples_are_decoded_from_the_seeded_prior():
    module = make_module(latent_dim=3)
    x, y = make_batch(4)
    out = forward(module, x)
    images = []
    for seed in (5, 5, 6):
        torch.manual_seed(seed)
        writer = draw(PriorSamples(nrow=3, min_side=8, num_images=6), module, x, y, out, step=11)
        assert [(c.tag, c.step) for c in writer.calls] == [("val/samples", 11)]
        assert writer.calls[0].image.dtype == np.uint8  # made on the main thread: the worker runs no torch operation
        images.append(torch.from_numpy(writer.calls[0].image).permute(2, 0, 1).float() / 255)
    assert images[0].shape == (3, *grid_size(2, 3, SIDE))
    torch.testing.assert_close(images[0], images[1], atol=0, rtol=0)  # the same draws give the same picture
    assert not torch.allclose(images[0], images[2], atol=1e-3)  # other draws, another picture

    torch.manual_seed(5)
    with torch.no_grad():
        expected = module.sample(6)
    rows = cells(images[0], atol=1 / 255)
    for i in range(6):
        same_image(rows[i // 3][i % 3], expected[i], atol=0.5 / 255 + 1e-6)  # (rounded to 8 bits)


def test_prior_samples_draw_nothing_for_a_deterministic_autoencoder():
    module = make_module(variational=False)
    x, y = make_batch(4)
    out = forward(module, x)
    assert out.logvar is None
    assert draw(PriorSamples(num_images=4), module, x, y, out).calls == []


# ---------------------------------------------------------------------------------------------------- traversals
def record_decoder_inputs(module: Autoencoder, monkeypatch) -> list[torch.Tensor]:
    seen: list[torch.Tensor] = []
    decode = module.decode

    def recording(z: torch.Tensor) -> torch.Tensor:
        seen.append(z.clone())
        return decode(z)

    monkeypatch.setattr(module, "decode", recording)
    return seen


def test_traversal_rows_walk_the_dimensions_with_the_most_kl_first(monkeypatch):
    module = make_module(latent_dim=4)
    x, y = make_batch(2)
    # mean KL per dimension over the two images: dim 2 ≈ 6.25, dim 1 ≈ 2.25, dim 0 ≈ 1.03 (from its variance
    # alone), dim 3 ≈ 0.25; the first image's μ alone would rank dim 1 first
    mu = torch.tensor([[0.0, 3.0, 0.0, 0.0], [0.0, 0.0, 5.0, 1.0]])
    logvar = torch.tensor([[-3.0, 0.0, 0.0, 0.0], [-3.0, 0.0, 0.0, 0.0]])
    kl = kl_per_dimension(mu, logvar).mean(0)
    assert kl.argsort(descending=True).tolist() == [2, 1, 0, 3]
    out = hand_made_output(torch.zeros(2, 1, SIDE, SIDE), mu, logvar, module.likelihood)
    seen = record_decoder_inputs(module, monkeypatch)
    labels = spy_on_labels(monkeypatch, images)

    steps, span = 5, 2.0
    writer = draw(LatentTraversal(max_dims=3, steps=steps, span=span, min_side=8), module, x, y, out, step=3)

    assert [(c.tag, c.step, c.dataformats) for c in writer.calls] == [("val/traversal", 3, "HWC")]
    (z,) = seen
    assert z.shape == (3 * steps, 4)
    walk = torch.tensor([-2.0, -1.0, 0.0, 1.0, 2.0])
    for row, dim in enumerate([2, 1, 0]):  # the 3 dimensions with the most KL, most first; dim 3 left out
        block = z[row * steps : (row + 1) * steps]
        expected = mu[0].repeat(steps, 1)  # around the posterior mean of the first image, in the prior's units
        expected[:, dim] += walk
        torch.testing.assert_close(block, expected)
    grid = corner(writer.calls[0].image, 3, steps, SIDE)
    with torch.no_grad():
        decoded = module.likelihood.mean(module.decode(z))
    rows = cells(grid, atol=LEVEL)
    for r in range(3):
        for c in range(steps):
            same_image(rows[r][c], decoded[r * steps + c], atol=LEVEL)
    # each row: its dimension, its KL in nats and the z values walked; each column: its offset
    (labelled,) = labels
    assert labelled["rows"] == [
        f"z2 · {kl[2]:.2f} nats · −2…2",  # μ = 0 for dim 2 in the first image
        f"z1 · {kl[1]:.2f} nats · 1…5",  # μ = 3
        f"z0 · {kl[0]:.2f} nats · −2…2",
    ]
    assert labelled["cols"] == ["−2", "−1", "0", "1", "2"] and labelled["caption"] == "z = μ₀ + k, k:"


def test_traversal_of_an_autoencoder_walks_each_dimension_in_units_of_its_spread(monkeypatch):
    module = make_module(latent_dim=4, variational=False)
    x, y = make_batch(3)
    # codes of very different scales: an AE's code has no prior to fix it, so ±span must mean ±span of its spread
    mu = torch.tensor([[10.0, 0.01, 0.0, 5.0], [30.0, 0.03, 0.0, 5.0], [20.0, 0.02, 0.0, 5.0]])
    out = hand_made_output(torch.zeros(3, 1, SIDE, SIDE), mu, None, module.likelihood)
    seen = record_decoder_inputs(module, monkeypatch)
    labels = spy_on_labels(monkeypatch, images)
    writer = draw(LatentTraversal(max_dims=3, steps=3, span=2.0, min_side=8), module, x, y, out)

    (z,) = seen
    spread = mu.std(0, unbiased=False)  # 8.16, 0.0082, 0 (a dead dimension), 0
    for row in range(3):  # the first 3 dimensions, in order
        expected = mu[0].repeat(3, 1)
        expected[:, row] += torch.tensor([-2.0, 0.0, 2.0]) * spread[row]
        torch.testing.assert_close(z[row * 3 : (row + 1) * 3], expected)
    assert (z[:3, 0].max() - z[:3, 0].min()).item() == pytest.approx(4 * 8.165, rel=1e-3)  # not ±2 on 10…30
    assert corner(writer.calls[0].image, 3, 3, SIDE).shape == (3, *grid_size(3, 3, SIDE))
    rows = labels[0]["rows"]
    assert rows[0] == "z0 · sd 8.2 · −6.3…26.3" and rows[1].startswith("z1 · sd 0.0082 · ")
    assert labels[0]["caption"] == "z = μ₀ + k·sd, k:"


@pytest.mark.parametrize(("latent_dim", "max_dims", "steps", "rows"), [(4, 10, 9, 4), (6, 3, 7, 3)])
def test_traversal_grid_has_a_row_per_dimension_and_a_column_per_step(latent_dim, max_dims, steps, rows):
    module = make_module(latent_dim=latent_dim)
    x, y = make_batch(4)
    writer = draw(LatentTraversal(max_dims=max_dims, steps=steps), module, x, y, forward(module, x))
    # the default min_side of 16 enlarges the 8×8 digits twice
    grid = corner(writer.calls[0].image, rows, steps, 16)
    assert len(cells(grid, side=16, atol=LEVEL)) == rows


# ---------------------------------------------------------------------------------------------------- figures
@pytest.mark.parametrize("latent_dim", [1, 2, 5])
def test_latent_scatter_writes_an_rgb_figure(latent_dim):
    module = make_module(latent_dim=latent_dim)
    x, y = make_batch(40)
    writer = draw(LatentScatter(num_images=40), module, x, y, forward(module, x), step=4)
    ((call),) = writer.calls
    assert (call.tag, call.step, call.dataformats) == ("val/latent_space", 4, "HWC")
    image = np.asarray(call.image)
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3 and min(image.shape[:2]) > 100
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 10  # something drawn on it, in colours


def test_kl_per_dimension_writes_an_rgb_figure_for_a_vae_and_nothing_for_an_ae():
    x, y = make_batch(16)
    vae = make_module(variational=True)
    writer = draw(KLPerDimension(num_images=16), vae, x, y, forward(vae, x), step=9)
    ((call),) = writer.calls
    assert (call.tag, call.step, call.dataformats) == ("val/kl_per_dim", 9, "HWC")
    image = np.asarray(call.image)
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 2

    ae = make_module(variational=False)
    assert draw(KLPerDimension(num_images=16), ae, x, y, forward(ae, x)).calls == []


def texts_outside(fig) -> list[str]:
    """The sides of a drawn figure that its drawn contents (tick and axis labels, titles, legends) reach past,
    clipped in the image."""
    tight = fig.get_tightbbox(fig.canvas.get_renderer())  # inches, of what is drawn
    box, slack = fig.bbox_inches, 0.5 / figures.DPI
    sides = {"left": tight.x0 < box.x0 - slack, "bottom": tight.y0 < box.y0 - slack,
             "right": tight.x1 > box.x1 + slack, "top": tight.y1 > box.y1 + slack}
    return [side for side, out in sides.items() if out]


def drawn(fig):
    figures.to_rgb(fig)  # lays it out and draws it, as the callbacks do
    return fig


def test_kl_bars_have_an_integer_tick_per_dimension_and_nothing_clipped():
    # two dimensions used to get ticks at −0.25 … 1.25, and a tiny KL's tick labels ("0.00020") were cut off
    fig = drawn(figures.kl_bars_figure(np.array([0.0002, 0.00011])))
    (ax,) = fig.axes
    assert list(ax.get_xticks()) == [0, 1]
    assert texts_outside(fig) == []
    assert all(label.get_fontsize() * figures.DPI / 72 >= 9.5 for label in ax.get_xticklabels())  # ≥ 9.5 px

    many = drawn(figures.kl_bars_figure(np.random.default_rng(0).random(64)))
    ticks = [t for t in many.axes[0].get_xticks() if -0.6 <= t <= 63.4]
    assert len(ticks) >= 3 and all(float(t).is_integer() for t in ticks)
    assert texts_outside(many) == []


def test_kl_bars_colour_inactive_dimensions_and_title_a_collapse():
    mu = torch.zeros(50, 3)
    mu[:, 0] = torch.linspace(-2, 2, 50)  # dimension 0 carries the images; 1 and 2 are the prior's
    logvar = torch.zeros(50, 3)
    logvar[:, 0] = -4.0
    health = code_health(hand_made_output(torch.zeros(50, 1, SIDE, SIDE), mu, logvar))
    assert health.active.tolist() == [True, False, False] and not health.collapsed
    fig = drawn(figures.kl_bars_figure(health.kl_per_dim, health.active, health))
    bars = fig.axes[0].patches
    assert bars[0].get_facecolor() != bars[1].get_facecolor() == bars[2].get_facecolor()
    assert "1/3 active" in fig.axes[0].get_title()

    dead = code_health(hand_made_output(torch.zeros(50, 1, SIDE, SIDE), torch.zeros(50, 3), torch.zeros(50, 3)))
    assert dead.collapsed and dead.n_active == 0 and dead.kl_total == 0.0
    alarm = drawn(figures.kl_bars_figure(dead.kl_per_dim, dead.active, dead))
    title = alarm.axes[0].title
    assert title.get_text().startswith("COLLAPSED: 0/3 active") and title.get_color() == figures.ALERT
    assert texts_outside(alarm) == []  # the longer, bold title too


@pytest.mark.parametrize("latent_dim", [2, 6])
def test_latent_scatter_of_a_vae_keeps_the_prior_scale_so_a_collapse_is_a_dot(latent_dim):
    rng = np.random.default_rng(3)
    labels = np.arange(300) % 10
    # a collapsed β-VAE: posterior means within ±0.04 (auto-scaled axes made them a structured cloud)
    codes = rng.normal(size=(300, latent_dim)) * 0.01 + labels[:, None] * 0.002
    fig = drawn(figures.latent_scatter_figure(codes, labels, None, prior_scale=True))
    (ax,) = fig.axes
    assert ax.get_xlim() == (-4.0, 4.0) and ax.get_ylim() == (-4.0, 4.0)
    assert all(float(t).is_integer() for t in ax.get_xticks())
    assert "sd 0.0" in ax.get_xlabel() and "sd 0.0" in ax.get_ylabel()  # the spread is printed: about 0.01
    assert texts_outside(fig) == []

    wide = drawn(figures.latent_scatter_figure(codes * 600, labels, None, prior_scale=True))  # beyond ±4: widened
    assert wide.axes[0].get_xlim()[1] >= np.abs(project(codes * 600)).max()


def project(codes):
    return figures.project_2d(codes)[0]


def test_latent_scatter_of_an_autoencoder_fits_its_codes_and_prints_their_spread():
    rng = np.random.default_rng(4)
    codes = rng.normal(size=(200, 2)) * np.array([30.0, 0.5])
    fig = drawn(figures.latent_scatter_figure(codes, np.arange(200) % 3, ("a", "b", "c"), prior_scale=False))
    (ax,) = fig.axes
    assert ax.get_xlim()[1] > 50  # its own scale, not the prior's
    assert f"sd {codes[:, 0].std():.2g}" in ax.get_xlabel()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a", "b", "c"]
    assert texts_outside(fig) == []


def test_project_2d_keeps_two_dimensional_codes_and_pads_one_dimensional_ones():
    rng = np.random.default_rng(0)
    codes = rng.normal(size=(30, 2)).astype(np.float32)
    points, axis = figures.project_2d(codes)
    assert axis == "z"
    np.testing.assert_array_equal(points, codes)

    line = rng.normal(size=(30, 1))
    points, axis = figures.project_2d(line)
    assert axis == "z" and points.shape == (30, 2)
    np.testing.assert_array_equal(points[:, 0], line[:, 0])
    np.testing.assert_array_equal(points[:, 1], 0.0)


def test_project_2d_of_higher_dimensional_codes_is_their_pca():
    rng = np.random.default_rng(1)
    codes = rng.normal(size=(200, 5)) * np.array([0.5, 4.0, 0.1, 2.0, 1.0]) + 3.0
    points, axis = figures.project_2d(codes)
    assert axis != "z" and points.shape == (200, 2)
    centred = codes - codes.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    expected = centred @ vt[:2].T
    for k in range(2):  # each component up to its sign
        sign = np.sign(points[:, k] @ expected[:, k])
        np.testing.assert_allclose(points[:, k], sign * expected[:, k], atol=1e-8)
    assert points[:, 0].var() > points[:, 1].var() > 0


def test_figures_render_with_class_names_and_few_classes():
    rng = np.random.default_rng(2)
    for labels in (np.zeros(20, dtype=int), np.arange(20) % 10):
        image = figures.latent_scatter(rng.normal(size=(20, 3)), labels, tuple("abcdefghij"))
        assert image.dtype == np.uint8 and image.shape[2] == 3
    bars = figures.kl_bars(np.array([0.0, 1.5, 3.0]))
    assert bars.dtype == np.uint8 and bars.shape[2] == 3


# ---------------------------------------------------------------------------------------------------- the worker thread
def test_drawings_are_written_in_a_worker_thread_while_the_caller_goes_on():
    release, started = threading.Event(), threading.Event()
    written: list[bool] = []

    class SlowWriter(RecordingWriter):
        def add_image(self, *args, **kwargs):
            started.set()
            written.append(release.wait(timeout=5))  # False if the caller is blocked until this returns
            super().add_image(*args, **kwargs)

    module = make_module()
    x, y = make_batch(4)
    callback, writer = ReconstructionGrid(nrow=4, min_side=8, num_images=4), SlowWriter()
    try:
        with torch.no_grad():
            callback.draw(writer, "val", 0, module, x, y, forward(module, x))
        assert writer.calls == []  # draw returned before the write
        release.set()
        callback.wait()
    finally:
        callback.teardown(None, module, "fit")
    assert started.is_set() and written == [True]
    assert writer.calls[0].thread is not threading.main_thread()


class BlockingWriter(RecordingWriter):
    """Each image write signals ``started`` and then waits (at most 5 s) for ``release``."""

    def __init__(self) -> None:
        super().__init__()
        self.started, self.release = threading.Event(), threading.Event()

    def add_image(self, *args, **kwargs):
        self.started.set()
        assert self.release.wait(timeout=5)
        super().add_image(*args, **kwargs)


def drawings_behind_a_blocked_one(steps):
    """A reconstruction view whose drawing 0 is in progress (held in its :class:`BlockingWriter`) when the drawings
    of ``steps`` arrive; returns the view, the writer, the module and the batch ``(x, y, out)`` it drew."""
    writer = BlockingWriter()
    module = make_module()
    x, y = make_batch(4)
    out = forward(module, x)
    callback = ReconstructionGrid(nrow=4, min_side=8, num_images=4)
    with torch.no_grad():
        callback.draw(writer, "val", 0, module, x, y, out)
        assert writer.started.wait(timeout=5)  # drawing 0 is in progress
        for step in steps:
            callback.draw(writer, "val", step, module, x, y, out)
    return callback, writer, module, (x, y, out)


def test_the_end_of_training_waits_for_the_drawings_and_a_backlog_is_bounded():
    """A drawing not started when the next one of the same view arrives is dropped for it (no backlog can delay the
    end of a run); the end of training still waits for what is in progress and for the newest one."""
    callback, writer, module, (x, y, out) = drawings_behind_a_blocked_one(steps=(1, 2, 3))  # 1, 2: replaced in turn
    writer.release.set()
    callback.on_train_end(None, module)
    assert [c.step for c in writer.calls] == [0, 3] and callback.dropped == 2
    callback.teardown(None, module, "fit")
    with torch.no_grad():  # a drawing after teardown (the next fit) still lands
        callback.draw(writer, "val", 4, module, x, y, out)
    callback.teardown(None, module, "fit")
    assert [c.step for c in writer.calls] == [0, 3, 4]


def test_on_an_exception_the_drawings_in_flight_are_finished_and_there_are_at_most_two():
    callback, writer, module, _ = drawings_behind_a_blocked_one(steps=(1, 2))
    assert len(callback._pending) == 2  # the one in progress and the newest
    threading.Timer(0.2, writer.release.set).start()
    callback.on_exception(None, module, KeyboardInterrupt())
    assert [c.step for c in writer.calls] == [0, 2] and callback.dropped == 1
    callback.teardown(None, module, "fit")


class FailingOnceWriter(RecordingWriter):
    def __init__(self) -> None:
        super().__init__()
        self.failed = threading.Event()

    def add_image(self, *args, **kwargs):
        if not self.failed.is_set():
            self.failed.set()
            raise OSError("disk full")
        super().add_image(*args, **kwargs)


def test_a_failed_drawing_is_raised_by_wait():
    module = make_module()
    x, y = make_batch(4)
    callback, writer = ReconstructionGrid(nrow=4, min_side=8, num_images=4), FailingOnceWriter()
    with torch.no_grad():
        callback.draw(writer, "val", 0, module, x, y, forward(module, x))
    with pytest.raises(OSError, match="disk full"):
        callback.wait()
    callback.teardown(None, module, "fit")


def test_a_failed_drawing_is_not_dropped_when_another_drawing_follows_it():
    # wait() promises to re-raise a drawing's error "rather than dropping it"; a drawing that failed (and finished)
    # before the next epoch's drawing was queued must still be reported at the end of training
    module = make_module()
    x, y = make_batch(4)
    out = forward(module, x)
    callback, writer = ReconstructionGrid(nrow=4, min_side=8, num_images=4), FailingOnceWriter()
    try:
        with torch.no_grad():
            callback.draw(writer, "val", 0, module, x, y, out)
            assert writer.failed.wait(timeout=5)
            time.sleep(0.2)  # the first drawing has failed and finished: training goes on to the next epoch
            callback.draw(writer, "val", 1, module, x, y, out)
        with pytest.raises(OSError, match="disk full"):
            callback.on_train_end(None, module)
    finally:
        try:
            callback.teardown(None, module, "fit")
        except OSError:
            pass


# ---------------------------------------------------------------------------------------------------- through Lightning
def fit(tmp_path, callbacks, max_epochs: int = 2, logger: Any = "tensorboard", optimizer=None, seed: int = 0,
        latent_dim: int = 4):
    lightning.seed_everything(seed, verbose=False)
    datamodule = DigitsDataModule(data_dir=tmp_path / "data", batch_size=64)
    model = AutoencoderModule(image_shape=[1, SIDE, SIDE], latent_dim=latent_dim, optimizer=optimizer)
    if logger == "tensorboard":
        logger = TensorBoardLogger(save_dir=tmp_path, name="tb")
    trainer = lightning.Trainer(
        accelerator="cpu", devices=1, max_epochs=max_epochs, limit_train_batches=2, limit_val_batches=1,
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False, logger=logger,
        default_root_dir=tmp_path, callbacks=callbacks,
    )
    trainer.fit(model, datamodule=datamodule)
    return trainer, model, datamodule


def read_events(trainer) -> EventAccumulator:
    acc = EventAccumulator(trainer.logger.log_dir,
                           size_guidance={"images": 0, "scalars": 0, "histograms": 0, "tensors": 0})
    acc.Reload()
    return acc


def png(event) -> np.ndarray:
    return np.array(Image.open(io.BytesIO(event.encoded_image_string)).convert("RGB"))


def test_through_lightning_images_follow_every_n_epochs_and_the_fixed_draws(tmp_path):
    frozen = {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.0}  # the model stays as it is
    callbacks = [
        ReconstructionGrid(nrow=4, min_side=8, num_images=8, every_n_epochs=2),
        PriorSamples(nrow=4, min_side=8, num_images=8),
        LatentTraversal(max_dims=4, steps=5, min_side=8, every_n_epochs=2),
        LatentScatter(num_images=50, every_n_epochs=5),
        KLPerDimension(num_images=50, every_n_epochs=1),
    ]
    trainer, _, datamodule = fit(tmp_path, callbacks, max_epochs=3, optimizer=frozen)
    acc = read_events(trainer)

    val_steps = [e.step for e in acc.Scalars("val/loss")]
    assert val_steps == [1, 3, 5]  # 2 training batches per epoch; no scalars from the sanity check
    steps = {tag: [e.step for e in acc.Images(f"val/{tag}")] for tag in
             ("reconstructions", "samples", "traversal", "latent_space", "kl_per_dim")}
    assert steps == {
        "reconstructions": [3, 5],  # every 2nd epoch (the 2nd) and the last (the 3rd)
        "samples": [1, 3, 5],  # every epoch, none drawn during the sanity check
        "traversal": [3, 5],
        "latent_space": [5],  # every 5th epoch: only the last of 3
        "kl_per_dim": [1, 3, 5],
    }

    # the same fixed images and the same random draws every epoch: a model that did not change draws the same
    # (the KL figure is left out: its title shows the step)
    for tag in ("reconstructions", "samples", "traversal"):
        first, *rest = [png(e) for e in acc.Images(f"val/{tag}")]
        for other in rest:
            np.testing.assert_array_equal(first, other, err_msg=tag)

    # the reconstruction grid shows the first 8 validation images in rows 0 and 2 (to the PNG's 8-bit precision)
    grid = corner(png(acc.Images("val/reconstructions")[0]), 4, 4, SIDE)
    x, _ = datamodule.fixed_batch("val", 8)
    rows = cells(grid, atol=LEVEL)
    for i in range(8):
        same_image(rows[2 * (i // 4)][i % 4], x[i], atol=LEVEL)


def all_callbacks():
    return [
        ReconstructionGrid(nrow=4, min_side=8, num_images=8),
        PriorSamples(nrow=4, min_side=8, num_images=8),
        LatentTraversal(max_dims=4, steps=5, min_side=8),
        LatentScatter(num_images=50),
        KLPerDimension(num_images=50),
        Interpolations(num_pairs=2, steps=3, min_side=8),
        LatentHistograms(num_images=50),
        CollapseAlarm(num_images=50, kl_threshold=1e9, patience=1),  # "collapsed" at any KL: it always writes
        Projector(num_images=20),
    ]


def test_drawing_does_not_change_the_training_trajectory(tmp_path):
    trainer, with_callbacks, _ = fit(tmp_path / "on", all_callbacks())
    _, without, _ = fit(tmp_path / "off", [])
    acc = read_events(trainer)
    assert len(acc.Tags()["images"]) == 6  # the callbacks did draw (and sampled from the RNG) each epoch
    assert all(len(acc.Images(tag)) == 2 for tag in acc.Tags()["images"])
    assert sorted(acc.Tags()["histograms"]) == ["val/logvar", "val/mu"]
    assert len(acc.Tensors("val/collapse/text_summary")) == 2
    state_on, state_off = with_callbacks.state_dict(), without.state_dict()
    assert state_on.keys() == state_off.keys()
    for name, value in state_on.items():
        torch.testing.assert_close(value, state_off[name], atol=0, rtol=0, msg=name)
    assert with_callbacks.training == without.training  # drawing in eval mode left the mode as it was


def test_without_tensorboard_the_callbacks_skip_drawing_and_warn_once(tmp_path, caplog):
    drawn: list[str] = []

    class Spy(ReconstructionGrid):
        def draw(self, *args, **kwargs):
            drawn.append(type(self).__name__)
            super().draw(*args, **kwargs)

    callbacks = [Spy(nrow=4, min_side=8, num_images=8), *all_callbacks()[1:]]
    with caplog.at_level(logging.WARNING, logger="vaelab.dashboard.base"):
        trainer, _, _ = fit(tmp_path, callbacks, max_epochs=3, logger=CSVLogger(save_dir=tmp_path))
    assert trainer.state.finished and trainer.global_step == 6
    assert drawn == []
    warnings = [r.getMessage() for r in caplog.records if "no TensorBoard logger" in r.getMessage()]
    assert sorted(w.split()[0] for w in warnings) == sorted(type(c).__name__ for c in callbacks)  # once each


# ---------------------------------------------------------------------------------------------------- worker threads
@pytest.mark.parametrize("view", [ReconstructionGrid, PriorSamples, LatentTraversal, Interpolations, LatentScatter,
                                  KLPerDimension, LatentHistograms])
def test_a_views_worker_thread_runs_no_torch_operation(view):
    """A torch operation in a worker thread gives that thread an OpenMP team of its own, which then competed with
    training for the cores: on the 2-core CPU the default views slowed every later epoch by 40-70 % (measured with
    scripts/benchmark.py) while the budget counted under a second of drawing. So the views hand their workers
    numpy arrays, and any torch call made there fails this test."""
    module = make_module(latent_dim=3)
    x, y = make_batch(12)
    out = forward(module, x)
    ops: list[str] = []

    class Recording(torch.overrides.TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            ops.append(getattr(func, "__name__", str(func)))
            return func(*args, **(kwargs or {}))

    callback = view(num_pairs=6) if view is Interpolations else view(num_images=12)
    writer = RecordingWriter()
    original = callback.in_background

    def in_background(render):
        def recorded():
            with Recording():
                render()
        original(recorded)

    callback.in_background = in_background
    draw(callback, module, x, y, out, writer=writer)
    assert writer.calls, "the view drew nothing"
    assert ops == [], f"{view.__name__}'s worker thread ran torch operations: {sorted(set(ops))}"
