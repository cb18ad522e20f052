"""Exact per-image epoch means of the loss and its terms, from one running-sum tensor per stage.

One fused add per step instead of a ``self.log`` call per metric: logging every step costs more than an MLP step
on a CPU. The sums give exact per-image means at the end of an epoch, whatever the last batch's size, reduced over
processes under DDP.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from vaelab.models.output import AutoencoderOutput


def non_finite_terms(sums: torch.Tensor | None, names: Sequence[str]) -> dict[str, float]:
    """The terms whose running sum is not finite, with that value (``nan``, ``inf`` or ``-inf``)."""
    if sums is None or len(sums) != len(names):
        return {}
    values = sums.detach().cpu().tolist()
    return {name: value for name, value in zip(names, values, strict=True) if not math.isfinite(value)}


class EpochSums:
    """Running sums of ``names`` (``loss``, ``recon``, ``kl``, then an objective's own terms) for each stage.

    ``loss`` and the objective's terms are batch means, weighted here by the batch size; ``recon`` and ``kl`` are
    summed per image.
    """

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = tuple(names)
        self._sums: dict[str, torch.Tensor] = {}
        self._counts: dict[str, int] = {}

    def add(self, stage: str, out: AutoencoderOutput, n: int) -> None:
        terms = [out.loss.detach() * n, out.recon.detach().sum(), out.kl.detach().sum()]
        terms += [out.terms[name].detach() * n for name in self.names[3:]]
        stats = torch.stack(terms).double()
        if stage in self._sums:
            self._sums[stage] += stats
        else:
            self._sums[stage] = stats
        self._counts[stage] = self._counts.get(stage, 0) + n

    def reset(self, stage: str) -> None:
        self._sums.pop(stage, None)
        self._counts.pop(stage, None)

    def non_finite(self, stage: str) -> dict[str, float]:
        """The terms of ``stage`` whose running sum is not finite, with that value (``nan``, ``inf`` or ``-inf``):
        a term that went non-finite at any step of the epoch so far is among them."""
        return non_finite_terms(self._sums.get(stage), self.names)

    def reduce(self, stage: str, strategy: Any, device: torch.device) -> tuple[float, dict[str, float]]:
        """(images seen, the mean of every term) of ``stage`` over all processes, and the stage's sums cleared.
        Every process must call it, also one that saw no batch."""
        sums = self._sums.pop(stage, None)
        if sums is None:
            sums = torch.zeros(len(self.names), dtype=torch.float64, device=device)
        count = torch.tensor([float(self._counts.pop(stage, 0))], dtype=torch.float64, device=sums.device)
        reduced = strategy.reduce(torch.cat([count, sums]), reduce_op="sum")
        count, sums = float(reduced[0]), reduced[1:]
        if count == 0:
            return 0.0, {}
        return count, dict(zip(self.names, (sums / count).tolist(), strict=True))
