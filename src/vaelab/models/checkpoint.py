"""The pure model from a checkpoint or a model folder: no Lightning, no Trainer, no composed Hydra config.

A checkpoint of :class:`~vaelab.training.module.AutoencoderModule` holds the module's hyperparameters (the pure model's
among them) and the state of ``model.…``; :func:`model_from_checkpoint` rebuilds the
:class:`~vaelab.models.autoencoder.Autoencoder` from those alone (older checkpoints are upgraded on the way,
:mod:`vaelab.models.legacy`); :func:`model_from_folder` rebuilds it from a folder that ``save_pretrained`` wrote
(:mod:`vaelab.models.pretrained`), and :func:`load` takes either, or one on the Hugging Face Hub.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from vaelab.errors import ConfigError
from vaelab.models.autoencoder import Autoencoder
from vaelab.models.legacy import upgrade_checkpoint
from vaelab.models.pretrained import HUB_SCHEME, hub_folder, provenance
from vaelab.trust import CONFIG_FILE, WEIGHTS_FILE, read_checkpoint, read_model_folder, trusted_settings

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


def model_from_folder(folder: str | Path, map_location: str | torch.device = "cpu",
                      trusted_targets: Iterable[str] = ()) -> Autoencoder:
    """The model of the model folder ``folder`` (``model.save_pretrained``), in eval mode on ``map_location``, with
    its provenance. The folder is read by the one trusted loader (:func:`vaelab.trust.read_model_folder`: no pickle,
    ``config.json`` checked as a checkpoint's settings are); settings that are not the model's, or weights that do
    not fit the model they describe, are one :class:`~vaelab.errors.ConfigError` naming the file."""
    folder = Path(folder)
    config, state = read_model_folder(folder, trusted_targets)
    where = folder / CONFIG_FILE
    settings = config["model"]
    unknown = sorted(set(settings) - set(MODEL_KEYS))
    if unknown:
        raise ConfigError(f"{where} is not usable: its \"model\" holds {', '.join(unknown)}, which the model does not "
                          f"take (its settings are {', '.join(MODEL_KEYS)})")
    try:
        model = Autoencoder(**{**settings, "compile": False})
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where} is not usable: the model cannot be built from its \"model\" settings "
                          f"({str(err).splitlines()[0][:300]})") from None
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        raise ConfigError(f"{folder / WEIGHTS_FILE} does not fit the model that {CONFIG_FILE} describes "
                          f"({' '.join(lines[1:3])[:300] or lines[0][:300]}): the two files are of different "
                          "models") from None
    model.provenance = config.get("provenance")
    return model.to(map_location).eval()


def load(path: str | Path, map_location: str | torch.device = "cpu", trusted_targets: Iterable[str] = (),
         cache_dir: str | Path | None = None) -> Autoencoder:
    """The trained model at ``path``: ``encode``, ``decode``, ``embed``, ``reconstruct`` and ``sample`` (see
    :class:`~vaelab.models.autoencoder.Autoencoder`), in eval mode. ``path`` is

    - a checkpoint file, read by :func:`vaelab.trust.read_checkpoint` (tensors and plain values only);
    - a model folder (``model.save_pretrained(folder)``), read by :func:`vaelab.trust.read_model_folder` (no pickle:
      ``torch.load`` is never called);
    - ``"hf://<owner>/<name>[@<revision>]"``: such a folder on the Hugging Face Hub, fetched into its cache
      (``cache_dir``, default ``HF_HUB_CACHE``) or, offline, taken from it
      (:func:`vaelab.models.pretrained.hub_folder`).

    Either way no interpolation is resolved and only vaelab's classes are built from the settings, unless
    ``trusted_targets`` names others (a net class of your own, say). A path that is none of these is one
    :class:`~vaelab.errors.ConfigError` naming it. The model's ``provenance`` (its run, objective, data, test metrics
    and command, for :meth:`~vaelab.models.autoencoder.Autoencoder.save_pretrained`'s card) is filled in from what
    the checkpoint's run folder or the model folder records."""
    if isinstance(path, str) and path.startswith(HUB_SCHEME):
        return model_from_folder(hub_folder(path, cache_dir), map_location, trusted_targets)
    if Path(path).is_dir():
        return model_from_folder(path, map_location, trusted_targets)
    checkpoint = read_checkpoint(Path(path), trusted_targets=trusted_targets)
    model = model_from_checkpoint(checkpoint, map_location, trusted_targets)
    model.provenance = provenance(path, checkpoint)
    return model
