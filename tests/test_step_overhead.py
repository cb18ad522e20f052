"""What vaelab leaves out of a training step to cut its fixed cost (issue 30), and that nothing it does changes.

* The callbacks' per-batch hooks that are Lightning's no-ops are switched off (``skip_no_op_batch_hooks``): Lightning
  then never calls them, every hook a callback overrides still runs, and a fit counts the same steps.
* ``_current_fx_name``, which Lightning sets around every hook, bypasses ``nn.Module.__setattr__``; every other
  attribute still goes through it (a submodule is still registered).
* The divergence check reads a scalar loss once: NaN and inf still stop the run, a finite loss does not.
* The benchmark's ``*_tiny`` variants train the same 784-32-2 model in vaelab as in the hand-written loop.
"""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch
from conftest import ROOT, compose_train
from lightning import Callback, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.trainer import call
from torch import nn

from vaelab.callbacks.divergence import DivergenceStop
from vaelab.errors import DivergedError
from vaelab.tasks.hydra_job import instantiate_config
from vaelab.tasks.train import build_model, train
from vaelab.training.module import PER_BATCH_HOOKS, skip_no_op_batch_hooks


class EpochOnly(Callback):
    """Overrides no per-batch hook."""

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        pass


class CountsBatches(Callback):
    """Overrides one per-batch hook and counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.calls += 1


def test_no_op_batch_hooks_are_switched_off_and_overridden_ones_kept():
    epoch_only, counts, checkpoint, divergence = EpochOnly(), CountsBatches(), ModelCheckpoint(), DivergenceStop()
    skip_no_op_batch_hooks([epoch_only, counts, checkpoint, divergence])
    assert all(getattr(epoch_only, name) is None for name in PER_BATCH_HOOKS)
    assert callable(counts.on_train_batch_end) and counts.on_train_batch_start is None
    assert callable(checkpoint.on_train_batch_end)  # (overridden by Lightning's ModelCheckpoint, a base class)
    assert callable(divergence.on_before_backward) and divergence.on_after_backward is None
    assert callable(epoch_only.on_train_epoch_end)  # (not a per-batch hook)
    on_instance = EpochOnly()
    on_instance.on_before_zero_grad = lambda trainer, pl_module, optimizer: None
    skip_no_op_batch_hooks([on_instance])
    assert callable(on_instance.on_before_zero_grad)  # a hook set on the instance is the callback's own


def test_lightning_skips_a_hook_that_is_not_callable():
    """The contract the switch relies on (``_call_callback_hooks`` checks ``callable``): if a Lightning release
    drops it, this fails instead of every run failing at its first step."""
    trainer = Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, callbacks=[EpochOnly(), CountsBatches()])
    skip_no_op_batch_hooks(trainer.callbacks)
    call._call_callback_hooks(trainer, "on_train_batch_start", None, 0)
    call._call_callback_hooks(trainer, "on_train_batch_end", None, None, 0)
    assert trainer.callbacks[1].calls == 1


def test_a_fit_still_calls_every_overridden_per_batch_hook(tmp_path):
    cfg = compose_train(tmp_path, ["callbacks=minimal", "logger=none", "test=false"])
    counts = CountsBatches()
    from vaelab.tasks import train as train_task

    original = train_task.build_trainer

    def with_counter(config):
        trainer = original(config)
        trainer.callbacks.append(counts)
        return trainer

    train_task.build_trainer = with_counter
    try:
        train(cfg)
    finally:
        train_task.build_trainer = original
    assert counts.calls == 3  # (+trainer.limit_train_batches=3, one epoch)


def test_current_fx_name_bypasses_module_setattr_and_nothing_else_does(tmp_path):
    cfg = compose_train(tmp_path, ["data=digits"])
    _, model = build_model(cfg)
    model._current_fx_name = "training_step"
    assert model._current_fx_name == "training_step" and "_current_fx_name" in model.__dict__
    model.extra = nn.Linear(2, 2)  # any other attribute: nn.Module's rules (a submodule is registered)
    assert "extra" in dict(model.named_children())
    model.extra_weight = nn.Parameter(torch.zeros(1))
    assert "extra_weight" in dict(model.named_parameters())


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_divergence_check_stops_a_non_finite_scalar_loss(value):
    stop = DivergenceStop(check_every_n_steps=1)
    trainer, module = _stub_trainer(), nn.Linear(1, 1)
    stop._last_checked_step = 6  # (as on_train_start sets it)
    with pytest.raises(DivergedError, match="at step 7 "):
        stop.on_before_backward(trainer, module, torch.tensor(value))


def test_divergence_check_lets_a_finite_loss_pass_and_still_reads_a_non_scalar_one():
    stop = DivergenceStop(check_every_n_steps=1)
    trainer, module = _stub_trainer(), nn.Linear(1, 1)
    stop.on_before_backward(trainer, module, torch.tensor(3.0e38))  # large but finite
    stop.on_before_backward(trainer, module, torch.tensor([1.0, 2.0]))
    with pytest.raises(DivergedError):
        stop.on_before_backward(trainer, module, torch.tensor([1.0, math.inf]))


def _stub_trainer():
    class Stub:
        global_step, current_epoch, world_size = 7, 0, 1
        gradient_clip_val = None
        checkpoint_callback = None

    return Stub()


def test_tiny_variants_train_the_same_model_in_vaelab_and_in_the_hand_loop(tmp_path):
    spec = importlib.util.spec_from_file_location("benchmark", ROOT / "scripts" / "benchmark.py")
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    cfg = compose_train(tmp_path, ["data=mnist", "model=vae", *benchmark.TINY_OVERRIDES])
    # the model on MNIST's image shape, without the data files (only the model is compared)
    model = instantiate_config(cfg.model, image_shape=[1, 28, 28], _recursive_=False)
    # 784 -> 32 -> (2 means, 2 log-variances); 2 -> 32 -> 784
    expected = (784 * 32 + 32) + (32 * 2 + 2) * 2 + (2 * 32 + 32) + (32 * 784 + 784)
    assert sum(p.numel() for p in benchmark.ReferenceVAE(*benchmark.TINY).parameters()) == expected
    assert sum(p.numel() for p in model.model.parameters()) == expected
