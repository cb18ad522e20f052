"""The allowed values of every checked setting, one rule each.

The same rule serves twice: :func:`validate_config` checks a composed Hydra config before anything is built (one
message naming every bad key), and the classes that take the value check it with :func:`check` when they are
built from Python. Either way the message names the key, the value and what is allowed.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from vaelab.errors import ConfigError

LIKELIHOODS = ("bernoulli", "gaussian")
LOADERS = ("tensor", "dataloader")
BINARIZE = ("none", "dynamic", "static")


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_finite(value: Any) -> bool:
    return _is_number(value) and math.isfinite(value)


#: the seeds numpy (and so Lightning's seed_everything) takes; Lightning silently uses 0 for any other
MAX_SEED = 2**32 - 1
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class Rule:
    ok: Callable[[Any], bool]
    allowed: str


RULES: dict[str, Rule] = {
    "model.latent_dim": Rule(lambda v: _is_int(v) and v >= 1, "an integer >= 1, e.g. model.latent_dim=16"),
    "model.beta": Rule(lambda v: _is_finite(v) and v >= 0, "a finite number >= 0, e.g. model.beta=4"),
    "model.likelihood": Rule(lambda v: v in LIKELIHOODS, f"one of: {', '.join(LIKELIHOODS)}"),
    "model.likelihood_std": Rule(lambda v: _is_finite(v) and v > 0, "a finite number > 0, e.g. 0.1"),
    "model.objective.k": Rule(lambda v: _is_int(v) and v >= 1, "an integer >= 1, e.g. model.objective.k=5"),
    "data.batch_size": Rule(lambda v: _is_int(v) and v >= 1, "an integer >= 1, e.g. data.batch_size=128"),
    "data.eval_batch_size": Rule(lambda v: _is_int(v) and v >= 1, "an integer >= 1 (or null)"),
    # (0: no validation split: vaelab.tasks.train then trains without validation, keeping the last epoch's checkpoint)
    "data.val_fraction": Rule(lambda v: _is_number(v) and 0 <= v < 1,
                              "a number in [0, 1), e.g. 0.1 (0: no validation split, no validation)"),
    "data.loader": Rule(lambda v: v in LOADERS, f"one of: {', '.join(LOADERS)}"),
    "data.binarize": Rule(lambda v: v in BINARIZE, f"one of: {', '.join(BINARIZE)}"),
    "ckpt_path": Rule(lambda v: Path(str(v)).is_file(), "the path of an existing checkpoint file (or null)"),
    "seed": Rule(lambda v: _is_int(v) and 0 <= v <= MAX_SEED, f"an integer from 0 to {MAX_SEED}, or null for none"),
    # (-1: no limit, Lightning's way of saying "until stopped"; vaelab.tasks.train says so at the start)
    "trainer.max_epochs": Rule(lambda v: _is_int(v) and v >= -1,
                               "an integer >= 1, e.g. trainer.max_epochs=20 (-1: train until stopped)"),
    # src/eval.py's own settings
    "iw_k": Rule(lambda v: _is_int(v) and v >= 0, "an integer >= 0, e.g. iw_k=100 (0 skips the bound)"),
    "iw_chunk_size": Rule(lambda v: _is_int(v) and v >= 1, "an integer >= 1, or null (as many as fit)"),
    "split": Rule(lambda v: v in ("train", "val", "test"), "one of: train, val, test"),
    "device": Rule(lambda v: isinstance(v, str) and (v in DEVICES or re.fullmatch(r"cuda:\d+", v) is not None),
                   "one of: auto, cpu, cuda, cuda:<index>"),
}
#: the keys of src/eval.py's config (its ckpt_path has a message of its own)
EVAL_KEYS = ("seed", "iw_k", "iw_chunk_size", "split", "device")


def problem(key: str, value: Any) -> str | None:
    """What is wrong with ``value`` for ``key`` (None when it is allowed, or when no rule covers the key)."""
    rule = RULES.get(key)
    if rule is None or rule.ok(value):
        return None
    return f"{key} = {value!r} is invalid: it must be {rule.allowed}"


def check(key: str, value: Any) -> None:
    """Raise :class:`ConfigError` (a ``ValueError``) when ``value`` breaks the rule of ``key``."""
    message = problem(key, value)
    if message:
        raise ConfigError(message)


def validate_config(cfg: DictConfig, keys: Iterable[str] = tuple(RULES)) -> None:
    """Raise :class:`ConfigError` listing every invalid value of ``keys`` in ``cfg`` (keys that are absent or null
    are left to their defaults)."""
    problems = []
    for key in keys:
        value = OmegaConf.select(cfg, key, default=None)
        if value is None or (key == "model.likelihood_std" and OmegaConf.select(cfg, "model.likelihood") != "gaussian"):
            continue
        message = problem(key, value)
        if message:
            problems.append(f"  {message}")
    if problems:
        raise ConfigError("Invalid configuration, nothing was run:\n" + "\n".join(problems))
