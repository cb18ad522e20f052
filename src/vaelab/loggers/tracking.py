"""What the trackers that keep a copy of a run (MLflow: :mod:`vaelab.loggers.mlflow`, W&B: :mod:`vaelab.loggers.wandb`)
share: the optional extra they need, the rule for their failing, and the finished run folder read back.

**The rule for a tracker failing** (:class:`GuardedTracker`): every call to the tracker goes through
:meth:`GuardedTracker._guarded`.

- *Before training* (building the logger, the run's hyperparameters, its config): one :class:`TrackingError`, whose
  message says what is wrong and the ways out, stops the run; nothing has been trained, so nothing is lost.
- *Once training has started* (the first metrics on): the run goes on without the tracker. One warning says what
  failed; nothing more is sent to it; TensorBoard, the checkpoints and ``metrics.json`` go on as before, and the
  training task adds the warning's text to the record as ``tracking_error`` when the run ends
  (:attr:`GuardedTracker.tracking_error`).

The tracker is a copy of what the run folder holds, so a failure mid-run does not throw the training away; it is not
silent either: the warning and the record say it.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lightning.pytorch.utilities import rank_zero_only

from vaelab.errors import VaelabError
from vaelab.loggers.event_images import EventImage, latest_images
from vaelab.record import RECORD_FILE, STATUS

#: what a run folder's images are taken from: the dashboard views' tags
IMAGE_PREFIXES = ("val/",)
#: what the run folder keeps, however a tracker fared (said when one gave up)
KEPT_IN_FOLDER = "metrics.json, TensorBoard's events, checkpoints/"


class TrackingError(VaelabError, RuntimeError):
    """A tracker (MLflow's store or server, W&B) cannot be used before training began; the message says what is
    wrong and the ways out."""


def require(module: str, choice: str, name: str, extra: str, error: type[Exception]) -> None:
    """Raise one clear ``error`` when ``module`` (the tracker ``name`` of ``logger=<choice>``, in the optional extra
    ``extra``) cannot be imported: how to install it, or which logger to choose instead."""
    try:
        importlib.import_module(module)
    except ImportError as err:
        raise error(
            f"logger={choice} needs {name}, which is not installed: pip install .[{extra}] (from the clone; "
            f"pip install 'vaelab[{extra}]' for an installed vaelab), or choose another logger (logger=tensorboard)"
        ) from err


def first_line(err: BaseException, limit: int = 300) -> str:
    """``Type: first line of the message``, at most ``limit`` characters (trackers' errors carry whole responses
    and SQL statements)."""
    text = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}".rstrip(": ")
    return text if len(text) <= limit else text[:limit] + "…"


def says(err: BaseException | None, phrases: tuple[str, ...]) -> bool:
    """Whether ``err`` or an exception it came from says one of ``phrases`` (MLflow wraps SQLAlchemy's errors, which
    wrap SQLite's)."""
    while err is not None:
        if any(p in str(err).lower() for p in phrases):
            return True
        err = err.__cause__ or err.__context__
    return False


def best_metric_name(monitor: str) -> str:
    """The best checkpoint's score as a metric: ``val/elbo`` → ``best/val_elbo`` (one ``best`` section of charts in
    the trackers' UIs, which group a run's metrics by what comes before a ``/``)."""
    return "best/" + monitor.replace("/", "_")


def read_record(path: Path) -> dict[str, Any]:
    """The run record at ``path`` (``metrics.json``); ``{}`` when it is missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def number(value: Any) -> float | None:
    """``value`` as a finite float; None for anything else (missing, text, NaN, infinite)."""
    try:
        result = float(value)
    except (TypeError, ValueError):
        return None
    return result if math.isfinite(result) else None


def plain(value: Any) -> Any:
    """A config (OmegaConf's, resolved) or mapping as plain Python containers."""
    from omegaconf import Container, OmegaConf

    return OmegaConf.to_container(value, resolve=True) if isinstance(value, Container) else dict(value)


def dashboard_images(folder: Path, record: dict[str, Any]) -> list[EventImage]:
    """The last picture of each dashboard view (:data:`IMAGE_PREFIXES`) in the run's TensorBoard events: those of
    ``folder``, or, for a resumed run, of the run it resumed (``metrics.json``'s ``tensorboard_dir``)."""
    return latest_images(Path(str(record.get("tensorboard_dir") or folder)), IMAGE_PREFIXES)


class GuardedTracker:
    """The rule for a tracker failing (see the module), for a Lightning logger that mixes it in (listed before
    Lightning's logger). The logger sets ``_run_dir`` (the run folder, or None), ``_training = False``,
    ``_ended = False`` and ``tracking_error = None`` when built, sets ``_training`` with its first metrics, and says
    in its hooks (``_stop_message``, ``_problem``, ``_kept``, ``_ways_out``, ``_has_run``, ``_log_folder``,
    ``_end_run``) what is particular to its tracker."""

    #: the tracker's name in the messages (``MLflow``, ``W&B``)
    tracker_name = "the tracker"
    _run_dir: Path | None = None
    _training = False
    _ended = False
    #: what made this logger stop, once its tracker failed after training began (the warning's text); None until then
    tracking_error: str | None = None

    # ------------------------------------------------------------------------------------------------- the rule
    def _guarded(self, what: str, action: Callable[[], Any]) -> None:
        """Do ``action`` (logging ``what``) against the tracker, and the rule for its failing: before training began,
        one :class:`TrackingError` (:meth:`_stop_message`) stops the run (nothing is lost yet); after, the run goes
        on without the tracker (:meth:`_give_up`). Once the tracker has failed, nothing more is sent to it."""
        if self.tracking_error is not None:
            return
        try:
            with self._calling():
                action()
        except VaelabError:
            raise
        except Exception as err:
            if not self._training:
                raise TrackingError(self._stop_message(what, err)) from err
            self._give_up(what, err)

    def _give_up(self, what: str, err: Exception) -> None:
        """Stop sending to the tracker after ``err`` (logging ``what``), saying so once, loudly: the run itself goes
        on, its record, checkpoints and TensorBoard events untouched (the training task notes :attr:`tracking_error`
        in the record at the end)."""
        folder = self._run_dir or "the run folder"
        self.tracking_error = (
            f"{self.tracker_name} failed while logging {what}, and the run went on without it. {self._problem(err)}. "
            f"Everything the run logs is still in {folder} ({KEPT_IN_FOLDER}); {self._kept()}"
        )
        logging.getLogger(type(self).__module__).warning("%s. %s.", self.tracking_error, self._ways_out())

    # ---------------------------------------------------------------------------------------------- the run's end
    @rank_zero_only
    def log_run_folder(self, folder: Path | str) -> None:
        """The finished run's folder, once its ``metrics.json`` is written (the training task calls this however the
        run ended): what the tracker keeps of it (:meth:`_log_folder`), then the run's end with the record's status
        (:meth:`_end_run`). The tracker failing here is said once, as during training."""
        if not self._has_run() or self._ended:
            return
        folder = Path(folder)
        record = read_record(folder / RECORD_FILE)
        self._training = True  # (the run is over: a failure now cannot stop it)
        try:
            self._guarded("the run folder's files", lambda: self._log_folder(folder, record))
        finally:
            self._end_run(record.get(STATUS))

    # -------------------------------------------------------------------------------------------------- the hooks
    def _calling(self) -> contextlib.AbstractContextManager[Any]:
        """The context every call to the tracker is made in (MLflow's: its SQL store quietened)."""
        return contextlib.nullcontext()

    def _stop_message(self, what: str, err: BaseException) -> str:
        """The one message for ``err`` before training: what is wrong, its fix, the ways out."""
        raise NotImplementedError

    def _problem(self, err: BaseException) -> str:
        """What is wrong, going by ``err`` (one sentence, no full stop)."""
        raise NotImplementedError

    def _kept(self) -> str:
        """What the tracker's run keeps once it was given up."""
        raise NotImplementedError

    def _ways_out(self) -> str:
        """How to train without the failure (said after the warning)."""
        raise NotImplementedError

    def _has_run(self) -> bool:
        """Whether a run was begun in the tracker (there is one to end)."""
        raise NotImplementedError

    def _log_folder(self, folder: Path, record: dict[str, Any]) -> None:
        """Log what the tracker keeps of the finished run ``folder`` (its ``record``)."""
        raise NotImplementedError

    def _end_run(self, status: str | None) -> None:
        """End the tracker's run with ``metrics.json``'s ``status``."""
        raise NotImplementedError
