"""``hparams_search=optuna``: Hydra's Optuna sweeper, ending a search in which no trial succeeded with one message.

With ``max_failure_rate: 1.0`` (conf/hparams_search/optuna.yaml) a failed or diverged trial is told to Optuna as
failed and the search goes on. When every trial failed, the plugin then asks Optuna for the best trial, and Optuna
raises "No trials are completed yet" with a traceback through the sweeper. :class:`OptunaSweeper` turns that end
into one :class:`~vaelab.errors.VaelabError` saying how many trials failed, how (their ``metrics.json`` statuses),
the first one's error, and where the records are.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper as HydraOptunaSweeper

from vaelab.errors import VaelabError
from vaelab.record import COMPLETED, STATUS


class NoTrialSucceededError(VaelabError):
    """An Optuna search ended without a single completed trial."""


def trial_records(sweep_dir: Path) -> list[dict[str, Any]]:
    """The ``metrics.json`` of every trial in ``sweep_dir`` (job folders ``<n>_…``), in trial order."""
    records = []
    for path in sorted(sweep_dir.glob("*/metrics.json"), key=lambda p: (len(p.parent.name), p.parent.name)):
        try:
            records.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            records.append({"status": "unreadable"})
    return records


def no_trial_succeeded(sweep_dir: Path) -> NoTrialSucceededError:
    records = trial_records(sweep_dir)
    statuses = Counter(r.get("status", "unknown") for r in records)
    how = ", ".join(f"{n} {status}" for status, n in statuses.most_common()) or "none recorded"
    first = next((r["error"] for r in records if r.get("error")), None)
    first = f" The first one: {str(first).splitlines()[0][:300].rstrip('.')}." if first else ""
    return NoTrialSucceededError(
        f"The Optuna search ended without a result: none of its {len(records)} trials completed ({how}).{first} "
        f"Each trial's metrics.json in {sweep_dir} says why; fix that, or widen the search space "
        "(hydra.sweeper.params), and run it again."
    )


class OptunaSweeper(HydraOptunaSweeper):
    """Hydra's ``OptunaSweeper`` (same arguments), which ends a search without any completed trial with one
    message (see the module) instead of Optuna's traceback."""

    def sweep(self, arguments: list[str]) -> None:
        try:
            return super().sweep(arguments)
        except ValueError:  # (Optuna's "No trials are completed yet", or another problem: told apart below)
            config = getattr(self.sweeper, "config", None)
            if config is None:
                raise
            sweep_dir = Path(str(config.hydra.sweep.dir))
            records = trial_records(sweep_dir)
            if not records or any(r.get(STATUS) == COMPLETED for r in records):
                raise
            raise no_trial_succeeded(sweep_dir) from None
