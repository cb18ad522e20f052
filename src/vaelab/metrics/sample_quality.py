"""How good a model's samples are: the Fréchet distance and precision/recall on a classifier's features.

The feature space is the penultimate layer of a small digit classifier trained here
(:mod:`vaelab.metrics.feature_net`), not Inception's pool3, so the distance is called the **Fréchet classifier
distance** (``fcd``) and is not comparable with published FIDs; it compares models measured with the same network.

* :func:`frechet_distance`: the squared Fréchet (2-Wasserstein) distance between the Gaussians fitted to two sets
  of features (Dowson & Landau 1982; the FID of Heusel et al. 2017, on other features),
  d² = ‖μ_a − μ_b‖² + tr(Σ_a + Σ_b − 2 (Σ_a^½ Σ_b Σ_a^½)^½). The eigenvalues of Σ_a^½ Σ_b Σ_a^½ (those of
  Σ_a Σ_b) are the squared singular values of Σ_a^½ Σ_b^½, so tr (Σ_a^½ Σ_b Σ_a^½)^½ is computed as the sum of
  those singular values: no non-symmetric matrix square root, no squaring of small eigenvalues, and the same value
  with a and b swapped (the singular values of a matrix and of its transpose). Covariances are unbiased (N − 1).
  0 for equal sets, and biased upwards for finite sets (the floor two samples of one distribution score).
* :func:`precision_recall`: the improved precision and recall of Kynkäänniemi et al. (2019), sec. 3: the
  reference manifold is the union of balls around each reference feature with the distance to its ``k``-th
  nearest other reference feature as radius; precision is the fraction of samples inside the reference manifold,
  recall the fraction of reference features inside the samples' manifold. k = 3 as in the paper. Both are 1 for
  equal sets.
* :func:`sample_quality`: both, for two image sets through a feature network.

A missing or damaged feature-network file (its SHA-256 differs) costs the sample-quality scores only: with
:func:`sample_scores_or_reason` a run or an evaluation logs one warning naming the file and what to do, computes and
records every other metric, and records why these are missing under :data:`UNAVAILABLE` in its ``metrics.json``.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from vaelab.metrics.feature_net import (
    FeatureNet,
    WeightsError,
    check_weights,
    extract_features,
    feature_net_for,
    load_feature_net,
)
from vaelab.record import SAMPLE_QUALITY_UNAVAILABLE

__all__ = ["UNAVAILABLE", "feature_net_for", "frechet_distance", "gaussian_frechet_distance", "precision_recall",
           "sample_quality", "sample_scores", "sample_scores_or_reason"]

log = logging.getLogger(__name__)

#: the key of ``metrics.json`` (train and eval alike) saying why the sample-quality scores are not there
UNAVAILABLE = SAMPLE_QUALITY_UNAVAILABLE


def _features(x: Any, name: str, min_rows: int = 2) -> torch.Tensor:
    """``x`` as a finite float64 ``(N, D)`` tensor on the CPU, or one ValueError."""
    t = torch.as_tensor(x.detach().cpu() if isinstance(x, torch.Tensor) else np.asarray(x)).double()
    if t.ndim != 2 or t.shape[1] < 1:
        raise ValueError(f"{name} must be a 2-D array (samples, feature dims), got shape {tuple(t.shape)}")
    if t.shape[0] < min_rows:
        raise ValueError(f"{name} needs at least {min_rows} samples, got {t.shape[0]}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} contain NaN or infinite values")
    return t


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """The symmetric square root of a symmetric positive semi-definite matrix (negative round-off eigenvalues → 0)."""
    values, vectors = np.linalg.eigh(matrix)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def gaussian_frechet_distance(mu_a: Any, cov_a: Any, mu_b: Any, cov_b: Any) -> float:
    """d² between N(μ_a, Σ_a) and N(μ_b, Σ_b): ‖μ_a − μ_b‖² + tr Σ_a + tr Σ_b − 2 tr (Σ_a^½ Σ_b Σ_a^½)^½, the cross
    term as the nuclear norm of Σ_a^½ Σ_b^½ (module docstring)."""
    mu_a, mu_b = np.asarray(mu_a, np.float64), np.asarray(mu_b, np.float64)
    cov_a, cov_b = np.asarray(cov_a, np.float64), np.asarray(cov_b, np.float64)
    d = mu_a.shape[0]
    if mu_a.shape != (d,) or mu_b.shape != (d,) or cov_a.shape != (d, d) or cov_b.shape != (d, d):
        raise ValueError(
            f"means must be (D,) and covariances (D, D) of one D, got {mu_a.shape}, {cov_a.shape}, {mu_b.shape}, "
            f"{cov_b.shape}"
        )
    root_a, root_b = _psd_sqrt((cov_a + cov_a.T) / 2), _psd_sqrt((cov_b + cov_b.T) / 2)
    cross = np.linalg.svd(root_a @ root_b, compute_uv=False).sum()
    value = float(np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2.0 * cross)
    return max(value, 0.0)


def frechet_distance(features_a: Any, features_b: Any) -> float:
    """The squared Fréchet distance between Gaussians fitted to two ``(N, D)`` feature sets (module docstring)."""
    a, b = _features(features_a, "features_a"), _features(features_b, "features_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"the two feature sets differ in width: {a.shape[1]} and {b.shape[1]}")
    a, b = a.numpy(), b.numpy()
    return gaussian_frechet_distance(a.mean(0), np.cov(a, rowvar=False).reshape(a.shape[1], -1),
                                     b.mean(0), np.cov(b, rowvar=False).reshape(b.shape[1], -1))


def _squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """‖a_i − b_j‖² for float64 rows (clamped at 0 against round-off)."""
    return (a.pow(2).sum(1)[:, None] + b.pow(2).sum(1)[None, :] - 2.0 * a @ b.T).clamp_min_(0.0)


def _kth_neighbour_radii(x: torch.Tensor, k: int, chunk: int) -> torch.Tensor:
    """Squared distance of each row of ``x`` to its k-th nearest other row."""
    out = []
    for i in range(0, len(x), chunk):
        d = _squared_distances(x[i : i + chunk], x)
        d[torch.arange(d.shape[0]), torch.arange(i, i + d.shape[0])] = -1.0  # itself: sorted first, then skipped
        out.append(d.kthvalue(k + 1, dim=1).values)
    return torch.cat(out)


def _inside(queries: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, chunk: int) -> torch.Tensor:
    """Whether each query lies in at least one ball (centre, radius²), boundary included (up to round-off)."""
    scale = float(torch.cat([queries, centres]).pow(2).sum(1).max())
    tolerance = 1e-9 * max(scale, 1e-300)
    out = []
    for i in range(0, len(queries), chunk):
        d = _squared_distances(queries[i : i + chunk], centres)
        out.append((d <= radii[None, :] + tolerance).any(dim=1))
    return torch.cat(out)


def precision_recall(reference: Any, samples: Any, k: int = 3, chunk: int = 2048) -> dict[str, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) of ``samples`` against ``reference`` features.

    Returns ``{"precision": …, "recall": …}``: precision is the fraction of samples within the k-NN radius of some
    reference feature, recall the fraction of reference features within the k-NN radius of some sample (each set's
    radii from its own features, a point never its own neighbour). Distances are Euclidean, computed ``chunk`` rows
    at a time in float64.
    """
    ref, gen = _features(reference, "reference"), _features(samples, "samples")
    if ref.shape[1] != gen.shape[1]:
        raise ValueError(f"the two feature sets differ in width: {ref.shape[1]} and {gen.shape[1]}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1 or k >= min(len(ref), len(gen)):
        raise ValueError(f"k must be an integer between 1 and one less than the smaller set's size, got {k!r}")
    ref_radii = _kth_neighbour_radii(ref, k, chunk)
    gen_radii = _kth_neighbour_radii(gen, k, chunk)
    return {
        "precision": float(_inside(gen, ref, ref_radii, chunk).double().mean()),
        "recall": float(_inside(ref, gen, gen_radii, chunk).double().mean()),
    }


def sample_quality(samples: Any, reference: Any, feature_net: FeatureNet, *, k: int = 3,
                   batch_size: int = 1000) -> dict[str, float]:
    """``{"fcd", "precision", "recall"}`` of the image set ``samples`` against the image set ``reference`` (e.g. a
    model's samples against the test images), on ``feature_net``'s penultimate features.

    Images are floats in [0, 1] (Bernoulli means or draws, grey levels) or uint8, ``(N, 1, S, S)`` or ``(N, S, S)``
    with S the network's input size (:func:`vaelab.metrics.feature_net.load_feature_net`). The distance is
    symmetric; precision and recall swap when the two sets do.
    """
    a = extract_features(feature_net, samples, batch_size)
    b = extract_features(feature_net, reference, batch_size)
    return {"fcd": frechet_distance(a, b), **precision_recall(b, a, k=k)}


#: the shipped feature network for each image shape it takes
def sample_scores(model: Any, datamodule: Any, split: str = "test", *, n: int = 10_000, sampler: Any = None,
                  seed: int = 0, k: int = 3) -> dict[str, float]:
    """:func:`sample_quality` of ``n`` of the pure ``model``'s samples against ``n`` images of ``split`` (drawn at
    random with ``seed``: the files are ordered by writer, so the first images are not a fair sample; fewer, and as
    many samples, when the split is smaller: precision and recall compare sets of one size), on the
    feature network for the data's image shape. ``sampler`` (:mod:`vaelab.models.samplers`) is fitted first when it
    needs it, on the codes of the training split's first images. ``{}`` when there is no feature network for these
    images or nothing to sample from (a code without a prior and no sampler). The model's mode is left as it was.
    A missing or damaged feature-network file raises :class:`~vaelab.metrics.feature_net.WeightsError` before
    anything is sampled.
    """
    name = feature_net_for(model.image_shape)
    if name is None:
        return {}
    if (sampler is None and not model.has_prior) or (sampler is not None and not sampler.available_for(model)):
        return {}
    check_weights(name)  # (before the samples are drawn: a damaged file is said at once)
    if not datamodule.splits:
        datamodule.setup()
    images, labels = datamodule.splits[split]
    rng = np.random.default_rng(seed)
    n = min(n, len(images))
    chosen = torch.from_numpy(np.sort(rng.choice(len(images), size=n, replace=False)))
    reference = datamodule.convert(images[chosen.to(images.device)])
    conditional = bool(getattr(model, "conditional", False))
    # a conditional model draws the classes of the reference images (the same mix of classes)
    wanted = datamodule.class_labels(labels[chosen.to(labels.device)]).long().cpu() if conditional else None
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            if sampler is not None and sampler.needs_fit:
                fit, fit_labels = datamodule.fixed_batch("train", getattr(sampler, "fit_images", 10_000))
                fit_labels = datamodule.class_labels(fit_labels).to(device) if conditional else None
                sampler.fit(torch.cat([
                    model.embed(fit[i : i + 1000].to(device),
                                **({"labels": fit_labels[i : i + 1000]} if conditional else {}))
                    for i in range(0, len(fit), 1000)]))
            generator = torch.Generator().manual_seed(seed)
            samples = torch.cat([
                model.sample(min(1000, n - i), generator=generator, sampler=sampler,
                             **({"labels": wanted[i : i + 1000]} if conditional else {})).float().cpu()
                for i in range(0, n, 1000)])
    finally:
        model.train(was_training)
    net = load_feature_net(name)
    scores = sample_quality(samples.clamp(0, 1), reference.cpu(), net, k=k)
    if conditional:
        scores["conditional_accuracy"] = conditional_accuracy(samples.clamp(0, 1), wanted, net)
    return scores


def conditional_accuracy(samples: torch.Tensor, labels: torch.Tensor, feature_net: FeatureNet,
                         batch_size: int = 1000) -> float:
    """The fraction of a conditional model's samples that the feature network (a classifier trained on the real
    images) puts in the class each was asked for: 1 when every sample shows its class, 1/C by chance (Sohn et al.
    2015 score their conditional samples this way, with a classifier on real data)."""
    feature_net.eval()
    with torch.no_grad():
        predicted = torch.cat([feature_net(samples[i : i + batch_size]).argmax(dim=1)
                               for i in range(0, len(samples), batch_size)])
    return float((predicted.cpu() == labels.cpu()).double().mean())


def sample_scores_or_reason(model: Any, datamodule: Any, split: str = "test", **options: Any
                            ) -> tuple[dict[str, float], str | None]:
    """:func:`sample_scores` and None; or, when the shipped feature network's file is missing or damaged, no scores
    and the reason, said once as a warning (the file, its SHA-256, reinstalling vaelab): the rule is that such a file
    costs the sample-quality scores only, never a run's or an evaluation's other metrics."""
    try:
        return sample_scores(model, datamodule, split, **options), None
    except WeightsError as err:
        reason = f"not computed: {err}"
        log.warning("Sample quality (fcd, precision, recall) %s. Every other metric is computed and recorded; "
                    "metrics.json says why these are missing under %s.", reason, UNAVAILABLE)
        return {}, reason
