#!/usr/bin/env python
"""How close the importance-weighted evaluation (-L_K) comes to this machine's matrix-multiply speed.

    python scripts/eval_roofline.py                          # the mnist_binarized_vae model's shapes, K = 5000
    python scripts/eval_roofline.py --ckpt <last.ckpt> --images 100
    OMP_NUM_THREADS=1 python scripts/eval_roofline.py        # one core

The bound decodes K samples per image, so its cost is K decoder passes per image: that many matrix products of the
decoder's shapes, plus the work around them (drawing ε, the activations, the likelihood, the log-sum-exp). The
roofline is a plain chain of matrix products of exactly those shapes (torch.mm on rows of the same chunk size,
nothing else), timed on this machine with the same threads; the evaluation's share of it is its speed in
decoder FLOP/s over the roofline's. FLOPs are counted by torch's own FlopCounterMode on one decoder pass. It
prints the figures and the minutes K = 5000 on 10,000 images would take; it asserts nothing.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from vaelab.metrics.likelihood import importance_weighted_bound
from vaelab.models import Autoencoder
from vaelab.models.checkpoint import load


def decoder_flops(model: Autoencoder) -> int:
    """FLOPs of one decoder pass of one code (matrix products only, as FlopCounterMode counts them)."""
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.decode(torch.zeros(1, model.latent_dim))
    return int(counter.get_total_flops())


def linear_shapes(model: Autoencoder) -> list[tuple[int, int]]:
    """(in, out) of every Linear layer of the decoder, in order."""
    return [(m.in_features, m.out_features) for m in model.decoder.modules() if isinstance(m, torch.nn.Linear)]


def roofline(shapes: list[tuple[int, int]], rows: int, repeats: int) -> float:
    """FLOP/s of a chain of plain matrix products of ``rows`` × in by in × out, for every layer's shape."""
    weights = [torch.randn(i, o) / i**0.5 for i, o in shapes]
    h0 = torch.randn(rows, shapes[0][0])
    flops = sum(2 * rows * i * o for i, o in shapes)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        h = h0
        for w in weights:
            h = torch.mm(h, w)
        times.append(time.perf_counter() - start)
    return flops / statistics.median(times[1:] or times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", help="a checkpoint (default: the mnist_binarized_vae shapes, random weights)")
    parser.add_argument("--k", type=int, default=5000)
    parser.add_argument("--images", type=int, default=20, help="images to time (the bound of 10,000 is extrapolated)")
    parser.add_argument("--batch", type=int, default=10, help="images per call, as eval.py's eval batch")
    parser.add_argument("--chunk", type=int, default=None, help="samples decoded at a time (default: eval.py's)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    torch.manual_seed(0)
    if args.ckpt:
        model = load(args.ckpt)
    else:
        net = {"encoder": {"_target_": "vaelab.models.nets.MLPEncoder", "hidden_dims": [512, 512]},
               "decoder": {"_target_": "vaelab.models.nets.MLPDecoder", "hidden_dims": [512, 512]}}
        model = Autoencoder([1, 28, 28], latent_dim=50, net=net).eval()
    from vaelab.tasks.evaluate import iw_chunk_size

    chunk = args.chunk or iw_chunk_size(args.batch, model.image_shape)
    x = torch.bernoulli(torch.full((args.images, *model.image_shape), 0.13))
    per_sample = decoder_flops(model)
    shapes = linear_shapes(model)
    peak = roofline(shapes, chunk * args.batch, args.repeats + 1)

    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        for i in range(0, args.images, args.batch):
            importance_weighted_bound(model, x[i : i + args.batch], args.k, chunk)
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    speed = per_sample * args.k * args.images / seconds
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}")
    print(f"decoder {' -> '.join(str(i) for i, _ in shapes)} -> {shapes[-1][1]}: {per_sample / 1e6:.3f} MFLOP per "
          f"sample; K = {args.k}, {args.batch} images per call, {chunk} samples per chunk ({chunk * args.batch} rows)")
    print(f"roofline (plain matrix products of those shapes): {peak / 1e9:.1f} GFLOP/s")
    print(f"evaluation: {speed / 1e9:.1f} GFLOP/s = {100 * speed / peak:.0f} % of the roofline; "
          f"{seconds / args.images * 1e3:.1f} ms per image")
    print(f"K = {args.k} on 10,000 images: {seconds / args.images * 10_000 / 60:.1f} min "
          f"({per_sample * args.k * 1e4 / 1e12:.1f} TFLOP)")


if __name__ == "__main__":
    main()
