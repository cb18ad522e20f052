"""MLflow as vaelab writes it (``logger=mlflow``): MLflow's own tracking in a SQLite database under the log folder.

::

    logs/mlflow.db                                         the tracking store: experiments, runs, params, metrics
    logs/mlflow-artifacts/<experiment>/<run id>/artifacts/   each run's files (below)

    mlflow ui --backend-store-uri sqlite:///logs/mlflow.db

What a run holds, and where it comes from:

- **params**: the hyperparameters that tell runs apart, the same as TensorBoard's HParams columns (``model``,
  ``model.beta``, … from :func:`vaelab.tasks.hparams.run_hparams`; the training task hands them to every logger);
- **metrics**: what Lightning logs (``train/…`` and ``val/…`` each epoch, at the step TensorBoard uses; the test
  results ``test/…`` once), and ``best/val_elbo`` (``best/<monitor>``), the best checkpoint's score, at the end;
- **artifacts**: ``config.yaml`` (the resolved config), ``metrics.json`` (the run record), ``checkpoints/<best>``
  (the best checkpoint, named in ``metrics.json``'s ``best_ckpt``) and ``dashboard/val/<view>.png``, the last
  picture of each dashboard view, read from the run's TensorBoard events when it ends
  (:mod:`vaelab.loggers.event_images`): the views draw into TensorBoard only, so ``logger=mlflow`` keeps it;
- **name**: the run folder's (``vae_z16_b1_2026-12-04_17-25-14_ld5f7r``; a sweep's job ``0_model.beta=1``); the
  tag ``vaelab.run_dir`` holds the folder's path;
- **experiment**: ``train`` for single runs; a sweep's own, named after its folder (``train/multiruns/<time>_<token>``,
  ``${vaelab.sweep_name:…}``);
- **status**: MLflow's ``FINISHED`` / ``FAILED`` / ``KILLED`` from ``metrics.json``'s (completed; failed or diverged;
  interrupted or terminated), set once the run's record is written, however it ended; the tag ``vaelab.status``
  keeps vaelab's own word. A killed process (SIGKILL) leaves the run ``RUNNING``, as its ``metrics.json`` says
  ``running``.

When the store or server fails (:class:`TrackingError`, one message naming the file or URI and the ways out):

- **before training** (building the logger, the run's params and config): the run stops there, its ``metrics.json``
  ``failed`` with the message as ``error``. A server is first asked once, with a short timeout and no retries,
  whether it answers at all (:func:`probe_server`); a SQLite file is first checked for being writable and being a
  database (:func:`check_sqlite_store`);
- **once training has started** (the first metrics on): the run goes on without MLflow. One warning says what
  failed; no further call is made to the store (each would wait out MLflow's retries again); TensorBoard, the
  checkpoints and ``metrics.json`` go on as before, and the training task adds the warning's text to the record as
  ``tracking_error`` when the run ends (:attr:`MLflowLogger.tracking_error`). The MLflow run keeps what was logged
  before the failure and is left ``RUNNING``.

With a server, MLflow's HTTP retries are capped (:data:`HTTP_LIMITS`, each only where its variable is unset): its
defaults wait about 4 minutes on a server that is down.

MLflow is an optional dependency (``pip install .[mlflow]``): nothing here imports it until a logger is built.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import tempfile
import weakref
from argparse import Namespace
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from lightning.fabric.utilities.logger import _convert_params, _flatten_dict
from lightning.pytorch.loggers import MLFlowLogger as LightningMLFlowLogger
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only

from vaelab.errors import VaelabError
from vaelab.loggers.tracking import (
    GuardedTracker,
    TrackingError,
    best_metric_name,
    dashboard_images,
    first_line,
    number,
    plain,
    require,
    says,
)
from vaelab.record import COMPLETED, DIVERGED, FAILED, INTERRUPTED, RECORD_FILE, TERMINATED

#: the tracking database and the artifact root, inside ``save_dir`` (``paths.log_dir``)
DB_NAME, ARTIFACTS_DIR = "mlflow.db", "mlflow-artifacts"
#: ``metrics.json``'s status → MLflow's run status
RUN_STATUS = {COMPLETED: "FINISHED", FAILED: "FAILED", DIVERGED: "FAILED", INTERRUPTED: "KILLED",
              TERMINATED: "KILLED"}
#: MLflow's HTTP retries with a tracking server, set where unset: 4 retries 0, 2, 4, 8 s apart and 30 s for an
#: answer (MLflow's defaults, 7 retries with a doubling wait from 4 s and 120 s, wait about 254 s on a server that
#: is down, and again at every call)
HTTP_LIMITS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "4", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
               "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}
#: seconds the first question to a tracking server may take (to connect, then to answer)
PROBE_TIMEOUT_S = 5
#: the first bytes of every SQLite database file
SQLITE_HEADER = b"SQLite format 3\x00"
#: MLflow's loggers that report a failed SQL statement with its traceback and the statement (vaelab says it once)
STORE_LOGGERS = ("mlflow.store.db.utils", "alembic")
#: what SQLite says about a file that is not a database it can read / a database it cannot write
NOT_A_DATABASE = ("file is not a database", "database disk image is malformed", "file is encrypted")
READ_ONLY = ("readonly database", "read-only", "unable to open database file", "permission denied")


class MlflowMissingError(VaelabError, ModuleNotFoundError):
    """``logger=mlflow`` without MLflow installed."""


def require_mlflow() -> None:
    """Raise one clear :class:`MlflowMissingError` when MLflow cannot be imported."""
    require("mlflow", "mlflow", "MLflow", "mlflow", MlflowMissingError)


def run_status(status: str | None) -> str:
    """MLflow's run status for ``metrics.json``'s ``status`` (:data:`RUN_STATUS`; a record that is missing or says
    ``running`` after the task ended is a failure)."""
    return RUN_STATUS.get(str(status), "FAILED")


def sqlite_uri(save_dir: Path | str) -> str:
    """``sqlite:///<absolute save_dir>/mlflow.db``: absolute, so that the store is the same from any folder."""
    return "sqlite:///" + str(Path(save_dir).expanduser().resolve() / DB_NAME)


def sqlite_file(uri: str) -> Path | None:
    """The database file of a ``sqlite:///…`` URI; None for any other store."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///"):].split("?", 1)[0])


def is_server(uri: str) -> bool:
    """Whether ``uri`` is a tracking server (``http://``, ``https://``) rather than a store of files."""
    return uri.lower().startswith(("http://", "https://"))


def unreachable_reason(err: BaseException) -> str | None:
    """Why a server could not be reached (refused, no answer in time, unknown host), from ``urllib``'s or MLflow's
    error; None for a server that answered (with an error of its own)."""
    if says(err, ("connection refused",)):
        return "connection refused: nothing listens there"
    if says(err, ("timed out", "timeout")):
        return "no answer in time"
    if says(err, ("name or service not known", "nodename nor servname", "name resolution", "getaddrinfo")):
        return "unknown host name"
    if says(err, ("max retries exceeded", "failed to establish a new connection", "connection aborted",
                  "connection reset", "remote end closed")):
        return first_line(err, 200)
    return None


def problem(uri: str, err: BaseException) -> str:
    """What is wrong with the store or server at ``uri``, going by ``err``, naming the file or URI."""
    path = sqlite_file(uri)
    if path is not None:
        if says(err, NOT_A_DATABASE):
            return not_a_database(path)
        if says(err, READ_ONLY):
            return read_only(path)
        return f"MLflow's store {path} failed ({first_line(err)})"
    if is_server(uri):
        reason = unreachable_reason(err)
        if reason:
            return unreachable(uri, reason)
        return f"The MLflow tracking server {uri} failed ({first_line(err)}): check the server"
    return f"MLflow's tracking store {uri} failed ({first_line(err)}): check it"


def unreachable(uri: str, reason: str) -> str:
    """A server that cannot be reached, and its fix."""
    return f"The MLflow tracking server {uri} cannot be reached ({reason}): start it, or correct the address"


def not_a_database(path: Path) -> str:
    """A store file that SQLite cannot read, and its fix (moved away, not deleted: it may hold runs)."""
    return (f"MLflow's store {path} is not an SQLite database (another kind of file, or a damaged one). Move it away "
            f"(mv {path} {path}.bad): the next run makes a new store there")


def read_only(path: Path) -> str:
    """A store file that cannot be written, and its fix."""
    return (f"MLflow's store {path} cannot be written: the file or its folder is read-only. Make both writable "
            f"(chmod u+w {path} {path.parent})")


def ways_out(uri: str, save_dir: Path) -> str:
    """How to train anyway: into another log folder, without MLflow, or (with a server or store given by URI)
    into the SQLite store of the log folder; said after what is wrong."""
    if sqlite_file(uri) is not None:
        return "Or give another log folder (paths.log_dir=<folder>), or train without MLflow (logger=tensorboard)"
    where = ("unset MLFLOW_TRACKING_URI" if os.environ.get("MLFLOW_TRACKING_URI") == uri
             else "drop logger.mlflow.tracking_uri")
    return f"Or train without it: logger=tensorboard, or {where} (runs then go into {save_dir / DB_NAME})"


def say(problem_text: str, uri: str, save_dir: Path) -> str:
    """The one message for a store that cannot be used: what is wrong (and its fix), then the ways out."""
    return f"{problem_text}. {ways_out(uri, save_dir)}"


def check_sqlite_store(path: Path) -> None:
    """Refuse, with one :class:`TrackingError` naming it, a store MLflow could not use: a file (or folder) that
    cannot be written, or a file that is not an SQLite database. (A missing or empty file is a new store.)"""
    folder = path.parent
    writable = os.access(folder, os.W_OK) and (not path.exists() or os.access(path, os.W_OK))
    if not writable:
        raise TrackingError(say(read_only(path), sqlite_uri(folder), folder))
    if path.is_file() and path.stat().st_size:
        with open(path, "rb") as stream:
            if stream.read(len(SQLITE_HEADER)) != SQLITE_HEADER:
                raise TrackingError(say(not_a_database(path), sqlite_uri(folder), folder))


def probe_server(uri: str, save_dir: Path, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Ask the tracking server at ``uri`` once (``GET <uri>/health``, no retries, ``timeout`` seconds) whether it
    answers at all; any answer will do, an HTTP error too (the calls that follow say what the server thinks of
    them). One that cannot be reached raises :class:`TrackingError` naming the URI and the ways out, in seconds,
    where MLflow's own retries would take minutes. (The standard library's ``urllib``: no MLflow to import first.)"""
    import ssl
    import urllib.error
    import urllib.request

    context = ssl.create_default_context()  # (whether the certificate is good is for MLflow's own calls to say)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout, context=context):
            pass
    except urllib.error.HTTPError:  # (an answer)
        return
    except (OSError, ValueError) as err:
        if isinstance(getattr(err, "reason", err), ssl.SSLError):  # (a server that wants a client certificate)
            return  # (URLError, a timeout, a reset connection; a malformed address)
        reason = unreachable_reason(err) or first_line(err, 200)
        raise TrackingError(say(unreachable(uri, reason), uri, save_dir)) from err


def cap_http_retries() -> None:
    """Set MLflow's HTTP retries and timeout to :data:`HTTP_LIMITS` where the environment does not set them."""
    for name, value in HTTP_LIMITS.items():
        os.environ.setdefault(name, value)


@contextlib.contextmanager
def quiet_store() -> Iterator[None]:
    """MLflow's SQL store logs every failed statement with a traceback and the SQL before it raises: quiet while
    vaelab makes the call and says what went wrong itself."""
    loggers = [logging.getLogger(name) for name in STORE_LOGGERS]
    levels = [q.level for q in loggers]
    for q in loggers:
        q.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for q, level in zip(loggers, levels, strict=True):
            q.setLevel(level)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` (POSIX ``flock``; nothing where there is none) for the jobs of a parallel sweep
    that start on one new database together."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def prepare_store(uri: str, lock: Path) -> None:
    """Create (and migrate) the SQLite store under a file lock: two processes making its tables at once would
    clash. A store that fails raises one :class:`TrackingError` naming its file."""
    from mlflow.tracking import MlflowClient

    path = sqlite_file(uri)
    if path is not None:
        check_sqlite_store(path)
    try:
        with quiet_store(), _file_lock(lock):
            MlflowClient(uri).search_experiments(max_results=1)
    except Exception as err:
        raise TrackingError(say(problem(uri, err), uri, lock.parent)) from err


def ensure_experiment(client: Any, name: str, artifact_location: str | None, uri: str = "<the store>") -> str:
    """The id of the experiment ``name``, created when there is none (another job of a parallel sweep may create
    it at the same moment: then the one it made is taken)."""
    from mlflow.exceptions import MlflowException

    for _ in range(3):
        found = client.get_experiment_by_name(name)
        if found is not None:
            if found.lifecycle_stage == "deleted":
                raise VaelabError(
                    f"The MLflow experiment {name!r} was deleted, and MLflow keeps its name until it is purged: "
                    f"restore it (MLFLOW_TRACKING_URI={uri} mlflow experiments restore --experiment-id "
                    f"{found.experiment_id}) or purge it (mlflow gc --backend-store-uri {uri})"
                )
            return found.experiment_id
        try:
            return client.create_experiment(name, artifact_location=artifact_location)
        except MlflowException as err:  # (made meanwhile by another process; any other failure is raised)
            if err.error_code != "RESOURCE_ALREADY_EXISTS" and not says(err, ("database is locked",)):
                raise
            continue
    raise VaelabError(f"Could not create or find the MLflow experiment {name!r}")


class MLflowLogger(GuardedTracker, LightningMLFlowLogger):
    """Lightning's MLflow logger writing into a SQLite store under ``save_dir`` (see the module), with vaelab's
    params, config, run folder and status.

    Args:
        save_dir: the log folder (``paths.log_dir``): ``mlflow.db`` and ``mlflow-artifacts/`` go there.
        run_dir: the run's folder (``paths.output_dir``): the run is named after it.
        experiment_name: the MLflow experiment (``${vaelab.sweep_name:${task_name}}``: a sweep's folder, else
            ``train``).
        tracking_uri: another store or a tracking server (``http://…``); default ``sqlite:///<save_dir>/mlflow.db``.
        artifact_location: where a new experiment keeps its runs' artifacts; default, with the SQLite store,
            ``<save_dir>/mlflow-artifacts/<experiment>`` (else the server's choice).
        log_checkpoint: copy the best checkpoint into the run's artifacts.
        log_images: copy the last picture of each dashboard view (``val/…`` images in the run's TensorBoard events).
        **kwargs: as Lightning's ``MLFlowLogger`` (``tags``, ``prefix``, ``run_id``, ``synchronous``).

    A failure of the store or server follows :class:`~vaelab.loggers.tracking.GuardedTracker`'s rule.
    """

    tracker_name = "MLflow"

    def __init__(self, save_dir: str, run_dir: str | None = None, experiment_name: str = "train",
                 tracking_uri: str | None = None, artifact_location: str | None = None, log_checkpoint: bool = True,
                 log_images: bool = True, **kwargs: Any) -> None:
        root = Path(save_dir).expanduser().resolve()
        if tracking_uri and is_server(tracking_uri):  # (first: asked in moments, before MLflow takes seconds to import)
            cap_http_retries()
            probe_server(tracking_uri, root)
        require_mlflow()
        if not tracking_uri:
            root.mkdir(parents=True, exist_ok=True)
            tracking_uri = sqlite_uri(root)
            if artifact_location is None:
                artifact_location = (root / ARTIFACTS_DIR / experiment_name).as_uri()
        if tracking_uri.startswith("sqlite:"):
            prepare_store(tracking_uri, root / f"{DB_NAME}.lock")
        tags = dict(kwargs.pop("tags", None) or {})
        run_name = kwargs.pop("run_name", None)
        if run_dir:
            folder = Path(run_dir).expanduser().resolve()
            run_name = run_name or folder.name
            tags.setdefault("vaelab.run_dir", str(folder))
        kwargs.pop("log_model", None)  # (checkpoints: log_checkpoint, once the run is over)
        super().__init__(experiment_name=experiment_name, run_name=run_name, tracking_uri=tracking_uri, tags=tags,
                         artifact_location=artifact_location, log_model=False, **kwargs)
        self.log_checkpoint, self.log_images = log_checkpoint, log_images
        self._params: dict[str, str] = {}  # logged so far (MLflow keeps a param's first value)
        self._ended = False
        self._lightning_status: str | None = None
        self._save_dir, self._run_dir = root, Path(run_dir).expanduser().resolve() if run_dir else None
        self._training = False  # (set by the first metrics: from then on a failure of MLflow does not stop the run)
        self.tracking_error = None
        # a run this logger began is ended with Lightning's last word if no run folder ends it (a plain Trainer)
        atexit.register(_end_at_exit, weakref.ref(self))

    # ------------------------------------------------------------------------------------------------ the run
    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        """The ``MlflowClient``; the first use makes the experiment (safely in a parallel sweep) and the run."""
        if self._experiment_id is None and self._run_id is None:
            self._experiment_id = ensure_experiment(self._mlflow_client, self._experiment_name,
                                                    self._artifact_location, self._tracking_uri)
        return LightningMLFlowLogger.experiment.fget(self)

    @rank_zero_only
    def log_hyperparams(self, params: dict[str, Any] | Namespace, *args: Any, **kwargs: Any) -> None:
        """``params`` (flattened with ``.``: ``model.beta``) as the run's params; a key already logged is kept
        (MLflow refuses a second value)."""
        flat = _flatten_dict(_convert_params(params) or {}, delimiter=".")
        new = {k: v for k, v in flat.items() if k not in self._params}
        if new:
            self._guarded("the run's params", lambda: super(MLflowLogger, self).log_hyperparams(new))
            self._params.update({k: str(v) for k, v in new.items()})

    @rank_zero_only
    def log_config(self, config: Mapping[str, Any]) -> None:
        """The run's resolved config as the artifact ``config.yaml``."""
        self._guarded("the run's config", lambda: self.experiment.log_dict(self.run_id, plain(config), "config.yaml"))

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Lightning's metrics; from the first of them on, a failure of MLflow no longer stops the run (see
        :meth:`_guarded`)."""
        self._training = True
        self._guarded(f"the metrics of step {step}", lambda: super(MLflowLogger, self).log_metrics(metrics, step))

    # ------------------------------------------------------------------------ GuardedTracker's hooks: MLflow's words
    def _calling(self) -> contextlib.AbstractContextManager[None]:
        return quiet_store()

    def _stop_message(self, what: str, err: BaseException) -> str:
        return say(problem(self._tracking_uri, err), self._tracking_uri, self._save_dir)

    def _problem(self, err: BaseException) -> str:
        return problem(self._tracking_uri, err)

    def _kept(self) -> str:
        return f"the MLflow run {self._run_id} keeps only what was logged before and stays RUNNING"

    def _ways_out(self) -> str:
        return ways_out(self._tracking_uri, self._save_dir)

    def _has_run(self) -> bool:
        return bool(self._initialized)

    def _end_run(self, status: str | None) -> None:
        self.end(run_status(status), status)

    @rank_zero_only
    def finalize(self, status: str = "success") -> None:
        """Lightning calls this after fitting, again after testing, and on an error: the run stays open for the
        test results and the run folder (:meth:`log_run_folder` ends it with ``metrics.json``'s status)."""
        self._lightning_status = status

    def end(self, mlflow_status: str, vaelab_status: str | None = None) -> None:
        """End the run with MLflow's ``mlflow_status`` (and the tag ``vaelab.status``)."""
        if self._ended or not self._initialized:
            return
        self._ended = True
        self._guarded("the run's end", lambda: self._end(mlflow_status, vaelab_status))

    def _end(self, mlflow_status: str, vaelab_status: str | None) -> None:
        client = self.experiment
        if vaelab_status:
            client.set_tag(self.run_id, "vaelab.status", vaelab_status)
        client.set_terminated(self.run_id, mlflow_status)

    def _log_folder(self, folder: Path, record: dict[str, Any]) -> None:
        client, run_id = self.experiment, self.run_id
        if (folder / RECORD_FILE).is_file():
            client.log_artifact(run_id, str(folder / RECORD_FILE))
        best = record.get("best") or {}
        score = number(best.get("score"))
        if best.get("monitor") and score is not None:
            step = int(record.get("global_step") or 0)
            client.log_metric(run_id, best_metric_name(str(best["monitor"])), score, step=step)
        ckpt = Path(str(record.get("best_ckpt") or ""))
        if self.log_checkpoint and record.get("best_ckpt") and ckpt.is_file():
            client.log_artifact(run_id, str(ckpt), "checkpoints")
        if self.log_images:
            self._log_images(folder, record)

    def _log_images(self, folder: Path, record: dict[str, Any]) -> None:
        images = dashboard_images(folder, record)
        if not images:
            return
        with tempfile.TemporaryDirectory(prefix="vaelab-mlflow-") as tmp:
            for image in images:
                path = Path(tmp) / image.file_name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(image.png)
            self.experiment.log_artifacts(self.run_id, tmp, "dashboard")


def _end_at_exit(ref: weakref.ref) -> None:
    logger = ref()
    if logger is None or logger._ended or not logger._initialized or logger.tracking_error is not None:
        return
    status = {"success": "FINISHED", "finished": "FINISHED"}.get(str(logger._lightning_status), "FAILED")
    with contextlib.suppress(Exception):
        logger.end(status)
