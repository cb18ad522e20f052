"""The two-stage VAE sampler: a second, small VAE fitted on the codes of the training images, whose prior draws,
decoded by it, are the codes the model decodes into images.

Dai & Wipf (2019), *Diagnosing and Enhancing VAE Models*, ICLR, sec. 4: a VAE's aggregate posterior q(z) need not
match its prior N(0, I), so images decoded from prior draws fall where q(z) has little mass. A second VAE over z, with
a learned scalar variance γ of its Gaussian likelihood (sec. 4 and app.: learning γ lets its fit sharpen where the
codes lie on a low-dimensional set), learns q(z) itself; sampling is u ~ N(0, I), z = its decoder's mean at u, then
the first model decodes z. Like the Gaussian-mixture sampler (:mod:`vaelab.models.samplers`) it is fitted after
training on the deterministic codes, so it serves any continuous code (an AE's too).

``sampler=two_stage`` (config group ``sampler``), read by the samples view and ``eval.py`` as ``sampler=gmm`` is.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from vaelab.errors import ConfigError
from vaelab.models.distributions import kl_to_standard_normal, reparameterize


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class TwoStageSampler(nn.Module):
    """z = g(u), u ~ N(0, I): the decoder mean of a second VAE fitted on the training codes (Dai & Wipf 2019, sec. 4).

    The second VAE: q(u | z) = N(μ(z), diag σ²(z)), p(z | u) = N(g(u), γ I) with log γ learned, p(u) = N(0, I); its
    loss per code is ‖z − g(u)‖² / (2γ) + (d/2) log(2πγ) + KL(q(u|z) ‖ N(0, I)) (the negative ELBO of z, eq. 1 of
    the paper with the Gaussian decoder of sec. 4), averaged over a batch of codes and minimised with Adam.

    Args:
        hidden_dims: the second VAE's hidden layers (encoder and decoder alike).
        latent_dim: the size of u (None: the size of z, as in the paper, where κ = d).
        steps: Adam steps of the fit; batch_size: codes per step; lr: Adam's learning rate.
        fit_images: how many training images' codes to fit on (the first of the training split).
        seed: the initial weights and the batches' order.

    The fitted weights are the module's (a fitted sampler is saved and moved like a module); until :meth:`fit`,
    :meth:`sample` refuses.
    """

    needs_fit = True

    def __init__(self, hidden_dims: list[int] | tuple[int, ...] = (256, 256), latent_dim: int | None = None,
                 steps: int = 3000, batch_size: int = 256, lr: float = 1e-3, fit_images: int = 10_000,
                 seed: int = 0) -> None:
        super().__init__()
        hidden_dims = [int(h) for h in hidden_dims]
        problems = [f"sampler.{key} = {value!r} is invalid: it must be {rule}" for key, value, ok, rule in (
            ("hidden_dims", hidden_dims, all(h >= 1 for h in hidden_dims), "a list of sizes >= 1"),
            ("latent_dim", latent_dim, latent_dim is None or int(latent_dim) >= 1, "null or an integer >= 1"),
            ("steps", steps, int(steps) >= 1, "an integer >= 1"),
            ("batch_size", batch_size, int(batch_size) >= 1, "an integer >= 1"),
            ("lr", lr, math.isfinite(float(lr)) and float(lr) > 0, "a finite number > 0"),
            ("fit_images", fit_images, int(fit_images) >= 2, "an integer >= 2"),
        ) if not ok]
        if problems:
            raise ConfigError("; ".join(problems))
        self.hidden_dims, self.u_dim = hidden_dims, None if latent_dim is None else int(latent_dim)
        self.steps, self.batch_size, self.lr = int(steps), int(batch_size), float(lr)
        self.fit_images, self.seed = int(fit_images), int(seed)
        self.encoder: nn.Module | None = None
        self.decoder: nn.Module | None = None
        self.log_gamma = nn.Parameter(torch.zeros(()))
        self.register_buffer("code_dim", torch.zeros((), dtype=torch.long))

    @property
    def fitted(self) -> bool:
        return int(self.code_dim) > 0

    def available_for(self, model: Any) -> bool:
        """For a continuous code (not VQ-VAE's grid of codebook indices)."""
        return bool(model.code.continuous)

    def check_codes(self, num_train_images: int) -> None:
        """Refuse a fit on fewer than two codes (a variance of one code is not defined)."""
        if min(self.fit_images, int(num_train_images)) < 2:
            raise ConfigError(f"the two-stage sampler is fitted on the codes of the first sampler.fit_images="
                              f"{self.fit_images} of {num_train_images} training images: it needs at least 2")

    def _build(self, d: int) -> None:
        u = self.u_dim or d
        self.encoder = _mlp([d, *self.hidden_dims, 2 * u])
        self.decoder = _mlp([u, *self.hidden_dims, d])
        self.code_dim.fill_(d)

    def loss(self, z: torch.Tensor) -> torch.Tensor:
        """The second VAE's negative ELBO of codes ``z`` ``(B, d)``, per code (one draw of u each)."""
        mu, logvar = self.encoder(z).chunk(2, dim=1)
        mean = self.decoder(reparameterize(mu, logvar))
        d = z.shape[1]
        recon = (z - mean).pow(2).sum(dim=1) / (2 * self.log_gamma.exp()) + 0.5 * d * (math.log(2 * math.pi)
                                                                                       + self.log_gamma)
        return recon + kl_to_standard_normal(mu, logvar)

    def fit(self, codes: torch.Tensor) -> None:
        """Fit the second VAE on ``codes`` ``(N, d)`` (at least 2); gradients are on whatever the caller's mode."""
        data = codes.detach().float().flatten(1).cpu()
        if len(data) < 2:
            raise ConfigError(f"the two-stage sampler needs at least 2 codes to fit on, got {len(data)}")
        device = codes.device
        with torch.random.fork_rng(devices=[]), torch.enable_grad():
            torch.manual_seed(self.seed)
            self._build(data.shape[1])
            self.log_gamma.data.zero_()
            self.to(device="cpu")
            optimizer = torch.optim.Adam(self.parameters(), lr=self.lr)
            order = torch.Generator().manual_seed(self.seed)
            batch = min(self.batch_size, len(data))
            for _ in range(self.steps):
                chosen = torch.randint(len(data), (batch,), generator=order)
                optimizer.zero_grad()
                self.loss(data[chosen]).mean().backward()
                optimizer.step()
        self.to(device)

    def sample(self, model: Any, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` codes on the CPU, float32: g(u) for u ~ N(0, I) drawn with ``generator`` (a CPU generator)."""
        if not self.fitted or self.decoder is None:
            raise ValueError("the two-stage sampler has not been fitted: call fit(codes) on training codes first")
        u = torch.randn(n, self.u_dim or int(self.code_dim), generator=generator)
        with torch.no_grad():
            return self.decoder(u.to(self.log_gamma.device)).float().cpu()
