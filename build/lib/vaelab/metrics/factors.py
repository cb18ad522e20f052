"""Disentanglement scores of a trained model on a data set with ground-truth factors: the one code path behind the
training callback (:class:`vaelab.callbacks.disentanglement.DisentanglementMetrics`, ``val/mig`` …) and
``src/eval.py`` (``test/mig`` … in ``metrics.json``).

A DataModule "has factors" when it says how many values each factor takes (``factor_sizes``, e.g.
:class:`~vaelab.data.ShapesDataModule`); its labels are then ``(N, F)`` factor indices, and it can ``render`` any
combination of them. Data without (MNIST, digits) gets no scores, and nothing here runs.

What is scored (the pure scores are in :mod:`vaelab.metrics.disentanglement`):

* ``mig``, ``sap`` and the DCI scores: on the posterior means μ (an AE's code) of a fixed sample of the split
  (``num_samples`` images drawn with ``seed``, all of them when the split is smaller), with their factor labels;
* ``factor_vae``: on μ of images rendered from factor combinations drawn over the whole product (train and test
  combinations alike, as Kim & Mnih 2018 and disentanglement_lib do), so it does not depend on the split; a
  code with every dimension collapsed scores 0, as in disentanglement_lib.

Every score is in [0, 1], higher meaning more disentangled. Nothing here draws from the global random number
generators (the scores use their own seeded ones), so a run trains the same with the scores on or off.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from vaelab.metrics.disentanglement import dci_scores, factor_vae_details, mutual_information_gap, sap_score

__all__ = ["DEFAULT_FACTOR_VAE", "SCORE_NAMES", "disentanglement_metrics", "encode_means", "has_factors"]

#: The FactorVAE score's options (:func:`~vaelab.metrics.disentanglement.factor_vae_details`): far fewer votes than
#: disentanglement_lib's 10,000 + 5,000 batches of 64, so that a score costs about a second on a CPU for the small
#: shapes setting (a standard error of about 0.04 on the score from 150 evaluation votes).
DEFAULT_FACTOR_VAE: dict[str, Any] = {
    "n_train_votes": 300,
    "n_eval_votes": 150,
    "batch_size": 32,
    "n_variance_estimate": 2000,
}

#: every key :func:`disentanglement_metrics` can return, in the order tables show them
SCORE_NAMES = ("mig", "factor_vae", "sap", "dci_disentanglement", "dci_completeness", "dci_informativeness")


def has_factors(datamodule: Any) -> bool:
    """Whether the data set comes with ground-truth factors to score a code against (a ``factor_sizes``)."""
    return bool(getattr(datamodule, "factor_sizes", None)) and hasattr(datamodule, "render")


def _module_device(model: Any) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def encode_means(model: Any, images: torch.Tensor, datamodule: Any, batch_size: int = 1000) -> np.ndarray:
    """μ of q(z | x) (an AE's code) of uint8 ``images``, converted as a batch is (``datamodule.convert``), encoded
    ``batch_size`` at a time in eval mode without gradients: float64 ``(N, D)`` on the CPU. The model's previous
    train/eval mode is restored."""
    device = _module_device(model)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = [model.encode(datamodule.convert(images[i : i + batch_size].to(device)))[0].double().cpu()
                   for i in range(0, len(images), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(out).numpy()


def disentanglement_metrics(
    model: Any,
    datamodule: Any,
    split: str = "val",
    *,
    num_samples: int = 10_000,
    seed: int = 0,
    factor_vae: Mapping[str, Any] | None = None,
    dci: bool = True,
    batch_size: int | None = None,
) -> dict[str, float]:
    """MIG, the FactorVAE score, SAP and (with ``dci``) DCI of ``model``'s posterior means on ``datamodule``'s
    ``split`` (see the module docstring); ``{}`` for data without factors.

    Args:
        model: an :class:`~vaelab.models.AutoencoderModule` (anything with ``encode`` and ``parameters``).
        datamodule: an :class:`~vaelab.data.base.ImageDataModule` with ``factor_sizes`` and ``render``.
        split: ``train``, ``val`` or ``test``: where the fixed sample for MIG, SAP and DCI comes from.
        num_samples: the size of that sample (the whole split when smaller).
        seed: seeds the sample, the FactorVAE votes and the SAP/DCI train/test splits: the same every call.
        factor_vae: options of :func:`~vaelab.metrics.disentanglement.factor_vae_details` over
            :data:`DEFAULT_FACTOR_VAE`.
        dci: also compute DCI (a small random forest per factor, a few tenths of a second).
        batch_size: images encoded at a time (default: the DataModule's ``eval_batch_size``).
    """
    if not has_factors(datamodule):
        return {}
    if not datamodule.splits:
        datamodule.setup()
    batch_size = int(batch_size or getattr(datamodule, "eval_batch_size", 1000))
    images, labels = datamodule.splits[split]
    rng = np.random.default_rng(seed)
    if len(images) > num_samples:
        chosen = torch.from_numpy(np.sort(rng.choice(len(images), size=num_samples, replace=False)))
        images, labels = images[chosen.to(images.device)], labels[chosen.to(labels.device)]
    codes = encode_means(model, images, datamodule, batch_size)
    factors = labels.cpu().numpy()

    def represent(combinations: np.ndarray) -> np.ndarray:
        return encode_means(model, datamodule.render(combinations), datamodule, batch_size)

    options = {**DEFAULT_FACTOR_VAE, **(factor_vae or {})}
    try:
        factor_vae_value = factor_vae_details(represent, datamodule.factor_sizes, rng, **options)["score"]
    except ValueError as err:
        if "collapsed" not in str(err):
            raise
        factor_vae_value = 0.0  # no dimension left to vote: disentanglement_lib's score for it
    metrics = {
        "mig": mutual_information_gap(codes, factors),
        "factor_vae": float(factor_vae_value),
        "sap": sap_score(codes, factors, rng=seed),
    }
    if dci:
        scores = dci_scores(codes, factors, rng=seed)
        metrics.update({f"dci_{k}": float(scores[k]) for k in ("disentanglement", "completeness", "informativeness")})
    return {k: float(v) for k, v in metrics.items()}
