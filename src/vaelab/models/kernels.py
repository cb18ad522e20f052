"""Positive-definite kernels on codes and the maximum mean discrepancy (MMD) between two samples of codes.

The MMD of distributions P and Q under a kernel k is (Gretton et al. 2012, *A Kernel Two-Sample Test*, JMLR, lemma 6)

    MMD²(P, Q) = E k(x, x') + E k(y, y') − 2 E k(x, y),   x, x' ~ P, y, y' ~ Q, all independent,

zero exactly when P = Q for a characteristic kernel (the Gaussian and the inverse multiquadratic both are). The WAE
(Tolstikhin et al. 2018) and the InfoVAE (Zhao et al. 2019) use it to pull the distribution of the codes towards
the prior p(z), each from one batch of codes and one batch of prior draws.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch

from vaelab.errors import ConfigError
from vaelab.rules import BATCH_KEYS


def squared_distances(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """‖xᵢ − yⱼ‖² of every pair of rows of ``x`` (m, d) and ``y`` (n, d), shape (m, n).

    From the differences, not from ‖x‖² + ‖y‖² − 2xᵀy: exact (never negative) and with a finite gradient at xᵢ = yⱼ."""
    return (x.unsqueeze(1) - y.unsqueeze(0)).pow(2).sum(dim=-1)


def rbf(x: torch.Tensor, y: torch.Tensor, lengthscale2: float) -> torch.Tensor:
    """The Gaussian (RBF) kernel's Gram matrix, k(x, y) = exp(−‖x − y‖² / (2ℓ²)), with ``lengthscale2`` = ℓ²."""
    return _rbf(squared_distances(x, y), lengthscale2)


def imq(x: torch.Tensor, y: torch.Tensor, c: float) -> torch.Tensor:
    """The inverse multiquadratic kernel's Gram matrix, k(x, y) = C / (C + ‖x − y‖²) (Tolstikhin et al. 2018,
    sec. 4): its tails are heavier than the Gaussian's, so codes far from the prior's draws still get a gradient."""
    return _imq(squared_distances(x, y), c)


def _rbf(d2: torch.Tensor, lengthscale2: float) -> torch.Tensor:
    return torch.exp(-d2 / (2.0 * lengthscale2))


def _imq(d2: torch.Tensor, c: float) -> torch.Tensor:
    return c / (c + d2)


def mmd_unbiased(x: torch.Tensor, y: torch.Tensor, kernel: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
                 ) -> torch.Tensor:
    """The unbiased estimate of MMD²(P, Q) from x (m, d) ~ P and y (n, d) ~ Q, the U-statistic (Gretton et al. 2012,
    eq. 3; the WAE's penalty in Tolstikhin et al. 2018, Algorithm 2):

        1/(m(m−1)) Σ_{i≠j} k(xᵢ, xⱼ) + 1/(n(n−1)) Σ_{i≠j} k(yᵢ, yⱼ) − 2/(mn) Σ_{i,j} k(xᵢ, yⱼ).

    The terms k(xᵢ, xᵢ) are left out, so its expectation is MMD² exactly; an estimate can be negative when P = Q.
    ``kernel`` gives the Gram matrix of two samples. Each sample needs at least two points."""
    m, n = x.shape[0], y.shape[0]
    if m < 2 or n < 2:
        raise ValueError(f"the unbiased MMD needs at least 2 points in each sample, got {m} and {n}")
    k_xx, k_yy, k_xy = kernel(x, x), kernel(y, y), kernel(x, y)
    within_x = (k_xx.sum() - k_xx.diagonal().sum()) / (m * (m - 1))
    within_y = (k_yy.sum() - k_yy.diagonal().sum()) / (n * (n - 1))
    return within_x + within_y - 2.0 * k_xy.mean()


#: the kernels an MMD penalty may use, each given the scale C of :class:`CodeKernel`
KERNELS = ("imq", "rbf")


class CodeKernel:
    """A kernel on codes of d dimensions sized for the prior N(0, I): a sum over ``scales`` s of the kernel at scale
    C·s, with C = 2·d·σ_z² and σ_z² = 1 (Tolstikhin et al. 2018, sec. 4), the expected ‖x − y‖² of two prior draws.

    ``imq``: C·s / (C·s + ‖x − y‖²). ``rbf``: exp(−‖x − y‖² / (C·s)), i.e. 2ℓ² = C·s. A sum of characteristic kernels
    is characteristic, so several scales keep a penalty that is zero only at q = p and give a gradient whether the
    codes are near the prior's draws or far from them. ``prefix`` is where the settings live, for messages.
    """

    def __init__(self, kernel: str = "imq", scales: Sequence[float] = (1.0,), prefix: str = "model.objective") -> None:
        if kernel not in KERNELS:
            raise ConfigError(f"{prefix}.kernel = {kernel!r} is invalid: it must be one of {', '.join(KERNELS)}")
        scales = list(scales) if isinstance(scales, Sequence) and not isinstance(scales, str) else [scales]
        if not scales or not all(isinstance(s, (int, float)) and not isinstance(s, bool) and 0 < s < float("inf")
                                 for s in scales):
            raise ConfigError(f"{prefix}.scales = {scales!r} is invalid: it must be a non-empty list of finite numbers "
                              "> 0 (multiples of C = 2·latent_dim), e.g. [1.0] or [0.1, 0.2, 0.5, 1, 2, 5, 10]")
        self.kernel, self.scales = kernel, tuple(float(s) for s in scales)

    @staticmethod
    def base(latent_dim: int) -> float:
        """C = 2·d·σ_z² with σ_z² = 1, the prior's variance."""
        return 2.0 * latent_dim

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        c, d2 = self.base(x.shape[1]), squared_distances(x, y)
        if self.kernel == "imq":
            return sum(_imq(d2, c * s) for s in self.scales)
        return sum(_rbf(d2, c * s / 2.0) for s in self.scales)

    def mmd(self, codes: torch.Tensor, prior_draws: torch.Tensor) -> torch.Tensor:
        """The unbiased MMD² estimate between a batch of codes and one of prior draws (:func:`mmd_unbiased`)."""
        return mmd_unbiased(codes.flatten(1), prior_draws.flatten(1), self)


#: the fewest codes a batch may hold for the MMD penalty: the U-statistic compares each code with another
MMD_MIN_BATCH = 2


def _fits(batch_size: int, counts: Sequence[int]) -> bool:
    """Whether batches of ``batch_size`` leave no batch of fewer than :data:`MMD_MIN_BATCH` codes in any of
    ``counts`` images."""
    return batch_size >= MMD_MIN_BATCH and all(n % batch_size == 0 or n % batch_size >= MMD_MIN_BATCH for n in counts)


def mmd_batch_problems(family: str, batch_sizes: Mapping[str, int], shards: Mapping[str, Sequence[int]]) -> list[str]:
    """What is wrong with the batches an MMD penalty would see: ``batch_sizes`` (images per batch of each split) and
    ``shards`` (the images of each split each process goes through; the last batch holds what is left over). A batch
    of one code has no other code to compare it with, so every batch, the last one too, needs :data:`MMD_MIN_BATCH`
    codes. One message per key to change (``data.batch_size``; ``data.eval_batch_size`` sets val and test), naming
    a size that fits."""
    problems = []
    for key in dict.fromkeys(BATCH_KEYS.get(split, split) for split in batch_sizes):
        splits = [split for split in batch_sizes if BATCH_KEYS.get(split, split) == key]
        size, counts = batch_sizes[splits[0]], [n for split in splits for n in shards.get(split, ())]
        if _fits(size, counts):
            continue
        near = next(b for b in sorted(range(MMD_MIN_BATCH, max(size, *counts, 2) + 2), key=lambda b: abs(b - size))
                    if _fits(b, counts))
        why = "" if size < MMD_MIN_BATCH else " here: it leaves a last batch of 1 image"
        problems.append(f"{key} = {size} is invalid for {family}{why}. Its MMD compares each code of a batch with the "
                        f"others, so every batch needs at least {MMD_MIN_BATCH} codes: e.g. {key}={near}")
    return problems
