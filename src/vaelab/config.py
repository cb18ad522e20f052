"""Checks of a composed config, run before anything is built, so a bad value stops the run with one message that
names the key, the value and what is allowed."""

from __future__ import annotations

import numbers
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from vaelab.data.base import BINARIZE, LOADERS
from vaelab.errors import ConfigError
from vaelab.models.objectives import LIKELIHOODS


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _rules(cfg: DictConfig) -> list[tuple[str, Any, bool, str]]:
    """(key, value, ok, what is allowed) for every checked key present in ``cfg``."""
    get = lambda key: OmegaConf.select(cfg, key, default=None)  # noqa: E731
    rules: list[tuple[str, Any, bool, str]] = []

    def rule(key: str, ok: Any, allowed: str) -> None:
        value = get(key)
        if value is not None:
            rules.append((key, value, bool(ok(value)), allowed))

    rule("model.latent_dim", lambda v: _is_int(v) and v >= 1, "an integer >= 1, e.g. model.latent_dim=16")
    rule("model.beta", lambda v: _is_number(v) and v >= 0, "a number >= 0, e.g. model.beta=4")
    rule("model.likelihood", lambda v: v in LIKELIHOODS, f"one of: {', '.join(LIKELIHOODS)}")
    if get("model.likelihood") == "gaussian":
        rule("model.likelihood_std", lambda v: _is_number(v) and v > 0, "a number > 0, e.g. 0.1")
    rule("data.batch_size", lambda v: _is_int(v) and v >= 1, "an integer >= 1, e.g. data.batch_size=128")
    rule("data.eval_batch_size", lambda v: _is_int(v) and v >= 1, "an integer >= 1 (or null)")
    rule("data.val_fraction", lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1)")
    rule("data.loader", lambda v: v in LOADERS, f"one of: {', '.join(LOADERS)}")
    rule("data.binarize", lambda v: v in BINARIZE, f"one of: {', '.join(BINARIZE)}")
    rule("ckpt_path", lambda v: Path(str(v)).is_file(), "the path of an existing checkpoint file (or null)")
    return rules


def validate_config(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` listing every invalid value in ``cfg``."""
    problems = [
        f"  {key} = {value!r} is invalid: it must be {allowed}"
        for key, value, ok, allowed in _rules(cfg)
        if not ok
    ]
    if problems:
        raise ConfigError("Invalid configuration, nothing was run:\n" + "\n".join(problems))
