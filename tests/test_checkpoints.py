"""Checkpoints a run can be trusted with (issue 17): last.ckpt is the last epoch even when the best stops improving,
a full disk or an unwritable folder leaves no half-written checkpoint and a true record, and the record never names
a checkpoint that was not written (vaelab.callbacks.checkpoint, vaelab.tasks.checkpoint_io)."""

from __future__ import annotations

import builtins
import errno
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import ROOT, compose_train
from lightning import Callback
from lightning.pytorch.callbacks import Checkpoint

from vaelab.tasks.checkpoint_io import CheckpointWriteError
from vaelab.tasks.train import train

ENV = {**os.environ, "VAELAB_ROOT": str(ROOT), "PYTHONWARNINGS": "ignore"}
#: an autoencoder that learns nothing: its validation loss is the same every epoch, so no epoch after the first is
#: a new best (a deterministic AE: the same weights give the very same val/loss)
FLAT = ["model=ae", "model.optimizer.lr=0", "logger=none", "callbacks=minimal", "test=false"]


def test_last_ckpt_is_the_last_epoch_when_the_best_stops_improving(tmp_path):
    train(compose_train(tmp_path, [*FLAT, "trainer.max_epochs=4"]))
    checkpoints = tmp_path / "run" / "checkpoints"
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["best_ckpt"] == str(checkpoints / "epoch_000.ckpt")  # never improved after the first epoch
    last = torch.load(checkpoints / "last.ckpt", weights_only=True)
    assert last["epoch"] == 3 and last["global_step"] == 12  # the last epoch's, not the best's
    assert sorted(p.name for p in checkpoints.iterdir()) == ["epoch_000.ckpt", "last.ckpt"]  # nothing else left


def test_last_ckpt_is_the_last_epoch_without_validation(tmp_path):
    # checkpoints are then saved at the end of each training epoch (monitor=null: the latest is the "best")
    train(compose_train(tmp_path, [*FLAT, "trainer.max_epochs=3", "data.val_fraction=0"]))
    checkpoints = tmp_path / "run" / "checkpoints"
    assert torch.load(checkpoints / "last.ckpt", weights_only=True)["epoch"] == 2
    assert sorted(p.name for p in checkpoints.iterdir()) == ["epoch_002.ckpt", "last.ckpt"]


def test_sigterm_says_to_resume_from_a_checkpoint_of_the_epoch_it_names(tmp_path):
    run = tmp_path / "run"
    with (tmp_path / "stdout.txt").open("w") as stdout:
        process = subprocess.Popen(
            [sys.executable, "src/train.py", *FLAT, "trainer.max_epochs=10000", "trainer=cpu",
             "+trainer.limit_train_batches=3", "+trainer.limit_val_batches=1", "+trainer.enable_progress_bar=false",
             "+trainer.enable_model_summary=false", f"hydra.run.dir={run}", f"paths.data_dir={tmp_path / 'data'}"],
            cwd=ROOT, env=ENV, stdout=stdout, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read()[-3000:]
        try:
            if json.loads((run / "metrics.json").read_text()).get("epochs", 0) >= 4:
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.1)
    os.kill(process.pid, signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr[-3000:]
    record = json.loads((run / "metrics.json").read_text())
    last = torch.load(record["last_ckpt"], weights_only=True)
    said = (tmp_path / "stdout.txt").read_text()
    assert (f"Resume with ckpt_path={record['last_ckpt']} (saved at the end of epoch {last['epoch']}: the run goes on "
            f"from epoch {last['epoch'] + 1})") in said
    # at most the epoch in progress is lost: the checkpoint is of the epoch before the one SIGTERM stopped
    assert f"Terminated by SIGTERM in epoch {last['epoch'] + 1}." in said
    assert last["epoch"] >= 3 and last["global_step"] == 3 * (last["epoch"] + 1)


class LimitedFile:
    """A file being written on a :class:`FullDisk`: a write fails with ENOSPC, as ``write(2)`` does, once the disk's
    free bytes are used up (the part that still fits is written)."""

    def __init__(self, stream, disk: FullDisk) -> None:
        self._stream, self._disk = stream, disk

    def write(self, data) -> int:
        data = data if isinstance(data, str) else bytes(data)
        if len(data) > self._disk.free:
            self._stream.write(data[: self._disk.free])
            self._disk.free = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._disk.free -= len(data)
        return self._stream.write(data)

    def __getattr__(self, name):
        return getattr(self._stream, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._stream.close()


class FullDisk:
    """Stands in for the disk of a run's folder (``root``) filling up: new data written there share ``free``
    bytes; once they are used up no file can be made there either (rewriting an existing small file in place
    still works: its blocks are allocated). A file cannot be renamed onto the disk from elsewhere (another disk:
    the system's temporary folder, where Lightning's own writer puts its temporary file, so ``shutil.move``
    copies it). Python's ``open`` and ``os.open`` are what every writer here uses."""

    def __init__(self, root: Path, monkeypatch) -> None:
        self.root, self.free = str(root), 10**12
        real_open, real_os_open, real_rename = builtins.open, os.open, os.rename

        def on_disk(path) -> bool:
            return str(path).startswith(self.root)

        def open_(file, mode="r", *args, **kwargs):
            new = any(c in mode for c in "wxa")
            if new and on_disk(file) and self.free == 0 and not Path(file).exists():
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(file))
            stream = real_open(file, mode, *args, **kwargs)
            return LimitedFile(stream, self) if new and on_disk(file) else stream

        def os_open(path, flags, *args, **kwargs):
            tmpfile = getattr(os, "O_TMPFILE", 0)
            creates = (tmpfile and flags & tmpfile == tmpfile) or (flags & os.O_CREAT and not Path(path).exists())
            if creates and on_disk(path) and self.free == 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
            return real_os_open(path, flags, *args, **kwargs)

        def rename(src, dst, *args, **kwargs):
            if on_disk(dst) and not on_disk(src):
                raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))
            return real_rename(src, dst, *args, **kwargs)

        for module in (builtins, io):
            monkeypatch.setattr(module, "open", open_)
        monkeypatch.setattr(os, "open", os_open)
        monkeypatch.setattr(os, "rename", rename)
        monkeypatch.setattr(shutil, "_USE_CP_SENDFILE", False)  # (copies through Python's write, as on other OSes)


DISK: FullDisk | None = None


class FillTheDisk(Callback):
    """When the second epoch starts, leave room for half a checkpoint (its first checkpoints fitted)."""

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == 1:
            DISK.free = Path(trainer.checkpoint_callback.last_model_path).stat().st_size // 2


def test_a_full_disk_leaves_no_half_checkpoint_and_a_true_record(tmp_path, monkeypatch):
    global DISK
    DISK = FullDisk(tmp_path / "run", monkeypatch)
    cfg = compose_train(tmp_path, ["logger=none", "callbacks=minimal", "test=false", "trainer.max_epochs=3",
                                   "+callbacks.fill._target_=test_checkpoints.FillTheDisk"])
    checkpoints = tmp_path / "run" / "checkpoints"
    with pytest.raises(CheckpointWriteError) as caught:
        train(cfg)
    message = str(caught.value)
    assert message.startswith(f"Cannot write the checkpoint {checkpoints}/")
    assert "No space left on device" in message and "callbacks.model_checkpoint.dirpath=<folder>" in message
    # the record, rewritten in place (no room for a new file), says how the run ended
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["status"] == "failed" and "No space left on device" in record["error"]
    # every file under a checkpoint's name is whole (it loads), and the record names only files that were written
    for path in checkpoints.iterdir():
        assert not path.name.startswith("."), f"a temporary file was left: {path.name}"
        assert torch.load(path, weights_only=True)["global_step"] == 3, path.name
    assert Path(record["best_ckpt"]).is_file() and Path(record["last_ckpt"]).is_file()
    assert torch.load(record["best_ckpt"], weights_only=True)["epoch"] == 0


def test_an_unwritable_checkpoints_folder_is_one_message_and_names_no_unwritten_file(tmp_path, monkeypatch):
    cfg = compose_train(tmp_path, ["logger=none", "callbacks=minimal", "test=false", "trainer.max_epochs=2"])
    checkpoints = tmp_path / "run" / "checkpoints"
    real_open = builtins.open

    def read_only_after_first_epoch(file, mode="r", *args, **kwargs):
        if "w" in mode and str(file).startswith(str(checkpoints)) and (checkpoints / "last.ckpt").is_file():
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", read_only_after_first_epoch)
    with pytest.raises(CheckpointWriteError, match=r"Cannot write the checkpoint .*epoch_001.ckpt: Permission denied"):
        train(cfg)
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["status"] == "failed"
    assert record["best_ckpt"] == str(checkpoints / "epoch_000.ckpt") and Path(record["best_ckpt"]).is_file()
    assert sorted(p.name for p in checkpoints.iterdir()) == ["epoch_000.ckpt", "last.ckpt"]


class RecordProbe(Checkpoint):
    """Reads the run's metrics.json from disk after the checkpoint callback at each hook where it saves or deletes
    checkpoints: what a run killed at that moment (SIGKILL) would leave behind. (A ``Checkpoint``, so that Lightning
    calls it after the ModelCheckpoint configured before it.)"""

    made: list[RecordProbe] = []

    def __init__(self, path: str) -> None:
        self.path, self.seen = Path(path), []
        RecordProbe.made.append(self)

    def _look(self, trainer, hook: str) -> None:
        if trainer.sanity_checking or not self.path.is_file():
            return
        record = json.loads(self.path.read_text())
        for key in ("best_ckpt", "last_ckpt"):
            if record.get(key):
                self.seen.append((trainer.current_epoch, hook, key, Path(record[key]).is_file()))

    def on_validation_end(self, trainer, pl_module) -> None:
        self._look(trainer, "validation end")

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._look(trainer, "train epoch end")

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._look(trainer, "train epoch start")


def test_the_record_on_disk_never_names_a_deleted_checkpoint(tmp_path):
    # a VAE that improves every epoch: each epoch's best replaces the one before
    cfg = compose_train(tmp_path, ["logger=none", "callbacks=minimal", "test=false", "trainer.max_epochs=4",
                                   "+callbacks.probe._target_=test_checkpoints.RecordProbe",
                                   f"+callbacks.probe.path={tmp_path / 'run' / 'metrics.json'}"])
    RecordProbe.made.clear()
    train(cfg)
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["best_ckpt"].endswith("epoch_003.ckpt")  # (it improved every epoch: the best moved each time)
    (probe,) = RecordProbe.made
    assert len(probe.seen) >= 16  # (3 hooks, 4 epochs, 2 names)
    named_but_gone = [seen for seen in probe.seen if not seen[3]]
    assert not named_but_gone  # (epoch, hook, key, exists): a kill there would leave a record naming a deleted file
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["epoch_003.ckpt", "last.ckpt"]
