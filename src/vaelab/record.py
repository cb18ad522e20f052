"""A run's record: the ``metrics.json`` every training and evaluation run leaves in its folder, named in one place.

It says how the run ended (:data:`STATUS`, one of :data:`STATUSES`), how far it got and what it measured; a scheduler,
a sweep summary, the family table and the trackers read it. The writing (atomically, rewritten after every epoch)
is :mod:`vaelab.tasks.record`'s; docs/failures.md says what each status means to a user.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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
