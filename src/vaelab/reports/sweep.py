"""Summarise a Hydra multirun sweep: one table row per job and a rate-distortion plot.

Usage::

    python scripts/summarize_sweep.py logs/train/multiruns/2026-11-25_12-00-00 [--out DIR]

A job is any direct subfolder of the sweep folder with a ``.hydra/overrides.yaml``. Each job's
``metrics.json`` (written by ``vaelab.tasks.train``) gives its status and metrics; a job without a
readable ``metrics.json`` is listed as failed, never left out.

Writes into ``--out`` (default: the sweep folder):

* ``summary.csv`` - full precision, missing values empty;
* ``summary.md`` - a one-line header with the job counts, then a GitHub-markdown table (2 decimals, ``–``
  for missing values), also printed to stdout;
* ``rate_distortion.png`` - KL (rate) against reconstruction (distortion), one labelled point per
  completed job, from the test metrics (the val metrics when the test ones are missing);
* ``disentanglement.png`` - only when jobs logged disentanglement scores (``data=shapes``): MIG and the FactorVAE
  score against β and against the −ELBO, one line per setting of the other differing overrides.

The disentanglement scores (``mig``, ``factor_vae``, ``sap``, ``dci_disentanglement``), the representation scores
(``linear_probe``, ``knn``, ``nmi``) and the sample-quality scores (``fcd``, ``precision``, ``recall``) are columns
only when some job has them, from the test metrics (the best checkpoint's), else the last validation's.

Exit status: 0 when the sweep was summarised (failed jobs included), 2 when the folder does not exist or
holds no job folders.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vaelab.record import COMPLETED, FAILED, RECORD_FILE, STATUS

METRIC_COLUMNS = [
    "val_neg_elbo",
    "best_val_neg_elbo",
    "test_neg_elbo",
    "val_recon",
    "val_kl",
    "test_recon",
    "test_kl",
    "active_units",
]
#: disentanglement scores (``test/mig``, else ``val/mig`` …): a column each when some job logged it
FACTOR_COLUMNS = ["mig", "factor_vae", "sap", "dci_disentanglement"]
#: every score that is a column when some job logged it: disentanglement, representation (is the code a good
#: feature) and sample quality (are the samples good)
SCORE_COLUMNS = [*FACTOR_COLUMNS, "linear_probe", "knn", "nmi", "fcd", "precision", "recall"]
MISSING_MD = "–"
PLOT_NAME = "rate_distortion.png"
FACTOR_PLOT_NAME = "disentanglement.png"


@dataclass
class Job:
    """One job folder of the sweep: its overrides, its metrics.json record and the status shown."""

    name: str
    path: Path
    overrides: dict[str, str] = field(default_factory=dict)
    record: dict[str, Any] = field(default_factory=dict)
    status: str = FAILED

    @property
    def completed(self) -> bool:
        return self.status == COMPLETED

    @property
    def failed(self) -> bool:
        return self.status.startswith(FAILED)

    def metric(self, split: str, name: str) -> float | None:
        """``record[split][f"{split}/{name}"]`` as a float, or None when missing or not a number."""
        values = self.record.get(split)
        if not isinstance(values, dict):
            return None
        value = values.get(f"{split}/{name}")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        return float(value)


def warn(message: str) -> None:
    """One warning line on stderr."""
    print(f"warning: {message}", file=sys.stderr)


def job_sort_key(name: str) -> tuple[int, int, str]:
    """Folders named by job number first (``3``, or ``3_model.beta=4`` as vaelab names them), in numeric order (2
    before 10), then any others by name."""
    number = name.split("_", 1)[0]
    return (0, int(number), name) if number.isdigit() else (1, 0, name)


def find_job_dirs(sweep_dir: Path) -> list[Path]:
    """Direct subfolders holding ``.hydra/overrides.yaml``, sorted by job number."""
    dirs = [p for p in sweep_dir.iterdir() if p.is_dir() and (p / ".hydra" / "overrides.yaml").is_file()]
    return sorted(dirs, key=lambda p: job_sort_key(p.name))


def split_override(override: str) -> tuple[str, str]:
    """``"model.beta=0.5"`` -> ``("model.beta", "0.5")``; ``+key=v`` and ``++key=v`` keep the bare key,
    a deletion ``~key`` gets the value ``"~"``."""
    text = override.strip()
    if text.startswith("~"):
        return text[1:].split("=", 1)[0], "~"
    key, _, value = text.lstrip("+").partition("=")
    return key, value


def parse_overrides(overrides: Any) -> dict[str, str]:
    """A list of override strings as an ordered ``{key: value}`` dict (later duplicates win)."""
    if not isinstance(overrides, list):
        return {}
    return dict(split_override(str(item)) for item in overrides)


def read_overrides(job_dir: Path) -> list[str] | None:
    """The YAML list in ``.hydra/overrides.yaml``, or None when it cannot be read as one."""
    try:
        data = yaml.safe_load((job_dir / ".hydra" / "overrides.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return None
    if data is None:
        return []
    return [str(item) for item in data] if isinstance(data, list) else None


def read_record(job_dir: Path) -> tuple[dict[str, Any], str]:
    """The job's ``metrics.json`` and the status to show: its own status, or why there is none."""
    path = job_dir / RECORD_FILE
    if not path.is_file():
        return {}, "failed (no metrics.json)"
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}, "failed (unreadable metrics.json)"
    if not isinstance(record, dict):
        return {}, "failed (unreadable metrics.json)"
    return record, str(record.get(STATUS) or "unknown")


def load_job(job_dir: Path) -> Job:
    """Read one job folder; the overrides come from ``.hydra`` (else from metrics.json)."""
    record, status = read_record(job_dir)
    overrides = read_overrides(job_dir)
    if overrides is None:
        warn(f"job {job_dir.name}: unreadable .hydra/overrides.yaml, using the overrides in metrics.json")
        overrides = record.get("overrides", [])
    return Job(job_dir.name, job_dir, parse_overrides(overrides), record, status)


def differing_keys(jobs: list[Job]) -> list[str]:
    """Override keys whose value is not the same in every job (absent counts as a value), in first-seen
    order."""
    keys: list[str] = []
    for job in jobs:
        keys.extend(k for k in job.overrides if k not in keys)
    return [k for k in keys if len({job.overrides.get(k) for job in jobs}) > 1]


def neg(value: float | None) -> float | None:
    return None if value is None else -value


def job_row(job: Job, keys: list[str]) -> dict[str, Any]:
    """The table row of one job: job, differing overrides, metrics (None when missing), status.

    ``val_*`` are the last epoch's; ``best_val_neg_elbo`` is the validation −ELBO of the best checkpoint (when
    checkpoints were chosen on ``val/elbo``), the weights that ``test_*`` scored.
    """
    active = job.metric("test", "active_units")
    if active is None:
        active = job.metric("val", "active_units")
    row: dict[str, Any] = {"job": job.name}
    row.update({key: job.overrides.get(key) for key in keys})
    best = job.record.get("best") if isinstance(job.record.get("best"), dict) else {}
    best_score = best.get("score") if best.get("monitor") == "val/elbo" else None
    row.update(
        val_neg_elbo=neg(job.metric("val", "elbo")),
        best_val_neg_elbo=neg(float(best_score)) if isinstance(best_score, (int, float)) else None,
        test_neg_elbo=neg(job.metric("test", "elbo")),
        val_recon=job.metric("val", "recon"),
        val_kl=job.metric("val", "kl"),
        test_recon=job.metric("test", "recon"),
        test_kl=job.metric("test", "kl"),
        active_units=int(active) if isinstance(active, float) and active.is_integer() else active,
    )
    row.update({name: factor_metric(job, name)[0] for name in SCORE_COLUMNS})
    row[STATUS] = job.status
    return row


def factor_metric(job: Job, name: str) -> tuple[float | None, str | None]:
    """A disentanglement score of the job and the split it comes from: ``test/<name>`` (the tested checkpoint's),
    else ``val/<name>`` (the last scored validation epoch's); ``(None, None)`` when it has neither."""
    for split in ("test", "val"):
        value = job.metric(split, name)
        if value is not None:
            return value, split
    return None, None


def csv_cell(value: Any) -> str:
    """Full precision (``repr`` of floats); empty when missing."""
    return "" if value is None else repr(value) if isinstance(value, float) else str(value)


def md_cell(value: Any) -> str:
    """Floats to 2 decimals, ``–`` when missing, ``|`` escaped."""
    if value is None or value == "":
        return MISSING_MD
    text = f"{value:.2f}" if isinstance(value, float) else str(value)
    return text.replace("|", "\\|")


def write_csv(path: Path, columns: list[str], rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows([csv_cell(row[c]) for c in columns] for row in rows)


def header_line(sweep_dir: Path, jobs: list[Job]) -> str:
    """``Sweep `dir`: N jobs, K completed, F failed`` (plus the count of other statuses, if any)."""
    n_completed = sum(job.completed for job in jobs)
    n_failed = sum(job.failed for job in jobs)
    noun = "job" if len(jobs) == 1 else "jobs"
    text = f"Sweep `{sweep_dir}`: {len(jobs)} {noun}, {n_completed} completed, {n_failed} failed"
    others = sorted({job.status for job in jobs if not (job.completed or job.failed)})
    if others:
        n_other = len(jobs) - n_completed - n_failed
        text += f", {n_other} other ({', '.join(others)})"
    return text


def markdown(header: str, columns: list[str], rows: list[dict[str, Any]]) -> str:
    """The header line, a blank line and the GitHub-markdown table."""
    lines = [header, "", "| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(md_cell(row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def plot_split(jobs: list[Job]) -> str | None:
    """``"test"`` when at least as many completed jobs have test KL and recon as val ones, else ``"val"``;
    None when no completed job has both."""
    counts = {
        split: sum(
            j.completed and j.metric(split, "kl") is not None and j.metric(split, "recon") is not None
            for j in jobs
        )
        for split in ("test", "val")
    }
    if counts["test"] and counts["test"] >= counts["val"]:
        return "test"
    return "val" if counts["val"] else None


def point_label(job: Job, keys: list[str]) -> str:
    """The job's overrides for ``keys``, e.g. ``model.beta=4``; ``job N`` when it has none of them."""
    parts = [f"{k}={job.overrides[k]}" for k in keys if k in job.overrides]
    return ", ".join(parts) or f"job {job.name}"


def plot_points(jobs: list[Job], split: str) -> list[tuple[Job, float, float]]:
    """``(job, kl, recon)`` of the completed jobs that logged both on ``split``."""
    points = [(j, j.metric(split, "kl"), j.metric(split, "recon")) for j in jobs if j.completed]
    return [(j, x, y) for j, x, y in points if x is not None and y is not None]


def label_keys(points: list[tuple[Job, float, float]], keys: list[str]) -> list[str]:
    """The override keys that tell the plotted jobs apart (all differing ``keys`` if none does)."""
    return differing_keys([job for job, _, _ in points]) or keys


def write_note(ax: Any, text: str) -> None:
    """A centred note in place of a plot."""
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=12)
    ax.set_xticks([])
    ax.set_yticks([])


def write_plot(path: Path, sweep_dir: Path, jobs: list[Job], keys: list[str]) -> str | None:
    """Rate-distortion scatter; a png holding only a note when no completed job has KL values.
    Returns the split plotted (None for the note)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set_xlabel("rate: KL (nats/image)")
    ax.set_ylabel("distortion: recon (nats/image)")
    split = plot_split(jobs)
    if split is None:
        ax.set_title(f"Rate-distortion: {sweep_dir.name}")
        write_note(ax, "No completed job logged KL values\n(autoencoders only?): nothing to plot")
    else:
        points = plot_points(jobs, split)
        shown = label_keys(points, keys)
        xs = [x for _, x, _ in points]
        middle = (min(xs) + max(xs)) / 2
        ax.scatter(xs, [y for _, _, y in points], s=40, zorder=3)
        ys = [y for _, _, y in points]
        span_x, span_y = (max(xs) - min(xs)) or 1.0, (max(ys) - min(ys)) or 1.0
        placed: list[tuple[float, float]] = []
        for job, x, y in points:  # labels point inwards so they stay inside the axes
            right = x > middle
            # points within 3 % of the axes of an earlier one get their label stacked above it, not on top of it
            crowd = sum(abs(x - px) < 0.03 * span_x and abs(y - py) < 0.03 * span_y for px, py in placed)
            placed.append((x, y))
            ax.annotate(
                point_label(job, shown),
                (x, y),
                xytext=(-6 if right else 6, 6 + 12 * crowd),
                textcoords="offset points",
                ha="right" if right else "left",
                fontsize=9,
            )
        ax.margins(0.15)
        ax.grid(alpha=0.3)
        ax.set_title(f"Rate-distortion on the {split} split: {sweep_dir.name}")
    fig.savefig(path, dpi=120)
    return split


FACTOR_LABELS = {"mig": "MIG", "factor_vae": "FactorVAE score"}
BETA_KEY = "model.beta"


def job_beta(job: Job, split: str) -> float | None:
    """The β the job's loss used: its logged ``<split>/beta`` (the other split's, else the ``model.beta``
    override, when that is missing)."""
    for where in (split, "test", "val"):
        value = job.metric(where, "beta")
        if value is not None:
            return value
    try:
        return float(job.overrides[BETA_KEY])
    except (KeyError, ValueError):
        return None


def factor_points(jobs: list[Job], name: str) -> list[tuple[Job, float, float | None, float | None]]:
    """``(job, score, β, −ELBO)`` of the completed jobs that logged the score ``name``; β and the −ELBO (None when
    missing) come from the split the score does (test, else val)."""
    points = []
    for job in jobs:
        value, split = factor_metric(job, name)
        if job.completed and value is not None:
            points.append((job, value, job_beta(job, split), neg(job.metric(split, "elbo"))))
    return points


def series_label(job: Job, keys: list[str]) -> str:
    """What tells the job's line apart: its values of the differing overrides other than β."""
    return ", ".join(f"{k}={job.overrides.get(k, '–')}" for k in keys) or "all jobs"


def write_factor_plot(path: Path, sweep_dir: Path, jobs: list[Job], keys: list[str]) -> None:
    """MIG and the FactorVAE score (one row each, when logged) against β (log scale) and against the −ELBO, one line
    per setting of the differing overrides other than β (e.g. the objective), each point labelled with its β."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = [name for name in FACTOR_LABELS if factor_points(jobs, name)]
    fig = Figure(figsize=(11, 4 * len(names) + 0.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(names), 2, squeeze=False)
    plotted = [job for name in names for job, *_ in factor_points(jobs, name)]
    others = [k for k in differing_keys(list({id(j): j for j in plotted}.values())) if k != BETA_KEY]
    for row, name in zip(axes, names, strict=True):
        points = factor_points(jobs, name)
        series: dict[str, list[tuple[float, float | None, float | None]]] = {}
        for job, value, beta, neg_elbo in points:
            series.setdefault(series_label(job, others), []).append((value, beta, neg_elbo))
        by_beta, by_elbo = row
        for label, values in series.items():
            with_beta = sorted((b, v) for v, b, _ in values if b is not None)
            line = by_beta.plot([b for b, _ in with_beta], [v for _, v in with_beta], "o-", label=label)[0]
            with_elbo = sorted((e, v, b) for v, b, e in values if e is not None)
            by_elbo.plot([e for e, _, _ in with_elbo], [v for _, v, _ in with_elbo], "o", color=line.get_color(),
                         label=label)
            for e, v, b in with_elbo:
                if b is not None:
                    by_elbo.annotate(f"β={b:g}", (e, v), xytext=(4, 4), textcoords="offset points", fontsize=8)
        betas = sorted({b for _, _, b, _ in points if b is not None})
        if betas and betas[0] > 0:  # (a β of 0 stays on a linear axis)
            by_beta.set_xscale("log", base=2)
            by_beta.set_xticks(betas, [f"{b:g}" for b in betas])
        elif not betas:
            write_note(by_beta, "no job logged β")
        by_beta.set_xlabel("β")
        by_elbo.set_xlabel("−ELBO (nats/image)")
        for ax in row:
            ax.set_ylabel(FACTOR_LABELS[name])
            ax.set_ylim(0, 1.02)
            ax.grid(alpha=0.3)
        if len(series) > 1:
            by_beta.legend(fontsize=8)
        by_beta.set_title(f"{FACTOR_LABELS[name]} against β")
        by_elbo.set_title(f"{FACTOR_LABELS[name]} against the −ELBO")
    fig.suptitle(f"Disentanglement (test split, else the last scored validation): {sweep_dir.name}")
    fig.savefig(path, dpi=110)


def notes_lines(jobs: list[Job]) -> str:
    """The jobs' comparability notes (``metrics.json``'s ``notes``: when their numbers are not log-likelihoods
    comparable with published ones), each once, with the jobs it concerns; empty when there are none."""
    by_note: dict[str, list[str]] = {}
    for job in jobs:
        for note in job.record.get("notes") or []:
            by_note.setdefault(str(note), []).append(job.name.split("_", 1)[0])
    if not by_note:
        return ""
    every = len(jobs)
    lines = [f"- Note ({'every job' if len(names) == every else 'jobs ' + ', '.join(names)}): {note}"
             for note, names in by_note.items()]
    return "\n" + "\n".join(lines) + "\n"


def summarize(sweep_dir: Path, job_dirs: list[Path], out_dir: Path) -> list[Path]:
    """Write summary.csv, summary.md and rate_distortion.png for ``job_dirs``; print the table.
    Returns the paths written."""
    jobs = [load_job(d) for d in job_dirs]
    for job in jobs:
        if job.failed:
            error = job.record.get("error")
            warn(f"job {job.name} {job.status}" + (f": {error}" if error else ""))
        elif not job.completed:
            warn(f"job {job.name} did not complete (status {job.status})")
    keys = differing_keys(jobs)
    rows = [job_row(job, keys) for job in jobs]
    scores = [name for name in SCORE_COLUMNS if any(row[name] is not None for row in rows)]
    columns = ["job", *keys, *METRIC_COLUMNS, *scores, "status"]

    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, md_path, png_path = out_dir / "summary.csv", out_dir / "summary.md", out_dir / PLOT_NAME
    write_csv(csv_path, columns, rows)
    table = markdown(header_line(sweep_dir, jobs), columns, rows) + notes_lines(jobs)
    md_path.write_text(table)
    if write_plot(png_path, sweep_dir, jobs, keys) is None:
        warn(f"no completed job logged KL values (autoencoders only?): {png_path.name} holds only a note")
    written = [csv_path, md_path, png_path]
    if factor_points(jobs, "mig") or factor_points(jobs, "factor_vae"):
        written.append(out_dir / FACTOR_PLOT_NAME)
        write_factor_plot(written[-1], sweep_dir, jobs, keys)
    print(table)
    return written


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", type=Path, help="a Hydra multirun folder (logs/train/multiruns/<time>)")
    parser.add_argument("--out", type=Path, default=None, help="folder to write into (default: sweep_dir)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    args = parse_args(argv)
    sweep_dir: Path = args.sweep_dir
    if not sweep_dir.is_dir():
        print(f"error: sweep folder {sweep_dir} does not exist (or is not a folder)", file=sys.stderr)
        return 2
    job_dirs = find_job_dirs(sweep_dir)
    if not job_dirs:
        print(f"error: no job folder (subfolder with .hydra/overrides.yaml) in {sweep_dir}", file=sys.stderr)
        return 2
    written = summarize(sweep_dir, job_dirs, args.out or sweep_dir)
    for path in written:
        print(f"wrote {path}")
    return 0
