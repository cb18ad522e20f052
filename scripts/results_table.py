"""Rerun the results table on real MNIST (docs/results.md) and rewrite it (see vaelab.reports.results for the rows).

    ../shared/data/unpack_mnist.sh data            # the four MNIST files where data=mnist looks
    python scripts/results_table.py                # every row: train, evaluate, rewrite docs/results.md's table
    python scripts/results_table.py --rows replica,conv
    python scripts/results_table.py --render-only  # rewrite the table from logs/results/ as it is
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vaelab.reports.results import ROWS, render, replace_between_markers, run_rows

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default=",".join(r.key for r in ROWS), help="comma-separated row keys")
    parser.add_argument("--out", type=Path, default=ROOT / "logs" / "results", help="where the runs go")
    parser.add_argument("--data-dir", default=None, help="data.data_dir for MNIST (default: the config's)")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "results.md", help="the file holding the table")
    parser.add_argument("--render-only", action="store_true", help="train nothing; rewrite the table")
    args = parser.parse_args()
    chosen = args.rows.split(",")
    unknown = sorted(set(chosen) - {r.key for r in ROWS})
    if unknown:
        parser.error(f"unknown rows {unknown}: choose from {', '.join(r.key for r in ROWS)}")
    if not args.render_only:  # (a SIGTERM stops it with its run, which records how far it got)
        run_rows(tuple(row for row in ROWS if row.key in chosen), args.out.resolve(), ROOT, args.data_dir)
    table = render(ROWS, args.out)
    args.doc.write_text(replace_between_markers(args.doc.read_text(), table))
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
