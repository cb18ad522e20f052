"""The resolvers of ``conf/hydra/*.yaml`` and ``conf/logger/``: ``${vaelab.run_id:}``, ``${vaelab.run_name:}``,
``${vaelab.run_stamp:<default>}``, ``${vaelab.eval_name:}``, ``${vaelab.job_name:}`` and
``${vaelab.sweep_name:<default>}``.

They are registered when this module is imported (``vaelab.tasks`` does, so every process that runs a task has them,
also a joblib or submitit worker resolving its job's folder).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from vaelab.tasks.cluster import claim_run_stamp
from vaelab.tasks.run_names import NOISY_KEYS, describe, describe_eval, overrides_name, run_id, sweep_name


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


def _sweep_name(default: str, *, _root_: DictConfig) -> str:
    """``${vaelab.sweep_name:<default>}``: in a job of a multirun (``-m``), its sweep's name (:func:`sweep_name`,
    relative to ``paths.log_dir``); otherwise ``default``."""
    from vaelab.tasks.hydra_job import in_multirun

    if not in_multirun():
        return default
    from hydra.core.hydra_config import HydraConfig

    return sweep_name(HydraConfig.get().sweep.dir, OmegaConf.select(_root_, "paths.log_dir", default=None))


def _run_stamp(default: str, *, _root_: DictConfig) -> str:
    """``${vaelab.run_stamp:<default>}``: :func:`vaelab.tasks.cluster.claim_run_stamp` for this run's folder."""
    runs = Path(str(OmegaConf.select(_root_, "paths.log_dir"))) / str(_root_.task_name) / "runs"
    return claim_run_stamp(default, runs, _run_name(_root_=_root_))


def register_resolvers() -> None:
    """The resolvers of the module (registered again, replacing any of the same name)."""
    # the token is also cached in the config: Hydra copies a sweep's cache into each job's config, so a job run in a
    # process that did not inherit VAELAB_RUN_ID (a cluster node) still finds its sweep's folder
    OmegaConf.register_new_resolver("vaelab.run_id", run_id, replace=True, use_cache=True)
    OmegaConf.register_new_resolver("vaelab.run_stamp", _run_stamp, replace=True)
    OmegaConf.register_new_resolver("vaelab.sweep_name", _sweep_name, replace=True)
    for name, function in (("vaelab.run_name", _run_name), ("vaelab.eval_name", _eval_name),
                           ("vaelab.job_name", _job_name)):
        OmegaConf.register_new_resolver(name, function, replace=True)


register_resolvers()
