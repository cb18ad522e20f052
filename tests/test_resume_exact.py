"""A run killed after a checkpoint and resumed from its ``last.ckpt`` computes exactly what an uninterrupted run does.

What must carry over besides the weights, the optimizer and the loops is the random state at the end of the epoch
the checkpoint was saved at: the reparameterisation noise ε, the dynamic binarisation draws, and the seed the
``DataLoader`` draws from the global RNG for each epoch's iterator all come from it (:class:`RNGStateCallback`).
"""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, compose_train
from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.trainer.states import TrainerFn
from torch.utils.data import DataLoader, TensorDataset

from vaelab.callbacks.rng_state import RNGStateCallback, collect_rng_states, restore_rng_states
from vaelab.tasks.resume import continues_its_run

TESTS = Path(__file__).resolve().parent
ENV = {**os.environ, "VAELAB_ROOT": str(ROOT), "PYTHONWARNINGS": "ignore",
       "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))}
EPOCHS = 3
# The draws of every kind: ε, a Bernoulli draw of every training batch, and the DataLoader's per-epoch base seed.
TINY = ["trainer=cpu", f"trainer.max_epochs={EPOCHS}", "+trainer.limit_train_batches=3",
        "+trainer.limit_val_batches=1", "+trainer.limit_test_batches=1", "+trainer.enable_progress_bar=false",
        "+trainer.enable_model_summary=false", "callbacks=minimal", "logger=csv", "model=vae",
        "data.binarize=dynamic", "data.loader=dataloader"]


class SigkillDuringEpoch(Callback):
    """Test-only: SIGKILL this process after training batch ``batch`` of epoch ``epoch``, i.e. in the middle of
    an epoch, after the checkpoint of the epoch before it has been written (no clean-up of any kind runs)."""

    def __init__(self, epoch: int, batch: int = 1) -> None:
        self.epoch, self.batch = epoch, batch

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            os.kill(os.getpid(), signal.SIGKILL)


def start(run_dir: Path, data_dir: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "src/train.py", *TINY, f"hydra.run.dir={run_dir}", f"paths.data_dir={data_dir}", *extra],
        cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def finish(process: subprocess.Popen, timeout: float = 300) -> tuple[int, str]:
    output, _ = process.communicate(timeout=timeout)
    return process.returncode, output


def csv_rows(run_dir: Path) -> dict[tuple[str, str], dict[str, str]]:
    """The rows of a run's CSV log keyed by (epoch, step) and by which split they hold (train/val/test)."""
    with (run_dir / "csv" / "metrics.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    keyed = {}
    for row in rows:
        values = {k: v for k, v in row.items() if v != ""}
        split = next(k for k in values if "/" in k).split("/")[0]
        keyed[(row["epoch"], row["step"], split)] = values
    return keyed


@pytest.mark.slow
def test_a_killed_and_resumed_run_is_identical_to_an_uninterrupted_one(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    whole, killed, resumed = tmp_path / "whole", tmp_path / "killed", tmp_path / "resumed"
    # the uninterrupted run and the one killed in epoch 1 (after epoch 0's checkpoint) run side by side
    kill = ["+callbacks.kill._target_=test_resume_exact.SigkillDuringEpoch", "+callbacks.kill.epoch=1"]
    processes = [start(whole, data), start(killed, data, *kill)]
    (code_whole, out_whole), (code_killed, out_killed) = (finish(p) for p in processes)
    assert code_whole == 0, out_whole[-3000:]
    assert code_killed == -signal.SIGKILL, out_killed[-3000:]
    last = killed / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True, map_location="cpu")["epoch"] == 0
    assert continues_its_run(last.resolve())  # (the checkpoint still loads with weights_only=True)

    code, output = finish(start(resumed, data, f"ckpt_path={last}"))
    assert code == 0, output[-3000:]

    reference = json.loads((whole / "metrics.json").read_text())
    after = json.loads((resumed / "metrics.json").read_text())
    assert after["status"] == reference["status"] == "completed"
    assert after["epochs"] == reference["epochs"] == EPOCHS and after["global_step"] == reference["global_step"]
    for key in ("train", "val", "test"):  # bit for bit, not approximately
        assert after[key] == reference[key], key
    assert after["best"] == reference["best"]
    # every epoch the resumed run trained logged the same numbers as the uninterrupted run's same epoch
    rows, reference_rows = csv_rows(resumed), csv_rows(whole)
    assert {epoch for epoch, _, _ in rows} == {"1", "2", str(EPOCHS)}  # epochs 1 and 2, then the test
    for key, values in rows.items():
        assert values == reference_rows[key], key
    # and ends on the same weights and optimizer state
    ours = torch.load(last, weights_only=True, map_location="cpu")
    theirs = torch.load(whole / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    assert ours["global_step"] == theirs["global_step"]
    assert ours["state_dict"].keys() == theirs["state_dict"].keys()
    for name, tensor in theirs["state_dict"].items():
        assert torch.equal(ours["state_dict"][name], tensor), name
    for a, b in zip(ours["optimizer_states"][0]["state"].values(), theirs["optimizer_states"][0]["state"].values(),
                    strict=True):
        for k in b:
            assert torch.equal(a[k], b[k])


# ---------------------------------------------------------------------------------------------- the callback itself
def _draws() -> tuple:
    return torch.rand(3).tolist(), np.random.rand(3).tolist(), [random.random() for _ in range(3)]


def test_rng_states_round_trip_through_a_weights_only_checkpoint(tmp_path):
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    random.gauss(0, 1)  # a cached Gaussian is part of Python's state too
    states = collect_rng_states()
    torch.save({"states": states}, tmp_path / "s.pt")
    expected = _draws()
    _draws()
    restore_rng_states(torch.load(tmp_path / "s.pt", weights_only=True)["states"])
    assert _draws() == expected


class _Fake:
    """Just enough of a Trainer for the callback's hooks."""

    def __init__(self, fn: TrainerFn, train_dataloader=None, val_dataloaders=None) -> None:
        self.state = type("State", (), {"fn": fn})()
        self.strategy = type("Strategy", (), {"root_device": torch.device("cpu")})()
        self.global_rank = 0
        self.sanity_checking = False
        self.train_dataloader, self.val_dataloaders = train_dataloader, val_dataloaders


@pytest.mark.parametrize("fn", [TrainerFn.FITTING, TrainerFn.TESTING])
def test_the_state_is_restored_when_fitting_resumes_and_only_then(fn):
    callback = RNGStateCallback()
    torch.manual_seed(5)
    checkpoint = {"callbacks": {callback.state_key: callback.state_dict()}}
    expected = _draws()
    callback.on_load_checkpoint(_Fake(fn), None, checkpoint)
    if fn == TrainerFn.FITTING:
        assert _draws() == expected
    else:  # testing a checkpoint leaves the random numbers where they are
        assert _draws() != expected


def _draw_one() -> torch.Tensor:
    """What making a DataLoader's iterator draws from the global RNG (its workers' base seed)."""
    return torch.empty((), dtype=torch.int64).random_()


@pytest.mark.parametrize("workers", [0, 1])
def test_the_first_iterators_of_loaders_with_persistent_workers_draw_nothing_that_counts(workers):
    """An uninterrupted run's persistent DataLoaders drew their base seeds once, in epoch 0 (or in the sanity check,
    under isolate_rng); the resumed run's draw again when they make their first iterators: the states at the start
    of the resumed fit's first epoch and of its first validation must be the uninterrupted run's all the same.
    Loaders without persistent workers draw at every epoch, resumed or not, so their draws must stay."""
    def loader() -> DataLoader:
        return DataLoader(TensorDataset(torch.zeros(4)), num_workers=workers, persistent_workers=workers > 0)

    callback, trainer = RNGStateCallback(), _Fake(TrainerFn.FITTING, {"train": loader()}, loader())
    torch.manual_seed(5)
    checkpoint = {"callbacks": {callback.state_key: callback.state_dict()}}
    saved = torch.get_rng_state()
    callback.on_load_checkpoint(trainer, None, checkpoint)
    _draw_one()  # the training iterator, made before the epoch starts
    callback.on_train_epoch_start(trainer, None)
    if workers:
        assert torch.equal(torch.get_rng_state(), saved)
    torch.rand(3)  # the epoch's training draws
    callback.on_train_batch_end(trainer, None, None, None, 0)
    before_validation = torch.get_rng_state()
    _draw_one()  # the validation iterator, made before validation starts
    after_draw = torch.get_rng_state()
    callback.on_validation_start(trainer, None)
    assert torch.equal(torch.get_rng_state(), before_validation if workers else after_draw)
    # only the resumed fit's first epoch and first validation
    callback.on_train_epoch_start(trainer, None)
    callback.on_train_batch_end(trainer, None, None, None, 0)
    _draw_one()
    after_draw = torch.get_rng_state()
    callback.on_validation_start(trainer, None)
    assert torch.equal(torch.get_rng_state(), after_draw)


def test_a_checkpoint_without_rng_states_loads_and_changes_nothing():
    callback = RNGStateCallback()
    torch.manual_seed(5)
    before = torch.get_rng_state()
    callback.on_load_checkpoint(_Fake(TrainerFn.FITTING), None, {"callbacks": {}})
    assert torch.equal(torch.get_rng_state(), before)


def test_the_train_configs_have_the_callback():
    for callbacks in ("default", "minimal"):
        cfg = compose_train(Path("/tmp/unused"), [f"callbacks={callbacks}"])
        assert cfg.callbacks.rng_state._target_ == "vaelab.callbacks.rng_state.RNGStateCallback"
