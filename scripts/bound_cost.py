"""What eval.py's importance-weighted bound costs per image for a hierarchical VAE against a one-layer VAE.

    python scripts/bound_cost.py                 # K = 500, 100 images of 28×28, default threads, best of 3
    python scripts/bound_cost.py --k 5000 --threads 1

Both models are untrained presets on 28×28 images (the cost does not depend on the weights): ``model=hvae`` (latent
layers [32, 16]) and ``model=vae`` with ``latent_dim=32``, each bound computed in eval.py's chunks. Prints the
milliseconds per image of each and their ratio (issue 26 asks for at most 2×).
"""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from vaelab.metrics.likelihood import importance_weighted_bound
from vaelab.models import Autoencoder
from vaelab.tasks.evaluate import iw_chunk_size

CONF = Path(__file__).resolve().parents[1] / "conf"
SHAPE = (1, 28, 28)


def preset(name: str, *overrides: str) -> Autoencoder:
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        m = compose(config_name="train", overrides=[f"model={name}", *overrides]).model
    return Autoencoder(list(SHAPE), latent_dim=m.latent_dim, code=m.code, net=m.net).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=500)
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("VAELAB_ROOT", str(CONF.parent))
    torch.manual_seed(0)
    models = {"vae": preset("vae", "model.latent_dim=32"), "hvae": preset("hvae")}
    x = torch.bernoulli(torch.rand(args.images, *SHAPE))
    chunk = iw_chunk_size(args.images, SHAPE)
    best = dict.fromkeys(models, math.inf)
    for _ in range(args.rounds):  # interleaved, best of the rounds
        for name, model in models.items():
            start = time.perf_counter()
            importance_weighted_bound(model, x, args.k, chunk, generator=torch.Generator().manual_seed(1))
            best[name] = min(best[name], time.perf_counter() - start)
    per_image = {name: 1000 * seconds / args.images for name, seconds in best.items()}
    print(f"K = {args.k}, {args.images} images of 28x28, {torch.get_num_threads()} threads, best of {args.rounds}")
    for name, ms in per_image.items():
        print(f"  {name:5s} {ms:8.2f} ms per image")
    print(f"  hvae / vae = {per_image['hvae'] / per_image['vae']:.2f}")


if __name__ == "__main__":
    main()
