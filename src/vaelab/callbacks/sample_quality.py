"""Are the samples good? ``val/fcd``, ``val/precision`` and ``val/recall`` every few validation epochs, ``test/…`` when
testing (:func:`vaelab.metrics.sample_quality.sample_scores`): the model's samples against held-out images on the
features of a digit classifier trained here, for MNIST-sized and 8×8 digit images (nothing for other data)."""

from __future__ import annotations

from typing import Any

from vaelab.callbacks.scores import ScoreCallback
from vaelab.metrics.sample_quality import sample_scores


class SampleQualityMetrics(ScoreCallback):
    """Log the Fréchet classifier distance and precision/recall of ``n`` samples against ``n`` images of the split
    (drawn with ``seed``, the same every time), the codes drawn from ``sampler`` (the run's ``sampler=``: the code's
    prior, or a Gaussian mixture fitted on the training codes before each scoring).

    Args:
        every_n_epochs, test, last_epoch: when to score (:class:`~vaelab.callbacks.scores.ScoreCallback`).
        n: samples (and reference images) per scoring; ``test_n`` when testing.
        sampler: a sampler of :mod:`vaelab.models.samplers` (None: the code's prior).
        seed: the samples' and the reference images' draws.
    """

    def __init__(self, every_n_epochs: int = 5, test: bool = True, last_epoch: bool = True, n: int = 2000,
                 test_n: int = 10_000, sampler: Any = None, seed: int = 0) -> None:
        super().__init__(every_n_epochs, test, last_epoch)
        if n < 2 or test_n < 2:
            raise ValueError(f"callbacks.sample_quality.n and test_n must be >= 2, got {n}, {test_n}")
        self.n, self.test_n, self.sampler, self.seed = int(n), int(test_n), sampler, int(seed)

    def compute(self, model: Any, datamodule: Any, split: str) -> dict[str, float]:
        n = self.test_n if split == "test" else self.n
        return sample_scores(model, datamodule, split, n=n, sampler=self.sampler, seed=self.seed)
