"""Disentanglement scores of a trained model on a data set with ground-truth factors: the one code path behind the
training callback (:class:`vaelab.callbacks.disentanglement.DisentanglementMetrics`, ``val/mig`` …) and
``src/eval.py`` (``test/mig`` … in ``metrics.json``).

A DataModule "has factors" when it says how many values each factor takes (``factor_sizes``, e.g.
:class:`~vaelab.data.ShapesDataModule`); its labels are then ``(N, F)`` factor indices, and it can ``render`` any
combination of them. Data without (MNIST, digits) gets no scores, and nothing here runs.

What is scored (the pure scores are in :mod:`vaelab.metrics.disentanglement`):

* ``mig``, ``sap`` and the DCI scores: on the deterministic code (``model.embed(x)`` when the model has one, else
  the first output of ``model.encode(x)``: the posterior means μ, an AE's code; never log σ²) of a fixed sample of
  the split (``num_samples`` images drawn with ``seed``, all of them when the split is smaller), with their factor
  labels;
* ``factor_vae``: on μ of images rendered from factor combinations drawn over the whole product (train and test
  combinations alike, as Kim & Mnih 2018 and disentanglement_lib do), so it does not depend on the split; a
  code with every dimension collapsed scores 0, as in disentanglement_lib.

Every score is in [0, 1], higher meaning more disentangled. ``protocol`` (default ``disentanglement_lib``, the
protocol of the published large studies) picks the SAP classifier, the FactorVAE batch size and pruning, and the
DCI predictor (:data:`~vaelab.metrics.disentanglement.PROTOCOLS`; docs/metrics.md). Nothing here draws from the
global random number generators (the scores use their own seeded ones), so a run trains the same with the scores on
or off.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from vaelab.metrics.disentanglement import (
    dci_scores,
    factor_vae_details,
    get_protocol,
    mutual_information_gap,
    sap_score,
)

__all__ = ["DEFAULT_FACTOR_VAE", "disentanglement_metrics", "encode_means", "has_factors"]

#: The FactorVAE score's vote counts (:func:`~vaelab.metrics.disentanglement.factor_vae_details`): far fewer than
#: disentanglement_lib's 10,000 + 5,000, so that a score costs about a second on a CPU for the small shapes setting
#: (a standard error of about 0.04 on the score from 150 evaluation votes). The batch size, pruning and variance
#: sample come from the protocol.
DEFAULT_FACTOR_VAE: dict[str, Any] = {
    "n_train_votes": 300,
    "n_eval_votes": 150,
}


def has_factors(datamodule: Any) -> bool:
    """Whether the data set comes with ground-truth factors to score a code against (a ``factor_sizes``)."""
    return bool(getattr(datamodule, "factor_sizes", None)) and hasattr(datamodule, "render")


def _module_device(model: Any) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _embed(model: Any, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
    """The deterministic code of ``x``: ``model.embed(x)`` where the model has it, else ``model.encode(x)[0]``
    (μ of a VAE's (μ, log σ²), an AE's code); a conditional model's given the images' classes ``labels``."""
    given = {"labels": labels} if getattr(model, "conditional", False) else {}
    if callable(getattr(model, "embed", None)):
        return model.embed(x, **given)
    return model.encode(x, **given)[0]


def encode_means(model: Any, images: torch.Tensor, datamodule: Any, batch_size: int = 1000,
                 labels: torch.Tensor | None = None) -> np.ndarray:
    """The deterministic code (μ of q(z | x), an AE's code; :func:`_embed`) of uint8 ``images``, converted as a
    batch is (``datamodule.convert``), encoded ``batch_size`` at a time in eval mode without gradients: float64
    ``(N, D)`` on the CPU. The model's previous train/eval mode is restored. A conditional model is given the
    images' ``labels`` (their classes: :meth:`~vaelab.data.base.ImageDataModule.class_labels` of factor labels)."""
    device = _module_device(model)
    if labels is not None and getattr(model, "conditional", False):
        labels = datamodule.class_labels(labels).to(device)
    else:
        labels = None
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = [_embed(model, datamodule.convert(images[i : i + batch_size].to(device)),
                          None if labels is None else labels[i : i + batch_size]).double().cpu()
                   for i in range(0, len(images), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(out).numpy()


def disentanglement_metrics(
    model: Any,
    datamodule: Any,
    split: str = "val",
    *,
    protocol: str = "disentanglement_lib",
    num_samples: int = 10_000,
    seed: int = 0,
    factor_vae: Mapping[str, Any] | None = None,
    dci: bool = True,
    dci_predictor: str | None = None,
    batch_size: int | None = None,
) -> dict[str, float]:
    """MIG, the FactorVAE score, SAP and (with ``dci``) DCI of ``model``'s deterministic code on ``datamodule``'s
    ``split`` (see the module docstring); ``{}`` for data without factors.

    Args:
        model: anything with ``embed(x)`` or ``encode(x) -> (μ, …)``, ``parameters``, ``training`` and ``train``
            (an :class:`~vaelab.training.AutoencoderModule`).
        datamodule: an :class:`~vaelab.data.base.ImageDataModule` with ``factor_sizes`` and ``render``.
        split: ``train``, ``val`` or ``test``: where the fixed sample for MIG, SAP and DCI comes from.
        protocol: ``disentanglement_lib`` or ``vaelab`` (:data:`~vaelab.metrics.disentanglement.PROTOCOLS`).
        num_samples: the size of that sample (the whole split when smaller).
        seed: seeds the sample, the FactorVAE votes and the SAP/DCI train/test splits: the same every call.
        factor_vae: options of :func:`~vaelab.metrics.disentanglement.factor_vae_details` over
            :data:`DEFAULT_FACTOR_VAE` and the protocol's (an option given here wins over the protocol's; ``None``
            keeps the protocol's).
        dci: also compute DCI.
        dci_predictor: ``forest`` or ``gradient_boosting``, over the protocol's (gradient boosting, the
            disentanglement_lib protocol's, costs about a minute on 10,000 codes of the shapes' 5 factors on a CPU;
            the forest a few tenths of a second).
        batch_size: images encoded at a time (default: the DataModule's ``eval_batch_size``).
    """
    settings = get_protocol(protocol)
    if not has_factors(datamodule):
        return {}
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be train, val or test, got {split!r}")
    if not datamodule.splits:
        datamodule.setup()
    batch_size = int(batch_size or getattr(datamodule, "eval_batch_size", 1000))
    images, labels = datamodule.splits[split]
    rng = np.random.default_rng(seed)
    if len(images) > num_samples:
        kept = torch.from_numpy(np.sort(rng.choice(len(images), size=num_samples, replace=False)))
        images, labels = images[kept.to(images.device)], labels[kept.to(labels.device)]
    codes = encode_means(model, images, datamodule, batch_size, labels)
    factors = labels.cpu().numpy()

    def represent(combinations: np.ndarray) -> np.ndarray:
        return encode_means(model, datamodule.render(combinations), datamodule, batch_size,
                            torch.as_tensor(combinations))

    given = {k: v for k, v in (factor_vae or {}).items() if v is not None}  # None: the protocol's value
    options = {**DEFAULT_FACTOR_VAE, **settings.factor_vae, **given}
    try:
        factor_vae_value = factor_vae_details(represent, datamodule.factor_sizes, rng, **options)["score"]
    except ValueError as err:
        if "collapsed" not in str(err):
            raise
        factor_vae_value = 0.0  # no dimension left to vote: disentanglement_lib's score for it
    metrics = {
        "mig": mutual_information_gap(codes, factors),
        "factor_vae": float(factor_vae_value),
        "sap": sap_score(codes, factors, rng=seed, test_fraction=settings.test_fraction,
                         classifier=settings.sap_classifier),
    }
    if dci:
        scores = dci_scores(codes, factors, rng=seed, test_fraction=settings.test_fraction,
                            predictor=dci_predictor or settings.dci_predictor)
        metrics.update({f"dci_{k}": float(scores[k]) for k in ("disentanglement", "completeness", "informativeness")})
    return {k: float(v) for k, v in metrics.items()}
