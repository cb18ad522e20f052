"""Tests of vaelab.metrics.sample_quality (the Fréchet classifier distance, improved precision/recall) and of the
shipped feature networks (vaelab.metrics.feature_net): closed forms and hand-worked configurations for the pure
functions, then the digits network on real digits (test vs train near the floor, noise and a collapsed model far),
and, when the MNIST files are on this machine, the MNIST network on real MNIST."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from vaelab.data import DigitsDataModule
from vaelab.metrics.feature_net import FEATURE_NETS, WeightsError, accuracy, extract_features, load_feature_net
from vaelab.metrics.sample_quality import (
    frechet_distance,
    gaussian_frechet_distance,
    precision_recall,
    sample_quality,
)


def random_cov(d: int, seed: int) -> np.ndarray:
    a = np.random.default_rng(seed).standard_normal((d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


# ---------------------------------------------------------------------------------------------------------------
# The Fréchet distance
# ---------------------------------------------------------------------------------------------------------------


def test_frechet_distance_of_diagonal_gaussians_is_the_closed_form():
    """Diagonal covariances: d² = ‖Δμ‖² + Σ_i (√a_i − √b_i)² (catches a missing factor 2 on the cross term)."""
    a, b = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    mu_a, mu_b = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    expected = 1.0 + 4.0 + (1 - 3) ** 2 + (2 - 1) ** 2 + 0.0
    assert gaussian_frechet_distance(mu_a, np.diag(a), mu_b, np.diag(b)) == pytest.approx(expected, abs=1e-12)


def test_frechet_distance_of_full_covariances_matches_scipy_sqrtm():
    """Catches an elementwise square root (right only for diagonal covariances): scipy's sqrtm of Σ_a Σ_b."""
    cov_a, cov_b = random_cov(6, 1), random_cov(6, 2)
    mu_a, mu_b = np.arange(6.0), np.zeros(6)
    reference = np.sum(mu_a**2) + np.trace(cov_a + cov_b) - 2 * np.trace(scipy.linalg.sqrtm(cov_a @ cov_b)).real
    assert gaussian_frechet_distance(mu_a, cov_a, mu_b, cov_b) == pytest.approx(reference, rel=1e-9)


def test_frechet_distance_is_symmetric_zero_on_equal_sets_and_consistent():
    rng = np.random.default_rng(3)
    cov_a, cov_b = random_cov(5, 4), random_cov(5, 5)
    a = rng.multivariate_normal(np.zeros(5), cov_a, size=20_000)
    b = rng.multivariate_normal(np.full(5, 0.5), cov_b, size=20_000)
    d_ab, d_ba = frechet_distance(a, b), frechet_distance(b, a)
    assert d_ab == pytest.approx(d_ba, rel=1e-9)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    # the estimate agrees with the distance of the generating Gaussians (Monte-Carlo error of a few %)
    exact = gaussian_frechet_distance(np.zeros(5), cov_a, np.full(5, 0.5), cov_b)
    assert d_ab == pytest.approx(exact, rel=0.05)
    # invariant to a rotation and a translation applied to both sets
    q = np.linalg.qr(rng.standard_normal((5, 5)))[0]
    assert frechet_distance(a @ q + 3, b @ q + 3) == pytest.approx(d_ab, rel=1e-9)


def test_frechet_distance_rejects_bad_input():
    with pytest.raises(ValueError, match="differ in width"):
        frechet_distance(np.zeros((5, 3)), np.zeros((5, 4)))
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance(np.full((5, 3), np.nan), np.zeros((5, 3)))
    with pytest.raises(ValueError, match="at least 2"):
        frechet_distance(np.zeros((1, 3)), np.zeros((5, 3)))


# ---------------------------------------------------------------------------------------------------------------
# Precision and recall
# ---------------------------------------------------------------------------------------------------------------


def test_precision_and_recall_of_a_hand_worked_configuration():
    """Reference 0, 1, 2, 3 on a line, k = 1: every radius is 1. Samples −1.5, 0.5, 3.9, 5: 0.5 and 3.9 fall in a
    ball (precision 1/2). The samples' radii are 2, 2, 1.1, 1.1, whose balls hold all four reference points
    (recall 1). Catches a point counted as its own neighbour (radius 0: precision 0), precision and recall
    swapped, and radii taken from the other set."""
    reference = np.array([[0.0], [1.0], [2.0], [3.0]])
    samples = np.array([[-1.5], [0.5], [3.9], [5.0]])
    assert precision_recall(reference, samples, k=1) == {"precision": 0.5, "recall": 1.0}
    # k = 2: the reference radii are 2, 1, 1, 2, so −1.5 is inside 0's ball and 5 on the boundary of 3's (inside)
    assert precision_recall(reference, samples, k=2) == {"precision": 1.0, "recall": 1.0}


def test_equal_sets_score_one_and_far_sets_zero():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((500, 8))
    assert precision_recall(x, x) == {"precision": 1.0, "recall": 1.0}
    assert precision_recall(x, x + 100.0) == {"precision": 0.0, "recall": 0.0}
    # duplicates (radius 0) still contain their own copies
    dup = np.repeat(x[:50], 4, axis=0)
    assert precision_recall(dup, dup) == {"precision": 1.0, "recall": 1.0}


def test_dropping_modes_costs_recall_not_precision():
    """Reference: 4 well separated clusters in the plane; samples from 2 of them: precision near 1 (the samples'
    tails reach a little beyond the reference's balls), recall ≈ 1/2."""
    rng = np.random.default_rng(7)
    centres = 20.0 * np.array([[0, 0], [1, 0], [0, 1], [1, 1]])
    reference = centres[np.arange(2000) % 4] + rng.standard_normal((2000, 2))
    samples = centres[np.arange(1000) % 2] + rng.standard_normal((1000, 2))
    scores = precision_recall(reference, samples)
    assert scores["precision"] > 0.95
    assert scores["recall"] == pytest.approx(0.5, abs=0.03)


def test_precision_recall_rejects_bad_input():
    with pytest.raises(ValueError, match="k must be"):
        precision_recall(np.zeros((3, 2)), np.zeros((10, 2)), k=3)
    with pytest.raises(ValueError, match="differ in width"):
        precision_recall(np.zeros((10, 2)), np.zeros((10, 3)))


# ---------------------------------------------------------------------------------------------------------------
# The shipped digits network on real digits
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    datamodule = DigitsDataModule(data_dir=tmp_path_factory.mktemp("digits"), cache=False)
    datamodule.setup()
    return datamodule.splits


@pytest.fixture(scope="module")
def digits_net():
    return load_feature_net("digits")


def test_the_digits_network_classifies_the_test_split(digits, digits_net):
    assert accuracy(digits_net, *digits["test"]) >= 0.97
    assert extract_features(digits_net, digits["test"][0][:5]).shape == (5, digits_net.feature_dim)


def test_test_images_score_near_the_floor_and_noise_and_a_collapsed_model_far(digits, digits_net):
    train, test = digits["train"][0], digits["test"][0]
    real = sample_quality(test, train, digits_net)
    noise = sample_quality(torch.rand(len(test), 1, 8, 8, generator=torch.Generator().manual_seed(0)), train,
                           digits_net)
    mean_image = train.float().mean(0, keepdim=True) / 255.0
    collapsed = sample_quality(mean_image.expand(len(test), -1, -1, -1), train, digits_net)
    assert real["fcd"] < noise["fcd"] / 10 and real["fcd"] < collapsed["fcd"] / 10
    assert real["precision"] > 0.8 and real["recall"] > 0.8
    # a few outlying train digits have radii wide enough to take in some noise (k-NN balls' known weakness)
    assert noise["precision"] < 0.1 and noise["recall"] < 0.05
    assert collapsed["recall"] < 0.05  # one image repeated: its balls have radius 0 and cover nothing


def test_sample_quality_is_symmetric_in_the_distance_and_exact_on_equal_sets(digits, digits_net):
    train, test = digits["train"][0], digits["test"][0]
    ab, ba = sample_quality(test, train, digits_net), sample_quality(train, test, digits_net)
    assert ab["fcd"] == pytest.approx(ba["fcd"], rel=1e-9)
    assert (ab["precision"], ab["recall"]) == (ba["recall"], ba["precision"])
    same = sample_quality(test, test, digits_net)
    assert same["fcd"] == pytest.approx(0.0, abs=1e-8)
    assert (same["precision"], same["recall"]) == (1.0, 1.0)
    # uint8 and floats in [0, 1] are the same images
    assert sample_quality(test.float() / 255.0, train, digits_net)["fcd"] == pytest.approx(ab["fcd"], rel=1e-6)


def test_the_network_refuses_images_it_was_not_made_for(digits_net):
    with pytest.raises(ValueError, match=r"\(N, 1, 8, 8\)"):
        extract_features(digits_net, torch.rand(4, 1, 28, 28))
    with pytest.raises(ValueError, match="not logits"):
        extract_features(digits_net, torch.randn(4, 1, 8, 8) * 5)


def test_weights_are_checked_against_their_sha256(tmp_path):
    spec = FEATURE_NETS["digits"]
    damaged = tmp_path / "digits.pt"
    data = bytearray(spec.path.read_bytes())
    data[-100] ^= 0xFF
    damaged.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="SHA-256"):
        load_feature_net("digits", damaged, sha256=spec.sha256)
    with pytest.raises(WeightsError, match="missing"):
        load_feature_net("digits", tmp_path / "nothing.pt")
    with pytest.raises(ValueError, match="unknown feature network"):
        load_feature_net("inception")
    for name, spec in FEATURE_NETS.items():  # the shipped files are the ones measured, and small
        assert spec.path.stat().st_size < 1_000_000, name
        load_feature_net(name)


# ---------------------------------------------------------------------------------------------------------------
# A damaged shipped file (issue 24, fault 2): one warning, the other metrics kept, the scores marked unavailable
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture
def damaged_weights(tmp_path, monkeypatch):
    """The shipped feature networks' folder replaced by one holding a damaged copy of each file (one byte flipped):
    the real files are left alone. Returns the damaged digits file."""
    from vaelab.metrics import feature_net

    folder = tmp_path / "weights"
    folder.mkdir()
    for spec in FEATURE_NETS.values():
        data = bytearray(spec.path.read_bytes())
        data[-100] ^= 0xFF
        (folder / spec.filename).write_bytes(bytes(data))
    monkeypatch.setattr(feature_net, "WEIGHTS_DIR", folder)
    return folder / FEATURE_NETS["digits"].filename


def test_a_damaged_shipped_file_says_what_to_do(damaged_weights):
    with pytest.raises(WeightsError, match=r"SHA-256 .* not the expected .*Reinstall vaelab") as caught:
        load_feature_net("digits")
    assert str(damaged_weights) in str(caught.value)


def test_a_damaged_feature_network_costs_the_sample_scores_only_in_training_and_evaluation(tmp_path, damaged_weights,
                                                                                            caplog):
    import json

    from conftest import compose_eval, compose_train

    from vaelab.metrics.sample_quality import UNAVAILABLE
    from vaelab.tasks.evaluate import run_evaluation
    from vaelab.tasks.train import train

    caplog.set_level("WARNING")
    train(compose_train(tmp_path, ["logger=none", "callbacks=[minimal,sample_quality]", "model.latent_dim=4",
                                   "callbacks.sample_quality.every_n_epochs=1", "callbacks.sample_quality.n=50",
                                   "callbacks.sample_quality.test_n=50"]))
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["status"] == "completed"
    assert {"test/elbo", "test/recon", "test/kl"} <= set(record["test"]) and "test/fcd" not in record["test"]
    for why in (record[UNAVAILABLE], caplog.text):
        assert str(damaged_weights) in why and "SHA-256" in why and "Reinstall vaelab" in why
    said = [r for r in caplog.records if "Sample quality" in r.getMessage()]
    assert len(said) == 1 and said[0].exc_info is None  # once (validation and test), no traceback

    caplog.clear()
    run_evaluation(compose_eval(tmp_path, [f"ckpt_path={record['test_ckpt']}", "iw_k=0", "sample_quality.n=50"]))
    evaluated = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert evaluated["status"] == "completed" and "test/fcd" not in evaluated["test"]
    assert {"test/neg_elbo", "test/linear_probe"} <= set(evaluated["test"])
    assert str(damaged_weights) in evaluated[UNAVAILABLE] and "Reinstall vaelab" in evaluated[UNAVAILABLE]
    assert len([r for r in caplog.records if "Sample quality" in r.getMessage()]) == 1
