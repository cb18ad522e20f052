"""A run's record: the ``metrics.json`` every training and evaluation run leaves in its folder, in one place: its
name, the statuses, the keys, and how it is read and written.

It says how the run ended (:data:`STATUS`, one of :data:`STATUSES`), how far it got and what it measured; a scheduler,
a sweep summary, the family table and the trackers read it. It is strict JSON: a value that is not a finite number
(a diverged run's NaN loss, a best score of -inf) is written as the string ``"NaN"``, ``"Infinity"`` or
``"-Infinity"``, which ``float()`` reads back, instead of the bare ``NaN`` / ``-Infinity`` tokens that strict JSON
readers (``jq``, JavaScript, ``json.loads`` with ``parse_constant``) refuse. The tasks write it however a run ends
(:mod:`vaelab.tasks.recording`), and :class:`vaelab.callbacks.epoch_record.EpochRecord` after every epoch;
docs/failures.md says what each status means to a user.
"""

from __future__ import annotations

import errno
import json
import math
import numbers
import os
from pathlib import Path
from typing import Any

from vaelab.errors import VaelabError

#: the record's file name, in the run folder
RECORD_FILE = "metrics.json"

# ---------------------------------------------------------------------------------------------- how a run ended
RUNNING = "running"  # still running, or killed outright (SIGKILL, out of memory): as of the last finished epoch
COMPLETED = "completed"  # fitted (and tested), or evaluated
DIVERGED = "diverged"  # a loss, a weight or the validation loss stopped being finite
FAILED = "failed"  # a bad value, file or folder, or an error
INTERRUPTED = "interrupted"  # Ctrl-C
TERMINATED = "terminated"  # SIGTERM (a scheduler's time-out or pre-emption)
STATUSES = (RUNNING, COMPLETED, DIVERGED, FAILED, INTERRUPTED, TERMINATED)
#: a run that ended early: its record says why (``error``)
ENDED_EARLY = (FAILED, DIVERGED, INTERRUPTED, TERMINATED)
#: a run that did not finish: a SLURM job requeued after it goes on in its folder
UNFINISHED = (RUNNING, INTERRUPTED, TERMINATED)

# ----------------------------------------------------------------------------------------------------- the keys
STATUS = "status"
ERROR = "error"  # the message, for a run that ended early
EPOCHS = "epochs"
GLOBAL_STEP = "global_step"
BEST = "best"  # {"monitor": …, "score": …}
BEST_CKPT = "best_ckpt"
LAST_CKPT = "last_ckpt"
TEST = "test"  # the test metrics, ``test/<name>``
NOTES = "notes"  # what to keep in mind when comparing its numbers
UPDATED = "updated"
TRACKING_ERROR = "tracking_error"  # a tracker (MLflow) that failed once training had started
SAMPLE_QUALITY_UNAVAILABLE = "sample_quality_unavailable"  # why fcd, precision and recall are missing


#: how a float that is not a finite number is written into metrics.json (``float(text)`` reads each one back)
NON_FINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}
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


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as strict JSON, atomically (see :func:`_replace`): a reader, or a run killed while writing,
    never sees half a file. Every process that calls it writes: under DDP, call it on rank 0 only. On a full disk
    (no room for a new file) the existing record is overwritten in place instead. A record that cannot be written
    at all raises :class:`RecordWriteError`, naming the file."""
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


def read_record(folder: str | Path) -> dict[str, Any] | None:
    """The record of the run in ``folder``; None where there is none or it cannot be read (a run killed while
    writing its first one)."""
    try:
        record = json.loads((Path(folder) / RECORD_FILE).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def read_status(folder: str | Path) -> str | None:
    """How the run in ``folder`` ended (:data:`STATUSES`), or None where it has no readable record."""
    record = read_record(folder)
    return None if record is None else record.get(STATUS)
