"""Names of run folders, and so of TensorBoard runs: what the run is, when it started, and a token of its own.

::

    logs/train/runs/<description>_<YYYY-MM-DD>_<HH-MM-SS>_<token>       vae_z16_b1_2026-11-27_14-30-05_k3x9qa
    logs/train/multiruns/<YYYY-MM-DD>_<HH-MM-SS>_<token>/<n>_<overrides> .../2026-11-27_14-30-05_k3x9qa/1_model.beta=4
    logs/eval/runs/<trained run's folder>/<checkpoint>_<split>_<YYYY-MM-DD>_<HH-MM-SS>_<token>

The description comes first because TensorBoard shortens a run's name from the end of its last path piece (its
``tb-truncated-path``): in a narrow card ``vae_z16_b1_2026-11…`` still says what the run is. The token is drawn once
per process (and put in ``VAELAB_RUN_ID`` by the entry points), so Hydra resolving ``hydra.run.dir`` again
(Lightning's DDP launcher does, to give its extra processes the same folder) gives the same folder, and processes
started from this one (Lightning's DDP workers, joblib workers) inherit it; two runs started in the same second, on
one machine or on two sharing a file system, draw their tokens independently from ``secrets`` (36⁶ ≈ 2.2·10⁹ of them:
for 1,000 runs with one description started in one second, a clash has a chance of about 2·10⁻⁴).

The resolvers of ``conf/hydra/*.yaml`` that use these names are in :mod:`vaelab.tasks.resolvers`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf

#: the environment variable holding this process's run token
RUN_ID_ENV = "VAELAB_RUN_ID"
TOKEN_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
TOKEN_LENGTH = 6
#: the defaults a description leaves out
DEFAULT_NET, DEFAULT_SCHEDULE, DEFAULT_DATA = "mlp", "constant", "digits"
#: the objective each model of conf/model/ trains with unless told otherwise (any other is named)
MODEL_OBJECTIVES = {"ae": "reconstruction", "vae": "elbo", "beta_vae": "elbo", "dae": "reconstruction",
                    "sparse_ae": "sparse", "contractive_ae": "contractive"}
#: the longest description and the longest list of overrides in a folder name (a file name has 255 bytes at most)
MAX_DESCRIPTION, MAX_OVERRIDES = 80, 160
#: command-line keys that say nothing about what a run is (where things go, what is shown while it runs); the same
#: list as ``hydra.job.config.override_dirname.exclude_keys`` in conf/hydra/default.yaml, for use outside Hydra
NOISY_KEYS = (
    "paths.root_dir", "paths.data_dir", "paths.log_dir", "paths.output_dir", "ckpt_path", "logger", "callbacks",
    "hparams_search", "trainer.enable_progress_bar", "trainer.enable_model_summary", "trainer.limit_train_batches",
    "trainer.limit_val_batches", "trainer.limit_test_batches",
)


# ---------------------------------------------------------------------------------------------------- the token
def new_token() -> str:
    return "".join(secrets.choice(TOKEN_ALPHABET) for _ in range(TOKEN_LENGTH))


_token: str | None = None


def run_id() -> str:
    """This process's run token: ``VAELAB_RUN_ID`` when set (by the entry point, or inherited from the process that
    started this one), else one drawn once for this process."""
    global _token
    inherited = os.environ.get(RUN_ID_ENV)
    if inherited:
        return inherited
    if _token is None:
        _token = new_token()
    return _token


def export_run_id() -> str:
    """Put this process's run token into ``VAELAB_RUN_ID``, for the processes it starts (Lightning's DDP workers,
    joblib workers): the entry points call this before Hydra resolves the run folder."""
    os.environ[RUN_ID_ENV] = token = run_id()
    return token


# ---------------------------------------------------------------------------------------------------- what a run is
def _class_name(node: Any) -> str | None:
    target = node.get("_target_") if isinstance(node, Mapping) else None
    return str(target).rsplit(".", 1)[-1] if target else None


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


@cache
def _options_by_target(group: str) -> dict[str, str]:
    """``{class name: option}`` of a config group of conf/ (``model/net`` by its encoder)."""
    conf = Path(__file__).resolve().parents[1] / "conf" / group  # the configs shipped inside the package
    options = {}
    for path in sorted(conf.glob("*.yaml")) if conf.is_dir() else []:
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError):
            continue
        name = _class_name(data.get("encoder") if group == "model/net" else data)
        if name:
            options.setdefault(name, path.stem)
    return options


def _option(group: str, node: Any) -> str | None:
    name = _class_name(node.get("encoder") if group == "model/net" and isinstance(node, Mapping) else node)
    return None if name is None else _options_by_target(group).get(name, _snake(name))


def derived_choices(cfg: Mapping[str, Any]) -> dict[str, str | None]:
    """The config-group options a composed config was made of, read back from its ``_target_``s: for a config that
    did not come through a Hydra run (a test, a notebook). The model is named after its objective."""
    model = cfg.get("model") or {}
    objective = _option("model/objective", model.get("objective")) or "elbo"
    return {
        "model": {"reconstruction": "ae", "elbo": "vae"}.get(objective, objective),
        "model/objective": objective,
        "model/net": _option("model/net", model.get("net")) or DEFAULT_NET,
        "model/beta_schedule": _option("model/beta_schedule", model.get("beta_schedule")) or DEFAULT_SCHEDULE,
        "data": _option("data", cfg.get("data")),
    }


def hydra_choices() -> dict[str, Any] | None:
    """The options of this Hydra run's config groups (``hydra.runtime.choices``); None outside a Hydra run."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    return OmegaConf.to_container(HydraConfig.get().runtime.choices)


def beta_name(cfg: Mapping[str, Any]) -> str | None:
    """What ``model.beta`` is to the run's objective, by its own name (``beta``, ``gamma``, ``commitment``), or None
    for an objective without such a weight: the objective class declares it
    (:attr:`vaelab.models.objectives.Objective.beta_name`). A target that cannot be found has none here (building the
    model then says what is wrong with it)."""
    from hydra.utils import get_class

    objective = (cfg.get("model") or {}).get("objective") or {}
    target = objective.get("_target_") if isinstance(objective, Mapping) else None
    try:
        cls = get_class(str(target or "vaelab.models.objectives.Elbo"))
    except Exception:
        return None
    return getattr(cls, "beta_name", None)


def _number(value: Any) -> str:
    return f"{float(value):g}" if isinstance(value, (int, float)) else str(value)


def _safe(text: str) -> str:
    """Characters any file system and a shell take without quoting; ``/`` (which would make folders) becomes ``.``."""
    return re.sub(r"[^A-Za-z0-9._=,+\-]", "-", text.replace("/", "."))


def describe(cfg: Mapping[str, Any], choices: Mapping[str, Any] | None = None) -> str:
    """A short name saying what a training run is: ``<model>[-<objective>][-<net>]_z<latent>[_<w><β>[-<schedule>]]
    [_<data>]``, leaving out the defaults (the model's own objective, the MLP, a constant β, the digits); ``<w>`` is
    the first letter of what the objective calls ``model.beta`` (:func:`beta_name`: ``b``, FactorVAE's ``g`` for γ,
    VQ-VAE's ``c`` for its commitment cost), left out with the value for an objective without one, e.g.
    ``vae_z16_b1``, ``ae_z8``, ``beta_vae-conv_z10_b4-linear_mnist``, ``vae-capacity_z10_g1000``,
    ``factor_vae_z10_g40``."""
    choices = {**derived_choices(cfg), **{k: v for k, v in (choices or {}).items() if v is not None}}
    model_cfg = cfg.get("model") or {}
    model, objective = str(choices["model"]), str(choices["model/objective"])
    head = [model]
    if objective not in (MODEL_OBJECTIVES.get(model), model):
        head.append(objective)
    if choices["model/net"] != DEFAULT_NET:
        head.append(str(choices["model/net"]))
    parts = ["-".join(head)]
    if model_cfg.get("latent_dim") is not None:
        parts.append(f"z{model_cfg['latent_dim']}")
    weight = beta_name(cfg)
    if weight is not None and model_cfg.get("beta") is not None:
        schedule = choices["model/beta_schedule"]
        parts.append(f"{weight[0]}{_number(model_cfg['beta'])}"
                     + (f"-{schedule}" if schedule != DEFAULT_SCHEDULE else ""))
    if choices.get("data") not in (None, DEFAULT_DATA):
        parts.append(str(choices["data"]))
    return _safe("_".join(parts))[:MAX_DESCRIPTION]


def _checkpoint_name(path: str) -> tuple[str | None, str]:
    """(the folder of the run a checkpoint belongs to, or None; the checkpoint's name without ``.ckpt``)."""
    ckpt = Path(path)
    run = ckpt.parent.parent.name if ckpt.parent.name == "checkpoints" and ckpt.parent.parent.name else None
    return run, ckpt.stem


def describe_eval(cfg: Mapping[str, Any]) -> str:
    """``<trained run's folder>/<checkpoint>_<split>``, or ``<checkpoint>_<split>`` for a checkpoint outside a run's
    ``checkpoints/`` folder, e.g. ``vae_z16_b1_2026-11-27_14-30-05_k3x9qa/last_test``."""
    ckpt = None if OmegaConf.is_missing(cfg, "ckpt_path") else cfg.get("ckpt_path")
    if not ckpt:
        return _safe(f"no_checkpoint_{cfg.get('split')}")
    run, stem = _checkpoint_name(str(ckpt))
    leaf = _safe(f"{stem}_{cfg.get('split')}")
    return f"{_safe(run)}/{leaf}" if run else leaf


def _short_value(value: str) -> str:
    """An override's value as a folder name takes it: a list ``[512,256]`` as ``512+256`` (no brackets, which
    ``glob`` would read as a pattern), a path shortened to what names it (``<run folder>-<checkpoint>``, or its
    last part)."""
    value = value.strip("'\"")
    if value.startswith("[") and value.endswith("]"):
        return "+".join(v.strip().strip("'\"") for v in value[1:-1].split(","))
    if "/" not in value:
        return value
    run, stem = _checkpoint_name(value)
    return f"{run}-{stem}" if run else Path(value).name


def overrides_name(overrides: Iterable[str], exclude_keys: Iterable[str] = NOISY_KEYS, item_sep: str = ",",
                   kv_sep: str = "=") -> str:
    """Hydra's ``override_dirname`` made a safe folder name: the overrides sorted, the excluded keys left out, a
    group's ``/`` written ``.``, a path shortened to its last part, and a very long list cut (with a hash of the
    whole, so two long lists still differ):
    ``model/objective=iwae model.beta=4`` → ``model.beta=4,model.objective=iwae``.
    """
    excluded = set(exclude_keys)
    items = []
    for line in overrides:
        key, _, value = str(line).lstrip("+~").partition("=")
        if key.split("@", 1)[0] in excluded:
            continue
        items.append(f"{key}{kv_sep}{_short_value(value)}")
    name = _safe(item_sep.join(sorted(items)))
    if len(name) > MAX_OVERRIDES:
        digest = hashlib.sha1(name.encode()).hexdigest()[:8]
        name = f"{name[:MAX_OVERRIDES - 9]}~{digest}"
    return name or "defaults"


def sweep_name(sweep_dir: str | Path, log_dir: str | Path | None = None) -> str:
    """A sweep's name for a tracker (an MLflow experiment): its folder relative to ``log_dir`` when inside it
    (``train/multiruns/2026-12-04_17-25-14_ld5f7r``), else the folder's own name."""
    folder = Path(sweep_dir).expanduser().resolve()
    if log_dir is not None:
        with contextlib.suppress(ValueError):
            relative = folder.relative_to(Path(log_dir).expanduser().resolve())
            if relative.parts:
                return relative.as_posix()
    return folder.name or str(folder)
