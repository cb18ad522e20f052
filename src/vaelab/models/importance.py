"""Importance weighting with K posterior samples: the IWAE bound, shared by evaluation and IWAE training.

Burda, Grosse & Salakhutdinov (2016), *Importance Weighted Autoencoders*, ICLR.

Works on any model with ``latent_draws(h, n, generator)``, ``decode(z) -> raw output`` and
``likelihood.nll_samples(output, x)`` (one value per image, in nats). Gradients flow when the caller lets them
(IWAE training); evaluation runs it under ``torch.no_grad``.
"""

from __future__ import annotations

import math
from typing import Any

import torch


def log_importance_weights(
    model: Any, x: torch.Tensor, h: torch.Tensor, n: int, generator: torch.Generator | None = None,
    labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """log w_k = log p(x | z_k) + log p(z_k) − log q(z_k | x) for n draws z_k ~ q(z | x); shape (n, B).

    Burda et al. (2016), eq. 8. ``h`` are the encoder's features of ``x`` (``model.features(x)``); the draws and
    log p(z) − log q(z|x) come from ``model.latent_draws`` (the code's posterior and the model's prior: a diagonal
    Gaussian and N(0, I) for the VAE, a flow posterior, a VampPrior, all layers of a hierarchy). The n·B codes are
    decoded as one batch. A conditional model's decoder is given the images' class ``labels``, so the bound is on
    log p(x | y).
    """
    batch = x.shape[0]
    z, log_ratio = model.latent_draws(h, n, generator)
    given = {} if labels is None else {"labels": labels.repeat(n)}
    output = model.decode(z.reshape(n * batch, *z.shape[2:]), **given)
    log_px_z = -model.likelihood.nll_samples(output.reshape(n, batch, *output.shape[1:]), x)
    return log_px_z.to(log_ratio.dtype) + log_ratio


def importance_weighted_bound(
    model: Any, x: torch.Tensor, h: torch.Tensor, k: int, chunk_size: int | None = None,
    generator: torch.Generator | None = None, labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """One K-sample estimate of L_K = E[log (1/K) Σ_k w_k] per image (shape ``(B,)``), Burda et al. (2016), eq. 8.

    ``logsumexp_k(log w_k) − log K`` over :func:`log_importance_weights` (``h``: the encoder's features of ``x``).
    L_1 is the ELBO's one-sample estimate, L_K ≤ L_{K+1} ≤ log p(x) in expectation, and L_K → log p(x) as K → ∞
    (Theorem 1). With ``chunk_size`` the K samples are drawn and decoded ``chunk_size`` at a time and combined by a
    streaming log-sum-exp, which bounds memory for large K (the K = 5000 of the paper's evaluation); the result
    depends on the chunking only through which ε each sample gets.
    """
    k = int(k)
    step = k if chunk_size is None else min(int(chunk_size), k)
    total = None
    done = 0
    while done < k:
        n = min(step, k - done)
        chunk = torch.logsumexp(log_importance_weights(model, x, h, n, generator, labels), dim=0)
        total = chunk if total is None else torch.logaddexp(total, chunk)
        done += n
    return total - math.log(k)
