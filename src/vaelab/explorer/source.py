"""What the explorer shows: the model, and the data it was trained on when they can be had.

A checkpoint that records its data (``vaelab_data``) is read as ``vaelab-eval`` reads it
(:func:`vaelab.tasks.evaluate.load`: the one trusted loader, the checkpoint's data settings with any ``data.<key>=…``
given); a model folder, ``hf://…``, or a checkpoint without data settings gives the model alone
(:func:`vaelab.load`), and the page then offers uploads only, saying why. So do data that cannot be read here
(files missing offline, say): the reason is shown, the model is still explored.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from vaelab.errors import VaelabError
from vaelab.models import Autoencoder
from vaelab.models.samplers import GaussianMixtureSampler, check_fits_data

log = logging.getLogger(__name__)


@dataclass
class Source:
    """The model to explore, its data module (None: uploads only, for the reason ``no_data``), and the Gaussian
    mixture sampler once fitted."""

    model: Autoencoder
    datamodule: Any = None
    no_data: str | None = None
    gmm_settings: dict[str, Any] = field(default_factory=dict)
    _gmm: GaussianMixtureSampler | None = None

    @property
    def has_data(self) -> bool:
        return self.datamodule is not None

    @property
    def num_test_images(self) -> int:
        return len(self.datamodule.splits["test"][0]) if self.has_data else 0

    def test_image(self, index: int) -> torch.Tensor:
        """Test image ``index`` as floats in [0, 1], ``(C, H, W)`` (as the evaluation sees it)."""
        images, _ = self.datamodule.splits["test"]
        return self.datamodule.convert(images[index : index + 1])[0]

    def test_label(self, index: int) -> int:
        """Test image ``index``'s class, the one a conditional model is given for it (for factor labels, the data's
        class factor, as training gives it: :meth:`~vaelab.data.base.ImageDataModule.class_labels`)."""
        _, labels = self.datamodule.splits["test"]
        return int(self.datamodule.class_labels(labels[index : index + 1])[0])

    def class_names(self) -> list[str]:
        """The data's class names (none without data)."""
        return list(getattr(self.datamodule, "class_names", ())) if self.has_data else []

    def gmm(self) -> GaussianMixtureSampler:
        """The Gaussian mixture sampler fitted on the training codes (once, on first use); ConfigError when there
        are too few codes for its components."""
        if self._gmm is None:
            from vaelab.explorer.views import fit_gmm

            sampler = GaussianMixtureSampler(**self.gmm_settings)
            check_fits_data(sampler, self.datamodule)
            self._gmm = fit_gmm(self.model, self.datamodule, sampler)
        return self._gmm


def load_source(cfg: DictConfig) -> Source:
    """The model of ``cfg.ckpt_path`` and, for a checkpoint that records them, its data (see the module)."""
    from vaelab.trust import peek

    gmm = dict(cfg.gmm)
    path = str(cfg.ckpt_path)
    if not Path(path).is_file():  # a model folder or hf://: no data settings
        return Source(_model_alone(cfg), no_data="a model folder records no data set", gmm_settings=gmm)
    if peek(path, "vaelab_data") is None:  # (nothing is built from what peek reads: None or not)
        return Source(_model_alone(cfg), no_data="this checkpoint does not record its data set", gmm_settings=gmm)
    from vaelab.tasks.evaluate import load

    model, datamodule, _ = load(cfg)
    try:
        datamodule.prepare_data()
        datamodule.setup("test")
    except VaelabError as err:
        log.warning("The model's data cannot be read here, so the explorer offers uploads only: %s", err)
        return Source(model, no_data=f"its data cannot be read here ({err})", gmm_settings=gmm)
    return Source(model, datamodule, gmm_settings=gmm)


def _model_alone(cfg: DictConfig) -> Autoencoder:
    from vaelab.models.checkpoint import load
    from vaelab.tasks.evaluate import resolve_device
    from vaelab.trust import config_targets

    return load(str(cfg.ckpt_path), map_location=resolve_device(cfg.device), trusted_targets=config_targets(cfg))
