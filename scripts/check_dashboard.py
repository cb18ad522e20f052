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

Needs Node and the two npm packages, installed outside the repository (the first ships a Chromium build):

    npm install --prefix /tmp/dashcheck @sparticuz/chromium puppeteer-core

Exit status: 0 when every tab passed, 1 when one failed, and 0 with a line starting "skipped:" when Node, the npm
packages or Chromium are missing (so a CI without them passes; --require-browser makes that exit 2 instead). The test
suite does not run it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PREFIX = Path(os.environ.get("VAELAB_DASHCHECK_PREFIX", "/tmp/dashcheck"))
SKIPPED, FAILED = "skipped", "failed"
EXIT_SKIP_REQUIRED = 2


class BrowserUnavailable(RuntimeError):
    """Chromium is there but does not start on this machine (missing system libraries, say)."""


@dataclass(frozen=True)
class Tab:
    """One view to open: its name (and screenshot file), the URL after the host, what must be on it (a CSS selector
    that also looks inside shadow roots and same-origin frames, and how many at least) and, optionally, a button to
    click first (by its text), text that must appear, and whether to close Time Series' settings pane."""

    name: str
    path: str
    selector: str
    at_least: int = 1
    click: str | None = None
    text: str | None = None
    wait_s: float = 4.0
    close_pane: bool = False


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
)


@dataclass
class TabResult:
    name: str
    problems: list[str] = field(default_factory=list)
    screenshot: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problems


# --------------------------------------------------------------------------- the pure parts (unit-tested)
def missing_prerequisites(node: str | None, prefix: Path) -> str | None:
    """Why the browser check cannot run here, or None when it can: Node on the PATH (or ``node``), and
    puppeteer-core and @sparticuz/chromium under ``prefix``/node_modules."""
    if node is None:
        return "node not found on PATH (install Node.js 18 or later)"
    modules = prefix / "node_modules"
    packages = ("puppeteer-core", "@sparticuz/chromium")
    absent = [name for name in packages if not (modules / name / "package.json").is_file()]
    if absent:
        return (f"{' and '.join(absent)} not installed under {prefix} "
                f"(npm install --prefix {prefix} @sparticuz/chromium puppeteer-core)")
    return None


def problems_of(raw: dict, tab: Tab) -> list[str]:
    """The problems of one tab, from what the Node script saw there (``raw``: its JSON record)."""
    problems = [f"console error: {m}" for m in raw.get("console_errors", [])]
    problems += [f"page error: {m}" for m in raw.get("page_errors", [])]
    problems += [f"request failed: {m}" for m in raw.get("failed_requests", [])]
    if raw.get("broken_images"):
        problems.append(f"{raw['broken_images']} image(s) did not load")
    for message in raw.get("empty_messages", []):
        problems.append(f"TensorBoard says: {message}")
    if raw.get("matches", 0) < tab.at_least:
        problems.append(f"expected at least {tab.at_least} of {tab.selector!r}, found {raw.get('matches', 0)}")
    if tab.text and not raw.get("text_found"):
        problems.append(f"the text {tab.text!r} is not on the page")
    if tab.click and not raw.get("clicked"):
        problems.append(f"no {tab.click!r} button to click")
    if raw.get("error"):
        problems.append(f"could not check it: {raw['error']}")
    return problems


def summary(results: list[TabResult]) -> str:
    lines = []
    for result in results:
        status = "ok" if result.ok else FAILED
        lines.append(f"  {result.name:<22} {status}" + (f"  -> {result.screenshot}" if result.screenshot else ""))
        lines += [f"      {p}" for p in result.problems]
    return "\n".join(lines)


def free_port() -> int:
    """A TCP port nothing listens on now, on 127.0.0.1."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def shrink_png(path: Path) -> None:
    """Re-save a screenshot with a 256-colour palette (TensorBoard's flat colours survive; 3-5× smaller)."""
    from PIL import Image

    with Image.open(path) as image:
        small = image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    small.save(path, optimize=True)


# --------------------------------------------------------------------------- the browser
NODE_SCRIPT = r"""
import chromium from '@sparticuz/chromium';
import puppeteer from 'puppeteer-core';
import fs from 'node:fs';

const [base, tabsFile, outDir, width, height] = process.argv.slice(2);
const tabs = JSON.parse(fs.readFileSync(tabsFile, 'utf8'));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
let browser;
try {
  browser = await puppeteer.launch({
    args: chromium.args, executablePath: await chromium.executablePath(), headless: true,
    defaultViewport: { width: Number(width), height: Number(height), deviceScaleFactor: 1 },
  });
} catch (e) {  // no Chromium that runs here: a missing prerequisite, not a failed check
  process.stdout.write(JSON.stringify({ launch_error: String(e).slice(0, 500) }));
  process.exit(0);
}
const results = [];
for (const tab of tabs) {
  const record = { name: tab.name, console_errors: [], page_errors: [], failed_requests: [] };
  const page = await browser.newPage();
  page.on('console', (m) => { if (m.type() === 'error') record.console_errors.push(m.text().slice(0, 300)); });
  page.on('pageerror', (e) => record.page_errors.push(String(e).slice(0, 300)));
  page.on('requestfailed', (r) => {
    if (r.url().startsWith(base)) record.failed_requests.push(`${r.url()} ${r.failure()?.errorText}`);
  });
  page.on('response', (r) => {
    if (r.url().startsWith(base) && r.status() >= 400) record.failed_requests.push(`${r.url()} HTTP ${r.status()}`);
  });
  try {
    await page.goto(base + tab.path, { waitUntil: 'networkidle0', timeout: 60000 });
    await sleep(1500);
    if (tab.close_pane) {
      await page.evaluate(() => document.querySelector('button[aria-label="Close side pane"]')?.click());
      await sleep(500);
    }
    if (tab.click) {
      record.clicked = await page.evaluate((label) => {
        const b = [...document.querySelectorAll('button')].find((e) => e.textContent.trim() === label);
        if (b) b.click();
        return Boolean(b);
      }, tab.click);
    }
    await sleep(tab.wait_s * 1000);
    try { await page.waitForNetworkIdle({ idleTime: 1000, timeout: 20000 }); } catch (e) { /* a poller */ }
    Object.assign(record, await page.evaluate((selector, wanted) => {
      // every element, also inside shadow roots and same-origin frames
      const all = [];
      const walk = (root) => {
        for (const el of root.querySelectorAll('*')) {
          all.push(el);
          if (el.shadowRoot) walk(el.shadowRoot);
          if (el.tagName === 'IFRAME') { try { if (el.contentDocument) walk(el.contentDocument); } catch (e) {} }
        }
      };
      walk(document);
      const visible = (el) => { const r = el.getBoundingClientRect(); return r.width > 0 && r.height > 0; };
      const matches = all.filter((el) => el.matches(selector) && visible(el)).length;
      const images = all.filter((el) => el.tagName === 'IMG' && el.getAttribute('src'));
      const broken = images.filter((el) => el.complete && el.naturalWidth === 0).length;
      const texts = [];  // what is shown as text: not styles, scripts, templates, or hidden elements
      for (const el of all) {
        if (['STYLE', 'SCRIPT', 'TEMPLATE'].includes(el.tagName) || !visible(el)) continue;
        for (const n of el.childNodes) if (n.nodeType === 3 && n.textContent.trim()) texts.push(n.textContent.trim());
      }
      const text = texts.join(' ');
      const emptyState = /No [a-z ]*data was found\.?|No dashboards are active[^.]*\.?|variance described: NaN%/gi;
      const empty = [...new Set(text.match(emptyState) || [])];
      const found = !wanted || text.toLowerCase().includes(wanted.toLowerCase());
      return { matches, broken_images: broken, images: images.length, empty_messages: empty, text_found: found };
    }, tab.selector, tab.text));
    const file = `${outDir}/${tab.name}.png`;
    await page.screenshot({ path: file });
    record.screenshot = file;
  } catch (e) {
    record.error = String(e).slice(0, 300);
  }
  results.push(record);
  await page.close();
}
await browser.close();
process.stdout.write(JSON.stringify(results));
"""


def train_sweep(folder: Path, epochs: int, log_file: Path) -> Path:
    """Train one small run of each model (vae, beta_vae, ae) into ``folder``, and a VAE with a 2-D code (for the
    manifold) next to them; return the folder. What training prints goes to ``log_file``."""
    env = {**os.environ, "VAELAB_ROOT": str(ROOT)}
    common = [f"trainer.max_epochs={epochs}", "+trainer.enable_progress_bar=false"]
    commands = [
        ["-m", "model=vae,beta_vae,ae", f"hydra.sweep.dir={folder}", *common],
        ["model=vae", "model.latent_dim=2", f"hydra.run.dir={folder / '3_vae_latent_dim_2'}", *common],
    ]
    with open(log_file, "w") as log:
        for arguments in commands:
            print("training: src/train.py", " ".join(arguments), flush=True)
            done = subprocess.run([sys.executable, str(ROOT / "src" / "train.py"), *arguments], cwd=ROOT, env=env,
                                  stdout=log, stderr=subprocess.STDOUT)
            if done.returncode != 0:
                raise RuntimeError(f"training failed ({done.returncode}); see {log_file}")
    return folder


@contextlib.contextmanager
def tensorboard(logdir: Path, port: int, log_file: Path):
    """TensorBoard on 127.0.0.1:``port`` over ``logdir`` until the block ends; waits until it serves the runs."""
    command = [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", "127.0.0.1",
               "--port", str(port), "--reload_interval", "2", "--load_fast", "false"]
    with open(log_file, "w") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"TensorBoard exited ({server.returncode}); see {log_file}")
            try:
                with urllib.request.urlopen(f"{base}/data/runs", timeout=5) as response:
                    if json.load(response):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"TensorBoard did not serve any run within 90 s; see {log_file}")
            time.sleep(1)
        time.sleep(5)  # let it finish reading every run's files
        yield base
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()


def run_browser(node: str, prefix: Path, base: str, out: Path, work: Path, size: tuple[int, int],
                tabs=TABS) -> list[dict]:
    script = prefix / "vaelab_check_dashboard.mjs"  # next to node_modules, so that its imports resolve
    script.write_text(NODE_SCRIPT)
    tabs_file = work / "tabs.json"
    tabs_file.write_text(json.dumps([t.__dict__ for t in tabs]))
    done = subprocess.run([node, str(script), base, str(tabs_file), str(out), str(size[0]), str(size[1])],
                          capture_output=True, text=True, timeout=900, cwd=prefix)
    if done.returncode != 0:
        raise RuntimeError(f"the browser script failed ({done.returncode}): {done.stderr[-2000:]}")
    raw = json.loads(done.stdout)
    if isinstance(raw, dict):  # Chromium did not start
        raise BrowserUnavailable(f"Chromium did not start: {raw['launch_error']}")
    return raw


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, help="a folder of runs (a multirun, or logs/); default: train a sweep")
    parser.add_argument("--epochs", type=int, default=3, help="epochs of each run of the sweep it trains")
    parser.add_argument("--out", type=Path, help="folder for the screenshots (default: a temporary folder)")
    parser.add_argument("--prefix", type=Path, default=DEFAULT_PREFIX,
                        help="where `npm install --prefix` put puppeteer-core and @sparticuz/chromium "
                             "(default: $VAELAB_DASHCHECK_PREFIX or /tmp/dashcheck)")
    parser.add_argument("--node", default=shutil.which("node"), help="the Node.js executable (default: on PATH)")
    parser.add_argument("--size", default="1440x900", help="browser viewport, WIDTHxHEIGHT")
    parser.add_argument("--tabs", help="comma-separated subset of: " + ",".join(t.name for t in TABS))
    parser.add_argument("--require-browser", action="store_true",
                        help=f"exit {EXIT_SKIP_REQUIRED} instead of 0 when the browser cannot run here")
    args = parser.parse_args(argv)

    reason = missing_prerequisites(args.node, args.prefix)
    if reason is not None:
        print(f"{SKIPPED}: {reason}")
        return EXIT_SKIP_REQUIRED if args.require_browser else 0
    tabs = TABS
    if args.tabs:
        wanted = args.tabs.split(",")
        unknown = sorted(set(wanted) - {t.name for t in TABS})
        if unknown:
            parser.error(f"unknown tab(s) {', '.join(unknown)}")
        tabs = tuple(t for t in TABS if t.name in wanted)
    width, height = (int(v) for v in args.size.lower().split("x"))

    work = Path(tempfile.mkdtemp(prefix="vaelab-dashcheck-"))
    out = args.out or work / "screenshots"
    out.mkdir(parents=True, exist_ok=True)
    runs = args.runs or train_sweep(work / "sweep", args.epochs, work / "train.log")
    if not runs.is_dir():
        parser.error(f"--runs {runs} is not a folder")
    try:
        with tensorboard(runs.resolve(), free_port(), work / "tensorboard.log") as base:
            print(f"TensorBoard at {base} over {runs}", flush=True)
            raw = run_browser(args.node, args.prefix, base, out.resolve(), work, (width, height), tabs)
    except BrowserUnavailable as error:  # a Chromium that cannot start here is a missing prerequisite too
        print(f"{SKIPPED}: {error}")
        return EXIT_SKIP_REQUIRED if args.require_browser else 0
    results = []
    for tab, record in zip(tabs, raw, strict=True):
        result = TabResult(tab.name, problems_of(record, tab), record.get("screenshot"))
        if result.screenshot:
            shrink_png(Path(result.screenshot))
        results.append(result)
    print(summary(results))
    failed = [r.name for r in results if not r.ok]
    print(f"{FAILED}: {', '.join(failed)}" if failed else f"all {len(results)} tabs passed; screenshots in {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
