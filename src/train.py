"""Train an autoencoder: ``python src/train.py model=vae data=fashion_mnist`` (see conf/train.yaml)."""

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

os.environ.setdefault("VAELAB_ROOT", str(Path(__file__).resolve().parents[1]))

from vaelab.tasks.train import train  # noqa: E402


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    return train(cfg)


if __name__ == "__main__":
    main()
