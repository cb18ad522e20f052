"""How good a code is as a feature: a linear probe, k-nearest neighbours and k-means against the labels.

Pure functions on arrays (numpy, or torch tensors on any device, copied to the CPU): ``codes`` are ``(N, D)``
(for a VAE, the posterior means μ; for an AE, its code), ``labels`` are ``(N,)`` class indices or ``(N, F)`` factor
indices (shapes); with factors every score is computed per factor and averaged. The classifiers and k-means are
scikit-learn's; what is written here is the protocol: which split fits, which scores, and how the code is scaled.

* :func:`linear_probe_accuracy`: a multinomial logistic regression fitted on the train split's codes, its accuracy
  on the test split's (the "linear evaluation protocol" of unsupervised feature learning, e.g. Coates, Ng & Lee
  2011; Chen et al. 2020, SimCLR, sec. 4). Each code dimension is standardised with the train split's mean and
  standard deviation first, so the score is invariant to rescaling and shifting any code dimension (and the
  L2 penalty treats every dimension alike).
* :func:`knn_accuracy`: majority vote of the ``k`` nearest train codes (Euclidean) for each test code (Cover &
  Hart 1967). The code is **not** standardised: a VAE's inactive dimensions carry tiny noise around 0, and
  rescaling them to unit variance would let that noise decide the neighbours. The score is invariant to a global
  scale, a shift and any rotation of the code, not to rescaling one dimension.
* :func:`clustering_agreement`: k-means (k-means++, Arthur & Vassilvitskii 2007) with as many clusters as classes
  on the codes, compared with the classes by normalised mutual information (arithmetic mean of the entropies;
  Strehl & Ghosh 2002; Vinh, Epps & Bailey 2010) and the adjusted Rand index (Hubert & Arabie 1985). Unscaled, for
  the reason above; invariant to a global scale, a shift and a rotation.

The logistic regression and k-means run with one BLAS/OpenMP thread (``threadpoolctl``, a scikit-learn
dependency): on a CPU shared with other jobs their worker threads otherwise spin-wait for cores (docs/metrics.md
has the times).

Chance levels: a code independent of the labels scores, in expectation, Σ_c p_train-predicted(c) p_test(c) on the
two accuracies (1/K for K balanced classes), 0 ARI, and an NMI of about (K − 1)² / (2 N H) (the plug-in bias of the
mutual information of two independent K-way partitions of N points, Treves & Panzeri 1995, over their entropy H).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "clustering_agreement",
    "knn_accuracy",
    "linear_probe_accuracy",
    "representation_metrics",
    "representation_scores",
]


# --------------------------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------------------------


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _codes(codes: Any, name: str) -> np.ndarray:
    """``codes`` as a finite float64 ``(N, D)`` array, or one ValueError saying what is wrong."""
    arr = _to_numpy(codes)
    if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"{name} must be a non-empty 2-D array (samples, code dims), got shape {arr.shape}")
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}")
    arr = arr.astype(np.float64, copy=False)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contain NaN or infinite values")
    return arr


def _labels(labels: Any, n: int, name: str) -> np.ndarray:
    """``labels`` as an int64 ``(n, F)`` array (a ``(n,)`` vector becomes one column)."""
    arr = _to_numpy(labels)
    if arr.dtype.kind == "f" and np.isfinite(arr).all() and np.array_equal(arr, np.round(arr)):
        arr = arr.astype(np.int64)
    if arr.dtype.kind not in "biu":
        raise ValueError(f"{name} must be integer class or factor indices, got dtype {arr.dtype}")
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[1] < 1:
        raise ValueError(f"{name} must be (N,) classes or (N, F) factors, got shape {arr.shape}")
    if arr.shape[0] != n:
        raise ValueError(f"codes and {name} must have the same number of samples, got {n} and {arr.shape[0]}")
    return arr.astype(np.int64, copy=False)


def _pair(codes: Any, labels: Any, split: str) -> tuple[np.ndarray, np.ndarray]:
    c = _codes(codes, f"{split}_codes")
    return c, _labels(labels, c.shape[0], f"{split}_labels")


def _check_same_width(train: np.ndarray, test: np.ndarray, what: str) -> None:
    if train.shape[1] != test.shape[1]:
        raise ValueError(f"train and test {what} differ in width: {train.shape[1]} and {test.shape[1]}")


def _single_column(labels: np.ndarray, fn: str) -> np.ndarray:
    if labels.shape[1] != 1:
        raise ValueError(f"{fn} takes one label per sample; for (N, F) factors use representation_metrics")
    return labels[:, 0]


def _one_thread():
    """A context in which BLAS and OpenMP use one thread (see the module docstring)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1)


def _standardise(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both splits standardised with the train split's mean and std per dim (a constant dim is only centred)."""
    mean = train.mean(axis=0)
    std = train.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    return (train - mean) / std, (test - mean) / std


# --------------------------------------------------------------------------------------------------------------
# The three scores
# --------------------------------------------------------------------------------------------------------------


def linear_probe_accuracy(
    train_codes: Any, train_labels: Any, test_codes: Any, test_labels: Any, *, C: float = 1.0, max_iter: int = 1000
) -> float:
    """Test accuracy of a multinomial logistic regression fitted on the train split's standardised codes.

    The probe is scikit-learn's ``LogisticRegression`` (L2 penalty of strength 1/C, L-BFGS); every code dim is
    standardised with the train split's mean and std (see the module docstring), so rescaling or shifting a dim
    changes nothing. A class missing from the train split is never predicted; with a single train class the
    probe predicts it everywhere.
    """
    from sklearn.linear_model import LogisticRegression

    x_train, y_train = _pair(train_codes, train_labels, "train")
    x_test, y_test = _pair(test_codes, test_labels, "test")
    _check_same_width(x_train, x_test, "codes")
    y_train, y_test = _single_column(y_train, "linear_probe_accuracy"), _single_column(y_test, "linear_probe_accuracy")
    if not C > 0:
        raise ValueError(f"C must be > 0, got {C!r}")
    x_train, x_test = _standardise(x_train, x_test)
    classes = np.unique(y_train)
    if classes.size == 1:
        return float(np.mean(y_test == classes[0]))
    probe = LogisticRegression(C=C, max_iter=int(max_iter))
    with warnings.catch_warnings(), _one_thread():
        warnings.filterwarnings("ignore", message=".*lbfgs failed to converge.*")
        probe.fit(x_train, y_train)
    return float(np.mean(probe.predict(x_test) == y_test))


def knn_accuracy(train_codes: Any, train_labels: Any, test_codes: Any, test_labels: Any, *, k: int = 5) -> float:
    """Test accuracy of the majority vote of the ``k`` nearest train codes (Euclidean, unscaled codes).

    scikit-learn's ``KNeighborsClassifier`` with uniform weights (a tie goes to the lowest class index). Never
    scores a point against itself: the neighbours come from the train split only.
    """
    from sklearn.neighbors import KNeighborsClassifier

    x_train, y_train = _pair(train_codes, train_labels, "train")
    x_test, y_test = _pair(test_codes, test_labels, "test")
    _check_same_width(x_train, x_test, "codes")
    y_train, y_test = _single_column(y_train, "knn_accuracy"), _single_column(y_test, "knn_accuracy")
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= k <= len(x_train):
        raise ValueError(f"k must be an integer between 1 and the {len(x_train)} train codes, got {k!r}")
    knn = KNeighborsClassifier(n_neighbors=int(k), algorithm="brute").fit(x_train, y_train)
    return float(np.mean(knn.predict(x_test) == y_test))


def clustering_agreement(
    codes: Any, labels: Any, *, n_clusters: int | None = None, seed: int = 0, n_init: int = 4
) -> dict[str, float]:
    """NMI and ARI between the classes and a k-means clustering of the (unscaled) codes.

    k-means has ``n_clusters`` clusters (default: as many as there are classes among ``labels``), k-means++ seeding
    with ``seed`` and the best of ``n_init`` runs. Returns ``{"nmi": …, "ari": …}``; both are 1 when the clusters
    are the classes, whatever their names.
    """
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    x = _codes(codes, "codes")
    y = _single_column(_labels(labels, x.shape[0], "labels"), "clustering_agreement")
    n_clusters = int(np.unique(y).size) if n_clusters is None else n_clusters
    if isinstance(n_clusters, bool) or not isinstance(n_clusters, int | np.integer) or not 1 <= n_clusters <= len(x):
        raise ValueError(f"n_clusters must be an integer between 1 and the {len(x)} codes, got {n_clusters!r}")
    with warnings.catch_warnings(), _one_thread():
        warnings.filterwarnings("ignore", message=".*Number of distinct clusters.*")
        clusters = KMeans(n_clusters=int(n_clusters), n_init=int(n_init), random_state=seed).fit_predict(x)
    return {
        "nmi": float(normalized_mutual_info_score(y, clusters, average_method="arithmetic")),
        "ari": float(adjusted_rand_score(y, clusters)),
    }


# --------------------------------------------------------------------------------------------------------------
# All of them, per factor
# --------------------------------------------------------------------------------------------------------------


def representation_metrics(
    train_codes: Any,
    train_labels: Any,
    test_codes: Any,
    test_labels: Any,
    *,
    factor_names: Sequence[str] | None = None,
    k: int = 5,
    C: float = 1.0,
    seed: int = 0,
    clustering: bool = True,
) -> dict[str, float]:
    """The linear probe, k-NN accuracy and (with ``clustering``) k-means NMI/ARI of a code.

    The probe and k-NN are fitted on the train split and scored on the test split; k-means clusters the test
    split's codes. Keys: ``linear_probe``, ``knn``, ``nmi``, ``ari``. For ``(N, F)`` factor labels each is also
    given per factor, as ``<score>_<factor name>`` (``factor_names``, default ``factor0`` …), and the plain key
    is the mean over the factors that vary in the train split (a constant factor has nothing to predict).
    """
    x_train, y_train = _pair(train_codes, train_labels, "train")
    x_test, y_test = _pair(test_codes, test_labels, "test")
    _check_same_width(x_train, x_test, "codes")
    _check_same_width(y_train, y_test, "labels")
    n_factors = y_train.shape[1]
    names = list(factor_names) if factor_names is not None else [f"factor{i}" for i in range(n_factors)]
    if len(names) != n_factors:
        raise ValueError(f"factor_names has {len(names)} names for {n_factors} factors")
    per_factor: dict[str, dict[str, float]] = {}
    for i, name in enumerate(names):
        if np.unique(y_train[:, i]).size < 2:
            continue
        scores = {
            "linear_probe": linear_probe_accuracy(x_train, y_train[:, i], x_test, y_test[:, i], C=C),
            "knn": knn_accuracy(x_train, y_train[:, i], x_test, y_test[:, i], k=k),
        }
        if clustering:
            scores.update(clustering_agreement(x_test, y_test[:, i], seed=seed))
        per_factor[name] = scores
    if not per_factor:
        raise ValueError("every label column is constant over the train split: there is nothing to predict")
    keys = next(iter(per_factor.values())).keys()
    out = {key: float(np.mean([s[key] for s in per_factor.values()])) for key in keys}
    if n_factors > 1:
        out.update({f"{key}_{name}": s[key] for name, s in per_factor.items() for key in keys})
    return out


# --------------------------------------------------------------------------------------------------------------
# A model's code on a DataModule
# --------------------------------------------------------------------------------------------------------------


def _sample(images: Any, labels: Any, limit: int | None, rng: np.random.Generator) -> tuple[Any, Any]:
    """At most ``limit`` of the images and labels, drawn without replacement in their original order."""
    if limit is None or len(images) <= limit:
        return images, labels
    import torch

    kept = torch.from_numpy(np.sort(rng.choice(len(images), size=int(limit), replace=False)))
    return images[kept.to(images.device)], labels[kept.to(labels.device)]


def representation_scores(
    model: Any,
    datamodule: Any,
    split: str = "test",
    *,
    fit_split: str = "train",
    max_fit: int | None = None,
    max_score: int | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    **options: Any,
) -> dict[str, float]:
    """:func:`representation_metrics` of ``model``'s deterministic code (``embed(x)``, else ``encode(x)[0]``: μ, an
    AE's code; :func:`vaelab.metrics.factors.encode_means`) on ``datamodule``: fitted on ``fit_split`` (at most
    ``max_fit`` images, drawn with ``seed``) and scored on ``split`` (at most ``max_score``). Factor labels are
    named by the DataModule's ``factor_names`` when it has them. ``options`` go to :func:`representation_metrics`.
    """
    from vaelab.metrics.factors import encode_means

    for name, value in (("split", split), ("fit_split", fit_split)):
        if value not in ("train", "val", "test"):
            raise ValueError(f"{name} must be train, val or test, got {value!r}")
    if not datamodule.splits:
        datamodule.setup()
    rng = np.random.default_rng(seed)
    batch_size = int(batch_size or getattr(datamodule, "eval_batch_size", 1000))
    fit_images, fit_labels = _sample(*datamodule.splits[fit_split], max_fit, rng)
    score_images, score_labels = _sample(*datamodule.splits[split], max_score, rng)
    fit_codes = encode_means(model, fit_images, datamodule, batch_size, fit_labels)
    score_codes = encode_means(model, score_images, datamodule, batch_size, score_labels)
    if getattr(score_labels, "ndim", 1) == 2 and "factor_names" not in options:
        options["factor_names"] = getattr(datamodule, "factor_names", None)
    return representation_metrics(fit_codes, _to_numpy(fit_labels), score_codes, _to_numpy(score_labels), **options)
