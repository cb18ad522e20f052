"""The pure parts of scripts/check_dashboard.py (the browser check itself needs Node and Chromium: not run here)."""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "check_dashboard.py"


def load_script():
    spec = importlib.util.spec_from_file_location("check_dashboard", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["check_dashboard"] = module  # (dataclasses look their module up)
    spec.loader.exec_module(module)
    return module


check = load_script()


def test_without_node_or_the_npm_packages_it_skips_with_a_reason_and_exit_0(tmp_path):
    assert check.missing_prerequisites(None, tmp_path).startswith("node not found")
    node = tmp_path / "node"
    assert "--node" in check.missing_prerequisites(str(node), tmp_path)  # not there
    node.write_text("#!/bin/sh\n")
    assert "not an executable" in check.missing_prerequisites(str(node), tmp_path)
    node.chmod(0o755)
    reason = check.missing_prerequisites(str(node), tmp_path)
    assert "puppeteer-core and @sparticuz/chromium not installed" in reason and "npm install --prefix" in reason
    for name in ("puppeteer-core", "@sparticuz/chromium"):
        (tmp_path / "node_modules" / name).mkdir(parents=True)
        (tmp_path / "node_modules" / name / "package.json").write_text("{}")
    assert check.missing_prerequisites(str(node), tmp_path) is None

    # the command line: nothing is trained or started, a clear line, exit 0 (2 with --require-browser)
    command = [sys.executable, str(SCRIPT), "--node", "/nonexistent/node", "--prefix", str(tmp_path / "none")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.startswith("skipped: ")
    assert subprocess.run([*command, "--require-browser"], capture_output=True, timeout=120).returncode == 2


def test_a_tab_fails_on_errors_empty_states_missing_content_and_broken_images():
    tab = check.Tab("text", "/#text", "p", at_least=2, click="Image", text="Posterior")
    clean = {"matches": 3, "clicked": True, "text_found": True, "console_errors": [], "page_errors": [],
             "failed_requests": [], "broken_images": 0, "empty_messages": []}
    assert check.problems_of(clean, tab) == []
    problems = check.problems_of({**clean, "console_errors": ["boom"], "broken_images": 2, "matches": 1,
                                  "empty_messages": ["No text data was found."], "text_found": False,
                                  "clicked": False, "failed_requests": ["/data x HTTP 500"]}, tab)
    assert problems == [
        "console error: boom",
        "request failed: /data x HTTP 500",
        "2 image(s) did not load",
        "TensorBoard says: No text data was found.",
        "expected at least 2 of 'p', found 1",
        "the text 'Posterior' is not on the page",
        "no 'Image' button to click",
    ]
    assert check.problems_of({"error": "timeout"}, check.Tab("x", "/", "p", at_least=0))[-1].endswith("timeout")
    report = check.summary([check.TabResult("text", problems[:1], "shots/text.png"), check.TabResult("images")])
    assert "text" in report and "failed" in report and "console error: boom" in report and "images" in report


def test_every_tab_vaelab_fills_is_checked_and_time_series_filters_one_tag():
    names = [t.name for t in check.TABS]
    assert {"timeseries_scalars", "scalars", "images", "histograms", "hparams", "text", "projector"} <= set(names)
    assert len(names) == len(set(names))
    view = {t.name: t for t in check.TABS}["view_traversal"]
    assert view.path == "/?tagFilter=val%2Ftraversal#timeseries" and view.click == "Image" and view.close_pane


def test_the_port_is_free_on_the_loopback_interface_and_screenshots_shrink(tmp_path):
    port = check.free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # nothing holds it
    picture = np.zeros((200, 300, 3), np.uint8)
    picture[:, :, 0] = np.arange(300) % 256  # a gradient: many colours
    path = tmp_path / "shot.png"
    Image.fromarray(picture).save(path)
    check.shrink_png(path)
    with Image.open(path) as shrunk:
        assert shrunk.mode == "P" and shrunk.size == (300, 200)
