"""logger=mlflow: a run, a failed run and a sweep recorded into MLflow's SQLite store under the log folder, queried
back through MlflowClient; vaelab without MLflow installed."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import FAST, ROOT, compose_train
from omegaconf import open_dict
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import metadata

from vaelab.errors import DivergedError
from vaelab.loggers.event_images import EventImage, latest_images
from vaelab.loggers.mlflow import RUN_STATUS, run_status, sqlite_uri
from vaelab.tasks.run_names import sweep_name
from vaelab.tasks.train import train

#: the tests that need MLflow (`make test` installs it: pip install -e .[dev,mlflow])
needs_mlflow = pytest.mark.skipif(importlib.util.find_spec("mlflow") is None,
                                  reason="MLflow is not installed: pip install .[mlflow]")

ENV = {**{k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}, "VAELAB_ROOT": str(ROOT),
       "PYTHONWARNINGS": "ignore"}
#: one dashboard view, so that there is an image to export (the other views cost time)
ONE_VIEW = ["callbacks=[minimal,reconstructions]"]


@pytest.fixture(autouse=True)
def _local_store(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # (a lab's server would take the runs: not here)


def client_for(log_dir: Path):
    from mlflow.tracking import MlflowClient

    assert (log_dir / "mlflow.db").is_file()
    return MlflowClient(sqlite_uri(log_dir))


def only_run(client, experiment: str):
    found = client.get_experiment_by_name(experiment)
    assert found is not None, [e.name for e in client.search_experiments()]
    runs = client.search_runs([found.experiment_id])
    assert len(runs) == 1
    return runs[0]


def artifacts(client, run_id: str, path: str | None = None) -> dict[str, int]:
    """{path: size} of every file artifact of the run."""
    out = {}
    for item in client.list_artifacts(run_id, path):
        if item.is_dir:
            out.update(artifacts(client, run_id, item.path))
        else:
            out[item.path] = item.file_size
    return out


def hparams_columns(run_dir: Path) -> dict:
    """What TensorBoard's HParams tab shows for the run: its session start's hyperparameters."""
    acc = EventAccumulator(str(run_dir), size_guidance={"tensors": 0})
    acc.Reload()
    content = acc.PluginTagToContent(metadata.PLUGIN_NAME)
    start = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
    return {k: getattr(v, v.WhichOneof("kind")) for k, v in start.hparams.items()}


def same_value(text: str, value) -> bool:
    if isinstance(value, float) and not isinstance(value, bool):
        try:
            return float(text) == value
        except ValueError:
            return False
    return text == str(value)


@needs_mlflow
def test_a_run_is_recorded_in_sqlite_with_params_metrics_artifacts_name_and_status(tmp_path):
    cfg = compose_train(tmp_path, ["logger=mlflow", "trainer.max_epochs=2", *ONE_VIEW])
    train(cfg)
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["status"] == "completed"
    client = client_for(tmp_path / "logs")
    run = only_run(client, "train")  # a single run: the task's experiment
    assert run.info.run_name == "run"  # the run folder's name
    assert run.info.status == "FINISHED" and run.data.tags["vaelab.status"] == "completed"
    assert run.data.tags["vaelab.run_dir"] == str((tmp_path / "run").resolve())

    # params: the HParams columns, key for key and value for value (TensorBoard keeps numbers as floats)
    columns = hparams_columns(tmp_path / "run")
    assert set(run.data.params) == set(columns) and {"model", "model.beta", "model.latent_dim"} <= set(columns)
    assert all(same_value(run.data.params[k], v) for k, v in columns.items()), (run.data.params, columns)

    # metrics: one val/elbo point per epoch, at TensorBoard's steps; the test results; the best score
    history = client.get_metric_history(run.info.run_id, "val/elbo")
    assert len(history) == 2 and history[0].step < history[1].step
    assert history[-1].value == pytest.approx(record["val"]["val/elbo"])
    assert len(client.get_metric_history(run.info.run_id, "train/loss")) >= 2
    assert run.data.metrics["test/elbo"] == pytest.approx(record["test"]["test/elbo"])
    assert run.data.metrics["best/val_elbo"] == pytest.approx(record["best"]["score"])

    # artifacts under <log_dir>/mlflow-artifacts/train/: the record, the config, the best checkpoint, a view's PNG
    assert run.info.artifact_uri.startswith((tmp_path / "logs" / "mlflow-artifacts" / "train").as_uri())
    files = artifacts(client, run.info.run_id)
    best = Path(record["best_ckpt"])
    assert files["checkpoints/" + best.name] == best.stat().st_size
    assert files["metrics.json"] > 0 and files["config.yaml"] > 0
    assert set(k for k in files if k.startswith("dashboard/")) == {"dashboard/val/reconstructions.png"}
    png = Path(client.download_artifacts(run.info.run_id, "dashboard/val/reconstructions.png", str(tmp_path)))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    stored = json.loads(Path(client.download_artifacts(run.info.run_id, "metrics.json", str(tmp_path))).read_text())
    assert stored["status"] == "completed" and stored["test"] == record["test"]


@needs_mlflow
def test_a_diverging_run_is_failed_with_its_record_as_artifact(tmp_path):
    cfg = compose_train(tmp_path, ["logger=mlflow", "model.optimizer.lr=100", "callbacks=minimal"])
    with pytest.raises(DivergedError):
        train(cfg)
    run = only_run(client_for(tmp_path / "logs"), "train")
    assert run.info.status == "FAILED" and run.data.tags["vaelab.status"] == "diverged"
    client = client_for(tmp_path / "logs")
    stored = json.loads(Path(client.download_artifacts(run.info.run_id, "metrics.json", str(tmp_path))).read_text())
    assert stored["status"] == "diverged"
    assert "test/elbo" not in run.data.metrics  # nothing was tested


@pytest.mark.slow
@needs_mlflow
def test_a_sweep_is_an_experiment_of_its_own_named_after_its_folder(tmp_path):
    logs, sweep = tmp_path / "logs", tmp_path / "logs" / "train" / "multiruns" / "s1"
    result = subprocess.run(
        [sys.executable, "src/train.py", "-m", "model=beta_vae", "model.beta=1,4", "logger=mlflow", "callbacks=minimal",
         *FAST, f"paths.log_dir={logs}", f"paths.data_dir={tmp_path / 'data'}", f"hydra.sweep.dir={sweep}"],
        cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    client = client_for(logs)
    experiment = client.get_experiment_by_name("train/multiruns/s1")
    assert experiment is not None and experiment.artifact_location == (logs / "mlflow-artifacts" / "train" /
                                                                       "multiruns" / "s1").as_uri()
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    jobs = sorted(p.name for p in sweep.iterdir() if (p / "metrics.json").is_file())
    assert sorted(runs) == jobs and len(jobs) == 2  # named like the job folders (0_model.beta=1,model=beta_vae…)
    assert sorted(float(r.data.params["model.beta"]) for r in runs.values()) == [1, 4]
    assert {r.info.status for r in runs.values()} == {"FINISHED"}
    assert client.get_experiment_by_name("train") is None  # nothing landed in the single runs' experiment


@needs_mlflow
def test_a_run_into_a_deleted_experiment_says_how_to_restore_or_purge_it(tmp_path):
    from vaelab.errors import VaelabError
    from vaelab.loggers.mlflow import MLflowLogger

    first = MLflowLogger(save_dir=str(tmp_path / "logs"), run_dir=str(tmp_path / "a"))
    first.log_hyperparams({"model": "vae"})
    first.end("FINISHED")
    first.experiment.delete_experiment(first.experiment_id)
    second = MLflowLogger(save_dir=str(tmp_path / "logs"), run_dir=str(tmp_path / "b"))
    with pytest.raises(VaelabError, match=r"'train' was deleted.*mlflow experiments restore --experiment-id 1.*"
                                          r"mlflow gc --backend-store-uri sqlite:///"):
        second.log_hyperparams({"model": "vae"})


def test_names_and_statuses():
    assert sweep_name("/x/logs/train/multiruns/2026_ab", "/x/logs/") == "train/multiruns/2026_ab"
    assert sweep_name("/elsewhere/s", "/x/logs") == "s"
    assert sweep_name("/x/logs/s", None) == "s"
    assert [run_status(s) for s in ("completed", "failed", "diverged", "interrupted", "terminated", None)] == [
        "FINISHED", "FAILED", "FAILED", "KILLED", "KILLED", "FAILED"]
    assert set(RUN_STATUS.values()) <= {"FINISHED", "FAILED", "KILLED"}
    assert EventImage("val/a b:c", 3, b"").file_name == "val/a-b-c.png"
    assert EventImage("val/../x", 3, b"").file_name == "val/-/x.png"
    assert sqlite_uri("relative") == "sqlite:///" + str(Path("relative").resolve() / "mlflow.db")


def test_the_latest_image_of_each_tag_is_read_back_from_the_events(tmp_path):
    import numpy as np
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(tmp_path))
    for step in (1, 5, 9):
        writer.add_image("val/view", np.full((3, 4, 4), step / 10, np.float32), step)
    writer.add_image("train/other", np.zeros((3, 4, 4), np.float32), 0)
    writer.close()
    images = latest_images(tmp_path)
    assert [(i.tag, i.step) for i in images] == [("val/view", 9)]
    assert images[0].png[:8] == b"\x89PNG\r\n\x1a\n"
    # a second event file that goes back to step 7 (a run resumed from an earlier checkpoint): as TensorBoard
    # reads it, that drawing replaces the later ones
    writer = SummaryWriter(str(tmp_path), filename_suffix=".resumed")
    writer.add_image("val/view", np.full((3, 4, 4), 0.7, np.float32), 7)
    writer.close()
    assert [(i.tag, i.step) for i in latest_images(tmp_path)] == [("val/view", 7)]
    assert [i.tag for i in latest_images(tmp_path, ())] == ["train/other", "val/view"]
    assert latest_images(tmp_path / "none") == []


def test_without_mlflow_vaelab_imports_and_trains_and_logger_mlflow_says_how_to_install(tmp_path):
    # a fresh interpreter where `import mlflow` fails, as without the extra
    script = textwrap.dedent(f"""
        import sys, json, pkgutil, importlib
        sys.modules["mlflow"] = None
        import vaelab
        for info in pkgutil.walk_packages(vaelab.__path__, "vaelab."):
            if not info.name.endswith(".__main__"):  # (a __main__ runs its command when imported)
                importlib.import_module(info.name)
        assert not [m for m in sys.modules if m.startswith("mlflow") and sys.modules[m] is not None]
        record = vaelab.train({[*FAST, "logger=tensorboard", "callbacks=minimal", f"paths.log_dir={tmp_path}"]!r})
        assert record["status"] == "completed", record
        from vaelab.loggers.mlflow import MLflowLogger
        try:
            MLflowLogger(save_dir={str(tmp_path)!r})
        except ModuleNotFoundError as err:
            print("MESSAGE:", err)
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=ENV, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    message = done.stdout.split("MESSAGE:", 1)[1]
    assert "pip install .[mlflow]" in message and "logger=tensorboard" in message
    assert not (tmp_path / "mlflow.db").exists()


def test_logger_mlflow_keeps_tensorboard_for_the_views_and_many_can_include_it(tmp_path):
    cfg = compose_train(tmp_path, ["logger=mlflow"])
    assert list(cfg.logger) == ["tensorboard", "mlflow"]
    assert list(compose_train(tmp_path, ["logger=[many,mlflow]"]).logger) == ["tensorboard", "csv", "mlflow"]
    with open_dict(cfg):
        cfg.paths.log_dir = "relative/logs"
    assert cfg.logger.mlflow.experiment_name == "train" and cfg.logger.mlflow.save_dir == "relative/logs"
