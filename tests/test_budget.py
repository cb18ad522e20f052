"""The dashboard's time budget (vaelab.dashboard.budget): views draw within their share of the wall time."""

from __future__ import annotations

import time
from types import SimpleNamespace

import lightning
import pytest

from vaelab.dashboard.base import DashboardCallback
from vaelab.dashboard.budget import DashboardBudget
from vaelab.data.digits import DigitsDataModule
from vaelab.training import AutoencoderModule


class View(DashboardCallback):
    def __init__(self, seconds: float = 0.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.seconds, self.epochs = seconds, []

    def draw(self, writer, tag_prefix, step, module, x, y, out) -> None:
        time.sleep(self.seconds)


def started_budget(share: float, views: int, elapsed: float) -> DashboardBudget:
    budget = DashboardBudget(share)
    budget.on_fit_start(SimpleNamespace(callbacks=[View() for _ in range(views)]), None)
    budget._start = time.perf_counter() - elapsed
    return budget


def test_a_view_draws_first_then_when_its_share_of_the_time_covers_its_cost():
    budget, view = started_budget(share=0.1, views=2, elapsed=10.0), View()  # each view: 5 % of 10 s = 0.5 s
    assert budget.allows(view, last_epoch=False)  # never drawn: always
    budget.begin(view)
    budget.add(view, 0.2)  # its main part
    budget.add(view, 0.1)  # its rendering, from the worker thread
    assert budget.last[id(view)] == pytest.approx(0.3) and budget.spent[id(view)] == pytest.approx(0.3)
    assert not budget.allows(view, last_epoch=False)  # 0.3 spent + 0.3 next > 0.5
    assert budget.skipped[id(view)] == 1
    assert budget.allows(view, last_epoch=True)  # the last epoch: always
    budget._start -= 2.0  # 12 s: 0.6 s allowed
    assert budget.allows(view, last_epoch=False)


def test_a_view_outside_the_budget_always_draws():
    budget, view = started_budget(share=0.01, views=1, elapsed=1.0), View()
    view.budgeted = False
    budget.begin(view)
    budget.add(view, 5.0)
    assert budget.allows(view, last_epoch=False)


def test_the_share_must_be_a_fraction():
    with pytest.raises(ValueError, match="callbacks.dashboard_budget.share"):
        DashboardBudget(0.0)


def test_through_lightning_an_expensive_view_keeps_within_its_share(tmp_path, monkeypatch):
    """A view that costs 50 ms or more, with 2 % of the time to spend: it draws at the first and the last epoch and,
    in between, only as often as its share allows; its total stays within the share plus those two drawings (and
    the overshoot of one drawing that cost more than the one before)."""
    monkeypatch.setattr("vaelab.dashboard.base.tensorboard_writer", lambda trainer: object())
    lightning.seed_everything(0, verbose=False)
    view, budget = View(seconds=0.05, num_images=4), DashboardBudget(share=0.02)
    drawn = []
    original = view.draw_now
    costs = []

    def draw_now(trainer, module, step=None):
        drawn.append(trainer.current_epoch)
        started = time.perf_counter()
        original(trainer, module, step)
        costs.append(time.perf_counter() - started)

    monkeypatch.setattr(view, "draw_now", draw_now)
    trainer = lightning.Trainer(accelerator="cpu", max_epochs=8, limit_train_batches=2, limit_val_batches=1,
                                enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                                logger=False, callbacks=[view, budget])
    model = AutoencoderModule(image_shape=[1, 8, 8], latent_dim=2)
    started = time.perf_counter()
    trainer.fit(model, datamodule=DigitsDataModule(data_dir=tmp_path, batch_size=32))
    elapsed = time.perf_counter() - started
    assert drawn[0] == 0 and drawn[-1] == 7  # the first and the last epoch
    assert len(drawn) < 8  # some left out
    assert budget.skipped[id(view)] == 8 - len(drawn)
    assert budget.total() - costs[0] - costs[-1] <= 0.02 * elapsed + max(costs)
    assert budget.total() >= 0.05 * len(drawn)  # each drawing's cost was counted
