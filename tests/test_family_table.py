"""The table of every family (vaelab.reports.families): every family's overrides compose, and the table reads
hand-written run folders back into mean ± sd (no training here)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import compose_eval, compose_train

from vaelab.reports import families
from vaelab.reports.families import (
    BUDGETS,
    END,
    FAMILIES,
    START,
    eval_overrides,
    mean_sd,
    merge_rows,
    read_csv,
    render,
    seed_rows,
    table_jobs,
    train_overrides,
    write_csv,
)
from vaelab.reports.results import replace_between_markers


@pytest.mark.parametrize("family", [f for f in FAMILIES if not f.reuse], ids=lambda f: f.key)
@pytest.mark.parametrize("data", ["mnist", "shapes"])
def test_every_familys_overrides_compose(tmp_path, family, data):
    cfg = compose_train(tmp_path, list(train_overrides(family, data, BUDGETS["small"], seed=1)), fast=False)
    assert cfg.seed == 1 and cfg.trainer.max_epochs == 10
    if not family.own_net:  # the same net and code size for every family
        assert list(cfg.model.net.encoder.hidden_dims) == [512] and cfg.model.latent_dim == (16 if data == "mnist"
                                                                                               else 10)
    compose_eval(tmp_path, ["ckpt_path=x.ckpt", *eval_overrides(family, data, BUDGETS["small"])])


def test_mean_and_sample_sd_over_seeds():
    assert mean_sd([1.0, 2.0, 3.0], 2) == "2.00 ± 1.00" and mean_sd([4.0], 1) == "4.0" and mean_sd([], 2) == "–"


def test_the_table_is_read_back_from_the_run_folders(tmp_path):
    out = tmp_path / "small"
    for seed, (elbo, probe) in enumerate([(90.0, 0.9), (92.0, 0.8)], start=1):
        folder = out / "mnist" / "vae" / f"seed{seed}"
        (folder / "eval").mkdir(parents=True)
        (folder / "eval" / "metrics.json").write_text(json.dumps(
            {"status": "completed", "test": {"test/neg_elbo": elbo, "test/linear_probe": probe}}))
        (folder / "times.json").write_text(json.dumps({"train_seconds": 60.0 * seed}))
    unfinished = out / "mnist" / "ae" / "seed1" / "eval"
    unfinished.mkdir(parents=True)
    (unfinished / "metrics.json").write_text(json.dumps({"status": "failed"}))
    rows = {data: seed_rows(data, out) for data in ("mnist", "shapes")}
    table = render("small", rows)
    row = next(line for line in table.splitlines() if line.startswith("| vae |"))
    assert "| 2 | 91.00 ± 1.41 |" in row and "0.850 ± 0.071" in row and "1.5 ± 0.7" in row
    assert "| ae |" not in table  # no finished seed: no row
    text = replace_between_markers(f"intro\n{START}\nold\n{END}\nrest", table, START, END)
    assert text.startswith(f"intro\n{START}\nBudget `small`") and text.endswith(f"{END}\nrest")


def test_the_table_is_computed_from_the_per_seed_csv_alone(tmp_path):
    """The committed CSVs are the numbers behind the README's table: written, read back and rendered, they give the
    table the run folders give, and a run of some families replaces only their rows. Catches a CSV rounded before
    the mean (the table would differ in the last digit) or a merge that drops the other families' rows."""
    out = tmp_path / "small"
    values = {("vae", 1): 90.123456789, ("vae", 2): 92.0, ("iwae", 1): 88.5}
    for (key, seed), elbo in values.items():
        folder = out / "mnist" / key / f"seed{seed}"
        (folder / "eval").mkdir(parents=True)
        (folder / "eval" / "metrics.json").write_text(json.dumps(
            {"status": "completed", "test": {"test/neg_elbo": elbo, "test/recall": 1 / 3}}))
        (folder / "times.json").write_text(json.dumps({"train_seconds": 61.0}))
    rows = seed_rows("mnist", out)
    assert [(r["family"], r["seed"]) for r in rows] == [("vae", 1), ("vae", 2), ("iwae", 1)]
    path = tmp_path / "small_mnist.csv"
    write_csv(rows, "mnist", path)
    header = path.read_text().splitlines()[0].split(",")
    assert header[:3] == ["family", "seed", "neg_elbo"] and "train_minutes" in header
    back = read_csv(path)
    assert back == rows
    assert render("small", {"mnist": back}) == render("small", {"mnist": rows})
    # a later run of the VAE alone replaces its rows and keeps IWAE's
    newer = [{**rows[0], "neg_elbo": 80.0}]
    merged = merge_rows(back, newer)
    assert sorted((r["family"], r["seed"], r["neg_elbo"]) for r in merged) == [
        ("iwae", 1, 88.5), ("vae", 1, 80.0), ("vae", 2, 92.0)]


def test_the_readmes_table_is_the_one_the_committed_csvs_give():
    """README.md's family table must be what the committed per-seed CSVs compute (rendered as the table script
    writes it): a hand edit of a figure, a CSV changed without rerendering, or a table rendered from run folders
    that the CSVs do not hold fails here."""
    root = Path(__file__).resolve().parents[1]
    folder = root / "logs" / "readme" / "families"
    rows = {data: read_csv(folder / f"small_{data}.csv") for data in ("mnist", "shapes")}
    assert all(rows.values()), f"{folder} lacks the per-seed rows of a data set"
    readme = (root / "README.md").read_text()
    assert replace_between_markers(readme, render("small", rows), START, END) == readme


def test_the_jobs_go_a_seed_at_a_time_and_a_reused_row_after_its_source():
    jobs = [(f.key, data, seed) for f, data, seed in table_jobs([f.key for f in FAMILIES], ["mnist", "shapes"],
                                                                 [1, 2])]
    assert [seed for _, _, seed in jobs] == sorted(seed for _, _, seed in jobs)  # every row's seed 1 first
    assert jobs.index(("ae_gmm", "mnist", 1)) > jobs.index(("ae", "mnist", 1))
    assert ("vqvae", "shapes", 1) not in jobs and ("ae_gmm", "shapes", 1) not in jobs
    assert len(jobs) == 2 * (len(FAMILIES) + sum(f.shapes for f in FAMILIES))


def test_parallel_jobs_start_a_reused_row_only_after_its_source_finished(tmp_path, monkeypatch):
    events: list[tuple[str, str]] = []
    lock = threading.Lock()

    def fake_run_one(family, data, budget, seed, out, root, data_dir, train_extra):
        with lock:
            events.append(("start", family.key))
        time.sleep(0.2 if family.key == "ae" else 0.01)  # the source is slow: the reused row must wait for it
        with lock:
            events.append(("end", family.key))

    monkeypatch.setattr(families, "run_one", fake_run_one)
    families.run_table("small", tmp_path, tmp_path, None, ["ae", "ae_gmm", "dae"], ["mnist"], [1], jobs=3)
    assert events.index(("start", "ae_gmm")) > events.index(("end", "ae"))
    assert {e for e in events if e[0] == "end"} == {("end", k) for k in ("ae", "ae_gmm", "dae")}


def test_a_failed_job_stops_the_table(tmp_path, monkeypatch):
    def failing(family, *args):
        if family.key == "dae":
            raise RuntimeError("dae failed")

    monkeypatch.setattr(families, "run_one", failing)
    with pytest.raises(RuntimeError, match="dae failed"):
        families.run_table("small", tmp_path, tmp_path, None, ["ae", "dae", "vae"], ["mnist"], [1], jobs=2)
    with pytest.raises(ValueError, match="jobs=0"):
        families.run_table("small", tmp_path, tmp_path, None, ["ae"], ["mnist"], [1], jobs=0)


# ------------------------------------------------------------------------ a rerun and a signal (issue 24, fault 1)
def stubbed_runs(monkeypatch, eval_fails: bool = False, train_status: str = "completed"):
    """``families.run`` replaced by a stub that leaves what each process would: a training its record (with
    ``train_status``) and checkpoints, an evaluation its record (or a failure, with ``eval_fails``). Returns the
    commands run."""
    commands: list[list[str]] = []

    def fake_run(cmd, cwd):
        commands.append(cmd)
        run_dir = Path(cmd[-1].split("=", 1)[1])
        run_dir.mkdir(parents=True, exist_ok=True)
        if cmd[1] == "src/eval.py":
            if eval_fails:
                raise subprocess.CalledProcessError(143, cmd)
            (run_dir / "metrics.json").write_text(json.dumps({"status": "completed", "test": {}}))
            return 2.0
        ckpts = run_dir / "checkpoints"
        ckpts.mkdir(exist_ok=True)
        version = len(list(ckpts.glob("epoch_*.ckpt")))
        best = ckpts / ("epoch_000.ckpt" if version == 0 else f"epoch_000-v{version}.ckpt")
        best.write_bytes(b"weights")
        (ckpts / "last.ckpt").write_bytes(b"weights")
        (run_dir / "metrics.json").write_text(json.dumps({
            "status": train_status, "test_ckpt": str(best), "last_ckpt": str(ckpts / "last.ckpt"), "seconds": 5.0}))
        return 7.0

    monkeypatch.setattr(families, "run", fake_run)
    return commands


def scripts_run(commands):
    return [cmd[1] for cmd in commands]


def test_a_finished_training_is_not_trained_again(tmp_path, monkeypatch):
    vae = next(f for f in FAMILIES if f.key == "vae")
    commands = stubbed_runs(monkeypatch, eval_fails=True)  # trained, then the evaluation was stopped
    with pytest.raises(subprocess.CalledProcessError):
        families.run_one(vae, "mnist", BUDGETS["small"], 1, tmp_path, tmp_path, None)
    assert scripts_run(commands) == ["src/train.py", "src/eval.py"]
    commands = stubbed_runs(monkeypatch)
    families.run_one(vae, "mnist", BUDGETS["small"], 1, tmp_path, tmp_path, None)
    assert scripts_run(commands) == ["src/eval.py"]  # the training is not run again into its folder
    folder = tmp_path / "mnist" / "vae" / "seed1"
    assert [p.name for p in (folder / "train" / "checkpoints").glob("*-v*")] == []
    assert json.loads((folder / "times.json").read_text()) == {"train_seconds": 7.0, "eval_seconds": 2.0}
    assert families.finished(folder / "train") and not families.finished(folder / "eval" / "nothing")


def test_a_stopped_training_goes_on_from_its_last_checkpoint(tmp_path, monkeypatch):
    vae = next(f for f in FAMILIES if f.key == "vae")
    stubbed_runs(monkeypatch, eval_fails=True, train_status="terminated")
    with pytest.raises(subprocess.CalledProcessError):
        families.run_one(vae, "mnist", BUDGETS["small"], 1, tmp_path, tmp_path, None)
    train_dir = tmp_path / "mnist" / "vae" / "seed1" / "train"
    commands = stubbed_runs(monkeypatch)
    families.run_one(vae, "mnist", BUDGETS["small"], 1, tmp_path, tmp_path, None)
    assert scripts_run(commands) == ["src/train.py", "src/eval.py"]
    assert f"ckpt_path={train_dir / 'checkpoints' / 'last.ckpt'}" in commands[0]


def test_an_unfinished_training_without_last_ckpt_starts_afresh_in_an_empty_folder(tmp_path, monkeypatch):
    vae = next(f for f in FAMILIES if f.key == "vae")
    train_dir = tmp_path / "mnist" / "vae" / "seed1" / "train"
    (train_dir / "checkpoints").mkdir(parents=True)
    (train_dir / "checkpoints" / "epoch_000.ckpt").write_bytes(b"old")
    (train_dir / "metrics.json").write_text(json.dumps({"status": "failed"}))
    commands = stubbed_runs(monkeypatch)
    families.run_one(vae, "mnist", BUDGETS["small"], 1, tmp_path, tmp_path, None)
    assert scripts_run(commands) == ["src/train.py", "src/eval.py"]
    assert not any("ckpt_path=" in o and "last.ckpt" in o for o in commands[0])
    assert sorted(p.name for p in (train_dir / "checkpoints").iterdir()) == ["epoch_000.ckpt", "last.ckpt"]
    assert (train_dir.with_name("train.unfinished1") / "checkpoints" / "epoch_000.ckpt").read_bytes() == b"old"


STUB_TRAINING = """
import json, os, signal, sys, time
from pathlib import Path
run_dir = Path(sys.argv[1].split("=", 1)[1])
run_dir.mkdir(parents=True, exist_ok=True)
def stop(signum, frame):
    time.sleep(0.5)  # an orderly stop takes a while: the table must wait for it
    (run_dir / "metrics.json").write_text(json.dumps({"status": "terminated"}))
    sys.exit(143)
signal.signal(signal.SIGTERM, stop)
(run_dir / "pid").write_text(str(os.getpid()))
time.sleep(120)
"""

TABLE = """
import sys
from pathlib import Path
from vaelab.reports import families
stub, out = sys.argv[1], Path(sys.argv[2])
families.command = lambda script, overrides, run_dir, extra: [sys.executable, stub, f"hydra.run.dir={run_dir}"]
families.run_table("small", out, out.parent, None, ["vae"], ["mnist"], [1])
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/status").is_file() and "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()


def stop_a_table(tmp_path: Path, table_source: str, pid_file: Path) -> tuple[int, str, dict]:
    """Run ``table_source`` (a table over the stub training) in a process of its own, send its process alone
    SIGTERM once the training has started, as a scheduler does, and wait for it: (its exit code, its stderr, the
    training's record). Fails if the training is still alive afterwards; kills whatever is left either way."""
    (tmp_path / "stub.py").write_text(STUB_TRAINING)
    (tmp_path / "table.py").write_text(table_source)
    log = tmp_path / "table.log"  # (not a pipe: a training left running would hold it open)
    with log.open("w") as stream:
        table = subprocess.Popen([sys.executable, str(tmp_path / "table.py"), str(tmp_path / "stub.py"),
                                  str(tmp_path / "out")], start_new_session=True, stderr=stream)
    child = None
    try:
        deadline = time.monotonic() + 60
        while not (pid_file.is_file() and pid_file.read_text()) and time.monotonic() < deadline:
            assert table.poll() is None, log.read_text()
            time.sleep(0.05)
        child = int(pid_file.read_text())
        table.send_signal(signal.SIGTERM)
        table.wait(timeout=60)
        record_file = pid_file.parent / "metrics.json"  # written by the training as it ended, before the table did
        record = json.loads(record_file.read_text()) if record_file.is_file() else {}
        assert not _alive(child), "the table left its training running"
        return table.returncode, log.read_text(), record
    finally:
        for pid in (table.pid, child):
            if pid is not None and _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_sigterm_reaches_the_training_and_the_table_waits_for_it(tmp_path):
    pid_file = tmp_path / "out" / "small" / "mnist" / "vae" / "seed1" / "train" / "pid"
    code, stderr, record = stop_a_table(tmp_path, TABLE, pid_file)
    assert code == 143 and record.get("status") == "terminated", stderr
    assert "SIGTERM: passed on to the 1 run(s)" in stderr and "Run the same command again" in stderr
