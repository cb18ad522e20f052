"""Scale-out: Hydra's submitit launchers (``hydra/launcher=submitit_local`` for real, ``hydra/launcher=slurm`` up to the
sbatch script it would submit), Lightning's SLURM environment for multi-node DDP (``trainer=slurm``) and the resume of
a job SLURM has requeued, all offline: no SLURM cluster is needed (``srun`` and ``scontrol`` are stand-ins)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import CONF, ROOT, compose_train
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from lightning import Callback
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.fabric.utilities.rank_zero import rank_zero_only as fabric_rank_zero_only
from lightning_utilities.core.rank_zero import rank_zero_only as utilities_rank_zero_only
from omegaconf import OmegaConf

import vaelab.tasks.resolvers  # noqa: F401  (registers the resolvers of conf/hydra/, as src/train.py does)
from vaelab.tasks.cluster import restart_count, resume_after_requeue, slurm_job_key
from vaelab.tasks.train import check_launcher, train

ENV = {**os.environ, "VAELAB_ROOT": str(ROOT), "PYTHONWARNINGS": "ignore"}
TINY = ["trainer=cpu", "trainer.max_epochs=1", "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1",
        "+trainer.limit_test_batches=1", "+trainer.enable_progress_bar=false", "+trainer.enable_model_summary=false",
        "callbacks=minimal", "logger=none"]
# what srun sets in task 5 of a job of 2 nodes x 4 tasks
SLURM_TASK = {"SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "train", "SLURM_NTASKS": "8", "SLURM_NTASKS_PER_NODE": "4",
              "SLURM_NNODES": "2", "SLURM_PROCID": "5", "SLURM_LOCALID": "1", "SLURM_NODEID": "1",
              "SLURM_NODELIST": "gpu[07-08]"}
# a job of one task (what a single-device run sees)
SLURM_SINGLE = {"SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "train", "SLURM_NTASKS": "1", "SLURM_NTASKS_PER_NODE": "1",
                "SLURM_NNODES": "1", "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0",
                "SLURM_NODELIST": "gpu07"}


def read_metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def compose_with_hydra(overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        return compose(config_name="train", overrides=overrides, return_hydra_config=True)


@pytest.fixture
def no_slurm(monkeypatch):
    """No SLURM variable of the machine the tests run on leaks into a test."""
    for key in list(os.environ):
        if key.startswith("SLURM_"):
            monkeypatch.delenv(key)


@pytest.fixture
def stand_ins(tmp_path, monkeypatch):
    """``srun`` (submitit's SLURM executor insists on finding it) and an ``scontrol`` that writes down its arguments
    (what Lightning's auto-requeue runs), first on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "scontrol_calls"
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    for tool in ("srun", "scontrol"):
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return calls


# ---------------------------------------------------------------------------------- submitit, on this machine
@pytest.mark.slow
def test_a_sweep_runs_through_submitit_local(tmp_path):
    sweep = tmp_path / "sweep"
    result = subprocess.run(
        [sys.executable, "src/train.py", "-m", "hydra/launcher=submitit_local", "model=vae,ae", *TINY,
         f"hydra.sweep.dir={sweep}", f"paths.data_dir={tmp_path / 'data'}"],
        cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Submitit 'local' sweep output dir" in result.stderr + result.stdout
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert len(jobs) == 2
    for job, model in zip(jobs, ("vae", "ae"), strict=True):  # (folders <job number>[_<its overrides>])
        record = read_metrics(job)
        assert record["status"] == "completed", record
        assert f"model={model}" in record["overrides"]
        assert "test/loss" in record["test"]
        assert (job / "checkpoints" / "last.ckpt").is_file()
    # each job ran as a submitit job of its own (its own process, log and result)
    assert len([p for p in (sweep / ".submitit").iterdir() if p.name != "%j"]) == 2


# ---------------------------------------------------------------------------------- submitit, to SLURM
def test_the_slurm_launcher_ties_tasks_gpus_and_nodes_to_the_trainer():
    cfg = compose_with_hydra(["hydra/launcher=slurm", "trainer=slurm", "trainer.devices=4", "trainer.num_nodes=2",
                              "hydra.launcher.partition=gpu"])
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["_target_"] == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert launcher["tasks_per_node"] == launcher["gpus_per_node"] == 4
    assert launcher["nodes"] == 2
    assert launcher["partition"] == "gpu"
    assert launcher["signal_delay_s"] > 0 and launcher["max_num_timeout"] >= 1
    # a trainer without num_nodes (trainer=default, gpu, cpu, ...) runs on one node
    single = compose_with_hydra(["hydra/launcher=slurm", "trainer=gpu"])
    assert OmegaConf.to_container(single.hydra.launcher, resolve=True)["nodes"] == 1
    assert single.hydra.launcher.tasks_per_node == 1


def test_a_slurm_sweep_submits_one_job_array_with_the_sbatch_options_it_should(tmp_path, stand_ins):
    """The real command line up to the submission itself: a stand-in sbatch keeps the script it is given and
    refuses it (there is no cluster), so the sweep stops there."""
    submitted = tmp_path / "submitted.sh"
    sbatch = stand_ins.parent / "bin" / "sbatch"
    sbatch.write_text(f'#!/bin/sh\ncat "$1" > {submitted}\necho "sbatch: error: no cluster here" >&2\nexit 1\n')
    sbatch.chmod(0o755)
    result = subprocess.run(
        [sys.executable, "src/train.py", "-m", "hydra/launcher=slurm", "hydra.launcher.partition=gpu",
         "hydra.launcher.timeout_min=90", "trainer=slurm", "trainer.devices=4", "trainer.num_nodes=2",
         "model=vae,beta_vae", f"hydra.sweep.dir={tmp_path / 'sweep'}"],
        cwd=ROOT, env={**ENV, "PATH": os.environ["PATH"]}, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode != 0 and "no cluster here" in result.stderr, result.stderr[-3000:]
    script = submitted.read_text()
    for line in ("--array=0-1%2", "--nodes=2", "--ntasks-per-node=4", "--gpus-per-node=4", "--partition=gpu",
                 "--time=90", "--signal=USR2@120", "--mem=64GB", "--cpus-per-task=8", "--job-name=train"):
        assert f"#SBATCH {line}\n" in script, line
    # every task is started by srun (one DDP rank per task), with this very Python
    assert "\nsrun --unbuffered " in script and f"{sys.executable} -u -m submitit.core._submit" in script


# ---------------------------------------------------------------------------------- Lightning's SLURM environment
def test_lightning_takes_ranks_and_nodes_from_slurm_for_multi_node_ddp(tmp_path, monkeypatch, no_slurm):
    for key, value in SLURM_TASK.items():
        monkeypatch.setenv(key, value)
    for key in ("MASTER_ADDR", "MASTER_PORT"):  # (Lightning sets them: put back as they were afterwards)
        monkeypatch.setenv(key, "")
        monkeypatch.delenv(key)
    for rank_zero_only in (fabric_rank_zero_only, utilities_rank_zero_only):  # (and this process's rank)
        monkeypatch.setattr(rank_zero_only, "rank", rank_zero_only.rank)
    # (accelerator=cpu: this machine has no GPU; the environment and the ranks are the same)
    cfg = compose_train(tmp_path, ["trainer=slurm", "trainer.num_nodes=2", "trainer.accelerator=cpu"], fast=False)
    trainer = instantiate(cfg.trainer)
    environment = trainer.strategy.cluster_environment
    assert isinstance(environment, SLURMEnvironment)
    assert environment.auto_requeue and environment.requeue_signal == signal.SIGUSR1
    assert environment.creates_processes_externally  # Lightning starts no process: SLURM did
    assert (trainer.num_nodes, trainer.num_devices, trainer.world_size) == (2, 4, 8)
    assert (trainer.global_rank, trainer.local_rank, trainer.node_rank) == (5, 1, 1)
    assert environment.main_address == "gpu07" and environment.main_port == 15000 + 4242
    monkeypatch.setattr("vaelab.tasks.train.in_multirun", lambda: True)
    check_launcher(trainer)  # allowed in a sweep: it relaunches nothing

    # Lightning refuses, when it starts, a trainer.devices other than SLURM's tasks per node
    launcher = trainer.strategy.launcher
    environment.validate_settings(num_devices=launcher.num_processes, num_nodes=launcher.num_nodes)
    with pytest.raises(ValueError, match="ntasks-per-node=4"):
        environment.validate_settings(num_devices=2, num_nodes=2)


# ---------------------------------------------------------------------------------- requeue
def test_slurm_job_key_is_the_job_or_array_task_and_none_outside_a_batch_job():
    assert slurm_job_key({}) is None
    assert slurm_job_key({"SLURM_JOB_ID": "77", "SLURM_JOB_NAME": "train"}) == "77"
    array = {"SLURM_JOB_ID": "80", "SLURM_ARRAY_JOB_ID": "77", "SLURM_ARRAY_TASK_ID": "3", "SLURM_JOB_NAME": "x"}
    assert slurm_job_key(array) == "77_3"
    for name in ("bash", "interactive"):  # srun --pty bash, salloc: several runs share the job id
        assert slurm_job_key({"SLURM_JOB_ID": "77", "SLURM_JOB_NAME": name}) is None
    assert restart_count({}) == 0 and restart_count({"SLURM_RESTART_COUNT": "2"}) == 2


@pytest.mark.parametrize("case", ["requeued", "not requeued", "no checkpoint", "explicit ckpt_path", "not slurm"])
def test_only_a_requeued_slurm_job_resumes_by_itself(tmp_path, case):
    run = tmp_path / "run"
    cfg = compose_train(tmp_path, ["callbacks=minimal"])
    if case != "no checkpoint":
        (run / "checkpoints").mkdir(parents=True)
        (run / "checkpoints" / "last.ckpt").write_bytes(b"")
    env = {"SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "train", "SLURM_RESTART_COUNT": "1"}
    if case == "not requeued":
        env["SLURM_RESTART_COUNT"] = "0"
    if case == "not slurm":
        env = {}
    if case == "explicit ckpt_path":
        cfg.ckpt_path = "/elsewhere/last.ckpt"
    record = resume_after_requeue(cfg, env)
    if case == "requeued":
        assert cfg.ckpt_path == str(run / "checkpoints" / "last.ckpt")
        assert record == {"slurm": {"job": "4242", "restart_count": 1, "resumed_from": cfg.ckpt_path}}
    elif case == "explicit ckpt_path":
        assert cfg.ckpt_path == "/elsewhere/last.ckpt" and "resumed_from" not in record["slurm"]
    else:
        assert cfg.ckpt_path is None
        assert record == ({} if case in ("not requeued", "not slurm") else {"slurm": {"job": "4242",
                                                                                     "restart_count": 1}})


class SendSigusr1(Callback):
    """What SLURM does ``--signal=SIGUSR1@<s>`` before the time limit: here, once epoch 0 is done and checkpointed."""

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch == 0:
            os.kill(os.getpid(), signal.SIGUSR1)


def test_lightning_auto_requeue_then_the_requeued_job_resumes_from_its_last_checkpoint(tmp_path, monkeypatch,
                                                                                          stand_ins, no_slurm):
    for key, value in SLURM_SINGLE.items():
        monkeypatch.setenv(key, value)
    overrides = ["callbacks=minimal", "logger=none", "test=false"]
    cfg = compose_train(tmp_path, [*overrides, "trainer.max_epochs=2",
                                   "+callbacks.sigusr1._target_=test_launchers.SendSigusr1"])
    assert resume_after_requeue(cfg) == {}  # the first start of the job
    train(cfg)
    # Lightning's handler saved its mid-run checkpoint into the run folder and asked SLURM to requeue the job
    run = tmp_path / "run"
    assert stand_ins.read_text().split() == ["requeue", "4242"]
    assert (run / "hpc_ckpt_1.ckpt").is_file()
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 1

    # the requeued job: the same job id and run folder, SLURM_RESTART_COUNT=1, no ckpt_path on its command line
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    cfg = compose_train(tmp_path, [*overrides, "trainer.max_epochs=3"])
    record = resume_after_requeue(cfg)
    assert record["slurm"]["resumed_from"] == str(run / "checkpoints" / "last.ckpt")
    train(cfg)
    after = read_metrics(run)
    assert after["status"] == "completed" and after["epochs"] == 3 and after["global_step"] == 9
    assert after["resumed_from"] == str(run / "checkpoints" / "last.ckpt")
