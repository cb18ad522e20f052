"""VQ-VAE-2's image nets: VQ-VAE's grid encoder and decoder, with a bottom code grid whose side halves.

Razavi, van den Oord & Vinyals (2019), *Generating Diverse High-Fidelity Images with VQ-VAE-2*, NeurIPS, sec. 3.1
and fig. 2a: the encoder maps the image to the bottom grid's features, the top grid is half that grid's side, and
the decoder maps both levels' quantised vectors, side by side at the bottom grid's size, back to the image. Between
the two nets everything that knows of the two levels is the code's (:class:`~vaelab.models.two_level_quantizer.
TwoLevelQuantizedCode`): these are :class:`~vaelab.models.grid_nets.GridEncoder` and
:class:`~vaelab.models.grid_nets.GridDecoder` with the number of stride-2 stages chosen from the image size.

The rule (:func:`bottom_downsamples`): the most stride-2 stages, at most two (the paper's bottom grid is a quarter
of the image's side), that leave a bottom grid of even sides ≥ 2, so that the top grid is exactly half of it:
14×14 and 7×7 for 28×28 images (one stage), 8×8 and 4×4 for 32×32 (two), 16×16 and 8×8 for 64×64. A given number
of stages that leaves an odd side is refused, naming the key.
"""

from __future__ import annotations

from vaelab.errors import ConfigError
from vaelab.models.grid_nets import GridDecoder, GridEncoder
from vaelab.models.nets import ImageShape, _check_shape, _downsampled

#: the most stride-2 stages the automatic choice takes (the paper's bottom grid: a quarter of the image's side)
MAX_DOWNSAMPLES = 2


def bottom_grid(image_shape: ImageShape, downsamples: int) -> tuple[int, int]:
    """(h, w) of the bottom code grid after ``downsamples`` stride-2 stages (each side → ⌊side/2⌋)."""
    _, height, width = _check_shape(image_shape)
    return _downsampled(height, downsamples)[-1], _downsampled(width, downsamples)[-1]


def halves(grid: tuple[int, int]) -> bool:
    """Whether a bottom grid's sides are even and ≥ 2, so the top grid is exactly half of it."""
    return all(side >= 2 and side % 2 == 0 for side in grid)


def bottom_downsamples(image_shape: ImageShape, downsamples: int | None, key: str) -> int:
    """The number of stride-2 stages to the bottom grid: ``downsamples`` once checked, or the most (up to
    :data:`MAX_DOWNSAMPLES`) that leave a grid that halves when it is None. ``key`` names the setting in errors."""
    _, height, width = _check_shape(image_shape)
    if downsamples is None:
        for n in range(MAX_DOWNSAMPLES, 0, -1):
            if halves(bottom_grid(image_shape, n)):
                return n
        raise ConfigError(f"{key} = null cannot be chosen for {height}x{width} images: no number of stride-2 stages "
                          f"(1 to {MAX_DOWNSAMPLES}) leaves a bottom code grid of even sides, which VQ-VAE-2's top "
                          "grid halves; use images of an even side after one or two halvings (e.g. 28x28, 32x32)")
    if isinstance(downsamples, bool) or not isinstance(downsamples, int) or downsamples < 1:
        raise ConfigError(f"{key} = {downsamples!r} is invalid: it must be an integer >= 1, or null to choose it "
                          "from the image size")
    grid = bottom_grid(image_shape, downsamples)
    if not halves(grid):
        fits = [n for n in range(1, max(height, width).bit_length()) if halves(bottom_grid(image_shape, n))]
        advice = f"use {' or '.join(map(str, fits))}" if fits else "no number of stages fits these images"
        raise ConfigError(f"{key} = {downsamples} is invalid for {height}x{width} images: it leaves a "
                          f"{grid[0]}x{grid[1]} bottom code grid, whose sides do not halve into VQ-VAE-2's top grid "
                          f"(they must be even and >= 2); {advice}, or null to choose it from the image size")
    return downsamples


class TwoLevelGridEncoder(GridEncoder):
    """Images (B, C, H, W) → the bottom grid's features (B, ``out_features``, h, w), h and w even.

    Args are :class:`~vaelab.models.grid_nets.GridEncoder`'s, with ``downsamples`` None by default: chosen from the
    image size (see the module's docstring).
    """

    def __init__(self, image_shape: ImageShape, out_features: int, channels: int = 64, residual_channels: int = 32,
                 residual_blocks: int = 2, downsamples: int | None = None) -> None:
        n = bottom_downsamples(image_shape, downsamples, "model.net.encoder.downsamples")
        super().__init__(image_shape, out_features, channels, residual_channels, residual_blocks, n)
        #: (h, w) of the bottom grid this encoder gives
        self.grid = bottom_grid(image_shape, n)


class TwoLevelGridDecoder(GridDecoder):
    """Both levels' vectors at the bottom grid's size (B, ``latent_dim``, h, w) → raw outputs of the image's shape;
    the mirror of :class:`TwoLevelGridEncoder`, with the same choice of ``downsamples``."""

    def __init__(self, image_shape: ImageShape, latent_dim: int, channels: int = 64, residual_channels: int = 32,
                 residual_blocks: int = 2, downsamples: int | None = None) -> None:
        n = bottom_downsamples(image_shape, downsamples, "model.net.decoder.downsamples")
        super().__init__(image_shape, latent_dim, channels, residual_channels, residual_blocks, n)
