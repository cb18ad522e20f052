"""The sweep summary (vaelab.reports.sweep and its command line scripts/summarize_sweep.py) on hand-written multirun
folders (no training involved)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from vaelab.reports import sweep as sweep_report

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / "scripts" / "summarize_sweep.py"

BETAS = {"0": "0.5", "1": "1", "2": "4"}  # completed beta-VAE jobs
FAILED_ERROR = "ValueError: loss is nan"


def vae_metrics(beta: float, recon: float, kl: float, *, active_units: float | None = None) -> dict:
    """A metrics.json record of a completed VAE job (test numbers slightly off the val ones)."""
    record: dict = {"status": "completed", "epochs": 20, "global_step": 420, "seconds": 10.9}
    for split, shift in (("train", 0.3), ("val", 0.0), ("test", 0.1)):
        r, k = recon + shift, kl + shift / 2
        record[split] = {
            f"{split}/loss": r + beta * k,
            f"{split}/recon": r,
            f"{split}/kl": k,
            f"{split}/elbo": -(r + k),
            f"{split}/beta": beta,
        }
    if active_units is not None:
        record["test"]["test/active_units"] = active_units
    # the best checkpoint: an epoch before the last, half a nat better
    record["best"] = {"monitor": "val/elbo", "score": record["val"]["val/elbo"] + 0.5}
    return record


def write_job(sweep: Path, name: str, overrides: list[str], record: dict | str | None) -> Path:
    """A job folder: .hydra/overrides.yaml (a YAML list) and, unless None, metrics.json (text if a str)."""
    job = sweep / name
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    (job / ".hydra" / "config.yaml").write_text("seed: 0\n")
    if record is not None:
        if not isinstance(record, str):
            record = json.dumps({**record, "overrides": overrides}, indent=2)
        (job / "metrics.json").write_text(record)
    return job


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """Six jobs: 3 completed beta-VAE (beta 0.5/1/4), 1 failed, 1 without metrics.json, 1 autoencoder;
    ``data=digits`` in all of them. Job 10 (the AE) checks the numeric sort (10 after 2..5)."""
    sweep = tmp_path / "2026-11-25_12-00-00"
    sweep.mkdir()
    (sweep / "multirun.yaml").write_text("hydra:\n  mode: MULTIRUN\n")
    for i, (name, beta) in enumerate(BETAS.items()):
        record = vae_metrics(
            float(beta), recon=30.0 - 5 * i, kl=5.0 + 6 * i, active_units=3.0 if i == 2 else None
        )
        write_job(sweep, name, ["model=beta_vae", f"model.beta={beta}", "data=digits"], record)
    write_job(
        sweep,
        "3",
        ["model=beta_vae", "model.beta=8", "data=digits"],
        {"status": "failed", "error": FAILED_ERROR, "seconds": 1.0},
    )
    write_job(sweep, "4", ["model=beta_vae", "model.beta=16", "data=digits"], None)
    ae = {
        "status": "completed",
        "val": {"val/loss": 21.0, "val/recon": 21.0, "val/active_units": 7.0},
        "test": {"test/loss": 21.5, "test/recon": 21.5},
    }
    write_job(sweep, "10", ["model=ae", "data=digits"], ae)
    return sweep


def run_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT.relative_to(REPO_ROOT)), *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def read_metrics(sweep: Path, job: str) -> dict:
    return json.loads((sweep / job / "metrics.json").read_text())


@pytest.fixture(scope="module")
def script() -> ModuleType:
    """The sweep summary's logic, imported from the package (the script is a thin command line over it)."""
    return sweep_report


def test_cli_writes_csv_md_png_and_reports_failures(sweep: Path) -> None:
    result = run_script(str(sweep))
    assert result.returncode == 0, result.stderr
    rows = read_rows(sweep / "summary.csv")

    assert [r["job"] for r in rows] == ["0", "1", "2", "3", "4", "10"]
    assert "model.beta" in rows[0] and "model" in rows[0]
    assert "data" not in rows[0]
    assert list(rows[0])[:3] == ["job", "model", "model.beta"]
    assert list(rows[0])[-1] == "status"
    assert [r["model.beta"] for r in rows] == ["0.5", "1", "4", "8", "16", ""]
    assert [r["status"] for r in rows] == [
        "completed",
        "completed",
        "completed",
        "failed",
        "failed (no metrics.json)",
        "completed",
    ]
    for line in (f"job 3 failed: {FAILED_ERROR}", "job 4 failed (no metrics.json)"):
        assert line in result.stderr

    md = (sweep / "summary.md").read_text()
    assert md.splitlines()[0].startswith(f"Sweep `{sweep}`: 6 jobs, 4 completed, 2 failed")
    assert "| job | model | model.beta | val_neg_elbo |" in md
    assert md in result.stdout  # the table is printed too
    for name in ("summary.csv", "summary.md", "rate_distortion.png"):
        assert str(sweep / name) in result.stdout

    png = (sweep / "rate_distortion.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(png) > 10_000


def test_neg_elbo_and_metric_columns_match_metrics_json(sweep: Path, script: ModuleType) -> None:
    assert script.main([str(sweep)]) == 0
    rows = {r["job"]: r for r in read_rows(sweep / "summary.csv")}
    for job in BETAS:
        record = read_metrics(sweep, job)
        row = rows[job]
        assert float(row["val_neg_elbo"]) == -record["val"]["val/elbo"]  # full precision in the csv
        assert float(row["best_val_neg_elbo"]) == -record["best"]["score"] == float(row["val_neg_elbo"]) - 0.5
        assert float(row["test_neg_elbo"]) == -record["test"]["test/elbo"]
        assert float(row["val_neg_elbo"]) > 0
        assert float(row["val_recon"]) == record["val"]["val/recon"]
        assert float(row["val_kl"]) == record["val"]["val/kl"]
        assert float(row["test_recon"]) == record["test"]["test/recon"]
        assert float(row["test_kl"]) == record["test"]["test/kl"]
    assert [rows[j]["active_units"] for j in ("0", "1", "2")] == ["", "", "3"]  # a count: written as an integer
    ae = rows["10"]  # an autoencoder: recon but no kl/elbo; active units from val when test has none
    assert (ae["val_recon"], ae["test_recon"], ae["active_units"]) == ("21.0", "21.5", "7")
    assert ae["val_kl"] == ae["test_kl"] == ae["val_neg_elbo"] == ae["test_neg_elbo"] == ae["best_val_neg_elbo"] == ""
    failed = rows["3"]
    assert all(failed[c] == "" for c in script.METRIC_COLUMNS)


def test_markdown_uses_two_decimals_and_dash_for_missing(sweep: Path, script: ModuleType) -> None:
    assert script.main([str(sweep)]) == 0
    lines = (sweep / "summary.md").read_text().splitlines()
    table = [line for line in lines if line.startswith("|")]
    assert len(table) == 2 + 6  # header, separator, one row per job
    cells = {row.split("|")[1].strip(): [c.strip() for c in row.split("|")[1:-1]] for row in table[2:]}
    record = read_metrics(sweep, "0")
    assert cells["0"][3] == f"{-record['val']['val/elbo']:.2f}"
    assert cells["10"][1:4] == ["ae", "–", "–"]
    assert cells["4"][-1] == "failed (no metrics.json)"


def test_unreadable_metrics_json_and_other_statuses(tmp_path: Path, script: ModuleType) -> None:
    sweep = tmp_path / "sweep"
    write_job(sweep, "0", ["model.beta=1"], vae_metrics(1.0, 30.0, 5.0))
    write_job(sweep, "1", ["model.beta=2"], "{not json")
    write_job(sweep, "2", ["model.beta=3"], {"status": "interrupted"})
    assert script.main([str(sweep)]) == 0
    assert [r["status"] for r in read_rows(sweep / "summary.csv")] == [
        "completed",
        "failed (unreadable metrics.json)",
        "interrupted",
    ]
    header = (sweep / "summary.md").read_text().splitlines()[0]
    assert header.endswith("3 jobs, 1 completed, 1 failed, 1 other (interrupted)")


def test_out_option_writes_elsewhere(sweep: Path, tmp_path: Path) -> None:
    out = tmp_path / "report" / "nested"
    result = run_script(str(sweep), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["rate_distortion.png", "summary.csv", "summary.md"]
    assert not (sweep / "summary.csv").exists()


def test_plot_prefers_test_split_and_labels_points(sweep: Path, script: ModuleType) -> None:
    jobs = [script.load_job(d) for d in script.find_job_dirs(sweep)]
    keys = script.differing_keys(jobs)
    assert keys == ["model", "model.beta"]
    assert script.plot_split(jobs) == "test"
    assert script.point_label(jobs[2], keys) == "model=beta_vae, model.beta=4"
    points = script.plot_points(jobs, "test")
    assert [job.name for job, _, _ in points] == ["0", "1", "2"]  # completed and with kl: not the AE
    assert points[2][1:] == (jobs[2].record["test"]["test/kl"], jobs[2].record["test"]["test/recon"])
    assert script.label_keys(points, keys) == ["model.beta"]  # model=beta_vae in all plotted jobs
    for job in jobs:  # drop the test metrics: the plot falls back to val
        job.record.pop("test", None)
    assert script.plot_split(jobs) == "val"


def test_autoencoders_only_still_writes_png_with_a_note(tmp_path: Path) -> None:
    sweep = tmp_path / "ae_sweep"
    for i, lr in enumerate(("1e-3", "3e-3")):
        record = {"status": "completed", "val": {"val/loss": 20.0 + i, "val/recon": 20.0 + i}}
        write_job(sweep, str(i), ["model=ae", f"model.optimizer.lr={lr}"], record)
    result = run_script(str(sweep))
    assert result.returncode == 0, result.stderr
    assert "no completed job logged KL values" in result.stderr
    png = (sweep / "rate_distortion.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5_000
    rows = read_rows(sweep / "summary.csv")
    assert [r["model.optimizer.lr"] for r in rows] == ["1e-3", "3e-3"]
    assert "model" not in rows[0]  # model=ae in both jobs


def test_exit_code_2_on_missing_or_empty_folder(tmp_path: Path, script: ModuleType) -> None:
    empty = tmp_path / "empty"
    (empty / "not_a_job").mkdir(parents=True)  # a subfolder without .hydra/overrides.yaml
    result = run_script(str(empty))
    assert result.returncode == 2
    assert "no job folder" in result.stderr
    assert not (empty / "summary.csv").exists()
    assert script.main([str(tmp_path / "missing")]) == 2


def test_the_comparability_notes_of_the_jobs_are_listed_under_the_table(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    grey = "The images are grey levels, not binary: a cross-entropy."
    write_job(sweep, "0_model.beta=1", ["model.beta=1"], {**vae_metrics(1.0, 20.0, 3.0), "notes": [grey]})
    write_job(sweep, "1_model.beta=4", ["model.beta=4"], {**vae_metrics(4.0, 25.0, 1.0), "notes": [grey]})
    write_job(sweep, "2_data.binarize=dynamic", ["data.binarize=dynamic"], {**vae_metrics(1.0, 20.0, 3.0),
                                                                            "notes": []})
    sweep_report.summarize(sweep, sweep_report.find_job_dirs(sweep), sweep)
    text = (sweep / "summary.md").read_text()
    assert text.count(grey) == 1 and f"- Note (jobs 0, 1): {grey}" in text
    write_job(sweep, "3_model.beta=2", ["model.beta=2"], {**vae_metrics(2.0, 22.0, 2.0)})  # an older record: none
    sweep_report.summarize(sweep, sweep_report.find_job_dirs(sweep), sweep)
    assert f"- Note (jobs 0, 1): {grey}" in (sweep / "summary.md").read_text()
