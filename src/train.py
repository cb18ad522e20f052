"""Train an autoencoder: ``python src/train.py model=vae data=fashion_mnist`` (see conf/train.yaml)."""

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

os.environ.setdefault("VAELAB_ROOT", str(Path(__file__).resolve().parents[1]))

from vaelab.tasks import naming  # noqa: E402  (the resolvers of conf/hydra/: run folder names)

# This process's run token, drawn before Hydra resolves the run folder and inherited by the processes started from
# here (Lightning's DDP workers, joblib workers), so all of them see one folder.
naming.export_run_id()

from vaelab.tasks.train import train  # noqa: E402


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    return train(cfg)


if __name__ == "__main__":
    main()
