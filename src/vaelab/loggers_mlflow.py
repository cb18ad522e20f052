"""MLflow as vaelab writes it (``logger=mlflow``): MLflow's own tracking in a SQLite database under the log folder.

::

    logs/mlflow.db                                         the tracking store: experiments, runs, params, metrics
    logs/mlflow-artifacts/<experiment>/<run id>/artifacts/   each run's files (below)

    mlflow ui --backend-store-uri sqlite:///logs/mlflow.db

What a run holds, and where it comes from:

- **params**: the hyperparameters that tell runs apart, the same as TensorBoard's HParams columns (``model``,
  ``model.beta``, … from :func:`vaelab.tasks.naming.run_hparams`; the training task hands them to every logger);
- **metrics**: what Lightning logs (``train/…`` and ``val/…`` each epoch, at the step TensorBoard uses; the test
  results ``test/…`` once), and ``best/val_elbo`` (``best/<monitor>``), the best checkpoint's score, at the end;
- **artifacts**: ``config.yaml`` (the resolved config), ``metrics.json`` (the run record), ``checkpoints/<best>``
  (the best checkpoint, named in ``metrics.json``'s ``best_ckpt``) and ``dashboard/val/<view>.png``, the last
  picture of each dashboard view, read from the run's TensorBoard events when it ends
  (:mod:`vaelab.reports.event_images`): the views draw into TensorBoard only, so ``logger=mlflow`` keeps it;
- **name**: the run folder's (``vae_z16_b1_2026-12-04_17-25-14_ld5f7r``; a sweep's job ``0_model.beta=1``); the
  tag ``vaelab.run_dir`` holds the folder's path;
- **experiment**: ``train`` for single runs; a sweep's own, named after its folder (``train/multiruns/<time>_<token>``,
  ``${vaelab.sweep_name:…}``);
- **status**: MLflow's ``FINISHED`` / ``FAILED`` / ``KILLED`` from ``metrics.json``'s (completed; failed or diverged;
  interrupted or terminated), set once the run's record is written, however it ended; the tag ``vaelab.status``
  keeps vaelab's own word. A killed process (SIGKILL) leaves the run ``RUNNING``, as its ``metrics.json`` says
  ``running``.

MLflow is an optional dependency (``pip install .[mlflow]``): nothing here imports it until a logger is built.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import math
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

log = logging.getLogger(__name__)

#: the tracking database and the artifact root, inside ``save_dir`` (``paths.log_dir``)
DB_NAME, ARTIFACTS_DIR = "mlflow.db", "mlflow-artifacts"
#: ``metrics.json``'s status → MLflow's run status
RUN_STATUS = {"completed": "FINISHED", "failed": "FAILED", "diverged": "FAILED", "interrupted": "KILLED",
              "terminated": "KILLED"}
#: what a run folder's images are taken from: the dashboard views' tags
IMAGE_PREFIXES = ("val/",)
INSTALL_HINT = "pip install .[mlflow]"


class MlflowMissingError(VaelabError, ModuleNotFoundError):
    """``logger=mlflow`` without MLflow installed."""


def require_mlflow() -> None:
    """Raise one clear :class:`MlflowMissingError` when MLflow cannot be imported."""
    try:
        import mlflow  # noqa: F401
    except ImportError as err:
        raise MlflowMissingError(
            f"logger=mlflow needs MLflow, which is not installed: {INSTALL_HINT} (from the clone; "
            f"pip install 'vaelab[mlflow]' for an installed vaelab), or choose another logger (logger=tensorboard)"
        ) from err


def run_status(status: str | None) -> str:
    """MLflow's run status for ``metrics.json``'s ``status`` (:data:`RUN_STATUS`; a record that is missing or says
    ``running`` after the task ended is a failure)."""
    return RUN_STATUS.get(str(status), "FAILED")


def best_metric_name(monitor: str) -> str:
    """The best checkpoint's score as a metric: ``val/elbo`` → ``best/val_elbo`` (one ``best`` section of charts in
    MLflow's UI, which groups a run's metrics by what comes before their last ``/``)."""
    return "best/" + monitor.replace("/", "_")


def sqlite_uri(save_dir: Path | str) -> str:
    """``sqlite:///<absolute save_dir>/mlflow.db``: absolute, so that the store is the same from any folder."""
    return "sqlite:///" + str(Path(save_dir).expanduser().resolve() / DB_NAME)


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
    clash."""
    from mlflow.tracking import MlflowClient

    quiet = [logging.getLogger(name) for name in ("alembic", "mlflow.store.db.utils")]
    levels = [q.level for q in quiet]
    for q in quiet:
        q.setLevel(logging.WARNING)
    try:
        with _file_lock(lock):
            MlflowClient(uri).search_experiments(max_results=1)
    finally:
        for q, level in zip(quiet, levels, strict=True):
            q.setLevel(level)


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
        except MlflowException:  # (made meanwhile by another process)
            continue
    raise VaelabError(f"Could not create or find the MLflow experiment {name!r}")


class MLflowLogger(LightningMLFlowLogger):
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
    """

    def __init__(self, save_dir: str, run_dir: str | None = None, experiment_name: str = "train",
                 tracking_uri: str | None = None, artifact_location: str | None = None, log_checkpoint: bool = True,
                 log_images: bool = True, **kwargs: Any) -> None:
        require_mlflow()
        root = Path(save_dir).expanduser().resolve()
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
            super().log_hyperparams(new)
            self._params.update({k: str(v) for k, v in new.items()})

    @rank_zero_only
    def log_config(self, config: Mapping[str, Any]) -> None:
        """The run's resolved config as the artifact ``config.yaml``."""
        self.experiment.log_dict(self.run_id, _plain(config), "config.yaml")

    @rank_zero_only
    def finalize(self, status: str = "success") -> None:
        """Lightning calls this after fitting, again after testing, and on an error: the run stays open for the
        test results and the run folder (:meth:`log_run_folder` ends it with ``metrics.json``'s status)."""
        self._lightning_status = status

    @rank_zero_only
    def log_run_folder(self, folder: Path | str) -> None:
        """The finished run's folder, once its ``metrics.json`` is written (the training task calls this however
        the run ended): its record, best checkpoint and dashboard images as artifacts, the best score as a metric,
        then the run's end with the record's status."""
        if not self._initialized or self._ended:
            return
        folder = Path(folder)
        record = _read_record(folder / "metrics.json")
        status = record.get("status")
        try:
            self._log_folder(folder, record)
        finally:
            self.end(run_status(status), status)

    def end(self, mlflow_status: str, vaelab_status: str | None = None) -> None:
        """End the run with MLflow's ``mlflow_status`` (and the tag ``vaelab.status``)."""
        if self._ended or not self._initialized:
            return
        self._ended = True
        client = self.experiment
        if vaelab_status:
            client.set_tag(self.run_id, "vaelab.status", vaelab_status)
        client.set_terminated(self.run_id, mlflow_status)

    def _log_folder(self, folder: Path, record: dict[str, Any]) -> None:
        client, run_id = self.experiment, self.run_id
        if (folder / "metrics.json").is_file():
            client.log_artifact(run_id, str(folder / "metrics.json"))
        best = record.get("best") or {}
        score = _number(best.get("score"))
        if best.get("monitor") and score is not None:
            step = int(record.get("global_step") or 0)
            client.log_metric(run_id, best_metric_name(str(best["monitor"])), score, step=step)
        ckpt = Path(str(record.get("best_ckpt") or ""))
        if self.log_checkpoint and record.get("best_ckpt") and ckpt.is_file():
            client.log_artifact(run_id, str(ckpt), "checkpoints")
        if self.log_images:
            # (a resumed run's TensorBoard events go on in the run it resumed: metrics.json says where)
            events = Path(str(record.get("tensorboard_dir") or folder))
            self._log_images(events)

    def _log_images(self, events: Path) -> None:
        from vaelab.reports.event_images import latest_images

        images = latest_images(events, IMAGE_PREFIXES)
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
    if logger is None or logger._ended or not logger._initialized:
        return
    status = {"success": "FINISHED", "finished": "FINISHED"}.get(str(logger._lightning_status), "FAILED")
    with contextlib.suppress(Exception):
        logger.end(status)


def _plain(value: Any) -> Any:
    from omegaconf import Container, OmegaConf

    return OmegaConf.to_container(value, resolve=True) if isinstance(value, Container) else dict(value)


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _read_record(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
