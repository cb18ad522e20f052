"""The training task behind ``src/train.py``: build everything from the Hydra config, fit, test, record."""

from __future__ import annotations

import logging
import math
import os
import signal
import time
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf, open_dict

from vaelab.callbacks.data_config import DataConfigInCheckpoint
from vaelab.callbacks.divergence import DivergedError, DivergenceStop, advice
from vaelab.errors import ConfigError
from vaelab.metrics.likelihood import comparability_notes
from vaelab.rules import validate_config
from vaelab.tasks.cluster import resume_after_requeue
from vaelab.tasks.hydra_job import command_line_overrides, in_multirun
from vaelab.tasks.naming import hydra_choices, run_hparams
from vaelab.tasks.record import EpochRecord, recorded, scalar_metrics
from vaelab.tasks.resume import check_fits_model, continue_in_checkpoint_run, read_checkpoint
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
    check_manual_optimization(model, trainer)
    log_run(loggers, cfg)
    return datamodule, model, trainer


def check_manual_optimization(model: L.LightningModule, trainer: L.Trainer) -> None:
    """Refuse the Trainer settings that Lightning cannot apply to a model optimised manually (an objective with an
    adversary, such as FactorVAE's discriminator), naming the config key, before anything runs."""
    if model.automatic_optimization:
        return
    why = (f"the objective {type(getattr(model, 'objective', model)).__name__} trains an adversary with an optimiser "
           "of its own (Lightning's manual optimisation), where Lightning does not")
    if trainer.gradient_clip_val:
        raise ConfigError(f"trainer.gradient_clip_val={trainer.gradient_clip_val:g}: {why} clip gradients. Remove "
                          "trainer.gradient_clip_val, or use another objective")
    if trainer.accumulate_grad_batches != 1:
        raise ConfigError(f"trainer.accumulate_grad_batches={trainer.accumulate_grad_batches}: {why} accumulate "
                          "gradients. Remove it and raise data.batch_size instead")


def log_run(loggers: list[Any], cfg: DictConfig) -> None:
    """Hand every logger the hyperparameters that tell this run apart (:func:`run_hparams`: HParams columns, MLflow
    params) and, to a logger that keeps one, the resolved config."""
    config = OmegaConf.to_container(cfg, resolve=True)
    hparams = run_hparams(config, hydra_choices(), command_line_overrides())
    for logger in loggers:
        logger.log_hyperparams(hparams)
        if hasattr(logger, "log_config"):
            logger.log_config(config)


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
    """What fitting reached: the last finished epoch's metrics, the epochs done, the step, and the best and last
    checkpoints (non-finite values stay floats here; ``metrics.json`` writes them as strings)."""
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


def without_validation(cfg: DictConfig) -> None:
    """``data.val_fraction=0`` holds out no validation split: train without validation, as
    ``experiment=mnist_vae_reference`` does (``trainer.limit_val_batches=0``; checkpoints kept on the last epoch,
    ``callbacks.model_checkpoint.monitor=null``), rather than fail on the empty split after building everything.

    A validation metric to optimise cannot be had then: a sweep (``-m``) asking for one is refused; a single run,
    whose return value nobody reads, just returns None.
    """
    fraction = OmegaConf.select(cfg, "data.val_fraction", default=None)
    if fraction is None or fraction != 0:
        return
    with open_dict(cfg):
        if OmegaConf.select(cfg, "trainer.limit_val_batches", default=None) != 0:
            cfg.trainer.limit_val_batches = 0
        checkpoint = OmegaConf.select(cfg, "callbacks.model_checkpoint", default=None)
        if checkpoint is not None and checkpoint.get("monitor") is not None:
            checkpoint.monitor = None
        metric = cfg.get("optimized_metric")
        if metric and str(metric).startswith("val/"):
            if in_multirun():
                raise ConfigError(
                    f"optimized_metric={metric} needs a validation split, but data.val_fraction=0 holds out none: "
                    "give data.val_fraction > 0 (e.g. 0.1), or optimized_metric=null"
                )
            cfg.optimized_metric = None
    log.info("data.val_fraction=0: no validation split, so no validation; the checkpoint kept is the last epoch's")


def check_finite(record: dict[str, Any], model: L.LightningModule, trainer: L.Trainer) -> None:
    """The last word on divergence, for runs without :class:`DivergenceStop` (``callbacks=none``): refuse a fit
    whose last losses are not finite, before its weights are tested or its value handed to a sweeper."""
    losses = {k: v for split in ("train", "val") for k, v in record.get(split, {}).items()
              if k.split("/", 1)[1] in ("loss", "recon", "kl") and not math.isfinite(v)}
    if losses:
        detail = ", ".join(f"{k}={v}" for k, v in losses.items())
        raise DivergedError(
            f"Training diverged: after {record.get('epochs')} epochs the losses are not finite ({detail}); nothing "
            f"was tested. Try {'; or '.join(advice(model, trainer))}. (With callbacks.divergence configured, as in "
            "callbacks=default or minimal, the run stops at the first non-finite step.)"
        )


def watch(trainer: L.Trainer, path: Path, record: dict[str, Any]) -> None:
    """The callbacks every training run gets from the task: the divergence check first (before any drawing), the
    data config in every checkpoint (for ``eval.py``), and the per-epoch ``metrics.json`` (see :class:`EpochRecord`)."""
    trainer.callbacks.sort(key=lambda c: not isinstance(c, DivergenceStop))  # (stable: the rest keep their order)
    trainer.callbacks.append(DataConfigInCheckpoint())
    trainer.callbacks.append(EpochRecord(path, record, fit_record))


def train(cfg: DictConfig) -> float | None:
    """Fit (and by default test) the configured model; write ``metrics.json`` (after every epoch, and however the
    run ends); return ``optimized_metric``.

    How a run ends, in ``metrics.json``'s ``status`` and the exit code of ``src/train.py``: ``completed`` (0);
    ``failed`` (1, one message for a bad value or file); ``diverged`` (1: a non-finite loss stopped it, see
    :mod:`vaelab.callbacks.divergence`); ``interrupted`` (Ctrl-C, 1); ``terminated`` (SIGTERM from a scheduler's
    time-out or pre-emption, 143 = 128 + 15); ``running`` is what a killed run (SIGKILL) leaves.
    """
    path = Path(cfg.paths.output_dir) / "metrics.json"
    record: dict[str, Any] = {
        "status": "running",
        "overrides": command_line_overrides(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    with recorded(path, record):
        validate_config(cfg)  # before anything is built; a failure is still recorded in metrics.json
        without_validation(cfg)
        if cfg.get("seed") is not None:  # 0 is a seed too
            L.seed_everything(cfg.seed, workers=True)
        else:  # not the seed of a job before this one in the same process (a Hydra sweep)
            os.environ.pop("PL_GLOBAL_SEED", None)
        record.update(resume_after_requeue(cfg))  # a SLURM job requeued after a time-out goes on from last.ckpt
        checkpoint = None
        if cfg.get("ckpt_path"):
            record["resumed_from"] = str(Path(str(cfg.ckpt_path)).resolve())
            checkpoint = read_checkpoint(Path(str(cfg.ckpt_path)), resume=True)
            record.update(continue_in_checkpoint_run(cfg))
        datamodule, model, trainer = build(cfg)
        # what a reader must know before comparing this run's numbers with published log-likelihoods
        record["notes"] = comparability_notes(model.model.likelihood.name, datamodule.hparams.get("binarize", "none"),
                                              datamodule.binary_images)
        if checkpoint is not None:
            check_fits_model(checkpoint, model, Path(str(cfg.ckpt_path)))
            del checkpoint
        check_launcher(trainer)
        watch(trainer, path, record)
        stage = "fit"
        try:
            trainer.fit(model=model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
            record.update(fit_record(trainer))
            if not trainer.interrupted:
                check_finite(record, model, trainer)
            if cfg.get("test"):
                stage = "test"
                record.update(_test(trainer, model, datamodule))
                record["test"] = scalar_metrics(trainer.callback_metrics, "test/")
        except BaseException as err:
            if stage == "fit":
                record.update(fit_record(trainer))  # what the epochs before the failure reached is not lost
            where = f"epoch {trainer.current_epoch}" if stage == "fit" else "testing, after fitting"
            if isinstance(err, DivergedError):
                record.update(status="diverged", error=str(err))
            elif isinstance(err, SIGTERMException):  # a SystemExit without a code: it would exit 0
                record.update(status="terminated", error=f"terminated by SIGTERM in {where}")
                last = record.get("last_ckpt")
                log.error("Terminated by SIGTERM in %s.%s", where,
                          f" Resume with ckpt_path={last}" if last and stage == "fit" else "")
                raise SystemExit(128 + signal.SIGTERM) from err
            elif isinstance(err, (KeyboardInterrupt, SystemExit)):  # Lightning turns Ctrl-C into sys.exit(1)
                record.update(status="interrupted", error=f"interrupted in {where}")
            raise
        record["status"] = "interrupted" if trainer.interrupted else "completed"
        value = optimized_value(cfg, record)
    return value


def optimized_value(cfg: DictConfig, record: dict[str, Any]) -> float | None:
    """The value of ``cfg.optimized_metric`` (e.g. ``val/elbo``) for Hydra sweepers; None when unset.

    When checkpoints are chosen on that metric, it is the best checkpoint's score (the weights that were tested);
    otherwise the value of the last epoch. A value that is not finite is refused (raised), so a sweeper records
    the trial as failed instead of as the best or worst value there is.
    """
    name = cfg.get("optimized_metric")
    if not name:
        return None
    best = record.get("best") or {}
    if best.get("monitor") == name and best.get("score") is not None:
        value = best["score"]
    else:
        stage = name.split("/", 1)[0]
        values = record.get(stage, {})
        if name not in values:
            raise ConfigError(
                f"optimized_metric={name!r} was not logged by this run; it logged: {', '.join(values) or 'nothing'} "
                f"(an autoencoder logs no kl/elbo)"
            )
        value = values[name]
    if not math.isfinite(value):
        raise DivergedError(f"optimized_metric {name} is {value}: not a value to optimise")
    return value
