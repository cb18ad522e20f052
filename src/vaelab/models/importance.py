"""Importance weighting with K posterior samples: the IWAE bound, shared by evaluation and IWAE training.

Burda, Grosse & Salakhutdinov (2016), *Importance Weighted Autoencoders*, ICLR.

Works on any model with ``decode(z) -> raw output`` and ``likelihood.nll(output, x)`` (one value per image, in
nats). Gradients flow when the caller lets them (IWAE training); evaluation runs it under ``torch.no_grad``.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from vaelab.models.distributions import standard_normal_log_prob


def log_importance_weights(
    model: Any, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, n: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """log w_k = log p(x | z_k) + log p(z_k) − log q(z_k | x) for n draws z_k = μ + σ·ε_k ~ q(z | x); shape (n, B).

    Burda et al. (2016), eq. 8. The n·B codes are decoded as one batch. log q(z | x) is evaluated through ε, as
    log N(ε; 0, I) − Σ_j log σ_j: the diagonal-normal density of z, without the round-off of (z − μ)/σ when σ is
    tiny. log p(z) = log N(z; 0, I).
    """
    batch, latent_dim = mu.shape
    dtype = torch.promote_types(mu.dtype, torch.float32)  # never bf16-coarse weights under bf16-mixed precision
    mu, logvar = mu.to(dtype), logvar.to(dtype)
    eps = torch.randn((n, batch, latent_dim), generator=generator, dtype=dtype, device=mu.device)
    z = mu + torch.exp(0.5 * logvar) * eps  # (n, B, D)
    output = model.decode(z.reshape(n * batch, latent_dim))
    log_px_z = -model.likelihood.nll_samples(output.reshape(n, batch, *output.shape[1:]), x)
    log_qz = standard_normal_log_prob(eps) - 0.5 * logvar.sum(dim=-1)
    return log_px_z.to(dtype) + standard_normal_log_prob(z) - log_qz


def importance_weighted_bound(
    model: Any, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, k: int, chunk_size: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One K-sample estimate of L_K = E[log (1/K) Σ_k w_k] per image (shape ``(B,)``), Burda et al. (2016), eq. 8.

    ``logsumexp_k(log w_k) − log K`` over :func:`log_importance_weights`. L_1 is the ELBO's one-sample estimate,
    L_K ≤ L_{K+1} ≤ log p(x) in expectation, and L_K → log p(x) as K → ∞ (Theorem 1). With ``chunk_size`` the K
    samples are drawn and decoded ``chunk_size`` at a time and combined by a streaming log-sum-exp, which bounds
    memory for large K (the K = 5000 of the paper's evaluation); the result depends on the chunking only through
    which ε each sample gets.
    """
    k = int(k)
    step = k if chunk_size is None else min(int(chunk_size), k)
    total = None
    done = 0
    while done < k:
        n = min(step, k - done)
        chunk = torch.logsumexp(log_importance_weights(model, x, mu, logvar, n, generator), dim=0)
        total = chunk if total is None else torch.logaddexp(total, chunk)
        done += n
    return total - math.log(k)
