"""The pure parts of scripts/check_mlflow.py and of the browser check it shares with check_dashboard.py
(scripts/browser_check.py); the browser check itself needs Node, Chromium and MLflow's server: not run here."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "check_mlflow.py"


def load_script():
    spec = importlib.util.spec_from_file_location("check_mlflow", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["check_mlflow"] = module  # (dataclasses look their module up)
    spec.loader.exec_module(module)
    return module


check = load_script()
import browser_check  # noqa: E402  (scripts/, put on the path by the script)
import check_dashboard  # noqa: E402, F401  (loads: its shared names come from browser_check)


def run(name, run_id, image=True, metric=True):
    return {"id": run_id, "name": name, "metrics": ["val/elbo"] if metric else ["val/loss"],
            "artifacts": ["metrics.json", *([check.IMAGE] if image else [])]}


def test_the_newest_experiment_with_a_run_to_show_is_picked():
    experiments = [
        {"id": "0", "name": "Default", "created": 1, "runs": []},
        {"id": "1", "name": "train", "created": 2, "runs": [run("a", "r1")]},
        {"id": "2", "name": "train/multiruns/s", "created": 3,
         "runs": [run("1_model=beta_vae", "r3"), run("0_model=vae", "r2", image=False)]},
        {"id": "3", "name": "train/multiruns/ae", "created": 4, "runs": [run("0_model=ae", "r4", metric=False)]},
    ]
    target = check.pick_target(experiments)
    # the newest experiment whose runs have the chart and the image (the AE's has no val/elbo); every run is listed,
    # the first that has both is opened
    assert (target.experiment_id, target.experiment_name) == ("2", "train/multiruns/s")
    assert target.run_names == ("0_model=vae", "1_model=beta_vae") and target.run_ids == ("r2", "r3")
    assert (target.run_id, target.run_name) == ("r3", "1_model=beta_vae")
    assert check.pick_target(experiments[:1]) is None


def test_the_pages_are_mlflow_3_routes_with_what_each_must_show():
    target = check.Target("7", "train/multiruns/s", ("0_a", "1_b"), ("r1", "r2"), "r2", "1_b", check.IMAGE)
    tabs = {t.name: t for t in check.pages(target)}
    assert tuple(tabs) == check.PAGE_NAMES
    assert tabs["runs_table"].path == "/#/experiments/7/runs" and tabs["runs_table"].text == "0_a"
    assert tabs["runs_table"].at_least == 3  # a header row and a row per run
    metric = unquote(tabs["metric_chart"].path)
    assert metric.startswith('/#/metric/?runs=["r1", "r2"]&metric="val/elbo"&experiments=["7"]')  # runs= first
    assert tabs["metric_chart"].at_least == 2  # a line per run
    assert tabs["image_artifact"].path == "/#/experiments/7/runs/r2/artifactPath/dashboard/val/reconstructions.png"
    assert unquote(tabs["compare_runs"].path) == '/#/compare-runs?runs=["r1", "r2"]&experiments=["7"]'
    assert all(t.click == "Model training" and t.dismiss for t in tabs.values())
    assert json.dumps([t.__dict__ for t in tabs.values()])  # (what the Node script reads)


def test_mlflows_own_request_for_the_user_is_ignored_and_nothing_else():
    tab = browser_check.Tab("runs_table", "/", "tr")
    raw = {"matches": 3, "console_errors": [
        "Failed to load resource: the server responded with a status of 404 (Not Found) "
        "[http://127.0.0.1:5000/ajax-api/2.0/mlflow/users/current]",
        "Failed to load resource: 404 [http://127.0.0.1:5000/get-artifact?path=x.png]"],
        "failed_requests": ["http://127.0.0.1:5000/ajax-api/2.0/mlflow/users/current HTTP 404"],
        "empty_messages": ["No artifacts recorded"]}
    problems = browser_check.problems_of(raw, tab, "MLflow", check.IGNORE)
    assert problems == ["console error: Failed to load resource: 404 [http://127.0.0.1:5000/get-artifact?path=x.png]",
                        "MLflow says: No artifacts recorded"]
    assert len(browser_check.problems_of(raw, tab, "MLflow")) == 4  # (nothing ignored unless asked)


def test_the_refused_presigned_url_passes_only_where_the_fallback_served_the_image():
    # MLflow 3.18's UI asks a presigned URL first; for a run's files on a path the server answers 501 and the UI
    # fetches /get-artifact instead: accepted only when that fetch of the target's image succeeded on the page
    target = check.pick_target([{"id": "7", "name": "sweep", "created": 2, "runs": [run("a", "r1")]}])
    tab = browser_check.Tab("image_artifact", "/", "img")
    presigned = "http://127.0.0.1:5000/ajax-api/2.0/mlflow/artifacts/presigned-download-url"
    raw = {"matches": 1, "console_errors": [
        f"Failed to load resource: the server responded with a status of 501 (Not Implemented) [{presigned}]"],
        "failed_requests": [f"{presigned} HTTP 501"]}
    served = "http://127.0.0.1:5000/get-artifact?path=dashboard%2Fval%2Freconstructions.png&run_uuid=r1"
    fallbacks = check.fallbacks(target)
    assert browser_check.problems_of({**raw, "ok_requests": [served]}, tab, "MLflow", check.IGNORE, fallbacks) == []
    for ok in ([], [served.replace("r1", "r2")], [served.replace("reconstructions", "samples")]):
        problems = browser_check.problems_of({**raw, "ok_requests": ok}, tab, "MLflow", check.IGNORE, fallbacks)
        assert problems == [f"console error: {raw['console_errors'][0]}", f"request failed: {presigned} HTTP 501"]
    other = {**raw, "ok_requests": [served], "failed_requests": [f"{served} HTTP 500"]}
    problems = browser_check.problems_of(other, tab, "MLflow", check.IGNORE, fallbacks)
    assert problems == [f"request failed: {served} HTTP 500"]


def test_mlflows_empty_states_are_caught_by_the_pattern():
    import re

    pattern = re.compile(check.EMPTY_STATE, re.IGNORECASE)
    for message in ("No runs logged", "No metrics recorded", "No Artifacts Recorded", "Something went wrong",
                    "Run not found"):
        assert pattern.search(message), message
    assert not pattern.search("1 matching run  val/elbo  dashboard/val/reconstructions.png")


def test_without_the_browser_it_skips_with_a_reason_and_exit_0(tmp_path):
    command = [sys.executable, str(SCRIPT), "--node", "/nonexistent/node", "--prefix", str(tmp_path / "none")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.startswith("skipped: "), done.stderr
    assert subprocess.run([*command, "--require-browser"], capture_output=True, timeout=120).returncode == 2


def test_without_mlflow_it_skips_too(tmp_path, monkeypatch, capsys):
    for name in ("puppeteer-core", "@sparticuz/chromium"):
        (tmp_path / "node_modules" / name).mkdir(parents=True)
        (tmp_path / "node_modules" / name / "package.json").write_text("{}")
    monkeypatch.setattr(check, "importlib_missing", lambda name: name == "mlflow")
    arguments = ["--node", sys.executable, "--prefix", str(tmp_path)]
    assert check.main(arguments) == 0
    assert capsys.readouterr().out.startswith("skipped: MLflow is not installed (pip install .[mlflow])")
    assert check.main([*arguments, "--require-browser"]) == 2
