"""Recording how a task ends: the run's record (:mod:`vaelab.record`) written however a task ends, with the one
error that explains it, so no run's outcome is lost (after every epoch:
:class:`vaelab.callbacks.epoch_record.EpochRecord`).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException

from vaelab.errors import VaelabError
from vaelab.record import ENDED_EARLY, FAILED, INTERRUPTED, STATUS, TERMINATED, WAY_OUT, WRITE_REFUSED, RecordWriteError
from vaelab.record import write_json as write_record
from vaelab.tasks.signals import interrupts_ignored

log = logging.getLogger(__name__)



def scalar_metrics(metrics: dict[str, Any], prefix: str) -> dict[str, float]:
    """The ``prefix/…`` entries of Lightning's metric dict as plain floats."""
    return {k: float(v) for k, v in sorted(metrics.items()) if k.startswith(prefix)}


class RunFolderWriteError(VaelabError, OSError):
    """A file in the run folder (TensorBoard's events, ``hparams.yaml``) could not be written: the folder became
    read-only, or the disk is full."""


@rank_zero_only
def write_json(path: Path, data: dict[str, Any]) -> None:
    """:func:`vaelab.record.write_json`, on rank 0 only."""
    write_record(path, data)


def how_it_ended(err: BaseException) -> dict[str, str]:
    """The status and error of a run that raised ``err`` without saying how it ended itself: ``terminated`` for
    SIGTERM, ``interrupted`` for Ctrl-C (also a second one while the run was already stopping), else ``failed``."""
    if isinstance(err, SIGTERMException):
        return {STATUS: TERMINATED, "error": "terminated by SIGTERM"}
    if isinstance(err, KeyboardInterrupt):
        return {STATUS: INTERRUPTED, "error": "interrupted (Ctrl-C)"}
    return {STATUS: FAILED, "error": f"{type(err).__name__}: {err}"}


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
        _say_record_lost(ended, lost, path, record.get(STATUS))


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
        if record.get(STATUS) not in ENDED_EARLY:  # (the caller has already said how it ended)
            record.update(how_it_ended(err))
        raise
    finally:
        with interrupts_ignored() if record.get(STATUS) == INTERRUPTED else nullcontext():
            try:
                _write_final(path, record, start, ended)
            finally:
                _finish(after)
