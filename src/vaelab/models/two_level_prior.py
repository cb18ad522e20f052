"""VQ-VAE-2's learned prior: a gated PixelCNN over the top grid, and one over the bottom grid given the top codes.

Razavi, van den Oord & Vinyals (2019), *Generating Diverse High-Fidelity Images with VQ-VAE-2*, NeurIPS, sec. 3.2
and Algorithm 2: the prior over a pair of index grids factorises top first,

    p(k_top, k_bottom) = p_top(k_top) · p_bottom(k_bottom | k_top),

each factor autoregressive in raster order over its own grid (:class:`~vaelab.models.pixelcnn.GatedPixelCNN`), the
bottom one conditioned on the top codes: the top indices are embedded, mixed by a 3×3 convolution and brought to
the bottom grid's size by a stride-2 transposed convolution, and that map s enters every gate of the bottom
PixelCNN through a 1×1 convolution (van den Oord et al. 2016, *Conditional Image Generation with PixelCNN
Decoders*, sec. 2.3, eq. 5). Sampling is ancestral: the top grid position by position, then the bottom grid given
it. The paper's priors add self-attention layers and are far larger; these are sized for a CPU.

So −log p(k_top, k_bottom) = −log p_top(k_top) − log p_bottom(k_bottom | k_top): the code's KL under this prior
(:class:`~vaelab.models.two_level_quantizer.TwoLevelQuantizedCode`), which ``model=vqvae2_prior`` trains.
"""

from __future__ import annotations

import torch
from torch import nn

from vaelab.models.pixelcnn import GatedPixelCNN


class TopCondition(nn.Module):
    """Top index grids (B, h/2, w/2) → the bottom PixelCNN's conditioning map s (B, ``channels``, h, w):
    an embedding, a 3×3 convolution (each bottom position sees the top codes around its own), a ReLU and a stride-2
    transposed convolution (kernel 4) that doubles each side exactly."""

    def __init__(self, num_codes: int, channels: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(num_codes, channels)
        self.net = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(),
                                 nn.ConvTranspose2d(channels, channels, 4, stride=2, padding=1))

    def forward(self, top: torch.Tensor) -> torch.Tensor:
        return self.net(self.embedding(top).permute(0, 3, 1, 2))


class TwoLevelPixelCNNPrior(nn.Module):
    """p(k_top) · p(k_bottom | k_top) over pairs of index grids, the bottom's sides twice the top's.

    Args:
        top_codes, bottom_codes: K of each level's codebook (the code passes them).
        channels, layers, kernel_size: of both PixelCNNs (:class:`~vaelab.models.pixelcnn.GatedPixelCNN`); the
            conditioning map has ``channels`` channels too.
    """

    def __init__(self, top_codes: int, bottom_codes: int, channels: int = 32, layers: int = 6,
                 kernel_size: int = 3) -> None:
        super().__init__()
        self.top = GatedPixelCNN(top_codes, channels, layers, kernel_size)
        self.condition = TopCondition(top_codes, channels)
        self.bottom = GatedPixelCNN(bottom_codes, channels, layers, kernel_size, condition_channels=channels)

    def nll_levels(self, top: torch.Tensor, bottom: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """−log p_top(k_top) and −log p_bottom(k_bottom | k_top) per image (B,) each, in nats."""
        return self.top.nll(top), self.bottom.nll(bottom, self.condition(top))

    def nll(self, top: torch.Tensor, bottom: torch.Tensor) -> torch.Tensor:
        """−log p(k_top, k_bottom) per image (B,), in nats: the two levels' negative log-likelihoods summed."""
        top_nll, bottom_nll = self.nll_levels(top, bottom)
        return top_nll + bottom_nll

    @torch.no_grad()
    def sample(self, n: int, top_shape: tuple[int, int], bottom_shape: tuple[int, int],
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` pairs of index grids (n, *top_shape) and (n, *bottom_shape), on the CPU: the top grid from
        p_top, then the bottom grid from p_bottom given it (the draws with ``generator``)."""
        top = self.top.sample(n, top_shape, generator)
        condition = self.condition(top.to(self.top.embedding.weight.device))
        return top, self.bottom.sample(n, bottom_shape, generator, condition=condition)
