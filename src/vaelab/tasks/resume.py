"""Resuming a run from a checkpoint: where its checkpoints and TensorBoard events go on, and whether a checkpoint
file is one vaelab can use at all."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from vaelab.errors import ConfigError
from vaelab.models.legacy import upgrade_state_dict
from vaelab.tasks.hydra_job import in_multirun
from vaelab.trust import peek

log = logging.getLogger(__name__)


def continues_its_run(ckpt: Path) -> bool:
    """Whether ``ckpt`` is the ``last.ckpt`` of a run's ``checkpoints/`` folder, written by a ModelCheckpoint
    that saved into that very folder: the one case where resuming should go on writing there."""
    if ckpt.name != "last.ckpt" or ckpt.parent.name != "checkpoints":
        return False
    callbacks = peek(ckpt, "callbacks", {})
    if not isinstance(callbacks, dict):
        return False
    dirpaths = [state.get("dirpath") for state in callbacks.values() if isinstance(state, dict)]
    return any(d is not None and Path(d).resolve() == ckpt.parent for d in dirpaths)


def continue_in_checkpoint_run(cfg: DictConfig, settings_changed: bool = False) -> dict[str, str]:
    """Resuming a run from its ``last.ckpt``: write checkpoints, and TensorBoard events, on where that run did.

    Hydra gives the resumed run a folder of its own (its config, log and ``metrics.json``), but Lightning restores
    the best score so far and the best checkpoints only when the checkpoint folder stays the same, and a
    TensorBoard curve continues only in its own folder. This is done only for a single run resuming a run's
    ``last.ckpt`` (see :func:`continues_its_run`), and only for what is configured in its default place
    (``<run>/checkpoints``, TensorBoard events in ``<run>``); a sweep over a checkpoint, or a start from any other
    checkpoint, writes into its own folder and leaves the old run as it was; so does a resume whose settings differ
    from those the checkpoint records (``settings_changed``, see :func:`changed_settings`): the old run's config
    would no longer describe its checkpoints. Returns what was redirected.
    """
    ckpt = Path(str(cfg.ckpt_path)).resolve()
    if settings_changed:
        log.warning("Starting from %s with other settings: this run writes its checkpoints and events into its own "
                    "folder %s, and %s stays as it was", ckpt, cfg.paths.output_dir, ckpt.parent.parent)
        return {}
    if in_multirun() or not continues_its_run(ckpt):
        log.info("Starting from %s: this run writes its checkpoints into its own folder (the best score from "
                 "before is not carried over)", ckpt)
        return {}
    own = Path(str(cfg.paths.output_dir))
    moved = {}
    with open_dict(cfg):
        checkpoint = (cfg.get("callbacks") or {}).get("model_checkpoint")
        if checkpoint is not None and Path(str(checkpoint.get("dirpath"))) == own / "checkpoints":
            checkpoint.dirpath = moved["checkpoints_dir"] = str(ckpt.parent)
        tensorboard = (cfg.get("logger") or {}).get("tensorboard")
        if tensorboard is not None and Path(str(tensorboard.get("save_dir"))) in (own, own / "tensorboard"):
            old_run = ckpt.parent.parent
            # events straight in the run folder; a run from before that kept them in <run>/tensorboard
            old_events = old_run / "tensorboard" if (old_run / "tensorboard").is_dir() else old_run
            tensorboard.save_dir = moved["tensorboard_dir"] = str(old_events)
    for what, where in moved.items():
        log.info("Resuming %s: %s go on in %s", ckpt, what.removesuffix("_dir"), where)
    return moved


# ------------------------------------------------------------------------------------------ settings of a checkpoint
#: settings that change how a run is carried out, not what it computes: a resume may change them freely
RUNTIME_SETTINGS = {
    "model": ("image_shape", "compile", "channels_last"),
    "data": ("data_dir", "cache", "cache_dir", "num_workers", "pin_memory", "loader", "eval_batch_size", "download"),
}


def _flat(value: Any, prefix: str) -> dict[str, Any]:
    value = _plain(value)
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            out.update(_flat(item, f"{prefix}.{key}"))
        return out
    return {prefix: value}


def changed_settings(checkpoint: dict[str, Any], cfg: DictConfig) -> dict[str, tuple[Any, Any]]:
    """The settings this config gives differently from what ``checkpoint`` records of its own run (the model's
    hyperparameters and the data's settings), as ``{key: (the checkpoint's, this config's)}``, keys named as on the
    command line (``data.batch_size``). Settings of how the run is carried out (:data:`RUNTIME_SETTINGS`: where the
    data are, loaders, compilation) are left out, and so are keys one side does not have."""
    changed = {}
    for group, stored in (("model", checkpoint.get("hyper_parameters")), ("data", checkpoint.get("vaelab_data"))):
        given = OmegaConf.select(cfg, group, default=None)
        if not isinstance(stored, dict) or given is None:
            continue
        given = OmegaConf.to_container(given, resolve=True)
        for key in set(stored) & set(given):
            if key in RUNTIME_SETTINGS[group] or key in ("_recursive_", "_partial_"):
                continue
            if key == "_target_":  # another class of data set (the stored name is the class's full path)
                if str(stored[key]).rsplit(".", 1)[-1] != str(given[key]).rsplit(".", 1)[-1]:
                    changed[f"{group}"] = (stored[key], given[key])
                continue
            theirs, ours = _flat(stored[key], f"{group}.{key}"), _flat(given[key], f"{group}.{key}")
            for name in sorted(set(theirs) | set(ours)):
                if theirs.get(name) != ours.get(name):
                    changed[name] = (theirs.get(name), ours.get(name))
    return dict(sorted(changed.items()))


def say_changed_settings(changed: dict[str, tuple[Any, Any]], path: Path) -> dict[str, dict[str, Any]]:
    """Log which settings differ from the checkpoint's; return them for the run's record."""
    listed = ", ".join(f"{key}={ours!r} (the checkpoint: {theirs!r})" for key, (theirs, ours) in changed.items())
    log.warning("ckpt_path=%s was trained with other settings than these: %s", path, listed)
    return {key: {"checkpoint": theirs, "here": ours} for key, (theirs, ours) in changed.items()}


# ---------------------------------------------------------------------------------------------- checking a checkpoint
def check_fits_model(checkpoint: dict[str, Any], model: torch.nn.Module, path: Path) -> None:
    """Refuse to resume ``checkpoint`` into a ``model`` of another shape (another latent size, net or data), naming
    the settings that differ, instead of Lightning's long list of mismatched tensors."""
    own, theirs = model.state_dict(), upgrade_state_dict(dict(checkpoint["state_dict"]))
    differing = sorted(own.keys() ^ theirs.keys())
    differing += [k for k in own.keys() & theirs.keys()
                  if hasattr(theirs[k], "shape") and tuple(own[k].shape) != tuple(theirs[k].shape)]
    if not differing:
        return
    ours, stored = dict(getattr(model, "hparams", {})), checkpoint.get("hyper_parameters", {})
    settings = [f"{'model.' if key != 'image_shape' else ''}{key}={stored[key]!r} (here {ours[key]!r})"
                for key in ("image_shape", "latent_dim", "net", "objective", "likelihood")
                if key in ours and key in stored and _plain(ours[key]) != _plain(stored[key])]
    said = ("It was trained with " + ", ".join(settings) + ": give the same settings"
            + (" and data (image_shape is the data's)" if any(s.startswith("image_shape") for s in settings) else "")
            if settings else "Give the model settings it was trained with")
    raise ConfigError(
        f"ckpt_path={path} does not fit the model of this config: {len(differing)} weights differ in name or shape "
        f"({', '.join(differing[:3])}{', …' if len(differing) > 3 else ''}). {said} to resume it."
    )


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
