"""Sweeps through Hydra's own launchers and sweepers, the sweep summary, and the paper-replica experiments."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest
import yaml
from conftest import ROOT, compose_train
from hydra.utils import instantiate

from vaelab.data.idx import write_random_mnist_layout
from vaelab.tasks.train import train

ENV = {**os.environ, "VAELAB_ROOT": str(ROOT), "PYTHONWARNINGS": "ignore"}
QUICK = ["trainer=cpu", "trainer.max_epochs=1", "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1",
         "+trainer.limit_test_batches=1", "+trainer.enable_progress_bar=false", "callbacks=minimal", "logger=csv"]


def run_train(args: list[str], tmp_path) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "src/train.py", *args, *QUICK, f"paths.data_dir={tmp_path / 'data'}"],
        cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def job_dirs(sweep):
    # (folders <job number>_<overrides>: 0_model=vae,…)
    return sorted((p for p in sweep.iterdir() if (p / ".hydra").is_dir()), key=lambda p: int(p.name.split("_")[0]))


@pytest.mark.parametrize(("model", "metric", "best"), [("vae", "val/elbo", max), ("ae", "val/loss", min)])
def test_optuna_search_runs_two_trials_on_digits(tmp_path, model, metric, best):
    # the sweep optimises model.monitor in its direction: maximise val/elbo (= minimise −ELBO), minimise AE loss
    sweep = tmp_path / "optuna"
    run_train([f"model={model}", "hparams_search=optuna", "hydra.sweeper.n_trials=2", f"hydra.sweep.dir={sweep}"],
              tmp_path)
    jobs = job_dirs(sweep)
    assert len(jobs) == 2
    values = [json.loads((j / "metrics.json").read_text())["val"][metric] for j in jobs]
    assert values[0] != values[1]
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["best_value"] == pytest.approx(best(values))
    assert set(results["best_params"]) == {"model.optimizer.lr", "model.latent_dim", "data.batch_size"}


@pytest.mark.slow
def test_joblib_launcher_sweep_is_summarised(tmp_path):
    sweep = tmp_path / "joblib"
    run_train(["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "model=beta_vae", "model.beta=1,4",
               f"hydra.sweep.dir={sweep}"], tmp_path)
    jobs = job_dirs(sweep)
    assert [json.loads((j / "metrics.json").read_text())["status"] for j in jobs] == ["completed", "completed"]
    result = subprocess.run([sys.executable, "scripts/summarize_sweep.py", str(sweep)], cwd=ROOT, env=ENV,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader((sweep / "summary.csv").open()))
    assert [r["model.beta"] for r in rows] == ["1", "4"]
    for row, job in zip(rows, jobs, strict=True):
        record = json.loads((job / "metrics.json").read_text())
        assert float(row["test_neg_elbo"]) == pytest.approx(-record["test"]["test/elbo"])
    assert (sweep / "rate_distortion.png").stat().st_size > 1000


def test_reference_experiment_is_the_pytorch_example_model(tmp_path):
    sys.path.insert(0, str(ROOT / "scripts"))
    from benchmark import ReferenceVAE

    cfg = compose_train(tmp_path, ["experiment=mnist_vae_reference"], fast=False)
    assert (cfg.data.batch_size, cfg.trainer.max_epochs, cfg.data.val_fraction, cfg.seed) == (128, 10, 0.0, 1)
    assert (cfg.model.optimizer.lr, cfg.model.likelihood, cfg.data.binarize) == (1e-3, "bernoulli", "none")
    model = instantiate(cfg.model, image_shape=[1, 28, 28], _recursive_=False)
    ours = sorted(p.numel() for p in model.parameters())
    reference = sorted(p.numel() for p in ReferenceVAE().parameters())
    # fc21 and fc22 (400→20 each) are one 400→40 layer here: same maps, same count of weights
    assert sum(ours) == sum(reference) == 652_824
    assert ours == sorted([784 * 400, 400, 400 * 40, 40, 20 * 400, 400, 400 * 784, 784])


@pytest.mark.parametrize("experiment", ["mnist_vae_reference", "mnist_conv_vae"])
def test_mnist_experiments_train_without_a_validation_split(tmp_path, experiment):
    write_random_mnist_layout(tmp_path / "data", "MNIST", n_train=300, n_test=100)
    cfg = compose_train(tmp_path, [f"experiment={experiment}", "trainer.max_epochs=1", "logger=none",
                                   "+trainer.enable_progress_bar=false"], fast=False)
    assert train(cfg) is None  # no validation split: nothing for a sweeper to optimise
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["status"] == "completed" and record["val"] == {}
    assert record["test"]["test/loss"] > 0 and record["global_step"] == 3


def test_script_relaunching_ddp_is_refused_in_a_multirun(tmp_path):
    # its extra processes would re-run the whole sweep; the message names the way out
    result = subprocess.run(
        [sys.executable, "src/train.py", "-m", "trainer=ddp_cpu", *QUICK[1:], f"hydra.sweep.dir={tmp_path / 'm'}",
         f"paths.data_dir={tmp_path / 'data'}"],
        cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode != 0
    assert "trainer.strategy=ddp_spawn" in result.stderr
    record = json.loads((tmp_path / "m" / "0_trainer.max_epochs=1,trainer=ddp_cpu" / "metrics.json").read_text())
    assert record["status"] == "failed" and "multirun" in record["error"]


def test_a_second_sweep_into_the_same_folder_is_refused_and_the_first_kept(tmp_path):
    sweep = tmp_path / "sweep"
    run_train(["-m", "model=ae", f"hydra.sweep.dir={sweep}"], tmp_path)
    first = {p.name: p.read_bytes() for p in sorted(sweep.rglob("*")) if p.is_file()}
    result = subprocess.run(
        [sys.executable, "src/train.py", "-m", "model=ae,vae", *QUICK, f"hydra.sweep.dir={sweep}",
         f"paths.data_dir={tmp_path / 'data'}"], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert result.stderr.startswith(f"hydra.sweep.dir={sweep} already holds the sweep ")
    assert "a second sweep there would run its jobs in the same job folders" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert {p.name: p.read_bytes() for p in sorted(sweep.rglob("*")) if p.is_file()} == first  # nothing touched


def test_of_two_sweeps_claiming_one_folder_at_once_exactly_one_gets_it(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from vaelab.errors import ConfigError
    from vaelab.tasks.output_dir import claim_sweep_dir

    def claim(token: str) -> str:
        try:
            claim_sweep_dir(tmp_path, token)
            return "claimed"
        except ConfigError as err:
            return str(err)

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(claim, [f"t{i}" for i in range(8)]))
    assert outcomes.count("claimed") == 1
    assert all("already holds the sweep t" in o for o in outcomes if o != "claimed")
    old = tmp_path / "old"
    old.mkdir()
    (old / "multirun.yaml").write_text("hydra: {}\n")  # a sweep made before folders were claimed
    with pytest.raises(ConfigError, match=r"already holds a sweep: a second sweep"):
        claim_sweep_dir(old, "t9")
