"""The pure model from a checkpoint: no Lightning, no Trainer, no composed Hydra config.

A checkpoint of :class:`~vaelab.training.module.AutoencoderModule` holds the module's hyperparameters (the pure model's
among them) and the state of ``model.…``; :func:`model_from_checkpoint` rebuilds the
:class:`~vaelab.models.autoencoder.Autoencoder` from those alone (older checkpoints are upgraded on the way,
:mod:`vaelab.models.legacy`).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from vaelab.models.autoencoder import Autoencoder
from vaelab.models.legacy import upgrade_checkpoint
from vaelab.trust import read_checkpoint, trusted_settings

#: the module's hyperparameters that are the pure model's (all of Autoencoder's arguments)
MODEL_KEYS = tuple(inspect.signature(Autoencoder.__init__).parameters)[1:]


def model_config(hparams: dict[str, Any]) -> dict[str, Any]:
    """The pure model's arguments among a module's hyperparameters (never compiled when loaded)."""
    config = {k: hparams[k] for k in MODEL_KEYS if k in hparams}
    config["compile"] = False
    return config


def model_from_checkpoint(checkpoint: dict[str, Any], map_location: str | torch.device = "cpu",
                          trusted_targets: Iterable[str] = ()) -> Autoencoder:
    """The trained pure model of a checkpoint dict (as ``torch.load`` reads it), in eval mode on ``map_location``.

    The settings are built the trusted way (:func:`vaelab.trust.trusted_settings`: plain values, no interpolation,
    only vaelab's own classes and ``trusted_targets``), whatever read the dict. Raises that ConfigError, KeyError for
    a dict without ``hyper_parameters`` or ``state_dict``, and what ``load_state_dict`` raises for weights that do
    not fit the model the hyperparameters describe.
    """
    upgrade_checkpoint(checkpoint)
    config = trusted_settings(model_config(checkpoint["hyper_parameters"]),
                              "the checkpoint's model settings (hyper_parameters)", trusted_targets)
    model = Autoencoder(**config)
    state = {k.removeprefix("model."): v for k, v in checkpoint["state_dict"].items() if k.startswith("model.")}
    model.load_state_dict(state)
    return model.to(map_location).eval()


def load(path: str | Path, map_location: str | torch.device = "cpu", trusted_targets: Iterable[str] = ()
         ) -> Autoencoder:
    """The trained model of the checkpoint file ``path``: ``encode``, ``decode``, ``embed``, ``reconstruct`` and
    ``sample`` (see :class:`~vaelab.models.autoencoder.Autoencoder`), in eval mode. The file is read by the one
    trusted loader (:func:`vaelab.trust.read_checkpoint`): tensors and plain values only, no interpolation, and only
    vaelab's classes are built from its settings, unless ``trusted_targets`` names others (a net class of your own,
    say). A file that is not such a checkpoint is one :class:`~vaelab.errors.ConfigError` naming it."""
    checkpoint = read_checkpoint(Path(path), trusted_targets=trusted_targets)
    return model_from_checkpoint(checkpoint, map_location, trusted_targets)
