"""Summarise a Hydra multirun sweep: ``python scripts/summarize_sweep.py logs/train/multiruns/<time> [--out DIR]``.

A thin command line over :mod:`vaelab.reports.sweep`, which documents the outputs.
"""

import sys

from vaelab.reports.sweep import main

if __name__ == "__main__":
    sys.exit(main())
