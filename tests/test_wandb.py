"""logger=wandb: an offline W&B run kept under the run folder, read back from W&B's own transaction log (the
``.wandb`` file): its config, history, summary and images; a sweep's runs in one group; W&B failing before training
(one message) and once training has started (the run goes on); vaelab without W&B installed. W&B runs offline
here, its folders in tmp: no server is ever contacted."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import FAST, ROOT, compose_train
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from test_mlflow import hparams_columns

from vaelab.loggers.tracking import TrackingError
from vaelab.loggers.wandb import WandbLogger, WandbMissingError, exit_code, problem, ways_out
from vaelab.tasks.train import train

#: the tests that need W&B (`make test` installs it: pip install -e .[dev,mlflow,wandb])
needs_wandb = pytest.mark.skipif(importlib.util.find_spec("wandb") is None,
                                 reason="W&B is not installed: pip install .[wandb]")
#: one dashboard view, so that there is an image to log (the other views cost time)
ONE_VIEW = ["callbacks=[minimal,reconstructions]"]
#: W&B's settings that would send a run elsewhere than this test's folders, or to a server
WANDB_VARIABLES = ("WANDB_MODE", "WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR",
                   "WANDB_ARTIFACT_DIR", "WANDB_PROJECT", "WANDB_ENTITY", "WANDB_RUN_GROUP", "WANDB_RUN_ID",
                   "WANDB_API_KEY", "WANDB_BASE_URL", "WANDB_SILENT", "WANDB_CONSOLE")


def offline_env(tmp_path: Path) -> dict[str, str]:
    """W&B offline, its own folders in ``tmp_path``, and any stray request sent to a closed port of 127.0.0.1."""
    folder = tmp_path / "wandb-home"
    return {"WANDB_MODE": "offline", "WANDB_DIR": str(folder / "dir"), "WANDB_CACHE_DIR": str(folder / "cache"),
            "WANDB_CONFIG_DIR": str(folder / "config"), "WANDB_DATA_DIR": str(folder / "data"),
            "WANDB_ARTIFACT_DIR": str(folder / "artifacts"), "WANDB_BASE_URL": "http://127.0.0.1:9"}


@pytest.fixture(autouse=True)
def _offline(tmp_path, monkeypatch):
    for name in WANDB_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in offline_env(tmp_path).items():
        monkeypatch.setenv(name, value)


# ------------------------------------------------------------------------- W&B's transaction log, read back
#: the ``.wandb`` file: a header (":W&B", magic, version), then LevelDB's log format: 32 KiB blocks of records,
#: each with a header (CRC-32, length, kind: 1 full, 2 first, 3 middle, 4 last piece)
HEADER, BLOCK, RECORD_HEADER = struct.Struct("<4sHB"), 32768, struct.Struct("<IHB")


def raw_records(path: Path):
    data = path.read_bytes()
    ident, magic, _ = HEADER.unpack_from(data)
    assert (ident, magic) == (b":W&B", 0xBEE1), (ident, magic)
    pos, pieces = HEADER.size, b""
    while pos + RECORD_HEADER.size <= len(data):
        if BLOCK - pos % BLOCK < RECORD_HEADER.size:  # (a block's tail too short for a header is padding)
            pos += BLOCK - pos % BLOCK
            continue
        _, length, kind = RECORD_HEADER.unpack_from(data, pos)
        if not length and not kind:
            break
        chunk = data[pos + RECORD_HEADER.size:pos + RECORD_HEADER.size + length]
        pos += RECORD_HEADER.size + length
        pieces = chunk if kind in (1, 2) else pieces + chunk
        if kind in (1, 4):
            yield pieces


def finished_writing() -> None:
    """Wait until W&B has written out every run of this process: a finished run's log is closed (and only then
    written out) by W&B's service process a moment later; ``wandb.teardown`` waits for that service to end (the
    next run starts another)."""
    import wandb

    wandb.teardown()


def read_offline_run(run_dir: Path) -> dict:
    """The one offline W&B run under ``run_dir``: its folder, run record, config, history rows, summary and exit
    (W&B has written it out: :func:`finished_writing`, or the process that made it ended)."""
    from wandb.proto import wandb_internal_pb2 as pb

    folders = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(folders) == 1, folders
    (log,) = folders[0].glob("run-*.wandb")
    out: dict = {"folder": folders[0], "config": {}, "history": [], "summary": {}, "run": None, "exit": None}
    kinds = []
    for raw in raw_records(log):
        record = pb.Record()
        record.ParseFromString(raw)
        kind = record.WhichOneof("record_type")
        kinds.append(kind)  # (for the message of an incomplete log)
        if kind == "run":
            out["run"] = record.run
            fold(out["config"], record.run.config.update)
        elif kind == "config":
            fold(out["config"], record.config.update)
        elif kind == "summary":
            fold(out["summary"], record.summary.update)
        elif kind == "history":
            out["history"].append(fold({}, record.history.item))
        elif kind == "exit":
            out["exit"] = record.exit
    out["config"].pop("_wandb", None)
    assert out["run"] is not None and out["exit"] is not None, kinds
    return out


def fold(into: dict, items) -> dict:
    """W&B's items (a ``key``, or a ``nested_key`` path, and a JSON value) into ``into``."""
    for item in items:
        path = list(item.nested_key) or [item.key]
        node = into
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = json.loads(item.value_json)
    return into


def record_of(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "run" / "metrics.json").read_text())


# ---------------------------------------------------------------------------------------------------- the run
@needs_wandb
def test_an_offline_run_is_kept_under_the_run_folder_with_the_hparams_metrics_and_images(tmp_path):
    train(compose_train(tmp_path, ["logger=[tensorboard,wandb]", "trainer.max_epochs=2", *ONE_VIEW]))
    finished_writing()
    record = record_of(tmp_path)
    assert record["status"] == "completed"
    run = read_offline_run(tmp_path / "run")
    assert run["run"].display_name == "run" and run["run"].job_type == "train"  # the run folder's name; the task
    assert run["run"].run_group == "" and run["run"].project == "vaelab"  # (a single run: no group)

    # config: the HParams columns, key for key and value for value
    columns = hparams_columns(tmp_path / "run")
    assert {"model", "model.beta", "model.latent_dim"} <= set(columns)
    assert set(run["config"]) == set(columns), (run["config"], columns)
    assert all(run["config"][k] == pytest.approx(v) if isinstance(v, float) else run["config"][k] == v
               for k, v in columns.items()), (run["config"], columns)

    # history: a val/elbo row per epoch against Lightning's step; summary: the last epoch's and the test metrics
    val_rows = [row for row in run["history"] if "val/elbo" in row]
    assert len(val_rows) == 2 and val_rows[0]["trainer/global_step"] < val_rows[1]["trainer/global_step"]
    summary = run["summary"]
    assert {k: summary[k] for k in record["val"]} == pytest.approx(record["val"])
    assert {k: summary[k] for k in record["test"]} == pytest.approx(record["test"])
    assert summary["best/val_elbo"] == pytest.approx(record["best"]["score"])
    assert summary["vaelab/status"] == "completed" and summary["vaelab/run_dir"] == str((tmp_path / "run").resolve())
    assert run["exit"] is not None and run["exit"].exit_code == 0  # (W&B's "finished")

    # the dashboard's last picture, as a W&B image of the run's media; the config and the record as its files
    image = summary["dashboard/val/reconstructions"]
    assert image["_type"] == "image-file" and image["caption"].startswith("val/reconstructions at step ")
    files = run["folder"] / "files"
    assert (files / image["path"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in (files / "media" / "images" / "dashboard" / "val").iterdir()] == [Path(image["path"]).name]
    assert json.loads((files / "vaelab" / "metrics.json").read_text())["status"] == "completed"
    assert "model:" in (files / "vaelab" / "config.yaml").read_text()


@pytest.mark.slow
@needs_wandb
def test_a_sweeps_runs_share_a_group_named_after_it_each_a_run_of_its_own(tmp_path):
    logs, sweep = tmp_path / "logs", tmp_path / "logs" / "train" / "multiruns" / "s1"
    env = {**os.environ, **offline_env(tmp_path), "VAELAB_ROOT": str(ROOT), "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(
        [sys.executable, "src/train.py", "-m", "model=beta_vae", "model.beta=1,4", "logger=wandb", "callbacks=minimal",
         *FAST, f"paths.log_dir={logs}", f"paths.data_dir={tmp_path / 'data'}", f"hydra.sweep.dir={sweep}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    jobs = sorted(p for p in sweep.iterdir() if (p / "metrics.json").is_file())
    assert len(jobs) == 2
    runs = [read_offline_run(job) for job in jobs]  # (one run in each job's folder: the jobs ran in one process)
    assert [r["run"].run_group for r in runs] == ["train/multiruns/s1"] * 2
    assert [r["run"].display_name for r in runs] == [job.name for job in jobs]
    assert sorted(r["config"]["model.beta"] for r in runs) == [1, 4]
    assert len({r["run"].run_id for r in runs}) == 2 and all(r["exit"].exit_code == 0 for r in runs)


@needs_wandb
def test_a_run_is_its_own_while_another_w_and_b_run_is_active_in_the_process(tmp_path):
    import wandb

    mine = wandb.init(project="mine", name="mine", dir=str(tmp_path / "mine"), config={"mine": 1})
    try:
        train(compose_train(tmp_path, ["logger=wandb", "callbacks=minimal"]))
        mine.log({"still_mine": 1.0})  # (raises if vaelab's run had been this one, and ended it)
    finally:
        mine.finish()
    finished_writing()
    ours, theirs = read_offline_run(tmp_path / "run"), read_offline_run(tmp_path / "mine")
    assert ours["run"].display_name == "run" and "model" in ours["config"] and "val/elbo" in ours["summary"]
    assert theirs["run"].display_name == "mine" and theirs["config"] == {"mine": 1}
    assert "still_mine" in theirs["summary"] and not [k for k in theirs["summary"] if k.startswith(("val/", "test/"))]


def test_the_config_group_keeps_tensorboard_and_names_the_run_after_its_folder(tmp_path):
    cfg = compose_train(tmp_path, ["logger=wandb"])
    assert list(cfg.logger) == ["tensorboard", "wandb"]
    assert list(compose_train(tmp_path, ["logger=[many,wandb]"]).logger) == ["tensorboard", "csv", "wandb"]
    node = cfg.logger.wandb
    assert node.save_dir == str(tmp_path / "run") and node.group is None and node.job_type == "train"
    assert node.project == "vaelab" and node.mode is None and node.settings.console == "off"


# ------------------------------------------------------------------------------------------------ failures
def failing_init(monkeypatch, error: Exception) -> list:
    """Make ``wandb.init`` raise ``error`` (as a missing login or a server that does not answer would); its calls
    are listed."""
    import wandb

    calls = []

    def init(*args, **kwargs):
        calls.append(kwargs)
        raise error

    monkeypatch.setattr(wandb, "init", init)
    return calls


@needs_wandb
def test_a_failing_start_stops_the_run_before_training_with_one_message_naming_the_ways_out(tmp_path, monkeypatch,
                                                                                            caplog):
    from wandb.errors import CommError

    monkeypatch.setenv("WANDB_MODE", "online")  # (wandb.init is replaced: nothing is contacted)
    calls = failing_init(monkeypatch, CommError("Run initialization has timed out after 90.0 sec.\nPlease refer"))
    with pytest.raises(TrackingError) as raised:
        train(compose_train(tmp_path, ["logger=wandb", "callbacks=minimal"]))
    message = str(raised.value)
    assert message.startswith("W&B failed while logging the run's start, before training. W&B's server did not "
                              "answer (wandb raised CommError: Run initialization has timed out after 90.0 sec.): "
                              "check the network")
    assert "Please refer" not in message  # (the first line only)
    assert "logger=tensorboard" in message and "WANDB_MODE=offline" in message and "wandb sync" in message
    assert len(calls) == 1 and calls[0]["name"] == "run" and calls[0]["dir"] == str((tmp_path / "run").resolve())
    record = record_of(tmp_path)
    assert record["status"] == "failed" and record["error"] == f"TrackingError: {message}"
    assert "epochs" not in record and not (tmp_path / "run" / "checkpoints").exists()  # nothing trained
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and "W&B" in r.getMessage()]


@needs_wandb
def test_offline_a_failing_start_names_only_the_way_out_that_is_left(tmp_path, monkeypatch):
    failing_init(monkeypatch, OSError(28, "No space left on device"))
    logger = WandbLogger(save_dir=str(tmp_path / "run"))
    with pytest.raises(TrackingError) as raised:
        logger.log_hyperparams({"model": "vae"})
    message = str(raised.value)
    assert message == ("W&B failed while logging the run's start, before training. wandb raised OSError: [Errno 28] "
                       "No space left on device. Or train without it: logger=tensorboard")
    assert "WANDB_MODE" not in message  # (the run was offline already)


@needs_wandb
def test_a_failure_once_training_has_started_is_survived_said_once_and_noted_in_the_record(tmp_path, monkeypatch,
                                                                                           caplog):
    from wandb.sdk.wandb_run import Run

    calls, real, started, console = [], Run.log, [], []

    def log(self, data, *args, **kwargs):
        calls.append(sorted(data))
        if len(calls) >= 2:  # (as a W&B whose service process died would)
            raise ConnectionResetError("the wandb service closed its socket")
        return real(self, data, *args, **kwargs)

    real_start = WandbLogger._start

    def start(self):
        started.append(self)
        return real_start(self)

    monkeypatch.setattr(Run, "log", log)
    monkeypatch.setattr(Run, "_console_raw_callback", lambda self, name, data: console.append(data))
    monkeypatch.setattr(WandbLogger, "_start", start)
    try:
        train(compose_train(tmp_path, ["logger=wandb", "callbacks=minimal", "trainer.max_epochs=2"]))
        print("printed after W&B gave up", file=sys.stderr)
        assert not console  # (nor is W&B called at every line printed: the console is not copied into the run)
    finally:
        for logger in started:  # (the run left open: ended here, not when pytest exits)
            logger._experiment.finish(exit_code=1)
        finished_writing()

    record = record_of(tmp_path)
    assert record["status"] == "completed" and record["epochs"] == 2 and "test" in record
    note = record["tracking_error"]
    assert note.startswith("W&B failed while logging the metrics of step") and "went on without it" in note
    assert "wandb raised ConnectionResetError: the wandb service closed its socket" in note
    assert f"still in {(tmp_path / 'run').resolve()}" in note and "keeps only what was logged before" in note
    said = [r for r in caplog.records if "W&B failed while logging" in r.getMessage()]
    assert len(said) == 1 and said[0].levelname == "WARNING" and "logger=tensorboard" in said[0].getMessage()
    assert len(calls) == 2  # nothing more sent to W&B once it failed (no test metrics, images or end)
    kept = read_offline_run(tmp_path / "run")["summary"]  # (what was logged before the failure)
    assert set(calls[0]) <= set(kept) and not [k for k in kept if k.startswith(("test/", "dashboard/", "vaelab/s"))]
    assert Path(record["best_ckpt"]).is_file() and Path(record["last_ckpt"]).is_file()
    events = EventAccumulator(str(tmp_path / "run"))
    events.Reload()
    assert len(events.Scalars("val/elbo")) == 2  # TensorBoard has both epochs


def test_without_wandb_logger_wandb_stops_before_training_saying_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # (`import wandb` fails, as without the extra)
    with pytest.raises(WandbMissingError) as raised:
        train(compose_train(tmp_path, ["logger=wandb", "callbacks=minimal"]))
    message = str(raised.value)
    assert message.startswith("logger=wandb needs W&B (wandb), which is not installed: pip install .[wandb] ")
    assert "logger=tensorboard" in message and isinstance(raised.value, ModuleNotFoundError)
    record = record_of(tmp_path)
    assert record["status"] == "failed" and "pip install .[wandb]" in record["error"] and "epochs" not in record


@pytest.mark.slow
@needs_wandb
def test_the_command_prints_one_message_without_a_traceback(tmp_path):
    run = tmp_path / "run"
    script = textwrap.dedent(f"""
        import runpy, sys, wandb
        from wandb.errors import UsageError

        def init(*args, **kwargs):
            raise UsageError("No API key configured. Use `wandb login` to log in.")

        wandb.init = init
        sys.argv = ["src/train.py", "logger=wandb", "callbacks=minimal", *{FAST!r}, "paths.log_dir={tmp_path}",
                    "paths.data_dir={tmp_path / 'data'}", "hydra.run.dir={run}"]
        runpy.run_path("src/train.py", run_name="__main__")
    """)
    env = {**os.environ, **offline_env(tmp_path), "WANDB_MODE": "online", "VAELAB_ROOT": str(ROOT),
           "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "Error in call to target" not in done.stderr, done.stderr[-3000:]
    lines = [line for line in done.stderr.splitlines() if "W&B failed" in line]
    assert len(lines) == 1, done.stderr[-3000:]
    assert "W&B is not logged in (wandb raised UsageError: No API key configured." in lines[0]
    assert "run wandb login, or set WANDB_API_KEY" in lines[0] and "WANDB_MODE=offline" in lines[0]
    assert json.loads((run / "metrics.json").read_text())["status"] == "failed"


def test_the_words_for_w_and_bs_failures_and_ends():
    class CommError(Exception):
        pass

    assert [exit_code(s) for s in ("completed", "failed", "diverged", "interrupted", "terminated", None)] == [
        0, 1, 1, 1, 1, 1]
    assert problem(ValueError("api_key not configured (no-tty)")) == (
        "W&B is not logged in (wandb raised ValueError: api_key not configured (no-tty)): run wandb login, or set "
        "WANDB_API_KEY")
    assert problem(CommError("Network error (ConnectTimeout)")).startswith("W&B's server did not answer (wandb ")
    assert problem(ValueError("bad\nmore")) == "wandb raised ValueError: bad"
    assert ways_out(offline=True) == "Or train without it: logger=tensorboard"
    assert "WANDB_MODE=offline" in ways_out(offline=False)
