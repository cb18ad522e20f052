"""Is the code a good feature? ``val/linear_probe``, ``val/knn``, ``val/nmi`` and ``val/ari`` every few validation
epochs, ``test/…`` when testing (:func:`vaelab.metrics.representation.representation_scores`), for data with labels
(classes, or factors: one score per factor and their mean)."""

from __future__ import annotations

from typing import Any

from vaelab.callbacks.scores import ScoreCallback
from vaelab.metrics.representation import representation_scores


class RepresentationMetrics(ScoreCallback):
    """Log the representation metrics of the model's code: fitted on (at most ``max_fit``) training images' codes,
    scored on (at most ``max_score``) images of the split, each drawn once with ``seed``.

    Args:
        every_n_epochs, test, last_epoch: when to score (:class:`~vaelab.callbacks.scores.ScoreCallback`).
        max_fit, max_score: how many images' codes to fit on and to score (None: all).
        seed: draws those images (the same every epoch) and seeds k-means.
        clustering: also k-means' NMI and ARI.
    """

    def __init__(self, every_n_epochs: int = 5, test: bool = True, last_epoch: bool = True,
                 max_fit: int | None = 10_000, max_score: int | None = 10_000, seed: int = 0,
                 clustering: bool = True) -> None:
        super().__init__(every_n_epochs, test, last_epoch)
        self.max_fit, self.max_score, self.seed, self.clustering = max_fit, max_score, int(seed), bool(clustering)

    def compute(self, model: Any, datamodule: Any, split: str) -> dict[str, float]:
        return representation_scores(model, datamodule, split, fit_split="train", max_fit=self.max_fit,
                                     max_score=self.max_score, seed=self.seed, clustering=self.clustering)
