"""The run record, ``metrics.json``: written however a task ends, and after every epoch, so no run's outcome is lost.

``metrics.json`` is strict JSON: a value that is not a finite number (a diverged run's NaN loss, a best score of
-inf) is written as the string ``"NaN"``, ``"Infinity"`` or ``"-Infinity"``, which ``float()`` reads back, instead
of the bare ``NaN`` / ``-Infinity`` tokens that strict JSON readers (``jq``, JavaScript, ``json.loads`` with
``parse_constant``) refuse.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import numbers
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException

from vaelab.errors import VaelabError
from vaelab.tasks.signals import interrupts_ignored

log = logging.getLogger(__name__)

#: how a float that is not a finite number is written into metrics.json (``float(text)`` reads each one back)
NON_FINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}
#: the statuses a task gives a run that raised; any other (``running``, ``completed``) becomes ``failed``
ENDED_STATUSES = ("failed", "diverged", "interrupted", "terminated")


def scalar_metrics(metrics: dict[str, Any], prefix: str) -> dict[str, float]:
    """The ``prefix/…`` entries of Lightning's metric dict as plain floats."""
    return {k: float(v) for k, v in sorted(metrics.items()) if k.startswith(prefix)}


def json_safe(value: Any) -> Any:
    """``value`` with every float that is not finite replaced by its string (:data:`NON_FINITE`), recursively;
    numbers of other types (NumPy, 0-d tensors) become plain floats or ints."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # a 0-d tensor or NumPy scalar
        value = value.item()
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        value = float(value)
        return value if math.isfinite(value) else NON_FINITE[repr(value)]
    return value


class RecordWriteError(VaelabError, OSError):
    """The run's record (``metrics.json``) could not be written: its folder became read-only, or the disk is full."""


class RunFolderWriteError(VaelabError, OSError):
    """A file in the run folder (TensorBoard's events, ``hparams.yaml``) could not be written: the folder became
    read-only, or the disk is full."""


#: the errors of a write refused for good: a read-only file or folder, a full disk, a quota
WRITE_REFUSED = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT)
#: what to do about it, said after the file and the reason
WAY_OUT = ("free space or make it writable (the run's checkpoints are in its checkpoints/ folder), or give a folder "
           "you can write to next time: paths.log_dir=<folder>")


def _write_unnamed(folder: Path, text: bytes) -> int | None:
    """A file in ``folder`` holding ``text`` that has no name yet (Linux's ``O_TMPFILE``): a process killed while
    writing it leaves nothing behind. None where the file system cannot make one."""
    flag = getattr(os, "O_TMPFILE", None)
    if flag is None:
        return None
    try:
        fd = os.open(folder, flag | os.O_WRONLY, 0o644)
    except OSError as err:
        if err.errno in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
            return None
        raise
    try:
        os.write(fd, text)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _replace(path: Path, text: bytes) -> None:
    """Put ``text`` at ``path`` atomically: the new contents are written to a file without a name (or, where the
    file system has none, a temporary file), which is then given a temporary name and renamed over ``path``, so
    a reader sees the old file or the new one, and a process killed at any moment leaves no half-written file
    (and, with an unnamed file, almost never a stray temporary one: only between two system calls)."""
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    fd = _write_unnamed(path.parent, text)
    try:
        linked = False
        if fd is not None:
            folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:  # (a dir fd makes Python call linkat with AT_SYMLINK_FOLLOW: /proc's link names the file itself)
                os.link(f"/proc/self/fd/{fd}", tmp.name, dst_dir_fd=folder)
                linked = True
            except OSError as err:
                if err.errno not in (errno.ENOENT, errno.EXDEV, errno.EPERM, errno.EACCES):
                    raise
            finally:
                os.close(folder)
        if not linked:  # (no O_TMPFILE, or no /proc to link it from)
            tmp.write_bytes(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        if fd is not None:
            os.close(fd)


def _overwrite(path: Path, text: bytes) -> None:
    """Write ``text`` into the existing ``path`` in place: on a full disk a file the size of the old record still
    fits in the blocks it holds, where a new file does not."""
    with open(path, "r+b") as stream:
        stream.write(text)
        stream.truncate()


@rank_zero_only
def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as strict JSON, atomically (see :func:`_replace`): a reader, or a run killed while writing,
    never sees half a file. On a full disk (no room for a new file) the existing record is overwritten in place
    instead. A record that cannot be written at all raises :class:`RecordWriteError`, naming the file."""
    text = (json.dumps(json_safe(data), indent=2, default=str, allow_nan=False) + "\n").encode()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            _replace(path, text)
        except OSError as err:
            if err.errno != errno.ENOSPC or not path.is_file():
                raise
            _overwrite(path, text)
    except OSError as err:
        raise RecordWriteError(
            f"Cannot write the run's record {path}: {err.strerror or err}. Its folder became read-only or its disk "
            f"is full: {WAY_OUT}"
        ) from None


def how_it_ended(err: BaseException) -> dict[str, str]:
    """The status and error of a run that raised ``err`` without saying how it ended itself: ``terminated`` for
    SIGTERM, ``interrupted`` for Ctrl-C (also a second one while the run was already stopping), else ``failed``."""
    if isinstance(err, SIGTERMException):
        return {"status": "terminated", "error": "terminated by SIGTERM"}
    if isinstance(err, KeyboardInterrupt):
        return {"status": "interrupted", "error": "interrupted (Ctrl-C)"}
    return {"status": "failed", "error": f"{type(err).__name__}: {err}"}


def causes(err: BaseException | None) -> list[BaseException]:
    """``err``, the error it was raised from or while handling, that one's, and so on: the latest first."""
    chain: list[BaseException] = []
    while err is not None and all(err is not seen for seen in chain):
        chain.append(err)
        err = err.__cause__ or err.__context__
    return chain


def _refused_in(err: BaseException, folder: Path) -> bool:
    """Whether ``err`` is a write refused for good (:data:`WRITE_REFUSED`) of ``folder`` or a file in it."""
    if not isinstance(err, OSError) or err.errno not in WRITE_REFUSED or not err.filename:
        return False
    try:
        return Path(os.fsdecode(err.filename)).resolve().is_relative_to(Path(folder).resolve())
    except (TypeError, ValueError, OSError):
        return False


def _explained(err: BaseException, first: BaseException) -> bool:
    """Whether ``err``, raised while handling ``first``, follows from it: ``first`` is Ctrl-C or SIGTERM (what it
    interrupted failed), or a write was refused for good (:data:`WRITE_REFUSED`) on the way from ``first`` to ``err``
    (the folder that had failed failed again)."""
    if isinstance(first, (KeyboardInterrupt, SIGTERMException)):
        return True
    for e in causes(err):
        if e is first:
            return False
        if isinstance(e, OSError) and e.errno in WRITE_REFUSED:
            return True
    return False


def reported_error(err: BaseException, folder: Path) -> BaseException:
    """The error to report, and record, for a run in ``folder`` that stopped on ``err``.

    Lightning, stopping on an error, still calls the callbacks' ``on_exception`` and closes the loggers; when the run
    folder has become read-only or full, their writes fail in turn, and their error, raised while handling the first
    one, would hide it behind tracebacks. So the first vaelab error, Ctrl-C or SIGTERM that ``err`` was raised from
    or while handling is the one reported; failing that, a write refused for good (:data:`WRITE_REFUSED`) of a file
    in the run folder is one :class:`RunFolderWriteError` naming the file (TensorBoard's "you tried to log 27.70
    which is currently not supported" is such a write, raised from it); otherwise ``err`` itself. An interrupt or
    exit (``KeyboardInterrupt``, ``SystemExit``) is itself. An error over the first one that it does not explain
    (:func:`_explained`: a bug in a callback's ``on_exception``) is logged with its traceback, never dropped.
    """
    if not isinstance(err, Exception):
        return err
    earliest_first = causes(err)[::-1]
    first = next((e for e in earliest_first if isinstance(e, (VaelabError, KeyboardInterrupt, SIGTERMException))),
                 None)
    if first is not None:
        if first is not err and not _explained(err, first):
            log.error("While the run stopped (%s), another error was raised:", type(first).__name__, exc_info=err)
        return first
    refused = next((e for e in earliest_first if _refused_in(e, folder)), None)
    if refused is None:
        return err
    return RunFolderWriteError(f"Cannot write {os.fsdecode(refused.filename)}: {refused.strerror or refused}. The run "
                               f"folder {folder} became read-only or its disk is full: {WAY_OUT}")


def quiet_events_writer_threads() -> None:
    """Keep the thread that writes TensorBoard's events from printing a traceback of its own when a write fails (a
    read-only or full run folder): the writer keeps that error and raises it at its next use (a logged scalar, a
    flush, its closing), in the task, which says it once (:func:`reported_error`). Other threads are untouched."""
    if getattr(threading.excepthook, "_vaelab", False):
        return
    try:
        from tensorboard.summary.writer.event_file_writer import _AsyncWriterThread
    except ImportError:  # (no TensorBoard, or another one: its threads print as before)
        return
    previous = threading.excepthook

    def excepthook(args: threading.ExceptHookArgs) -> None:
        if not (isinstance(args.thread, _AsyncWriterThread) and isinstance(args.exc_value, Exception)):
            previous(args)

    excepthook._vaelab = True
    threading.excepthook = excepthook


def _what_is_left(path: Path) -> str:
    """What the record on disk still says, for a run whose final record could not be written."""
    try:
        old = json.loads(path.read_text())
        return f"{path} still says status {old['status']!r}, epochs {old.get('epochs', 0)}"
    except (OSError, ValueError, KeyError, TypeError):
        return f"there is no readable {path}"


def _say_record_lost(ended: BaseException, lost: RecordWriteError, path: Path, status: str | None) -> None:
    """The final record could not be written after ``ended`` stopped the run: said in ``ended``'s own message when
    that is vaelab's (one message; nothing when it already says the record cannot be written), else on stderr."""
    if isinstance(ended, RecordWriteError):
        return
    reason = next((e.strerror for e in causes(lost) if isinstance(e, OSError) and e.strerror), "see above")
    addition = f"The run's record could not be written either ({reason}): "
    if isinstance(ended, VaelabError):
        said = str(ended).rstrip()
        ended.args = (f"{said}{'' if said.endswith('.') else '.'} {addition}{_what_is_left(path)}",)
        return
    print(f"{lost} (the run ended: {status}; {_what_is_left(path)})", file=sys.stderr)


def _write_final(path: Path, record: dict[str, Any], start: float, ended: BaseException | None) -> None:
    """Write the final record; one that cannot be written is raised when the run went well, else said with the error
    that ended it (:func:`_say_record_lost`)."""
    record["seconds"] = round(time.perf_counter() - start, 2)
    record["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    try:
        write_json(path, record)
    except RecordWriteError as lost:
        if ended is None:
            raise
        _say_record_lost(ended, lost, path, record.get("status"))


def _finish(after: list[Callable[[], None]] | None) -> None:
    for finish in after or ():
        try:
            finish()
        except Exception:
            log.exception("after the run record was written")


@contextmanager
def recorded(path: Path, record: dict[str, Any], after: list[Callable[[], None]] | None = None
             ) -> Iterator[dict[str, Any]]:
    """Write ``record`` to ``path`` (on rank 0) however the block ends: when it raises, with how it ended
    (:func:`how_it_ended`: ``failed`` and the error, ``interrupted``, ``terminated``) unless the block already gave its
    own final status (``diverged``, ``interrupted``, ``terminated``), and always with the seconds it took, so no run's
    outcome is lost. A run stopping on Ctrl-C writes it with further Ctrl-C ignored, so a second press cannot cut the
    write short. Then call each of ``after`` (a list the block may still add to, e.g. handing the finished run folder
    to the loggers); an error there is logged, never raised over the block's own outcome.

    A final record that cannot be written (the folder became read-only, the disk is full) is said in the message of
    the vaelab error that stopped the run, one message (:func:`_say_record_lost`); raised when the run went well."""
    start = time.perf_counter()
    quiet_events_writer_threads()
    ended: BaseException | None = None
    try:
        yield record
    except BaseException as err:
        ended = err
        if record.get("status") not in ENDED_STATUSES:  # (the caller has already said how it ended)
            record.update(how_it_ended(err))
        raise
    finally:
        with interrupts_ignored() if record.get("status") == "interrupted" else nullcontext():
            try:
                _write_final(path, record, start, ended)
            finally:
                _finish(after)


class EpochRecord(Callback):
    """Rewrite the run's ``metrics.json`` with ``status: running`` as each training epoch is done, so a run killed
    outright (SIGKILL, out of memory, a lost node) still says how far it got: the last finished epoch's metrics, the
    epochs done, the best checkpoint so far.

    It writes once an epoch, when the next epoch starts (by then every epoch-end hook has run: the module has logged
    its means, the checkpoint callbacks, which Lightning calls last, have saved) and when training ends; rank 0
    only; atomically (see :func:`write_json`). The task places it before the checkpoint callback, whose deletion
    of superseded checkpoints (:class:`vaelab.callbacks.checkpoint.RunCheckpoint`) then follows this write.

    Args:
        path: the ``metrics.json`` to write.
        record: the task's record (updated in place, so the final write starts from it).
        progress: what training has reached, from the trainer (``vaelab.tasks.train.fit_record``).
    """

    def __init__(self, path: Path, record: dict[str, Any], progress: Callable[[Trainer], dict[str, Any]]) -> None:
        super().__init__()
        self.path, self.record, self.progress = Path(path), record, progress
        self._first_epoch = 0

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._first_epoch = trainer.current_epoch  # (a resumed run starts later)

    def write(self, trainer: Trainer) -> None:
        if not trainer.is_global_zero or trainer.sanity_checking:
            return
        self.record.update(self.progress(trainer))
        self.record["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        write_json(self.path, self.record)  # (a folder gone read-only or full: RecordWriteError stops the run)

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.current_epoch > self._first_epoch:
            self.write(trainer)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.write(trainer)


