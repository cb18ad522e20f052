"""vaelab from Python (vaelab.train, vaelab.evaluate, vaelab.load) and the example in docs/ that uses them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import lightning
import pytest
import torch

import vaelab
from vaelab.data import DigitsDataModule
from vaelab.metrics.likelihood import evaluate
from vaelab.models import Autoencoder

ROOT = Path(__file__).resolve().parents[1]
TINY = ["model.latent_dim=3", "trainer.max_epochs=1", "+trainer.limit_train_batches=3", "callbacks=minimal",
        "logger=none", "+trainer.enable_progress_bar=false", "+trainer.enable_model_summary=false"]


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("VAELAB_ROOT", raising=False)  # as outside the clone: logs/ and data/ under the working folder
    return tmp_path


def test_train_evaluate_and_load_from_python_agree_with_each_other(in_tmp):
    record = vaelab.train(TINY)
    assert record["status"] == "completed"
    run = Path(record["run_dir"])
    assert run.parent == in_tmp / "logs" / "train" / "runs" and run.name.startswith("vae_z3_b1_")
    evaluated = vaelab.evaluate(record["best_ckpt"], ["iw_k=0"])
    assert evaluated["status"] == "completed" and Path(evaluated["run_dir"]).is_relative_to(in_tmp / "logs" / "eval")

    # the pure model of the checkpoint, on the same test images with the same seed: eval.py's −ELBO exactly
    model = vaelab.load(record["best_ckpt"])
    assert isinstance(model, Autoencoder) and not model.training
    data = DigitsDataModule(data_dir=in_tmp / "data")
    data.setup("test")
    lightning.seed_everything(12345, verbose=False)  # eval.py's seed
    mine = evaluate(model, data.evaluation_batches("test"), k=0)
    assert mine["neg_elbo"] == pytest.approx(evaluated["test"]["test/neg_elbo"], rel=1e-9)
    # and the training run's own test of that checkpoint, up to the draw of z
    assert mine["neg_elbo"] == pytest.approx(-record["test"]["test/elbo"], rel=0.02)


def test_two_runs_from_one_process_get_folders_of_their_own(in_tmp):
    first, second = vaelab.train([*TINY, "test=false"]), vaelab.train([*TINY, "test=false"])
    assert first["run_dir"] != second["run_dir"]


def test_errors_are_raised_as_exceptions(in_tmp):
    with pytest.raises(ValueError, match="model.latent_dim = 0 is invalid"):
        vaelab.train([*TINY, "model.latent_dim=0"])


def test_the_pure_model_of_a_checkpoint_encodes_decodes_samples_and_reconstructs(in_tmp):
    model = vaelab.load(vaelab.train([*TINY, "test=false"])["best_ckpt"])
    x = torch.rand(5, 1, 8, 8)
    with torch.no_grad():
        mu, logvar = model.encode(x)
        assert mu.shape == logvar.shape == (5, 3)
        assert model.embed(x).shape == (5, 3) and model.decode(mu).shape == x.shape
        assert model.reconstruct(x).shape == x.shape and 0 <= model.reconstruct(x).min()
        a = model.sample(4, generator=torch.Generator().manual_seed(1))
        b = model.sample(4, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.shape == (4, 1, 8, 8)


def test_the_api_example_in_docs_runs(in_tmp):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    env.pop("VAELAB_ROOT", None)
    result = subprocess.run([sys.executable, str(ROOT / "docs" / "examples" / "api_tour.py"), "--epochs", "1",
                             "--out", "codes.png"], cwd=in_tmp, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "embedded 360 test images into 2 dimensions" in result.stdout
    assert (in_tmp / "codes.png").stat().st_size > 10_000
