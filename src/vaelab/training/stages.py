"""Training a model in stages: start from the weights of another run's checkpoint, and train only some of its parts.

VQ-VAE's second stage (van den Oord et al. 2017, sec. 3.2) is both: the first stage's model with a learned prior
added to its code, every other weight taken from the first stage's checkpoint, and only the prior trained. The
Lightning module's ``init_from`` and ``trainable`` (:class:`~vaelab.training.module.AutoencoderModule`) use these
functions. Parts are named as the pure model's submodules are (``encoder``, ``decoder``, ``code.prior``, …).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from vaelab.errors import ConfigError
from vaelab.models.legacy import upgrade_checkpoint
from vaelab.trust import read_checkpoint

#: the module hyperparameters that decide the pure model's weights (checked when a checkpoint's do not fit)
SHAPING_KEYS = ("image_shape", "latent_dim", "code", "net", "likelihood")


def inside(name: str, parts: Sequence[str]) -> bool:
    """Whether the parameter or module ``name`` is one of ``parts`` or inside one."""
    return any(name == part or name.startswith(part + ".") for part in parts)


def check_parts(model: nn.Module, parts: Sequence[str]) -> tuple[str, ...]:
    """``parts`` as a tuple, once each is known to be a submodule of ``model`` holding parameters."""
    modules = dict(model.named_modules())
    parts = tuple(str(p) for p in parts)
    known = ", ".join(name for name in modules if name and name.count(".") < 2)
    unknown = [p for p in parts if not p or p not in modules]
    if unknown:
        raise ConfigError(f"model.trainable = {list(parts)} is invalid: {', '.join(map(repr, unknown))} is not a part "
                          f"of this model (its parts: {known})")
    empty = [p for p in parts if not any(True for _ in modules[p].parameters())]
    if empty:
        raise ConfigError(f"model.trainable = {list(parts)} is invalid: {', '.join(empty)} has no parameters, so "
                          "nothing would train")
    return parts


def freeze_all_but(model: nn.Module, parts: Sequence[str]) -> list[nn.Module]:
    """Stop the gradients of every parameter of ``model`` outside ``parts``, and return the modules to keep in eval
    mode: every one that is not inside a part, the parts' ancestors included, so nothing a module does in training
    mode (a VQ codebook's moving averages and restarts, a batch norm's statistics) changes the frozen weights."""
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(inside(name, parts))
    return [module for name, module in model.named_modules() if not inside(name, parts)]


def _flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(config, Mapping):
        flat: dict[str, Any] = {}
        for key, value in config.items():
            flat.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: list(config) if isinstance(config, (list, tuple)) else config}


def differences(stored: Mapping[str, Any], ours: Mapping[str, Any], parts: Sequence[str] = ()) -> list[str]:
    """The settings that shape the weights (:data:`SHAPING_KEYS`) in which a checkpoint's hyperparameters
    ``stored`` differ from ``ours``, as ``model.<key>: <stored> in the checkpoint, <ours> here``; the settings of
    ``parts`` (e.g. ``code.prior``), which the checkpoint need not have, are left out."""
    theirs = _flatten({k: stored.get(k) for k in SHAPING_KEYS})
    mine = _flatten({k: ours.get(k) for k in SHAPING_KEYS})
    found = []
    for key in sorted(set(theirs) | set(mine)):
        if inside(key, parts) or theirs.get(key) == mine.get(key):
            continue
        found.append(f"model.{key}: {theirs.get(key)!r} in the checkpoint, {mine.get(key)!r} here")
    return found


def load_initial_weights(model: nn.Module, path: str | Path, parts: Sequence[str] = (),
                         config: Mapping[str, Any] | None = None) -> None:
    """Load the pure model's weights of the checkpoint file ``path`` into ``model``: every weight of ``model`` must
    be in it with its shape, except those inside ``parts`` (the parts still to train, such as a prior the first
    stage did not have); the checkpoint may hold no weight that ``model`` lacks. The file is read by the one trusted
    loader (:func:`vaelab.trust.read_checkpoint`: a file with pickled objects, interpolations or foreign code in its
    settings is refused unread). Otherwise one :class:`ConfigError` naming the file, what does not fit, and the
    settings (``config``, the module's hyperparameters) that differ."""
    path = Path(str(path))
    where = f"model.init_from = {str(path)!r}"
    checkpoint = read_checkpoint(path, key="model.init_from")  # the one trusted loader, as for ckpt_path
    upgrade_checkpoint(checkpoint)
    state = {k.removeprefix("model."): v for k, v in checkpoint["state_dict"].items() if k.startswith("model.")}
    own = model.state_dict()
    problems = [f"missing {k}" for k in own if k not in state and not inside(k, parts)]
    problems += [f"unexpected {k}" for k in state if k not in own]
    problems += [f"{k} has shape {tuple(state[k].shape)} there, {tuple(own[k].shape)} here"
                 for k in state if k in own and state[k].shape != own[k].shape]
    if problems:
        settings = differences(checkpoint.get("hyper_parameters") or {}, config or {}, parts)
        shown = "; ".join(problems[:6]) + (f"; and {len(problems) - 6} more" if len(problems) > 6 else "")
        advice = ("its settings differ: " + "; ".join(settings) if settings else
                  "check it is a checkpoint of the model to start from")
        raise ConfigError(f"{where}: its weights do not fit this model ({shown}). Give this run the model settings "
                          f"of that one: {advice}")
    model.load_state_dict(state, strict=False)
