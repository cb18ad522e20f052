"""The representation and sample-quality scores while training (callbacks.representation, callbacks.sample_quality)
and in eval.py: logged like the other metrics, into metrics.json, the same numbers from both."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import compose_eval, compose_train

from vaelab.data.digits import DigitsDataModule
from vaelab.metrics import sample_quality as quality
from vaelab.models import Autoencoder
from vaelab.models.samplers import GaussianMixtureSampler
from vaelab.tasks.evaluate import run_evaluation
from vaelab.tasks.train import train

REPRESENTATION = ("linear_probe", "knn", "nmi", "ari")
SAMPLES = ("fcd", "precision", "recall")


def run(tmp_path, overrides):
    train(compose_train(tmp_path, ["logger=none", "callbacks=[minimal,representation,sample_quality]",
                                   "callbacks.representation.every_n_epochs=1",
                                   "callbacks.sample_quality.every_n_epochs=1",
                                   "model.latent_dim=4", "trainer.max_epochs=2", *overrides]))
    return json.loads((tmp_path / "run" / "metrics.json").read_text())


def test_the_scores_are_logged_when_validating_and_testing_and_eval_gives_the_same(tmp_path):
    record = run(tmp_path, [])
    for split in ("val", "test"):
        for name in (*REPRESENTATION, *SAMPLES):
            assert f"{split}/{name}" in record[split], (split, name)
    assert 0.1 < record["test"]["test/linear_probe"] <= 1.0 and record["test"]["test/fcd"] > 0
    run_evaluation(compose_eval(tmp_path, [f"ckpt_path={record['test_ckpt']}", "iw_k=0"]))
    evaluated = json.loads((tmp_path / "eval" / "metrics.json").read_text())["test"]
    for name in (*REPRESENTATION, *SAMPLES):  # the same codes, seeds and draws (Lightning logged float32)
        assert evaluated[f"test/{name}"] == pytest.approx(record["test"][f"test/{name}"], rel=1e-5, abs=1e-6), name


def test_an_autoencoder_has_sample_scores_only_with_a_fitted_sampler(tmp_path):
    prior = run(tmp_path / "prior", ["model=ae"])
    assert "test/fcd" not in prior["test"] and "test/linear_probe" in prior["test"]  # no prior: nothing to sample
    gmm = run(tmp_path / "gmm", ["model=ae", "sampler=gmm", "sampler.n_components=3"])
    assert {f"test/{name}" for name in SAMPLES} <= set(gmm["test"])


def test_sample_scores_compare_as_many_samples_as_images_of_the_split_asked_for(tmp_path, monkeypatch):
    """The reference images come from the split asked for (not the first ones: a random draw), and as many samples
    are drawn; the wrong version scores against the training split, or compares sets of different sizes."""
    seen = []
    monkeypatch.setattr(quality, "sample_quality", lambda samples, reference, net, k: seen.append(
        (len(samples), reference.clone())) or {"fcd": 0.0, "precision": 0.0, "recall": 0.0})
    data = DigitsDataModule(data_dir=tmp_path)
    data.setup()
    model = Autoencoder([1, 8, 8], latent_dim=3)
    quality.sample_scores(model, data, "val", n=10_000)
    quality.sample_scores(model, data, "test", n=100)
    (n_val, val), (n_test, test) = seen
    assert n_val == len(val) == len(data.splits["val"][0]) == 144 and n_test == len(test) == 100
    val_images = data.convert(data.splits["val"][0])
    assert all(any(torch.equal(image, v) for v in val_images) for image in val)
    first = data.convert(data.splits["test"][0][:100])
    assert not torch.equal(test, first)  # a random draw, not the first 100


def test_no_sample_scores_without_a_feature_network_or_something_to_sample(tmp_path):
    data = DigitsDataModule(data_dir=tmp_path)
    assert quality.sample_scores(Autoencoder([1, 16, 16], latent_dim=2), data) == {}  # no network for 16×16
    point = Autoencoder([1, 8, 8], latent_dim=2, code={"_target_": "vaelab.models.codes.PointCode"})
    assert quality.sample_scores(point, data) == {}  # no prior, no sampler
    assert quality.feature_net_for((1, 28, 28)) == "mnist" and quality.feature_net_for((3, 28, 28)) is None
    assert GaussianMixtureSampler().available_for(point)


def test_a_run_trains_the_same_with_the_scores_on_or_off(tmp_path):
    """Scoring after the first epoch must not move the global random state (building the feature network used to
    draw its initial weights from it, so the default run's test −ELBO moved from 24.94 to 24.85)."""
    common = ["logger=none", "model.latent_dim=4", "trainer.max_epochs=2"]
    train(compose_train(tmp_path / "off", ["callbacks=minimal", *common]))
    train(compose_train(tmp_path / "on", ["callbacks=[minimal,representation,sample_quality]",
                                          "callbacks.representation.every_n_epochs=1",
                                          "callbacks.sample_quality.every_n_epochs=1", *common]))
    off, on = (json.loads((tmp_path / name / "run" / "metrics.json").read_text()) for name in ("off", "on"))
    assert "val/fcd" in on["val"] and "val/fcd" not in off["val"]  # the scores did run after epoch 1 of 2
    assert on["test"]["test/elbo"] == off["test"]["test/elbo"]
