"""The end of a run in TensorBoard: its final metrics in the HParams tab and a results table as a text card."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from lightning import Callback, LightningModule, Trainer

from vaelab.loggers.tensorboard import tensorboard_writer, write_run_summary
from vaelab.record import COMPLETED, FAILED, INTERRUPTED

#: how the results card calls each term (the rest keep their own names)
LABELS = {"neg_elbo": "−ELBO", "recon": "reconstruction", "kl": "KL", "loss": "loss (the objective)",
          "active_units": "active units"}


def _floats(metrics: dict[str, Any], prefix: str) -> dict[str, float]:
    out = {}
    for key, value in sorted(metrics.items()):
        if key.startswith(prefix):
            try:
                out[key.removeprefix(prefix)] = float(value)
            except (TypeError, ValueError, RuntimeError):  # (not a single number)
                pass
    return out


def _results(values: dict[str, float], weights: set[str]) -> dict[str, float]:
    """A split's results: ``elbo`` as ``neg_elbo`` (nats, lower is better, as the other terms), the loss weights
    (β, a capacity) left out: they are settings, not results."""
    out = {}
    for name, value in values.items():
        if name in weights:
            continue
        if name == "elbo":
            out["neg_elbo"] = -value
        else:
            out[name] = value
    order = list(LABELS)  # the usual terms first, in this order; the rest by name
    return dict(sorted(out.items(), key=lambda kv: (order.index(kv[0]) if kv[0] in order else len(order), kv[0])))


def _format(value: float | None) -> str:
    if value is None:
        return "–"
    if math.isfinite(value) and value == int(value) and abs(value) < 1e9:
        return str(int(value))
    return f"{value:.4f}"


class RunSummary(Callback):
    """Writes, at the end of a run, what it reached into its TensorBoard events (rank zero, when there is a
    TensorBoard logger):

    - ``hparams/…`` scalars, the metric columns of the HParams tab: ``best_val_neg_elbo`` (−ELBO of the best
      checkpoint, i.e. −best score; ``best_val_loss`` for the AE) and every test metric but the loss weights
      (``test_neg_elbo``, ``test_recon``, ``test_kl``, ``test_loss``, ``test_active_units``, an objective's own
      terms, ``test_mig``… when logged);
    - a ``run/results`` text card: a table of the best validation epoch's and the test values;
    - the HParams session's end: success, or failure when the run stopped on an error or Ctrl-C (TensorBoard has
      no status for an interrupted run; the card says which).

    The end is the end of testing, or of fitting when no test follows (``test_follows``: ``${test}``), or an error.

    Args:
        test_follows: whether the task tests after fitting (then the summary waits for the test's results).
    """

    def __init__(self, test_follows: bool = False) -> None:
        super().__init__()
        self.test_follows = test_follows
        self._val: list[tuple[int, dict[str, float]]] = []  # (epoch, val metrics) of each validation epoch
        self._test: dict[str, float] = {}

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking:
            self._val.append((trainer.current_epoch, _floats(trainer.callback_metrics, "val/")))

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self.test_follows:
            self._finish(trainer, pl_module, "success")

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._test = _floats(trainer.callback_metrics, "test/")
        self._finish(trainer, pl_module, "success")

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        aborted = isinstance(exception, (KeyboardInterrupt, SystemExit))
        self._finish(trainer, pl_module, "aborted" if aborted else "failure")

    # ------------------------------------------------------------------------------------------------ the summary
    def best_validation(self, trainer: Trainer, pl_module: LightningModule) -> tuple[str, float | None, int | None,
                                                                                     dict[str, float]]:
        """(monitor, its best score, the epoch it was reached in, that epoch's val metrics): the best checkpoint's
        score when there is a checkpoint callback (also across a resume), else the best epoch seen."""
        hparams = getattr(pl_module, "hparams", {})
        monitor = str(hparams.get("monitor", "val/loss"))
        mode = hparams.get("monitor_mode", "min")
        checkpoint = trainer.checkpoint_callback
        score = None
        if checkpoint is not None and checkpoint.monitor:
            monitor, mode = checkpoint.monitor, checkpoint.mode
            if checkpoint.best_model_score is not None:
                score = float(checkpoint.best_model_score)
        name = monitor.removeprefix("val/")
        seen = [(epoch, values) for epoch, values in self._val if name in values]
        if score is None and seen:
            pick = max if mode == "max" else min
            score = pick(values[name] for _, values in seen)
        for epoch, values in reversed(seen):
            if score is not None and math.isclose(values[name], score, rel_tol=1e-9, abs_tol=1e-12):
                return monitor, score, epoch, values
        return monitor, score, None, ({name: score} if score is not None else {})

    def summary(self, trainer: Trainer, pl_module: LightningModule, status: str) -> tuple[dict[str, float], str]:
        """(the ``hparams/…`` metrics, the results card's Markdown)."""
        objective = getattr(pl_module, "objective", None)
        weights = set(objective.weights(0)) if objective is not None else set()
        monitor, score, epoch, best_val = self.best_validation(trainer, pl_module)
        val, test = _results(best_val, weights), _results(self._test, weights)
        metrics = {}
        if score is not None:
            name = monitor.replace("/", "_")
            metrics["best_" + name.replace("elbo", "neg_elbo")] = -score if name.endswith("elbo") else score
        metrics.update({f"test_{k}": v for k, v in test.items()})

        state = {"success": COMPLETED, "failure": FAILED, "aborted": INTERRUPTED}[status]
        lines = [f"**{state}** after {trainer.current_epoch} epochs ({trainer.global_step} steps)."]
        if score is not None:
            best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
            where = f" in epoch {epoch} (counting from 0)" if epoch is not None else ""
            lines.append(f"Best {monitor}: {_format(score)}{where}" + (f", `{Path(best).name}`." if best else "."))
        rows = list(dict.fromkeys([*val, *test]))
        if rows:
            val_head = "best val" + (f" (epoch {epoch})" if epoch is not None else "")
            lines += ["", f"| | {val_head} | test |", "|:--|--:|--:|"]
            lines += [f"| {LABELS.get(r, r)} | {_format(val.get(r))} | {_format(test.get(r))} |" for r in rows]
            lines += ["", "Nats per image (−ELBO = reconstruction + KL); the test column is the best checkpoint's."
                      if test else "No test was run."]
            lines.append("The same numbers are in the HParams tab (hparams/… scalars) and in metrics.json.")
        return metrics, "\n".join(lines)

    def _finish(self, trainer: Trainer, pl_module: LightningModule, status: str) -> None:
        if not trainer.is_global_zero:
            return
        writer = tensorboard_writer(trainer)
        if writer is None:
            return
        metrics, markdown = self.summary(trainer, pl_module, status)
        write_run_summary(writer, metrics, markdown, "success" if status == "success" else "failure",
                          trainer.global_step)
