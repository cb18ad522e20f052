"""The dashboard's time budget: the views together take at most a set share of the training's wall time, whatever
the length of an epoch.

Each dashboard view (:class:`~vaelab.dashboard.base.DashboardCallback`) that is due at the end of a validation epoch
asks the budget whether it may draw. It may when

* it has not drawn yet in this fit (every view is drawn at the first validation epoch), or
* this is the last epoch (every view is drawn at the end), or
* its cost so far plus the cost of its last drawing stays within its share of the wall time since fitting started:
  ``spent + last ≤ share / n_views · elapsed``.

A drawing's cost is the wall time it holds up training (the model's pass over the fixed images and the synchronous
part of the drawing) plus the CPU time of its rendering in the view's worker thread (the PNG, the matplotlib figure,
the write), which competes with training for the same cores. So a cheap view (a grid of images) draws at every
epoch, an expensive one (a matplotlib scatter) every few epochs on a short epoch and every epoch on a long one, and
the dashboard as a whole never takes much more than ``share`` of the time, plus one drawing of every view at the
first and the last epoch. Views with ``budgeted = False`` (the collapse alarm, which must look at every epoch to
count a collapse's streak) are not counted.

``callbacks.dashboard_budget.share`` sets the share (default 0.05); ``callbacks.dashboard_budget=null`` lets every
view draw whenever it is due (every ``every_n_epochs``), as views built in Python without this callback do.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from lightning import Callback, LightningModule, Trainer

log = logging.getLogger(__name__)


class DashboardBudget(Callback):
    """Decides, for each dashboard view at the end of a validation epoch, whether it may draw (see the module).

    Args:
        share: the share of the training's wall time that all the budgeted views together may take, in (0, 1].
    """

    def __init__(self, share: float = 0.05) -> None:
        super().__init__()
        if not 0.0 < share <= 1.0:
            raise ValueError(f"callbacks.dashboard_budget.share = {share!r} is invalid: it must be in (0, 1], "
                             "e.g. 0.05")
        self.share = float(share)
        self._lock = threading.Lock()
        self._start: float | None = None
        self._views = 1
        self.spent: dict[int, float] = {}  # seconds, per view (by id), over this fit
        self.last: dict[int, float] = {}  # the cost of each view's latest drawing (its main part and its rendering)
        self.skipped: dict[int, int] = {}  # drawings each view left out to stay within the budget

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start = time.perf_counter()
        views = [c for c in trainer.callbacks if getattr(c, "budgeted", False)]  # (the views say so themselves)
        self._views = max(len(views), 1)
        self.spent.clear()
        self.last.clear()
        self.skipped.clear()

    def elapsed(self) -> float:
        """Seconds since fitting started."""
        return 0.0 if self._start is None else time.perf_counter() - self._start

    def allows(self, view: Any, last_epoch: bool) -> bool:
        """Whether ``view`` may draw now (see the module)."""
        key = id(view)
        if not getattr(view, "budgeted", True) or last_epoch or key not in self.last or self._start is None:
            return True
        with self._lock:
            allowed = self.spent.get(key, 0.0) + self.last[key] <= self.share / self._views * self.elapsed()
            if not allowed:
                self.skipped[key] = self.skipped.get(key, 0) + 1
        return allowed

    def begin(self, view: Any) -> None:
        """A drawing of ``view`` starts: its cost so far is zero (its parts are then added with :meth:`add`)."""
        with self._lock:
            self.last[id(view)] = 0.0

    def add(self, view: Any, seconds: float) -> None:
        """Charge ``seconds`` of a drawing to ``view`` (callable from the view's worker thread)."""
        key = id(view)
        with self._lock:
            self.spent[key] = self.spent.get(key, 0.0) + seconds
            self.last[key] = self.last.get(key, 0.0) + seconds

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # (the views' on_train_end, which waits for their last drawings, may come later: this is what is known now)
        if trainer.is_global_zero and self._start is not None:
            elapsed = self.elapsed()
            log.info("dashboard: %.1f s of %.1f s of training (%.1f%%; budget %g%%), %d drawings left out to stay "
                     "within it", self.total(), elapsed, 100 * self.total() / max(elapsed, 1e-9), 100 * self.share,
                     sum(self.skipped.values()))

    def total(self) -> float:
        """Seconds all views have spent drawing in this fit."""
        with self._lock:
            return sum(self.spent.values())
