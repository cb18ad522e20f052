#!/usr/bin/env python
"""The whole process, start to exit: a few epochs of the classic VAE through vaelab, PyTorch's example loop and pythae.

    ../shared/data/unpack_mnist.sh data                         # the four MNIST files in data/MNIST/raw
    python scripts/process_benchmark.py --data-dir data         # vaelab, vaelab with test=false, the plain loop
    python scripts/process_benchmark.py --data-dir data --pythae-python /path/to/venv/bin/python   # + pythae

Each variant trains the 784-400-20 MLP VAE (Bernoulli likelihood, Adam 1e-3, batch 128, all 60,000 training images,
no binarisation) for --epochs epochs in a process of its own, timed from the parent's fork to the child's exit:
  vaelab         python src/train.py experiment=mnist_vae_reference trainer.max_epochs=E (default callbacks,
                 TensorBoard, checkpoints, then the test stage: the test −ELBO and the scores at the end of a run)
  vaelab_notest  the same with test=false: the difference is the test stage's cost on its own
  vaelab_minimal the same with callbacks=minimal (no dashboard views; checkpoints and the run record kept)
  vaelab_fused   vaelab_minimal with model.optimizer.fused=true, vaelab's default Adam (the reference experiment
                 turns it off to replicate the example's foreach Adam)
  plain          PyTorch's VAE example (examples/vae/main.py) as published: torchvision's MNIST with ToTensor through a
                 DataLoader; after each epoch the test loss on the 10,000 test images, a reconstruction grid and 64
                 samples saved with save_image
  hand           the example's model, loss and optimiser in a hand-written loop on tensor-resident data (one float
                 tensor, a randperm per epoch), no evaluation until the test −ELBO at the end: a framework's floor
  pythae         pythae's VAE (reconstruction_loss="bce", the same encoder and decoder) through its TrainingPipeline,
                 no evaluation set; its process must have pythae installed (--pythae-python); then the test −ELBO

An epoch's time is the gap between consecutive epochs' ends, the first epoch left out (it holds the warm-up): for
vaelab the wall time of each epoch's `train/loss` event in TensorBoard, for the others a timestamp the child prints.
The variants run in --repeats interleaved rounds after one untimed round (the page cache, the decoded-data cache,
Python's bytecode); medians are reported, and each ratio is the median of the ratios within a round. Peak RSS is the
child's own (os.wait4). Nothing is asserted: the figures are for a person to read.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MARK = "PROCESS_BENCHMARK "  # the line a child prints its timestamps and result on


# --------------------------------------------------------------------------- the children (import only what they use)
def _mnist_arrays(data_dir: Path):
    """MNIST's IDX files as float32 arrays in [0, 1], (n, 1, 28, 28): train and test."""
    import numpy as np

    def images(name: str):
        raw = (data_dir / "MNIST" / "raw" / name).read_bytes()
        return (np.frombuffer(raw, np.uint8, offset=16).reshape(-1, 1, 28, 28).astype(np.float32) / 255.0)

    return images("train-images-idx3-ubyte"), images("t10k-images-idx3-ubyte")


def child_plain(data_dir: Path, epochs: int, out: Path) -> dict:
    """PyTorch's examples/vae/main.py, its defaults (batch 128, Adam 1e-3, seed 1), on the CPU."""
    import torch
    import torch.nn.functional as F
    from reference_vae import ReferenceVAE, reference_loss
    from torchvision import datasets, transforms
    from torchvision.utils import save_image

    torch.manual_seed(1)
    train_loader = torch.utils.data.DataLoader(
        datasets.MNIST(str(data_dir), train=True, download=False, transform=transforms.ToTensor()),
        batch_size=128, shuffle=True)
    test_loader = torch.utils.data.DataLoader(
        datasets.MNIST(str(data_dir), train=False, transform=transforms.ToTensor()), batch_size=128, shuffle=False)
    model = ReferenceVAE()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    ends, test_loss = [], float("nan")
    for epoch in range(1, epochs + 1):
        model.train()
        for data, _ in train_loader:
            optimizer.zero_grad()
            recon, mu, logvar = model(data)
            loss = reference_loss(recon, data, mu, logvar)
            loss.backward()
            optimizer.step()
        model.eval()
        total = 0.0
        with torch.no_grad():
            for i, (data, _) in enumerate(test_loader):
                recon, mu, logvar = model(data)
                total += reference_loss(recon, data, mu, logvar).item()
                if i == 0:
                    n = min(data.size(0), 8)
                    save_image(torch.cat([data[:n], recon.view(128, 1, 28, 28)[:n]]).cpu(),
                               out / f"reconstruction_{epoch}.png", nrow=n)
            test_loss = total / len(test_loader.dataset)
            save_image(model.fc4(F.relu(model.fc3(torch.randn(64, 20)))).sigmoid().view(64, 1, 28, 28),
                       out / f"sample_{epoch}.png")
        ends.append(time.time())
    return {"epoch_ends": ends, "test_nelbo": test_loss}


def child_hand(data_dir: Path, epochs: int, out: Path) -> dict:
    """The example's VAE and loss in a loop over one resident tensor: what a step costs without a framework."""
    import torch
    from reference_vae import ReferenceVAE, reference_loss

    torch.manual_seed(1)
    model = ReferenceVAE()
    train, test = (torch.from_numpy(a) for a in _mnist_arrays(data_dir))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    ends = []
    for _ in range(epochs):
        for index in torch.randperm(len(train)).split(128):
            data = train[index]
            optimizer.zero_grad()
            recon, mu, logvar = model(data)
            loss = reference_loss(recon, data, mu, logvar) / len(data)
            loss.backward()
            optimizer.step()
        ends.append(time.time())
    with torch.no_grad():
        total = 0.0
        for x in test.split(1000):
            recon, mu, logvar = model(x)
            total += reference_loss(recon, x, mu, logvar).item()
    nelbo = total / len(test)
    return {"epoch_ends": ends, "test_nelbo": nelbo}


def child_pythae(data_dir: Path, epochs: int, out: Path) -> dict:
    """pythae's VAE on the same encoder and decoder, trained by its TrainingPipeline."""
    import torch
    import torch.nn.functional as F
    from pythae.models import VAE, VAEConfig
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseEncoder
    from pythae.pipelines import TrainingPipeline
    from pythae.trainers import BaseTrainerConfig
    from pythae.trainers.training_callbacks import TrainingCallback
    from torch import nn

    class Encoder(BaseEncoder):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc21, self.fc22 = nn.Linear(784, 400), nn.Linear(400, 20), nn.Linear(400, 20)

        def forward(self, x):
            h = F.relu(self.fc1(x.reshape(x.shape[0], 784)))
            return ModelOutput(embedding=self.fc21(h), log_covariance=self.fc22(h))

    class Decoder(BaseDecoder):
        def __init__(self):
            super().__init__()
            self.fc3, self.fc4 = nn.Linear(20, 400), nn.Linear(400, 784)

        def forward(self, z):
            return ModelOutput(reconstruction=torch.sigmoid(self.fc4(F.relu(self.fc3(z)))).reshape(-1, 1, 28, 28))

    class EpochEnds(TrainingCallback):
        def __init__(self):
            self.ends = []

        def on_epoch_end(self, training_config, **kwargs):
            self.ends.append(time.time())

    torch.manual_seed(1)
    train, test = _mnist_arrays(data_dir)
    config = VAEConfig(input_dim=(1, 28, 28), latent_dim=20, reconstruction_loss="bce")
    model = VAE(model_config=config, encoder=Encoder(), decoder=Decoder())
    trainer_config = BaseTrainerConfig(output_dir=str(out), num_epochs=epochs, learning_rate=1e-3,
                                       per_device_train_batch_size=128, per_device_eval_batch_size=128,
                                       optimizer_cls="Adam", steps_saving=None, no_cuda=True)
    clock = EpochEnds()
    TrainingPipeline(model=model, training_config=trainer_config)(train_data=train, callbacks=[clock])
    model.eval()
    with torch.no_grad():  # pythae's loss: summed over pixels, averaged over the batch (one z per image)
        x = torch.from_numpy(test)
        nelbo = sum(model({"data": x[i:i + 1000]}).loss.item() * len(x[i:i + 1000]) for i in range(0, len(x), 1000))
    return {"epoch_ends": clock.ends, "test_nelbo": nelbo / len(x)}


CHILDREN = {"plain": child_plain, "hand": child_hand, "pythae": child_pythae}
#: vaelab's variants: the overrides each adds to the reference experiment
VAELAB_VARIANTS = {"vaelab": [], "vaelab_notest": ["test=false"], "vaelab_minimal": ["callbacks=minimal"],
                   "vaelab_fused": ["callbacks=minimal", "model.optimizer.fused=true"]}


# --------------------------------------------------------------------------- the parent
def vaelab_epoch_ends(run_dir: Path) -> list[float]:
    """The wall times of the epochs' `train/loss` events in the run's TensorBoard files."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ends = []
    for events in sorted(run_dir.rglob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events.parent), size_guidance={"scalars": 0})
        accumulator.Reload()
        if "train/loss" in accumulator.Tags()["scalars"]:
            ends = [event.wall_time for event in accumulator.Scalars("train/loss")]
    return ends


def run(variant: str, args, scratch: Path) -> dict:
    """One variant in a process of its own: wall seconds, peak RSS, epoch seconds, test −ELBO."""
    out = Path(tempfile.mkdtemp(prefix=f"{variant}-", dir=scratch))
    if variant.startswith("vaelab"):
        command = [sys.executable, str(ROOT / "src" / "train.py"), "experiment=mnist_vae_reference",
                   f"trainer.max_epochs={args.epochs}", f"data.data_dir={args.data_dir.resolve()}",
                   f"hydra.run.dir={out}"] + VAELAB_VARIANTS[variant]
    else:
        python = args.pythae_python if variant == "pythae" else sys.executable
        command = [python, str(Path(__file__).resolve()), "--child", variant, "--data-dir",
                   str(args.data_dir.resolve()), "--epochs", str(args.epochs), "--out", str(out)]
    log = out / "child.log"
    start = time.time()
    with log.open("w") as sink:
        child = subprocess.Popen(command, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)  # the child's own rusage (its peak RSS), not all children's
    seconds = time.time() - start
    output = log.read_text()
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{variant} failed (exit {os.waitstatus_to_exitcode(status)}):\n{output[-3000:]}")
    if variant.startswith("vaelab"):
        ends = vaelab_epoch_ends(out)
        record = json.loads((out / "metrics.json").read_text())
        nelbo = -record["test"]["test/elbo"] if record.get("test") else float("nan")
    else:
        line = next(line for line in output.splitlines() if line.startswith(MARK))
        result = json.loads(line[len(MARK):])
        ends, nelbo = result["epoch_ends"], result["test_nelbo"]
    if len(ends) != args.epochs:
        sys.exit(f"{variant}: {len(ends)} epoch ends found, {args.epochs} expected")
    gaps = [b - a for a, b in zip(ends[:-1], ends[1:], strict=True)]
    return {"seconds": seconds, "epoch_s": statistics.median(gaps), "test_nelbo": nelbo,
            "rss_mb": usage.ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=ROOT / "data", help="folder holding MNIST/raw/*-ubyte")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds over all variants")
    parser.add_argument("--variants", default="vaelab,vaelab_notest,vaelab_minimal,plain")
    parser.add_argument("--pythae-python", help="a Python with pythae installed: adds the pythae variant")
    parser.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = CHILDREN[args.child](args.data_dir, args.epochs, args.out)
        print(MARK + json.dumps(result), flush=True)
        return
    if args.repeats < 1:
        parser.error("--repeats must be at least 1 (the first round is untimed)")
    if args.epochs < 2:
        parser.error("--epochs must be at least 2: an epoch's time is the gap between two epochs' ends")
    missing = [n for n in ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte", "train-labels-idx1-ubyte",
                           "t10k-labels-idx1-ubyte") if not (args.data_dir / "MNIST" / "raw" / n).is_file()]
    if missing:
        parser.error(f"{args.data_dir}/MNIST/raw lacks {', '.join(missing)}: run ../shared/data/unpack_mnist.sh "
                     f"{args.data_dir}")
    variants = args.variants.split(",") + (["pythae"] if args.pythae_python else [])
    unknown = sorted(set(variants) - {*VAELAB_VARIANTS, *CHILDREN} - ({"pythae"} if args.pythae_python
                                                                               else set()))
    if unknown:
        parser.error(f"unknown variants {unknown} (pythae needs --pythae-python)")
    print(f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; {args.epochs} epochs; variants {variants}")
    runs: dict[str, list[dict]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory(prefix="process-bench-") as scratch:
        for round_ in range(args.repeats + 1):
            for variant in variants:
                result = run(variant, args, Path(scratch))
                label = "untimed" if round_ == 0 else f"round {round_}"
                print(f"  {label:<8} {variant:<14} {result['seconds']:6.1f} s whole, {result['epoch_s']:5.2f} s/epoch, "
                      f"test -ELBO {result['test_nelbo']:.2f}, peak RSS {result['rss_mb']:,.0f} MB", flush=True)
                if round_:
                    runs[variant].append(result)

    def median(variant: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[variant])

    print("\nmedians (seconds):")
    for variant in variants:
        print(f"  {variant:<14} whole {median(variant, 'seconds'):6.1f}   epoch {median(variant, 'epoch_s'):5.2f}   "
              f"test -ELBO {median(variant, 'test_nelbo'):.2f}   peak RSS {median(variant, 'rss_mb'):,.0f} MB")

    def ratio(top: str, bottom: str, key: str) -> str:
        per_round = [b[key] / t[key] for t, b in zip(runs[top], runs[bottom], strict=True)]
        return (f"{bottom}/{top} {key}: {statistics.median(per_round):.2f}  "
                f"[{', '.join(f'{r:.2f}' for r in per_round)}]")

    print("\nhow many times faster (the slower's seconds over the faster's; median of the rounds' ratios):")
    for top, bottom, key in (("vaelab", "plain", "seconds"), ("vaelab", "plain", "epoch_s"),
                             ("vaelab", "pythae", "seconds"), ("vaelab", "pythae", "epoch_s"),
                             ("vaelab_minimal", "pythae", "epoch_s"), ("vaelab_minimal", "plain", "seconds"),
                             ("vaelab_fused", "pythae", "epoch_s"), ("vaelab_minimal", "hand", "epoch_s"),
                             ("vaelab_fused", "hand", "epoch_s"), ("pythae", "hand", "epoch_s")):
        if top in runs and bottom in runs:
            print("  " + ratio(top, bottom, key))
    if "vaelab_notest" in runs and "vaelab" in runs:
        costs = [t["seconds"] - n["seconds"] for t, n in zip(runs["vaelab"], runs["vaelab_notest"], strict=True)]
        print(f"  the test stage on its own (vaelab - vaelab_notest): {statistics.median(costs):.1f} s  "
              f"[{', '.join(f'{c:.1f}' for c in costs)}]")


if __name__ == "__main__":
    main()
