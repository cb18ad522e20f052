"""Issue 24's open faults, each one message and a true record: a run folder made read-only mid-run, Ctrl-C while a
checkpoint is written, and a config file under ``--config-dir`` that is not valid YAML."""

from __future__ import annotations

import builtins
import errno
import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT
from lightning import Callback

from vaelab.errors import ConfigError
from vaelab.tasks.checkpoint_io import AtomicCheckpointIO
from vaelab.tasks.recording import RunFolderWriteError, recorded, reported_error

ENV = {**os.environ, "VAELAB_ROOT": str(ROOT), "PYTHONWARNINGS": "ignore",
       "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])}
QUICK = ["trainer=cpu", "+trainer.limit_train_batches=3", "+trainer.limit_val_batches=1",
         "+trainer.limit_test_batches=1", "+trainer.enable_progress_bar=false", "+trainer.enable_model_summary=false"]


def _sigint_as_from_a_terminal() -> None:
    """In the child before it starts Python: SIGINT at its default, so that Python turns it into KeyboardInterrupt.
    A shell without job control starts background commands with SIGINT ignored, and Python keeps an ignored SIGINT
    ignored: a suite started with ``&`` (or under nohup) would otherwise see no Ctrl-C in its runs at all."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_cli(args: list[str], tmp_path: Path, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "src" / "train.py"), *args,
                           f"paths.data_dir={tmp_path / 'data'}"], cwd=cwd, env=ENV, capture_output=True, text=True,
                          timeout=300, preexec_fn=_sigint_as_from_a_terminal)


# ------------------------------------------------------------------------------ 1. a run folder made read-only
def refuse_writes_under(folder: str) -> None:
    """From now on, in this process, no file under ``folder`` can be made or written (EACCES), as when the folder
    and its files are made read-only (``chmod -R a-w``) by another user; files already open stay writable."""
    real_open, real_os_open = builtins.open, os.open

    def refused(path) -> bool:
        return not isinstance(path, int) and os.path.abspath(os.fsdecode(path)).startswith(folder)

    def deny(path):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fsdecode(path))

    def open_(file, mode="r", *args, **kwargs):
        if any(c in mode for c in "wxa+") and refused(file):
            deny(file)
        return real_open(file, mode, *args, **kwargs)

    def os_open(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and refused(path):
            deny(path)
        return real_os_open(path, flags, *args, **kwargs)

    builtins.open = io.open = open_
    os.open = os_open


class RunTurnsReadOnly(Callback):
    """At the end of training epoch ``epoch`` the run folder becomes read-only (in a ``src/train.py`` process)."""

    def __init__(self, folder: str, epoch: int = 1) -> None:
        self.folder, self.epoch = os.path.abspath(folder), epoch

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            refuse_writes_under(self.folder)


@pytest.mark.slow
def test_a_run_folder_made_read_only_mid_run_is_one_message(tmp_path):
    """With the default loggers and callbacks: the checkpoint write fails first, then Lightning's shutdown (the run
    summary's TensorBoard flush, its events thread, the loggers' closing) failed on the same folder, each with a
    traceback of its own, one of them TensorBoard's misleading "you tried to log … which is currently not
    supported". Now: one message, the first failure, saying the final record could not be written either."""
    run = tmp_path / "run"
    result = run_cli([*QUICK, "trainer.max_epochs=3", f"hydra.run.dir={run}", "+callbacks.ro._target_="
                      "test_faults_c.RunTurnsReadOnly", f"+callbacks.ro.folder={run}"], tmp_path)
    assert result.returncode == 1, result.stderr[-3000:]
    err = result.stderr
    assert "Traceback" not in err and "currently not supported" not in err, err[-5000:]
    assert err.count("Cannot write") == 1, err
    message = err.split("Error executing job with overrides:", 1)[1].splitlines()[1]
    assert message.startswith(f"Cannot write the checkpoint {run / 'checkpoints' / 'epoch_001.ckpt'}: Permission "
                              "denied."), err
    assert message.endswith(f"The run's record could not be written either (Permission denied): {run / 'metrics.json'} "
                            "still says status 'running', epochs 1"), message
    record = json.loads((run / "metrics.json").read_text())  # the last one written: how far the run got
    assert record["status"] == "running" and record["epochs"] == 1


def test_a_write_refused_in_the_run_folder_is_said_as_such_not_as_what_failed_over_it(tmp_path):
    """TensorBoard's logger turns its events file's failed write into a ValueError about the value logged."""
    refused = PermissionError(errno.EACCES, "Permission denied", os.fsencode(tmp_path / "events.out.tfevents.1"))
    try:
        try:
            raise refused
        except PermissionError as err:
            raise ValueError("\n you tried to log 27.70 which is currently not supported. Try a dict or a "
                             "scalar/tensor.") from err
    except ValueError as err:
        said = reported_error(err, tmp_path)
    assert isinstance(said, RunFolderWriteError)
    assert str(said).startswith(f"Cannot write {tmp_path / 'events.out.tfevents.1'}: Permission denied. The run "
                                f"folder {tmp_path} became read-only or its disk is full")
    elsewhere = PermissionError(errno.EACCES, "Permission denied", "/somewhere/else")
    assert reported_error(elsewhere, tmp_path) is elsewhere  # (not a file of the run: as it is)


def test_an_error_raised_while_the_run_stopped_is_reported_after_the_first_one_and_logged_unless_it_follows(
        tmp_path, caplog):
    def stopped_on(first: BaseException, then: Exception) -> BaseException:
        try:
            try:
                raise first
            except BaseException:
                raise then  # noqa: B904  (as a callback's on_exception or a logger's closing does)
        except Exception as err:
            return reported_error(err, tmp_path)

    first = ConfigError("the first one")
    assert stopped_on(first, AttributeError("a bug in on_exception")) is first
    assert "another error was raised" in caplog.text and "a bug in on_exception" in caplog.text  # (not dropped)
    caplog.clear()
    refused = PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "hparams.yaml"))
    assert stopped_on(first, refused) is first and not caplog.text  # (the same folder failing again: said once)
    interrupt = KeyboardInterrupt()
    assert stopped_on(interrupt, RuntimeError("unexpected pos 46 vs 0")) is interrupt and not caplog.text


# ------------------------------------------------------------------------ 2. Ctrl-C while a checkpoint is written
class _PressesCtrlC:
    """A checkpoint's file that gets Ctrl-C (SIGINT to this process) at its third write, inside ``torch.save``."""

    def __init__(self, stream) -> None:
        self.stream, self.writes = stream, 0

    def write(self, data):
        self.writes += 1
        if self.writes >= 3:
            os.kill(os.getpid(), signal.SIGINT)
        return self.stream.write(data)

    def __getattr__(self, name):
        return getattr(self.stream, name)


class CtrlCWhileSaving(Callback):
    """Ctrl-C in the middle of the checkpoint saved at the end of training epoch ``epoch`` (in a ``src/train.py``
    process)."""

    def __init__(self, epoch: int = 1) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            real_save = torch.save
            torch.save = lambda obj, f, *args, **kwargs: real_save(obj, _PressesCtrlC(f), *args, **kwargs)


def test_ctrl_c_while_a_checkpoint_is_written_is_interrupted_and_keeps_the_one_before(tmp_path):
    """torch.save made the Ctrl-C an internal zip error ("unexpected pos …"), so the run was ``failed``."""
    run = tmp_path / "run"
    result = run_cli([*QUICK, "trainer.max_epochs=3", "logger=none", "callbacks=minimal", f"hydra.run.dir={run}",
                      "+callbacks.ctrl_c._target_=test_faults_c.CtrlCWhileSaving"], tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-3000:]
    assert "Traceback" not in output and "unexpected pos" not in output, output[-5000:]
    record = json.loads((run / "metrics.json").read_text())
    assert record["status"] == "interrupted" and record["error"] == "interrupted in epoch 1", record
    checkpoints = run / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["epoch_000.ckpt", "last.ckpt"]  # no temporary file
    assert record["last_ckpt"] == str(checkpoints / "last.ckpt")
    assert torch.load(checkpoints / "last.ckpt", weights_only=True)["epoch"] == 0  # whole: the epoch before
    assert (f"Interrupted in epoch 1. Resume with ckpt_path={checkpoints / 'last.ckpt'} (saved at the end of epoch 0"
            in output)


def interrupted_in_torch(obj, stream, *args, **kwargs) -> None:
    """``torch.save`` getting Ctrl-C half-way: its zip writer reports it as an internal error raised over it."""
    stream.write(b"PK\x03\x04 half a checkpoint")
    try:
        raise KeyboardInterrupt
    except KeyboardInterrupt:
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 46 vs 0")  # noqa: B904


def interrupted_in_python(obj, stream, *args, **kwargs) -> None:
    """``torch.save`` getting Ctrl-C half-way, between two writes of Python's."""
    stream.write(b"PK\x03\x04 half a checkpoint")
    raise KeyboardInterrupt


@pytest.mark.parametrize("save", [interrupted_in_torch, interrupted_in_python])
def test_an_interrupted_checkpoint_write_is_ctrl_c_and_leaves_the_old_file_and_no_temporary_one(tmp_path, monkeypatch,
                                                                                                save):
    path = tmp_path / "last.ckpt"
    torch.save({"epoch": 0}, path)
    monkeypatch.setattr(torch, "save", save)
    with pytest.raises(KeyboardInterrupt):
        AtomicCheckpointIO().save_checkpoint({"epoch": 1}, path)
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]
    assert torch.load(path, weights_only=True) == {"epoch": 0}


def test_ctrl_c_that_reaches_the_record_is_interrupted_and_a_second_one_cannot_cut_its_writing_short(tmp_path,
                                                                                                     monkeypatch):
    """Lightning puts Python's Ctrl-C handler back when it has stopped: a press after that reached the record as a
    KeyboardInterrupt (``failed``), and one more could stop its writing half-way."""
    import vaelab.tasks.recording as record_module

    path = tmp_path / "metrics.json"
    real_write = record_module.write_json

    def pressed_again_while_writing(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        real_write(*args, **kwargs)

    monkeypatch.setattr(record_module, "write_json", pressed_again_while_writing)
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt), recorded(path, {"status": "running"}):
        raise KeyboardInterrupt
    assert json.loads(path.read_text())["status"] == "interrupted"
    assert signal.getsignal(signal.SIGINT) is handler  # (as it was)


# ------------------------------------------------------------------------ 3. a config file that is not valid YAML
@pytest.fixture
def broken_config_dir(tmp_path) -> Path:
    folder = tmp_path / "my_conf"
    (folder / "experiment").mkdir(parents=True)
    (folder / "experiment" / "broken.yaml").write_text("# @package _global_\nmodel:\n  latent_dim: 4\n"
                                                      "  beta: [1, 2\ntrainer:\n  max_epochs: 1\n")
    return folder


def test_a_broken_yaml_under_config_dir_is_one_message_naming_file_line_and_column(tmp_path, broken_config_dir):
    result = subprocess.run([sys.executable, str(ROOT / "src" / "train.py"), "--config-dir", str(broken_config_dir),
                             "experiment=broken", f"paths.log_dir={tmp_path / 'logs'}"], cwd=tmp_path, env=ENV,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.stderr.startswith(
        f"The config file {broken_config_dir / 'experiment' / 'broken.yaml'} is not valid YAML, at line 5, column 8: "
        "expected ',' or ']', but got ':' (while parsing a flow sequence that begins at line 4, column 9). Correct "
        "the file and run again"), result.stderr
    assert not (tmp_path / "logs").exists()  # nothing was run


def test_a_broken_yaml_in_config_dir_is_a_config_error_from_python(tmp_path, broken_config_dir, monkeypatch):
    import vaelab

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as caught:
        vaelab.train(["experiment=broken"], config_dir=broken_config_dir)
    assert str(caught.value).startswith(f"The config file {broken_config_dir / 'experiment' / 'broken.yaml'} is not "
                                        "valid YAML, at line 5, column 8: expected ',' or ']', but got ':'")
