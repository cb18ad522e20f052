"""Never lose or misreport a run: divergence, failed sweep trials, SIGTERM, SIGKILL, bad checkpoints, bad paths,
no validation split, and progress in a log file (issue 12)."""

from __future__ import annotations

import io
import json
import math
import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
import torch
import yaml
from conftest import FAST, ROOT, compose_eval, compose_train
from lightning import Callback
from lightning.pytorch.callbacks import TQDMProgressBar

from vaelab.callbacks.divergence import advice, divergence_message
from vaelab.callbacks.progress import EpochLines, progress_bar
from vaelab.errors import ConfigError, DivergedError
from vaelab.reports import sweep as sweep_report
from vaelab.tasks.evaluate import run_evaluation
from vaelab.tasks.recording import write_json
from vaelab.tasks.train import train
from vaelab.training.epoch_sums import non_finite_terms

ENV = {**os.environ, "VAELAB_ROOT": str(ROOT), "PYTHONWARNINGS": "ignore"}
QUICK = ["trainer=cpu", "+trainer.limit_train_batches=3", "+trainer.limit_val_batches=1",
         "+trainer.limit_test_batches=1", "+trainer.enable_progress_bar=false", "+trainer.enable_model_summary=false"]


def strict_json(path: Path) -> dict:
    """``path`` read as strict JSON: bare NaN / Infinity tokens are an error, as for jq or JavaScript."""
    def refuse(token: str) -> None:
        raise ValueError(f"{path} holds the non-JSON token {token}")

    return json.loads(path.read_text(), parse_constant=refuse)


def run_cli(args: list[str], tmp_path: Path, script: str = "src/train.py", timeout: int = 300):
    return subprocess.run([sys.executable, script, *args, f"paths.data_dir={tmp_path / 'data'}"], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=timeout)


# ------------------------------------------------------------------------------------------------ 1. divergence
class PoisonWeights(Callback):
    """Stands in for a divergence: a NaN weight at the start of a chosen training step (``when="start"``: that
    step's loss is NaN), or after its optimizer step (``when="end"``: the loss was finite, the weights are not)."""

    def __init__(self, step: int, when: str = "start") -> None:
        self.step, self.when = step, when

    def _poison(self, trainer, pl_module) -> None:
        if trainer.global_step == self.step:
            with torch.no_grad():
                next(pl_module.parameters()).fill_(float("nan"))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.when == "start":
            self._poison(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.when == "end" and trainer.global_step == self.step + 1:
            with torch.no_grad():
                next(pl_module.parameters()).fill_(float("inf"))


def test_a_diverging_run_stops_at_its_first_non_finite_step_with_one_message(tmp_path):
    cfg = compose_train(tmp_path, ["model.optimizer.lr=100", "trainer.max_epochs=3", "logger=none",
                                   "callbacks=minimal"])
    with pytest.raises(DivergedError) as caught:
        train(cfg)
    message = str(caught.value)
    assert message.startswith("Training diverged at step 1 (epoch 0): the loss is not finite (")
    assert "recon=nan" in message and "kl=inf" in message
    assert "model.optimizer.lr=10 (now 100)" in message and "+trainer.gradient_clip_val=1.0" in message
    record = strict_json(tmp_path / "run" / "metrics.json")
    assert record["status"] == "diverged" and record["error"] == message
    assert record["global_step"] == 1 and record["epochs"] == 0
    assert "test" not in record and "test_ckpt" not in record  # NaN weights are never tested
    assert not list((tmp_path / "run").rglob("*.ckpt"))  # nor saved


def test_divergence_after_good_epochs_keeps_their_checkpoints_and_draws_nothing_from_nan(tmp_path):
    # the full dashboard (every drawing, TensorBoard): a NaN in epoch 1 must stop the run before any of them sees it
    cfg = compose_train(tmp_path, ["trainer.max_epochs=3", "+callbacks.poison._target_=test_failures.PoisonWeights",
                                   "+callbacks.poison.step=4"])
    with pytest.raises(DivergedError, match=r"^Training diverged at step 4 \(epoch 1\)"):
        train(cfg)
    record = strict_json(tmp_path / "run" / "metrics.json")
    assert record["status"] == "diverged" and record["epochs"] == 1 and record["global_step"] == 4
    assert math.isfinite(record["val"]["val/elbo"]) and math.isfinite(record["best"]["score"])
    checkpoints = tmp_path / "run" / "checkpoints"
    assert record["best_ckpt"] == str(checkpoints / "epoch_000.ckpt") and record["best_ckpt"] in record["error"]
    for name in ("epoch_000.ckpt", "last.ckpt"):
        saved = torch.load(checkpoints / name, weights_only=True)
        assert saved["global_step"] == 3
        assert all(torch.isfinite(v).all() for v in saved["state_dict"].values() if v.is_floating_point())
    assert "test" not in record


def test_weights_made_infinite_by_an_epochs_last_step_are_caught_before_validation(tmp_path):
    # step 2 (the last of epoch 0) has a finite loss but leaves infinite weights: nothing may validate, draw or save
    cfg = compose_train(tmp_path, ["trainer.max_epochs=2", "+callbacks.poison._target_=test_failures.PoisonWeights",
                                   "+callbacks.poison.step=2", "+callbacks.poison.when=end"])
    with pytest.raises(DivergedError, match=r"step 3 \(epoch 0\): the model's weights are not finite \(the last"):
        train(cfg)
    assert strict_json(tmp_path / "run" / "metrics.json")["status"] == "diverged"
    assert not list((tmp_path / "run").rglob("*.ckpt"))


def test_checking_every_n_steps_reports_the_steps_in_between(tmp_path):
    cfg = compose_train(tmp_path, ["model.optimizer.lr=100", "logger=none", "callbacks=minimal",
                                   "callbacks.divergence.check_every_n_steps=4", "trainer.limit_train_batches=6"])
    with pytest.raises(DivergedError, match=r"^Training diverged at a step between 0 and 3 \(epoch 0\): the loss"):
        train(cfg)
    assert strict_json(tmp_path / "run" / "metrics.json")["status"] == "diverged"


def test_the_message_names_the_objective_term_and_the_gaussian_std():
    names = ("loss", "recon", "kl", "tc")
    assert non_finite_terms(torch.tensor([float("inf"), 1.0, 2.0, float("nan")]), names) == {
        "loss": float("inf"), "tc": pytest.approx(float("nan"), nan_ok=True)}
    module = types.SimpleNamespace(hparams={"optimizer": {"lr": 0.001}, "likelihood": "gaussian",
                                            "likelihood_std": 0.001})
    trainer = types.SimpleNamespace(gradient_clip_val=0.5, checkpoint_callback=None)
    tips = advice(module, trainer)
    assert tips == ["a lower learning rate, e.g. model.optimizer.lr=0.0001 (now 0.001)",
                    "stronger gradient clipping (trainer.gradient_clip_val=0.5 now)",
                    "a larger Gaussian model.likelihood_std (now 0.001; a tiny one makes the reconstruction error "
                    "huge)"]
    message = divergence_message("step 7 (epoch 2)", {"tc": float("nan")}, module, trainer)
    assert message.splitlines()[0] == "Training diverged at step 7 (epoch 2): the loss is not finite (tc=nan)."


def test_without_the_divergence_callback_a_nan_run_is_not_reported_completed(tmp_path):
    cfg = compose_train(tmp_path, ["model.optimizer.lr=100", "logger=none", "callbacks=none"])
    with pytest.raises(DivergedError, match="after 1 epochs the losses are not finite"):
        train(cfg)
    record = strict_json(tmp_path / "run" / "metrics.json")
    assert record["status"] == "diverged" and "test" not in record
    assert record["train"]["train/loss"] == "NaN"  # a non-finite value, written as a string


def test_metrics_json_is_strict_json_and_the_sweep_summary_reads_it(tmp_path):
    record = {"status": "diverged", "val": {"val/elbo": float("nan"), "val/kl": float("inf"), "val/recon": 3.5},
              "best": {"monitor": "val/elbo", "score": float("-inf")}, "test": {"test/elbo": torch.tensor(-2.0)}}
    job = tmp_path / "0"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("- model.optimizer.lr=100\n")
    write_json(job / "metrics.json", record)
    written = strict_json(job / "metrics.json")
    assert written["val"] == {"val/elbo": "NaN", "val/kl": "Infinity", "val/recon": 3.5}
    assert written["best"]["score"] == "-Infinity" and written["test"]["test/elbo"] == -2.0
    assert [float(v) for v in ("NaN", "Infinity", "-Infinity")][1:] == [math.inf, -math.inf]  # float() reads them
    row = sweep_report.job_row(sweep_report.load_job(job), [])
    assert row["status"] == "diverged" and row["val_recon"] == 3.5
    assert row["val_neg_elbo"] is None and row["val_kl"] is None and row["best_val_neg_elbo"] is None
    assert sweep_report.main([str(tmp_path)]) == 0


def test_command_line_divergence_is_one_message_and_a_failing_exit(tmp_path):
    # the full default dashboard and TensorBoard, as `python src/train.py model.optimizer.lr=100` has them
    run = tmp_path / "run"
    result = run_cli(["model.optimizer.lr=100", *QUICK, f"hydra.run.dir={run}"], tmp_path)
    assert result.returncode == 1
    assert "Training diverged at step 1 (epoch 0): the loss is not finite" in result.stderr
    assert "Traceback" not in result.stderr and "sklearn" not in result.stderr
    assert strict_json(run / "metrics.json")["status"] == "diverged"


# -------------------------------------------------------------------------------------- 2. a search goes on
@pytest.mark.slow
def test_optuna_search_records_diverged_trials_and_goes_on(tmp_path):
    # with the sampler's seed 1234 the trials draw lr = 1000, 1000, 0.001: two diverge, the last one completes
    sweep = tmp_path / "optuna"
    result = run_cli(["hparams_search=optuna", "hydra.sweeper.n_trials=3", "model.optimizer.lr=choice(0.001,1000)",
                      "model.latent_dim=4", "data.batch_size=64", "trainer.max_epochs=1", "callbacks=minimal",
                      "logger=none", *QUICK, f"hydra.sweep.dir={sweep}"], tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = sorted((p for p in sweep.iterdir() if (p / ".hydra").is_dir()), key=lambda p: int(p.name.split("_")[0]))
    records = [strict_json(job / "metrics.json") for job in jobs]
    assert [r["status"] for r in records] == ["diverged", "diverged", "completed"]
    assert "Training diverged" in records[0]["error"]
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["best_params"]["model.optimizer.lr"] == 0.001
    assert results["best_value"] == pytest.approx(records[2]["best"]["score"])
    assert (result.stdout + result.stderr).count("Failed experiment: Training diverged") == 2  # Optuna: failed


def test_an_optuna_search_in_which_every_trial_fails_ends_with_one_message(tmp_path):
    sweep = tmp_path / "optuna"
    result = run_cli(["hparams_search=optuna", "hydra.sweeper.n_trials=2", "model.optimizer.lr=choice(1000,2000)",
                      "model.latent_dim=4", "data.batch_size=64", "trainer.max_epochs=1", "callbacks=minimal",
                      "logger=none", *QUICK, f"hydra.sweep.dir={sweep}"], tmp_path, timeout=600)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "No trials are completed yet" not in result.stderr
    message = next(line for line in result.stderr.splitlines() if line.startswith("The Optuna search"))
    assert message.startswith("The Optuna search ended without a result: none of its 2 trials completed (2 diverged). "
                              "The first one: Training diverged at step ")
    assert f"Each trial's metrics.json in {sweep} says why" in message
    assert not (sweep / "optimization_results.yaml").exists()


# --------------------------------------------------------------------------------------- 3, 4. SIGTERM, SIGKILL
def start_long_run(tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    run = tmp_path / "run"
    with (tmp_path / "stdout.txt").open("w") as stdout:  # (the log lines: Hydra's console log is stdout)
        process = subprocess.Popen(
            [sys.executable, "src/train.py", "trainer.max_epochs=10000", "logger=none", "callbacks=minimal", *QUICK,
             f"hydra.run.dir={run}", f"paths.data_dir={tmp_path / 'data'}"],
            cwd=ROOT, env=ENV, stdout=stdout, stderr=subprocess.PIPE, text=True,
        )
    return process, run


def wait_for_epochs(process: subprocess.Popen, run: Path, epochs: int, timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read()[-3000:]
        try:
            record = strict_json(run / "metrics.json")
        except (OSError, ValueError):
            record = {}
        if record.get("epochs", 0) >= epochs:
            return record
        time.sleep(0.1)
    process.kill()
    raise AssertionError(f"no record of {epochs} epochs in {timeout} s")


def test_sigterm_exits_143_and_records_terminated(tmp_path):
    process, run = start_long_run(tmp_path)
    wait_for_epochs(process, run, 1)
    os.kill(process.pid, signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143  # 128 + SIGTERM: a scheduler sees the job did not finish
    record = strict_json(run / "metrics.json")
    assert record["status"] == "terminated" and record["error"].startswith("terminated by SIGTERM in epoch ")
    assert record["epochs"] >= 1 and Path(record["last_ckpt"]).is_file()
    assert "Traceback" not in stderr
    said = (tmp_path / "stdout.txt").read_text()
    assert f"Terminated by SIGTERM in epoch {record['epochs']}. Resume with ckpt_path={record['last_ckpt']}" in said


def test_a_killed_run_leaves_a_record_of_how_far_it_got(tmp_path):
    process, run = start_long_run(tmp_path)
    wait_for_epochs(process, run, 2)
    process.kill()  # SIGKILL: nothing in the process runs any more
    process.communicate(timeout=60)
    record = strict_json(run / "metrics.json")
    assert record["status"] == "running" and record["epochs"] >= 2
    assert record["global_step"] == 3 * record["epochs"]
    assert record["train"]["train/loss"] > 0 and record["val"]["val/elbo"] < 0
    assert record["best"]["monitor"] == "val/elbo" and Path(record["best_ckpt"]).is_file()
    assert not list(run.glob("*.tmp"))


# ------------------------------------------------------------------------------------------ 5. bad checkpoints
@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("good")
    train(compose_train(tmp, ["logger=none", "callbacks=minimal", "test=false", "model.latent_dim=4"]))
    return tmp / "run" / "checkpoints" / "last.ckpt"


def bad_checkpoint(kind: str, path: Path, good: Path) -> str:
    """Write a bad checkpoint of ``kind`` to ``path``; return what the message must say about it."""
    if kind == "empty":
        path.write_bytes(b"")
        return "the file is empty (0 bytes)"
    if kind == "random bytes":
        path.write_bytes(os.urandom(2000))
        return "it is not a PyTorch checkpoint file"
    if kind == "truncated":
        path.write_bytes(good.read_bytes()[:5000])
        return "it is not a PyTorch checkpoint file"
    if kind == "foreign":
        torch.save({"a": 1}, path)
        return "it is a PyTorch file but not a Lightning checkpoint (it holds a;"
    if kind == "pickled object":
        torch.save({"state_dict": {}, "model": types.SimpleNamespace(a=1)}, path)
        return "it holds Python objects other than tensors and plain values"
    if kind == "another program's":
        torch.save({"state_dict": {}, "hyper_parameters": {"hidden": 3}, "epoch": 0, "global_step": 0}, path)
        return "not of vaelab's model"
    checkpoint = torch.load(good, weights_only=True)
    if kind == "weights only":
        for key in ("optimizer_states", "loops"):
            del checkpoint[key]
        torch.save(checkpoint, path)
        return "it holds the weights only"
    assert kind == "diverged"
    name = next(iter(checkpoint["state_dict"]))
    checkpoint["state_dict"][name].fill_(float("nan"))
    torch.save(checkpoint, path)
    return f"its weights are not finite (NaN or inf in {name}): it was saved after its run diverged"


KINDS = ["empty", "random bytes", "truncated", "foreign", "pickled object", "another program's", "weights only",
         "diverged"]


@pytest.mark.parametrize("kind", KINDS)
def test_a_bad_checkpoint_is_one_message_naming_the_file_when_resumed(tmp_path, good_checkpoint, kind):
    path = tmp_path / "bad.ckpt"
    said = bad_checkpoint(kind, path, good_checkpoint)
    with pytest.raises(ConfigError) as caught:
        train(compose_train(tmp_path, ["logger=none", "callbacks=minimal", "model.latent_dim=4", f"ckpt_path={path}"]))
    assert str(caught.value).startswith(f"ckpt_path={path} is not a usable checkpoint: ")
    assert said in str(caught.value)
    assert strict_json(tmp_path / "run" / "metrics.json")["status"] == "failed"


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "weights only"])  # (evaluating the weights is fine)
def test_a_bad_checkpoint_is_one_message_naming_the_file_when_evaluated(tmp_path, good_checkpoint, kind):
    path = tmp_path / "bad.ckpt"
    said = bad_checkpoint(kind, path, good_checkpoint)
    with pytest.raises(ConfigError) as caught:
        run_evaluation(compose_eval(tmp_path, [f"ckpt_path={path}"]))
    assert str(caught.value).startswith(f"ckpt_path={path} is not a usable checkpoint: ") and said in str(caught.value)


def test_resuming_into_another_model_names_the_settings_that_differ(tmp_path, good_checkpoint):
    with pytest.raises(ConfigError) as caught:
        train(compose_train(tmp_path, ["logger=none", "callbacks=minimal", "model.latent_dim=8",
                                       f"ckpt_path={good_checkpoint}"]))
    message = str(caught.value)
    assert message.startswith(f"ckpt_path={good_checkpoint} does not fit the model of this config: ")
    assert "It was trained with model.latent_dim=4 (here 8): give the same settings to resume it." in message


@pytest.mark.slow
def test_bad_checkpoints_on_the_command_line_are_one_message(tmp_path, good_checkpoint):
    path = tmp_path / "bad.ckpt"
    path.write_bytes(os.urandom(2000))
    for script, args in [("src/eval.py", []), ("src/train.py", ["logger=none", "callbacks=minimal"])]:
        result = run_cli([f"ckpt_path={path}", *args, f"hydra.run.dir={tmp_path / script}"], tmp_path, script=script)
        assert result.returncode == 1
        assert f"ckpt_path={path} is not a usable checkpoint: it is not a PyTorch checkpoint file" in result.stderr
        assert "Traceback" not in result.stderr


# ----------------------------------------------------------------------------------- 6. bad paths and values
@pytest.mark.parametrize("mode", ["run", "multirun"])
def test_an_unwritable_log_dir_is_one_message(tmp_path, mode):
    args = [*(["-m", "model=ae,vae"] if mode == "multirun" else []), "paths.log_dir=/proc/nope"]
    result = run_cli(args, tmp_path, timeout=120)
    assert result.returncode == 1
    folder = "sweep" if mode == "multirun" else "run"
    assert f"Cannot create the {folder} folder /proc/nope/train/" in result.stderr
    assert "No such file or directory: /proc/nope. It is made under paths.log_dir=/proc/nope" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_val_fraction_zero_trains_without_validation_and_keeps_the_last_epoch(tmp_path):
    cfg = compose_train(tmp_path, ["data.val_fraction=0", "trainer.max_epochs=2", "logger=none", "callbacks=minimal"])
    assert train(cfg) is None  # no validation metric to optimise
    record = strict_json(tmp_path / "run" / "metrics.json")
    assert record["status"] == "completed" and record["val"] == {} and record["epochs"] == 2
    assert record["best"]["monitor"] is None
    assert record["best_ckpt"] == record["test_ckpt"] == str(tmp_path / "run" / "checkpoints" / "epoch_001.ckpt")
    assert record["test"]["test/loss"] > 0


def test_val_fraction_zero_is_refused_in_a_sweep_optimising_a_val_metric(tmp_path, monkeypatch):
    monkeypatch.setattr("vaelab.tasks.train.in_multirun", lambda: True)
    with pytest.raises(ConfigError, match="optimized_metric=val/elbo needs a validation split"):
        train(compose_train(tmp_path, ["data.val_fraction=0", "logger=none", "callbacks=minimal"]))


# ------------------------------------------------------------------------------------- 7. progress in a log file
class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_a_bar_at_a_terminal_and_a_line_per_epoch_in_a_file(tmp_path, capsys):
    assert type(progress_bar(stream=FakeTerminal())) is TQDMProgressBar
    assert type(progress_bar(stream=io.StringIO())) is EpochLines
    overrides = [o for o in FAST if "enable_progress_bar" not in o]
    cfg = compose_train(tmp_path, [*overrides, "trainer.max_epochs=2", "logger=none", "callbacks=minimal",
                                   "test=false"], fast=False)
    train(cfg)  # (pytest's captured stdout is not a terminal, as a scheduler's log file is not)
    out = capsys.readouterr().out
    assert "\r" not in out
    lines = [line for line in out.splitlines() if line.startswith("Epoch ")]
    assert [line.split("  ")[:2] for line in lines] == [["Epoch 1/2", "3 steps"], ["Epoch 2/2", "3 steps"]]
    record = strict_json(tmp_path / "run" / "metrics.json")
    assert f"val/elbo {record['val']['val/elbo']:.2f}" in lines[-1] and "train/loss " in lines[-1]
