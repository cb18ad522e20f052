"""Check, before Hydra makes it, that the run's folder can be made and written to.

Hydra creates the run folder (``hydra.run.dir``, or ``hydra.sweep.dir`` for ``-m``: both under ``paths.log_dir``)
before any task code runs, so an unwritable ``paths.log_dir=/proc/nope`` otherwise ends in a long chained
traceback from ``pathlib``. :class:`OutputDirCheck`, a Hydra callback (``conf/hydra/default.yaml``), makes the folder
itself at the start of the run or sweep and turns a failure into one message on stderr and exit status 1. (Hydra
turns an exception from a callback into a warning and goes on, so the callback ends the process itself.)
"""

from __future__ import annotations

import os
import sys
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
