#!/usr/bin/env python
"""Open the runs of ``logger=mlflow`` in MLflow's own UI, in a real (headless) browser, and check what a person sees.

    python scripts/check_mlflow.py                     # trains a 2-job sweep (vae, beta_vae) with logger=mlflow
    python scripts/check_mlflow.py --logs logs         # or looks at a log folder you have (its mlflow.db)
    python scripts/check_mlflow.py --out docs/mlflow   # and keeps a screenshot of each page there

It starts MLflow's server (``mlflow server``, what ``mlflow ui`` runs, with one worker and no job runner) on a free
port of 127.0.0.1 against the SQLite store ``<logs>/mlflow.db``, and opens in a headless Chromium: the runs table of
the newest experiment that has runs (a row per run, the first run's name on it), its runs compared (params and
metrics side by side), the metric chart of its runs (``val/elbo`` against the step, a line per run) and one run's
dashboard image as an artifact (the preview must load). A page fails on a console error or
an uncaught page error, a failed request to MLflow, an image that did not load, MLflow's "nothing here" message,
or missing content (scripts/browser_check.py, shared with check_dashboard.py). Screenshots go into --out as
256-colour PNGs.

Needs MLflow (``pip install .[mlflow]``), Node and two npm packages installed outside the repository:

    npm install --prefix /tmp/dashcheck @sparticuz/chromium puppeteer-core

Exit status: 0 when every page passed, 1 when one failed, and 0 with a line starting "skipped:" when MLflow, Node,
the npm packages or Chromium are missing (--require-browser makes that exit 2). The test suite does not run it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parent))  # (scripts/: the shared browser check)
from browser_check import (  # noqa: E402
    FAILED,
    Tab,
    add_browser_arguments,
    check_pages,
    free_port,
    missing_prerequisites,
    select_tabs,
    serve,
    skip,
    train,
)

#: the metric charted and the image opened
METRIC, IMAGE = "val/elbo", "dashboard/val/reconstructions.png"
#: MLflow's own "nothing here" and error messages
EMPTY_STATE = (r"No runs (?:logged|found|match)[^.]*|No metrics (?:logged|recorded|available)[^.]*|"
               r"No artifacts? (?:recorded|logged|found)[^.]*|Something went wrong[^.]*|Unable to load[^.]*|"
               r"Request failed[^.]*|Experiment not found[^.]*|Run not found[^.]*")
PAGE_NAMES = ("runs_table", "compare_runs", "metric_chart", "image_artifact")
#: what MLflow's UI itself does on every page without the basic-auth app: it asks who the user is
#: (``/ajax-api/2.0/mlflow/users/current``) and gets 404. Not a problem of these runs.
IGNORE = r"/ajax-api/2\.0/mlflow/users/current\b"
#: what MLflow 3.18's UI asks first for a run's artifact whose location is a plain path (vaelab's
#: ``<log dir>/mlflow-artifacts/...``): a presigned cloud-storage URL. The server answers 501 NOT_IMPLEMENTED (the
#: local artifact repository has none: ``_validate_support_presigned_download``) and the UI, by design (it treats
#: 400/404/501/503 so), falls back to the server's own ``/get-artifact``. No server option avoids the first
#: request for such runs, so it is accepted only where the fallback then served the very file (see :func:`fallbacks`).
PRESIGNED = r"/ajax-api/2\.0/mlflow/artifacts/presigned-download-url\b"
#: the pages' common steps: the UI's "Model training" view (not the GenAI one), its assistant's panel closed
MODE, ASSISTANT_CLOSE = "Model training", "button[aria-label='Close']"


@dataclass(frozen=True)
class Target:
    """What the pages show: an experiment (id, name), its runs' names, one run (id, name) and its image."""

    experiment_id: str
    experiment_name: str
    run_names: tuple[str, ...]
    run_ids: tuple[str, ...]
    run_id: str
    run_name: str
    image: str


# --------------------------------------------------------------------------- the pure parts (unit-tested)
def pick_target(experiments: list[dict], image: str = IMAGE) -> Target | None:
    """The experiment to look at, from ``[{"id", "name", "created", "runs": [{"id", "name", "artifacts": [...],
    "metrics": [...]}]}]``: the newest one whose runs include one with ``image`` among its artifacts and the
    charted metric; in it, the first such run (by name). None when there is none."""
    for experiment in sorted(experiments, key=lambda e: e.get("created", 0), reverse=True):
        runs = sorted(experiment.get("runs", []), key=lambda r: r["name"])
        shown = [r for r in runs if image in r.get("artifacts", ()) and METRIC in r.get("metrics", ())]
        if shown:
            run = shown[0]
            return Target(str(experiment["id"]), experiment["name"], tuple(r["name"] for r in runs),
                          tuple(r["id"] for r in runs), run["id"], run["name"], image)
    return None


def pages(target: Target) -> tuple[Tab, ...]:
    """The pages to open (routes of MLflow 3's UI): the experiment's runs table, its runs compared (params and
    metrics side by side), the metric chart of its runs, and one run's artifact view with the image selected."""
    experiment, run = quote(target.experiment_id), quote(target.run_id)
    all_runs = quote(json.dumps(list(target.run_ids)), safe="")
    experiments = quote(json.dumps([target.experiment_id]), safe="")
    metric = quote(json.dumps(METRIC), safe="")
    common = {"click": MODE, "dismiss": ASSISTANT_CLOSE, "wait_s": 6.0}
    return (
        # the table lists every run by name; the first one's must be visible
        Tab("runs_table", f"/#/experiments/{experiment}/runs", "[role='row'], tr, .ag-row",
            at_least=len(target.run_names) + 1, text=sorted(target.run_names)[0], **common),
        # the runs side by side: their params (the HParams columns) and metrics, rows of a table
        Tab("compare_runs", f"/#/compare-runs?runs={all_runs}&experiments={experiments}", "tr, [role='row']",
            at_least=4, text="model.latent_dim", **common),
        # the metric page (runs= first: the UI reads it with the "?"): val/elbo against the step, a line per run
        Tab("metric_chart", f"/#/metric/?runs={all_runs}&metric={metric}&experiments={experiments}"
                            f"&plot_metric_keys={quote(json.dumps([METRIC]), safe='')}&x_axis=step",
            ".js-plotly-plot .scatterlayer .trace", at_least=len(target.run_ids), text=METRIC, **common),
        # the run's artifacts with the PNG selected: its preview (a blob: image the UI fetched) must load
        Tab("image_artifact", f"/#/experiments/{experiment}/runs/{run}/artifactPath/{target.image}",
            "img[src^='blob:']", text=Path(target.image).name, **common),
    )


def fallbacks(target: Target) -> tuple[tuple[str, str], ...]:
    """The refused request and the fallback that must have succeeded instead (browser_check.problems_of): the
    presigned URL, and ``/get-artifact`` of the target run's image."""
    served = rf"/get-artifact\?path={re.escape(quote(target.image, safe=''))}&run_uuid={re.escape(target.run_id)}\b"
    return ((PRESIGNED, served),)


# --------------------------------------------------------------------------- the store, the runs, the server
def read_store(logs: Path) -> list[dict]:
    """Every experiment of ``<logs>/mlflow.db`` with its runs' names, metric keys and artifact paths."""
    from mlflow.tracking import MlflowClient

    from vaelab.loggers.mlflow import sqlite_uri

    client = MlflowClient(sqlite_uri(logs))

    def files(run_id: str, path: str | None = None) -> list[str]:
        out = []
        for item in client.list_artifacts(run_id, path):
            out += files(run_id, item.path) if item.is_dir else [item.path]
        return out

    experiments = []
    for experiment in client.search_experiments():
        runs = [{"id": r.info.run_id, "name": r.info.run_name, "metrics": sorted(r.data.metrics),
                 "artifacts": files(r.info.run_id)} for r in client.search_runs([experiment.experiment_id])]
        experiments.append({"id": experiment.experiment_id, "name": experiment.name,
                            "created": experiment.creation_time or 0, "runs": runs})
    return experiments


def train_sweep(logs: Path, epochs: int, log_file: Path) -> Path:
    """A 2-job sweep (vae, beta_vae) with ``logger=mlflow`` and every dashboard view, into ``logs``."""
    train([["-m", "model=vae,beta_vae", "logger=mlflow", f"trainer.max_epochs={epochs}",
            "+trainer.enable_progress_bar=false", f"paths.log_dir={logs}"]], log_file)
    return logs


def mlflow_server(logs: Path, port: int, log_file: Path):
    """MLflow's tracking server and UI on 127.0.0.1:``port`` over ``<logs>/mlflow.db`` (one worker, no job
    runner: nothing but the UI); ready once ``/health`` answers."""
    from vaelab.loggers.mlflow import sqlite_uri

    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", sqlite_uri(logs), "--host",
               "127.0.0.1", "--port", str(port), "--workers", "1"]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}

    def ready(base: str) -> bool:
        with urllib.request.urlopen(f"{base}/health", timeout=5) as response:
            if response.status != 200:
                return False
        # one search first, alone: it imports mlflow.server.auth, which MLflow 3.18's assistant routes read from
        # sys.modules; the browser's first requests at once otherwise race that import and get 500s
        search = urllib.request.Request(f"{base}/api/2.0/mlflow/runs/search", method="POST",
                                        data=json.dumps({"experiment_ids": ["0"], "max_results": 1}).encode(),
                                        headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(search, timeout=30) as response:
            return response.status == 200

    return serve(command, ready, port, log_file, "MLflow's server", timeout_s=180, env=env)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--logs", type=Path, help="a log folder holding mlflow.db; default: train a sweep")
    parser.add_argument("--pages", help="comma-separated subset of: " + ",".join(PAGE_NAMES))
    add_browser_arguments(parser)
    args = parser.parse_args(argv)

    reason = missing_prerequisites(args.node, args.prefix)
    if reason is None and importlib_missing("mlflow"):
        reason = "MLflow is not installed (pip install .[mlflow])"
    if reason is not None:
        return skip(args, reason)

    work = Path(tempfile.mkdtemp(prefix="vaelab-mlflowcheck-"))
    out = args.out or work / "screenshots"
    out.mkdir(parents=True, exist_ok=True)
    logs = args.logs or train_sweep(work / "logs", args.epochs, work / "train.log")
    if not (logs / "mlflow.db").is_file():
        parser.error(f"--logs {logs} holds no mlflow.db (train with logger=mlflow and paths.log_dir={logs})")
    target = pick_target(read_store(logs))
    if target is None:
        print(f"{FAILED}: no run in {logs / 'mlflow.db'} has the metric {METRIC} and the artifact {IMAGE}")
        return 1
    try:
        tabs = select_tabs(pages(target), args.pages)
    except ValueError as error:
        parser.error(str(error))
    print(f"experiment {target.experiment_name!r} ({len(target.run_names)} runs); run {target.run_name!r}",
          flush=True)
    return check_pages(args, mlflow_server(logs.resolve(), free_port(), work / "mlflow.log"), str(logs / "mlflow.db"),
                       tabs, out, work, EMPTY_STATE, "vaelab_check_mlflow.mjs", app="MLflow", ignore=IGNORE,
                       noun="pages", fallbacks=fallbacks(target))


def importlib_missing(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is None


if __name__ == "__main__":
    sys.exit(main())
