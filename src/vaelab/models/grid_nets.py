"""An encoder and a decoder with a spatial code grid: VQ-VAE's conv net (van den Oord et al. 2017, sec. 4.1).

The paper's image net, scaled down for a CPU: the encoder is ``downsamples`` stride-2 convolutions (kernel 4) each
halving the image, a 3×3 convolution, residual blocks (ReLU, 3×3 conv, ReLU, 1×1 conv, added to the input), a ReLU
and a 1×1 convolution to the code's D channels: a (D, H/2ⁿ, W/2ⁿ) grid (7×7 for 28×28 images with the default
two, 2×2 for 8×8). The decoder mirrors it: a 3×3 convolution from D channels, the residual blocks, a ReLU, and
stride-2 transposed convolutions back to the image, their output padding restoring odd sizes (7 → 14 → 28,
5 → 11 → 22). Sized from the data's image shape, like :mod:`vaelab.models.nets`.

Unlike those nets, the encoder's output is a feature map (B, ``out_features``, h, w) and the decoder's input a
map (B, ``latent_dim``, h, w): the code is applied at each grid position (:class:`~vaelab.models.quantizer.
QuantizedCode`).
"""

from __future__ import annotations

from torch import nn

from vaelab.models.nets import ImageShape, _check_shape, _downsampled


class ResidualBlock(nn.Module):
    """x + conv1×1(ReLU(conv3×3(ReLU(x)))) (the paper's residual block, sec. 4.1)."""

    def __init__(self, channels: int, hidden_channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.ReLU(), nn.Conv2d(channels, hidden_channels, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(hidden_channels, channels, 1))

    def forward(self, x):
        return x + self.body(x)


def _grid_geometry(image_shape: ImageShape, downsamples: int) -> tuple[int, list[int], list[int]]:
    """Image channels and the heights and widths after each stride-2 stage (input first)."""
    c, h, w = _check_shape(image_shape)
    if downsamples < 1 or min(h, w) >> downsamples < 1:
        raise ValueError(f"model.net downsamples = {downsamples} is invalid for {h}x{w} images: it must be >= 1 and "
                         f"leave a grid of at least 1x1 (at most {max(min(h, w).bit_length() - 1, 1)})")
    return c, _downsampled(h, downsamples), _downsampled(w, downsamples)


class GridEncoder(nn.Module):
    """Images (B, C, H, W) → a feature map (B, ``out_features``, H/2ⁿ, W/2ⁿ).

    Args:
        image_shape: (channels, height, width) of the data.
        out_features: the channels of the map (the code's D).
        channels: the width of the convolutions.
        residual_channels: the width inside each residual block.
        residual_blocks: how many.
        downsamples: n, the stride-2 convolutions.
    """

    def __init__(self, image_shape: ImageShape, out_features: int, channels: int = 64, residual_channels: int = 32,
                 residual_blocks: int = 2, downsamples: int = 2) -> None:
        super().__init__()
        c, _, _ = _grid_geometry(image_shape, downsamples)
        layers: list[nn.Module] = []
        for i in range(downsamples):
            layers += [nn.Conv2d(c if i == 0 else channels, channels, 4, stride=2, padding=1), nn.ReLU()]
        layers.append(nn.Conv2d(channels, channels, 3, padding=1))
        layers += [ResidualBlock(channels, residual_channels) for _ in range(residual_blocks)]
        layers += [nn.ReLU(), nn.Conv2d(channels, out_features, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


class GridDecoder(nn.Module):
    """A code map (B, ``latent_dim``, h, w) → raw outputs of the image's shape; the mirror of :class:`GridEncoder`."""

    def __init__(self, image_shape: ImageShape, latent_dim: int, channels: int = 64, residual_channels: int = 32,
                 residual_blocks: int = 2, downsamples: int = 2) -> None:
        super().__init__()
        c, hs, ws = _grid_geometry(image_shape, downsamples)
        layers: list[nn.Module] = [nn.Conv2d(latent_dim, channels, 3, padding=1)]
        layers += [ResidualBlock(channels, residual_channels) for _ in range(residual_blocks)]
        layers.append(nn.ReLU())
        for i in reversed(range(downsamples)):
            padding = (hs[i] - 2 * hs[i + 1], ws[i] - 2 * ws[i + 1])
            layers.append(nn.ConvTranspose2d(channels, c if i == 0 else channels, 4, stride=2, padding=1,
                                             output_padding=padding))
            if i > 0:
                layers.append(nn.ReLU())
        self.net = nn.Sequential(*layers)

    def forward(self, z):
        return self.net(z)
