"""The hyperparameters that tell runs apart, as TensorBoard's HParams tab (and MLflow's params) show them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from vaelab.tasks.run_names import NOISY_KEYS, beta_name, derived_choices


def _scalar(value: Any) -> bool | int | float | str | None:
    if isinstance(value, (DictConfig, ListConfig)):
        value = OmegaConf.to_container(value, resolve=True)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(v, (bool, int, float, str)) for v in value):
        return str(list(value))
    return None


def _select(cfg: Mapping[str, Any], key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def run_hparams(cfg: Mapping[str, Any], choices: Mapping[str, Any] | None = None, overrides: Iterable[str] = (),
                exclude_keys: Iterable[str] = NOISY_KEYS) -> dict[str, bool | int | float | str]:
    """The hyperparameters that tell runs apart, flat and scalar, for TensorBoard's HParams tab: the config groups'
    options (``model``, ``model/objective``, ``model/net``, ``model/beta_schedule``, ``data``, ``experiment``), the
    latent size, β and its schedule's settings (for objectives that have a β), the objective's settings, the
    likelihood, learning rate, batch size, binarisation, seed and epochs, and every other key given on the command
    line (so a sweep's swept keys are columns too). Names are the command line's (``model.latent_dim``), but for
    ``model.beta``, which is shown under the name the objective gives it (:func:`beta_column`): one column never
    holds FactorVAE's γ beside a β-VAE's β."""
    choices = {**derived_choices(cfg), **{k: v for k, v in (choices or {}).items() if v is not None}}
    out: dict[str, Any] = {}
    for group in ("model", "model/objective", "model/net", "model/beta_schedule", "data", "experiment"):
        if choices.get(group) is not None:
            out[group] = str(choices[group])
    model = cfg.get("model") or {}
    weight = beta_name(cfg)
    uses_beta = weight is not None
    keys = ["model.latent_dim", *(["model.beta"] if uses_beta else []), "model.likelihood", "model.optimizer.lr"]
    for part in ("objective", *(["beta_schedule"] if uses_beta else [])):
        node = model.get(part) or {}
        keys += [f"model.{part}.{k}" for k in node if not str(k).startswith("_")]
    keys += ["data.batch_size", "data.binarize", "seed", "trainer.max_epochs"]
    excluded = set(exclude_keys)
    for line in overrides:
        key = str(line).lstrip("+~").partition("=")[0].split("@", 1)[0]
        if key in excluded or key in out:
            continue
        if choices.get(key) is not None:  # a config group's option, e.g. trainer=gpu
            out[key] = str(choices[key])
        else:
            keys.append(key)
    for key in keys:
        value = _scalar(_select(cfg, key))
        if value is not None:
            out[beta_column(weight) if key == "model.beta" and uses_beta else key] = value
    return out


def beta_column(name: str) -> str:
    """The HParams column of ``model.beta`` for an objective that calls it ``name``: ``model.beta`` for a β,
    ``gamma (model.beta)`` for FactorVAE's and capacity control's γ, ``commitment (model.beta)`` for VQ-VAE's."""
    return "model.beta" if name == "beta" else f"{name} (model.beta)"
