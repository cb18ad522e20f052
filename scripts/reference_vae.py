"""PyTorch's VAE example (examples/vae/main.py), its model and loss: the reference that scripts/benchmark.py and
scripts/process_benchmark.py time vaelab against. Imports torch alone, so that a timed process pays for nothing else."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ReferenceVAE(nn.Module):
    """The model of PyTorch's VAE example (examples/vae/main.py): 784-400-20 with ReLU, sigmoid output (784-32-2
    for the ``*_tiny`` variants)."""

    def __init__(self, hidden: int = 400, latent: int = 20) -> None:
        super().__init__()
        self.fc1 = nn.Linear(784, hidden)
        self.fc21 = nn.Linear(hidden, latent)
        self.fc22 = nn.Linear(hidden, latent)
        self.fc3 = nn.Linear(latent, hidden)
        self.fc4 = nn.Linear(hidden, 784)

    def forward(self, x):
        h1 = F.relu(self.fc1(x.view(-1, 784)))
        mu, logvar = self.fc21(h1), self.fc22(h1)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return torch.sigmoid(self.fc4(F.relu(self.fc3(z)))), mu, logvar


def reference_loss(recon_x, x, mu, logvar):
    """The example's loss: BCE summed over pixels and batch, plus the analytic KL."""
    bce = F.binary_cross_entropy(recon_x, x.view(-1, 784), reduction="sum")
    return bce - 0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
