"""End-to-end training through the real Hydra configs: every model, sweeps, TensorBoard output, errors, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import types
import warnings
from pathlib import Path

import pytest
import torch
from conftest import ROOT, compose_train
from lightning import Callback
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from vaelab.dashboard.base import DashboardCallback
from vaelab.errors import ConfigError, DataNotFoundError
from vaelab.tasks.train import build, check_launcher, train

ENV = {**os.environ, "VAELAB_ROOT": str(ROOT), "PYTHONWARNINGS": "ignore"}


def read_metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.mark.parametrize("model", ["ae", "vae", "beta_vae"])
def test_each_model_trains_and_records_metrics(tmp_path, model):
    cfg = compose_train(tmp_path, [f"model={model}", "logger=none", "callbacks=minimal"])
    value = train(cfg)
    record = read_metrics(tmp_path / "run")
    assert record["status"] == "completed"
    assert record["global_step"] == 3
    monitor = "val/loss" if model == "ae" else "val/elbo"  # comparable across epochs whatever β is
    assert record["best"]["monitor"] == monitor
    assert value == record["best"]["score"] == pytest.approx(record["val"][monitor])  # one epoch: best = last
    assert record["test"]["test/loss"] > 0
    assert Path(record["test_ckpt"]).is_file()
    # digits are grey levels under a Bernoulli likelihood: the record says the numbers are cross-entropies
    assert len(record["notes"]) == 1 and "cross-entropy" in record["notes"][0]
    if model == "ae":
        assert "val/kl" not in record["val"]
    else:
        val = record["val"]
        assert val["val/elbo"] == pytest.approx(-(val["val/recon"] + val["val/kl"]), rel=1e-5)
        beta = 4.0 if model == "beta_vae" else 1.0
        assert val["val/beta"] == beta
        assert val["val/loss"] == pytest.approx(val["val/recon"] + beta * val["val/kl"], rel=1e-5)


def test_tensorboard_has_scalars_and_images(tmp_path):
    cfg = compose_train(tmp_path, ["model=vae", "trainer.max_epochs=2"])
    train(cfg)
    acc = EventAccumulator(str(tmp_path / "run"), size_guidance={"images": 0, "scalars": 0})  # the run folder's own
    acc.Reload()
    scalars, images = set(acc.Tags()["scalars"]), set(acc.Tags()["images"])
    for stage in ("train", "val"):
        for term in ("loss", "recon", "kl", "elbo", "beta"):
            assert f"{stage}/{term}" in scalars
    # the test results are a table and HParams metrics (test_summary.py), not one-point charts; no epoch jump either
    assert not [tag for tag in scalars if tag.startswith("test/")]
    assert [e.value for e in acc.Scalars("epoch")] == [0, 0, 1, 1]
    for tag in ("reconstructions", "samples", "latent_space", "kl_per_dim", "traversal"):
        assert f"val/{tag}" in images
    for tag in ("reconstructions", "latent_space"):  # (the scatter is drawn in a worker thread)
        assert len(acc.Images(f"val/{tag}")) == 2  # one per validation epoch, none from the sanity check
    assert len(acc.Images("val/kl_per_dim")) == 1  # every 5 epochs, and at the last
    # images sit at the same steps as the validation scalars (Lightning's: the last training batch's step)
    assert [e.step for e in acc.Images("val/reconstructions")] == [e.step for e in acc.Scalars("val/elbo")] == [2, 5]
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()


def test_seed_zero_is_honoured(tmp_path):
    losses = []
    for i, seed in enumerate([0, 0, 1]):
        cfg = compose_train(tmp_path / str(i), [f"seed={seed}", "logger=none", "callbacks=none", "test=false"])
        losses.append(train(cfg))
    assert losses[0] == losses[1]
    assert losses[0] != losses[2]


def test_resume_from_last_checkpoint_continues_the_run(tmp_path):
    first = compose_train(tmp_path / "a", ["trainer.max_epochs=2", "callbacks=minimal", "test=false"])
    train(first)
    before = read_metrics(tmp_path / "a" / "run")
    checkpoints = tmp_path / "a" / "run" / "checkpoints"
    resumed = compose_train(tmp_path / "b", ["callbacks=minimal", "trainer.max_epochs=3",
                                             f"ckpt_path={checkpoints / 'last.ckpt'}"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(resumed)
    assert not [w for w in caught if "dirpath has changed" in str(w.message)]
    after = read_metrics(tmp_path / "b" / "run")
    assert after["status"] == "completed" and after["global_step"] == 9 and after["epochs"] == 3
    assert after["resumed_from"] == str(checkpoints / "last.ckpt")
    # the checkpoints go on in the first run's folder, so the best score from before the resume still counts
    assert after["checkpoints_dir"] == str(checkpoints) and Path(after["best_ckpt"]).parent == checkpoints
    assert after["best"]["score"] == pytest.approx(max(before["best"]["score"], after["val"]["val/elbo"]))
    assert torch.load(checkpoints / "last.ckpt", weights_only=True, map_location="cpu")["global_step"] == 9
    assert not (tmp_path / "b" / "run" / "checkpoints").exists()
    # one TensorBoard curve over all three epochs, in the first run's folder
    acc = EventAccumulator(str(tmp_path / "a" / "run"), size_guidance={"scalars": 0})
    acc.Reload()
    assert [e.step for e in acc.Scalars("val/elbo")] == [2, 5, 8]


@pytest.mark.parametrize("case", ["another checkpoint", "a multirun"])
def test_other_starts_from_a_checkpoint_leave_its_run_alone(tmp_path, monkeypatch, case):
    train(compose_train(tmp_path / "a", ["trainer.max_epochs=2", "logger=none", "callbacks=minimal", "test=false",
                                         "callbacks.model_checkpoint.save_top_k=-1"]))
    checkpoints = tmp_path / "a" / "run" / "checkpoints"
    before = sorted(p.name for p in checkpoints.iterdir())
    start = checkpoints / ("epoch_000.ckpt" if case == "another checkpoint" else "last.ckpt")
    if case == "a multirun":  # every job of a sweep over a checkpoint must write into its own folder
        monkeypatch.setattr("vaelab.tasks.resume.in_multirun", lambda: True)
    cfg = compose_train(tmp_path / "b", ["trainer.max_epochs=3", "logger=none", "callbacks=minimal", "test=false",
                                         f"ckpt_path={start}"])
    train(cfg)
    after = read_metrics(tmp_path / "b" / "run")
    assert after["status"] == "completed" and "checkpoints_dir" not in after
    assert Path(after["best_ckpt"]).parent == tmp_path / "b" / "run" / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == before
    assert torch.load(checkpoints / "last.ckpt", weights_only=True)["global_step"] == 6  # untouched


def test_no_checkpoint_callback_writes_no_checkpoints(tmp_path):
    cfg = compose_train(tmp_path, ["callbacks=none"])
    train(cfg)
    record = read_metrics(tmp_path / "run")
    assert record["status"] == "completed" and "best_ckpt" not in record
    assert record["test_ckpt"].startswith("current weights")
    assert not list((tmp_path / "run").rglob("*.ckpt"))


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("model.latent_dim=0", "model.latent_dim"),
        ("model.beta=-1", "model.beta"),
        ("data.batch_size=0", "data.batch_size"),
        ("model.likelihood=poisson", "model.likelihood"),
        ("ckpt_path=/no/such.ckpt", "ckpt_path"),
    ],
)
def test_invalid_values_stop_before_anything_runs(tmp_path, override, key):
    cfg = compose_train(tmp_path, [override])
    with pytest.raises(ConfigError, match=key):
        train(cfg)
    record = read_metrics(tmp_path / "run")  # nothing was built, but the failure is on record for sweeps
    assert record["status"] == "failed" and key in record["error"]
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_unknown_likelihood_message_lists_allowed_values(tmp_path):
    with pytest.raises(ConfigError, match="bernoulli, gaussian"):
        train(compose_train(tmp_path, ["model.likelihood=poisson"]))


def test_missing_data_stops_with_a_message_naming_the_files(tmp_path):
    cfg = compose_train(tmp_path, ["data=fashion_mnist", "data.download=false", "logger=none"])
    with pytest.raises(DataNotFoundError) as err:
        train(cfg)
    message = str(err.value)
    assert str(tmp_path / "data" / "FashionMNIST" / "raw") in message
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        assert name in message
    record = read_metrics(tmp_path / "run")
    assert record["status"] == "failed" and "DataNotFoundError" in record["error"]


def test_command_line_error_is_one_message_not_a_traceback(tmp_path, python):
    result = subprocess.run(
        [python, "src/train.py", "model.latent_dim=0", "data.batch_size=0", f"paths.log_dir={tmp_path}"],
        cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode != 0
    assert "model.latent_dim = 0 is invalid" in result.stderr
    assert "data.batch_size = 0 is invalid" in result.stderr
    assert "Traceback" not in result.stderr


def test_multirun_sweep_makes_one_job_dir_per_model(tmp_path, python):
    sweep = tmp_path / "sweep"
    result = subprocess.run(
        [python, "src/train.py", "-m", "model=ae,vae,beta_vae", "logger=csv", "callbacks=minimal",
         "trainer=cpu", "trainer.max_epochs=1", "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1",
         "+trainer.limit_test_batches=1", "+trainer.enable_progress_bar=false", f"hydra.sweep.dir={sweep}",
         f"paths.data_dir={tmp_path / 'data'}"],
        cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    # <job number>_<its overrides but the noisy ones (paths, logger, callbacks, limits, progress bar)>
    assert [p.name for p in jobs] == [f"{i}_model={m},trainer.max_epochs=1,trainer=cpu"
                                      for i, m in enumerate(["ae", "vae", "beta_vae"])]
    for job, model in zip(jobs, ["ae", "vae", "beta_vae"], strict=True):
        record = read_metrics(job)
        assert record["status"] == "completed"
        assert record["overrides"] == [f"model={model}"] or f"model={model}" in record["overrides"]
        assert "val/loss" in record["val"] and "test/loss" in record["test"]


@pytest.mark.slow
def test_lightning_ddp_on_two_cpu_processes_shards_the_data_the_same_way_with_either_loader(tmp_path, python):
    # 145 val images (an odd number): unpadded shards of 73 and 72, so every image counts once in the val mean.
    # The autoencoder draws no random numbers (the DataLoader itself draws a seed from the global RNG each epoch,
    # which would change a VAE's ε), so the two loaders must give the same numbers.
    records, warned = {}, {}
    for loader in ("tensor", "dataloader"):
        run = tmp_path / loader
        result = subprocess.run(
            [python, "src/train.py", "model=ae", "trainer=ddp_cpu", "trainer.max_epochs=1", "logger=none",
             "callbacks=minimal", "+trainer.enable_progress_bar=false", f"data.loader={loader}",
             "data.val_fraction=0.1007",
             f"hydra.run.dir={run}", f"paths.data_dir={tmp_path / 'data'}"],
            cwd=ROOT, env={**ENV, "PYTHONWARNINGS": "default"}, capture_output=True, text=True, timeout=600,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        records[loader] = read_metrics(run)
        warned[loader] = "replicates some samples" in result.stderr  # Lightning's own padding sampler
    for record in records.values():
        assert record["status"] == "completed"
        # 1,292 training images, 646 per process, batches of 32: 21 steps for the epoch (41 on one process)
        assert record["global_step"] == 21
    assert warned == {"tensor": False, "dataloader": False}
    # the same order and the same shards: the same numbers, to float precision
    for split in ("train", "val", "test"):
        for key, value in records["tensor"][split].items():
            assert records["dataloader"][split][key] == pytest.approx(value, rel=1e-5), key


def test_lightning_warnings_that_ask_nothing_of_the_user_are_not_printed(tmp_path):
    # 3 training batches < log_every_n_steps=50 makes Lightning warn about its logging interval, which does not
    # apply (vaelab logs epoch means only); Lightning's own _pytree warns about a deprecated torch API.
    cfg = compose_train(tmp_path, ["logger=csv", "callbacks=minimal", "test=false"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(cfg)
    messages = [str(w.message) for w in caught]
    assert not [m for m in messages if "logging interval" in m or "LeafSpec" in m], messages


class SlowDrawing(DashboardCallback):
    """A drawing that takes half a second in its worker thread, so it is surely in flight when training stops."""

    def draw(self, writer, tag_prefix, step, module, x, y, out) -> None:
        self.in_background(lambda: (time.sleep(0.5), writer.add_scalar("slow/drawn", 1.0, step)))


class InterruptAfterValidation(Callback):
    """Stands in for Ctrl-C at the end of the second validation epoch, right after the dashboard callbacks have
    handed their drawings to their worker threads."""

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch == 1 and not trainer.sanity_checking:
            raise KeyboardInterrupt


@pytest.fixture
def sigint_restored():
    """Lightning ignores further Ctrl-C after handling one; give the test session its handler back."""
    handler = signal.getsignal(signal.SIGINT)
    yield
    signal.signal(signal.SIGINT, handler)


def test_ctrl_c_keeps_the_record_and_the_drawings_in_flight(tmp_path, sigint_restored):
    cfg = compose_train(
        tmp_path,
        ["trainer.max_epochs=3", "callbacks.dashboard_budget=null", "+callbacks.slow._target_=test_train.SlowDrawing",
         "+callbacks.interrupt._target_=test_train.InterruptAfterValidation"],
    )
    with pytest.raises(SystemExit):  # Lightning's graceful shutdown ends in sys.exit(1)
        train(cfg)
    record = read_metrics(tmp_path / "run")
    assert record["status"] == "interrupted" and record["error"] == "interrupted in epoch 1"
    assert record["epochs"] == 1 and record["global_step"] == 6
    assert record["train"]["train/loss"] > 0 and record["val"]["val/elbo"] < 0  # the epoch it finished
    assert record["best"]["monitor"] == "val/elbo" and record["best"]["score"] == record["val"]["val/elbo"]
    assert Path(record["best_ckpt"]).is_file() and Path(record["last_ckpt"]).is_file()
    acc = EventAccumulator(str(tmp_path / "run"), size_guidance={"images": 0})
    acc.Reload()
    for tag in ("reconstructions", "latent_space"):  # epoch 1's too: written before the loggers were closed
        assert len(acc.Images(f"val/{tag}")) == 2, tag
    assert len(acc.Scalars("slow/drawn")) == 2


def test_testing_a_checkpoint_reads_the_beta_schedule_at_its_step(tmp_path):
    # a warm-up over 4 steps, 3 steps an epoch: the first epoch's weights were saved at step 3 (β = 0.75), the
    # run ends at step 6 (β = 1); testing the first checkpoint must score it with its own β
    cfg = compose_train(tmp_path, ["logger=none", "callbacks=minimal", "test=false", "trainer.max_epochs=2",
                                   "model/beta_schedule=linear", "model.beta_schedule.warmup_steps=4",
                                   "callbacks.model_checkpoint.save_top_k=-1"])
    datamodule, model, trainer = build(cfg)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(model, datamodule=datamodule)
    assert not [w for w in caught if "warmup_steps" in str(w.message)]  # 4 steps fit in the 6 of training
    first = tmp_path / "run" / "checkpoints" / "epoch_000.ckpt"
    trainer.test(model, datamodule=datamodule, ckpt_path=str(first))
    metrics = trainer.callback_metrics
    assert float(metrics["test/beta"]) == 0.75
    recon, kl = float(metrics["test/recon"]), float(metrics["test/kl"])
    assert float(metrics["test/loss"]) == pytest.approx(recon + 0.75 * kl, rel=1e-5)
    trainer.test(model, datamodule=datamodule)  # the weights are still the first checkpoint's
    assert float(trainer.callback_metrics["test/beta"]) == 0.75
    trainer.fit(model, datamodule=datamodule, ckpt_path=str(first))  # epoch 1 again, from step 3 to 6
    trainer.test(model, datamodule=datamodule)  # a fit's own weights: its last step (6), not the loaded one (3)
    assert float(trainer.callback_metrics["test/beta"]) == 1.0


def test_a_warmup_longer_than_training_is_warned_about(tmp_path):
    cfg = compose_train(tmp_path, ["logger=none", "callbacks=minimal", "test=false", "model/beta_schedule=linear"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(cfg)
    assert [w for w in caught if "warmup_steps=1000 steps but this run trains 3" in str(w.message)]


class InterruptTesting(Callback):
    def on_test_start(self, trainer, pl_module) -> None:
        raise KeyboardInterrupt


def test_ctrl_c_while_testing_keeps_the_fit_and_says_where_it_stopped(tmp_path, sigint_restored):
    cfg = compose_train(tmp_path, ["logger=none", "callbacks=minimal",
                                   "+callbacks.interrupt._target_=test_train.InterruptTesting"])
    with pytest.raises(SystemExit):
        train(cfg)
    record = read_metrics(tmp_path / "run")
    assert record["status"] == "interrupted" and record["error"] == "interrupted in testing, after fitting"
    assert record["val"]["val/elbo"] < 0 and Path(record["best_ckpt"]).is_file() and "test" not in record


@pytest.mark.parametrize(
    ("processes", "external", "refused"), [(2, False, True), (1, False, False), (2, True, False)],
    ids=["two local processes", "one process", "started by the cluster"],
)
def test_script_launcher_is_refused_in_a_multirun_only_when_it_would_relaunch(monkeypatch, processes, external,
                                                                              refused):
    from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

    # Lightning's script launcher (a subclass, so isinstance holds) that starts nothing
    launcher = type("FakeLauncher", (_SubprocessScriptLauncher,), {"__init__": lambda self: None})()
    launcher.num_processes = processes
    strategy = types.SimpleNamespace(
        launcher=launcher, cluster_environment=types.SimpleNamespace(creates_processes_externally=external)
    )
    trainer = types.SimpleNamespace(strategy=strategy)
    monkeypatch.setattr("vaelab.tasks.train.in_multirun", lambda: True)
    if refused:
        with pytest.raises(ConfigError, match="ddp_spawn"):
            check_launcher(trainer)
    else:
        check_launcher(trainer)
    monkeypatch.setattr("vaelab.tasks.train.in_multirun", lambda: False)
    check_launcher(trainer)  # a single run is never refused
