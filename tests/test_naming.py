"""Run, sweep and eval folders: unique however many start at once, and named by what the run is."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
from conftest import CONF, ROOT
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import setup_globals
from omegaconf import OmegaConf, open_dict

from vaelab.tasks import cluster, run_names
from vaelab.tasks.hparams import run_hparams

ENV = {**os.environ, "VAELAB_ROOT": str(ROOT), "PYTHONWARNINGS": "ignore"}
ENV.pop(run_names.RUN_ID_ENV, None)
TINY = ["trainer=cpu", "trainer.max_epochs=1", "+trainer.limit_train_batches=1", "+trainer.limit_val_batches=1",
        "+trainer.enable_progress_bar=false", "+trainer.enable_model_summary=false", "test=false", "callbacks=none"]
STAMP = "2026-11-27_14-30-05"
TOKEN = r"[0-9a-z]{6}"


@pytest.fixture(autouse=True)
def own_process(monkeypatch):
    """Each test starts as a process without a run token (and leaves none behind for the processes tests start),
    and leaves no Hydra job config behind for the tests after it."""
    monkeypatch.delenv(run_names.RUN_ID_ENV, raising=False)
    monkeypatch.setattr(run_names, "_token", None)
    yield
    HydraConfig.instance().cfg = None


def hydra_config(overrides, config_name="train"):
    """The config of a job of ``config_name``, with its ``hydra`` node, as Hydra hands it to the job (logs in /logs,
    the clock stopped at ``STAMP``)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.log_dir = "/logs"
    HydraConfig.instance().set_config(cfg)
    return cfg


def resolve(cfg, key):
    frozen = datetime.strptime(STAMP, "%Y-%m-%d_%H-%M-%S")
    OmegaConf.register_new_resolver("now", lambda pattern: frozen.strftime(pattern), replace=True, use_cache=True)
    OmegaConf.clear_cache(cfg)  # (composing may have read the clock already)
    try:
        return str(OmegaConf.select(cfg, key))
    finally:
        setup_globals()  # Hydra's own `now` again


@pytest.mark.slow
def test_two_runs_started_together_get_a_folder_each(tmp_path):
    # the same command twice at the same moment: before, both went into runs/<date>_<time> when they reached Hydra in
    # the same second; the second overwrote the first's metrics.json and .hydra, and both wrote into one TensorBoard run
    logs, data = tmp_path / "logs", tmp_path / "data"
    command = [sys.executable, "src/train.py", *TINY, f"paths.log_dir={logs}", f"paths.data_dir={data}"]
    procs = [subprocess.Popen(command, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    for proc in procs:
        assert proc.wait(timeout=300) == 0, proc.stderr.read()[-3000:]
    runs = sorted((logs / "train" / "runs").iterdir())
    assert len(runs) == 2, [r.name for r in runs]
    for run in runs:
        assert re.fullmatch(rf"vae_z16_b1_\d{{4}}-\d\d-\d\d_\d\d-\d\d-\d\d_{TOKEN}", run.name)
        assert json.loads((run / "metrics.json").read_text())["status"] == "completed"
        assert list(run.glob("events.out.tfevents.*"))  # a TensorBoard run each, named by its folder


def test_two_processes_in_the_same_second_resolve_two_run_folders():
    first = resolve(hydra_config([]), "hydra.run.dir")
    run_names._token = None  # another process
    second = resolve(hydra_config([]), "hydra.run.dir")
    assert first != second
    for run_dir in (first, second):
        assert re.fullmatch(rf"/logs/train/runs/vae_z16_b1_{STAMP}_{TOKEN}", run_dir), run_dir


def test_one_process_and_its_ddp_workers_see_one_folder():
    token = run_names.export_run_id()  # as src/train.py does: the processes started from here inherit it
    cfg = hydra_config(["model=ae"])
    run_dir = resolve(cfg, "hydra.run.dir")
    assert resolve(cfg, "hydra.run.dir") == run_dir  # Hydra resolves it more than once
    assert run_dir.endswith(f"_{token}") and os.environ[run_names.RUN_ID_ENV] == token
    # Lightning's DDP launcher starts each extra process with the folder it reads from Hydra's config
    from lightning.fabric.strategies.launchers.subprocess_script import _hydra_subprocess_cmd

    command, _ = _hydra_subprocess_cmd(local_rank=1)
    assert f'hydra.run.dir="{run_dir}"' in command


@pytest.mark.parametrize(
    ("overrides", "name"),
    [
        ([], "vae_z16_b1"),
        (["model=ae", "model.latent_dim=8"], "ae_z8"),
        (["model=beta_vae"], "beta_vae_z16_b4"),
        (["model=beta_vae", "model/net=conv", "model/beta_schedule=linear", "model.latent_dim=10", "data=mnist"],
         "beta_vae-conv_z10_b4-linear_mnist"),
        (["model/objective=capacity", "model.beta=1000"], "vae-capacity_z16_g1000"),
        # what model.beta is, by the objective's own name: FactorVAE's γ, VQ-VAE's commitment cost, none for a prior
        (["model=factor_vae"], "factor_vae_z16_g10"),
        (["model=vqvae"], "vqvae-vqvae_z16_c0.25"),
        (["model=vqvae_prior", "model.init_from=/x.ckpt"], "vqvae_prior-prior_fit-vqvae_z16"),
        (["model=iwae"], "iwae_z16"),
        (["model=beta_tcvae", "model.beta=0.5"], "beta_tcvae_z16_b0.5"),
    ],
)
def test_a_run_folder_says_what_the_run_is(overrides, name):
    run_dir = resolve(hydra_config(overrides), "hydra.run.dir")
    assert run_dir == f"/logs/train/runs/{name}_{STAMP}_{run_names.run_id()}"


@pytest.mark.parametrize(
    ("overrides", "column", "value"),
    [
        (["model=beta_vae"], "model.beta", 4),
        (["model=factor_vae"], "gamma (model.beta)", 10),
        (["model/objective=capacity", "model.beta=1000"], "gamma (model.beta)", 1000),
        (["model=vqvae"], "commitment (model.beta)", 0.25),
        (["model=vqvae_prior", "model.init_from=/x.ckpt"], None, None),
        (["model=iwae"], None, None),
    ],
)
def test_each_objective_shows_its_own_weight_under_its_own_name(overrides, column, value):
    """The objective class declares what model.beta is to it; one HParams column never mixes two meanings."""
    cfg = hydra_config(overrides)
    choices = OmegaConf.to_container(cfg.hydra.runtime.choices)
    hparams = run_hparams(cfg, choices)
    weights = {k: v for k, v in hparams.items() if "model.beta" in k and "schedule" not in k}
    assert weights == ({} if column is None else {column: value})


def test_without_hydra_the_description_is_read_from_the_config():
    # a config composed without Hydra's run (a test, a notebook): the options come back from the _target_s
    cfg = hydra_config(["model=ae", "model/net=conv", "data=fashion_mnist"])
    with open_dict(cfg):
        del cfg["hydra"]
    assert run_names.describe(cfg) == "ae-conv_z16_fashion_mnist"


def test_sweep_job_folders_are_named_by_their_overrides():
    overrides = ["model/objective=iwae", "model.beta=4", "paths.data_dir=/data", "+trainer.limit_train_batches=2",
                 "logger=csv", "model.net.encoder.hidden_dims=[512,256]"]
    cfg = hydra_config([*overrides, "hydra.job.num=3"])
    sweep, job = resolve(cfg, "hydra.sweep.dir"), resolve(cfg, "hydra.sweep.subdir")
    assert re.fullmatch(rf"/logs/train/multiruns/{STAMP}_{TOKEN}", sweep)
    # sorted as Hydra's override_dirname; noisy keys left out; a group's / and a list's brackets made safe
    assert job == "3_model.beta=4,model.net.encoder.hidden_dims=512+256,model.objective=iwae"
    long = run_names.overrides_name([f"model.optimizer.lr={i}" for i in range(100)])
    assert len(long) == run_names.MAX_OVERRIDES and long != run_names.overrides_name(["model.optimizer.lr=1"] * 100)
    assert run_names.overrides_name([]) == "defaults"


def test_eval_folders_sit_under_the_run_they_evaluate():
    trained = f"/logs/train/runs/vae_z16_b1_{STAMP}_abc123"
    cfg = hydra_config([f"ckpt_path={trained}/checkpoints/epoch_004.ckpt", "split=val"], config_name="eval")
    run_dir = resolve(cfg, "hydra.run.dir")
    assert re.fullmatch(rf"/logs/eval/runs/vae_z16_b1_{STAMP}_abc123/epoch_004_val_{STAMP}_{TOKEN}", run_dir)
    elsewhere = hydra_config(["ckpt_path=/tmp/model.ckpt"], config_name="eval")
    assert re.fullmatch(rf"/logs/eval/runs/model_test_{STAMP}_{TOKEN}", resolve(elsewhere, "hydra.run.dir"))
    # an eval sweep over checkpoints names each job by its checkpoint
    sweep = hydra_config([f"ckpt_path={trained}/checkpoints/last.ckpt", "hydra.job.num=0"], config_name="eval")
    assert resolve(sweep, "hydra.sweep.subdir") == f"0_ckpt_path=vae_z16_b1_{STAMP}_abc123-last"


SLURM_JOB = {"SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "train", "SLURM_NTASKS": "8", "SLURM_STEP_ID": "0"}


def test_inside_slurm_every_rank_and_a_requeued_job_find_the_same_folder_and_no_run_is_overwritten(
        tmp_path, monkeypatch):
    for key, value in SLURM_JOB.items():
        monkeypatch.setenv(key, value)

    def run_dir():
        run_names._token = None  # every rank, and the requeued job, is a process of its own
        cluster._claimed = None
        cfg = hydra_config(["model=ae"])
        with open_dict(cfg):
            cfg.paths.log_dir = str(tmp_path)
        return Path(resolve(cfg, "hydra.run.dir"))

    first = run_dir()
    assert first == tmp_path / "train" / "runs" / "ae_z16_slurm-4242-0"
    assert run_dir() == first  # another rank of the srun step
    first.mkdir(parents=True)
    (first / "metrics.json").write_text(json.dumps({"status": "terminated"}))
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")  # requeued after a time-out: goes on where it was
    assert run_dir() == first
    (first / "metrics.json").write_text(json.dumps({"status": "completed"}))
    assert run_dir().name == "ae_z16_slurm-4242-0-2"  # that run finished: the requeued one starts anew beside it

    monkeypatch.delenv("SLURM_RESTART_COUNT")
    monkeypatch.delenv("SLURM_STEP_ID")  # runs in the batch script itself: each claims a folder of its own
    one, two = run_dir(), run_dir()
    assert (one.name, two.name) == ("ae_z16_slurm-4242", "ae_z16_slurm-4242-2") and one.is_dir() and two.is_dir()

    monkeypatch.setenv("SLURM_JOB_NAME", "bash")  # an interactive session: the usual time and token
    assert re.fullmatch(rf"ae_z16_{STAMP}_{TOKEN}", run_dir().name)
