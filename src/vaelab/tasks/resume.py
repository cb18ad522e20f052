"""Resuming a run from a checkpoint: where its checkpoints and TensorBoard events go on."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from omegaconf import DictConfig, open_dict

from vaelab.tasks.hydra_job import in_multirun

log = logging.getLogger(__name__)


def continues_its_run(ckpt: Path) -> bool:
    """Whether ``ckpt`` is the ``last.ckpt`` of a run's ``checkpoints/`` folder, written by a ModelCheckpoint
    that saved into that very folder: the one case where resuming should go on writing there."""
    if ckpt.name != "last.ckpt" or ckpt.parent.name != "checkpoints":
        return False
    try:
        callbacks = torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True).get("callbacks", {})
    except Exception:  # not one of vaelab's checkpoints: Lightning reports it when it loads it
        return False
    dirpaths = [state.get("dirpath") for state in callbacks.values() if isinstance(state, dict)]
    return any(d is not None and Path(d).resolve() == ckpt.parent for d in dirpaths)


def continue_in_checkpoint_run(cfg: DictConfig) -> dict[str, str]:
    """Resuming a run from its ``last.ckpt``: write checkpoints, and TensorBoard events, on where that run did.

    Hydra gives the resumed run a folder of its own (its config, log and ``metrics.json``), but Lightning restores
    the best score so far and the best checkpoints only when the checkpoint folder stays the same, and a
    TensorBoard curve continues only in its own folder. This is done only for a single run resuming a run's
    ``last.ckpt`` (see :func:`continues_its_run`), and only for what is configured in its default place
    (``<run>/checkpoints``, ``<run>/tensorboard``); a sweep over a checkpoint, or a start from any other
    checkpoint, writes into its own folder and leaves the old run as it was. Returns what was redirected.
    """
    ckpt = Path(str(cfg.ckpt_path)).resolve()
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
        old_events = ckpt.parent.parent / "tensorboard"
        if (tensorboard is not None and Path(str(tensorboard.get("save_dir"))) == own / "tensorboard"
                and old_events.is_dir()):
            tensorboard.save_dir = moved["tensorboard_dir"] = str(old_events)
    for what, where in moved.items():
        log.info("Resuming %s: %s go on in %s", ckpt, what.removesuffix("_dir"), where)
    return moved


