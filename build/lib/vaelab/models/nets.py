"""Encoder and decoder networks. They know nothing of losses or of which autoencoder uses them.

Every encoder maps images ``(B, C, H, W)`` to ``(B, out_features)`` (the model asks for ``latent_dim`` features
for an AE, ``2 * latent_dim`` for μ and log σ² of a VAE); every decoder maps ``(B, latent_dim)`` to raw outputs
of the image's shape. The image shape comes from the data, so one config serves 8×8, 28×28 and 64×64 images.
"""

from __future__ import annotations

from collections.abc import Sequence
from math import prod

import torch
from torch import nn

ImageShape = Sequence[int]


def _check_shape(image_shape: ImageShape) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in image_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"image_shape must be (channels, height, width) of positive sizes, got {image_shape}")
    return shape  # type: ignore[return-value]


ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU}


def _mlp(sizes: Sequence[int], activation: str) -> list[nn.Module]:
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}: choose one of {', '.join(ACTIVATIONS)}")
    layers: list[nn.Module] = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Linear(n_in, n_out), ACTIVATIONS[activation]()]
    return layers


class MLPEncoder(nn.Sequential):
    """Flatten, then fully connected layers of ``hidden_dims`` with ``activation`` (relu, tanh, elu), then a linear
    map to ``out_features``."""

    def __init__(self, image_shape: ImageShape, out_features: int, hidden_dims: Sequence[int] = (400,),
                 activation: str = "relu") -> None:
        sizes = [prod(_check_shape(image_shape)), *hidden_dims]
        super().__init__(nn.Flatten(), *_mlp(sizes, activation), nn.Linear(sizes[-1], out_features))


class MLPDecoder(nn.Sequential):
    """Fully connected layers of ``hidden_dims`` with ``activation``, then a linear map reshaped to the image."""

    def __init__(self, image_shape: ImageShape, latent_dim: int, hidden_dims: Sequence[int] = (400,),
                 activation: str = "relu") -> None:
        shape = _check_shape(image_shape)
        sizes = [latent_dim, *hidden_dims]
        super().__init__(*_mlp(sizes, activation), nn.Linear(sizes[-1], prod(shape)), nn.Unflatten(1, shape))


def _downsampled(size: int, n: int) -> list[int]:
    """Spatial sizes after each of ``n`` stride-2 convolutions with kernel 4, padding 1 (size → ⌊size/2⌋)."""
    sizes = [size]
    for _ in range(n):
        sizes.append(sizes[-1] // 2)
    return sizes


def _conv_depth(height: int, width: int, channels: Sequence[int]) -> int:
    """How many of the stride-2 stages fit: stop before a side would drop below 2 pixels."""
    depth = 0
    while depth < len(channels) and min(height, width) >> (depth + 1) >= 2:
        depth += 1
    if depth == 0:
        raise ValueError(f"images of {height}x{width} are too small for the conv net (need at least 4x4)")
    return depth


def _conv_geometry(image_shape: ImageShape, channels: Sequence[int]) -> tuple[int, int, list[int], list[int]]:
    """Image channels, number of stages, and the heights and widths after each stage (input first)."""
    c, h, w = _check_shape(image_shape)
    depth = _conv_depth(h, w, channels)
    return c, depth, _downsampled(h, depth), _downsampled(w, depth)


class ConvEncoder(nn.Module):
    """Stride-2 convolutions (kernel 4, padding 1), each halving the image, then a linear map to ``out_features``.

    It uses as many of the ``channels`` stages as the image allows (two for 8×8, all of them for 28×28 and up).
    """

    def __init__(
        self,
        image_shape: ImageShape,
        out_features: int,
        channels: Sequence[int] = (32, 64),
        hidden_dim: int = 256,
    ) -> None:
        super().__init__()
        c, depth, hs, ws = _conv_geometry(image_shape, channels)
        stages: list[nn.Module] = []
        for c_in, c_out in zip([c, *channels[: depth - 1]], channels[:depth], strict=True):
            stages += [nn.Conv2d(c_in, c_out, kernel_size=4, stride=2, padding=1), nn.ReLU()]
        self.features = nn.Sequential(*stages)
        flat = channels[depth - 1] * hs[-1] * ws[-1]
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(flat, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, out_features)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class ConvDecoder(nn.Module):
    """The mirror of :class:`ConvEncoder`: a linear map to the smallest feature map, then stride-2 transposed
    convolutions whose output padding restores odd sizes exactly (7 → 14 → 28, 5 → 11 → 22 …)."""

    def __init__(
        self,
        image_shape: ImageShape,
        latent_dim: int,
        channels: Sequence[int] = (32, 64),
        hidden_dim: int = 256,
    ) -> None:
        super().__init__()
        c, depth, hs, ws = _conv_geometry(image_shape, channels)
        self.start_shape = (channels[depth - 1], hs[-1], ws[-1])
        self.head = nn.Sequential(
            nn.Linear(latent_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, prod(self.start_shape)), nn.ReLU()
        )
        outs = [c, *channels[: depth - 1]]
        stages: list[nn.Module] = []
        for i in reversed(range(depth)):
            padding = (hs[i] - 2 * hs[i + 1], ws[i] - 2 * ws[i + 1])
            stages.append(
                nn.ConvTranspose2d(channels[i], outs[i], kernel_size=4, stride=2, padding=1, output_padding=padding)
            )
            if i > 0:
                stages.append(nn.ReLU())
        self.features = nn.Sequential(*stages)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.features(self.head(z).view(-1, *self.start_shape))
