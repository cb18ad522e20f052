"""Evaluate a checkpoint on held-out data: ``python src/eval.py ckpt_path=… [data=…]`` (see conf/eval.yaml).

The same command as the installed ``vaelab-eval`` (:mod:`vaelab.cli`); from the clone, logs and data go under the
repository's ``logs/`` and ``data/``.
"""

import os
from pathlib import Path

os.environ.setdefault("VAELAB_ROOT", str(Path(__file__).resolve().parents[1]))

from vaelab.cli import evaluate  # noqa: E402

if __name__ == "__main__":
    evaluate()
