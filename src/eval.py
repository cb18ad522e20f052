"""Evaluate a checkpoint on held-out data: ``python src/eval.py ckpt_path=… [data=…]`` (see conf/eval.yaml)."""

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

os.environ.setdefault("VAELAB_ROOT", str(Path(__file__).resolve().parents[1]))

from vaelab.tasks import naming  # noqa: E402  (the resolvers of conf/hydra/: run folder names)

# This process's run token, drawn before Hydra resolves the evaluation's folder (and shared with a sweep's workers).
naming.export_run_id()

from vaelab.tasks.evaluate import run_evaluation  # noqa: E402


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
def main(cfg: DictConfig) -> float | None:
    return run_evaluation(cfg)


if __name__ == "__main__":
    main()
