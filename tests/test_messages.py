"""Bad values and surprises a user meets, each one message naming the key or file and the fix (issue 17): no
traceback, no misleading advice, no silent surprise."""

from __future__ import annotations

import builtins
import errno
import io
import json
import logging
import os
import re
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compose_eval, compose_train
from lightning import Callback

from vaelab.errors import ConfigError, VaelabError
from vaelab.tasks.evaluate import run_evaluation
from vaelab.tasks.train import train

QUIET = ["logger=none", "callbacks=minimal"]


@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("good")
    train(compose_train(tmp, [*QUIET, "test=false", "model.latent_dim=4"]))
    return tmp / "run" / "checkpoints" / "last.ckpt"


@pytest.mark.parametrize("override, said", [
    ("seed=abc", "seed = 'abc' is invalid: it must be an integer from 0 to 4294967295, or null for none"),
    ("seed=-3", "seed = -3 is invalid: it must be an integer from 0 to 4294967295, or null for none"),
    ("model.beta=inf", "model.beta = inf is invalid: it must be a finite number >= 0, e.g. model.beta=4"),
    ("trainer.max_epochs=-2", "trainer.max_epochs = -2 is invalid: it must be an integer >= 1, e.g. "
                              "trainer.max_epochs=20 (-1: train until stopped)"),
])
def test_a_bad_training_value_is_refused_before_anything_is_built(tmp_path, override, said):
    with pytest.raises(ConfigError) as caught:
        train(compose_train(tmp_path, [*QUIET, override]))
    assert str(caught.value) == f"Invalid configuration, nothing was run:\n  {said}"
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["status"] == "failed"


@pytest.mark.parametrize("override, said", [
    ("iw_k=-1", "iw_k = -1 is invalid: it must be an integer >= 0, e.g. iw_k=100 (0 skips the bound)"),
    ("seed=abc", "seed = 'abc' is invalid: it must be an integer from 0 to 4294967295, or null for none"),
    ("split=dev", "split = 'dev' is invalid: it must be one of: train, val, test"),
    ("device=gpu0", "device = 'gpu0' is invalid: it must be one of: auto, cpu, cuda, cuda:<index>"),
])
def test_a_bad_evaluation_value_names_its_own_key(tmp_path, good_checkpoint, override, said):
    with pytest.raises(ConfigError) as caught:
        run_evaluation(compose_eval(tmp_path, [f"ckpt_path={good_checkpoint}", override]))
    assert str(caught.value) == f"Invalid configuration, nothing was run:\n  {said}"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_evaluating_on_cuda_without_cuda_says_so_and_does_not_blame_the_checkpoint(tmp_path, good_checkpoint):
    with pytest.raises(ConfigError) as caught:
        run_evaluation(compose_eval(tmp_path, [f"ckpt_path={good_checkpoint}", "device=cuda"]))
    message = str(caught.value)
    assert message.startswith("device=cuda: CUDA is not available on this machine")
    assert "device=cpu" in message and "checkpoint" not in message


class StopAfterOneEpoch(Callback):
    def on_train_epoch_end(self, trainer, pl_module) -> None:
        trainer.should_stop = True


def test_max_epochs_minus_one_says_at_the_start_that_it_trains_until_stopped(tmp_path, caplog):
    cfg = compose_train(tmp_path, [*QUIET, "test=false", "trainer.max_epochs=-1",
                                   "+callbacks.stop._target_=test_messages.StopAfterOneEpoch"])
    with caplog.at_level(logging.WARNING, logger="vaelab.tasks.train"):
        train(cfg)
    said = [r.getMessage() for r in caplog.records if r.name == "vaelab.tasks.train"]
    assert said and said[0].startswith("trainer.max_epochs=-1: training goes on until it is stopped (Ctrl-C, or "
                                       "SIGTERM")
    assert "+trainer.max_steps=<n>" in said[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="vaelab.tasks.train"):  # a limit of another kind: nothing said
        train(compose_train(tmp_path / "b", [*QUIET, "test=false", "trainer.max_epochs=-1", "+trainer.max_steps=3"]))
    assert not [r for r in caplog.records if r.name == "vaelab.tasks.train"]


def test_shapes_say_what_they_are_about_to_render(tmp_path, caplog):
    from vaelab.data import ShapesDataModule

    dm = ShapesDataModule(data_dir=tmp_path, image_size=16, n_scales=2, n_orientations=4, n_positions=8)
    with caplog.at_level(logging.INFO, logger="vaelab.data.shapes"):
        dm.setup()
    said = [r.getMessage() for r in caplog.records if r.name == "vaelab.data.shapes"]
    n_train = len(dm.splits["train"][0]) + len(dm.splits["val"][0])
    assert said[0] == (f"shapes: rendering the train split, {n_train:,} images of 16×16: 0.0 GB in memory, then cached "
                       f"in {tmp_path / 'vaelab_cache'}; about a second on a 2-core CPU")
    assert said[1].startswith("shapes: rendering the test split, ")


def test_the_full_dsprites_product_says_its_size_and_time_before_rendering(tmp_path, caplog, monkeypatch):
    from hydra.utils import instantiate

    dm = instantiate(compose_train(tmp_path, ["data=shapes_full"]).data)
    monkeypatch.setattr(type(dm), "render", lambda self, factors: torch.zeros(0))  # (the message only)
    with caplog.at_level(logging.INFO, logger="vaelab.data.shapes"):
        dm.load_split(train=True)
    said = caplog.records[-1].getMessage()
    match = re.fullmatch(r"shapes: rendering the train split, ([\d,]+) images of 64×64: ([\d.]+) GB in memory, then "
                         r"cached in .*vaelab_cache; about (\d+) s on a 2-core CPU", said)
    assert match, said
    n = int(match[1].replace(",", ""))
    assert 600_000 < n < 737_280 and match[2] == f"{n * 4096 / 1e9:.1f}" and 30 <= int(match[3]) <= 300


def test_rendering_keeps_memory_to_the_output_and_one_chunk(tmp_path, monkeypatch):
    import vaelab.data.shapes as shapes

    monkeypatch.setattr(shapes, "_PIXELS_PER_CHUNK", 64 * 64 * 8)  # chunks of 8 images
    dm = shapes.ShapesDataModule(data_dir=tmp_path, image_size=64, n_scales=6, n_orientations=40, n_positions=32)
    factors = dm.sample_factors(2000, np.random.default_rng(0))
    tracemalloc.start()  # (numpy's arrays are traced; the output tensor is torch's, and is not)
    try:
        images = dm.render(factors)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert images.shape == (2000, 1, 64, 64) and images.dtype == torch.uint8
    assert set(images.unique().tolist()) == {0, 255}
    assert peak < images.numel() / 4  # (all at once: a bool array, a uint8 copy and a scaled one, 3× the output)


class ReadOnlyRun:
    """Stands in for a run folder that becomes read-only: no file there can be made or written."""

    def __init__(self, root: Path, monkeypatch) -> None:
        self.root, self.read_only = str(root), False
        real_open, real_os_open = builtins.open, os.open

        def refused(path) -> bool:
            return self.read_only and str(path).startswith(self.root)

        def open_(file, mode="r", *args, **kwargs):
            if any(c in mode for c in "wxa+") and refused(file):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(file))
            return real_open(file, mode, *args, **kwargs)

        def os_open(path, flags, *args, **kwargs):
            if flags & (os.O_WRONLY | os.O_RDWR) and refused(path):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
            return real_os_open(path, flags, *args, **kwargs)

        for module in (builtins, io):
            monkeypatch.setattr(module, "open", open_)
        monkeypatch.setattr(os, "open", os_open)


RUN: ReadOnlyRun | None = None


class MakeItReadOnly(Callback):
    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch == 1:
            RUN.read_only = True


def test_a_run_folder_that_turns_read_only_is_one_message(tmp_path, monkeypatch, capsys):
    global RUN
    RUN = ReadOnlyRun(tmp_path / "run", monkeypatch)
    cfg = compose_train(tmp_path, ["logger=none", "callbacks=none", "trainer.max_epochs=4",
                                   "+callbacks.ro._target_=test_messages.MakeItReadOnly"])
    with pytest.raises(VaelabError) as caught:
        train(cfg)
    path = tmp_path / "run" / "metrics.json"
    assert str(caught.value).startswith(f"Cannot write the run's record {path}: Permission denied. Its folder became "
                                        "read-only or its disk is full")
    assert "paths.log_dir=<folder>" in str(caught.value)
    # the run stopped there; the record kept says how far it got; that the final one could not be written either is
    # what the message says already: nothing more is printed (issue 24: one message)
    assert json.loads(path.read_text())["epochs"] == 1
    assert "Cannot write" not in capsys.readouterr().err
