"""A residual conv encoder and decoder for colour images (32×32, 64×64) and grey ones (28×28), sized from the data.

The blocks are pre-activation residual units (He, Zhang, Ren & Sun 2016, *Identity Mappings in Deep Residual
Networks*, ECCV, eq. 2 and fig. 4e): x_{l+1} = x_l + F(x_l) with F = conv3×3 ∘ ReLU ∘ norm ∘ conv3×3 ∘ ReLU ∘ norm,
so the skip path is the identity and a block whose last convolution is zero passes its input through unchanged.

The encoder is a 3×3 stem, then ``downsamples`` stages, each ``blocks_per_stage`` blocks and a 3×3 stride-2
convolution that halves both sides and doubles the width (``base_channels`` · 2ⁱ, at most ``max_channels``), then
the blocks of the smallest map, a norm and ReLU, and a linear map to ``out_features``. The decoder mirrors it: a
linear map to the smallest map, blocks, and per stage a ×2 upsampling (``nearest``: nearest-neighbour then a 3×3
convolution; ``transpose``: a 4×4 stride-2 transposed convolution) and blocks, then a norm, ReLU and a 3×3
convolution to the image's channels.

The rule for ``downsamples: null`` (:func:`stages`): the most exact halvings that leave both sides ≥ 4, so
64×64 → 4×4 (four stages), 32×32 → 4×4 (three), 28×28 → 7×7 (two: 7 is odd), 8×8 → 4×4 (one). An image that cannot
be halved even once (an odd side, or a side under 8) is refused, naming the key; ``downsamples: 0`` takes it anyway.

The norm is GroupNorm by default (Wu & He 2018, *Group Normalization*, ECCV): it normalises each image on its own,
so an image's loss, its importance-weighted bound over K codes and its reconstruction do not depend on which other
images share its batch, nor on train or eval mode, and it needs no synchronisation under DDP. ``norm: batch``
(BatchNorm) and ``norm: none`` are there to compare.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from math import prod

import torch
from torch import nn

from vaelab.errors import ConfigError
from vaelab.models.nets import ImageShape, _check_shape

#: the smallest side the automatic choice of ``downsamples`` leaves (the 4×4 of the literature's 64×64 nets)
MIN_SIDE = 4
NORMS = ("group", "batch", "none")
UPSAMPLES = ("nearest", "transpose")


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def exact_halvings(side: int) -> int:
    """How many times ``side`` halves exactly (its power of two)."""
    count = 0
    while side > 0 and side % 2 == 0:
        side //= 2
        count += 1
    return count


def stages(image_shape: ImageShape, downsamples: int | None, key: str) -> int:
    """The number of stride-2 stages: ``downsamples`` once checked, or the most exact halvings leaving both sides
    ≥ :data:`MIN_SIDE` when it is None. ``key`` names the setting in errors."""
    _, height, width = _check_shape(image_shape)
    exact = min(exact_halvings(height), exact_halvings(width))
    if downsamples is None:
        n = 0
        while n < exact and min(height, width) >> (n + 1) >= MIN_SIDE:
            n += 1
        if n == 0:
            raise ConfigError(
                f"{key} = null cannot be chosen for {height}x{width} images: each stride-2 stage of the residual net "
                f"halves the sides exactly, down to at least {MIN_SIDE}x{MIN_SIDE}, and {height}x{width} cannot be "
                "halved once (an odd side, or a side under 8); resize the images to an even side (e.g. "
                f"data.image_size=32), set {key}=0 (no downsampling), or use model/net=conv, which takes any side")
        return n
    if not _is_int(downsamples) or downsamples < 0:
        raise ConfigError(f"{key} = {downsamples!r} is invalid: it must be an integer >= 0, or null to choose it from "
                          "the image size")
    if downsamples > exact:
        raise ConfigError(f"{key} = {downsamples} is invalid for {height}x{width} images: each stride-2 stage halves "
                          f"the sides exactly, so they must be divisible by 2^{downsamples} = {2 ** downsamples}; use "
                          f"at most {exact}, or null to choose it from the image size")
    return int(downsamples)


@dataclass(frozen=True)
class ResNetShape:
    """The checked settings of one residual net: image channels, stage widths (input stage first), the sides of
    the smallest map, the norm and its groups."""

    channels: int
    widths: tuple[int, ...]
    grid: tuple[int, int]
    norm: str
    groups: int

    @property
    def downsamples(self) -> int:
        return len(self.widths) - 1

    @classmethod
    def of(cls, image_shape: ImageShape, role: str, base_channels: int, max_channels: int, blocks_per_stage: int,
           downsamples: int | None, norm: str, groups: int) -> ResNetShape:
        """Check every setting of ``model.net.<role>`` and size the net for ``image_shape``."""
        key = f"model.net.{role}"
        for name, value, least in (("base_channels", base_channels, 1), ("max_channels", max_channels, 1),
                                   ("blocks_per_stage", blocks_per_stage, 0), ("groups", groups, 1)):
            if not _is_int(value) or value < least:
                raise ConfigError(f"{key}.{name} = {value!r} is invalid: it must be an integer >= {least}")
        if norm not in NORMS:
            raise ConfigError(f"{key}.norm = {norm!r} is invalid: choose one of {', '.join(NORMS)}")
        c, height, width = _check_shape(image_shape)
        n = stages(image_shape, downsamples, f"{key}.downsamples")
        widths = tuple(min(base_channels * 2**i, max_channels) for i in range(n + 1))
        if norm == "group" and any(w % groups for w in widths):
            raise ConfigError(f"{key}.groups = {groups} is invalid for stage widths {list(widths)}: GroupNorm splits "
                              f"each width into groups of equal size, so every width (base_channels * 2^i, at most "
                              f"max_channels) must be divisible by it, e.g. {key}.groups=8 with base_channels=32")
        return cls(c, widths, (height >> n, width >> n), norm, int(groups))

    def norm_layer(self, channels: int) -> nn.Module:
        if self.norm == "group":
            return nn.GroupNorm(self.groups, channels)
        if self.norm == "batch":
            return nn.BatchNorm2d(channels)
        return nn.Identity()


class PreActBlock(nn.Module):
    """x + conv3×3(ReLU(norm(conv3×3(ReLU(norm(x)))))): a full pre-activation residual unit (He et al. 2016,
    eq. 2, fig. 4e), at a constant width."""

    def __init__(self, channels: int, shape: ResNetShape) -> None:
        super().__init__()
        self.body = nn.Sequential(
            shape.norm_layer(channels), nn.ReLU(), nn.Conv2d(channels, channels, 3, padding=1),
            shape.norm_layer(channels), nn.ReLU(), nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def _blocks(channels: int, count: int, shape: ResNetShape) -> list[nn.Module]:
    return [PreActBlock(channels, shape) for _ in range(count)]


def _upsample(c_in: int, c_out: int, mode: str) -> nn.Module:
    if mode == "nearest":
        return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c_in, c_out, 3, padding=1))
    return nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1)


class ResNetEncoder(nn.Module):
    """Images (B, C, H, W) → (B, ``out_features``) through pre-activation residual stages (see the module).

    Args:
        image_shape: (channels, height, width) of the data.
        out_features: the encoder's output size (the model asks for what its code needs).
        base_channels: the width of the first stage; each stride-2 stage doubles it.
        max_channels: the most channels a stage has.
        blocks_per_stage: residual blocks at each resolution (0: a plain conv net).
        downsamples: the stride-2 stages; None chooses them from the image size (to 4×4 for 32×32 and 64×64).
        norm: ``group`` (GroupNorm), ``batch`` (BatchNorm) or ``none``.
        groups: GroupNorm's groups; every stage width must be divisible by it.
    """

    def __init__(self, image_shape: ImageShape, out_features: int, base_channels: int = 32, max_channels: int = 256,
                 blocks_per_stage: int = 1, downsamples: int | None = None, norm: str = "group",
                 groups: int = 8) -> None:
        super().__init__()
        shape = ResNetShape.of(image_shape, "encoder", base_channels, max_channels, blocks_per_stage, downsamples,
                               norm, groups)
        widths = shape.widths
        layers: list[nn.Module] = [nn.Conv2d(shape.channels, widths[0], 3, padding=1)]
        for c_in, c_out in zip(widths[:-1], widths[1:], strict=True):
            layers += _blocks(c_in, blocks_per_stage, shape)
            layers.append(nn.Conv2d(c_in, c_out, 3, stride=2, padding=1))
        layers += [*_blocks(widths[-1], blocks_per_stage, shape), shape.norm_layer(widths[-1]), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(widths[-1] * prod(shape.grid), out_features))
        #: the stride-2 stages and the (h, w) of the smallest feature map
        self.downsamples, self.grid = shape.downsamples, shape.grid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class ResNetDecoder(nn.Module):
    """Codes (B, ``latent_dim``) → raw outputs of the image's shape: the mirror of :class:`ResNetEncoder`.

    Args are the encoder's, with ``upsample``: ``nearest`` (nearest-neighbour ×2 then a 3×3 convolution, free of
    the checkerboard a transposed convolution can leave) or ``transpose`` (a 4×4 stride-2 transposed convolution).
    """

    def __init__(self, image_shape: ImageShape, latent_dim: int, base_channels: int = 32, max_channels: int = 256,
                 blocks_per_stage: int = 1, downsamples: int | None = None, norm: str = "group", groups: int = 8,
                 upsample: str = "nearest") -> None:
        super().__init__()
        if upsample not in UPSAMPLES:
            raise ConfigError(f"model.net.decoder.upsample = {upsample!r} is invalid: choose one of "
                              f"{', '.join(UPSAMPLES)}")
        shape = ResNetShape.of(image_shape, "decoder", base_channels, max_channels, blocks_per_stage, downsamples,
                               norm, groups)
        widths = shape.widths
        self.start_shape = (widths[-1], *shape.grid)
        self.head = nn.Linear(latent_dim, prod(self.start_shape))
        layers: list[nn.Module] = _blocks(widths[-1], blocks_per_stage, shape)
        for c_in, c_out in zip(reversed(widths[1:]), reversed(widths[:-1]), strict=True):
            layers += [_upsample(c_in, c_out, upsample), *_blocks(c_out, blocks_per_stage, shape)]
        layers += [shape.norm_layer(widths[0]), nn.ReLU(), nn.Conv2d(widths[0], shape.channels, 3, padding=1)]
        self.features = nn.Sequential(*layers)
        self.downsamples, self.grid = shape.downsamples, shape.grid

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.features(self.head(z).view(-1, *self.start_shape))
