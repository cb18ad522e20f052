#!/usr/bin/env python
"""Open vaelab's TensorBoard dashboard in a real (headless) browser and check what a person would see.

    python scripts/check_dashboard.py             # trains vae, beta_vae, ae (3 epochs each) and a 2-D VAE
    python scripts/check_dashboard.py --runs logs/train/multiruns/<time>   # or looks at runs you already have
    python scripts/check_dashboard.py --out docs/dashboard     # and keeps a screenshot of each tab there

It starts TensorBoard on a free port of 127.0.0.1 (never on another interface), drives a headless Chromium through
puppeteer-core from a small Node script it writes next to the npm packages, and opens each tab vaelab fills: Time
Series (scalars, histograms), Scalars, Images, Histograms, HParams, Text and Projector, and each image view on its
own (Time Series filtered to one tag: the runs side by side). A tab fails on a console error or an uncaught page
error, a failed request to TensorBoard, an image that did not load, TensorBoard's "No … data was found" message, or
no content of its kind. Each tab's screenshot is saved into --out (as a 256-colour PNG: under 300 kB).

The browser, the server and what makes a tab fail are shared with scripts/check_mlflow.py (scripts/browser_check.py).
Needs Node and the two npm packages, installed outside the repository (the first ships a Chromium build):

    npm install --prefix /tmp/dashcheck @sparticuz/chromium puppeteer-core

Exit status: 0 when every tab passed, 1 when one failed, and 0 with a line starting "skipped:" when Node, the npm
packages or Chromium are missing (so a CI without them passes; --require-browser makes that exit 2 instead). The test
suite does not run it.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parent))  # (scripts/: the shared browser check)
from browser_check import (  # noqa: E402  (the names the tests and other scripts use from here, too)
    BrowserUnavailable,
    Tab,
    TabResult,
    add_browser_arguments,
    check_pages,
    free_port,
    missing_prerequisites,
    problems_of,
    select_tabs,
    serve,
    shrink_png,
    skip,
    summary,
    train,
)

__all__ = ["BrowserUnavailable", "Tab", "TabResult", "free_port", "missing_prerequisites", "problems_of",
           "shrink_png", "summary", "TABS", "main"]


def time_series(name: str, tag: str, kind: str, selector: str, at_least: int = 1) -> Tab:
    """The Time Series tab filtered to the tags matching ``tag`` (a regex) and one kind (Scalars, Image, Histogram),
    its settings pane closed so that three cards fit in a row."""
    return Tab(name, f"/?tagFilter={quote(tag, safe='')}#timeseries", selector, at_least, click=kind, close_pane=True)


TABS = (
    time_series("timeseries_scalars", "val/", "Scalars", "canvas, svg path.line, line-chart", at_least=3),
    time_series("timeseries_histograms", "val/(mu|logvar)$", "Histogram", "histogram-component, tb-histogram, svg"),
    Tab("scalars", "/#scalars", "tf-scalar-card, vz-line-chart2, canvas"),
    Tab("images", "/#images", "img", at_least=3),
    Tab("histograms", "/#histograms", "tf-histogram-loader, vz-histogram-timeseries, svg"),
    Tab("hparams", "/#hparams", "tf-hparams-table-view, vaadin-grid, table, tr", text="model"),
    Tab("text", "/#text", "tf-text-loader, .text, table, p"),
    Tab("text_collapse", "/#text&tagFilter=collapse", "tf-text-loader", text="Posterior collapse"),  # the β-VAE's
    Tab("projector", "/#projector", "canvas", text="Points", wait_s=10.0),
    # each image view, the runs side by side (healthy VAE, collapsed β-VAE, AE): the README's screenshots
    time_series("view_reconstructions", "val/reconstructions", "Image", "img", at_least=3),
    time_series("view_samples", "val/samples", "Image", "img", at_least=2),
    time_series("view_traversal", "val/traversal", "Image", "img", at_least=3),
    time_series("view_interpolations", "val/interpolations", "Image", "img", at_least=3),
    time_series("view_latent_space", "val/latent_space", "Image", "img", at_least=3),
    time_series("view_kl_per_dim", "val/kl_per_dim", "Image", "img", at_least=2),
    time_series("view_manifold", "val/manifold", "Image", "img", at_least=1),  # the 2-D run's
    # the views of the newer families: JointVAE's walk of its discrete code, the Ladder VAE's samples and traversal
    # per latent layer (the conditional VAE's one row per class is among view_samples)
    time_series("view_traversal_discrete", "val/traversal_discrete", "Image", "img", at_least=1),
    time_series("view_layer_samples", "val/layer_samples", "Image", "img", at_least=1),
    time_series("view_layer_traversal", "val/layer_traversal", "Image", "img", at_least=1),
)


#: TensorBoard's own "nothing here" messages (and the projector's empty PCA)
EMPTY_STATE = r"No [a-z ]*data was found\.?|No dashboards are active[^.]*\.?|variance described: NaN%"


def train_sweep(folder: Path, epochs: int, log_file: Path) -> Path:
    """Train one small run of each model (vae, beta_vae, ae) into ``folder``, and next to them a VAE with a 2-D code
    (for the manifold), a conditional VAE (samples by class), a JointVAE (the discrete traversal) and a Ladder VAE
    with the layer views; return the folder. What training prints goes to ``log_file``."""
    common = [f"trainer.max_epochs={epochs}", "+trainer.enable_progress_bar=false"]
    train([
        ["-m", "model=vae,beta_vae,ae", f"hydra.sweep.dir={folder}", *common],
        ["model=vae", "model.latent_dim=2", f"hydra.run.dir={folder / '3_vae_latent_dim_2'}", *common],
        ["model=cvae", f"hydra.run.dir={folder / '4_cvae'}", *common],
        ["model=joint_vae", f"hydra.run.dir={folder / '5_joint_vae'}", *common],
        ["model=hvae", "callbacks=[default,layers]", f"hydra.run.dir={folder / '6_hvae'}", *common],
    ], log_file)
    return folder


def tensorboard(logdir: Path, port: int, log_file: Path):
    """TensorBoard on 127.0.0.1:``port`` over ``logdir`` until the block ends; ready once it serves the runs (and
    five more seconds to read every run's files)."""
    command = [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", "127.0.0.1",
               "--port", str(port), "--reload_interval", "2", "--load_fast", "false"]

    def ready(base: str) -> bool:
        with urllib.request.urlopen(f"{base}/data/runs", timeout=5) as response:
            if not json.load(response):
                return False
        time.sleep(5)
        return True

    return serve(command, ready, port, log_file, "TensorBoard", timeout_s=90)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, help="a folder of runs (a multirun, or logs/); default: train a sweep")
    parser.add_argument("--tabs", help="comma-separated subset of: " + ",".join(t.name for t in TABS))
    add_browser_arguments(parser)
    args = parser.parse_args(argv)

    reason = missing_prerequisites(args.node, args.prefix)
    if reason is not None:
        return skip(args, reason)
    try:
        tabs = select_tabs(TABS, args.tabs)
    except ValueError as error:
        parser.error(str(error))

    work = Path(tempfile.mkdtemp(prefix="vaelab-dashcheck-"))
    out = args.out or work / "screenshots"
    out.mkdir(parents=True, exist_ok=True)
    runs = args.runs or train_sweep(work / "sweep", args.epochs, work / "train.log")
    if not runs.is_dir():
        parser.error(f"--runs {runs} is not a folder")
    return check_pages(args, tensorboard(runs.resolve(), free_port(), work / "tensorboard.log"), str(runs), tabs, out,
                       work, EMPTY_STATE, "vaelab_check_dashboard.mjs")


if __name__ == "__main__":
    sys.exit(main())
