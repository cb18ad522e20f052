"""The table of every family (vaelab.reports.families): every family's overrides compose, and the table reads
hand-written run folders back into mean ± sd (no training here)."""

from __future__ import annotations

import json
import threading
import time

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
    render,
    table_jobs,
    train_overrides,
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
    table = render("small", tmp_path)
    row = next(line for line in table.splitlines() if line.startswith("| vae |"))
    assert "| 2 | 91.00 ± 1.41 |" in row and "0.850 ± 0.071" in row and "1.5 ± 0.7" in row
    assert "| ae |" not in table  # no finished seed: no row
    text = replace_between_markers(f"intro\n{START}\nold\n{END}\nrest", table, START, END)
    assert text.startswith(f"intro\n{START}\nBudget `small`") and text.endswith(f"{END}\nrest")


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
