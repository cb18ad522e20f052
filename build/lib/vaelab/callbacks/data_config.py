"""The DataModule's config in every checkpoint, so ``eval.py`` and ``vaelab.load`` need nothing but the checkpoint to
rebuild the data a model was trained on."""

from __future__ import annotations

import os
from typing import Any

from lightning import Callback, LightningModule, Trainer

#: the checkpoint key holding the data config (``_target_`` and the DataModule's hyperparameters)
DATA_KEY = "vaelab_data"


def data_config(datamodule: Any) -> dict[str, Any] | None:
    """``{"_target_": <class>, **hyperparameters}`` of a DataModule with ``hparams`` (paths as strings); None
    for one without."""
    if datamodule is None or not hasattr(datamodule, "hparams"):
        return None
    cls = type(datamodule)
    config = {k: str(v) if isinstance(v, os.PathLike) else v for k, v in datamodule.hparams.items()}
    return {"_target_": f"{cls.__module__}.{cls.__qualname__}", **config}


class DataConfigInCheckpoint(Callback):
    """Writes :func:`data_config` of the trainer's DataModule into every checkpoint (under :data:`DATA_KEY`)."""

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        config = data_config(getattr(trainer, "datamodule", None))
        if config is not None:
            checkpoint[DATA_KEY] = config
