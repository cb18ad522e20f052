"""sampler=gmm with more mixture components than training codes (issue 24, fault 4): refused with one ConfigError
naming sampler.n_components and the codes there are, before training (whichever callback will fit it) and before an
evaluation computes anything, instead of a traceback at the end of epoch 0."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import compose_eval, compose_train

from vaelab.errors import ConfigError
from vaelab.models.samplers import GaussianMixtureSampler
from vaelab.tasks import evaluate
from vaelab.tasks.train import train

TOO_MANY = ["model=ae", "model.latent_dim=4", "sampler=gmm", "sampler.n_components=2000", "logger=none"]
SAID = r"sampler.n_components=2000 is more than the 1293 training codes the Gaussian mixture is fitted on"


@pytest.mark.parametrize("callbacks", ["[minimal,sample_quality]", "[minimal,samples]"])
def test_more_components_than_training_codes_are_refused_before_training(tmp_path, callbacks):
    with pytest.raises(ConfigError, match=SAID + r" .*Give sampler.n_components <= 1293"):
        train(compose_train(tmp_path, [*TOO_MANY, f"callbacks={callbacks}"]))
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["status"] == "failed" and record["global_step"] == 0 and "sampler.n_components" in record["error"]


def test_more_components_than_training_codes_are_refused_before_an_evaluation_computes(tmp_path, monkeypatch):
    train(compose_train(tmp_path, ["model=ae", "model.latent_dim=4", "logger=none", "callbacks=minimal"]))
    ckpt = json.loads((tmp_path / "run" / "metrics.json").read_text())["test_ckpt"]

    def computed(*args, **kwargs):
        raise AssertionError("the evaluation computed before the sampler was checked")

    monkeypatch.setattr(evaluate, "evaluate", computed)
    with pytest.raises(ConfigError, match=SAID):
        evaluate.run_evaluation(compose_eval(tmp_path, [f"ckpt_path={ckpt}", "iw_k=0", "sampler=gmm",
                                                        "sampler.n_components=2000"]))
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["status"] == "failed"


def test_the_message_says_which_setting_to_change():
    with pytest.raises(ConfigError, match=r"the first sampler.fit_images=5 images of a training split of 1000\).*"
                                          r"sampler.n_components <= 5, or sampler.fit_images >= 10"):
        GaussianMixtureSampler(n_components=10, fit_images=5).check_codes(1000)
    GaussianMixtureSampler(n_components=3, fit_images=5).check_codes(4)  # 4 codes for 3 components: fine
    with pytest.raises(ConfigError, match="at least as many codes"):  # (fitted from Python: the same rule)
        GaussianMixtureSampler(n_components=10).fit(torch.randn(5, 2))
