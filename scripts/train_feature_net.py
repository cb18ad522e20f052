"""Train a feature network of the sample-quality metrics and write its weights (a thin command line over
vaelab.metrics.feature_net; see docs/metrics.md).

    python scripts/train_feature_net.py mnist --data-dir data     # MNIST in torchvision's layout under data/
    python scripts/train_feature_net.py digits                    # scikit-learn's 8×8 digits, no files needed
    python scripts/train_feature_net.py shapes_color              # data=shapes_color, rendered, no files needed

It prints the accuracies and the new file's SHA-256; a remade file has a new digest (torch.save stamps each file),
which goes into FEATURE_NETS in src/vaelab/metrics/feature_net.py.
"""

from __future__ import annotations

import argparse
import json
import time

from vaelab.metrics.feature_net import FEATURE_NETS, make_feature_net


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=sorted(FEATURE_NETS))
    parser.add_argument("--data-dir", default="data", help="the data folder (MNIST/raw/ for mnist)")
    parser.add_argument("--out", default=None, help="where to write the weights (default: the shipped file)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="default: 8 for mnist, 60 for digits, 4 for shapes_color")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    report = make_feature_net(args.name, args.data_dir, args.out, epochs=args.epochs, seed=args.seed)
    report["seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(report, indent=2))
    if args.out is None and report["sha256"] != FEATURE_NETS[args.name].sha256:
        print(f"New weights: set FEATURE_NETS[{args.name!r}].sha256 = {report['sha256']!r} in feature_net.py")
    return report


if __name__ == "__main__":
    main()
