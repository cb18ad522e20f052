"""Property tests of vaelab.metrics.representation: known values (a one-hot code of the label scores 1), chance
levels with tolerances computed from the sample size, the invariances each score claims, and tests written to fail
on a plausible wrong version (their docstrings name it)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score
from torch import nn

from vaelab.metrics.representation import (
    clustering_agreement,
    knn_accuracy,
    linear_probe_accuracy,
    representation_metrics,
    representation_scores,
)

K = 10


def balanced_labels(n: int, seed: int, k: int = K) -> np.ndarray:
    return np.random.default_rng(seed).permutation(np.arange(n) % k)


def one_hot(labels: np.ndarray, k: int = K) -> np.ndarray:
    return np.eye(k)[labels]


def chance_tolerance(n_test: int, k: int = K, sds: float = 4.0) -> float:
    """``sds`` binomial standard deviations of an accuracy on n_test points whose predictions are independent of
    balanced labels (the accuracy is then Binomial(n_test, 1/k) / n_test)."""
    p = 1.0 / k
    return sds * math.sqrt(p * (1 - p) / n_test)


def blobs(n: int, seed: int, spread: float = 0.3, d: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Labels and a code that separates them well but not perfectly: class means on a random simplex plus noise."""
    rng = np.random.default_rng(seed)
    labels = balanced_labels(n, seed)
    centres = np.random.default_rng(99).standard_normal((K, d))
    return centres[labels] + spread * rng.standard_normal((n, d)), labels


# ---------------------------------------------------------------------------------------------------------------
# Known values
# ---------------------------------------------------------------------------------------------------------------


def test_a_one_hot_code_of_the_label_scores_one_everywhere():
    y_train, y_test = balanced_labels(500, 0), balanced_labels(300, 1)
    z_train, z_test = one_hot(y_train), one_hot(y_test)
    assert linear_probe_accuracy(z_train, y_train, z_test, y_test) == 1.0
    assert knn_accuracy(z_train, y_train, z_test, y_test) == 1.0
    assert clustering_agreement(z_test, y_test) == {"nmi": pytest.approx(1.0), "ari": pytest.approx(1.0)}
    # torch tensors work the same, and the label names do not matter
    names = np.array([7, 3, 9, 0, 1, 2, 4, 5, 6, 8])
    assert knn_accuracy(torch.from_numpy(z_train), torch.from_numpy(names[y_train]), z_test, names[y_test]) == 1.0
    assert clustering_agreement(z_test, names[y_test])["ari"] == pytest.approx(1.0)


def test_the_scores_separate_a_good_code_from_a_poorer_one():
    good_train, y_train = blobs(1000, 0, spread=0.3)
    good_test, y_test = blobs(1000, 1, spread=0.3)
    poor_train, _ = blobs(1000, 0, spread=1.5)
    poor_test, _ = blobs(1000, 1, spread=1.5)
    for score in (linear_probe_accuracy, knn_accuracy):
        assert score(good_train, y_train, good_test, y_test) > score(poor_train, y_train, poor_test, y_test) + 0.1
    assert clustering_agreement(good_test, y_test)["nmi"] > clustering_agreement(poor_test, y_test)["nmi"] + 0.1


# ---------------------------------------------------------------------------------------------------------------
# Chance levels
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("score", [linear_probe_accuracy, knn_accuracy], ids=["linear_probe", "knn"])
def test_a_code_independent_of_the_labels_scores_chance_on_the_test_split(score):
    """Catches scoring on the fit split: 600 train codes of 200 random dims are memorised (k-NN with k = 1 finds
    each train point itself, the probe separates them almost perfectly), so a fit-split score would be near 1,
    far above chance 1/K."""
    rng = np.random.default_rng(0)
    n_train, n_test = 600, 2000
    y_train, y_test = balanced_labels(n_train, 1), balanced_labels(n_test, 2)
    z_train, z_test = rng.standard_normal((n_train, 200)), rng.standard_normal((n_test, 200))
    options = {"k": 1} if score is knn_accuracy else {}
    accuracy = score(z_train, y_train, z_test, y_test, **options)
    assert accuracy == pytest.approx(1 / K, abs=chance_tolerance(n_test))


def test_k_means_of_a_code_independent_of_the_labels_agrees_at_chance():
    """ARI within 4 sd of its null distribution (the same clusters against 100 shuffles of the labels); NMI within
    3× the plug-in bias of the MI of two independent K-way partitions, (K − 1)² / (2N) nats, over log K."""
    n = 2000
    rng = np.random.default_rng(3)
    codes, labels = rng.standard_normal((n, 8)), balanced_labels(n, 4)
    scores = clustering_agreement(codes, labels)
    from sklearn.cluster import KMeans

    clusters = KMeans(n_clusters=K, n_init=4, random_state=0).fit_predict(codes)
    null = [adjusted_rand_score(rng.permutation(labels), clusters) for _ in range(100)]
    assert abs(scores["ari"] - np.mean(null)) < 4 * np.std(null)
    assert 0 <= scores["nmi"] < 3 * (K - 1) ** 2 / (2 * n) / math.log(K)


# ---------------------------------------------------------------------------------------------------------------
# Invariances, and what each score does not claim
# ---------------------------------------------------------------------------------------------------------------

SCALES = np.array([1e-3, 250.0, -0.02, 7.0])
SHIFTS = np.array([40.0, -3.0, 0.5, 1e3])


def test_the_linear_probe_is_invariant_to_rescaling_and_shifting_code_dims():
    """Catches a probe on the raw code: scaling an informative dim by 1e-3 makes the weight it needs 1000 times
    larger, which the L2 penalty then suppresses (the accuracy drops by about 0.2 here)."""
    z_train, y_train = blobs(1500, 5, spread=0.5)
    z_test, y_test = blobs(1500, 6, spread=0.5)
    base = linear_probe_accuracy(z_train, y_train, z_test, y_test, C=0.01)
    scaled = linear_probe_accuracy(z_train * SCALES + SHIFTS, y_train, z_test * SCALES + SHIFTS, y_test, C=0.01)
    assert scaled == pytest.approx(base, abs=1.5 / len(y_test))  # the same predictions, up to a knife edge


def rotation(d: int, seed: int) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, d)))
    return q * np.sign(np.diag(r))


def test_knn_and_k_means_are_invariant_to_a_global_scale_a_shift_and_a_rotation():
    z_train, y_train = blobs(1000, 7, spread=0.8)
    z_test, y_test = blobs(800, 8, spread=0.8)
    q = rotation(4, 9)

    def move(z):
        return 3.7 * z @ q.T + 12.0

    assert knn_accuracy(move(z_train), y_train, move(z_test), y_test) == knn_accuracy(z_train, y_train, z_test, y_test)
    moved, base = clustering_agreement(move(z_test), y_test), clustering_agreement(z_test, y_test)
    assert moved == pytest.approx(base, abs=1e-12)


def test_knn_and_k_means_do_not_blow_up_inactive_dims():
    """Catches standardising the code for k-NN or k-means: 12 inactive dims (a collapsed VAE unit's μ: tiny noise
    around 0) next to 4 informative ones change nothing on the raw code; standardised, their noise would dominate
    the distances and pull both scores most of the way to chance."""
    z_train, y_train = blobs(1000, 10)
    z_test, y_test = blobs(1000, 11)
    rng = np.random.default_rng(12)

    def pad(z):
        return np.concatenate([z, 1e-3 * rng.standard_normal((len(z), 12))], axis=1)

    base_knn = knn_accuracy(z_train, y_train, z_test, y_test)
    assert base_knn > 0.9
    assert knn_accuracy(pad(z_train), y_train, pad(z_test), y_test) == pytest.approx(base_knn, abs=0.01)
    base_nmi = clustering_agreement(z_test, y_test)["nmi"]
    assert clustering_agreement(pad(z_test), y_test)["nmi"] == pytest.approx(base_nmi, abs=0.01)


# ---------------------------------------------------------------------------------------------------------------
# Per factor
# ---------------------------------------------------------------------------------------------------------------


def test_factors_are_scored_one_by_one_and_averaged():
    """A code that is the one-hot of factor 0 and says nothing of factor 1: 1 on factor 0, chance (1/4) on factor
    1, their mean on the plain key; a constant factor is left out of the mean."""
    n = 2000
    rng = np.random.default_rng(13)
    factors = np.stack([balanced_labels(n, 14), rng.integers(0, 4, n), np.zeros(n, dtype=int)], axis=1)
    codes = one_hot(factors[:, 0])
    train, test = slice(0, 1000), slice(1000, None)
    out = representation_metrics(codes[train], factors[train], codes[test], factors[test],
                                 factor_names=["digit", "style", "constant"], clustering=True)
    assert out["linear_probe_digit"] == 1.0 and out["knn_digit"] == 1.0 and out["ari_digit"] == pytest.approx(1.0)
    assert out["linear_probe_style"] == pytest.approx(0.25, abs=4 * math.sqrt(0.25 * 0.75 / 1000))
    assert out["linear_probe"] == pytest.approx((1.0 + out["linear_probe_style"]) / 2, abs=1e-12)
    assert "linear_probe_constant" not in out
    assert set(out) == {f"{s}{suffix}" for s in ("linear_probe", "knn", "nmi", "ari")
                        for suffix in ("", "_digit", "_style")}
    # one label column: the four plain keys only
    single = representation_metrics(codes[train], factors[train, 0], codes[test], factors[test, 0], clustering=False)
    assert single == {"linear_probe": 1.0, "knn": 1.0}


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: knn_accuracy(np.full((4, 2), np.nan), [0, 1, 0, 1], np.zeros((2, 2)), [0, 1]), "NaN"),
        (lambda: knn_accuracy(np.zeros((4, 2)), [0, 1, 0], np.zeros((2, 2)), [0, 1]), "same number of samples"),
        (lambda: knn_accuracy(np.zeros((4, 2)), [0, 1, 0, 1], np.zeros((2, 3)), [0, 1]), "differ in width"),
        (lambda: knn_accuracy(np.zeros((4, 2)), [0, 1, 0, 1], np.zeros((2, 2)), [0, 1], k=5), "k must be"),
        (lambda: linear_probe_accuracy(np.zeros((4, 2)), [0.5, 1, 0, 1], np.zeros((2, 2)), [0, 1]), "integer"),
        (lambda: linear_probe_accuracy(np.zeros(4), [0, 1, 0, 1], np.zeros((2, 2)), [0, 1]), "2-D"),
        (lambda: linear_probe_accuracy(np.zeros((4, 2)), np.zeros((4, 2), int), np.zeros((2, 2)),
                                       np.zeros((2, 2), int)), "representation_metrics"),
        (lambda: clustering_agreement(np.zeros((4, 2)), [0, 1, 0, 1], n_clusters=9), "n_clusters"),
        (lambda: representation_metrics(np.zeros((4, 2)), np.zeros((4, 2), int), np.zeros((2, 2)),
                                        np.zeros((2, 2), int)), "nothing to predict"),
    ],
)
def test_bad_input_gets_one_clear_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ---------------------------------------------------------------------------------------------------------------
# A model's code on a DataModule
# ---------------------------------------------------------------------------------------------------------------


class LabelImages:
    """A stand-in DataModule: an "image" is a uint8 row (one-hot label…, split id) shaped ``(N, 1, 1, K + 1)``."""

    eval_batch_size = 128

    def __init__(self) -> None:
        self.splits = {}
        for sid, (split, n) in enumerate([("train", 400), ("val", 100), ("test", 300)]):
            labels = balanced_labels(n, sid)
            rows = np.concatenate([one_hot(labels), np.full((n, 1), sid)], axis=1).astype(np.uint8)
            self.splits[split] = (torch.from_numpy(rows).reshape(n, 1, 1, -1), torch.from_numpy(labels))
        self.asked: list[str] = []

    def setup(self) -> None:
        pass

    def convert(self, images: torch.Tensor) -> torch.Tensor:
        return images.float()


class Spy(dict):
    def __init__(self, owner, *args):
        super().__init__(*args)
        self.owner = owner

    def __getitem__(self, key):
        self.owner.asked.append(key)
        return super().__getitem__(key)


class EmbedModel(nn.Module):
    """embed(x) is the one-hot label; encode(x) is a constant (what a model without embed would be scored on)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.seen: set[int] = set()

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(len(x), -1)
        self.seen.update(int(i) for i in rows[:, -1].unique())
        return rows[:, :-1]

    def encode(self, x: torch.Tensor):
        return torch.zeros(len(x), 3), None


@pytest.mark.parametrize(("split", "fit_split"), [("test", "train"), ("val", "train"), ("test", "val")])
def test_a_models_code_is_fitted_and_scored_on_the_splits_asked_for(split, fit_split):
    """Catches fitting or scoring on another split than asked (a spy on the splits and on the images encoded), and
    scoring encode(x)[0] where the model has embed (here a constant: chance, not 1)."""
    data, model = LabelImages(), EmbedModel()
    data.splits = Spy(data, data.splits)
    out = representation_scores(model, data, split, fit_split=fit_split, max_fit=150, clustering=False)
    assert out == {"linear_probe": 1.0, "knn": 1.0}
    assert sorted(data.asked) == sorted([split, fit_split])
    assert model.seen == {["train", "val", "test"].index(s) for s in (split, fit_split)}
    with pytest.raises(ValueError, match="split must be"):
        representation_scores(model, data, "validation")
