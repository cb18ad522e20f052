"""The run record, ``metrics.json``: written however a task ends, so no run's outcome is lost."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lightning.pytorch.utilities import rank_zero_only


def scalar_metrics(metrics: dict[str, Any], prefix: str) -> dict[str, float]:
    """The ``prefix/…`` entries of Lightning's metric dict as plain floats."""
    return {k: float(v) for k, v in sorted(metrics.items()) if k.startswith(prefix)}


@rank_zero_only
def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    tmp.replace(path)


@contextmanager
def recorded(path: Path, record: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Write ``record`` to ``path`` (on rank 0) however the block ends: with ``status: failed`` and the error when
    it raises (unless the block marked it ``interrupted``), and always with the seconds it took, so no run's
    outcome is lost."""
    start = time.perf_counter()
    try:
        yield record
    except BaseException as err:
        if record.get("status") != "interrupted":  # (the caller has already said how it was interrupted)
            record.update(status="failed", error=f"{type(err).__name__}: {err}")
        raise
    finally:
        record["seconds"] = round(time.perf_counter() - start, 2)
        write_json(path, record)


