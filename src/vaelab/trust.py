"""Which ``_target_``s may be instantiated from a file vaelab did not compose itself (a checkpoint).

A checkpoint stores the model's settings (``hyper_parameters``: the net's encoder and decoder, the objective, the
β schedule, the optimiser and scheduler, each a Hydra ``_target_`` config) and the data's (``vaelab_data``), and
``src/eval.py`` builds both from it. Loading the file with ``weights_only`` stops pickled code, but a ``_target_``
is code by name: Hydra imports and calls whatever it names. So before anything from a checkpoint is instantiated
(or a class of it looked up), :func:`check_targets` allows only:

- a class defined in vaelab itself (its module is ``vaelab`` or below; a path through vaelab to something else,
  such as ``vaelab.tasks.train.os.system``, is not one);
- a ``torch.optim`` optimiser or ``torch.optim.lr_scheduler`` scheduler class;
- a target the user named in their own config or command line (``allowed_extra``: the ``_target_``s of the composed
  config and its ``trusted_targets`` list).

Anything else is refused with one :class:`~vaelab.errors.ConfigError` naming the key path and the target, and
nothing is imported or called. The check imports only vaelab's modules and ``torch.optim`` to look a name up.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from vaelab.errors import ConfigError

#: the modules whose classes are allowed by their kind (their import runs no code of a checkpoint's choosing)
TORCH_OPTIM = ("torch.optim", "torch.optim.lr_scheduler")


def targets(config: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """Every ``(key path, _target_)`` in ``config`` (dicts, lists, OmegaConf containers), depth first."""
    if isinstance(config, (DictConfig, ListConfig)):
        config = OmegaConf.to_container(config, resolve=False)
    if isinstance(config, Mapping):
        for key, value in config.items():
            where = f"{path}.{key}" if path else str(key)
            if key == "_target_":
                yield where, str(value)
            else:
                yield from targets(value, where)
    elif isinstance(config, (list, tuple)):
        for i, value in enumerate(config):
            yield from targets(value, f"{path}[{i}]")


def _lookup(target: str, prefixes: tuple[str, ...]) -> Any:
    """The object ``target`` names, found by importing only modules under ``prefixes``; None if it is not there."""
    module_name, _, attribute = target.rpartition(".")
    if not module_name or not any(module_name == p or module_name.startswith(p + ".") for p in prefixes):
        return None
    parts = target.split(".")
    for cut in range(len(parts) - 1, 0, -1):  # the longest importable module, then attributes
        name = ".".join(parts[:cut])
        if not any(name == p or name.startswith(p + ".") for p in prefixes):
            return None
        try:
            obj = importlib.import_module(name)
        except ImportError:
            continue
        for part in parts[cut:]:
            obj = getattr(obj, part, None)
            if obj is None:
                return None
        return obj
    return None


def is_builtin_allowed(target: str) -> bool:
    """Whether ``target`` names a class vaelab allows on its own: one of vaelab's classes, a torch optimiser or LR
    scheduler."""
    if target.startswith("vaelab."):
        obj = _lookup(target, ("vaelab",))
        return inspect.isclass(obj) and (obj.__module__ == "vaelab" or obj.__module__.startswith("vaelab."))
    if target.startswith("torch.optim."):
        import torch

        obj = _lookup(target, TORCH_OPTIM)
        if not inspect.isclass(obj) or not obj.__module__.startswith("torch.optim"):
            return False
        schedulers = (torch.optim.lr_scheduler.LRScheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
        return issubclass(obj, (torch.optim.Optimizer, *schedulers))
    return False


def config_targets(cfg: Any) -> set[str]:
    """The ``_target_``s the user's own composed config names, and its ``trusted_targets`` list: what they chose,
    so a checkpoint may name them too."""
    chosen = {target for _, target in targets(cfg)}
    extra = cfg.get("trusted_targets") if isinstance(cfg, (Mapping, DictConfig)) else None
    if extra:
        chosen |= {str(t) for t in (extra if isinstance(extra, (list, tuple, ListConfig)) else [extra])}
    return chosen


def check_targets(config: Any, where: str, allowed_extra: Iterable[str] = ()) -> None:
    """Refuse (:class:`ConfigError`) a ``config`` read from ``where`` (e.g. ``ckpt_path=<file> (hyper_parameters)``)
    that names a ``_target_`` outside the allowed set (see the module), before anything of it is instantiated."""
    extra = set(allowed_extra)
    refused = [(key, target) for key, target in targets(config) if target not in extra
               and not is_builtin_allowed(target)]
    if not refused:
        return
    listed = ", ".join(f"{key} = {target!r}" for key, target in refused[:3]) + (", …" if len(refused) > 3 else "")
    names = ",".join(dict.fromkeys(target for _, target in refused))
    raise ConfigError(
        f"{where} names code that vaelab does not build from a file it did not make: {listed}. Only vaelab's own "
        "classes and torch's optimisers and LR schedulers are built from a checkpoint; nothing of it was run. If you "
        f"trust this file and that code, allow it on the command line: 'trusted_targets=[{names}]'"
    )
