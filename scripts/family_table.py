"""Train and evaluate every family with three seeds and write the table into README.md (vaelab.reports.families).

    ../shared/data/unpack_mnist.sh data              # the four MNIST files where data=mnist looks
    OMP_NUM_THREADS=1 python scripts/family_table.py --jobs 2   # --budget small on a 2-core CPU, two runs at a time
    python scripts/family_table.py --budget full --train-extra trainer=gpu     # for a GPU
    python scripts/family_table.py --families vae,ae --data mnist --seeds 1
    python scripts/family_table.py --render-only     # rewrite the table and plot from logs/families/ as they are

The per-seed numbers go to logs/readme/families/<budget>_<data>.csv (committed): a run's finished seeds replace their
rows there, the other rows are kept, and the README's table and plot are computed from the CSVs alone.

A run that finished before is not run again (a training whose metrics.json says completed, its checkpoint there):
an interrupted table goes on where it stopped, a stopped training from its last.ckpt. SIGTERM, SIGINT (Ctrl-C) or
SIGHUP reach the runs going too: the table passes the signal on, waits for them to end, and exits 128 + the signal.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vaelab.reports.families import (
    BUDGETS,
    END,
    FAMILIES,
    SEEDS,
    START,
    merge_rows,
    plot,
    read_csv,
    render,
    run_table,
    seed_rows,
    write_csv,
)
from vaelab.reports.results import replace_between_markers

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="small")
    parser.add_argument("--families", default=",".join(f.key for f in FAMILIES), help="comma-separated family keys")
    parser.add_argument("--data", default="mnist,shapes", help="comma-separated: mnist, shapes")
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    parser.add_argument("--out", type=Path, default=ROOT / "logs" / "families", help="where the runs go")
    parser.add_argument("--data-dir", default=None, help="data.data_dir for MNIST (default: the config's)")
    parser.add_argument("--train-extra", default="", help="comma-separated overrides for every training run")
    parser.add_argument("--doc", type=Path, default=ROOT / "README.md", help="the file holding the table")
    parser.add_argument("--plot", type=Path, default=ROOT / "logs" / "readme" / "families" / "families.png")
    parser.add_argument("--csv-dir", type=Path, default=ROOT / "logs" / "readme" / "families",
                        help="the per-seed CSVs (<budget>_<data>.csv) the table is computed from")
    parser.add_argument("--jobs", type=int, default=1,
                        help="runs at a time (2 on a 2-core CPU with OMP_NUM_THREADS=1: each run on one core)")
    parser.add_argument("--render-only", action="store_true", help="train nothing; rewrite the table and plot")
    args = parser.parse_args()
    families = args.families.split(",")
    unknown = sorted(set(families) - {f.key for f in FAMILIES})
    if unknown:
        parser.error(f"unknown families {unknown}: choose from {', '.join(f.key for f in FAMILIES)}")
    if not args.render_only:
        run_table(args.budget, args.out.resolve(), ROOT, args.data_dir, families, args.data.split(","),
                  [int(s) for s in args.seeds.split(",")], tuple(o for o in args.train_extra.split(",") if o),
                  args.jobs)
    # the per-seed numbers: this run's finished seeds replace their rows in the committed CSVs, the rest are kept;
    # the table and the plot are computed from the CSVs alone
    rows = {}
    for data in ("mnist", "shapes"):
        path = args.csv_dir / f"{args.budget}_{data}.csv"
        rows[data] = merge_rows(read_csv(path), seed_rows(data, args.out.resolve() / args.budget))
        write_csv(rows[data], data, path)
    table = render(args.budget, rows)
    args.doc.write_text(replace_between_markers(args.doc.read_text(), table, START, END))
    plot(rows, args.plot)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
