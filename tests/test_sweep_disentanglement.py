"""The sweep summary's disentanglement columns and plot (vaelab.reports.sweep), on hand-written job folders of a
shapes sweep: β-VAE and β-TC-VAE jobs with ``val/mig`` … and ``test/mig`` … in their metrics.json."""

from __future__ import annotations

from pathlib import Path

from test_summarize_sweep import read_rows, run_script, vae_metrics, write_job

from vaelab.reports import sweep as sweep_report

SCORES = ("mig", "factor_vae", "sap", "dci_disentanglement")


def shapes_record(beta: float, i: int, *, test: bool = True) -> dict:
    """A completed shapes job: the VAE metrics plus disentanglement scores on val (last epoch) and test (best)."""
    record = vae_metrics(beta, recon=40.0 + 5 * i, kl=20.0 - 3 * i)
    for split, shift in (("val", 0.0), ("test", 0.01)):
        record[split].update({f"{split}/{name}": 0.1 * (i + 1) + 0.01 * k + shift for k, name in enumerate(SCORES)})
    if not test:
        del record["test"]
    return record


def shapes_sweep(root: Path) -> Path:
    """Five jobs: β-VAE at β = 1, 4, 16 (β = 16 tested: no, only validated), β-TC-VAE at β = 4, and one failed job."""
    sweep = root / "shapes_sweep"
    jobs = [("shapes_beta_vae", 1, True), ("shapes_beta_vae", 4, True), ("shapes_beta_vae", 16, False),
            ("shapes_beta_tcvae", 4, True)]
    for n, (experiment, beta, tested) in enumerate(jobs):
        write_job(sweep, f"{n}_experiment={experiment},model.beta={beta}",
                  [f"experiment={experiment}", f"model.beta={beta}"], shapes_record(float(beta), n, test=tested))
    write_job(sweep, "4_experiment=shapes_beta_vae,model.beta=8", ["experiment=shapes_beta_vae", "model.beta=8"],
              {"status": "failed", "error": "boom"})
    return sweep


def test_disentanglement_columns_come_from_test_else_val_and_the_plot_is_written(tmp_path: Path) -> None:
    sweep = shapes_sweep(tmp_path)
    out = tmp_path / "report"
    result = run_script(str(sweep), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["disentanglement.png", "rate_distortion.png", "summary.csv",
                                                    "summary.md"]
    rows = read_rows(out / "summary.csv")
    assert list(rows[0]) == ["job", "experiment", "model.beta", *sweep_report.METRIC_COLUMNS, *SCORES, "status"]
    for n, row in enumerate(rows[:4]):
        split = "val" if n == 2 else "test"  # job 2 was not tested: its scores are the last validation's
        record = shapes_record(float(row["model.beta"]), n, test=split == "test")
        for name in SCORES:
            assert float(row[name]) == record[split][f"{split}/{name}"], (n, name)
    assert all(rows[4][name] == "" for name in SCORES)  # the failed job
    md = (out / "summary.md").read_text()
    assert "| mig | factor_vae | sap | dci_disentanglement | status |" in md
    png = (out / "disentanglement.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 20_000
    assert str(out / "disentanglement.png") in result.stdout


def test_factor_points_carry_beta_and_the_elbo_of_the_scores_split(tmp_path: Path) -> None:
    sweep = shapes_sweep(tmp_path)
    jobs = [sweep_report.load_job(d) for d in sweep_report.find_job_dirs(sweep)]
    points = sweep_report.factor_points(jobs, "mig")
    assert [(job.name.split("_")[0], beta) for job, _, beta, _ in points] == [("0", 1.0), ("1", 4.0), ("2", 16.0),
                                                                              ("3", 4.0)]
    for job, value, _, neg_elbo in points:
        value_split = "val" if job.name.startswith("2_") else "test"
        assert value == job.metric(value_split, "mig")
        assert neg_elbo == -job.metric(value_split, "elbo")
    # the lines of the plot: one per objective (the experiment), β left out
    assert {sweep_report.series_label(job, ["experiment"]) for job, *_ in points} == {
        "experiment=shapes_beta_vae", "experiment=shapes_beta_tcvae"}


def test_sweeps_without_scores_get_neither_columns_nor_plot(tmp_path: Path) -> None:
    sweep = tmp_path / "digits"
    for i, beta in enumerate((1, 4)):
        write_job(sweep, str(i), [f"model.beta={beta}"], vae_metrics(float(beta), 30.0, 5.0 + i))
    assert sweep_report.main([str(sweep)]) == 0
    rows = read_rows(sweep / "summary.csv")
    assert not set(SCORES) & set(rows[0])
    assert not (sweep / "disentanglement.png").exists()
