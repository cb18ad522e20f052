#!/usr/bin/env python
"""Training throughput of vaelab against the hand-written PyTorch VAE loop, on the same data, in one process.

    python scripts/benchmark.py                       # synthetic data of MNIST's size, CPU
    python scripts/benchmark.py --data-dir data       # real files: data/MNIST/raw/*-ubyte
    python scripts/benchmark.py --variants c,c_compile,conv,conv_cl

Variants (each trains the classic 784-400-20 MLP VAE with batch 128 unless it says otherwise):
  a          plain PyTorch, as PyTorch's VAE example: torchvision MNIST + ToTensor through a DataLoader, Adam
  b          the same loop on tensor-resident data (one uint8 tensor, a randperm per epoch)
  c          vaelab through Lightning and the repo's Hydra configs, dashboard callbacks off (callbacks=minimal)
  d          vaelab with the default callbacks (reconstructions, samples, latent scatter, KL per dim, traversal)
  c_compile  c with model.compile=true
  c_bf16     c with trainer.precision=bf16-mixed (meant for GPUs)
  conv       vaelab with the conv net (model/net=conv), callbacks off
  conv_cl    conv with model.channels_last=true
  b_tiny     b on a 784-32-2 MLP VAE, where the compute of a step is small and its fixed cost shows
  c_tiny     c on the same 784-32-2 MLP VAE (model.latent_dim=2, hidden_dims=[32]): vaelab's cost per step

Every variant trains on the same 54,000 images (vaelab's train split) for --warmup epochs (not timed; 2 by default,
as vaelab's first epoch draws every view once and its rendering runs on into the second), then
--epochs timed epochs, in --repeats interleaved rounds (medians are reported). vaelab's variants also validate
on the 6,000 held-out images every epoch, and that time is counted against them; they then train one more epoch,
untimed but reported on its own: the last epoch, where every dashboard view draws once whatever its budget, and the
end of training (the projector, the last checkpoint), a fixed cost that a run of any length pays once. It prints
images per second, the ratios c/a, c/b, d/c and c_tiny/b_tiny, the peak RSS, and one summary line. It asserts
nothing: the figures are for a person to read.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from lightning import Callback
from torch.utils.data import DataLoader, Subset

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
os.environ.setdefault("VAELAB_ROOT", str(ROOT))

from vaelab.data import FashionMNISTDataModule, MNISTDataModule  # noqa: E402
from vaelab.data.idx import write_random_mnist_layout  # noqa: E402
from vaelab.tasks.runtime import skip_failing_nvml_probe  # noqa: E402

sys.path.insert(0, str(ROOT / "scripts"))
from reference_vae import ReferenceVAE, reference_loss  # noqa: E402  (the example's model, shared)

FOLDERS = {"mnist": ("MNIST", MNISTDataModule), "fashion_mnist": ("FashionMNIST", FashionMNISTDataModule)}


# --------------------------------------------------------------------------- the hand-written reference
def hand_loop(batches_per_epoch, epochs: int, warmup: int, device: torch.device, n_images: int,
              hidden: int = 400, latent: int = 20) -> float:
    """Train the reference model; return images/s over the timed epochs."""
    torch.manual_seed(0)
    model = ReferenceVAE(hidden, latent).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    start = 0.0
    for epoch in range(warmup + epochs):
        if epoch == warmup:
            _sync(device)
            start = time.perf_counter()
        for x in batches_per_epoch():
            x = x.to(device, non_blocking=True)
            optimizer.zero_grad()
            recon, mu, logvar = model(x)
            loss = reference_loss(recon, x, mu, logvar)
            loss.backward()
            optimizer.step()
    _sync(device)
    return n_images * epochs / (time.perf_counter() - start)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


# --------------------------------------------------------------------------- vaelab
class EpochTimer(Callback):
    """Wall time of the timed epochs (from the start of the first to the end of the last, validation and the
    dashboard's drawings included), and of the untimed last epoch with the end of training (the one-off drawings of
    every view at the last epoch, the projector, the final checkpoint)."""

    def __init__(self, warmup: int, epochs: int) -> None:
        self.first, self.last = warmup, warmup + epochs - 1
        self.start = self.end = self.tail_start = self.tail_end = None

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch in (self.first, self.last + 1):
            _sync(pl_module.device)
            now = time.perf_counter()
            if trainer.current_epoch == self.first:
                self.start = now
            else:
                self.tail_start = now

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.last:
            _sync(pl_module.device)
            self.end = time.perf_counter()

    def on_train_end(self, trainer, pl_module) -> None:
        _sync(pl_module.device)
        self.tail_end = time.perf_counter()


def vaelab_run(args, data_dir: Path, overrides: list[str]) -> float:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import open_dict

    from vaelab.tasks.train import build

    GlobalHydra.instance().clear()
    out = tempfile.mkdtemp(prefix="vaelab-bench-")
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        cfg = compose(
            config_name="train",
            overrides=[
                f"data={args.dataset}",
                f"data.data_dir={data_dir}",
                "data.download=false",
                f"data.batch_size={args.batch_size}",
                "model=vae",
                "model.latent_dim=20",
                f"trainer.accelerator={'gpu' if args.device == 'cuda' else 'cpu'}",
                f"trainer.max_epochs={args.warmup + args.epochs + 1}",  # + the untimed last epoch
                "test=false",
                *overrides,
            ],
        )
    with open_dict(cfg):
        cfg.paths.output_dir = out
    torch.manual_seed(0)
    datamodule, model, trainer = build(cfg)
    timer = EpochTimer(args.warmup, args.epochs)
    trainer.callbacks.append(timer)  # (last: its on_train_end comes after every other callback's)
    trainer.fit(model, datamodule=datamodule)
    n_train = len(datamodule.splits["train"][0])
    TAILS.setdefault(" ".join(overrides), []).append(timer.tail_end - timer.tail_start)
    return n_train * args.epochs / (timer.end - timer.start)


TAILS: dict[str, list[float]] = {}  # the untimed last epoch + end of training, seconds, per vaelab variant
#: the *_tiny variants' 784-32-2 MLP VAE (hidden width, latent dimensions), in the hand loop and in vaelab's configs
TINY = (32, 2)
TINY_OVERRIDES = [f"model.latent_dim={TINY[1]}", f"model.net.encoder.hidden_dims=[{TINY[0]}]",
                  f"model.net.decoder.hidden_dims=[{TINY[0]}]"]


# --------------------------------------------------------------------------- main
def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, help="folder holding MNIST/raw or FashionMNIST/raw (real data)")
    parser.add_argument("--dataset", choices=sorted(FOLDERS), default="mnist")
    parser.add_argument(
        "--variants", default="a,b,c,d",
        help="comma-separated, from: a,b,c,d,c_compile,c_bf16,conv,conv_cl,b_tiny,c_tiny"
    )
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs per variant")
    # two: every dashboard view draws at the first validation epoch, and that drawing's rendering (worker threads)
    # runs on into the second epoch; the timed epochs are the steady state a run of any length spends most time in
    parser.add_argument("--warmup", type=int, default=2, help="untimed epochs before")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5, help="rounds over all variants; medians are reported")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    # Importing vaelab imports Lightning, which makes every Adam step of a CUDA build of PyTorch on a machine
    # without NVML retry loading it; vaelab's training switches that off (vaelab.tasks.runtime). Do it before any
    # variant, so that the hand-written loops run as they would in a script that never imported Lightning.
    skip_failing_nvml_probe()

    folder, dm_cls = FOLDERS[args.dataset]
    if args.data_dir is None:
        data_dir = Path(tempfile.mkdtemp(prefix="vaelab-bench-data-"))
        write_random_mnist_layout(data_dir, folder, 60_000, 10_000)
        source = f"synthetic uint8 noise of MNIST's size in {data_dir}"
    else:
        data_dir = args.data_dir
        source = f"{data_dir / folder / 'raw'}"

    # The training split every variant uses: vaelab's own (same seed, same indices).
    dm = dm_cls(data_dir=data_dir, batch_size=args.batch_size, download=False, cache=False)
    dm.setup()
    train_images = dm.splits["train"][0]
    n = len(train_images)
    train_idx = dm.split_indices["train"]

    print(f"vaelab benchmark: {args.device} ({_device_name(device)}), torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, python {platform.python_version()}")
    print(f"data: {source}; {n} training images/epoch, batch {args.batch_size}, "
          f"{args.warmup} warm-up + {args.epochs} timed epochs per variant\n")

    def loader_a():
        from torchvision import datasets, transforms

        ds = dm_cls.dataset_cls(str(data_dir), train=True, transform=transforms.ToTensor(), download=False)
        assert isinstance(ds, datasets.MNIST)
        extra = {"num_workers": 1, "pin_memory": True} if device.type == "cuda" else {}
        loader = DataLoader(Subset(ds, train_idx.tolist()), batch_size=args.batch_size, shuffle=True, **extra)
        return lambda: (x for x, _ in loader)

    def loader_b():
        resident = train_images.to(device)

        def epoch():
            perm = torch.randperm(n, device=device)
            for i in range(0, n, args.batch_size):
                yield resident[perm[i : i + args.batch_size]].float().div_(255)

        return epoch

    variants = {
        "a": lambda: hand_loop(loader_a(), args.epochs, args.warmup, device, n),
        "b": lambda: hand_loop(loader_b(), args.epochs, args.warmup, device, n),
        "c": lambda: vaelab_run(args, data_dir, ["callbacks=minimal"]),
        "d": lambda: vaelab_run(args, data_dir, []),
        "c_compile": lambda: vaelab_run(args, data_dir, ["callbacks=minimal", "model.compile=true"]),
        "c_bf16": lambda: vaelab_run(args, data_dir, ["callbacks=minimal", "trainer.precision=bf16-mixed"]),
        "conv": lambda: vaelab_run(args, data_dir, ["callbacks=minimal", "model/net=conv"]),
        "conv_cl": lambda: vaelab_run(args, data_dir, ["callbacks=minimal", "model/net=conv",
                                                       "model.channels_last=true"]),
        # the fixed cost of a step: a model whose compute is small next to it
        "b_tiny": lambda: hand_loop(loader_b(), args.epochs, args.warmup, device, n, *TINY),
        "c_tiny": lambda: vaelab_run(args, data_dir, ["callbacks=minimal", *TINY_OVERRIDES]),
    }
    names = args.variants.split(",")
    for name in names:
        if name not in variants:
            parser.error(f"unknown variant {name!r}; choose from {', '.join(variants)}")
    # Variants take turns, --repeats times, so a slow spell of a shared machine does not land on one of them;
    # each figure is a median over rounds, ratios are medians of within-round ratios, all rounds are shown.
    runs: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(args.repeats):
        for name in names:
            runs[name].append(variants[name]())
            print(f"  round {round_ + 1}: {name:<10} {runs[name][-1]:>10,.0f} images/s   "
                  f"peak RSS so far {peak_rss_mb():,.0f} MB", flush=True)
    results = {name: statistics.median(values) for name, values in runs.items()}

    def step_us(images_per_s: float) -> float:
        """Microseconds per training step of --batch-size images (vaelab's validation included)."""
        return args.batch_size / images_per_s * 1e6

    print("\nmedian of each (images/s; seconds per training epoch of the", n, "images) and all rounds:")
    for name, values in runs.items():
        print(f"  {name:<10} {results[name]:>10,.0f}  {n / results[name]:6.2f} s/epoch  "
              f"{step_us(results[name]):7.0f} µs/step   [{', '.join(f'{v:,.0f}' for v in values)}]")

    print("\nratios, each the median over rounds of the ratio within a round (neighbours in time):")
    ratios = []
    for top, bottom in (("c", "a"), ("c", "b"), ("d", "c"), ("c_compile", "c"), ("c_bf16", "c"), ("conv_cl", "conv"),
                        ("c_tiny", "b_tiny")):
        if top in results and bottom in results:
            per_round = [t / b for t, b in zip(runs[top], runs[bottom], strict=True)]
            ratio = statistics.median(per_round)
            ratios.append(f"{top}/{bottom}={ratio:.2f}")
            print(f"  {top}/{bottom}: {ratio:.2f}   [{', '.join(f'{r:.2f}' for r in per_round)}]")
    if "c_tiny" in runs and "b_tiny" in runs:
        extra = [step_us(c) - step_us(b) for c, b in zip(runs["c_tiny"], runs["b_tiny"], strict=True)]
        print(f"  vaelab's fixed cost per step, c_tiny - b_tiny: {statistics.median(extra):.0f} µs   "
              f"[{', '.join(f'{e:.0f}' for e in extra)}]")
    if TAILS:
        print("\nthe untimed last epoch with the end of training (seconds, median and all rounds; every view draws "
              "there once):")
        for overrides, tails in TAILS.items():
            print(f"  {overrides or '(default callbacks)':<40} {statistics.median(tails):6.2f} s   "
                  f"[{', '.join(f'{t:.2f}' for t in tails)}]")
    figures = " ".join(f"{k}={v:,.0f}" for k, v in results.items())
    memory = f"peak RSS {peak_rss_mb():,.0f} MB"
    if device.type == "cuda":
        memory += f", peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**20:,.0f} MB"
    print(f"\nSUMMARY {args.device}: {figures} images/s; {' '.join(ratios)}; {memory}")


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


if __name__ == "__main__":
    main()
