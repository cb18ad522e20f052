"""The results table of docs/results.md (vaelab.reports.results) from hand-written run folders: no training involved."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vaelab.reports.results import END, START, Row, render, replace_between_markers


def write(folder: Path, train: dict, evaluation: dict, times: dict) -> None:
    for name, data in (("train/metrics.json", train), ("eval/metrics.json", evaluation), ("times.json", times)):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(json.dumps(data))


def test_a_row_shows_the_runs_numbers_its_times_and_whether_they_are_comparable(tmp_path):
    rows = (Row("vae", ("experiment=x",), published="89.78", source="a paper"), Row("ae", ("experiment=x", "model=ae")),
            Row("missing", ("experiment=y",)))
    write(tmp_path / "vae", {"epochs": 100, "test": {"test/elbo": -90.123, "test/recon": 70.0}},
          {"test": {"test/neg_elbo": 90.2, "test/kl": 20.0, "test/neg_iw_bound": 88.456, "test/iw_k": 5000,
                    "test/active_units": 30,
                    "test/mse": 0.01234}, "notes": []}, {"train_seconds": 1800, "eval_seconds": 600})
    write(tmp_path / "ae", {"epochs": 100, "test": {"test/recon": 60.5, "test/loss": 60.5}},
          {"test": {"test/recon": 60.6, "test/mse": 0.02}, "notes": ["The images are grey levels: ..."]},
          {"train_seconds": 60, "eval_seconds": 6})
    table = render(rows, tmp_path).splitlines()
    header = [c.strip() for c in table[0].strip("|").split("|")]
    cells = [dict(zip(header, (c.strip() for c in line.strip("|").split("|")), strict=True)) for line in table[2:]]
    vae, ae, missing = cells
    assert vae["test −ELBO"] == "90.12" and vae["eval −ELBO"] == "90.20" and vae["−L_K (K)"] == "88.46 (5000)"
    assert vae["train time"] == "30.0 min" and vae["published"] == "89.78" and vae["comparable"] == "yes"
    assert ae["test −ELBO"] == "60.50" and ae["−L_K (K)"] == "–" and ae["comparable"].startswith("n/a")
    assert missing["epochs"] == "–" and missing["comparable"] == "–"


def test_the_table_replaces_only_what_stands_between_the_markers():
    text = f"intro\n{START}\nold table\n{END}\noutro\n"
    assert replace_between_markers(text, "new") == f"intro\n{START}\nnew\n{END}\noutro\n"
    with pytest.raises(ValueError, match="results:start"):
        replace_between_markers("no markers", "new")


RESULTS_TABLE = """
import sys
from pathlib import Path
from vaelab.reports import results
stub, out = sys.argv[1], Path(sys.argv[2])
results.command = lambda script, overrides, run_dir, extra: [sys.executable, stub, f"hydra.run.dir={run_dir}"]
results.run_rows((results.Row("vae", ()),), out, out.parent, None)
"""


def test_sigterm_reaches_the_results_tables_run_and_the_table_waits_for_it(tmp_path):
    """scripts/results_table.py left its training running when it was sent SIGTERM (subprocess.run in the table's
    own process group, which the scheduler's signal to the table's process did not reach)."""
    from test_family_table import stop_a_table

    code, stderr, record = stop_a_table(tmp_path, RESULTS_TABLE, tmp_path / "out" / "vae" / "train" / "pid")
    assert code == 143 and record.get("status") == "terminated", stderr
