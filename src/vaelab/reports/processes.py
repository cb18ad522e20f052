"""The processes a table of runs starts (``src/train.py``, ``src/eval.py``): each in a process group of its own, and a
signal sent to the table (a scheduler's SIGTERM, Ctrl-C, a closed terminal's SIGHUP) passed on to every one of them,
so that none is left running behind a stopped table. The family table (:mod:`vaelab.reports.families`) and the
results table (:mod:`vaelab.reports.results`) share it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

#: the signals a table passes on to the runs it started before it stops itself
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class TableStopped(SystemExit):
    """The table was stopped by a signal (exit code 128 + its number, as a shell reports it)."""


class Runs:
    """The processes (``src/train.py``, ``src/eval.py``) the table has running.

    Each is started in a process group of its own, so that a signal meant for the table does not reach it behind
    the table's back; :meth:`stop` passes the signal on to every group instead, and from then on no run is started.
    A process that was passed the signal ends as it would on its own (a training records ``status: terminated``
    and exits 143), and the table waits for it before it stops.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()  # (re-entrant: a second signal may arrive while the handler holds it)
        self._running: set[subprocess.Popen] = set()
        self.stopped_by: int | None = None

    def run(self, cmd: list[str], cwd: Path) -> float:
        """Run ``cmd`` in a process group of its own (its output goes to the terminal); the wall time in seconds.
        A failure (a non-zero exit) raises ``CalledProcessError``; after :meth:`stop`, nothing is started."""
        print("+", " ".join(cmd), flush=True)
        start = time.perf_counter()
        with self._lock:
            if self.stopped_by is not None:
                raise TableStopped(128 + self.stopped_by)
            process = subprocess.Popen(cmd, cwd=cwd, start_new_session=True)
            self._running.add(process)
        try:
            try:
                code = process.wait()
            except BaseException:  # (the table's signal handler raised here: the run was passed the signal, and
                process.wait()  # ends as it would on its own; the table stops once it has)
                raise
        finally:
            with self._lock:
                self._running.discard(process)
        if code != 0:
            raise subprocess.CalledProcessError(code, cmd)
        return time.perf_counter() - start

    def stop(self, signum: int) -> int:
        """Pass ``signum`` on to the process group of every run still going, and start no other; how many."""
        with self._lock:
            self.stopped_by = signum
            running = list(self._running)
        for process in running:
            try:
                os.killpg(process.pid, signum)
            except ProcessLookupError:  # (it has just ended)
                pass
        return len(running)


@contextmanager
def signals_passed_on(runs: Runs) -> Iterator[None]:
    """Within the block, a signal of :data:`FORWARDED` sent to the table is passed on to its runs
    (:meth:`Runs.stop`) and then raises :class:`TableStopped` here (main thread only; elsewhere nothing changes)."""
    runs.stopped_by = None  # (a table run again in the same process starts afresh)
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        n = runs.stop(signum)
        print(f"{signal.Signals(signum).name}: passed on to the {n} run(s) going; waiting for them to end",
              file=sys.stderr, flush=True)
        raise TableStopped(128 + signum)

    previous = {signum: signal.signal(signum, handler) for signum in FORWARDED}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old if old is not None else signal.SIG_DFL)
