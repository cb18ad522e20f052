"""Are the samples good? ``val/fcd``, ``val/precision`` and ``val/recall`` every few validation epochs, ``test/…`` when
testing (:func:`vaelab.metrics.sample_quality.sample_scores`): the model's samples against held-out images on the
features of a digit classifier trained here, for MNIST-sized and 8×8 digit images (nothing for other data).

Two rules of its own: a sampler that cannot be fitted on the training codes (``sampler=gmm`` with more components
than codes) is refused when fitting starts, before the first step; and a missing or damaged feature-network file
costs these scores only (one warning; every other metric is still logged and recorded, and the run's
``metrics.json`` says why under ``sample_quality_unavailable``)."""

from __future__ import annotations

from typing import Any

from lightning import LightningModule, Trainer

from vaelab.callbacks.epoch_record import EpochRecord
from vaelab.callbacks.scores import ScoreCallback
from vaelab.metrics.sample_quality import UNAVAILABLE, sample_scores_or_reason
from vaelab.models.samplers import check_fits_data


def note_in_record(trainer: Trainer, key: str, value: Any) -> None:
    """Put ``key: value`` into the record (``metrics.json``) of the run ``trainer`` trains, when it keeps one
    (:class:`~vaelab.callbacks.epoch_record.EpochRecord`, which the training task adds)."""
    for callback in trainer.callbacks:
        if isinstance(callback, EpochRecord):
            callback.record[key] = value


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
        #: why the scores cannot be computed (a missing or damaged feature-network file), once that is known
        self.unavailable: str | None = None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Refuse a sampler with too few training codes to fit it on before the first step, not at the first
        scoring (:func:`~vaelab.models.samplers.check_fits_data`)."""
        if stage == "fit" and getattr(trainer, "datamodule", None) is not None:
            check_fits_data(self.sampler, trainer.datamodule)

    def compute(self, model: Any, datamodule: Any, split: str) -> dict[str, float]:
        if self.unavailable is not None:  # (said once: the file does not mend during the run)
            return {}
        n = self.test_n if split == "test" else self.n
        scores, self.unavailable = sample_scores_or_reason(model, datamodule, split, n=n, sampler=self.sampler,
                                                           seed=self.seed)
        return scores

    def score(self, trainer: Trainer, pl_module: LightningModule, split: str) -> None:
        """Score (:meth:`ScoreCallback.score`); when the scores are unavailable, say why in the run's record."""
        super().score(trainer, pl_module, split)
        if self.unavailable is not None and trainer.is_global_zero:
            note_in_record(trainer, UNAVAILABLE, self.unavailable)
