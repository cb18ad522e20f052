"""vaelab from Python: train a small VAE, load it, embed the test set and plot the codes.

    python docs/examples/api_tour.py [--out codes.png]

Runs in a minute on a laptop CPU (the embedded 8x8 digits, 5 epochs); the tests run it, so it keeps working.
"""

from __future__ import annotations

import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

import vaelab  # noqa: E402
from vaelab.data import DigitsDataModule  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="codes.png", help="where to save the plot")
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()

    # 1. train: the command line's overrides, the run's record back (its metrics.json, and run_dir)
    record = vaelab.train(["model=vae", "model.latent_dim=2", f"trainer.max_epochs={args.epochs}",
                           "callbacks=minimal", "logger=none"])
    print(f"trained in {record['seconds']} s: test -ELBO {-record['test']['test/elbo']:.2f} nats, "
          f"run folder {record['run_dir']}")

    # 2. load the best checkpoint as a plain torch module: no Trainer, no Hydra
    model = vaelab.load(record["best_ckpt"])

    # 3. the data module on its own: the test split, as the run saw it
    data = DigitsDataModule(data_dir="data")
    data.setup("test")
    images, labels = data.fixed_batch("test", n=10_000)
    with torch.no_grad():
        codes = model.embed(images)  # μ of q(z|x): one 2-D point per image
        samples = model.sample(16, generator=torch.Generator().manual_seed(0))
    print(f"embedded {len(codes)} test images into {codes.shape[1]} dimensions; sampled {len(samples)} images")

    # 4. plot
    figure, axis = plt.subplots(figsize=(4, 4))
    points = axis.scatter(codes[:, 0], codes[:, 1], c=labels, cmap="tab10", s=6)
    figure.colorbar(points, ax=axis, label="digit")
    axis.set(xlabel="z1", ylabel="z2", title="test digits in the VAE's code")
    figure.savefig(args.out, dpi=100, bbox_inches="tight")
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
