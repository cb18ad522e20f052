#!/usr/bin/env python
"""Images per second and peak memory of data.stream=true against the tensor-resident cache, one pass over a train split.

    python scripts/stream_benchmark.py --data-dir data                  # MNIST (data/MNIST/raw) and a 64x64 folder
    python scripts/stream_benchmark.py --folder-images 20000 --workers 0 2
    python scripts/stream_benchmark.py --memory-test 300000 --work-dir /tmp/stream_mem   # only the streamed pass

Each row runs in a fresh process (its peak RSS is that process's own, from wait4), through the real DataModules:
``setup`` (decoding or converting on the first run with an empty cache, reading the cache after) then --passes
shuffled passes of ``train_dataloader()`` at --batch-size, counting uint8 images (no model, no float conversion);
the fastest pass is reported (the CPU may be shared), and ``OMP_NUM_THREADS=1`` unless set. The 64x64
colour folder is --folder-images random PNGs in two class folders, generated once in --work-dir. --memory-test N
generates N such PNGs (in --work-dir, file by file) and streams them once: the figure to compare is the peak RSS,
against the N x 3 x 64 x 64 bytes that the tensor path holds (printed beside it). Run it under ``/usr/bin/time -v`` to
see the same peak from outside. It asserts nothing: the figures are for a person to read.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIDE = 64


def make_folder(folder: Path, n: int, seed: int = 0) -> Path:
    """``n`` random 64x64 colour PNGs in two class folders (written one by one; kept when already complete)."""
    import numpy as np
    from PIL import Image

    done = folder / f".complete-{n}"
    if done.exists():
        return folder
    rng = np.random.default_rng(seed)
    for i in range(n):
        sub = folder / ("a" if i % 2 else "b") / f"{i // 10000:03d}"
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)).save(sub / f"{i:07d}.png",
                                                                                   compress_level=1)
    done.touch()
    return folder


def child(spec: dict) -> dict:
    """One measurement, in this process: setup, then one pass of the training loader."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from vaelab.data import ImageFolderDataModule, MNISTDataModule

    common = {"data_dir": spec["data_dir"], "cache_dir": spec["cache_dir"], "batch_size": spec["batch_size"],
              "stream": spec["stream"], "num_workers": spec["workers"]}
    if spec["data"] == "mnist":
        dm = MNISTDataModule(download=False, **common)
    else:
        dm = ImageFolderDataModule(folder=spec["folder"], image_size=SIDE, mode="rgb", **common)
    start = time.perf_counter()
    dm.prepare_data()
    dm.setup()
    setup_s = time.perf_counter() - start
    loader = dm.train_dataloader()
    rates = []
    for _ in range(spec["passes"]):
        n, start = 0, time.perf_counter()
        for images, _ in loader:
            n += len(images)
        rates.append(n / (time.perf_counter() - start))
    return {"setup_s": setup_s, "images": n, "images_per_s": max(rates), "shape": list(images.shape[1:])}


def run(spec: dict) -> dict:
    """:func:`child` in a fresh process; its result with its own peak RSS (GiB)."""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}  # (no busy-waiting when shared)
    proc = subprocess.Popen([sys.executable, __file__, "--child", json.dumps(spec)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, env=env)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise SystemExit(f"the measurement {spec} failed (status {status})")
    result = json.loads(out.decode().strip().splitlines()[-1])
    return {**result, "peak_rss_gib": usage.ru_maxrss / 2**20}  # (ru_maxrss is in KiB on Linux)


def row(name: str, result: dict) -> None:
    print(f"{name:<46} {result['images']:>8,} {result['setup_s']:>9.1f} {result['images_per_s']:>12,.0f} "
          f"{result['peak_rss_gib']:>9.2f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="data", help="the folder holding MNIST/raw (skipped when absent)")
    parser.add_argument("--folder-images", type=int, default=20000)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--passes", type=int, default=3, help="passes per row; the fastest is reported")
    parser.add_argument("--work-dir", default=None, help="where the folder and the caches go (default: a temp dir)")
    parser.add_argument("--memory-test", type=int, default=0, help="N: stream N generated 64x64 images only")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="stream_benchmark-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"{'measurement':<46} {'images':>8} {'setup s':>9} {'images/s':>12} {'peak GiB':>9}")
    base = {"batch_size": args.batch_size, "cache_dir": str(work / "cache"), "passes": args.passes}
    if args.memory_test:
        start = time.perf_counter()
        folder = make_folder(work / f"folder-{args.memory_test}", args.memory_test)
        print(f"(generated {args.memory_test:,} PNGs in {time.perf_counter() - start:.0f} s)", flush=True)
        spec = {**base, "data": "folder", "folder": str(folder), "data_dir": str(work), "stream": True,
                "workers": args.workers[0]}
        for label in ("convert + pass", "pass (converted)"):
            row(f"folder {args.memory_test:,} stream w={args.workers[0]} {label}", run(spec))
        print(f"the tensor path would hold {args.memory_test * 3 * SIDE * SIDE / 2**30:.2f} GiB of uint8 images "
              "(and setup copies the train split out of them: about twice that at its peak)")
        return
    datasets = []
    if (Path(args.data_dir) / "MNIST" / "raw").is_dir():
        datasets.append(("mnist", {"data": "mnist", "data_dir": args.data_dir}))
    folder = make_folder(work / f"folder-{args.folder_images}", args.folder_images)
    datasets.append((f"folder{SIDE}x{SIDE}", {"data": "folder", "folder": str(folder), "data_dir": str(work)}))
    for name, data in datasets:
        for stream in (False, True):
            for workers in ([0] if not stream else args.workers):
                spec = {**base, **data, "stream": stream, "workers": workers}
                first = stream is False or workers == args.workers[0]
                labels = ("cold (decode/convert)", "warm") if first else ("warm",)
                for label in labels:
                    kind = f"stream w={workers}" if stream else "tensor"
                    row(f"{name} {kind} {label}", run(spec))


if __name__ == "__main__":
    main()
