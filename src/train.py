"""Train an autoencoder: ``python src/train.py model=vae data=fashion_mnist`` (see conf/train.yaml).

The same command as the installed ``vaelab-train`` (:mod:`vaelab.cli`); from the clone, logs and data go under the
repository's ``logs/`` and ``data/``.
"""

import os
from pathlib import Path

os.environ.setdefault("VAELAB_ROOT", str(Path(__file__).resolve().parents[1]))

from vaelab.cli import train  # noqa: E402

if __name__ == "__main__":
    train()
