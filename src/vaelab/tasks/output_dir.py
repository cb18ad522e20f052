"""Check, before Hydra makes it, that the run's folder can be made and written to.

Hydra creates the run folder (``hydra.run.dir``, or ``hydra.sweep.dir`` for ``-m``: both under ``paths.log_dir``)
before any task code runs, so an unwritable ``paths.log_dir=/proc/nope`` otherwise ends in a long chained
traceback from ``pathlib``. :class:`OutputDirCheck`, a Hydra callback (``conf/hydra/default.yaml``), makes the folder
itself at the start of the run or sweep and turns a failure into one message on stderr and exit status 1. (Hydra
turns an exception from a callback into a warning and goes on, so the callback ends the process itself.)

A sweep folder holds one sweep: its jobs are numbered from 0 in it (``0_…``, ``1_…``), so a second sweep given the
same ``hydra.sweep.dir`` would run its jobs in the first one's job folders, overwriting their records and mixing two
processes' events in one run. The sweep claims its folder when it starts (:func:`claim_sweep_dir`: a marker file
made with ``O_EXCL``, so of two sweeps started at once exactly one gets it), and a folder that already holds a sweep
is refused before any job runs.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from vaelab.errors import ConfigError


def check_output_dir(folder: str | os.PathLike, key: str, log_dir: Any = None) -> Path:
    """Make ``folder`` (and its parents) and check it is writable; raise one :class:`ConfigError` otherwise."""
    path = Path(folder)
    try:
        path.mkdir(parents=True, exist_ok=True)
        writable = os.access(path, os.W_OK | os.X_OK)
        problem = None if writable else "it is not writable"
    except OSError as err:
        problem = f"{err.strerror or type(err).__name__}" + (f": {err.filename}" if err.filename else "")
    if problem:
        under = f" It is made under paths.log_dir={log_dir}:" if log_dir is not None else ""
        what = "sweep" if "sweep" in key else "run"
        raise ConfigError(
            f"Cannot create the {what} folder {path} ({key}): {problem}.{under} give a folder you can write to, "
            f"e.g. paths.log_dir=$HOME/vaelab-logs, or {key}=<folder>."
        )
    return path


#: the file that marks a sweep folder as taken, with the sweep's run token and start time
SWEEP_MARK = ".vaelab_sweep"


def claim_sweep_dir(folder: str | os.PathLike, token: str) -> Path:
    """Make ``folder`` (made and checked already) this sweep's: create its :data:`SWEEP_MARK` atomically; raise one
    :class:`ConfigError` if another sweep has it, or if it holds a sweep from before the mark existed (Hydra's
    ``multirun.yaml``)."""
    folder = Path(folder)
    mark = folder / SWEEP_MARK
    held = None
    if (folder / "multirun.yaml").exists() and not mark.exists():
        held = "a sweep"
    else:
        try:
            fd = os.open(mark, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            other = _read_mark(mark)
            held = f"the sweep {other.get('token')} started {other.get('started')}" if other else "a sweep"
        else:
            with os.fdopen(fd, "w") as stream:
                json.dump({"token": token, "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "pid": os.getpid()}, stream)
    if held:
        raise ConfigError(
            f"hydra.sweep.dir={folder} already holds {held}: a second sweep there would run its jobs in the same job "
            "folders (0_…, 1_…), overwriting their records and mixing their events. Give another folder, "
            "hydra.sweep.dir=<folder>, or leave hydra.sweep.dir unset for a fresh one."
        )
    return mark


def _read_mark(mark: Path, wait: float = 2.0) -> dict | None:
    """The sweep mark's record; a mark just created by another process may not be written yet, so an empty or
    partial one is read again for up to ``wait`` seconds before it counts as unreadable (None)."""
    deadline = time.monotonic() + wait
    while True:
        try:
            return json.loads(mark.read_text())
        except (OSError, ValueError):
            if time.monotonic() > deadline:
                return None
            time.sleep(0.02)


class OutputDirCheck(Callback):
    """Hydra callback: the run folder (single run) or sweep folder (``-m``) is made before Hydra would."""

    @staticmethod
    def _check(config: DictConfig, key: str) -> None:
        folder = OmegaConf.select(config, key, default=None)
        if folder is None:
            return
        log_dir = OmegaConf.select(config, "paths.log_dir", default=None, throw_on_resolution_failure=False)
        try:
            check_output_dir(str(folder), key, log_dir)
        except ConfigError as err:
            sys.stderr.write(f"{err}\n")
            raise SystemExit(1) from None

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, "hydra.sweep.dir")
        from vaelab.tasks.run_names import run_id

        try:
            claim_sweep_dir(str(OmegaConf.select(config, "hydra.sweep.dir")), run_id())
        except ConfigError as err:
            sys.stderr.write(f"{err}\n")
            raise SystemExit(1) from None
