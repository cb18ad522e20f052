"""The VQ-VAE figures of docs/models.md: test images and their reconstructions by the first stage, and samples
drawn from the second stage's PixelCNN prior (and, for contrast, from the uniform prior of the first stage).

    python scripts/vqvae_figures.py --stage1 <stage-1 run>/checkpoints/last.ckpt \
        --stage2 <stage-2 run>/checkpoints/last.ckpt --out docs

The images are the likelihood's means (grey levels for a Bernoulli decoder); the samples are drawn with a seeded
generator, so a rerun gives the same pictures.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from hydra.utils import instantiate
from torchvision.utils import save_image

import vaelab
from vaelab.dashboard.grids import upscale
from vaelab.tasks.evaluate import WRITE_KEYS
from vaelab.trust import read_checkpoint


def test_images(checkpoint: Path, n: int, data_dir: str | None) -> torch.Tensor:
    """The first ``n`` test images of the data the checkpoint was trained on (its data settings read by the one
    trusted loader: plain values, vaelab's classes only)."""
    stored = read_checkpoint(checkpoint).get("vaelab_data")
    if stored is None:
        raise SystemExit(f"{checkpoint} does not say which data it was trained on")
    stored = {k: v for k, v in stored.items() if k not in WRITE_KEYS}
    if data_dir:
        stored = {**stored, "data_dir": data_dir}
    datamodule = instantiate(stored)
    datamodule.prepare_data()
    datamodule.setup("test")
    return datamodule.fixed_batch("test", n)[0]


def save_grid(images: torch.Tensor, nrow: int, path: Path, side: int) -> None:
    save_image(upscale(images.clamp(0, 1), side), path, nrow=nrow, padding=2, pad_value=0.5)
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage1", type=Path, required=True, help="the first stage's checkpoint (model=vqvae)")
    parser.add_argument("--stage2", type=Path, required=True, help="the second stage's (model=vqvae_prior)")
    parser.add_argument("--out", type=Path, default=Path("docs"))
    parser.add_argument("--data-dir", default=None, help="where the data is, if not where the run found it")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--side", type=int, default=28, help="enlarge smaller images to this many pixels")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    first, second = vaelab.load(args.stage1), vaelab.load(args.stage2)
    x = test_images(args.stage1, 32, args.data_dir)
    with torch.no_grad():
        recon = first.reconstruct(x)
    rows = torch.stack([x.view(4, 8, *x.shape[1:]), recon.view(4, 8, *x.shape[1:])], dim=1).flatten(0, 2)
    save_grid(rows, 8, args.out / "vqvae_reconstructions.png", args.side)  # input rows above reconstruction rows
    with torch.no_grad():
        samples = second.sample(64, generator=torch.Generator().manual_seed(args.seed))
        uniform = first.sample(16, generator=torch.Generator().manual_seed(args.seed))
    save_grid(samples, 8, args.out / "vqvae_samples.png", args.side)
    save_grid(uniform, 8, args.out / "vqvae_uniform_samples.png", args.side)


if __name__ == "__main__":
    main()
