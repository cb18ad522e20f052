"""Checkpoints written before the pure model was split from the Lightning module still load, evaluate and resume.

The fixtures are real checkpoints of that code (8badfa6: ``python src/train.py model=<m>
'model.net.encoder.hidden_dims=[32]' 'model.net.decoder.hidden_dims=[32]' model.latent_dim=4 trainer.max_epochs=2
callbacks=minimal logger=none``), and
``legacy_expected.json`` holds what that code's ``eval.py … iw_k=10`` printed for them.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import compose_eval, compose_train

from vaelab.models import Autoencoder
from vaelab.models.checkpoint import load
from vaelab.models.codes import GaussianCode, PointCode
from vaelab.tasks.evaluate import run_evaluation
from vaelab.tasks.train import train

FIXTURES = Path(__file__).parent / "fixtures"
EXPECTED = json.loads((FIXTURES / "legacy_expected.json").read_text())["expected"]
NET = ["model.net.encoder.hidden_dims=[32]", "model.net.decoder.hidden_dims=[32]", "model.latent_dim=4"]


@pytest.mark.parametrize("name", ["vae", "ae", "beta_tcvae"])
def test_an_older_checkpoint_evaluates_to_the_numbers_it_gave_before(tmp_path, name):
    cfg = compose_eval(tmp_path, [f"ckpt_path={FIXTURES / f'legacy_{name}.ckpt'}", "iw_k=10"])
    run_evaluation(cfg)
    got = json.loads((tmp_path / "eval" / "metrics.json").read_text())["test"]
    for key, value in EXPECTED[name].items():
        assert got[f"test/{key}"] == (None if value is None else pytest.approx(value, rel=1e-6, abs=1e-9)), key


@pytest.mark.parametrize(("name", "code"), [("vae", GaussianCode), ("ae", PointCode)])
def test_an_older_checkpoint_loads_as_a_pure_model(name, code):
    model = load(FIXTURES / f"legacy_{name}.ckpt")
    assert isinstance(model, Autoencoder) and isinstance(model.code, code)
    assert not model.training
    state = torch.load(FIXTURES / f"legacy_{name}.ckpt", weights_only=True)["state_dict"]
    assert torch.equal(model.encoder[1].weight, state["encoder.1.weight"])  # the weights, not a fresh init
    x = torch.rand(5, 1, 8, 8)
    assert model.embed(x).shape == (5, 4)
    assert model.reconstruct(x).shape == x.shape


def test_an_older_checkpoint_resumes_training(tmp_path):
    ckpt = tmp_path / "legacy_vae.ckpt"
    shutil.copy(FIXTURES / "legacy_vae.ckpt", ckpt)  # (epoch 1 of 2 done)
    cfg = compose_train(tmp_path, [*NET, "trainer.max_epochs=3", f"ckpt_path={ckpt}", "callbacks=minimal",
                                   "logger=none"])
    train(cfg)
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["status"] == "completed"
    assert record["epochs"] == 3  # went on from the checkpoint's epoch, not from scratch
