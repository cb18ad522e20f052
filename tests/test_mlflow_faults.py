"""logger=mlflow when its store or server fails (docs/tracking.md, "When MLflow fails"): before training, one message
naming the URI or file and the ways out, and the run's record says why; once training has started, the run goes on
without MLflow, says so once and notes it in its record. Only 127.0.0.1 is ever contacted."""

from __future__ import annotations

import http.server
import importlib.util
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import FAST, ROOT, compose_train
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from vaelab.loggers.mlflow import HTTP_LIMITS, MLflowLogger, TrackingError, prepare_store, sqlite_uri
from vaelab.tasks.train import hand_over_run_folder, train

pytestmark = pytest.mark.skipif(importlib.util.find_spec("mlflow") is None,
                                reason="MLflow is not installed: pip install .[mlflow]")

ENV = {**{k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI" and k not in HTTP_LIMITS},
       "VAELAB_ROOT": str(ROOT), "PYTHONWARNINGS": "ignore"}
QUICK = ["logger=mlflow", "callbacks=minimal"]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    """No lab's server, and MLflow's HTTP settings as they were after each test (the logger sets those unset)."""
    for name in ("MLFLOW_TRACKING_URI", *HTTP_LIMITS):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory) -> Path:
    """An MLflow SQLite store with its tables and no runs, made once (making one takes seconds): copy it."""
    folder = tmp_path_factory.mktemp("store")
    prepare_store(sqlite_uri(folder), folder / "mlflow.db.lock")
    return folder / "mlflow.db"


def store_in(log_dir: Path, empty_store: Path) -> Path:
    log_dir.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(empty_store, log_dir / "mlflow.db"))


@pytest.fixture
def read_only():
    """Make a file read-only for this process: its mode, and for root (whom modes do not stop) the immutable
    attribute; skipped where neither stops a write."""
    frozen: list[Path] = []

    def make(path: Path) -> Path:
        path.chmod(0o444)
        if os.geteuid() == 0 and shutil.which("chattr"):
            if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode == 0:
                frozen.append(path)
        try:
            open(path, "r+b").close()
        except OSError:
            return path
        pytest.skip("cannot make a file read-only here (root without chattr +i)")

    yield make
    for path in frozen:
        subprocess.run(["chattr", "-i", str(path)], capture_output=True)


def closed_port() -> int:
    """A port of 127.0.0.1 where nothing listens (just bound and let go)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def record_of(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "run" / "metrics.json").read_text())


def test_an_unreachable_server_stops_the_run_within_seconds_naming_it_and_the_ways_out(tmp_path, monkeypatch):
    uri = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    cfg = compose_train(tmp_path, QUICK)
    start = time.perf_counter()
    with pytest.raises(TrackingError) as raised:
        train(cfg)
    seconds = time.perf_counter() - start
    message = str(raised.value)
    assert seconds < 10, seconds  # (MLflow's own retries: 254 s)
    assert f"The MLflow tracking server {uri} cannot be reached (connection refused" in message
    assert "logger=tensorboard" in message and "unset MLFLOW_TRACKING_URI" in message
    assert str(tmp_path / "logs" / "mlflow.db") in message  # where runs go without the variable
    record = record_of(tmp_path)
    assert record["status"] == "failed" and record["error"] == f"TrackingError: {message}"


def test_a_file_that_is_not_a_database_is_named_with_what_to_do(tmp_path):
    db = tmp_path / "logs" / "mlflow.db"
    db.parent.mkdir()
    db.write_bytes(b"these are not the runs you are looking for\n" * 50)
    with pytest.raises(TrackingError) as raised:
        train(compose_train(tmp_path, QUICK))
    message = str(raised.value)
    assert f"MLflow's store {db} is not an SQLite database" in message
    assert f"mv {db} {db}.bad" in message and "paths.log_dir=" in message and "logger=tensorboard" in message
    assert record_of(tmp_path)["error"] == f"TrackingError: {message}"
    assert db.read_bytes().startswith(b"these are not")  # left as it was


def test_a_read_only_store_is_named_with_what_to_do_and_no_sql_dump(tmp_path, empty_store, read_only, caplog):
    db = read_only(store_in(tmp_path / "logs", empty_store))
    with pytest.raises(TrackingError) as raised:
        train(compose_train(tmp_path, QUICK))
    message = str(raised.value)
    assert f"MLflow's store {db} cannot be written" in message and f"chmod u+w {db} {db.parent}" in message
    assert "paths.log_dir=" in message and "logger=tensorboard" in message
    assert record_of(tmp_path)["error"] == f"TrackingError: {message}"
    assert "INSERT INTO" not in caplog.text and "Traceback" not in caplog.text


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["unreachable", "not_a_database", "read_only"])
def test_the_command_prints_one_message_without_a_traceback(tmp_path, empty_store, read_only, fault):
    env, logs = dict(ENV), tmp_path / "logs"
    if fault == "unreachable":
        env["MLFLOW_TRACKING_URI"] = named = f"http://127.0.0.1:{closed_port()}"
    elif fault == "not_a_database":
        logs.mkdir()
        (logs / "mlflow.db").write_text("not a database")
        named = str(logs / "mlflow.db")
    else:
        named = str(read_only(store_in(logs, empty_store)))
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "src/train.py", *QUICK, *FAST, f"paths.log_dir={logs}", f"paths.data_dir={tmp_path / 'data'}",
         f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    seconds = time.perf_counter() - start
    assert done.returncode == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "[SQL:" not in done.stderr, done.stderr[-3000:]
    assert "Error in call to target" not in done.stderr  # (vaelab's message, not Hydra's wrapping of it)
    messages = [line for line in done.stderr.splitlines() if named in line]
    assert len(messages) == 1 and "logger=tensorboard" in messages[0], done.stderr[-3000:]
    assert named in record_of(tmp_path)["error"]
    print(f"{fault}: the process ended after {seconds:.1f} s")


def mlflow_fails_from_call(n: int, monkeypatch, error: Exception) -> list:
    """Make MLflow's ``log_batch`` with metrics fail from its ``n``-th call on (as a server gone down, or a store
    gone read-only, would); the calls made are listed."""
    from mlflow.tracking import MlflowClient

    calls, real = [], MlflowClient.log_batch

    def log_batch(self, run_id, metrics=(), *args, **kwargs):
        if metrics:
            calls.append([m.key for m in metrics])
            if len(calls) >= n:  # (MLflow's SQL store logs the failed statement, then raises)
                logging.getLogger("mlflow.store.db.utils").error("SQLAlchemy database error.\n[SQL: INSERT …]")
                raise error
        return real(self, run_id, metrics, *args, **kwargs)

    monkeypatch.setattr(MlflowClient, "log_batch", log_batch)
    return calls


def test_a_failure_once_training_has_started_is_survived_said_once_and_noted_in_the_record(
        tmp_path, empty_store, monkeypatch, caplog):
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    db = store_in(tmp_path / "logs", empty_store)
    # (what MLflow's SQL store raises when its file has become read-only)
    calls = mlflow_fails_from_call(2, monkeypatch, MlflowException(
        "(sqlite3.OperationalError) attempt to write a readonly database\n[SQL: INSERT INTO metrics …]"))
    train(compose_train(tmp_path, [*QUICK, "trainer.max_epochs=2"]))

    record = record_of(tmp_path)
    assert record["status"] == "completed" and record["epochs"] == 2 and "test" in record
    note = record["tracking_error"]
    assert note.startswith("MLflow failed while logging the metrics of step") and "went on without it" in note
    assert f"MLflow's store {db} cannot be written" in note and "stays RUNNING" in note
    assert Path(record["best_ckpt"]).is_file() and Path(record["last_ckpt"]).is_file()
    said = [r for r in caplog.records if "MLflow failed while logging" in r.getMessage()]
    assert len(said) == 1 and said[0].levelname == "WARNING" and "logger=tensorboard" in said[0].getMessage()
    assert "[SQL:" not in caplog.text  # (said once, by vaelab)
    assert len(calls) == 2  # nothing more sent to MLflow once it failed (each call would wait out its retries)

    # TensorBoard has both epochs; MLflow what came before the failure, its run left RUNNING
    events = EventAccumulator(str(tmp_path / "run"))
    events.Reload()
    assert len(events.Scalars("val/elbo")) == 2
    client = MlflowClient(sqlite_uri(tmp_path / "logs"))
    run = client.search_runs([client.get_experiment_by_name("train").experiment_id])[0]
    assert run.info.status == "RUNNING" and set(run.data.metrics) == set(calls[0])


def test_a_failure_at_the_end_leaves_the_run_and_notes_it_in_the_record(tmp_path, empty_store, monkeypatch, caplog):
    logs, folder = tmp_path / "logs", tmp_path / "run"
    store_in(logs, empty_store)
    folder.mkdir()
    ckpt = folder / "epoch_000.ckpt"
    ckpt.write_bytes(b"weights")
    (folder / "metrics.json").write_text(json.dumps({"status": "completed", "best_ckpt": str(ckpt)}))
    logger = MLflowLogger(save_dir=str(logs), run_dir=str(folder), log_images=False)
    logger.log_hyperparams({"model": "vae"})
    logger.log_metrics({"val/elbo": 1.0}, step=1)

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(logger.experiment, "log_artifact", full)
    hand_over_run_folder([logger], folder / "metrics.json", json.loads((folder / "metrics.json").read_text()))
    record = json.loads((folder / "metrics.json").read_text())
    assert record["status"] == "completed" and ckpt.read_bytes() == b"weights"
    assert record["tracking_error"].startswith("MLflow failed while logging the run folder's files")
    assert "No space left on device" in record["tracking_error"]
    assert [r.levelname for r in caplog.records if "MLflow failed" in r.getMessage()] == ["WARNING"]


class Answering(http.server.BaseHTTPRequestHandler):
    """A server that answers every GET with 200 (enough to be reachable)."""

    def do_GET(self):  # noqa: N802 (http.server's name)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"OK")

    def log_message(self, *args):
        pass


def test_with_a_server_mlflows_retries_are_capped_unless_set_and_a_later_failure_before_training_stops(
        tmp_path, monkeypatch):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answering)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    uri = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "7")
    try:
        logger = MLflowLogger(save_dir=str(tmp_path / "logs"), run_dir=str(tmp_path / "run"), tracking_uri=uri)
    finally:
        server.shutdown()
        server.server_close()
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == HTTP_LIMITS["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]
    assert os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] == HTTP_LIMITS["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"]
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "7"  # the user's own
    # the server gone before the run's params: the run stops, one message naming it (no retries, to be quick)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with pytest.raises(TrackingError, match=rf"The MLflow tracking server {uri} cannot be reached \(connection "
                                            r"refused.*logger=tensorboard, or drop logger.mlflow.tracking_uri"):
        logger.log_hyperparams({"model": "vae"})


def test_a_server_that_never_answers_is_given_up_after_the_probes_timeout(tmp_path):
    from vaelab.loggers.mlflow import probe_server

    with socket.socket() as silent:  # (accepts connections, never answers)
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        uri = f"http://127.0.0.1:{silent.getsockname()[1]}"
        start = time.perf_counter()
        with pytest.raises(TrackingError, match=rf"server {uri} cannot be reached \(no answer in time\)"):
            probe_server(uri, tmp_path, timeout=0.5)
        assert time.perf_counter() - start < 5


def test_making_the_experiment_is_retried_only_when_another_job_made_it_meanwhile(tmp_path, empty_store):
    from mlflow.exceptions import MlflowException

    store_in(tmp_path / "logs", empty_store)
    logger = MLflowLogger(save_dir=str(tmp_path / "logs"), run_dir=str(tmp_path / "run"))
    tries = []

    def create_experiment(*args, **kwargs):
        tries.append(args)
        raise MlflowException("(sqlite3.OperationalError) disk I/O error")

    logger._mlflow_client.create_experiment = create_experiment
    with pytest.raises(TrackingError, match=r"MLflow's store .*mlflow.db failed \(MlflowException: \(sqlite3."
                                            r"OperationalError\) disk I/O error\)"):
        logger.log_hyperparams({"model": "vae"})
    assert len(tries) == 1  # (not three tries, then "Could not create or find the MLflow experiment")
