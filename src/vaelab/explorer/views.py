"""What each view of the explorer computes, as plain functions: a model and inputs in, numpy images out.

Images are ``(H, W, C)`` float arrays in [0, 1] (a strip or a grid of them: ``(N, H, W, C)``), decoded means of the
likelihood; codes are ``(d,)`` float arrays, the deterministic code (:meth:`Autoencoder.embed`: μ of q(z|x), an AE's
z). :func:`display` enlarges them for the page. Nothing here knows about Gradio: a bad input is one
:class:`UploadError` whose message says what the model takes.

A conditional model (``model.conditional``: the conditional VAE) encodes and decodes given a class: every view that
encodes or decodes takes it as ``label`` (a class index; None for any other model, whose views ignore it), and a
conditional model given none is one :class:`MissingClass` naming its classes.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from vaelab.dashboard.grids import image_grid

#: Pillow's colour modes of a greyscale and of a colour image, and how each model's channels are said
MODES = {1: ("L", "greyscale"), 3: ("RGB", "colour (RGB)")}
#: modes read as greyscale without loss (1-bit images)
GREY_ALIASES = ("1",)


class UploadError(ValueError):
    """An uploaded file the model cannot take; the message says what it is and what the model expects."""


class MissingClass(UploadError):
    """A conditional model asked to encode or decode without a class; the message says which classes it takes. (An
    :class:`UploadError`, so the page shows it as one message, as it shows a bad upload.)"""


# ------------------------------------------------------------------------------------------ tensors and arrays
def to_numpy(images: torch.Tensor) -> np.ndarray:
    """``(N, C, H, W)`` images to ``(N, H, W, C)`` float32 in [0, 1]."""
    return images.detach().float().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """``(N, H, W, C)`` or ``(H, W, C)`` floats to ``(N, C, H, W)`` float32."""
    array = np.asarray(images, dtype=np.float32)
    return torch.from_numpy(array[None] if array.ndim == 3 else array).permute(0, 3, 1, 2).contiguous()


def display(images: np.ndarray, nrow: int | None = None, min_side: int = 160) -> np.ndarray:
    """``(H, W, C)`` or ``(N, H, W, C)`` images as one uint8 ``(H', W', 3)`` picture for the page: enlarged pixel
    for pixel so the shorter side of each is at least ``min_side``, ``nrow`` to a row (all in one row by default),
    with a grey line between them."""
    batch = to_tensor(images)
    grid = image_grid(batch, nrow or len(batch), min_side)
    if len(batch) == 1:  # (no frame round a single image)
        grid = grid[:, 2:-2, 2:-2]
    return (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


# ------------------------------------------------------------------------------------------ what a model can do
def traversable(model: Any) -> bool:
    """Whether the code is a vector of dimensions to put a slider on (not VQ-VAE's grid of codebook vectors)."""
    return bool(model.code.continuous)


def unit_scale(model: Any) -> bool:
    """Whether a code dimension's unit is the prior's standard deviation (a code with a continuous prior, the VAE's);
    otherwise (an AE) a dimension is walked in units of its spread over the data."""
    return bool(model.has_prior and model.code.continuous)


def sampler_choices(model: Any, has_data: bool) -> list[str]:
    """The samplers this model can draw from: ``prior`` when its code has one, ``gmm`` (fitted on the training codes)
    for a continuous code when there are training images."""
    choices = ["prior"] if model.has_prior else []
    return choices + (["gmm"] if has_data and model.code.continuous else [])


def class_choices(model: Any, names: list[str] | None = None) -> list[str]:
    """The classes a conditional model samples from (``model.conditional`` and ``model.num_classes``, named by
    ``names`` where they fit); empty for a model without classes (every model today), whose page hides the choice."""
    if not getattr(model, "conditional", False):
        return []
    count = int(model.num_classes)
    return list(names) if names and len(names) == count else [str(i) for i in range(count)]


def given_class(model: Any, label: Any, n: int) -> dict[str, torch.Tensor]:
    """The keyword a conditional model's encode and decode take for ``n`` images or codes of the class ``label`` (one
    class index for all, or one per image); nothing for any other model, whatever ``label`` is. A conditional model
    without a class is one :class:`MissingClass`."""
    if not getattr(model, "conditional", False):
        return {}
    if label is None:
        raise MissingClass(f"This model is conditional on a class (model.num_classes={model.num_classes}): choose "
                           f"the class, one of 0 … {model.num_classes - 1}")
    labels = torch.as_tensor(np.asarray(label), dtype=torch.long, device=model.device).reshape(-1)
    return {"labels": labels.expand(n) if labels.numel() == 1 else labels}


# ------------------------------------------------------------------------------------------ the views
@torch.no_grad()
def code_of(model: Any, image: np.ndarray, label: int | None = None) -> np.ndarray:
    """The code of one ``(H, W, C)`` image, ``(d,)`` (a conditional model's given the image's class ``label``)."""
    return model.embed(to_tensor(image).to(model.device), **given_class(model, label, 1))[0].cpu().double().numpy()


@torch.no_grad()
def decode(model: Any, codes: np.ndarray, label: int | None = None) -> np.ndarray:
    """The images of codes ``(N, d)`` (or one ``(d,)``): ``(N, H, W, C)`` (a conditional model's drawn as the class
    ``label``)."""
    z = torch.as_tensor(np.atleast_2d(codes), dtype=torch.float32, device=model.device)
    return to_numpy(model.mean(model.decode(z, **given_class(model, label, len(z)))))


def code_spread(model: Any, images: np.ndarray | None, labels: Any = None) -> np.ndarray:
    """Each code dimension's unit for the sliders, ``(d,)``: 1 (the prior's standard deviation) for a VAE; for an AE
    the standard deviation of the codes of ``images`` ``(N, H, W, C)`` (1 where there are none, or where it is 0), a
    conditional AE's given the images' classes ``labels``."""
    ones = np.ones(model.latent_dim)
    if unit_scale(model) or images is None or len(images) < 2:
        return ones
    with torch.no_grad():
        codes = model.embed(to_tensor(images).to(model.device), **given_class(model, labels, len(images)))
        codes = codes.cpu().double().numpy()
    spread = codes.std(axis=0)
    return np.where(spread > 0, spread, 1.0)


def slider_ranges(code: np.ndarray, spread: np.ndarray, span: float) -> list[tuple[float, float]]:
    """The range of each dimension's slider: the image's code ± ``span`` × the dimension's unit (``spread``)."""
    return [(float(c - span * s), float(c + span * s)) for c, s in zip(code, spread, strict=True)]


def with_values(code: np.ndarray, values: dict[int, float]) -> np.ndarray:
    """``code`` with the dimensions in ``values`` set to theirs (the sliders moved), the others as they were."""
    moved = np.array(code, dtype=np.float64, copy=True)
    for dim, value in values.items():
        moved[dim] = value
    return moved


def traversal_codes(code: np.ndarray, dim: int, values: np.ndarray) -> np.ndarray:
    """One code per value, ``(len(values), d)``: ``code`` with dimension ``dim`` set to it, every other unchanged."""
    if not 0 <= dim < len(code):
        raise ValueError(f"dimension {dim} is not one of the code's 0 … {len(code) - 1}")
    codes = np.repeat(np.asarray(code, dtype=np.float64)[None], len(values), axis=0)
    codes[:, dim] = values
    return codes


def traverse(model: Any, image: np.ndarray, dim: int, lo: float, hi: float, steps: int,
             label: int | None = None) -> np.ndarray:
    """The walk along dimension ``dim`` from ``lo`` to ``hi`` in ``steps`` even steps, from the code of ``image``:
    ``(steps, H, W, C)`` (a conditional model's image encoded and the walk decoded as the class ``label``)."""
    return decode(model, traversal_codes(code_of(model, image, label), dim, np.linspace(lo, hi, steps)), label)


@torch.no_grad()
def reconstruct(model: Any, image: np.ndarray, label: int | None = None) -> np.ndarray:
    """The image decoded from the code of ``image`` (no sampling): ``(H, W, C)`` (a conditional model's encoded and
    decoded as the class ``label``)."""
    return to_numpy(model.reconstruct(to_tensor(image).to(model.device), **given_class(model, label, 1)))[0]


@torch.no_grad()
def interpolate(model: Any, a: np.ndarray, b: np.ndarray, steps: int, label: int | None = None,
                label_a: int | None = None, label_b: int | None = None) -> np.ndarray:
    """The images decoded along the straight line from the code of ``a`` to that of ``b``,
    z = (1 − α)·code(a) + α·code(b) for ``steps`` even α from 0 to 1: ``(steps, H, W, C)``; the ends are the two
    reconstructions. (A code grid, VQ-VAE's, is interpolated as one vector, as the dashboard's view does.)

    A conditional model encodes ``a`` as the class ``label_a`` and ``b`` as ``label_b`` (each ``label`` when not
    given) and draws the whole line as the class ``label``: the two images' codes (their style) in one class."""
    if steps < 2:
        raise ValueError(f"an interpolation needs at least 2 steps, got {steps}")
    own = [label if own is None else own for own in (label_a, label_b)]
    x = to_tensor(np.stack([a, b])).to(model.device)
    codes = model.encode(x, **given_class(model, None if None in own else own, 2))[0]
    alphas = torch.linspace(0, 1, steps, device=codes.device, dtype=codes.dtype).view(-1, *[1] * (codes.dim() - 1))
    z = codes[:1] + alphas * (codes[1:] - codes[:1])
    return to_numpy(model.mean(model.decode(z, **given_class(model, label, steps))))


def fit_gmm(model: Any, datamodule: Any, sampler: Any) -> Any:
    """``sampler`` (a :class:`~vaelab.models.samplers.GaussianMixtureSampler`) fitted as the samples view fits it:
    on ``model.embed`` of the first ``sampler.fit_images`` training images, 1000 at a time."""
    images, _ = datamodule.fixed_batch("train", sampler.fit_images)
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        codes = torch.cat([model.embed(images[i : i + 1000].to(model.device)) for i in range(0, len(images), 1000)])
        sampler.fit(codes)
    return sampler


@torch.no_grad()
def sample(model: Any, n: int, seed: int = 0, sampler: Any = None, label: int | None = None) -> np.ndarray:
    """``n`` images drawn with ``seed`` from the code's prior, or from ``sampler`` (a fitted mixture): ``(n, H, W,
    C)``. ``label``: the class a conditional model draws (``model.sample(…, labels=…)``); None for any other."""
    generator = torch.Generator().manual_seed(int(seed))
    kwargs = {} if label is None else {"labels": torch.full((n,), int(label), dtype=torch.long)}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))  # (a prior that draws on the device, VQ-VAE's PixelCNN, is seeded too)
        return to_numpy(model.sample(n, generator=generator, sampler=sampler, **kwargs))


# ------------------------------------------------------------------------------------------ uploads
def expected(image_shape: tuple[int, ...]) -> str:
    """What the model takes, in words: ``a greyscale (mode L) image of 8×8 pixels``."""
    channels, height, width = image_shape
    mode, words = MODES.get(channels, (f"{channels}-channel", f"{channels}-channel"))
    return f"a {words} image (mode {mode}) of {width}×{height} pixels"


def read_upload(path: str | Path | None, image_shape: tuple[int, ...]) -> np.ndarray:
    """The uploaded image file ``path`` as ``(H, W, C)`` floats in [0, 1], exactly as the model takes it (no
    resizing, no change of colour: the model would see another image). One :class:`UploadError` for no file, a file
    that is not an image, or an image of another size or colour mode, naming what the model expects."""
    want = expected(image_shape)
    if path is None:
        raise UploadError(f"No image uploaded: upload {want}")
    name = Path(path).name
    try:
        with Image.open(path) as opened:
            opened.load()
            image = opened.copy()
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        raise UploadError(f"{name} is not an image file (PNG, JPEG, …) that can be read: upload {want}") from None
    channels, height, width = image_shape
    if image.size != (width, height):
        raise UploadError(f"{name} is {image.size[0]}×{image.size[1]} pixels: the model takes {want}")
    mode = MODES.get(channels, ("?",))[0]
    if image.mode in GREY_ALIASES and mode == "L":
        image = image.convert("L")
    if image.mode != mode:
        raise UploadError(f"{name} is of colour mode {image.mode} ({len(image.getbands())} channel(s)): the model "
                          f"takes {want}")
    array = np.asarray(image, dtype=np.float32) / 255.0
    return array[..., None] if array.ndim == 2 else array


def grid_rows(n: int) -> int:
    """Images to a row of a grid of ``n``: a near-square grid."""
    return max(1, math.ceil(math.sqrt(n)))
