"""Disentanglement metrics for codes of data whose ground-truth generative factors are known.

Pure functions on numpy arrays (torch tensors are accepted and copied to the CPU): ``codes`` is an ``(N, D)``
array of latent codes (for a VAE, the posterior means), ``factors`` an ``(N, F)`` array of integer factor indices
(any integer labels; each column is relabelled ``0..K-1`` internally). :func:`factor_vae_score` instead takes a
``represent`` callable, since it needs batches drawn with one factor held fixed.

Every score is in ``[0, 1]``, higher meaning more disentangled. Information is in nats.

Where the papers and disentanglement_lib (the library behind the large published studies, Locatello et al. 2019)
differ, both are offered, and :data:`PROTOCOLS` names the two sets of choices: ``disentanglement_lib`` (SAP from a
1-D linear SVM and plain accuracy, FactorVAE batches of 64 with dims pruned below a std of 0.05, DCI importances
from gradient-boosted trees) and ``vaelab`` (SAP from class-mean thresholds and balanced accuracy as Kumar et al.'s
paper describes it, FactorVAE batches of 32 pruned at 1e-6, DCI from a small random forest: what vaelab scored
before). MIG is disentanglement_lib's histogram estimate in both (Chen et al.'s own sampled estimator of I(z_j; v_k)
from q(z | x) is not implemented).

References:
    Chen, Li, Grosse & Duvenaud (2018), *Isolating Sources of Disentanglement in Variational Autoencoders*,
    NeurIPS (MIG).
    Kim & Mnih (2018), *Disentangling by Factorising*, ICML (FactorVAE score).
    Kumar, Sattigeri & Balakrishnan (2018), *Variational Inference of Disentangled Latent Concepts from Unlabeled
    Observations*, ICLR (SAP).
    Eastwood & Williams (2018), *A Framework for the Quantitative Evaluation of Disentangled Representations*,
    ICLR (DCI).
    Locatello et al. (2019), *Challenging Common Assumptions in the Unsupervised Learning of Disentangled
    Representations*, ICML (disentanglement_lib, whose protocol choices are followed where the papers leave them
    open).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "PROTOCOLS",
    "DisentanglementProtocol",
    "dci_from_importance",
    "dci_scores",
    "discrete_entropy",
    "discrete_mutual_information",
    "discretize",
    "factor_vae_details",
    "factor_vae_score",
    "get_protocol",
    "mutual_information_gap",
    "mutual_information_matrix",
    "sap_score",
    "sap_score_matrix",
]

RandomState = np.random.Generator | int


@dataclass(frozen=True)
class DisentanglementProtocol:
    """The choices a score's value depends on beyond its definition, named so a table can say which it follows.

    Attributes:
        name: ``disentanglement_lib`` or ``vaelab``.
        sap_classifier: ``svm`` (disentanglement_lib: ``LinearSVC(C=0.01, class_weight="balanced")`` on the raw
            1-D code, plain test accuracy) or ``threshold`` (Kumar et al. 2018, sec. 3: class-mean thresholds,
            balanced accuracy); see :func:`sap_score_matrix`.
        factor_vae: :func:`factor_vae_details` options (``batch_size``, ``prune_threshold``,
            ``n_variance_estimate``). The vote counts are left to the caller: they set the cost and the noise.
        dci_predictor: ``gradient_boosting`` (disentanglement_lib: scikit-learn's ``GradientBoostingClassifier``
            with its defaults) or ``forest`` (10 trees of depth 8); see :func:`dci_scores`.
        test_fraction: the part of the codes SAP and DCI score on (disentanglement_lib: 5,000 of 10,000 + 5,000).
    """

    name: str
    sap_classifier: str
    factor_vae: dict[str, Any] = field(default_factory=dict)
    dci_predictor: str = "forest"
    test_fraction: float = 0.5


#: the two protocols; ``disentanglement_lib`` is comparable with the published large studies (Locatello et al. 2019)
PROTOCOLS: dict[str, DisentanglementProtocol] = {
    "disentanglement_lib": DisentanglementProtocol(
        "disentanglement_lib", "svm", {"batch_size": 64, "prune_threshold": 0.05, "n_variance_estimate": 10_000},
        "gradient_boosting", 1 / 3,
    ),
    "vaelab": DisentanglementProtocol(
        "vaelab", "threshold", {"batch_size": 32, "prune_threshold": 1e-6, "n_variance_estimate": 2000}, "forest", 0.5,
    ),
}


def get_protocol(protocol: str | DisentanglementProtocol) -> DisentanglementProtocol:
    """The protocol named ``protocol`` (a :class:`DisentanglementProtocol` passes through), or a ValueError."""
    if isinstance(protocol, DisentanglementProtocol):
        return protocol
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown disentanglement protocol {protocol!r}: choose one of {', '.join(PROTOCOLS)}")
    return PROTOCOLS[protocol]


# --------------------------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------------------------


def _to_numpy(x: Any) -> np.ndarray:
    """``x`` as a numpy array; a torch tensor (any device) is detached and copied to the CPU."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _check_codes(codes: Any, name: str = "codes") -> np.ndarray:
    """``codes`` as a finite float64 ``(N, D)`` array with N >= 2 and D >= 1, or a ValueError saying what is wrong."""
    arr = _to_numpy(codes)
    if arr.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D array (samples, code dims), got shape {arr.shape}; "
            "reshape a single code dim with .reshape(-1, 1)"
        )
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}")
    n, d = arr.shape
    if n < 2:
        raise ValueError(f"{name} needs at least 2 samples, got {n}")
    if d < 1:
        raise ValueError(f"{name} needs at least 1 code dim, got shape {arr.shape}")
    arr = arr.astype(np.float64, copy=False)
    bad = ~np.isfinite(arr)
    if bad.any():
        dims = np.flatnonzero(bad.any(axis=0)).tolist()
        raise ValueError(f"{name} contain {int(bad.sum())} NaN or infinite values (in code dims {dims})")
    return arr


def _check_labels(labels: Any, name: str) -> np.ndarray:
    """An integer-valued array (ints, bools, or floats holding whole numbers) as int64, else a ValueError."""
    arr = _to_numpy(labels)
    if arr.dtype.kind in "biu":
        return arr.astype(np.int64, copy=False)
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all():
            raise ValueError(f"{name} must be integer indices, found NaN or infinite values")
        if not np.array_equal(arr, np.round(arr)):
            raise ValueError(f"{name} must be integer indices, found non-integer values")
        return arr.astype(np.int64)
    raise ValueError(f"{name} must be integer indices, got dtype {arr.dtype}")


def _check_factors(factors: Any, n: int) -> np.ndarray:
    """``factors`` as an int64 ``(n, F)`` array with each column relabelled to ``0..K-1``."""
    arr = _check_labels(factors, "factors")
    if arr.ndim != 2:
        raise ValueError(
            f"factors must be a 2-D array (samples, factors), got shape {arr.shape}; "
            "reshape a single factor with .reshape(-1, 1)"
        )
    if arr.shape[0] != n:
        raise ValueError(f"codes and factors must have the same number of samples, got {n} and {arr.shape[0]}")
    if arr.shape[1] < 1:
        raise ValueError(f"factors needs at least 1 factor, got shape {arr.shape}")
    out = np.empty_like(arr)
    for k in range(arr.shape[1]):
        out[:, k] = np.unique(arr[:, k], return_inverse=True)[1].reshape(-1)
    return out


def _check_positive_int(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_fraction(value: Any, name: str) -> float:
    if not isinstance(value, int | float | np.floating) or not 0.0 < float(value) < 1.0:
        raise ValueError(f"{name} must be a number strictly between 0 and 1, got {value!r}")
    return float(value)


def _rng(rng: RandomState) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, int | np.integer) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise ValueError(f"rng must be a numpy Generator or an integer seed, got {type(rng).__name__}")


def _split(n: int, test_fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A random train/test split of ``range(n)``, each part non-empty."""
    n_test = min(max(1, round(n * test_fraction)), n - 1)
    perm = rng.permutation(n)
    return perm[n_test:], perm[:n_test]


def _varying_factors(factors: np.ndarray) -> np.ndarray:
    """Indices of the factors that take more than one value; a ValueError if there are none."""
    varying = np.flatnonzero(factors.max(axis=0) > 0)  # columns are relabelled 0..K-1
    if varying.size == 0:
        raise ValueError(
            f"every factor is constant over the {factors.shape[0]} samples; the score needs a factor that varies"
        )
    return varying


def _top_two_gap(scores: np.ndarray, missing_runner_up: float | np.ndarray) -> np.ndarray:
    """Per column of a ``(D, F)`` score matrix, the best score minus the second best (``missing_runner_up`` if D==1)."""
    if scores.shape[0] == 1:
        return scores[0] - missing_runner_up
    top = np.sort(scores, axis=0)[::-1]
    return top[0] - top[1]


# --------------------------------------------------------------------------------------------------------------
# Discrete information
# --------------------------------------------------------------------------------------------------------------


def discretize(codes: Any, n_bins: int = 20) -> np.ndarray:
    """Each code dim cut into ``n_bins`` equal-width bins over its own range; ``(N, D)`` int64 bin indices.

    The histogram discretisation of disentanglement_lib (``np.histogram`` bin edges, the last bin closed on the
    right), used to estimate MI for MIG (Chen et al. 2018, sec. 4.1). A constant dim falls into bin 0.
    """
    codes = _check_codes(codes)
    n_bins = _check_positive_int(n_bins, "n_bins", minimum=2)
    lo = codes.min(axis=0)
    width = codes.max(axis=0) - lo
    safe = np.where(width > 0, width, 1.0)
    bins = np.floor((codes - lo) / safe * n_bins)
    return np.clip(bins, 0, n_bins - 1).astype(np.int64)


def _contingency(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The joint count table of two label vectors already relabelled to ``0..K-1``."""
    kx, ky = int(x.max()) + 1, int(y.max()) + 1
    return np.bincount(x * ky + y, minlength=kx * ky).reshape(kx, ky)


def _mi_from_counts(table: np.ndarray) -> float:
    """I(X; Y) in nats of the empirical joint distribution given by a count table."""
    n = table.sum()
    row = table.sum(axis=1, keepdims=True)
    col = table.sum(axis=0, keepdims=True)
    nz = table > 0
    outer = (row * col)[nz].astype(np.float64)
    counts = table[nz].astype(np.float64)
    mi = float(np.sum(counts / n * (np.log(counts) + math.log(n) - np.log(outer))))
    return max(mi, 0.0)


def _relabel(labels: np.ndarray) -> np.ndarray:
    return np.unique(labels, return_inverse=True)[1].reshape(-1)


def _check_label_vector(x: Any, name: str) -> np.ndarray:
    arr = _check_labels(x, name)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of labels, got shape {arr.shape}")
    if arr.size < 1:
        raise ValueError(f"{name} is empty")
    return _relabel(arr)


def discrete_entropy(x: Any) -> float:
    """The entropy H(X) in nats of the empirical distribution of the integer labels ``x`` (1-D)."""
    x = _check_label_vector(x, "x")
    p = np.bincount(x) / x.size
    p = p[p > 0]
    return max(float(-np.sum(p * np.log(p))), 0.0)


def discrete_mutual_information(x: Any, y: Any) -> float:
    """The mutual information I(X; Y) in nats of the empirical joint distribution of two label vectors.

    I(X; Y) = Σ_ij p_ij log(p_ij / (p_i p_j)) with p the relative counts (the plug-in estimate, as sklearn's
    ``mutual_info_score``).
    """
    x = _check_label_vector(x, "x")
    y = _check_label_vector(y, "y")
    if x.size != y.size:
        raise ValueError(f"x and y must have the same length, got {x.size} and {y.size}")
    return _mi_from_counts(_contingency(x, y))


def mutual_information_matrix(codes: Any, factors: Any, n_bins: int = 20, *, normalize: bool = False) -> np.ndarray:
    """The ``(D, F)`` matrix of I(z_j; v_k) in nats between each discretised code dim and each factor.

    Each code dim is cut into ``n_bins`` equal-width bins (:func:`discretize`) and the plug-in discrete MI is
    taken against the factor's integer index (Chen et al. 2018, sec. 4.1, with the histogram estimate of
    disentanglement_lib). With ``normalize=True`` each column is divided by the factor entropy H(v_k), giving
    values in [0, 1] (I(z; v) <= H(v)); the column of a constant factor (H = 0) is then NaN.
    """
    codes = _check_codes(codes)
    factors = _check_factors(factors, codes.shape[0])
    binned = discretize(codes, n_bins)
    d, f = codes.shape[1], factors.shape[1]
    binned = np.stack([_relabel(binned[:, j]) for j in range(d)], axis=1)
    mi = np.array([[_mi_from_counts(_contingency(binned[:, j], factors[:, k])) for k in range(f)] for j in range(d)])
    if normalize:
        entropy = np.array([discrete_entropy(factors[:, k]) for k in range(f)])
        with np.errstate(divide="ignore", invalid="ignore"):
            mi = np.where(entropy > 0, mi / np.where(entropy > 0, entropy, 1.0), np.nan)
    return mi


def mutual_information_gap(codes: Any, factors: Any, n_bins: int = 20) -> float:
    """The mutual information gap (MIG) of ``codes`` with respect to the ground-truth ``factors``.

    Chen et al. (2018), eq. 6 (sec. 4.1): MIG = (1/K) Σ_k [I(z_{j(k)}; v_k) − I(z_{j'(k)}; v_k)] / H(v_k), where
    j(k) and j'(k) are the code dims with the largest and second-largest MI with factor k, i.e. the gap is taken
    over latents for each factor, then averaged over factors. MI is estimated from ``n_bins`` equal-width bins per
    code dim (:func:`mutual_information_matrix`).

    Rules:
        * A constant factor (H(v_k) = 0) has no information to capture and is left out of the average; if every
          factor is constant a ValueError is raised.
        * With a single code dim (D = 1) there is no runner-up, and its MI is taken as 0: the gap is the single
          dim's normalised MI, the value the score has once a constant (uninformative) dim is appended.

    Args:
        codes: ``(N, D)`` float array (e.g. posterior means); NaN or infinite values raise a ValueError.
        factors: ``(N, F)`` integer factor indices.
        n_bins: number of equal-width bins per code dim (>= 2).
    """
    codes = _check_codes(codes)
    factors = _check_factors(factors, codes.shape[0])
    varying = _varying_factors(factors)
    normalized = mutual_information_matrix(codes, factors[:, varying], n_bins, normalize=True)
    return float(np.mean(_top_two_gap(normalized, missing_runner_up=0.0)))


# --------------------------------------------------------------------------------------------------------------
# FactorVAE score
# --------------------------------------------------------------------------------------------------------------


def _check_factor_sizes(factor_sizes: Any) -> np.ndarray:
    sizes = _to_numpy(factor_sizes)
    if sizes.ndim != 1 or sizes.size < 1:
        raise ValueError(f"factor_sizes must be a non-empty list of ints, got {factor_sizes!r}")
    if sizes.dtype.kind not in "iu" or (sizes < 1).any():
        raise ValueError(f"factor_sizes must be integers >= 1 (values per factor), got {factor_sizes!r}")
    if (sizes < 2).all():
        raise ValueError(f"factor_sizes {sizes.tolist()}: every factor has a single value; at least one must vary")
    return sizes.astype(np.int64)


def _represent_checked(represent: Callable[[np.ndarray], Any], factors: np.ndarray, dim: int | None) -> np.ndarray:
    out = _to_numpy(represent(factors))
    if out.ndim != 2 or out.shape[0] != factors.shape[0]:
        raise ValueError(
            f"represent must map an (n, F) array of factor indices to an (n, D) array of codes; "
            f"for n = {factors.shape[0]} it returned shape {out.shape}"
        )
    if dim is not None and out.shape[1] != dim:
        raise ValueError(f"represent returned {out.shape[1]} code dims after returning {dim} before")
    if out.dtype.kind not in "biuf":
        raise ValueError(f"represent must return numeric codes, got dtype {out.dtype}")
    out = out.astype(np.float64, copy=False)
    if not np.isfinite(out).all():
        raise ValueError("represent returned NaN or infinite codes")
    return out


def factor_vae_details(
    represent: Callable[[np.ndarray], Any],
    factor_sizes: Sequence[int],
    rng: RandomState,
    n_train_votes: int = 10_000,
    n_eval_votes: int = 5_000,
    batch_size: int = 64,
    n_variance_estimate: int = 10_000,
    *,
    prune_threshold: float = 1e-6,
    max_rows_per_call: int = 8192,
) -> dict[str, Any]:
    """The FactorVAE score with the classifier's votes and accuracies; see :func:`factor_vae_score`.

    Returns a dict with ``score`` (= ``eval_accuracy``), ``train_accuracy``, ``eval_accuracy``, ``active_dims``
    (the code dims kept after pruning, as indices into the code), ``votes`` (a ``(D, F)`` int array: how often
    each dim had the lowest normalised variance when each factor was held fixed, over the training votes) and
    ``classifier`` (a length-D int array, the factor each dim votes for).
    """
    if not callable(represent):
        raise ValueError(f"represent must be callable, got {type(represent).__name__}")
    sizes = _check_factor_sizes(factor_sizes)
    rng = _rng(rng)
    n_train_votes = _check_positive_int(n_train_votes, "n_train_votes")
    n_eval_votes = _check_positive_int(n_eval_votes, "n_eval_votes")
    batch_size = _check_positive_int(batch_size, "batch_size", minimum=2)
    n_variance_estimate = _check_positive_int(n_variance_estimate, "n_variance_estimate", minimum=2)
    max_rows_per_call = _check_positive_int(max_rows_per_call, "max_rows_per_call")
    if not prune_threshold >= 0:
        raise ValueError(f"prune_threshold must be >= 0, got {prune_threshold!r}")
    n_factors = sizes.size
    varying = np.flatnonzero(sizes > 1)

    # Scale of each dim over the data, from uniformly drawn factor combinations.
    sample = rng.integers(0, sizes, size=(n_variance_estimate, n_factors))
    codes = _represent_checked(represent, sample, None)
    dim = codes.shape[1]
    global_var = codes.var(axis=0, ddof=1)
    active = np.flatnonzero(np.sqrt(global_var) > prune_threshold)
    if active.size == 0:
        raise ValueError(
            f"every one of the {dim} code dims is collapsed (std over the data <= prune_threshold={prune_threshold})"
        )

    def votes(n_votes: int) -> tuple[np.ndarray, np.ndarray]:
        """(fixed factor, winning dim) for ``n_votes`` batches."""
        fixed = rng.choice(varying, size=n_votes)
        values = rng.integers(0, sizes[fixed])
        winners = np.empty(n_votes, dtype=np.int64)
        per_call = max(1, max_rows_per_call // batch_size)
        for start in range(0, n_votes, per_call):
            stop = min(start + per_call, n_votes)
            m = stop - start
            batch = rng.integers(0, sizes, size=(m, batch_size, n_factors))
            batch[np.arange(m), :, fixed[start:stop]] = values[start:stop, None]
            z = _represent_checked(represent, batch.reshape(m * batch_size, n_factors), dim)
            z = z.reshape(m, batch_size, dim)[:, :, active]
            local_var = z.var(axis=1, ddof=1)
            winners[start:stop] = active[np.argmin(local_var / global_var[active], axis=1)]
        return fixed, winners

    train_factor, train_dim = votes(n_train_votes)
    eval_factor, eval_dim = votes(n_eval_votes)
    table = np.zeros((dim, n_factors), dtype=np.int64)
    np.add.at(table, (train_dim, train_factor), 1)
    classifier = np.argmax(table, axis=1)
    train_accuracy = float(table.max(axis=1).sum() / n_train_votes)
    eval_accuracy = float(np.mean(classifier[eval_dim] == eval_factor))
    return {
        "score": eval_accuracy,
        "train_accuracy": train_accuracy,
        "eval_accuracy": eval_accuracy,
        "active_dims": active.tolist(),
        "votes": table,
        "classifier": classifier,
    }


def factor_vae_score(
    represent: Callable[[np.ndarray], Any], factor_sizes: Sequence[int], rng: RandomState, **options: Any
) -> float:
    """The FactorVAE disentanglement score: accuracy of a majority-vote classifier from code dim to factor.
    ``options`` are :func:`factor_vae_details`'s keyword arguments (vote counts, batch size, pruning threshold).

    Kim & Mnih (2018), sec. 4: each code dim is divided by its standard deviation over ``n_variance_estimate``
    codes of uniformly drawn factor combinations, and dims whose std is at most ``prune_threshold`` (collapsed)
    are pruned. A vote draws a factor k (uniformly among the factors with more than one value) and a batch of
    ``batch_size`` factor combinations with factor k held at one random value and the others uniform, and records
    (k, the dim with the lowest variance over the normalised batch). A majority-vote classifier maps each dim to
    the factor it was most often the argmin for (ties and dims never voted for go to the lowest factor index),
    fitted on ``n_train_votes`` votes; the score is its accuracy on ``n_eval_votes`` fresh votes. Vote counts
    default to those of disentanglement_lib. Chance level for a code unrelated to the factors is 1/K for K
    varying factors.

    ``represent`` maps an ``(n, F)`` int array of factor indices to ``(n, D)`` codes (for image data: render the
    images and encode them; numpy or torch output). It is called with up to ``max_rows_per_call`` rows at a time
    (several votes' batches stacked), and must treat rows independently.

    ``prune_threshold`` is an absolute std, so the score is invariant to rescaling a dim unless the new scale
    brings it to or below the threshold.
    """
    return factor_vae_details(represent, factor_sizes, rng, **options)["score"]


# --------------------------------------------------------------------------------------------------------------
# SAP
# --------------------------------------------------------------------------------------------------------------


def _balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean over the classes present in ``y_true`` of the fraction of that class predicted correctly."""
    classes = np.unique(y_true)
    return float(np.mean([np.mean(y_pred[y_true == c] == c) for c in classes]))


SAP_CLASSIFIERS = ("svm", "threshold")


def _sap_threshold_scores(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
                          n_classes: int) -> float:
    """Balanced test accuracy of the nearest-class-mean (midpoint threshold) classifier on one code dim."""
    counts = np.bincount(y_train, minlength=n_classes)
    seen = np.flatnonzero(counts > 0)
    means = np.bincount(y_train, weights=x_train, minlength=n_classes)[seen] / counts[seen]
    pred = seen[np.argmin(np.abs(x_test[:, None] - means[None, :]), axis=1)]
    return _balanced_accuracy(y_test, pred)


def _sap_svm_scores(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray) -> float:
    """Plain test accuracy of disentanglement_lib's ``LinearSVC(C=0.01, class_weight="balanced")`` on one code dim."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.svm import LinearSVC

    if np.unique(y_train).size < 2:  # a single train class: it is predicted everywhere
        return float(np.mean(y_test == y_train[0]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        svm = LinearSVC(C=0.01, class_weight="balanced").fit(x_train[:, None], y_train)
    return float(np.mean(svm.predict(x_test[:, None]) == y_test))


def sap_score_matrix(
    codes: Any,
    factors: Any,
    *,
    test_fraction: float = 0.5,
    rng: RandomState = 0,
    classifier: str = "threshold",
) -> np.ndarray:
    """The ``(D, F)`` SAP score matrix: how well factor k is predicted from code dim j alone, on held-out codes.

    Kumar et al. (2018), sec. 3, for discrete factors: for each (j, k) a classifier of v_k from the single input
    z_j is fitted on a random train part of the samples and scored on the rest (``test_fraction``). The paper
    leaves the classifier open; two are offered (see :data:`PROTOCOLS`):

    * ``threshold``: z_j is assigned to the factor value whose train mean of z_j is nearest, i.e. the thresholds
      are the midpoints between adjacent class means (for K values up to K − 1 thresholds, so a dim that orders the
      values separates all of them), scored by balanced accuracy (mean per-class recall over the classes in the
      test part): chance is 1/K whatever the class frequencies. Invariant to rescaling a dim.
    * ``svm``: disentanglement_lib's ``LinearSVC(C=0.01, class_weight="balanced")`` on the raw z_j, one-vs-rest,
      scored by plain accuracy. In one dimension a one-vs-rest linear classifier can only pick out the values at
      the two ends of the axis, so a dim that orders K > 2 values scores well below 1; and the small C penalises
      the weight (and liblinear's intercept) on the raw scale, so the score changes when a dim is rescaled.

    A value missing from the train part is never predicted.
    """
    codes = _check_codes(codes)
    factors = _check_factors(factors, codes.shape[0])
    test_fraction = _check_fraction(test_fraction, "test_fraction")
    if classifier not in SAP_CLASSIFIERS:
        raise ValueError(f"classifier must be one of {', '.join(SAP_CLASSIFIERS)}, got {classifier!r}")
    train, test = _split(codes.shape[0], test_fraction, _rng(rng))
    d, f = codes.shape[1], factors.shape[1]
    scores = np.zeros((d, f))
    for k in range(f):
        y_train, y_test = factors[train, k], factors[test, k]
        n_classes = int(factors[:, k].max()) + 1
        for j in range(d):
            if classifier == "threshold":
                scores[j, k] = _sap_threshold_scores(codes[train, j], y_train, codes[test, j], y_test, n_classes)
            else:
                scores[j, k] = _sap_svm_scores(codes[train, j], y_train, codes[test, j], y_test)
    return scores


def sap_score(
    codes: Any,
    factors: Any,
    *,
    test_fraction: float = 0.5,
    rng: RandomState = 0,
    classifier: str = "threshold",
) -> float:
    """The Separated Attribute Predictability (SAP) score of ``codes`` with respect to the discrete ``factors``.

    Kumar et al. (2018), sec. 3: from the ``(D, F)`` matrix of how well each code dim alone predicts each factor
    (:func:`sap_score_matrix`, with its ``classifier``), SAP is the mean over factors of the difference between the
    top two dims' scores. With ``threshold`` a perfect axis-aligned code therefore scores about 1 − 1/K (the
    runner-up dim predicts at chance, 1/K, for a factor with K values), not 1; with ``svm`` far less (docs/metrics.md
    gives the values measured).

    Rules:
        * Constant factors are left out of the mean; a ValueError is raised if every factor is constant.
        * With a single code dim there is no runner-up; the gap is taken against an appended constant dim, which
          predicts one value for every sample (balanced accuracy 1/K when every value appears in the test part).
    """
    codes = _check_codes(codes)
    factors = _check_factors(factors, codes.shape[0])
    varying = _varying_factors(factors)
    if codes.shape[1] == 1:
        codes = np.concatenate([codes, np.zeros_like(codes)], axis=1)
    scores = sap_score_matrix(codes, factors[:, varying], test_fraction=test_fraction, rng=rng, classifier=classifier)
    return float(np.mean(_top_two_gap(scores, missing_runner_up=0.0)))


# --------------------------------------------------------------------------------------------------------------
# DCI
# --------------------------------------------------------------------------------------------------------------


def _one_minus_entropy(p: np.ndarray, axis: int, base: int) -> np.ndarray:
    """1 − H(p) along ``axis`` in log base ``base`` (rows/columns of ``p`` sum to 1)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    return 1.0 + terms.sum(axis=axis) / math.log(base)


DCI_PREDICTORS = ("forest", "gradient_boosting")


def dci_from_importance(importance: Any) -> dict[str, float]:
    """DCI disentanglement and completeness of a ``(D, F)`` importance matrix R (R_jk >= 0: how much code dim j
    matters for predicting factor k).

    Eastwood & Williams (2018), sec. 3, with P_jk = R_jk / Σ_k' R_jk' (each dim's row normalised to sum to 1):

    * disentanglement D = Σ_j ρ_j (1 − H_F(P_j·)), the entropy in log base F (the number of factors) and the
      weights ρ_j = Σ_k R_jk / Σ R (eq. 1–2); dims with no importance get weight 0;
    * completeness C = Σ_k ρ̃_k (1 − H_D(P̃_·k)) with P̃_jk = R_jk / Σ_j' R_j'k, the entropy in log base D (the
      number of code dims) and weights ρ̃_k = Σ_j R_jk / Σ R (eq. 3; the weighting of disentanglement_lib).

    With one factor, disentanglement is 1; with one code dim, completeness is 1; if no dim has any importance,
    both are 0.
    """
    importance = _to_numpy(importance).astype(np.float64)
    if importance.ndim != 2 or importance.size == 0:
        raise ValueError(f"importance must be a non-empty (D, F) matrix, got shape {importance.shape}")
    if not np.isfinite(importance).all() or (importance < 0).any():
        raise ValueError("importance must be finite and non-negative")
    d, f = importance.shape
    total = importance.sum()
    if total <= 0:
        return {"disentanglement": 0.0, "completeness": 0.0}
    per_dim = importance.sum(axis=1)
    per_factor = importance.sum(axis=0)
    if f == 1:
        disentanglement = 1.0
    else:
        used = per_dim > 0
        p = importance[used] / per_dim[used, None]
        disentanglement = float(np.sum(per_dim[used] / total * _one_minus_entropy(p, axis=1, base=f)))
    if d == 1:
        completeness = 1.0
    else:
        used = per_factor > 0
        p = importance[:, used] / per_factor[None, used]
        completeness = float(np.sum(per_factor[used] / total * _one_minus_entropy(p, axis=0, base=d)))
    return {"disentanglement": disentanglement, "completeness": completeness}


def _predictor(name: str, n_estimators: int, max_depth: int | None) -> Any:
    if name == "forest":
        from sklearn.ensemble import RandomForestClassifier

        return RandomForestClassifier(
            n_estimators=n_estimators, max_depth=max_depth, max_features=None, random_state=0, n_jobs=1
        )
    from sklearn.ensemble import GradientBoostingClassifier

    return GradientBoostingClassifier(random_state=0)


def dci_scores(
    codes: Any,
    factors: Any,
    *,
    test_fraction: float = 0.5,
    rng: RandomState = 0,
    predictor: str = "forest",
    n_estimators: int = 10,
    max_depth: int | None = 8,
) -> dict[str, Any]:
    """DCI disentanglement, completeness and informativeness of ``codes`` with respect to the discrete ``factors``.

    Eastwood & Williams (2018), sec. 3–4: for each factor k a classifier of v_k from the whole code is fitted on a
    random train part; R_jk is the importance of code dim j for factor k, its impurity-based feature importance
    (the paper uses lasso or random-forest regressors). ``predictor`` is ``forest`` (a small random forest,
    ``n_estimators`` trees of depth at most ``max_depth``) or ``gradient_boosting`` (disentanglement_lib's
    ``GradientBoostingClassifier`` with scikit-learn's defaults: 100 stages of depth-3 trees; far slower).
    Disentanglement and completeness follow from R (:func:`dci_from_importance`); informativeness is the mean over
    factors of the classifier's test accuracy (the paper reports the error, 1 − this).

    Constant factors are left out (ValueError if none remain).

    Returns a dict with ``disentanglement``, ``completeness``, ``informativeness`` and ``importance`` (the ``(D,
    F')`` matrix R over the F' varying factors, each column summing to 1 or all zero).
    """
    codes = _check_codes(codes)
    factors = _check_factors(factors, codes.shape[0])
    factors = factors[:, _varying_factors(factors)]
    test_fraction = _check_fraction(test_fraction, "test_fraction")
    if predictor not in DCI_PREDICTORS:
        raise ValueError(f"predictor must be one of {', '.join(DCI_PREDICTORS)}, got {predictor!r}")
    n_estimators = _check_positive_int(n_estimators, "n_estimators")
    if max_depth is not None:
        max_depth = _check_positive_int(max_depth, "max_depth")
    train, test = _split(codes.shape[0], test_fraction, _rng(rng))
    d, f = codes.shape[1], factors.shape[1]
    importance = np.zeros((d, f))
    accuracy = np.zeros(f)
    for k in range(f):
        model = _predictor(predictor, n_estimators, max_depth)
        model.fit(codes[train], factors[train, k])
        importance[:, k] = np.abs(model.feature_importances_)
        accuracy[k] = float(np.mean(model.predict(codes[test]) == factors[test, k]))
    return {**dci_from_importance(importance), "informativeness": float(np.mean(accuracy)), "importance": importance}
