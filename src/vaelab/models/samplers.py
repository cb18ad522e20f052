"""Where generated codes come from: the code's own prior, or a density fitted on the codes of the training images.

A deterministic autoencoder has no prior, so it cannot generate; a Gaussian mixture fitted on its training codes
after training gives it one (Ghosh, Sajjadi, Vergari, Black & Schölkopf 2020, "From Variational to Deterministic
Autoencoders", ICLR, sec. 4: "ex-post density estimation"). A VAE's aggregate posterior often fits its codes better
than N(0, I) does, so the same sampler can improve its samples too.

``sampler=prior|gmm`` (config group ``sampler``) is read by the samples view and by ``eval.py``;
:meth:`vaelab.models.autoencoder.Autoencoder.sample` takes one. Whoever will fit a sampler checks with
:func:`check_fits_data` as soon as the training split is known (before training, or before an evaluation computes
anything) that there are enough training codes to fit it on.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from vaelab.errors import ConfigError


class PriorSampler(nn.Module):
    """z ~ p(z), the code's prior (N(0, I) for a Gaussian code); nothing to fit. A code without a prior (the
    autoencoder's point code) cannot be sampled this way: use :class:`GaussianMixtureSampler`."""

    needs_fit = False

    def fit(self, codes: torch.Tensor) -> None:
        """Nothing: the prior is fixed."""

    def check_codes(self, num_train_images: int) -> None:
        """Nothing: the prior is fitted on no codes."""

    def sample(self, model: Any, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return model.prior_sample(n, generator)

    def available_for(self, model: Any) -> bool:
        return bool(model.has_prior)


class GaussianMixtureSampler(nn.Module):
    """z ~ Σₖ πₖ N(μₖ, Σₖ), fitted by EM (scikit-learn's ``GaussianMixture``) on the codes of training images
    (Ghosh et al. 2020, sec. 4, with 10 components and full covariances).

    Args:
        n_components: K, the number of Gaussians.
        covariance_type: ``full`` (default), ``diag``, ``tied`` or ``spherical``, as scikit-learn's.
        fit_images: how many training images' codes to fit on (the first of the training split, so the same every
            time): more is a better fit and a slower one.
        seed: EM's initialisation.

    The fitted parameters are buffers (a fitted sampler is saved and moved like a module).
    """

    needs_fit = True

    def __init__(self, n_components: int = 10, covariance_type: str = "full", fit_images: int = 10_000,
                 seed: int = 0) -> None:
        super().__init__()
        if n_components < 1 or fit_images < 1:
            raise ValueError(f"sampler.n_components and sampler.fit_images must be >= 1, got {n_components}, "
                             f"{fit_images}")
        self.n_components, self.covariance_type = int(n_components), covariance_type
        self.fit_images, self.seed = int(fit_images), int(seed)
        self.register_buffer("weights", torch.zeros(0))
        self.register_buffer("means", torch.zeros(0))
        self.register_buffer("scale_tril", torch.zeros(0))

    @property
    def fitted(self) -> bool:
        return self.weights.numel() > 0

    def available_for(self, model: Any) -> bool:
        """For a continuous code (not VQ-VAE's grid of codebook vectors: its prior over indices samples it)."""
        return bool(model.code.continuous)

    def too_few_codes(self, codes: int, num_train_images: int | None = None) -> str | None:
        """What is wrong when the mixture is to be fitted on ``codes`` codes (of a training split of
        ``num_train_images`` images): it needs at least as many codes as components. None when they are enough."""
        if codes >= self.n_components:
            return None
        where = ("" if num_train_images is None else
                 f" (the first sampler.fit_images={self.fit_images} images of a training split of {num_train_images})")
        more = (f", or sampler.fit_images >= {self.n_components}"
                if num_train_images is not None and self.fit_images < self.n_components <= num_train_images else "")
        return (f"sampler.n_components={self.n_components} is more than the {codes} training codes the Gaussian "
                f"mixture is fitted on{where}: it needs at least as many codes as components. Give "
                f"sampler.n_components <= {codes}{more}")

    def check_codes(self, num_train_images: int) -> None:
        """Refuse (:class:`~vaelab.errors.ConfigError`) a mixture with more components than the training codes it
        will be fitted on: those of the first ``fit_images`` of the ``num_train_images`` training images."""
        message = self.too_few_codes(min(self.fit_images, int(num_train_images)), int(num_train_images))
        if message:
            raise ConfigError(message)

    def fit(self, codes: torch.Tensor) -> None:
        """Fit the mixture on ``codes`` ``(N, d)`` (at least ``n_components`` of them)."""
        from sklearn.mixture import GaussianMixture

        data = codes.detach().double().flatten(1).cpu().numpy()
        message = self.too_few_codes(len(data))
        if message:
            raise ConfigError(message)
        mixture = GaussianMixture(self.n_components, covariance_type=self.covariance_type, reg_covar=1e-6,
                                  random_state=self.seed).fit(data)
        d = data.shape[1]
        cov = mixture.covariances_
        if self.covariance_type == "full":
            full = cov
        elif self.covariance_type == "tied":
            full = np.repeat(cov[None], self.n_components, axis=0)
        elif self.covariance_type == "diag":
            full = np.stack([np.diag(c) for c in cov])
        else:  # spherical
            full = np.stack([c * np.eye(d) for c in cov])
        self.weights = torch.as_tensor(mixture.weights_, dtype=torch.float64)
        self.means = torch.as_tensor(mixture.means_, dtype=torch.float64)
        self.scale_tril = torch.linalg.cholesky(torch.as_tensor(full, dtype=torch.float64))

    def sample(self, model: Any, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` codes on the CPU, float32, drawn with ``generator`` (a CPU generator) when given."""
        if not self.fitted:
            raise ValueError("the Gaussian mixture sampler has not been fitted: call fit(codes) on training codes "
                             "first")
        weights, means, tril = self.weights.cpu(), self.means.cpu(), self.scale_tril.cpu()
        component = torch.multinomial(weights, n, replacement=True, generator=generator)
        eps = torch.randn(n, means.shape[1], generator=generator, dtype=torch.float64)
        z = means[component] + (tril[component] @ eps.unsqueeze(-1)).squeeze(-1)
        return z.float()


def check_fits_data(sampler: Any, datamodule: Any) -> None:
    """Refuse, as soon as the training split is known and before anything is trained or computed, a ``sampler`` that
    cannot be fitted on the codes of ``datamodule``'s training images (a Gaussian mixture with more components than
    codes): one :class:`~vaelab.errors.ConfigError` naming ``sampler.n_components`` and the codes there are. A
    sampler with nothing to fit (None, the prior), or data that do not say how many training images they hold,
    pass."""
    if sampler is None or not getattr(sampler, "needs_fit", False):
        return
    num_train_images = getattr(datamodule, "num_train_images", None)
    if num_train_images is not None:
        sampler.check_codes(num_train_images)
