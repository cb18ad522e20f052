"""A gated PixelCNN over a grid of code indices: the learned prior p(k) of VQ-VAE's second stage.

van den Oord, Kalchbrenner, Vinyals, Espeholt, Graves & Kavukcuoglu (2016), *Conditional Image Generation with
PixelCNN Decoders*, NeurIPS (sec. 2.1–2.2, fig. 2), as VQ-VAE uses it (van den Oord et al. 2017, sec. 3.2 and 4):

    p(k) = Π_i p(k_i | k_1, …, k_{i−1}),   positions i in raster order (row by row, left to right),

each factor a softmax over the K codes. Two stacks of masked convolutions keep every output off the inputs at its
own and later positions, without the blind spot of the original PixelCNN:

* the vertical stack sees the rows up to and including its own (a k×k kernel with the rows below the centre
  masked); it reaches the horizontal stack shifted down by one row, so position (r, c) gets rows < r only;
* the horizontal stack sees its own row up to the left of (r, c) in the first layer (mask A: the centre masked)
  and up to (r, c) itself in the later ones (mask B), whose inputs at (r, c) already depend on earlier positions
  only; it has residual connections from the second layer on;
* each layer's activation is gated: tanh(W_f ∗ x) ⊙ σ(W_g ∗ x) (eq. 2).

Optionally conditioned on a map s of the grid's height and width (sec. 2.3, eq. 5, the spatial form): each gate
then reads a 1×1 convolution of s as well, tanh(W_f ∗ x + V_f ∗ s) ⊙ σ(W_g ∗ x + V_g ∗ s), in both stacks.
s is not autoregressive (it is given), so the masks' order is unchanged: VQ-VAE-2's bottom prior is conditioned so
on the top codes (:mod:`vaelab.models.two_level_prior`). ``nll`` is the exact −log p(k) (or −log p(k | s)) per grid;
``sample`` draws a grid position by position.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MaskedConv2d(nn.Conv2d):
    """A convolution whose kernel is multiplied by a fixed 0/1 ``mask`` of its shape (a buffer) at every call."""

    def __init__(self, in_channels: int, out_channels: int, mask: torch.Tensor) -> None:
        kh, kw = mask.shape
        super().__init__(in_channels, out_channels, (kh, kw), padding=(kh // 2, kw // 2))
        self.register_buffer("mask", mask.to(self.weight.dtype)[None, None], persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.mask, self.bias, padding=self.padding)


def vertical_mask(kernel_size: int) -> torch.Tensor:
    """k×k: the rows above the centre and the centre row (the rows below it masked)."""
    mask = torch.ones(kernel_size, kernel_size)
    mask[kernel_size // 2 + 1 :] = 0
    return mask


def horizontal_mask(kernel_size: int, include_centre: bool) -> torch.Tensor:
    """1×k: the columns left of the centre, and the centre itself when ``include_centre`` (mask B, not A)."""
    mask = torch.zeros(1, kernel_size)
    mask[0, : kernel_size // 2 + int(include_centre)] = 1
    return mask


def gate(x: torch.Tensor) -> torch.Tensor:
    """tanh(a) ⊙ σ(b) of the two halves a, b of the channels (eq. 2)."""
    a, b = x.chunk(2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)


class GatedLayer(nn.Module):
    """One layer of both stacks (fig. 2): ``first`` is mask A and no residual connection; with
    ``condition_channels`` > 0, a 1×1 convolution of the conditioning map s adds V ∗ s inside both stacks' gates
    (sec. 2.3, eq. 5)."""

    def __init__(self, channels: int, kernel_size: int, first: bool, condition_channels: int = 0) -> None:
        super().__init__()
        self.first = first
        #: V_f and V_g of both stacks at once: 2·channels for the vertical gate's input, 2·channels for the horizontal's
        self.condition = nn.Conv2d(condition_channels, 4 * channels, 1) if condition_channels else None
        self.vertical = MaskedConv2d(channels, 2 * channels, vertical_mask(kernel_size))
        self.vertical_to_horizontal = nn.Conv2d(2 * channels, 2 * channels, 1)
        self.horizontal = MaskedConv2d(channels, 2 * channels, horizontal_mask(kernel_size, include_centre=not first))
        self.horizontal_out = nn.Conv2d(channels, channels, 1)

    def forward(self, v: torch.Tensor, h: torch.Tensor,
                condition: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        v_features = self.vertical(v)
        shifted = F.pad(v_features, (0, 0, 1, 0))[:, :, :-1]  # row r gets row r − 1's features (zero for r = 0)
        h_features = self.horizontal(h) + self.vertical_to_horizontal(shifted)
        if self.condition is not None:
            v_condition, h_condition = self.condition(condition).chunk(2, dim=1)
            v_features, h_features = v_features + v_condition, h_features + h_condition
        h_out = self.horizontal_out(gate(h_features))
        return gate(v_features), h_out if self.first else h + h_out


class GatedPixelCNN(nn.Module):
    """p(k) over grids of indices in {0, …, K−1} of any height and width.

    Args:
        num_codes: K.
        channels: the width of both stacks.
        layers: the number of gated layers (the first with mask A).
        kernel_size: the odd kernel size of the masked convolutions.
        condition_channels: the channels of a conditioning map s that every pass then takes (0: unconditional).
    """

    def __init__(self, num_codes: int, channels: int = 64, layers: int = 8, kernel_size: int = 3,
                 condition_channels: int = 0) -> None:
        super().__init__()
        if kernel_size < 3 or kernel_size % 2 == 0:
            raise ValueError(f"model.code.prior.kernel_size = {kernel_size} is invalid: it must be odd and >= 3")
        if layers < 1 or channels < 1:
            raise ValueError(f"model.code.prior: layers = {layers} and channels = {channels} must be >= 1")
        if condition_channels < 0:
            raise ValueError(f"model.code.prior: condition_channels = {condition_channels} must be >= 0 (0: none)")
        self.num_codes = int(num_codes)
        self.condition_channels = int(condition_channels)
        self.embedding = nn.Embedding(self.num_codes, channels)
        self.layers = nn.ModuleList(GatedLayer(channels, kernel_size, first=i == 0,
                                               condition_channels=self.condition_channels) for i in range(layers))
        self.head = nn.Sequential(nn.ReLU(), nn.Conv2d(channels, channels, 1), nn.ReLU(),
                                  nn.Conv2d(channels, self.num_codes, 1))

    def _check_condition(self, x: torch.Tensor, condition: torch.Tensor | None) -> None:
        if not self.condition_channels:
            if condition is not None:
                raise ValueError("this PixelCNN is unconditional (condition_channels = 0): it takes no condition")
            return
        wanted = (x.shape[0], self.condition_channels, *x.shape[2:])
        if condition is None or tuple(condition.shape) != wanted:
            got = None if condition is None else tuple(condition.shape)
            raise ValueError(f"this PixelCNN is conditional: pass a conditioning map of shape {wanted}, got {got}")

    def logits_of_features(self, x: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """The logits (B, K, H, W) of p(k_i | k_<i) (or p(k_i | k_<i, s)) from embedded grids ``x``
        (B, channels, H, W) and the conditioning map ``condition`` s (B, condition_channels, H, W) of a
        conditional PixelCNN: the network itself, open to a gradient test of its masks."""
        self._check_condition(x, condition)
        v = h = x
        for layer in self.layers:
            v, h = layer(v, h, condition)
        return self.head(h)

    def logits(self, indices: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """The logits (B, K, H, W) of p(k_i | k_<i) (given ``condition`` s) for grids of indices (B, H, W)."""
        return self.logits_of_features(self.embedding(indices).permute(0, 3, 1, 2), condition)

    def nll(self, indices: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """−log p(k) (−log p(k | s) given ``condition``) per grid (B,), in nats: the cross-entropy summed over the
        grid's positions."""
        return F.cross_entropy(self.logits(indices, condition), indices, reduction="none").flatten(1).sum(1)

    @torch.no_grad()
    def sample(self, n: int, shape: tuple[int, int], generator: torch.Generator | None = None,
               condition: torch.Tensor | None = None) -> torch.Tensor:
        """``n`` grids (n, H, W) drawn position by position in raster order, on the CPU: the network runs on its own
        device, the draws are made on the CPU with ``generator``, so a seeded generator gives the same grids on
        any device. A conditional PixelCNN draws them given ``condition`` (n, condition_channels, H, W), a map on
        the network's device."""
        height, width = shape
        device = self.embedding.weight.device
        indices = torch.zeros(n, height, width, dtype=torch.long)
        for row in range(height):
            for col in range(width):
                logits = self.logits(indices.to(device), condition)[:, :, row, col]
                probs = logits.double().softmax(1).cpu()
                indices[:, row, col] = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        return indices
