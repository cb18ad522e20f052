"""The training task behind ``src/train.py``: build everything from the Hydra config, fit, test, record."""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar
from omegaconf import DictConfig, OmegaConf

from vaelab.errors import ConfigError
from vaelab.rules import validate_config
from vaelab.tasks.hydra_job import command_line_overrides, in_multirun
from vaelab.tasks.record import recorded, scalar_metrics
from vaelab.tasks.resume import continue_in_checkpoint_run
from vaelab.tasks.runtime import quiet_irrelevant_warnings, skip_failing_nvml_probe

log = logging.getLogger(__name__)


def instantiate_all(cfg: DictConfig | None) -> list[Any]:
    """Instantiate every ``_target_`` entry of a config group such as ``callbacks`` or ``logger``.

    An entry set to null (``callbacks.samples=null``) is left out.
    """
    if not cfg:
        return []
    return [instantiate(entry) for entry in cfg.values() if isinstance(entry, DictConfig) and "_target_" in entry]


def build(cfg: DictConfig) -> tuple[L.LightningDataModule, L.LightningModule, L.Trainer]:
    """DataModule, model (given the data's image shape) and Trainer with its callbacks and loggers."""
    skip_failing_nvml_probe()
    quiet_irrelevant_warnings()
    datamodule = instantiate(cfg.data)
    model = instantiate(cfg.model, image_shape=list(datamodule.image_shape), _recursive_=False)
    callbacks = instantiate_all(cfg.get("callbacks"))
    if cfg.trainer.get("enable_progress_bar") is False:  # the explicit trainer flag wins over callbacks.progress_bar
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    extra = {}
    if "enable_checkpointing" not in cfg.trainer and not any(isinstance(c, ModelCheckpoint) for c in callbacks):
        extra["enable_checkpointing"] = False  # no checkpoint configured (callbacks=none): not Lightning's default
    loggers = instantiate_all(cfg.get("logger"))
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, **extra)
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    return datamodule, model, trainer


def _test(trainer: L.Trainer, model: L.LightningModule, datamodule: Any) -> dict[str, Any]:
    """Test the best checkpoint; say so in the record when there is none and the current weights are used."""
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    if not best:
        log.warning(
            "No best checkpoint was saved (no ModelCheckpoint, or fast_dev_run): testing the current weights"
        )
    trainer.test(model=model, datamodule=datamodule, ckpt_path=best or None)
    return {"test_ckpt": best or "current weights (no best checkpoint was saved)"}


def check_launcher(trainer: L.Trainer) -> None:
    """Refuse a DDP launcher that re-runs the command line inside a Hydra multirun, before anything runs.

    Lightning's script launcher (``trainer.strategy=ddp``, also FSDP and DeepSpeed) starts each extra process by
    running the command line again; under ``-m`` that command line is the whole sweep, so every worker would start
    a sweep of its own (an Optuna worker its own study). ``ddp_spawn`` starts the workers from inside the job, and
    a cluster (SLURM, torchrun) that starts the processes itself is fine too.
    """
    from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

    strategy = trainer.strategy
    launcher = getattr(strategy, "launcher", None)
    relaunches = isinstance(launcher, _SubprocessScriptLauncher) and launcher.num_processes > 1
    environment = getattr(strategy, "cluster_environment", None)
    external = environment is not None and environment.creates_processes_externally
    if in_multirun() and relaunches and not external:
        raise ConfigError(
            "trainer.strategy=ddp cannot run inside a multirun (-m): Lightning starts each extra DDP process by "
            "running the command line again, which here is the whole sweep. Use trainer.strategy=ddp_spawn in a "
            "sweep, or run each job as its own command."
        )


def fit_record(trainer: L.Trainer) -> dict[str, Any]:
    """What fitting reached: the last epoch's metrics, the step, and the best and last checkpoints."""
    fitted = dict(trainer.callback_metrics)
    record: dict[str, Any] = {
        "train": scalar_metrics(fitted, "train/"),
        "val": scalar_metrics(fitted, "val/"),
        "epochs": trainer.current_epoch,
        "global_step": trainer.global_step,
    }
    checkpoint = trainer.checkpoint_callback
    if checkpoint is not None:
        score = checkpoint.best_model_score
        record["best"] = {"monitor": checkpoint.monitor, "score": None if score is None else float(score)}
        record["best_ckpt"] = checkpoint.best_model_path
        record["last_ckpt"] = getattr(checkpoint, "last_model_path", "")
    return record


def train(cfg: DictConfig) -> float | None:
    """Fit (and by default test) the configured model; write ``metrics.json``; return ``optimized_metric``."""
    record: dict[str, Any] = {
        "status": "running",
        "overrides": command_line_overrides(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    with recorded(Path(cfg.paths.output_dir) / "metrics.json", record):
        validate_config(cfg)  # before anything is built; a failure is still recorded in metrics.json
        if cfg.get("seed") is not None:  # 0 is a seed too
            L.seed_everything(cfg.seed, workers=True)
        else:  # not the seed of a job before this one in the same process (a Hydra sweep)
            os.environ.pop("PL_GLOBAL_SEED", None)
        if cfg.get("ckpt_path"):
            record["resumed_from"] = str(Path(str(cfg.ckpt_path)).resolve())
            record.update(continue_in_checkpoint_run(cfg))
        datamodule, model, trainer = build(cfg)
        check_launcher(trainer)
        stage = "fit"
        try:
            trainer.fit(model=model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
            record.update(fit_record(trainer))
            if cfg.get("test"):
                stage = "test"
                record.update(_test(trainer, model, datamodule))
                record["test"] = scalar_metrics(trainer.callback_metrics, "test/")
        except BaseException as err:
            if stage == "fit":
                record.update(fit_record(trainer))  # what the epochs before the failure reached is not lost
            if isinstance(err, (KeyboardInterrupt, SystemExit)):  # Lightning turns Ctrl-C into sys.exit(1)
                where = f"epoch {trainer.current_epoch}" if stage == "fit" else "testing, after fitting"
                record.update(status="interrupted", error=f"interrupted in {where}")
            raise
        record["status"] = "interrupted" if trainer.interrupted else "completed"
    return optimized_value(cfg, record)


def optimized_value(cfg: DictConfig, record: dict[str, Any]) -> float | None:
    """The value of ``cfg.optimized_metric`` (e.g. ``val/elbo``) for Hydra sweepers; None when unset.

    When checkpoints are chosen on that metric, it is the best checkpoint's score (the weights that were tested);
    otherwise the value of the last epoch.
    """
    name = cfg.get("optimized_metric")
    if not name:
        return None
    best = record.get("best") or {}
    if best.get("monitor") == name and best.get("score") is not None:
        return best["score"]
    stage = name.split("/", 1)[0]
    values = record.get(stage, {})
    if name not in values:
        raise ConfigError(
            f"optimized_metric={name!r} was not logged by this run; it logged: {', '.join(values) or 'nothing'} "
            f"(an autoencoder logs no kl/elbo)"
        )
    value = values[name]
    if not math.isfinite(value):
        log.warning("%s is %s", name, value)
    return value
