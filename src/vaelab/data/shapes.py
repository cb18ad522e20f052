"""A dSprites-style data set (Matthey et al. 2017, "dSprites: disentanglement testing sprites dataset"),
rendered here from its generative factors: no download.

Every image is one white shape on black, a combination of five factors, in dSprites' order (its constant colour
left out; dSprites' counts in brackets):

- shape: square, ellipse, heart (3)
- scale: ``linspace(0.5, 1, n_scales)`` (6)
- orientation: ``2π k / n_orientations``, k = 0 … n − 1, counter-clockwise (40, in [0, 2π))
- posX: ``linspace(0, 1, n_positions)``, left to right (32)
- posY: ``linspace(0, 1, n_positions)``, top to bottom (32)

so the full product (``data=shapes_full``) is 3 × 6 × 40 × 32 × 32 = 737,280 images of 64 × 64, as in dSprites.

Rendering: each pixel centre is mapped into the shape's own frame (translated, rotated back by the orientation,
divided by the scale) and the shape's implicit inside-test decides the pixel: 255 inside, 0 outside, one sample per
pixel, all in numpy (float64), so the same factors always give the same image. In its own frame every shape fits
in the unit disc (its circumradius is 1): a square of half-side 1/√2, an ellipse with semi-axes 1 and 1/2, and the
heart ``(x² + y² − 1)³ ≤ x² y³`` (pointing down) shrunk by 1.25 about its circumcentre. At scale 1 that disc has
radius ``MAX_RADIUS`` = 1/4 of the image side, and position 0 … 1 moves the shape's centre from 1/4 to 3/4 of the
side, so every shape at every scale, orientation and position lies wholly inside the image (and at 64 × 64 with 32
positions, one step moves it by 1.03 pixels: neighbouring positions never give the same image).

Symmetry duplicates, the only images that occur twice (tests/test_shapes.py checks both directions on the full
dSprites grid of orientations and scales): the square looks the same after a quarter turn, the ellipse after a half
turn, the heart only after a full turn. So with ``n`` orientations the combinations that differ only in orientation
``k`` vs ``k'`` give one image exactly when ``(k − k') · m ≡ 0 (mod n)``, m = 4 for the square, 2 for the ellipse,
1 for the heart: with dSprites' 40 orientations each square image appears 4 times (θ, θ + π/2, θ + π, θ + 3π/2) and
each ellipse image twice (θ, θ + π), as in dSprites itself. The renderer draws such combinations from one canonical
angle, so these duplicates are exact, and the test split holds out whole symmetry classes (no test image has a copy
in train).

Labels: all five factor indices of each image, int64 ``(N, 5)``; ``color_by`` names the factor whose index serves as
the class for colouring plots (:meth:`~vaelab.data.base.ImageDataModule.class_labels`).

Colour (``data=shapes_color``, :class:`ColorShapesDataModule`): the same shapes drawn in one of ``n_colors`` hues on
black, as the colour-dSprites of disentanglement_lib (Locatello et al. 2019, sec. 5) draw dSprites' shapes in
colour; the hue is a sixth factor, ``color``, after the five above: hue k is ``k / n_colors`` of the colour circle
at full saturation and value (6 hues: red, yellow, green, cyan, blue, magenta), RGB uint8 ``(N, 3, H, W)``, and the
labels are ``(N, 6)``. Colour changes no symmetry, so the duplicates and the held-out classes are as above, per hue.
"""

from __future__ import annotations

import colorsys
import logging
import math

import numpy as np
import torch

from vaelab.data.base import ImageDataModule
from vaelab.errors import ConfigError

log = logging.getLogger(__name__)

SHAPES = ("square", "ellipse", "heart")
SYMMETRY_ORDER = (4, 2, 1)  # rotations by 2π/m that leave the shape unchanged
FACTOR_NAMES = ("shape", "scale", "orientation", "posX", "posY")
MAX_RADIUS = 0.25  # circumradius of a shape at scale 1, as a fraction of the image side
TEST_SPLIT_SEED = 0  # fixed: the test set is part of the data set's definition, not of a run's config
RENDER_VERSION = 1  # bump when the drawing changes (it is part of the cache key)
COLOR_VERSION = 1  # bump when the palette of data=shapes_color changes (part of its cache key)
_PIXELS_PER_CHUNK = 1 << 22  # rendering works on (chunk, H, W) float64 arrays of at most 32 MB
#: pixels rendered per second, for the time a split takes (measured on the 2-core development machine: see
#: docs/failures.md); an estimate said before a long rendering, not a promise
RENDER_PIXELS_PER_SECOND = 3.5e7


def _inside(shape: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """The inside-test of shape ``shape`` at points ``(u, v)`` of its own frame (v points up), circumradius 1."""
    if shape == 0:  # square
        return np.maximum(np.abs(u), np.abs(v)) <= 1 / math.sqrt(2)
    if shape == 1:  # ellipse
        return u * u + 4 * v * v <= 1
    x, y = 1.25 * u, 1.25 * v + 0.25  # heart: its circumcentre (0, 0.25) to the origin, circumradius 1.25 to 1
    r = x * x + y * y - 1
    return r * r * r <= x * x * y * y * y


class ShapesDataModule(ImageDataModule):
    """dSprites-style shapes (Matthey et al. 2017) generated from their factors; see the module docstring.

    Args:
        image_size: side of the square images (dSprites: 64).
        n_scales, n_orientations, n_positions: how many values each of scale, orientation and posX/posY takes
            (dSprites: 6, 40, 32).
        test_fraction: fraction of the symmetry classes of combinations held out as the test set, drawn with a fixed
            seed; every image of a class (e.g. a square and its quarter-turned copies) goes to the same side. The
            rest is the training set (val is then ``val_fraction`` of it, as for every data set).
        color_by: the factor whose value index is each image's class for colouring (``shape`` by default).
        *args, **kwargs: :class:`~vaelab.data.base.ImageDataModule`'s.
    """

    name = "shapes"
    binary_images = True
    factor_names = FACTOR_NAMES
    channels = 1

    def __init__(
        self,
        *args,
        image_size: int = 64,
        n_scales: int = 6,
        n_orientations: int = 40,
        n_positions: int = 32,
        test_fraction: float = 0.1,
        color_by: str = "shape",
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        counts = {"image_size": image_size, "n_scales": n_scales, "n_orientations": n_orientations,
                  "n_positions": n_positions}
        for key, value in counts.items():
            if int(value) != value or value < (8 if key == "image_size" else 1):
                raise ConfigError(f"data.{key} must be an integer >= {8 if key == 'image_size' else 1}, got {value}")
        if not 0.0 <= float(test_fraction) < 1.0:
            raise ConfigError(f"data.test_fraction must be in [0, 1), got {test_fraction}")
        if color_by not in self.factor_names:
            raise ConfigError(f"unknown data.color_by={color_by!r}: choose one of {', '.join(self.factor_names)}")
        self.image_size, self.test_fraction = int(image_size), float(test_fraction)
        self.image_shape = (self.channels, self.image_size, self.image_size)
        self.factor_sizes: tuple[int, ...] = (len(SHAPES), int(n_scales), int(n_orientations), int(n_positions),
                                              int(n_positions))
        positions = np.linspace(0.0, 1.0, int(n_positions))
        #: the actual value of each factor's indices (shape: its index into ``SHAPES``; orientation in radians)
        self.factor_values: list[np.ndarray] = [
            np.arange(len(SHAPES)),
            np.linspace(0.5, 1.0, int(n_scales)),
            2 * np.pi * np.arange(int(n_orientations)) / int(n_orientations),
            positions,
            positions.copy(),
        ]
        self._add_factors()
        self.color_by = color_by
        self.color_index = self.factor_names.index(color_by)
        self.num_classes = self.factor_sizes[self.color_index]
        self.class_names = self._value_names(self.color_index)

    def _add_factors(self) -> None:
        """Factors a subclass adds after the five shape factors (to ``factor_sizes`` and ``factor_values``)."""

    def _value_names(self, factor: int) -> tuple[str, ...]:
        if factor == 0:
            return SHAPES
        if factor == 2:
            return tuple(f"{math.degrees(v):g}°" for v in self.factor_values[2])
        return tuple(f"{v:.2f}" for v in self.factor_values[factor])

    @property
    def num_combinations(self) -> int:
        return math.prod(self.factor_sizes)

    # ------------------------------------------------------------------ the data set
    def cache_key(self) -> list:
        return [RENDER_VERSION, MAX_RADIUS, TEST_SPLIT_SEED, self.test_fraction, *self.factor_sizes[1:],
                self.image_size]

    def load_split(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """The combinations of the split in product order (shape slowest, posY fastest), rendered; labels are their
        factor indices."""
        flat = np.flatnonzero(self._test_mask() != train)
        factors = np.stack(np.unravel_index(flat, self.factor_sizes), axis=1).astype(np.int64)
        pixels = len(factors) * self.image_size**2
        seconds = pixels / RENDER_PIXELS_PER_SECOND
        where = (f"then cached in {self.cache_dir}" if self.hparams.cache
                 else "not cached (data.cache=false)")
        log.info("%s: rendering the %s split, %s images of %d×%d: %.1f GB in memory, %s; about %s on a 2-core CPU",
                 self.name, "train" if train else "test", f"{len(factors):,}", self.image_size, self.image_size,
                 pixels / 1e9, where, f"{seconds:.0f} s" if seconds >= 1 else "a second")
        return self.render(factors), torch.from_numpy(factors)

    def _canonical(self, factors: np.ndarray) -> np.ndarray:
        """The factor indices with each orientation replaced by the smallest one of its symmetry class."""
        n = self.factor_sizes[2]
        period = n // np.gcd(n, np.asarray(SYMMETRY_ORDER)[factors[:, 0]])
        canonical = factors.copy()
        canonical[:, 2] = factors[:, 2] % period
        return canonical

    def _test_mask(self) -> np.ndarray:
        """Which combinations (flat, in product order) are in the test set: a seeded ``test_fraction`` of the
        symmetry classes, whole."""
        everything = np.stack(np.unravel_index(np.arange(self.num_combinations), self.factor_sizes), axis=1)
        canonical = np.ravel_multi_index(tuple(self._canonical(everything).T), self.factor_sizes)
        classes = np.unique(canonical)
        order = np.random.default_rng(TEST_SPLIT_SEED).permutation(len(classes))
        held_out = classes[order[: round(self.test_fraction * len(classes))]]
        return np.isin(canonical, held_out)

    # ------------------------------------------------------------------ for disentanglement metrics
    def render(self, factor_indices: np.ndarray) -> torch.Tensor:
        """Images of any combinations, given as factor indices ``(n, 5)``: uint8 ``(n, 1, H, W)``, 0 or 255.

        The images are written chunk by chunk into the one output tensor, so rendering needs the output's memory
        and a chunk's (:data:`_PIXELS_PER_CHUNK`), not several copies of the output (737,280 images of 64×64 are
        3 GB)."""
        return self._masks(self._checked_factors(factor_indices))

    def _checked_factors(self, factor_indices: np.ndarray) -> np.ndarray:
        """``factor_indices`` as int64 ``(n, F)``, F = ``len(factor_sizes)``, or a ValueError if one is out of range."""
        factors = np.asarray(factor_indices, dtype=np.int64).reshape(-1, len(self.factor_sizes))
        if len(factors) and ((factors < 0).any() or (factors >= np.asarray(self.factor_sizes)).any()):
            raise ValueError(f"factor indices out of range for factor sizes {self.factor_sizes}")
        return factors

    def _masks(self, factors: np.ndarray) -> torch.Tensor:
        """The shapes of checked factor indices (their first five columns) as uint8 ``(n, 1, H, W)``, 0 or 255."""
        size = self.image_size
        canonical = self._canonical(factors)
        out = torch.empty((len(factors), 1, size, size), dtype=torch.uint8)
        pixels = out.numpy()[:, 0]  # (the same memory, as numpy)
        centres = np.arange(size) + 0.5  # pixel centres, in pixels
        margin = MAX_RADIUS * size
        chunk = max(1, _PIXELS_PER_CHUNK // (size * size))
        for shape in range(len(SHAPES)):
            rows = np.flatnonzero(canonical[:, 0] == shape)
            for start in range(0, len(rows), chunk):
                idx = rows[start : start + chunk]
                _, scale, orient, pos_x, pos_y = (canonical[idx, i] for i in range(5))
                radius = (MAX_RADIUS * size * self.factor_values[1][scale])[:, None, None]
                theta = self.factor_values[2][orient][:, None, None]
                cx = (margin + self.factor_values[3][pos_x] * (size - 2 * margin))[:, None, None]
                cy = (margin + self.factor_values[4][pos_y] * (size - 2 * margin))[:, None, None]
                dx = (centres[None, None, :] - cx) / radius  # (n, 1, W)
                dy = (cy - centres[None, :, None]) / radius  # (n, H, 1), pointing up
                cos, sin = np.cos(theta), np.sin(theta)
                inside = _inside(shape, cos * dx + sin * dy, cos * dy - sin * dx)  # rotated back by θ
                pixels[idx] = inside.view(np.uint8) * np.uint8(255)
        return out

    def sample_factors(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` combinations drawn uniformly from the full product (train and test alike): int64 ``(n, F)``."""
        return np.stack([rng.integers(size, size=n) for size in self.factor_sizes], axis=1).astype(np.int64)

    def sample_with_fixed_factor(
        self, factor: int | str, n: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, torch.Tensor]:
        """``n`` combinations drawn uniformly from the full product with factor ``factor`` (an index or a name) held
        at one value drawn uniformly, and their images: ``(factor indices (n, F), uint8 images (n, C, H, W))``."""
        k = self.factor_names.index(factor) if isinstance(factor, str) else int(factor)
        factors = self.sample_factors(n, rng)
        factors[:, k] = rng.integers(self.factor_sizes[k])
        return factors, self.render(factors)


COLOR_FACTOR_NAMES = (*FACTOR_NAMES, "color")


def hue_palette(n_colors: int) -> torch.Tensor:
    """``n_colors`` hues evenly round the colour circle (hue k / n, from red), at full saturation and value: uint8
    ``(n_colors, 3)`` RGB."""
    rgb = [colorsys.hsv_to_rgb(k / n_colors, 1.0, 1.0) for k in range(n_colors)]
    return torch.tensor(np.round(np.asarray(rgb) * 255), dtype=torch.uint8)


class ColorShapesDataModule(ShapesDataModule):
    """The shapes of :class:`ShapesDataModule`, each drawn in one of ``n_colors`` hues on black (the module
    docstring's "Colour"): RGB images and a sixth factor, ``color``.

    Args:
        n_colors: how many hues the colour factor takes (evenly round the colour circle, from red; 6 by default).
        *args, **kwargs: :class:`ShapesDataModule`'s.
    """

    name = "shapes_color"
    binary_images = False
    factor_names = COLOR_FACTOR_NAMES
    channels = 3

    def __init__(self, *args, n_colors: int = 6, **kwargs) -> None:
        if isinstance(n_colors, bool) or int(n_colors) != n_colors or not 1 <= n_colors <= 256:
            raise ConfigError(f"data.n_colors = {n_colors} is invalid: it must be an integer from 1 to 256 (the "
                              "number of hues shapes are drawn in)")
        self.n_colors = int(n_colors)
        #: the RGB colour of each value of the colour factor, uint8 ``(n_colors, 3)``
        self.palette = hue_palette(self.n_colors)
        super().__init__(*args, **kwargs)

    def _add_factors(self) -> None:
        self.factor_sizes = (*self.factor_sizes, self.n_colors)
        self.factor_values.append(np.arange(self.n_colors) / self.n_colors)  # the hue, as a fraction of the circle

    def _value_names(self, factor: int) -> tuple[str, ...]:
        if factor == len(FACTOR_NAMES):
            return tuple(f"hue {360 * v:g}°" for v in self.factor_values[factor])
        return super()._value_names(factor)

    def cache_key(self) -> list:
        return [*super().cache_key(), COLOR_VERSION, self.palette.tolist()]

    def render(self, factor_indices: np.ndarray) -> torch.Tensor:
        """Images of any combinations, given as factor indices ``(n, 6)``: uint8 RGB ``(n, 3, H, W)``, the shape in
        its hue (``palette[color]``) on black."""
        factors = self._checked_factors(factor_indices)
        masks = self._masks(factors)  # (n, 1, H, W), 0 or 255
        colours = self.palette[torch.from_numpy(factors[:, -1])][:, :, None, None]  # (n, 3, 1, 1)
        return (masks // 255) * colours
