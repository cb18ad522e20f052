"""The results table on real data (docs/results.md): each row one ``experiment=`` config, trained, evaluated and
compared with the published figure it stands next to.

:data:`ROWS` says what each row runs. :func:`run_row` trains it with ``src/train.py`` and evaluates the tested
checkpoint with ``src/eval.py`` (each in its own process, timed), into ``<out>/<row key>/{train,eval}``;
:func:`render` reads those folders back into a markdown table, and :func:`replace_between_markers` writes it into
docs/results.md between ``<!-- results:start -->`` and ``<!-- results:end -->``, so the table never drifts from the code
that made it. ``scripts/results_table.py`` is the command line.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vaelab.record import RECORD_FILE
from vaelab.reports.processes import Runs, signals_passed_on

START, END = "<!-- results:start -->", "<!-- results:end -->"


@dataclass(frozen=True)
class Row:
    """One row: what to train and evaluate, and what to compare the result with."""

    key: str
    train: tuple[str, ...]  # the overrides of src/train.py (an experiment= first)
    evaluate: tuple[str, ...] = ("protocol=iwae5000",)  # the overrides of src/eval.py
    published: str = "–"  # the figure it is compared with, and what it measures
    source: str = "–"


ROWS: tuple[Row, ...] = (
    Row("replica", ("experiment=mnist_vae_reference",), ("iw_k=100",),
        "≈105.5 (−ELBO, grey levels)", "PyTorch examples, vae/main.py"),
    Row("conv", ("experiment=mnist_conv_vae",), ("iw_k=100",),
        "beats the replica at equal epochs", "the replica row"),
    Row("binarized_vae", ("experiment=mnist_binarized_vae",), ("protocol=iwae5000",),
        "89.78 (−L_5000, VAE)", "pythae benchmark (Chadebec et al. 2022)"),
    Row("binarized_beta2", ("experiment=mnist_binarized_vae", "model=beta_vae", "model.beta=2",
                            "trainer.max_epochs=20"), ("iw_k=100",), "–", "–"),
    Row("binarized_beta4", ("experiment=mnist_binarized_vae", "model=beta_vae", "model.beta=4",
                            "trainer.max_epochs=20"), ("iw_k=100",), "–", "–"),
    Row("binarized_vae20", ("experiment=mnist_binarized_vae", "trainer.max_epochs=20"), ("iw_k=100",),
        "β = 1 at the β rows' length", "–"),
    Row("binarized_ae", ("experiment=mnist_binarized_vae", "model=ae", "trainer.max_epochs=20"), ("iw_k=0",),
        "–", "–"),
)


def command(script: str, overrides: tuple[str, ...], run_dir: Path, extra: list[str]) -> list[str]:
    return [sys.executable, script, *overrides, *extra, f"hydra.run.dir={run_dir}"]


#: the table's running processes (a signal sent to the table reaches them: :mod:`vaelab.reports.processes`)
RUNS = Runs()


def run(cmd: list[str], cwd: Path) -> float:
    """Run ``cmd`` in a process group of its own (its output goes to the terminal); the wall time in seconds. A
    failure stops the table."""
    return RUNS.run(cmd, cwd)


def run_rows(rows: tuple[Row, ...], out: Path, root: Path, data_dir: str | None) -> None:
    """Train and evaluate each of ``rows`` (:func:`run_row`), one after the other. SIGTERM, SIGINT or SIGHUP sent to
    the table is passed on to the run going, and the table stops once it has ended (exit code 128 + the signal)."""
    with signals_passed_on(RUNS):
        for row in rows:
            run_row(row, out, root, data_dir)


def run_row(row: Row, out: Path, root: Path, data_dir: str | None) -> None:
    """Train and evaluate ``row`` into ``out/<key>/``; the wall times go to ``out/<key>/times.json``."""
    extra = [f"data.data_dir={data_dir}"] if data_dir else []
    folder = out / row.key
    times = {"train_seconds": run(command("src/train.py", row.train, folder / "train", extra), root)}
    record = json.loads((folder / "train" / RECORD_FILE).read_text())
    ckpt = record.get("test_ckpt") or record.get("last_ckpt")
    if not ckpt or not Path(ckpt).is_file():
        ckpt = record.get("last_ckpt")
    eval_extra = [f"+data.data_dir={data_dir}"] if data_dir else []
    times["eval_seconds"] = run(command("src/eval.py", (f"ckpt_path={ckpt}", *row.evaluate), folder / "eval",
                                        eval_extra), root)
    (folder / "times.json").write_text(json.dumps(times, indent=2) + "\n")


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _minutes(seconds: float | None) -> str:
    return "–" if seconds is None else f"{seconds / 60:.1f} min"


def row_cells(row: Row, folder: Path) -> dict[str, str]:
    """The table cells of one finished row (dashes where its files are missing)."""
    def read(path: Path) -> dict[str, Any]:
        return json.loads(path.read_text()) if path.is_file() else {}

    train, evaluation, times = (read(folder / "train" / RECORD_FILE), read(folder / "eval" / RECORD_FILE),
                                read(folder / "times.json"))
    test = train.get("test", {})
    scores = evaluation.get("test", {})
    neg_elbo = None if "test/elbo" not in test else -test["test/elbo"]
    k = scores.get("test/iw_k")
    ae = bool(scores) and scores.get("test/kl") is None  # (eval.py's record: an AE has no KL)
    return {
        "row": row.key,
        "command": "`python src/train.py " + " ".join(row.train) + "`",
        "epochs": _fmt(train.get("epochs")),
        "train time": _minutes(times.get("train_seconds")),
        "test −ELBO": _fmt(test.get("test/recon") if ae else neg_elbo),
        "eval −ELBO": _fmt(scores.get("test/recon") if ae else scores.get("test/neg_elbo")),
        "−L_K (K)": "–" if k is None else f"{_fmt(scores.get('test/neg_iw_bound'))} ({k})",
        "eval time": _minutes(times.get("eval_seconds")),
        "active units": _fmt(scores.get("test/active_units")),
        "MSE": _fmt(scores.get("test/mse"), 4),
        "published": row.published,
        "source": row.source,
        "comparable": "n/a: an AE has no likelihood (recon is its error)" if ae and evaluation else
        "no: " + "; ".join(n.split(":")[0] for n in evaluation.get("notes", [])) if evaluation.get("notes") else
        ("yes" if evaluation else "–"),
    }


def render(rows: tuple[Row, ...], out: Path) -> str:
    """The markdown table of every row in ``rows`` from what ``out`` holds."""
    cells = [row_cells(row, out / row.key) for row in rows]
    columns = list(cells[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(c[col] for col in columns) + " |" for c in cells]
    return "\n".join(lines)


def replace_between_markers(text: str, table: str, start: str = START, end: str = END) -> str:
    """``text`` with whatever stood between the markers ``start`` and ``end`` replaced by ``table``."""
    if start not in text or end not in text or text.index(start) > text.index(end):
        raise ValueError(f"the file has no {start} … {end} block to write the table into")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{table}\n{end}{tail}"
