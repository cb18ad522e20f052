"""Property tests of vaelab.metrics.disentanglement on codes built directly from known factors.

The codes are made from 4 factors with 5, 6, 8 and 10 values (N = 4000 samples):

* axis-aligned: each factor, standardised and shifted/scaled, copied into its own dim plus N(0, 0.05²) noise;
* rotated: the axis-aligned code times an orthogonal matrix, either the 4×4 Hadamard matrix / 2 (every dim mixes
  every factor with weight ±1/2, the most even mixing there is) or a seeded random orthogonal matrix;
* random: standard normal codes independent of the factors.

Several tests are there to catch a specific plausible mistake; their docstrings say which.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import mutual_info_score

from vaelab.metrics.disentanglement import (
    dci_scores,
    discrete_entropy,
    discrete_mutual_information,
    discretize,
    factor_vae_details,
    factor_vae_score,
    mutual_information_gap,
    mutual_information_matrix,
    sap_score,
    sap_score_matrix,
)

SIZES = (5, 6, 8, 10)
N = 4000
NOISE = 0.05
HADAMARD = np.array([[1, 1, 1, 1], [1, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]]) / 2.0
# Per-dim rescalings (signs flip some dims) and shifts, and a permutation of the 4 dims.
SCALES = np.array([-3.0, 0.5, -0.01, 70.0])
SHIFTS = np.array([5.0, -2.0, 100.0, 0.3])
PERM = np.array([2, 0, 3, 1])
# Few votes keep the FactorVAE tests fast; the eval accuracy's standard error is then at most 0.016.
VOTES = {"n_train_votes": 1000, "n_eval_votes": 1000, "batch_size": 64, "n_variance_estimate": 5000}


def random_orthogonal(d: int, seed: int) -> np.ndarray:
    """A Haar-distributed orthogonal matrix (QR of a Gaussian matrix with the signs of R's diagonal fixed)."""
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, d)))
    return q * np.sign(np.diag(r))


ROTATION = random_orthogonal(4, seed=10)


def standardise(factors: np.ndarray, sizes=SIZES) -> np.ndarray:
    """Each factor index mapped to zero mean, unit variance under the uniform distribution on its values."""
    s = np.asarray(sizes, dtype=float)
    return (factors - (s - 1) / 2) / np.sqrt((s**2 - 1) / 12)


def axis_code(factors: np.ndarray, rng: np.random.Generator, noise: float = NOISE) -> np.ndarray:
    """The standardised factors (sizes: the first F of SIZES) plus N(0, noise²) noise."""
    z = standardise(factors, SIZES[: factors.shape[1]])
    return z + noise * rng.standard_normal(z.shape)


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    factors = np.random.default_rng(0).integers(0, SIZES, size=(N, len(SIZES)))
    axis = axis_code(factors, np.random.default_rng(1))
    return {
        "factors": factors,
        "axis": axis,
        "hadamard": axis @ HADAMARD.T,
        "rotated": axis @ ROTATION.T,
        "random": np.random.default_rng(2).standard_normal((N, len(SIZES))),
    }


def representer(kind: str, transform=lambda z: z, seed: int = 5):
    """A ``represent`` callable for FactorVAE: factors -> code of the given kind, with its own seeded noise."""
    noise_rng = np.random.default_rng(seed)

    def represent(factors: np.ndarray) -> np.ndarray:
        if kind == "random":
            z = noise_rng.standard_normal((len(factors), len(SIZES)))
        else:
            z = axis_code(factors, noise_rng)
            z = z @ {"axis": np.eye(4), "hadamard": HADAMARD, "rotated": ROTATION}[kind].T
        return transform(z)

    return represent


def fvae(kind: str, transform=lambda z: z, seed: int = 3) -> dict:
    return factor_vae_details(representer(kind, transform), list(SIZES), np.random.default_rng(seed), **VOTES)


# ---------------------------------------------------------------------------------------------------------------
# Discrete entropy and mutual information
# ---------------------------------------------------------------------------------------------------------------


def test_entropy_of_uniform_variable_is_log_of_its_size():
    assert discrete_entropy(np.repeat(np.arange(4), 25)) == pytest.approx(math.log(4), abs=1e-12)
    assert discrete_entropy(np.full(10, 3)) == 0.0
    # Labels need not be 0..K-1.
    assert discrete_entropy(np.array([-7, 100, -7, 100])) == pytest.approx(math.log(2), abs=1e-12)


def test_mutual_information_of_identical_uniform_variables_is_log_4():
    x = np.repeat(np.arange(4), 25)
    assert discrete_mutual_information(x, x) == pytest.approx(math.log(4), abs=1e-12)
    # Any relabelling of one side is the same variable.
    assert discrete_mutual_information(x, np.array([9, 2, 5, 0])[x]) == pytest.approx(math.log(4), abs=1e-12)


def test_mutual_information_of_independent_variables_is_zero():
    x, y = np.repeat(np.arange(4), 5), np.tile(np.arange(5), 4)  # the empirical joint is exactly the product
    assert discrete_mutual_information(x, y) == pytest.approx(0.0, abs=1e-12)
    rng = np.random.default_rng(0)
    assert discrete_mutual_information(rng.integers(0, 4, 20_000), rng.integers(0, 5, 20_000)) < 2e-3


def test_mutual_information_of_a_binary_channel():
    """x uniform on {0, 1}, y = x flipped for exactly a quarter of each class: I = log 2 − h(1/4)."""
    x = np.repeat([0, 1], 40)
    y = np.concatenate([np.repeat([0, 1], [30, 10]), np.repeat([0, 1], [10, 30])])
    h = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    assert discrete_mutual_information(x, y) == pytest.approx(math.log(2) - h, abs=1e-12)


def test_mutual_information_matches_sklearn():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 7, 3000)
    y = (x + rng.integers(0, 3, 3000)) % 5
    assert discrete_mutual_information(x, y) == pytest.approx(mutual_info_score(x, y), rel=1e-10)
    assert discrete_entropy(x) == pytest.approx(mutual_info_score(x, x), rel=1e-10)


def test_discretize_matches_the_histogram_recipe():
    """Equal-width bins over each dim's range, as disentanglement_lib's np.histogram + np.digitize."""
    codes = np.random.default_rng(0).standard_normal((500, 3)) * [1.0, 10.0, 0.1]
    codes[:, 2] = 4.2  # a constant dim
    binned = discretize(codes, n_bins=20)
    for j in range(2):
        edges = np.histogram(codes[:, j], 20)[1]
        np.testing.assert_array_equal(binned[:, j], np.digitize(codes[:, j], edges[:-1]) - 1)
    assert binned[:, :2].min() == 0 and binned[:, :2].max() == 19
    assert (binned[:, 2] == 0).all()


# ---------------------------------------------------------------------------------------------------------------
# MIG
# ---------------------------------------------------------------------------------------------------------------


def test_mig_of_axis_aligned_code_is_close_to_one(data):
    mi = mutual_information_matrix(data["axis"], data["factors"], normalize=True)
    assert np.diag(mi).min() > 0.99
    assert (mi - np.diag(np.diag(mi))).max() < 0.02  # estimation bias of independent pairs
    assert mutual_information_gap(data["axis"], data["factors"]) > 0.98  # observed 0.992


def test_mig_of_rotated_code_is_low(data):
    axis = mutual_information_gap(data["axis"], data["factors"])
    assert mutual_information_gap(data["hadamard"], data["factors"]) < 0.03  # observed 0.006
    assert mutual_information_gap(data["rotated"], data["factors"]) < axis - 0.5  # observed 0.222


def test_mig_of_random_code_is_close_to_zero(data):
    assert mutual_information_gap(data["random"], data["factors"]) < 0.01  # observed 0.001


@pytest.mark.parametrize("kind", ["axis", "rotated", "random"])
def test_mig_is_invariant_to_permuting_and_rescaling_dims(data, kind):
    z, f = data[kind], data["factors"]
    mig = mutual_information_gap(z, f)
    assert mutual_information_gap(z[:, PERM], f) == pytest.approx(mig, abs=1e-12)
    assert mutual_information_gap(z * SCALES + SHIFTS, f) == pytest.approx(mig, abs=1e-12)


@pytest.mark.parametrize("kind", ["axis", "rotated"])
def test_mig_is_unchanged_by_constant_dims(data, kind):
    z, f = data[kind], data["factors"]
    padded = np.concatenate([np.zeros((N, 1)), z, np.full((N, 2), 7.5)], axis=1)
    assert mutual_information_gap(padded, f) == pytest.approx(mutual_information_gap(z, f), abs=1e-12)


def test_mig_is_normalised_by_the_factor_entropy():
    """A perfect copy scores 1 for a binary factor and for a 10-valued one (raw MI would be log 2 and log 10)."""
    rng = np.random.default_rng(3)
    factors = rng.integers(0, [2, 10, 3], size=(3000, 3))
    codes = factors.astype(float)  # noise-free copies: every value lands in its own bin
    raw = mutual_information_matrix(codes, factors)
    entropy = [discrete_entropy(factors[:, k]) for k in range(3)]
    np.testing.assert_allclose(np.diag(raw), entropy, rtol=1e-12)
    normalised = mutual_information_matrix(codes, factors, normalize=True)
    np.testing.assert_allclose(np.diag(normalised), 1.0, rtol=1e-12)
    assert normalised.min() >= 0.0 and normalised.max() <= 1.0 + 1e-12
    assert mutual_information_gap(codes, factors) == pytest.approx(1.0, abs=0.01)  # observed 0.998
    assert mutual_information_gap(codes[:, :1], factors[:, :1]) == pytest.approx(1.0, abs=1e-12)


def test_mig_gap_is_taken_over_latents_for_each_factor():
    """Two dims copying factor 0 leave it no gap: MIG ≈ (0 + 1 + 1) / 3, where a gap over factors gives ≈ 1."""
    rng = np.random.default_rng(4)
    factors = rng.integers(0, [5, 6, 8], size=(4000, 3))
    z = axis_code(factors, rng)
    codes = np.concatenate([z[:, :1], z[:, :1] * 2 + 0.05 * rng.standard_normal((4000, 1)), z[:, 1:]], axis=1)
    assert mutual_information_gap(codes, factors) == pytest.approx(2 / 3, abs=0.03)


def test_mig_uses_the_top_two_latents_not_the_first_two():
    """The informative dims are last; the gap must still be between the two most informative."""
    rng = np.random.default_rng(5)
    factors = rng.integers(0, 6, size=(3000, 1))
    codes = np.concatenate([rng.standard_normal((3000, 3)), axis_code(factors, rng)], axis=1)
    assert mutual_information_gap(codes, factors) > 0.97


def test_mig_of_a_single_dim_is_its_normalised_mi():
    """D = 1: the runner-up MI is 0, exactly as if a constant dim were appended."""
    rng = np.random.default_rng(6)
    factors = rng.integers(0, [5, 8], size=(3000, 2))
    z = axis_code(factors, rng)[:, :1]  # encodes factor 0 only
    mig = mutual_information_gap(z, factors)
    assert mig == pytest.approx(mutual_information_gap(np.concatenate([z, np.ones_like(z)], axis=1), factors))
    normalised = mutual_information_matrix(z, factors, normalize=True)[0]
    assert mig == pytest.approx(normalised.mean(), abs=1e-12)
    assert mig == pytest.approx(0.5, abs=0.02)


def test_mig_leaves_out_constant_factors(data):
    f = data["factors"]
    with_constant = np.concatenate([f, np.full((N, 1), 3)], axis=1)
    assert mutual_information_gap(data["axis"], with_constant) == pytest.approx(
        mutual_information_gap(data["axis"], f), abs=1e-12
    )
    assert np.isnan(mutual_information_matrix(data["axis"], with_constant, normalize=True)[:, -1]).all()
    with pytest.raises(ValueError, match="every factor is constant"):
        mutual_information_gap(data["axis"], np.zeros((N, 2), dtype=int))


@pytest.mark.parametrize(
    ("codes", "factors", "kwargs", "match"),
    [
        (np.array([[0.0], [np.nan], [1.0]]), np.array([[0], [1], [0]]), {}, "NaN or infinite"),
        (np.array([[0.0], [np.inf], [1.0]]), np.array([[0], [1], [0]]), {}, "NaN or infinite"),
        (np.zeros((5, 2)), np.zeros((4, 1), dtype=int), {}, "same number of samples"),
        (np.zeros((1, 2)), np.zeros((1, 1), dtype=int), {}, "at least 2 samples"),
        (np.zeros(5), np.zeros((5, 1), dtype=int), {}, "2-D"),
        (np.zeros((5, 2)), np.zeros(5, dtype=int), {}, "2-D"),
        (np.zeros((4, 2)), np.array([[0.5], [1.0], [0.0], [1.0]]), {}, "integer"),
        (np.zeros((4, 2)), np.array([[0], [1], [0], [1]]), {"n_bins": 1}, "n_bins"),
    ],
)
def test_mig_rejects_bad_input(codes, factors, kwargs, match):
    with pytest.raises(ValueError, match=match):
        mutual_information_gap(codes, factors, **kwargs)


# ---------------------------------------------------------------------------------------------------------------
# FactorVAE score
# ---------------------------------------------------------------------------------------------------------------


def test_factor_vae_of_axis_aligned_code_is_one():
    details = fvae("axis")
    assert details["score"] >= 0.99  # observed 1.0
    assert details["classifier"].tolist() == [0, 1, 2, 3]
    assert factor_vae_score(representer("axis"), list(SIZES), np.random.default_rng(3), **VOTES) == details["score"]


@pytest.mark.parametrize("kind", ["hadamard", "random"])
def test_factor_vae_of_evenly_mixed_or_random_code_is_chance(kind):
    """Chance is 1/F = 0.25. (A generic random rotation can keep the score high: the score only asks that each
    factor have its own dim of largest variance reduction; the even Hadamard mixing leaves none.)"""
    assert fvae(kind)["score"] == pytest.approx(1 / len(SIZES), abs=0.05)  # observed 0.250 and 0.251


@pytest.mark.parametrize("kind", ["axis", "rotated"])
def test_factor_vae_is_invariant_to_permuting_and_rescaling_dims(kind):
    base = fvae(kind)
    permuted = fvae(kind, lambda z: z[:, PERM])
    assert permuted["score"] == base["score"]
    np.testing.assert_array_equal(permuted["votes"], base["votes"][PERM])
    assert fvae(kind, lambda z: z * SCALES + SHIFTS)["score"] == base["score"]


def test_factor_vae_prunes_constant_dims():
    base = fvae("rotated")
    padded = fvae("rotated", lambda z: np.concatenate([z, np.zeros((len(z), 1)), np.full((len(z), 1), -2.0)], 1))
    assert padded["active_dims"] == [0, 1, 2, 3]
    assert padded["score"] == base["score"]


@pytest.mark.parametrize(
    "transform",
    [
        # A dim of pure noise with a tiny scale: unnormalised, its variance is the smallest in every batch, so every
        # vote would go to it and the score would fall to chance (0.25).
        lambda z: np.concatenate([z, 1e-3 * np.random.default_rng(7).standard_normal((len(z), 1))], axis=1),
        # One informative dim with a huge scale: unnormalised, holding its factor fixed leaves it the largest
        # variance (1000² · 0.05² = 2500 against ≈ 1), so that factor's votes would go to another dim (≈ 0.75).
        lambda z: z * np.array([1.0, 1.0, 1.0, 1000.0]),
    ],
    ids=["tiny-noise-dim", "huge-informative-dim"],
)
def test_factor_vae_normalises_each_dim_by_its_std(transform):
    assert fvae("axis", transform)["score"] >= 0.99


def test_factor_vae_never_votes_for_single_valued_factors():
    """A factor with one value cannot be varied; it is never the held factor, and the others still score 1."""
    noise_rng = np.random.default_rng(5)
    details = factor_vae_details(
        lambda f: axis_code(f[:, :4], noise_rng), [*SIZES, 1], np.random.default_rng(3), **VOTES
    )
    assert details["votes"][:, 4].sum() == 0
    assert details["score"] >= 0.99


def test_factor_vae_rejects_bad_input():
    rng = np.random.default_rng(0)
    axis = representer("axis")
    with pytest.raises(ValueError, match="factor_sizes"):
        factor_vae_score(axis, [5, 0, 8, 10], rng)
    with pytest.raises(ValueError, match="single value"):
        factor_vae_score(lambda f: f.astype(float), [1, 1], rng)
    with pytest.raises(ValueError, match="batch_size"):
        factor_vae_score(axis, list(SIZES), rng, batch_size=1)
    with pytest.raises(ValueError, match=r"\(n, D\)"):
        factor_vae_score(lambda f: f[:, 0].astype(float), list(SIZES), rng)
    with pytest.raises(ValueError, match="NaN"):
        factor_vae_score(lambda f: np.full(f.shape, np.nan), list(SIZES), rng)
    with pytest.raises(ValueError, match="collapsed"):
        factor_vae_score(lambda f: np.ones((len(f), 3)), list(SIZES), rng)
    with pytest.raises(ValueError, match="callable"):
        factor_vae_score(np.zeros((3, 3)), list(SIZES), rng)


# ---------------------------------------------------------------------------------------------------------------
# SAP
# ---------------------------------------------------------------------------------------------------------------


def test_sap_of_axis_aligned_code_is_high(data):
    scores = sap_score_matrix(data["axis"], data["factors"])
    assert np.diag(scores).min() >= 0.99  # each dim classifies its own factor perfectly
    sap = sap_score(data["axis"], data["factors"])
    # The runner-up dim predicts at chance, so the ceiling is mean(1 - 1/K) = 0.852.
    assert sap == pytest.approx(np.mean([1 - 1 / k for k in SIZES]), abs=0.03)  # observed 0.845


def test_sap_of_rotated_code_is_low(data):
    axis = sap_score(data["axis"], data["factors"])
    assert sap_score(data["hadamard"], data["factors"]) < 0.03  # observed 0.008
    assert sap_score(data["rotated"], data["factors"]) < axis - 0.5  # observed 0.155


def test_sap_of_random_code_is_close_to_zero(data):
    assert sap_score(data["random"], data["factors"]) < 0.02  # observed 0.002
    # Every entry is near chance 1/K.
    np.testing.assert_allclose(
        sap_score_matrix(data["random"], data["factors"]), [[1 / k for k in SIZES]] * 4, atol=0.05
    )


def test_sap_chance_level_ignores_class_frequencies():
    """Balanced accuracy: a 90/10 binary factor read from noise scores ≈ 0.5, not the 0.9 of always guessing 0."""
    rng = np.random.default_rng(8)
    factors = (rng.random((20_000, 1)) < 0.1).astype(int)
    codes = np.concatenate([rng.standard_normal((20_000, 3)), np.ones((20_000, 1))], axis=1)
    scores = sap_score_matrix(codes, factors)
    assert scores[:3] == pytest.approx(np.full((3, 1), 0.5), abs=0.05)
    assert scores[3, 0] == 0.5  # the constant dim predicts one class for all: recall 1 and 0


@pytest.mark.parametrize("kind", ["axis", "rotated", "random"])
def test_sap_is_invariant_to_permuting_and_rescaling_dims(data, kind):
    z, f = data[kind], data["factors"]
    sap = sap_score(z, f)
    assert sap_score(z[:, PERM], f) == pytest.approx(sap, abs=1e-12)
    assert sap_score(z * SCALES + SHIFTS, f) == pytest.approx(sap, abs=1e-12)


def test_sap_of_a_single_dim_is_against_a_constant_dim(data):
    z = data["axis"][:, :1]
    assert sap_score(z, data["factors"]) == sap_score(np.concatenate([z, np.zeros_like(z)], 1), data["factors"])


def test_sap_rejects_bad_input(data):
    with pytest.raises(ValueError, match="test_fraction"):
        sap_score(data["axis"], data["factors"], test_fraction=1.0)
    with pytest.raises(ValueError, match="every factor is constant"):
        sap_score(data["axis"], np.zeros((N, 1), dtype=int))
    with pytest.raises(ValueError, match="NaN"):
        sap_score(np.full((10, 2), np.nan), np.zeros((10, 1), dtype=int))


# ---------------------------------------------------------------------------------------------------------------
# DCI
# ---------------------------------------------------------------------------------------------------------------


def test_dci_orders_axis_rotated_and_random_codes(data):
    f = data["factors"]
    axis = dci_scores(data["axis"], f)
    assert axis["disentanglement"] > 0.95 and axis["completeness"] > 0.95  # observed 1.000 and 1.000
    assert axis["informativeness"] > 0.99
    np.testing.assert_allclose(axis["importance"].sum(axis=0), 1.0)
    hadamard = dci_scores(data["hadamard"], f)
    assert hadamard["disentanglement"] < 0.1 and hadamard["completeness"] < 0.1  # observed 0.001 and 0.001
    assert dci_scores(data["rotated"], f)["disentanglement"] < axis["disentanglement"] - 0.5  # observed 0.147
    random = dci_scores(data["random"], f)
    assert random["disentanglement"] < 0.05  # observed 0.001
    assert random["informativeness"] == pytest.approx(np.mean([1 / k for k in SIZES]), abs=0.05)


def test_dci_is_nearly_invariant_to_permuting_and_rescaling_dims(data):
    """Only nearly: the forest's trees break near-ties between dims by their order."""
    z, f = data["rotated"], data["factors"]
    base = dci_scores(z, f)["disentanglement"]
    assert dci_scores(z[:, PERM], f)["disentanglement"] == pytest.approx(base, abs=0.01)
    assert dci_scores(z * SCALES + SHIFTS, f)["disentanglement"] == pytest.approx(base, abs=0.01)


# ---------------------------------------------------------------------------------------------------------------
# disentanglement_lib's choices (the default protocol of vaelab.metrics.factors)
# ---------------------------------------------------------------------------------------------------------------


def test_sap_svm_follows_disentanglement_libs_recipe(data):
    """A LinearSVC(C=0.01, class_weight="balanced") per (dim, factor) on the raw 1-D code, scored by plain accuracy on
    the same held-out part as the threshold classifier. Catches balanced accuracy in place of plain accuracy, a
    standardised code and another C."""
    from sklearn.svm import LinearSVC

    codes, factors = data["rotated"][:600] * [3.0, 0.2, 1.0, 10.0], data["factors"][:600]
    matrix = sap_score_matrix(codes, factors, classifier="svm", rng=0, test_fraction=0.5)
    perm = np.random.default_rng(0).permutation(600)
    test, train = perm[:300], perm[300:]
    expected = np.zeros((4, 4))
    for j in range(4):
        for k in range(4):
            svm = LinearSVC(C=0.01, class_weight="balanced").fit(codes[train, j : j + 1], factors[train, k])
            expected[j, k] = np.mean(svm.predict(codes[test, j : j + 1]) == factors[test, k])
    np.testing.assert_allclose(matrix, expected, atol=1e-12)


def test_sap_of_an_axis_aligned_code_under_each_classifier(data):
    """The threshold classifier's ceiling is mean(1 − 1/K) (0.85 here); a one-vs-rest linear SVM on one dim picks
    out only the values near the ends of the axis, so the same perfect code scores far lower (docs/metrics.md)."""
    threshold = sap_score(data["axis"], data["factors"], classifier="threshold")
    svm = sap_score(data["axis"], data["factors"], classifier="svm")
    assert threshold > 0.8 and svm < threshold - 0.3
    with pytest.raises(ValueError, match="classifier must be one of"):
        sap_score(data["axis"], data["factors"], classifier="tree")


def test_dci_with_gradient_boosting_orders_axis_and_mixed_codes():
    rng = np.random.default_rng(11)
    factors = rng.integers(0, [2, 3], size=(200, 2))
    axis = standardise(factors, (2, 3)) + NOISE * rng.standard_normal((200, 2))
    mixed = axis @ (np.array([[1, 1], [1, -1]]) / np.sqrt(2)).T
    good = dci_scores(axis, factors, predictor="gradient_boosting")
    bad = dci_scores(mixed, factors, predictor="gradient_boosting")
    assert good["disentanglement"] > 0.9 and good["completeness"] > 0.9 and good["informativeness"] > 0.99
    np.testing.assert_allclose(good["importance"].sum(axis=0), 1.0)
    assert bad["disentanglement"] < 0.5 and bad["completeness"] < 0.5
    with pytest.raises(ValueError, match="predictor must be one of"):
        dci_scores(axis, factors, predictor="lasso")


def test_the_protocols_are_named_and_unknown_ones_refused():
    from vaelab.metrics.disentanglement import PROTOCOLS, get_protocol

    assert set(PROTOCOLS) == {"disentanglement_lib", "vaelab"}
    lib = get_protocol("disentanglement_lib")
    assert (lib.sap_classifier, lib.dci_predictor, lib.factor_vae["batch_size"], lib.factor_vae["prune_threshold"]) == (
        "svm", "gradient_boosting", 64, 0.05)
    assert get_protocol(lib) is lib
    with pytest.raises(ValueError, match="unknown disentanglement protocol"):
        get_protocol("paper")
