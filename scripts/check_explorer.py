#!/usr/bin/env python
"""Open vaelab's explorer (``vaelab-explore``) in a real (headless) browser and check what a person would see.

    python scripts/check_explorer.py                       # trains a small VAE on the digits, then checks
    python scripts/check_explorer.py --ckpt logs/train/runs/<run>/checkpoints/last.ckpt
    python scripts/check_explorer.py --out docs/explorer   # and keeps a screenshot of each page there

It serves the explorer (``python -m vaelab.explorer``) on a free port of 127.0.0.1 twice: over the checkpoint (its
data: the latent sliders, the interpolation and the samples, each tab clicked open, which draws it on the server),
and over the same model saved as a model folder (no data: uploads only, said on the page). A page fails on a console
error or an uncaught page error, a failed request to the explorer, an image that did not load, a Gradio "Error"
toast, too few sliders or images, or text that should be there and is not. Each page's screenshot is saved into
--out (a 256-colour PNG).

The browser, the server and what makes a page fail are shared with scripts/check_dashboard.py
(scripts/browser_check.py). Needs Node and the two npm packages, installed outside the repository:

    npm install --prefix /tmp/dashcheck @sparticuz/chromium puppeteer-core

Exit status: 0 when every page passed, 1 when one failed, and 0 with a line starting "skipped:" when Node, the npm
packages or Chromium are missing (2 with --require-browser). The test suite does not run it.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # (scripts/: the shared browser check)
import browser_check  # noqa: E402
from browser_check import (  # noqa: E402
    ROOT,
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

#: the explorer over a checkpoint with its data: each tab opened (the first on load; the others by a click on the
#: tab, which draws their images on the server)
TABS = (
    Tab("sliders", "/", "input[type=range]", at_least=9, text="Latent dimensions", wait_s=3.0),
    Tab("interpolation", "/", ".vaelab-image img", at_least=1, click="Interpolation", text="code(A)", wait_s=3.0),
    Tab("samples", "/", ".vaelab-image img", at_least=1, click="Samples", text="Sample from", wait_s=3.0),
    Tab("reconstruct", "/", "input[type=file], button", at_least=1, click="Reconstruct an upload",
        text="Upload a greyscale image", wait_s=2.0),
)
#: the explorer over a model folder: no data, uploads only, and the page says so
FOLDER_TABS = (
    Tab("uploads_only", "/", "input[type=range]", at_least=4, text="No data set: uploads only", wait_s=3.0),
    Tab("uploads_only_interpolation", "/", "button[role=tab]", at_least=4, click="Interpolation",
        text="B: upload an image", wait_s=2.0),
)
#: Gradio keeps a hidden copy of each tab's button (to measure the tab bar) before the real one (role "tab"): the
#: shared script clicks the first button of a name, so here it clicks a tab first (browser_check.NODE_SCRIPT, patched)
CLICK_BUTTON = "const b = named('button') || named('[role=\"button\"], [role=\"tab\"]');"
CLICK_TAB_FIRST = "const b = named('[role=\"tab\"]') || named('button') || named('[role=\"button\"]');"
#: what Gradio's page always does, not a failure: its client aborts an event's stream (queue/data) once the event's
#: result came (a page that got no result fails on its missing images instead)
IGNORE = r"/gradio_api/queue/data\?session_hash=\w+ net::ERR_ABORTED"
#: what Gradio shows when a handler failed without a message of its own
EMPTY_STATE = r"\bError\b(?! loading)|Connection errored out"


def click_tabs_first() -> None:
    """Make the shared Node script click a tab (``role="tab"``) before a plain button of the same name."""
    if CLICK_BUTTON not in browser_check.NODE_SCRIPT:
        raise RuntimeError("scripts/browser_check.py's NODE_SCRIPT no longer clicks buttons as check_explorer.py "
                           "expects: update CLICK_BUTTON")
    browser_check.NODE_SCRIPT = browser_check.NODE_SCRIPT.replace(CLICK_BUTTON, CLICK_TAB_FIRST)


def train_model(folder: Path, epochs: int, log_file: Path) -> Path:
    """A VAE with an 8-D code on the digits, trained for ``epochs`` into ``folder``; its last checkpoint."""
    train([["model=vae", "model.latent_dim=8", "logger=none", "callbacks=minimal", "test=false",
            f"trainer.max_epochs={epochs}", "+trainer.enable_progress_bar=false", f"hydra.run.dir={folder}"]],
          log_file)
    return folder / "checkpoints" / "last.ckpt"


def save_folder(ckpt: Path, folder: Path) -> Path:
    """The checkpoint's model as a model folder (``save_pretrained``): a model without data."""
    import vaelab

    vaelab.load(ckpt).save_pretrained(folder, license="mit")
    return folder


def explorer(model: Path, port: int, log_file: Path):
    """The explorer on 127.0.0.1:``port`` over ``model`` until the block ends; ready once it serves its page."""
    command = [sys.executable, "-m", "vaelab.explorer", f"ckpt_path={model}", f"port={port}",
               "server_name=127.0.0.1", f"paths.data_dir={ROOT / 'data'}", "gmm.fit_images=1000"]

    def ready(base: str) -> bool:
        with urllib.request.urlopen(f"{base}/", timeout=5) as response:
            return response.status == 200

    env = {**os.environ, "VAELAB_ROOT": str(ROOT), "GRADIO_ANALYTICS_ENABLED": "False"}
    return serve(command, ready, port, log_file, "the explorer", timeout_s=120, env=env)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", type=Path, help="a checkpoint to explore (default: train a small VAE)")
    parser.add_argument("--tabs", help="comma-separated subset of: "
                                       + ",".join(t.name for t in (*TABS, *FOLDER_TABS)))
    add_browser_arguments(parser)
    parser.set_defaults(epochs=10)
    args = parser.parse_args(argv)

    reason = missing_prerequisites(args.node, args.prefix)
    if reason is not None:
        return skip(args, reason)
    try:
        tabs = select_tabs((*TABS, *FOLDER_TABS), args.tabs)
    except ValueError as error:
        parser.error(str(error))

    click_tabs_first()
    work = Path(tempfile.mkdtemp(prefix="vaelab-explorecheck-"))
    out = args.out or work / "screenshots"
    out.mkdir(parents=True, exist_ok=True)
    ckpt = args.ckpt or train_model(work / "run", args.epochs, work / "train.log")
    if not ckpt.is_file():
        parser.error(f"--ckpt {ckpt} is not a file")
    status = 0
    for pages, model in ((TABS, ckpt), (FOLDER_TABS, None)):
        chosen = [t for t in pages if t in tabs]
        if not chosen:
            continue
        model = model or save_folder(ckpt, work / "model_folder")
        server = explorer(model.resolve(), free_port(), work / f"explorer_{model.name}.log")
        status = max(status, check_pages(args, server, str(model), chosen, out, work, EMPTY_STATE,
                                         "vaelab_check_explorer.mjs", app="the explorer", ignore=IGNORE,
                                         noun="pages"))
    return status


if __name__ == "__main__":
    sys.exit(main())
