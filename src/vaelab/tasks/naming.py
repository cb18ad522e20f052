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

The resolvers used in ``conf/hydra/*.yaml`` are registered when this module is imported (``vaelab.tasks`` does, so
every process that runs a task has them, also a joblib or submitit worker resolving its job's folder).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf

#: the environment variable holding this process's run token
RUN_ID_ENV = "VAELAB_RUN_ID"
TOKEN_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
TOKEN_LENGTH = 6
#: objectives that have no β (the description and the HParams leave it out)
BETA_FREE_OBJECTIVES = frozenset({"reconstruction", "iwae", "sparse", "contractive"})
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


def _number(value: Any) -> str:
    return f"{float(value):g}" if isinstance(value, (int, float)) else str(value)


def _safe(text: str) -> str:
    """Characters any file system and a shell take without quoting; ``/`` (which would make folders) becomes ``.``."""
    return re.sub(r"[^A-Za-z0-9._=,+\-]", "-", text.replace("/", "."))


def describe(cfg: Mapping[str, Any], choices: Mapping[str, Any] | None = None) -> str:
    """A short name saying what a training run is: ``<model>[-<objective>][-<net>]_z<latent>[_b<β>[-<schedule>]]
    [_<data>]``, leaving out the defaults (the model's own objective, the MLP, a constant β, the digits), e.g.
    ``vae_z16_b1``, ``ae_z8``, ``beta_vae-conv_z10_b4-linear_mnist``, ``vae-capacity_z10_b1000``."""
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
    if objective not in BETA_FREE_OBJECTIVES and model_cfg.get("beta") is not None:
        schedule = choices["model/beta_schedule"]
        parts.append(f"b{_number(model_cfg['beta'])}" + (f"-{schedule}" if schedule != DEFAULT_SCHEDULE else ""))
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


# ---------------------------------------------------------------------------------------------------- HParams
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
    line (so a sweep's swept keys are columns too). Names are the command line's (``model.beta``)."""
    choices = {**derived_choices(cfg), **{k: v for k, v in (choices or {}).items() if v is not None}}
    out: dict[str, Any] = {}
    for group in ("model", "model/objective", "model/net", "model/beta_schedule", "data", "experiment"):
        if choices.get(group) is not None:
            out[group] = str(choices[group])
    model = cfg.get("model") or {}
    uses_beta = choices["model/objective"] not in BETA_FREE_OBJECTIVES
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
            out[key] = value
    return out


# ---------------------------------------------------------------------------------------------------- resolvers
def _root_choices(root: Any) -> dict[str, Any] | None:
    choices = OmegaConf.select(root, "hydra.runtime.choices", default=None)
    return OmegaConf.to_container(choices) if choices is not None else None


def _run_name(*, _root_: DictConfig) -> str:
    try:
        return describe(_root_, _root_choices(_root_))
    except Exception:  # (a config without the usual keys: a name must not stop the run)
        return "run"


def _eval_name(*, _root_: DictConfig) -> str:
    return describe_eval(_root_)


def _job_name(*, _root_: DictConfig) -> str:
    settings = OmegaConf.select(_root_, "hydra.job.config.override_dirname", default=None) or {}
    overrides = OmegaConf.select(_root_, "hydra.overrides.task", default=None) or []
    return overrides_name(overrides, settings.get("exclude_keys", NOISY_KEYS), settings.get("item_sep", ","),
                          settings.get("kv_sep", "="))


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


def _sweep_name(default: str, *, _root_: DictConfig) -> str:
    """``${vaelab.sweep_name:<default>}``: in a job of a multirun (``-m``), its sweep's name (:func:`sweep_name`,
    relative to ``paths.log_dir``); otherwise ``default``."""
    from vaelab.tasks.hydra_job import in_multirun

    if not in_multirun():
        return default
    from hydra.core.hydra_config import HydraConfig

    return sweep_name(HydraConfig.get().sweep.dir, OmegaConf.select(_root_, "paths.log_dir", default=None))


#: the statuses of a run that did not finish: a SLURM job requeued after it goes on in its folder
UNFINISHED = ("running", "interrupted", "terminated")


_slurm_stamp: str | None = None


def _run_stamp(default: str, *, _root_: DictConfig) -> str:
    """What follows a run folder's description: ``default`` (``<date>_<time>_<token>``) outside SLURM; inside a SLURM
    batch job ``slurm-<job>[-<step>]`` (:func:`vaelab.tasks.cluster.slurm_job_key`), the same in every task of a
    multi-node step and after a requeue, so that the ranks share one folder and a requeued job finds its
    ``last.ckpt``. Only a job SLURM has restarted (``SLURM_RESTART_COUNT`` > 0) goes on in a folder that holds a run
    that did not finish (running, interrupted, terminated, or a torn record). An ``srun`` step holds one run (in all
    its ranks); in the batch script itself the first free name is claimed by making its folder (``…``, ``…-2``,
    ``…-3``), so two runs of one script never share a folder. The answer is kept for the process: Hydra resolves the
    run folder more than once."""
    from vaelab.tasks.cluster import restart_count, slurm_job_key

    global _slurm_stamp
    key = slurm_job_key()
    if key is None:
        return default
    if _slurm_stamp is not None:
        return _slurm_stamp
    step = os.environ.get("SLURM_STEP_ID", "")
    stamp = f"slurm-{key}" + (f"-{step}" if step.isdigit() else "")
    runs = Path(str(OmegaConf.select(_root_, "paths.log_dir"))) / str(_root_.task_name) / "runs"
    name = _run_name(_root_=_root_)
    restarted = restart_count() > 0
    for n in range(1, 1000):
        candidate = stamp if n == 1 else f"{stamp}-{n}"
        folder = runs / f"{name}_{candidate}"
        if restarted and folder.is_dir():
            try:
                status = json.loads((folder / "metrics.json").read_text()).get("status")
            except (OSError, ValueError):
                status = None  # no record, or one torn by the kill: that run did not finish
            if status is None or status in UNFINISHED:
                _slurm_stamp = candidate
                return candidate
            continue
        if step.isdigit():  # an srun step: one run, started in every rank at once, all taking the step's name
            _slurm_stamp = candidate
            return candidate
        try:
            folder.mkdir(parents=True)
        except FileExistsError:
            continue
        except OSError:  # (an unwritable log_dir: the run-folder check says so)
            pass
        _slurm_stamp = candidate
        return candidate
    return f"{stamp}-{run_id()}"


def register_resolvers() -> None:
    """``${vaelab.run_id:}``, ``${vaelab.run_name:}``, ``${vaelab.run_stamp:}``, ``${vaelab.eval_name:}``,
    ``${vaelab.job_name:}``, ``${vaelab.sweep_name:<default>}``."""
    # the token is also cached in the config: Hydra copies a sweep's cache into each job's config, so a job run in a
    # process that did not inherit VAELAB_RUN_ID (a cluster node) still finds its sweep's folder
    OmegaConf.register_new_resolver("vaelab.run_id", run_id, replace=True, use_cache=True)
    OmegaConf.register_new_resolver("vaelab.run_stamp", _run_stamp, replace=True)
    OmegaConf.register_new_resolver("vaelab.sweep_name", _sweep_name, replace=True)
    for name, function in (("vaelab.run_name", _run_name), ("vaelab.eval_name", _eval_name),
                           ("vaelab.job_name", _job_name)):
        OmegaConf.register_new_resolver(name, function, replace=True)


register_resolvers()
