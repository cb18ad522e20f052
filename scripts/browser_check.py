"""What the browser checks share (``scripts/check_dashboard.py`` for TensorBoard, ``scripts/check_mlflow.py`` for
MLflow's UI): a web app served on a free port of 127.0.0.1, a headless Chromium driven through puppeteer-core from a
small Node script written next to the npm packages, one page ("tab") after another, and what makes a page fail.

A page fails on a console error or an uncaught page error, a failed request to the app (or an HTTP status >= 400),
an image that did not load, the app's own empty-state message (a regular expression each check gives), too few
elements matching its selector (also inside shadow roots and same-origin frames), text that should be there and is
not, or a button to click that is not there. Each page's screenshot is kept as a 256-colour PNG.

Needs Node and two npm packages, installed outside the repository (the first ships a Chromium build):

    npm install --prefix /tmp/dashcheck @sparticuz/chromium puppeteer-core

Without them a check prints a line starting ``skipped:`` and exits 0 (2 with ``--require-browser``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_PREFIX = Path(os.environ.get("VAELAB_DASHCHECK_PREFIX", "/tmp/dashcheck"))
SKIPPED, FAILED = "skipped", "failed"
EXIT_SKIP_REQUIRED = 2


class BrowserUnavailable(RuntimeError):
    """Chromium is there but does not start on this machine (missing system libraries, say)."""


@dataclass(frozen=True)
class Tab:
    """One page to open: its name (and screenshot file), the URL after the host, what must be on it (a CSS selector
    that also looks inside shadow roots and same-origin frames, and how many at least) and, optionally, a button to
    click first (by its text), text that must appear, whether to close TensorBoard's Time Series settings pane, and
    what to click away when it is there (``dismiss``, a CSS selector: a side panel over the page)."""

    name: str
    path: str
    selector: str
    at_least: int = 1
    click: str | None = None
    text: str | None = None
    wait_s: float = 4.0
    close_pane: bool = False
    dismiss: str | None = None


@dataclass
class TabResult:
    name: str
    problems: list[str] = field(default_factory=list)
    screenshot: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problems


# --------------------------------------------------------------------------- the pure parts (unit-tested)
def add_browser_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every browser check takes: the sweep it trains, where the screenshots go, the browser's install,
    Node.js, the viewport and whether a missing browser fails."""
    parser.add_argument("--epochs", type=int, default=3, help="epochs of each run of the sweep it trains")
    parser.add_argument("--out", type=Path, help="folder for the screenshots (default: a temporary folder)")
    parser.add_argument("--prefix", type=Path, default=DEFAULT_PREFIX,
                        help="where `npm install --prefix` put puppeteer-core and @sparticuz/chromium "
                             "(default: $VAELAB_DASHCHECK_PREFIX or /tmp/dashcheck)")
    parser.add_argument("--node", default=shutil.which("node"), help="the Node.js executable (default: on PATH)")
    parser.add_argument("--size", default="1440x900", help="browser viewport, WIDTHxHEIGHT")
    parser.add_argument("--require-browser", action="store_true",
                        help=f"exit {EXIT_SKIP_REQUIRED} instead of 0 when the browser cannot run here")


def missing_prerequisites(node: str | None, prefix: Path) -> str | None:
    """Why the browser check cannot run here, or None when it can: Node on the PATH (or ``node``, an executable),
    and puppeteer-core and @sparticuz/chromium under ``prefix``/node_modules."""
    if node is None:
        return "node not found on PATH (install Node.js 18 or later)"
    if shutil.which(node) is None:
        return f"--node {node} is not an executable (give the Node.js executable, or leave --node out)"
    modules = prefix / "node_modules"
    packages = ("puppeteer-core", "@sparticuz/chromium")
    absent = [name for name in packages if not (modules / name / "package.json").is_file()]
    if absent:
        return (f"{' and '.join(absent)} not installed under {prefix} "
                f"(npm install --prefix {prefix} @sparticuz/chromium puppeteer-core)")
    return None


def problems_of(raw: dict, tab: Tab, app: str = "TensorBoard", ignore: str | None = None,
                fallbacks: Sequence[tuple[str, str]] = ()) -> list[str]:
    """The problems of one tab, from what the Node script saw there (``raw``: its JSON record); ``app`` names who
    said an empty-state message; console errors and failed requests matching ``ignore`` (a regular expression:
    what the app itself always does, named and explained by the check that passes it) are not problems.
    ``fallbacks``: pairs of regular expressions ``(refused, instead)``: a request matching ``refused`` that failed
    is the app asking for something the server says it does not offer, and not a problem only when a request
    matching ``instead`` (what the app falls back to) succeeded on the same page."""
    answered = raw.get("ok_requests", [])
    excused = [refused for refused, instead in fallbacks if any(re.search(instead, url) for url in answered)]

    def kept(messages: list[str]) -> list[str]:
        return [m for m in messages if not (ignore and re.search(ignore, m))
                and not any(re.search(refused, m) for refused in excused)]

    problems = [f"console error: {m}" for m in kept(raw.get("console_errors", []))]
    problems += [f"page error: {m}" for m in raw.get("page_errors", [])]
    problems += [f"request failed: {m}" for m in kept(raw.get("failed_requests", []))]
    if raw.get("broken_images"):
        problems.append(f"{raw['broken_images']} image(s) did not load")
    for message in raw.get("empty_messages", []):
        problems.append(f"{app} says: {message}")
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
    """Re-save a screenshot with a 256-colour palette (a web app's flat colours survive; 3-5× smaller)."""
    from PIL import Image

    with Image.open(path) as image:
        small = image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    small.save(path, optimize=True)


def select_tabs(tabs: Sequence[Tab], wanted: str | None) -> tuple[Tab, ...]:
    """The tabs named in ``wanted`` (comma-separated; all when empty); ValueError naming the unknown ones."""
    if not wanted:
        return tuple(tabs)
    names = wanted.split(",")
    unknown = sorted(set(names) - {t.name for t in tabs})
    if unknown:
        raise ValueError(f"unknown tab(s) {', '.join(unknown)}; known: {', '.join(t.name for t in tabs)}")
    return tuple(t for t in tabs if t.name in names)


def results_of(tabs: Sequence[Tab], raw: list[dict], app: str = "TensorBoard", ignore: str | None = None,
               shrink: bool = True, fallbacks: Sequence[tuple[str, str]] = ()) -> list[TabResult]:
    """Each tab's result from the Node script's records (screenshots shrunk; ``ignore`` and ``fallbacks`` as
    :func:`problems_of`)."""
    results = []
    for tab, record in zip(tabs, raw, strict=True):
        result = TabResult(tab.name, problems_of(record, tab, app, ignore, fallbacks), record.get("screenshot"))
        if result.screenshot and shrink:
            shrink_png(Path(result.screenshot))
        results.append(result)
    return results


# --------------------------------------------------------------------------- the app and the browser
ROOT = Path(__file__).resolve().parents[1]


def train(runs: Sequence[Sequence[str]], log_file: Path) -> None:
    """Run ``src/train.py`` once per argument list in ``runs``, in the clone, all output to ``log_file``; the first
    failure stops with where to look."""
    env = {**os.environ, "VAELAB_ROOT": str(ROOT)}
    with open(log_file, "w") as log:
        for arguments in runs:
            print("training: src/train.py", " ".join(arguments), flush=True)
            done = subprocess.run([sys.executable, str(ROOT / "src" / "train.py"), *arguments], cwd=ROOT, env=env,
                                  stdout=log, stderr=subprocess.STDOUT)
            if done.returncode != 0:
                raise RuntimeError(f"training failed ({done.returncode}); see {log_file}")


@contextlib.contextmanager
def serve(command: Sequence[str], ready: Callable[[str], bool], port: int, log_file: Path, name: str,
          timeout_s: float = 120, env: dict[str, str] | None = None) -> Iterator[str]:
    """Run ``command`` (an app listening on 127.0.0.1:``port``) until the block ends; yields its base URL once
    ``ready(base)`` says it serves what the check needs. Stopped (terminate, then kill) however the block ends."""
    with open(log_file, "w") as log:
        server = subprocess.Popen(list(command), stdout=log, stderr=subprocess.STDOUT, env=env,
                                  start_new_session=True)  # (its own process group: its workers stop with it)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"{name} exited ({server.returncode}); see {log_file}")
            try:
                if ready(base):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} was not ready within {timeout_s:.0f} s; see {log_file}")
            time.sleep(1)
        yield base
    finally:
        _stop(server)


def _stop(server: subprocess.Popen) -> None:
    import signal

    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(server.pid, sig)  # (the group it leads: only what it started)
        try:
            server.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def run_browser(node: str, prefix: Path, base: str, out: Path, work: Path, size: tuple[int, int],
                tabs: Sequence[Tab], empty_state: str = "", script_name: str = "vaelab_browser_check.mjs"
                ) -> list[dict]:
    """Open each of ``tabs`` at ``base`` in a headless Chromium; each one's record (what was seen, the
    screenshot's path under ``out``). ``empty_state``: a regular expression (JavaScript, case-insensitive) for the
    app's "nothing here" messages. Raises :class:`BrowserUnavailable` when Chromium does not start."""
    script = prefix / script_name  # next to node_modules, so that its imports resolve
    script.write_text(NODE_SCRIPT)
    tabs_file = work / "tabs.json"
    tabs_file.write_text(json.dumps([t.__dict__ for t in tabs]))
    done = subprocess.run([node, str(script), base, str(tabs_file), str(out), str(size[0]), str(size[1]),
                           empty_state], capture_output=True, text=True, timeout=900, cwd=prefix)
    if done.returncode != 0:
        raise RuntimeError(f"the browser script failed ({done.returncode}): {done.stderr[-2000:]}")
    raw = json.loads(done.stdout)
    if isinstance(raw, dict):  # Chromium did not start
        raise BrowserUnavailable(f"Chromium did not start: {raw['launch_error']}")
    return raw


def skip(args: argparse.Namespace, reason: str) -> int:
    """Say why the check cannot run here; the exit status for that: 0, or 2 with --require-browser."""
    print(f"{SKIPPED}: {reason}")
    return EXIT_SKIP_REQUIRED if args.require_browser else 0


def check_pages(args: argparse.Namespace, server: contextlib.AbstractContextManager[str], over: str,
                tabs: Sequence[Tab], out: Path, work: Path, empty_state: str, script_name: str,
                app: str = "TensorBoard", ignore: str | None = None, noun: str = "tabs",
                fallbacks: Sequence[tuple[str, str]] = ()) -> int:
    """Start ``server`` (an app serving ``over``), open ``tabs`` in the browser, print one line per tab and the
    verdict; the exit status: 0 all passed, 1 a tab failed, and for a Chromium that cannot start here what a
    missing prerequisite gives (0, or 2 with --require-browser)."""
    width, height = (int(v) for v in args.size.lower().split("x"))
    try:
        with server as base:
            print(f"{app} at {base} over {over}", flush=True)
            raw = run_browser(args.node, args.prefix, base, out.resolve(), work, (width, height), tabs, empty_state,
                              script_name)
    except BrowserUnavailable as error:  # a Chromium that cannot start here is a missing prerequisite too
        return skip(args, str(error))
    results = results_of(tabs, raw, app=app, ignore=ignore, fallbacks=fallbacks)
    print(summary(results))
    failed = [r.name for r in results if not r.ok]
    print(f"{FAILED}: {', '.join(failed)}" if failed else f"all {len(results)} {noun} passed; screenshots in {out}")
    return 1 if failed else 0


NODE_SCRIPT = r"""
import chromium from '@sparticuz/chromium';
import puppeteer from 'puppeteer-core';
import fs from 'node:fs';

const [base, tabsFile, outDir, width, height, emptyStateSource] = process.argv.slice(2);
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
  const record = { name: tab.name, console_errors: [], page_errors: [], failed_requests: [], ok_requests: [] };
  const page = await browser.newPage();
  page.on('console', (m) => {
    if (m.type() !== 'error') return;
    const where = m.location()?.url;  // (the resource a "Failed to load resource" message is about)
    record.console_errors.push((m.text() + (where ? ` [${where}]` : '')).slice(0, 400));
  });
  page.on('pageerror', (e) => record.page_errors.push(String(e).slice(0, 300)));
  page.on('requestfailed', (r) => {
    if (r.url().startsWith(base)) record.failed_requests.push(`${r.url()} ${r.failure()?.errorText}`);
  });
  page.on('response', (r) => {
    if (!r.url().startsWith(base)) return;
    if (r.status() >= 400) record.failed_requests.push(`${r.url()} HTTP ${r.status()}`);
    else record.ok_requests.push(r.url());
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
        const named = (css) => [...document.querySelectorAll(css)].find((e) => e.textContent.trim() === label);
        const b = named('button') || named('[role="button"], [role="tab"]');
        if (b) b.click();
        return Boolean(b);
      }, tab.click);
    }
    if (tab.dismiss) {  // what covers the page (a side panel): clicked away when there
      await sleep(500);
      await page.evaluate((selector) => document.querySelectorAll(selector).forEach((e) => e.click()), tab.dismiss);
      await sleep(500);
    }
    await sleep(tab.wait_s * 1000);
    try { await page.waitForNetworkIdle({ idleTime: 1000, timeout: 20000 }); } catch (e) { /* a poller */ }
    Object.assign(record, await page.evaluate((selector, wanted, emptySource) => {
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
      const empty = emptySource ? [...new Set(text.match(new RegExp(emptySource, 'gi')) || [])] : [];
      const found = !wanted || text.toLowerCase().includes(wanted.toLowerCase());
      return { matches, broken_images: broken, images: images.length, empty_messages: empty, text_found: found };
    }, tab.selector, tab.text, emptyStateSource));
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
