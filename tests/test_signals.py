"""SIGTERM outside Lightning's loops still leaves a record (issue 17): while eval.py computes its bound, and while a
training run generates its data, SIGTERM ends the process with exit code 143 and ``status: terminated``."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import ROOT, compose_train

from vaelab.tasks.train import train

ENV = {**os.environ, "VAELAB_ROOT": str(ROOT), "PYTHONWARNINGS": "ignore", "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("good")
    train(compose_train(tmp, ["logger=none", "callbacks=minimal", "test=false"]))
    return tmp / "run" / "checkpoints" / "last.ckpt"


def terminate_when_said(args: list[str], *said: str, wait: float = 30) -> tuple[subprocess.Popen, str]:
    """Start ``python <args>``; once its output has said each of ``said`` in turn (the last one: or ``wait`` seconds
    have passed since the one before), wait half a second and send SIGTERM. Returns the process and its output."""
    process = subprocess.Popen([sys.executable, *args], cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True)
    reader.start()
    out = []
    try:
        for i, marker in enumerate(said):
            deadline = time.monotonic() + (wait if i == len(said) - 1 and i > 0 else 240)
            while not any(marker in line for line in out[-1:]) and time.monotonic() < deadline:
                try:
                    out.append(lines.get(timeout=0.2))
                except queue.Empty:
                    assert process.poll() is None, "".join(out)[-3000:]
        time.sleep(0.5)
        assert process.poll() is None, "".join(out)[-3000:]
        os.kill(process.pid, signal.SIGTERM)
        process.wait(timeout=120)
    finally:
        process.kill()
    reader.join(timeout=10)
    while not lines.empty():
        out.append(lines.get())
    return process, "".join(out)


def test_sigterm_while_eval_computes_its_bound_is_recorded(tmp_path, good_checkpoint):
    folder = tmp_path / "eval"
    process, output = terminate_when_said(
        ["src/eval.py", f"ckpt_path={good_checkpoint}", "iw_k=200000", f"hydra.run.dir={folder}",
         f"paths.data_dir={tmp_path / 'data'}"], "test images of shape")
    assert process.returncode == 143, output[-3000:]
    record = json.loads((folder / "metrics.json").read_text())
    assert record["status"] == "terminated" and record["error"] == "terminated by SIGTERM while evaluating"
    assert "Traceback" not in output


def test_sigterm_while_the_data_are_generated_is_recorded(tmp_path):
    run = tmp_path / "run"
    process, output = terminate_when_said(
        ["src/train.py", "data=shapes", "data.image_size=64", "data.n_scales=6", "data.n_orientations=40",
         "data.n_positions=32", "logger=none", "callbacks=minimal", "trainer=cpu", f"hydra.run.dir={run}",
         f"paths.data_dir={tmp_path / 'data'}"], "TPU available", "shapes: rendering the train split")
    assert process.returncode == 143, output[-3000:]
    record = json.loads((run / "metrics.json").read_text())
    assert record["status"] == "terminated"
    assert record["error"] == "terminated by SIGTERM before training began (building the model or preparing the data)"
    assert "Terminated by SIGTERM before training began: nothing was trained." in output
    assert "shapes: rendering the train split, 663," in output  # (about a minute's work: under way)
    assert "Traceback" not in output
    assert not list((tmp_path / "data").rglob("*.pt"))  # no cache half-written
