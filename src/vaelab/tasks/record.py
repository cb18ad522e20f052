"""The run record, ``metrics.json``: written however a task ends, and after every epoch, so no run's outcome is lost.

``metrics.json`` is strict JSON: a value that is not a finite number (a diverged run's NaN loss, a best score of
-inf) is written as the string ``"NaN"``, ``"Infinity"`` or ``"-Infinity"``, which ``float()`` reads back, instead
of the bare ``NaN`` / ``-Infinity`` tokens that strict JSON readers (``jq``, JavaScript, ``json.loads`` with
``parse_constant``) refuse.
"""

from __future__ import annotations

import json
import logging
import math
import numbers
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_only

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


@rank_zero_only
def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as strict JSON, atomically (a temporary file, then a rename): a reader, or a run killed while
    writing, never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(json_safe(data), indent=2, default=str, allow_nan=False) + "\n")
    tmp.replace(path)


@contextmanager
def recorded(path: Path, record: dict[str, Any], after: list[Callable[[], None]] | None = None
             ) -> Iterator[dict[str, Any]]:
    """Write ``record`` to ``path`` (on rank 0) however the block ends: with ``status: failed`` and the error when
    it raises (unless the block already gave its own final status: ``diverged``, ``interrupted``, ``terminated``),
    and always with the seconds it took, so no run's outcome is lost. Then call each of ``after`` (a list the block
    may still add to, e.g. handing the finished run folder to the loggers); an error there is logged, never raised
    over the block's own outcome."""
    start = time.perf_counter()
    try:
        yield record
    except BaseException as err:
        if record.get("status") not in ENDED_STATUSES:  # (the caller has already said how it ended)
            record.update(status="failed", error=f"{type(err).__name__}: {err}")
        raise
    finally:
        record["seconds"] = round(time.perf_counter() - start, 2)
        record["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        write_json(path, record)
        for finish in after or ():
            try:
                finish()
            except Exception:
                log.exception("after the run record was written")


class EpochRecord(Callback):
    """Rewrite the run's ``metrics.json`` with ``status: running`` as each training epoch is done, so a run killed
    outright (SIGKILL, out of memory, a lost node) still says how far it got: the last finished epoch's metrics, the
    epochs done, the best checkpoint so far.

    It writes once an epoch, when the next epoch starts (by then every epoch-end hook has run: the module has logged
    its means, the checkpoint callbacks, which Lightning calls last, have saved) and when training ends; rank 0
    only; atomically (see :func:`write_json`).

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
        write_json(self.path, self.record)

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.current_epoch > self._first_epoch:
            self.write(trainer)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.write(trainer)


