"""Resuming with settings other than the checkpoint's (issue 17): the checkpoint's own run is never changed under its
config's feet. A resume that differs in a setting the checkpoint records says which keys differ and goes on in a
folder of its own; a refused resume writes nothing into the checkpoint's run."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from conftest import compose_train

from vaelab.errors import ConfigError
from vaelab.tasks.resume import changed_settings
from vaelab.tasks.train import train

TINY = ["callbacks=minimal", "test=false", "model.latent_dim=4"]  # with TensorBoard: an events file to watch


@pytest.fixture(scope="module")
def first_run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("first")
    train(compose_train(tmp, [*TINY, "trainer.max_epochs=2"]))
    return tmp / "run"


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder`` with its size and modification time."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_resume_with_another_batch_size_goes_on_in_its_own_folder_and_says_so(tmp_path, first_run, caplog):
    before = snapshot(first_run)
    last = first_run / "checkpoints" / "last.ckpt"
    cfg = compose_train(tmp_path, [*TINY, "trainer.max_epochs=3", "data.batch_size=64", f"ckpt_path={last}"])
    with caplog.at_level(logging.WARNING, logger="vaelab.tasks.resume"):
        train(cfg)
    said = " ".join(r.getMessage() for r in caplog.records)
    assert (f"ckpt_path={last} was trained with other settings than these: data.batch_size=64 (the checkpoint: "
            "32)") in said
    assert "writes its checkpoints and events into its own folder" in said
    assert snapshot(first_run) == before  # the first run is as it was: its config still describes its checkpoints
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["status"] == "completed"
    assert record["changed_settings"] == {"data.batch_size": {"checkpoint": 32, "here": 64}}
    assert "checkpoints_dir" not in record and Path(record["last_ckpt"]).parent == tmp_path / "run" / "checkpoints"
    assert torch.load(record["last_ckpt"], weights_only=True)["epoch"] == 2  # it did resume: one epoch more
    assert list((tmp_path / "run").glob("events.out.tfevents.*"))


def test_a_refused_resume_writes_nothing_into_the_checkpoints_run(tmp_path, first_run):
    before = snapshot(first_run)
    last = first_run / "checkpoints" / "last.ckpt"
    with pytest.raises(ConfigError, match="does not fit the model of this config"):
        train(compose_train(tmp_path, ["callbacks=minimal", "test=false", "model.latent_dim=8", f"ckpt_path={last}"]))
    assert snapshot(first_run) == before  # no events file, no HParams session, no config card, no checkpoint
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["status"] == "failed"
    assert not (tmp_path / "run" / "checkpoints").exists() and not list((tmp_path / "run").glob("events.*"))


def test_the_same_settings_go_on_in_the_checkpoints_run(tmp_path, first_run):
    checkpoint = torch.load(first_run / "checkpoints" / "last.ckpt", weights_only=True)
    same = compose_train(tmp_path, [*TINY, "trainer.max_epochs=7", "data.num_workers=0", "data.eval_batch_size=7",
                                    "model.compile=true"])
    assert changed_settings(checkpoint, same) == {}  # epochs, where data are and how they are served: not settings
    other = compose_train(tmp_path, [*TINY, "model.optimizer.lr=0.01", "model/net=conv", "data=mnist"])
    changed = changed_settings(checkpoint, other)
    assert changed["model.optimizer.lr"] == (0.001, 0.01)
    assert changed["model.net.encoder._target_"] == ("vaelab.models.nets.MLPEncoder", "vaelab.models.nets.ConvEncoder")
    assert changed["data"] == ("vaelab.data.digits.DigitsDataModule", "vaelab.data.MNISTDataModule")
