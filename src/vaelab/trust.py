"""The one trusted loader: what vaelab builds from a file it did not compose itself (a checkpoint) can run no code
and reach nothing outside its run.

A checkpoint stores the model's settings (``hyper_parameters``: the net's encoder and decoder, the objective, the
β schedule, the optimiser and scheduler, each a Hydra ``_target_`` config) and the data's (``vaelab_data``), and
``src/eval.py``, ``vaelab.load``, a resume and ``model.init_from`` read them. Three things stand between such a file
and code of its choosing, and :func:`read_checkpoint` (every route's way in) applies all three:

1. **No pickled code.** The file is read with ``torch.load(weights_only=True)``: tensors and plain values only; a
   file holding other Python objects is refused unread, with the reason.
2. **No interpolations, nothing but plain values** (:func:`plain_settings`). OmegaConf resolves a string such as
   ``"${oc.create:{_target_: …}}"`` or ``"${oc.env:HOME}"`` when Hydra instantiates a config, and a resolver can
   make a ``_target_`` that no check saw. So the settings are turned into plain dicts, lists, strings, numbers,
   booleans and None; a string holding ``${`` anywhere, a key that is not a string, any other type, and a Hydra key
   other than ``_target_``, ``_partial_``, ``_recursive_``, ``_convert_`` and ``_args_`` (each of its type) are
   refused. The checked plain object is the very one that is instantiated: nothing is resolved between the check
   and the build.
3. **Only allowed code by name** (:func:`check_targets`). A ``_target_`` is code by name: Hydra imports and calls
   whatever it names. Allowed are

   - a class defined in vaelab itself (its module is ``vaelab`` or below; a path through vaelab to something else,
     such as ``vaelab.tasks.train.os.system``, is not one);
   - a ``torch.optim`` optimiser or ``torch.optim.lr_scheduler`` scheduler class;
   - a target the user named in their own config or command line (``allowed_extra``: the ``_target_``s of the
     composed config and its ``trusted_targets`` list).

Anything else is refused with one :class:`~vaelab.errors.ConfigError` naming the file, the key path and what was
found, before anything of the file is imported, resolved or called.

A model folder (``model.save_pretrained(folder)``, or a Hugging Face Hub repository of one) is read here too, by
:func:`read_model_folder`: its weights (``model.safetensors``) by ``safetensors`` (raw tensors, no pickle at all, so
1 holds by construction) and the whole of its ``config.json`` through 2 and 3, as a checkpoint's settings are.

What a checkpoint's paths may touch (the checkpoint callback's state on a resume) is kept inside the run by
:class:`vaelab.callbacks.checkpoint.RunCheckpoint`.
"""

from __future__ import annotations

import importlib
import inspect
import pickle
import warnings
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from vaelab.errors import ConfigError

#: the modules whose classes are allowed by their kind (their import runs no code of a checkpoint's choosing)
TORCH_OPTIM = ("torch.optim", "torch.optim.lr_scheduler")
#: the keys Hydra's ``instantiate`` reads, and the type each may have in a file's settings
HYDRA_KEYS: dict[str, tuple[type, ...]] = {
    "_target_": (str,), "_partial_": (bool,), "_recursive_": (bool,), "_convert_": (str,), "_args_": (list,),
}
#: the values a file's settings may hold
PLAIN_LEAVES = (str, int, float, bool, type(None))
#: the parts of a checkpoint that hold settings vaelab builds from
SETTINGS_KEYS = ("hyper_parameters", "vaelab_data")
#: what every checkpoint Lightning writes for vaelab holds
CHECKPOINT_KEYS = ("state_dict", "hyper_parameters", "epoch", "global_step")
#: what resuming needs on top (a checkpoint saved with ``save_weights_only`` lacks them)
TRAINING_STATE_KEYS = ("optimizer_states", "loops")
#: the model's own hyperparameters, the first two of which mark vaelab's checkpoints
MODEL_FIELDS = ("image_shape", "latent_dim", "objective", "net", "likelihood")


# ------------------------------------------------------------------------------------------------ plain settings
def _refuse_value(where: str, key: str, why: str) -> ConfigError:
    return ConfigError(f"{where} holds {key or 'its top level'} = {why}: vaelab builds nothing from a file that holds "
                       "such a value (a checkpoint vaelab wrote holds plain values only); nothing of it was run")


def plain_settings(value: Any, where: str, path: str = "") -> Any:
    """``value`` (a file's settings) as plain Python containers, or one :class:`ConfigError` naming ``where`` and the
    key that holds an interpolation (``${…}``), a non-string key, a Hydra key of the wrong type or one Hydra would
    otherwise treat specially, or a value that is not a plain string, number, boolean or None (see the module)."""
    if isinstance(value, (DictConfig, ListConfig)):
        value = OmegaConf.to_container(value, resolve=False)
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            where_key = f"{path}.{key}" if path else str(key)
            if not isinstance(key, str):
                raise _refuse_value(where, f"{path or 'a mapping'}[{key!r}]", "a key that is not a string")
            if "${" in key:
                raise _refuse_value(where, where_key, "an interpolation in a key")
            if key.startswith("_") and key.endswith("_") and len(key) > 2:
                if key not in HYDRA_KEYS:
                    raise _refuse_value(where, where_key, f"{item!r}, a key Hydra treats specially")
                if not isinstance(item, HYDRA_KEYS[key]):
                    raise _refuse_value(where, where_key, f"{item!r} (it must be a {HYDRA_KEYS[key][0].__name__})")
            out[key] = plain_settings(item, where, where_key)
        return out
    if isinstance(value, (list, tuple)):
        return [plain_settings(item, where, f"{path}[{i}]") for i, item in enumerate(value)]
    if not isinstance(value, PLAIN_LEAVES):
        raise _refuse_value(where, path, f"a {type(value).__name__}, not a plain value")
    if isinstance(value, str) and "${" in value:
        raise _refuse_value(where, path, f"{value[:80]!r}, an interpolation (OmegaConf would resolve it)")
    return value


# ------------------------------------------------------------------------------------------------- allowed targets
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


def trusted_settings(value: Any, where: str, allowed_extra: Iterable[str] = ()) -> Any:
    """A file's settings made plain (:func:`plain_settings`) and their targets checked (:func:`check_targets`):
    the object to instantiate, and the only one."""
    value = plain_settings(value, where)
    check_targets(value, where, allowed_extra)
    return value


# ---------------------------------------------------------------------------------------------- reading the file
def load_file(path: str | Path, mmap: bool = False) -> Any:
    """The tensors and plain values of the PyTorch file ``path`` (``weights_only``: no pickled code is run), on the
    CPU. Errors are torch's: :func:`read_checkpoint` turns them into one message."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.load(Path(path), map_location="cpu", weights_only=True, mmap=mmap)


def peek(path: str | Path, key: str, default: Any = None) -> Any:
    """One plain entry (``epoch``, ``callbacks``) of a checkpoint file, or ``default`` where the file cannot be
    read or has no such entry; never anything built from it."""
    try:
        checkpoint = load_file(path, mmap=True)
    except Exception:  # not one of vaelab's checkpoints: the route that uses it says so when it reads it whole
        return default
    return checkpoint.get(key, default) if isinstance(checkpoint, dict) else default


def _unusable(key: str, path: Path, why: str) -> ConfigError:
    return ConfigError(f"{key}={path} is not a usable checkpoint: {why}")


def _load_checked(path: Path, key: str) -> Any:
    """``load_file(path)``, or one ConfigError for a missing, empty, non-zip, pickled-object or damaged file."""
    if not path.is_file():
        raise _unusable(key, path, "there is no such file (it must be a checkpoint file, e.g. "
                                   "logs/train/runs/<run>/checkpoints/last.ckpt)")
    if path.stat().st_size == 0:
        raise _unusable(key, path, "the file is empty (0 bytes), as a run killed while saving it leaves it. Use "
                                   "another checkpoint of that run, e.g. its checkpoints/epoch_….ckpt")
    if not zipfile.is_zipfile(path):
        raise _unusable(key, path, "it is not a PyTorch checkpoint file (torch.save and Lightning write zip archives; "
                                   "this file is not one: it is truncated, or another kind of file)")
    try:
        return load_file(path)
    except pickle.UnpicklingError as err:
        if "weights only" in str(err).lower():
            raise _unusable(key, path, "it holds Python objects other than tensors and plain values, so it is not a "
                                       "checkpoint Lightning wrote for vaelab (it is not loaded: unpickling such a "
                                       "file can run arbitrary code)") from None
        raise _unusable(key, path, f"it cannot be read ({str(err).splitlines()[0]})") from None
    except Exception as err:  # a damaged archive: torch reports it in many ways
        first = (str(err).splitlines() or [""])[0][:200]
        raise _unusable(key, path, f"it cannot be read ({type(err).__name__}: {first})") from None


def read_checkpoint(path: str | Path, resume: bool = False, key: str = "ckpt_path",
                    trusted_targets: Iterable[str] = ()) -> dict[str, Any]:
    """The checkpoint file ``path``, read the one trusted way (see the module): tensors and plain values only, a
    checkpoint of vaelab's model (with its training state when ``resume``), finite weights, and its settings
    (:data:`SETTINGS_KEYS`) plain, free of interpolations and naming only allowed code (``trusted_targets`` too).
    Anything else is one :class:`ConfigError` that names ``key=path`` and what is wrong."""
    path = Path(path)
    checkpoint = _load_checked(path, key)
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        found = ", ".join(map(str, list(checkpoint)[:8])) if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise _unusable(key, path, f"it is a PyTorch file but not a Lightning checkpoint (it holds {found or 'nothing'}"
                                   f"; a vaelab checkpoint has {', '.join(CHECKPOINT_KEYS)}, …)")
    hparams = checkpoint.get("hyper_parameters")
    if not isinstance(hparams, dict) or not all(k in hparams for k in MODEL_FIELDS[:2]):
        raise _unusable(key, path, "it is a Lightning checkpoint, but not of vaelab's model (its hyper_parameters "
                                   f"have no {' / '.join(MODEL_FIELDS[:2])}: a model saved by another program)")
    missing = [k for k in CHECKPOINT_KEYS if k not in checkpoint]
    if missing:
        raise _unusable(key, path, f"it has no {', '.join(missing)}")
    if resume:
        missing = [k for k in TRAINING_STATE_KEYS if k not in checkpoint]
        if missing:
            raise _unusable(key, path, f"it holds the weights only (no {', '.join(missing)}: saved with "
                                       "save_weights_only), so training cannot resume from it. Evaluate it with "
                                       "src/eval.py, or train afresh without ckpt_path")
    if not isinstance(checkpoint["state_dict"], dict):
        raise _unusable(key, path, "its state_dict is not a mapping of weights")
    _check_finite(checkpoint["state_dict"], key, path)
    names = {"hyper_parameters": "model settings", "vaelab_data": "data settings"}
    for part in SETTINGS_KEYS:
        if checkpoint.get(part) is not None:
            checkpoint[part] = trusted_settings(checkpoint[part], f"{key}={path} (its {names[part]}, {part})",
                                                trusted_targets)
    return checkpoint


def _non_finite(state_dict: dict[str, Any]) -> list[str]:
    """The names of the floating-point tensors of ``state_dict`` that hold a NaN or an inf."""
    import torch

    return [name for name, value in state_dict.items()
            if torch.is_tensor(value) and value.is_floating_point() and not bool(torch.isfinite(value).all())]


def _check_finite(state_dict: dict[str, Any], key: str, path: Path) -> None:
    bad = _non_finite(state_dict)
    if bad:
        raise _unusable(key, path, f"its weights are not finite (NaN or inf in {', '.join(bad[:3])}"
                                   f"{', …' if len(bad) > 3 else ''}): it was saved after its run diverged. Use an "
                                   "earlier checkpoint of that run (checkpoints/epoch_….ckpt)")


# ------------------------------------------------------------------------------------------ reading a model folder
#: the files of a model folder (``Autoencoder.save_pretrained``; a Hugging Face Hub model repository holds the same)
CONFIG_FILE, WEIGHTS_FILE, CARD_FILE = "config.json", "model.safetensors", "README.md"
#: what ``config.json`` says it is (``format``), and the layout this vaelab reads and writes (``format_version``)
FOLDER_FORMAT, FOLDER_FORMAT_VERSION = "vaelab-pretrained", 1
#: what a model folder is, said in every message about one
FOLDER_IS = (f"a model folder holds {CONFIG_FILE} and {WEIGHTS_FILE}, as model.save_pretrained(folder) writes them "
             "(a checkpoint is a file: give its path instead)")


def _unusable_file(path: Path, why: str) -> ConfigError:
    return ConfigError(f"{path} is not usable: {why}; {FOLDER_IS}")


def _read_folder_config(path: Path) -> dict[str, Any]:
    """The JSON object of ``config.json`` at ``path``, of this format and version, or one ConfigError naming it."""
    import json

    if not path.is_file():
        raise _unusable_file(path, "there is no such file")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise _unusable_file(path, f"it is not a JSON file ({str(err).splitlines()[0][:200]})") from None
    if not isinstance(config, dict):
        raise _unusable_file(path, f"it holds a JSON {type(config).__name__}, where it must hold one object")
    if config.get("format") != FOLDER_FORMAT:
        raise _unusable_file(path, f"its \"format\" is {config.get('format')!r}: it must be {FOLDER_FORMAT!r} (this "
                                   "is not a vaelab model's config.json)")
    if config.get("format_version") != FOLDER_FORMAT_VERSION:
        raise _unusable_file(path, f"its \"format_version\" is {config.get('format_version')!r}: it must be "
                                   f"{FOLDER_FORMAT_VERSION}, the layout this vaelab reads (a newer vaelab wrote it? "
                                   "update vaelab)")
    model = config.get("model")
    if not isinstance(model, dict) or not all(k in model for k in MODEL_FIELDS[:2]):
        raise _unusable_file(path, f"its \"model\" must be an object holding the model's settings "
                                   f"({' / '.join(MODEL_FIELDS[:2])}, …)")
    return config


def _read_weights(path: Path) -> dict[str, Any]:
    """The tensors of the safetensors file ``path`` (``safetensors.torch.load_file``: a header of names, dtypes and
    shapes, then raw bytes; nothing is unpickled), finite, or one ConfigError naming it."""
    from safetensors.torch import load_file as load_safetensors

    if not path.is_file():
        raise _unusable_file(path, "there is no such file")
    try:
        state_dict = load_safetensors(path, device="cpu")
    except Exception as err:  # safetensors reports a damaged header or truncated data in several ways
        first = (str(err).splitlines() or [""])[0][:200]
        raise _unusable_file(path, f"it cannot be read as a safetensors file ({type(err).__name__}: {first})") from None
    bad = _non_finite(state_dict)
    if bad:
        raise _unusable_file(path, f"its weights are not finite (NaN or inf in {', '.join(bad[:3])}"
                                   f"{', …' if len(bad) > 3 else ''}): it was saved from a run that diverged")
    return state_dict


def read_model_folder(folder: str | Path, trusted_targets: Iterable[str] = ()) -> tuple[dict[str, Any],
                                                                                          dict[str, Any]]:
    """The checked ``config.json`` and the weights of the model folder ``folder``, read the one trusted way without
    any pickle: ``torch.load`` is never called. ``config.json`` must be this format and version, and all of it is
    made plain and checked as a checkpoint's settings are (:func:`trusted_settings`: no interpolation, plain values,
    only allowed ``_target_``s and ``trusted_targets``); ``model.safetensors`` is read with
    ``safetensors.torch.load_file`` and must be finite. Anything else is one :class:`ConfigError` naming the file and
    what it must be."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"{folder} is not a model folder: there is no such folder; {FOLDER_IS}")
    config_path = folder / CONFIG_FILE
    config = trusted_settings(_read_folder_config(config_path), str(config_path), trusted_targets)
    return config, _read_weights(folder / WEIGHTS_FILE)
