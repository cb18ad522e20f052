"""SIGTERM outside Lightning's loops: an exception the task records, not a silent death; and Ctrl-C pressed again
while a run stops.

Python's default reaction to SIGTERM ends the process at once, so a run stopped by a scheduler while it builds
its model, decodes or generates its data (``data=shapes_full`` takes minutes), or while ``src/eval.py`` computes a
bound, would leave no ``metrics.json`` (or one still saying ``running``). Within :func:`sigterm_raises`, SIGTERM
raises :class:`Terminated` instead, which the task's record turns into ``status: terminated`` and exit code 143.

Lightning installs its own SIGTERM handler for the duration of ``fit``/``test`` (it stops at the next batch and
raises ``SIGTERMException``), and calls the handler it found installed as well; this handler then does nothing
(:func:`_raise` checks that it is the one installed), so Lightning's orderly stop is not cut short.

On Ctrl-C Lightning ignores further presses while it shuts down, then puts Python's handler back; a second press
after that would cut the writing of the run's record short. :func:`interrupts_ignored` ignores them while it is
written.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from lightning.pytorch.utilities.exceptions import SIGTERMException

#: the exit code of a process ended by SIGTERM (128 + 15), as a shell and a scheduler report it
EXIT_CODE = 128 + signal.SIGTERM


class Terminated(SIGTERMException):
    """SIGTERM arrived outside Lightning's training and testing loops (a ``SystemExit``, as Lightning's own)."""


def _raise(signum: int, frame: FrameType | None) -> None:
    if signal.getsignal(signal.SIGTERM) is _raise:  # (inside fit/test Lightning's handler calls this one too)
        raise Terminated(EXIT_CODE)


@contextmanager
def sigterm_raises() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` (main thread only; elsewhere nothing changes)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


@contextmanager
def interrupts_ignored() -> Iterator[None]:
    """Within the block, Ctrl-C (SIGINT) is ignored (main thread only; elsewhere nothing changes): for a run already
    stopping on Ctrl-C, a second press changes nothing (as Lightning ignores them while it shuts down)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.SIG_DFL)
