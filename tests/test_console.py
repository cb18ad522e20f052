"""The console of a run (issue 25, step 7): each line Lightning logs is printed once, and is in the run's log file;
Lightning's tips advertising its company's products are not printed."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from conftest import ROOT

ENV = {**os.environ, "VAELAB_ROOT": str(ROOT), "PYTHONWARNINGS": "ignore"}
#: the start of a line of Hydra's job log: [time][logger][level] - message
RECORD = re.compile(r"^\[[^\]]+\]\[([^\]]+)\]\[[A-Z]+\] - (.*)$")


def lightning_lines(log: str) -> list[str]:
    """The lines of the records Lightning's loggers wrote into a Hydra job log (a multi-line record's every line)."""
    lines, ours = [], False
    for line in log.splitlines():
        match = RECORD.match(line)
        if match:
            ours = match.group(1).startswith("lightning")
            line = match.group(2)
        if ours and line.strip():
            lines.append(line)
    return lines


def test_each_line_lightning_logs_is_printed_once_and_is_in_the_log_file(tmp_path):
    run = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "src/train.py", "trainer=cpu", "trainer.max_epochs=1", "+trainer.limit_train_batches=2",
         "+trainer.limit_val_batches=1", "+trainer.limit_test_batches=1", "callbacks=minimal", "logger=none",
         f"hydra.run.dir={run}", f"paths.data_dir={tmp_path / 'data'}"],
        cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    console, log = result.stdout + result.stderr, (run / "train.log").read_text()
    lines = lightning_lines(log)
    assert any(line.startswith("GPU available:") for line in lines), log  # Lightning's lines are in the log file
    assert any(line.startswith("Restoring states from the checkpoint path") for line in lines), log
    for line in lines:  # ... and on the console as often (a table's rule recurs within one record)
        assert console.count(line) == log.count(line), (line, console)
    assert not re.search(r"^INFO: ", console, re.MULTILINE), console  # (Lightning's own console handler)
    assert "💡" not in console + log and "litlogger" not in console + log and "litmodels" not in console + log
