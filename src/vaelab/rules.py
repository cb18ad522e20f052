"""The allowed values of every checked setting, one rule each.

The same rule serves twice: :func:`validate_config` checks a composed Hydra config before anything is built (one
message naming every bad key), and the classes that take the value check it with :func:`check` when they are
built from Python. Either way the message names the key, the value and what is allowed.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from vaelab.errors import ConfigError

LIKELIHOODS = ("bernoulli", "gaussian", "gaussian_per_pixel", "gaussian_shared", "discretized_logistic")
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
    "model.num_classes": Rule(lambda v: v == "auto" or (_is_int(v) and v >= 2),
                              "auto (the data's classes), an integer >= 2 (the classes a conditional model is given), "
                              "or null (an unconditional model)"),
    "model.code.latent_dims": Rule(
        lambda v: isinstance(v, Sequence) and not isinstance(v, str) and len(v) >= 1
        and all(_is_int(n) and n >= 1 for n in v),
        "a non-empty list of integers >= 1, one per latent layer from the bottom up, e.g. "
        "model.code.latent_dims=[32,16]"),
    "model.code.top_codes": Rule(lambda v: _is_int(v) and v >= 2, "an integer >= 2, e.g. model.code.top_codes=64"),
    "model.code.bottom_codes": Rule(lambda v: _is_int(v) and v >= 2,
                                    "an integer >= 2, e.g. model.code.bottom_codes=64"),
    "model.objective.m": Rule(lambda v: _is_int(v) and v >= 1, "an integer >= 1, e.g. model.objective.m=8"),
    "model.objective.k": Rule(lambda v: _is_int(v) and v >= 1, "an integer >= 1, e.g. model.objective.k=5"),
    "data.batch_size": Rule(lambda v: _is_int(v) and v >= 1, "an integer >= 1, e.g. data.batch_size=128"),
    "data.eval_batch_size": Rule(lambda v: _is_int(v) and v >= 1, "an integer >= 1 (or null)"),
    # (0: no validation split: vaelab.tasks.train then trains without validation, keeping the last epoch's checkpoint)
    "data.val_fraction": Rule(lambda v: _is_number(v) and 0 <= v < 1,
                              "a number in [0, 1), e.g. 0.1 (0: no validation split, no validation)"),
    "data.stream": Rule(lambda v: isinstance(v, bool), "true (stream LitData chunks) or false (the tensor cache)"),
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
    are left to their defaults), and, where ``keys`` hold ``data.batch_size`` (training), every batch size the
    model's objective cannot use (:func:`factor_vae_config_problems`)."""
    keys = tuple(keys)
    problems = []
    for key in keys:
        value = OmegaConf.select(cfg, key, default=None)
        if value is None or (key == "model.likelihood_std"
                                  and OmegaConf.select(cfg, "model.likelihood") not in ("gaussian", "gaussian_shared")):
            continue
        message = problem(key, value)
        if message:
            problems.append(f"  {message}")
    if "data.batch_size" in keys and not problems:
        problems += [f"  {message}" for message in factor_vae_config_problems(cfg)]
    if problems:
        raise ConfigError("Invalid configuration, nothing was run:\n" + "\n".join(problems))


# ------------------------------------------------------------------------------------------- FactorVAE's batches
#: FactorVAE's discriminator sees the first ⌊B/2⌋ codes of a batch as samples of q(z) and the other ⌈B/2⌉, each
#: dimension shuffled across them, as samples of ∏_j q(z_j) (vaelab.models.objectives.factor_vae.split_batch): a
#: batch needs one code for the first class and two to shuffle for the second. With 2 codes the "shuffled" half is
#: one unshuffled code of q(z), with 1 both classes are the same code: the TC term would be meaningless.
FACTOR_VAE_MIN_BATCH = 3
#: the setting that sets each split's batch size
BATCH_KEYS = {"train": "data.batch_size", "val": "data.eval_batch_size", "test": "data.eval_batch_size"}
_WHY = ("FactorVAE's discriminator sees half of each batch as samples of q(z) and the other half, each dimension "
        f"shuffled, as samples of the product of its marginals, so every batch needs at least {FACTOR_VAE_MIN_BATCH} "
        "codes: one for the first half, two to shuffle in the second")


def uses_factor_vae(cfg: DictConfig) -> bool:
    """Whether ``cfg`` trains FactorVAE (``model=factor_vae``, or its objective under another preset)."""
    target = OmegaConf.select(cfg, "model.objective._target_", default=None)
    return isinstance(target, str) and target.rsplit(".", 1)[-1] == "FactorVAE"


def factor_vae_config_problems(cfg: DictConfig) -> list[str]:
    """What is wrong with ``cfg``'s batch sizes for FactorVAE before the data are read: ``data.batch_size`` (and
    ``data.eval_batch_size``, by default the same) below :data:`FACTOR_VAE_MIN_BATCH`. The last, partial batch of
    each split is checked when the data are there (:func:`factor_vae_batch_problems`)."""
    if not uses_factor_vae(cfg):
        return []
    problems = []
    for key in ("data.batch_size", "data.eval_batch_size"):
        value = OmegaConf.select(cfg, key, default=None)
        if _is_int(value) and value < FACTOR_VAE_MIN_BATCH:
            problems.append(f"{key} = {value} is invalid for FactorVAE: it must be an integer >= "
                            f"{FACTOR_VAE_MIN_BATCH}, e.g. {key}=64. {_WHY}")
    return problems


def _batch_sizes_that_fit(shards: Sequence[int], near: int, count: int = 2) -> list[int]:
    """The ``count`` batch sizes nearest ``near`` that leave no batch of ``shards`` smaller than allowed."""
    def fits(b: int) -> bool:
        return all(n % b == 0 or n % b >= FACTOR_VAE_MIN_BATCH for n in shards)

    candidates = range(FACTOR_VAE_MIN_BATCH, max(max(shards, default=0), near) + 2)
    return sorted(sorted((b for b in candidates if fits(b)), key=lambda b: (abs(b - near), b))[:count])


def factor_vae_batch_problems(batch_sizes: Mapping[str, int], shards: Mapping[str, Sequence[int]]) -> list[str]:
    """What is wrong with the batches FactorVAE's objective would see, split by split: ``batch_sizes`` (images per
    batch) and ``shards`` (the images of the split each process goes through; no batch is dropped, so the last one
    of a shard holds what is left over). Every batch, the last one too, must hold at least
    :data:`FACTOR_VAE_MIN_BATCH` codes; each message names the key to change and sizes that fit every split it
    sets (``data.eval_batch_size`` sets both val and test)."""
    problems = []
    for key in dict.fromkeys(BATCH_KEYS.get(split, split) for split in batch_sizes):
        splits = [split for split in batch_sizes if BATCH_KEYS.get(split, split) == key]
        size = batch_sizes[splits[0]]
        if size < FACTOR_VAE_MIN_BATCH:
            problems.append(f"{key} = {size} is invalid for FactorVAE: it must be an integer >= {FACTOR_VAE_MIN_BATCH}"
                            f", e.g. {key}=64. {_WHY}")
            continue
        small = [(split, n) for split in splits for n in shards.get(split, ()) if 0 < n % size < FACTOR_VAE_MIN_BATCH]
        if small:
            split, n = small[0]
            each = f" (each of {len(shards[split])} processes' share)" if len(shards[split]) > 1 else ""
            every = [n for split in splits for n in shards.get(split, ())]
            fits = " or ".join(f"{key}={b}" for b in _batch_sizes_that_fit(every, size))
            problems.append(f"{key} = {size} is invalid for FactorVAE here: the {n} images of the {split} split{each} "
                            f"leave a last batch of {n % size} code(s). {_WHY}. Give a batch size that leaves none so "
                            f"small, e.g. {fits}")
    return problems
