"""Image grids, and the same grids with labelled margins, as arrays for TensorBoard.

A labelled grid is the plain :func:`image_grid` (pixel for pixel) in the bottom-right corner of a white canvas, with
a label left of each row, optional labels above the columns and an optional title line on top. The text is drawn
with Pillow in DejaVu Sans (matplotlib's bundled font), which takes milliseconds, not a matplotlib figure.

TensorBoard fits an image into its card, at most about 330-370 × 215 CSS pixels (the Time Series dashboard) or 350
pixels wide (the Images dashboard), and scales it with ``image-rendering: pixelated``: shrunk, an image loses whole
rows and columns of pixels, and thin text breaks up. So the dashboard's grids are about the card's size (the 8×8
digits enlarged 2 or 3 times, not 7), and the labels are sized for the scale the card will show them at
(:data:`CARD`): about 12 pixels high on the card, in bold where the card shrinks the image by more than a fifth.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from torchvision.utils import make_grid

PAD = 2  # make_grid's padding between cells
PAD_VALUE = 0.5  # and its grey
BACKGROUND = (255, 255, 255)
INK = (20, 20, 20)
MUTED = (120, 120, 120)
ALERT = (200, 20, 20)
Label = str | tuple[str, tuple[int, int, int]]  # a text, or a text and its colour
#: the box TensorBoard's Time Series dashboard shows an image in (CSS pixels): 215 high, 330 to 370 wide as the
#: window fits three or two cards to a row
CARD = (330, 215)
#: the height of the labels on the card (CSS pixels)
LABEL_PX = 12


def upscale(images: torch.Tensor, min_side: int) -> torch.Tensor:
    """Nearest-neighbour enlargement by a whole factor so that the shorter side is at least ``min_side`` (8×8 digits
    are too small to see in TensorBoard)."""
    factor = max(1, -(-min_side // min(images.shape[-2:])))
    return F.interpolate(images, scale_factor=factor, mode="nearest") if factor > 1 else images


def image_grid(images: torch.Tensor, nrow: int, min_side: int = 56) -> torch.Tensor:
    """``images`` (N, C, H, W) clamped to [0, 1], enlarged (:func:`upscale`) and tiled ``nrow`` to a row with a grey
    padding of 2 pixels: a (3, H', W') float tensor (``make_grid`` repeats a grey channel three times)."""
    return make_grid(upscale(images.float().clamp(0, 1).cpu(), min_side), nrow=nrow, padding=PAD, pad_value=PAD_VALUE)


def cell_side(images: torch.Tensor, min_side: int) -> int:
    """The side of one cell of :func:`image_grid` (the images' shorter side after :func:`upscale`)."""
    side = min(images.shape[-2:])
    return side * max(1, -(-min_side // side))


@lru_cache(maxsize=32)
def font(size: int, bold: bool = False) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """DejaVu Sans (bold) at ``size`` pixels (it has μ, σ, α, β, − and →), else Pillow's own font."""
    import matplotlib  # only for the path of its fonts; nothing of matplotlib is drawn here

    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / name
    try:
        return ImageFont.truetype(str(path), size)
    except OSError:  # pragma: no cover - a matplotlib without its fonts, or a Pillow without FreeType
        return ImageFont.load_default(size)


def _text(label: Label) -> tuple[str, tuple[int, int, int]]:
    return (label, INK) if isinstance(label, str) else label


def to_uint8(grid: torch.Tensor) -> np.ndarray:
    """A (3, H, W) float grid in [0, 1] as an (H, W, 3) uint8 array, rounded to the nearest level."""
    return (grid.clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()).copy()


def label_stride(n: int, label_width: float, pitch: int) -> int:
    """Label every k-th of ``n`` columns ``pitch`` pixels apart, k the smallest at which labels ``label_width`` wide do
    not overlap, and if it can be, one that divides n − 1, so that the last column is labelled like the first."""
    needed = max(1, int(np.ceil(label_width / pitch)))
    fitting = [k for k in range(needed, n) if (n - 1) % k == 0]
    return fitting[0] if fitting else needed


def card_scale(width: int, height: int) -> float:
    """The scale TensorBoard's card shows an image of ``width`` × ``height`` pixels at (1 when it fits)."""
    return min(1.0, CARD[0] / width, CARD[1] / height)


def labelled_grid(
    grid: torch.Tensor | np.ndarray, side: int, row_labels: Sequence[Label], col_labels: Sequence[Label] | None = None,
    title: Label | None = None, font_size: int | None = None, col_caption: Label | None = None,
) -> np.ndarray:
    """``grid`` (from :func:`image_grid`, cells of ``side`` pixels) with ``row_labels`` right-aligned left of its
    rows, ``col_labels`` centred above its columns (every k-th, k the smallest at which they do not overlap) and
    ``title`` above everything, ``col_caption`` (what the column labels are) left of the column labels; an (H, W, 3)
    uint8 image whose bottom-right corner is the grid itself, pixel for pixel. Without ``font_size``, the text is
    sized so that the card shows it :data:`LABEL_PX` high (and at most as high as a row). ``grid`` may be given as
    :func:`to_uint8` made it: the views do that on the main thread, so that their worker threads run no torch
    operation (see :meth:`~vaelab.dashboard.base.DashboardCallback.in_background`)."""
    pitch = side + PAD
    labels = (row_labels, col_labels, title, col_caption)
    if font_size is not None:
        return _labelled(grid, side, *labels, font_size, bold=False)
    size = LABEL_PX
    for _ in range(2):  # the margins depend on the size, and the card's scale on the margins
        scale = card_scale(*_labelled(grid, side, *labels, size, bold=False, measure_only=True))
        size = max(LABEL_PX, min(round(LABEL_PX / scale), int(0.9 * pitch)))
    return _labelled(grid, side, *labels, size, bold=scale < 0.8)


def _labelled(grid, side, row_labels, col_labels, title, col_caption, size, bold, measure_only=False):
    pitch = side + PAD
    face, gap = font(size, bold), max(3, size // 3)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))

    def width(text: str) -> int:
        return int(np.ceil(measure.textlength(text, font=face))) if text else 0

    rows = [_text(r) for r in row_labels]
    caption = _text(col_caption) if col_labels and col_caption else None
    left = max([width(t) for t, _ in rows] + ([width(caption[0])] if caption else []), default=0)
    left = left + 2 * gap if left else 0
    ascent, descent = face.getmetrics() if hasattr(face, "getmetrics") else (size, size // 4)
    line = ascent + descent + gap // 2  # a line of text, descenders included, and the space under it
    title_y = gap // 2
    labels_y = title_y + (line if title else 0)  # the top of the column labels' line
    top = labels_y + (line if col_labels else 0) if (title or col_labels) else 0
    grid_h, grid_w = grid.shape[:2] if isinstance(grid, np.ndarray) else grid.shape[-2:]
    title_w = width(_text(title)[0]) + 2 * gap if title else 0
    canvas_w, canvas_h = max(left + grid_w, title_w), top + grid_h
    if measure_only:
        return canvas_w, canvas_h
    canvas = Image.new("RGB", (canvas_w, canvas_h), BACKGROUND)
    offset = canvas.width - grid_w  # the grid sits at the right edge, so a long title widens the left margin
    canvas.paste(Image.fromarray(grid if isinstance(grid, np.ndarray) else to_uint8(grid)), (offset, top))
    draw = ImageDraw.Draw(canvas)
    if title:
        text, colour = _text(title)
        draw.text((gap, title_y), text, font=face, fill=colour, anchor="la")
    for r, (text, colour) in enumerate(rows):
        centre = top + PAD + r * pitch + side / 2
        draw.text((offset - gap, centre), text, font=face, fill=colour, anchor="rm")
    if caption:
        draw.text((offset - gap, labels_y + ascent), caption[0], font=face, fill=caption[1], anchor="rs")
    if col_labels:
        texts = [_text(label) for label in col_labels]
        widest = max(width(text) for text, _ in texts)
        stride = label_stride(len(texts), widest + gap, pitch)
        for c, (text, colour) in enumerate(texts):
            if c % stride == 0:
                centre = offset + PAD + c * pitch + side / 2
                draw.text((centre, labels_y + ascent), text, font=face, fill=colour, anchor="ms")
    return np.asarray(canvas).copy()


def signed(value: float, digits: int = 2) -> str:
    """A number as a person writes it: a true minus sign, no ``-0``, trailing zeros dropped (``−1.5``, ``0``,
    ``2``)."""
    text = f"{value:.{digits}f}".rstrip("0").rstrip(".")
    if text in ("-0", ""):
        text = "0"
    return text.replace("-", "−")
