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
from lightning.pytorch.callbacks import Checkpoint, ModelCheckpoint, ProgressBar
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf, open_dict

from vaelab.callbacks.data_config import DataConfigInCheckpoint
from vaelab.callbacks.divergence import DivergenceStop, advice
from vaelab.callbacks.epoch_record import EpochRecord
from vaelab.errors import ConfigError, DivergedError
from vaelab.metrics.likelihood import comparability_notes
from vaelab.record import COMPLETED, DIVERGED, INTERRUPTED, RECORD_FILE, RUNNING, STATUS, TERMINATED, TRACKING_ERROR
from vaelab.rules import validate_config
from vaelab.tasks.checkpoint_io import AtomicCheckpointIO
from vaelab.tasks.cluster import resume_after_requeue
from vaelab.tasks.hparams import run_hparams
from vaelab.tasks.hydra_job import command_line_overrides, in_multirun, instantiate_config
from vaelab.tasks.recording import recorded, reported_error, scalar_metrics, write_json
from vaelab.tasks.resume import (
    changed_settings,
    check_fits_model,
    continue_in_checkpoint_run,
    say_changed_settings,
)
from vaelab.tasks.run_names import hydra_choices
from vaelab.tasks.runtime import quiet_irrelevant_warnings, skip_failing_nvml_probe
from vaelab.tasks.signals import EXIT_CODE, Terminated, sigterm_raises
from vaelab.trust import peek, read_checkpoint

log = logging.getLogger(__name__)


def instantiate_all(cfg: DictConfig | None) -> list[Any]:
    """Instantiate every ``_target_`` entry of a config group such as ``callbacks`` or ``logger``.

    An entry set to null (``callbacks.samples=null``) is left out. A vaelab error raised by a constructor (MLflow's
    store unusable) is raised as itself (:func:`instantiate_config`), one message.
    """
    if not cfg:
        return []
    return [instantiate_config(entry) for entry in cfg.values()
            if isinstance(entry, DictConfig) and "_target_" in entry]


def build(cfg: DictConfig) -> tuple[L.LightningDataModule, L.LightningModule, L.Trainer]:
    """DataModule, model (given the data's image shape) and Trainer with its callbacks and loggers, the loggers
    told the run's config."""
    datamodule, model = build_model(cfg)
    trainer = build_trainer(cfg)
    check_manual_optimization(model, trainer)
    announce(trainer, cfg)
    return datamodule, model, trainer


def build_model(cfg: DictConfig) -> tuple[L.LightningDataModule, L.LightningModule]:
    """DataModule and model (given the data's image shape); nothing is written anywhere yet."""
    skip_failing_nvml_probe()
    quiet_irrelevant_warnings()
    datamodule = instantiate_config(cfg.data)
    given = {"image_shape": list(datamodule.image_shape)}
    if cfg.model.get("num_classes") == "auto":  # a conditional model on the data's classes
        given["num_classes"] = conditioning_classes(datamodule, cfg)
    model = instantiate_config(cfg.model, **given, _recursive_=False)
    return datamodule, model


def conditioning_classes(datamodule: Any, cfg: DictConfig) -> int:
    """The number of classes a conditional model (``model.num_classes=auto``) is given: the data's, which must have
    at least two (a :class:`~vaelab.errors.ConfigError` naming the data otherwise)."""
    count = int(getattr(datamodule, "num_classes", 0) or 0)
    if count < 2:
        name = cfg.data.get("_target_", "this data set").rsplit(".", 1)[-1]
        raise ConfigError(
            f"model.num_classes=auto conditions the model on the data's class labels, but {name} has "
            f"{'one class' if count == 1 else 'no class labels'}: use labelled data (e.g. data=mnist) or an "
            "unconditional model (model=vae)"
        )
    return count


def build_trainer(cfg: DictConfig) -> L.Trainer:
    """The Trainer with its callbacks and loggers, writing checkpoints atomically
    (:class:`~vaelab.tasks.checkpoint_io.AtomicCheckpointIO`, unless the config gives a checkpoint plugin of its
    own). Nothing is written yet: the loggers open their files when first used (see :func:`announce`)."""
    callbacks = instantiate_all(cfg.get("callbacks"))
    if cfg.trainer.get("enable_progress_bar") is False:  # the explicit trainer flag wins over callbacks.progress_bar
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    extra = {}
    if "enable_checkpointing" not in cfg.trainer and not any(isinstance(c, ModelCheckpoint) for c in callbacks):
        extra["enable_checkpointing"] = False  # no checkpoint configured (callbacks=none): not Lightning's default
    loggers = instantiate_all(cfg.get("logger"))
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, **extra)
    if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:  # (Lightning's default, not one configured)
        trainer.strategy.checkpoint_io = AtomicCheckpointIO()
    return trainer


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


def announce(trainer: L.Trainer, cfg: DictConfig) -> None:
    """Hand every logger the hyperparameters that tell this run apart (:func:`run_hparams`: TensorBoard's HParams
    columns, MLflow's params) and, to a logger that keeps one, the resolved config (TensorBoard's config card). The
    first write into the run's logging folder, which for a resumed run is the checkpoint's own run: done only once
    every check has passed, so a refused run writes nothing there."""
    config = OmegaConf.to_container(cfg, resolve=True)
    hparams = run_hparams(config, hydra_choices(), command_line_overrides())
    for logger in trainer.loggers:
        logger.log_hyperparams(hparams)
        if hasattr(logger, "log_config"):
            logger.log_config(config)


def hand_over_run_folder(loggers: list[Any], path: Path, record: dict[str, Any]) -> None:
    """Give every logger that keeps files (MLflow's artifacts) the finished run's folder: its ``metrics.json``
    (``path``), checkpoints and TensorBoard events, once the record is written, however the run ended. A logger
    whose tracking failed once training had started (it went on without it, saying why in ``tracking_error``) is
    noted in the record, which is then written again."""
    for logger in loggers:
        if hasattr(logger, "log_run_folder"):
            logger.log_run_folder(path.parent)
    failures = [str(e) for e in (getattr(logger, "tracking_error", None) for logger in loggers) if e]
    if failures:
        record[TRACKING_ERROR] = "; ".join(failures)
        write_json(path, record)


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
    data config in every checkpoint (for ``eval.py``), and the per-epoch ``metrics.json`` (see
    :class:`EpochRecord`) just before the checkpoint callbacks, so that its rewrite at the start of each epoch comes
    before they delete the checkpoints it named until then."""
    trainer.callbacks.sort(key=lambda c: not isinstance(c, DivergenceStop))  # (stable: the rest keep their order)
    trainer.callbacks.append(DataConfigInCheckpoint())
    first_checkpoint = next((i for i, c in enumerate(trainer.callbacks) if isinstance(c, Checkpoint)),
                            len(trainer.callbacks))
    trainer.callbacks.insert(first_checkpoint, EpochRecord(path, record, fit_record))


def say_how_long(cfg: DictConfig) -> None:
    """``trainer.max_epochs=-1`` is Lightning's "no limit": say so at the start, with how to stop it."""
    limits = [OmegaConf.select(cfg, f"trainer.{key}", default=None) for key in ("max_steps", "max_time")]
    if OmegaConf.select(cfg, "trainer.max_epochs", default=None) == -1 and all(v in (None, -1) for v in limits):
        log.warning("trainer.max_epochs=-1: training goes on until it is stopped (Ctrl-C, or SIGTERM as a scheduler "
                    "sends; each finished epoch's checkpoints/last.ckpt resumes it). Give trainer.max_epochs=<n>, "
                    "+trainer.max_time=00:12:00:00 or +trainer.max_steps=<n> to end it by itself.")


def last_checkpoint_said(last: str | None) -> str:
    """What to resume a stopped run from: ``last`` and the epoch it ends, read from the file itself."""
    if not last or not Path(last).is_file():
        return " No checkpoint was saved yet: there is nothing to resume from."
    epoch = peek(last, "epoch")
    if not isinstance(epoch, int):  # (unreadable: say the path only)
        return f" Resume with ckpt_path={last}"
    return f" Resume with ckpt_path={last} (saved at the end of epoch {epoch}: the run goes on from epoch {epoch + 1})"


def train(cfg: DictConfig) -> float | None:
    """Fit (and by default test) the configured model; write ``metrics.json`` (after every epoch, and however the
    run ends); return ``optimized_metric``.

    How a run ends, in ``metrics.json``'s ``status`` and the exit code of ``src/train.py``: ``completed`` (0);
    ``failed`` (1, one message for a bad value or file); ``diverged`` (1: a non-finite loss stopped it, see
    :mod:`vaelab.callbacks.divergence`); ``interrupted`` (Ctrl-C, 1); ``terminated`` (SIGTERM from a scheduler's
    time-out or pre-emption, 143 = 128 + 15); ``running`` is what a killed run (SIGKILL) leaves.
    """
    path = Path(cfg.paths.output_dir) / RECORD_FILE
    record: dict[str, Any] = {
        STATUS: RUNNING,
        "overrides": command_line_overrides(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    finishers: list = []  # what to do once the record is written (hand the run folder to the loggers)
    with recorded(path, record, after=finishers), sigterm_raises():
        try:
            value = _train(cfg, path, record, finishers)
        except Terminated:  # (SIGTERM before or between Lightning's loops: building, or decoding the data)
            record.update(status=TERMINATED, error="terminated by SIGTERM before training began (building the "
                                                     "model or preparing the data)")
            log.error("Terminated by SIGTERM before training began: nothing was trained.")
            raise
    return value


def _train(cfg: DictConfig, path: Path, record: dict[str, Any], finishers: list) -> float | None:
    """The training task itself (see :func:`train`), filling in ``record``."""
    validate_config(cfg)  # before anything is built; a failure is still recorded in metrics.json
    say_how_long(cfg)
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
        changed = changed_settings(checkpoint, cfg)
        if changed:  # the checkpoint's own run would no longer be described by its config: not continued there
            record["changed_settings"] = say_changed_settings(changed, Path(str(cfg.ckpt_path)))
        record.update(continue_in_checkpoint_run(cfg, settings_changed=bool(changed)))
    datamodule, model = build_model(cfg)
    # what a reader must know before comparing this run's numbers with published log-likelihoods
    record["notes"] = comparability_notes(model.model.likelihood.name, datamodule.hparams.get("binarize", "none"),
                                          datamodule.binary_images)
    if checkpoint is not None:
        check_fits_model(checkpoint, model, Path(str(cfg.ckpt_path)))
        del checkpoint
    trainer = build_trainer(cfg)
    check_launcher(trainer)
    check_manual_optimization(model, trainer)
    announce(trainer, cfg)  # (every check passed: the first write into a resumed run's own folder)
    finishers.append(lambda: hand_over_run_folder(trainer.loggers, path, record))
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
    except BaseException as raised:
        err = reported_error(raised, path.parent)  # (not the error of a write that failed while Lightning stopped)
        if stage == "fit":
            record.update(fit_record(trainer))  # what the epochs before the failure reached is not lost
        where = f"epoch {trainer.current_epoch}" if stage == "fit" else "testing, after fitting"
        if isinstance(err, Terminated) and stage == "fit" and trainer.global_step == 0:
            raise err from None  # (before the first step: while the data were prepared; said by train())
        if isinstance(err, DivergedError):
            record.update(status=DIVERGED, error=str(err))
        elif isinstance(err, SIGTERMException):  # a SystemExit without a code: it would exit 0
            record.update(status=TERMINATED, error=f"terminated by SIGTERM in {where}")
            log.error("Terminated by SIGTERM in %s.%s", where,
                      last_checkpoint_said(record.get("last_ckpt")) if stage == "fit" else "")
            raise SystemExit(EXIT_CODE) from err
        elif isinstance(err, (KeyboardInterrupt, SystemExit)):  # Lightning turns Ctrl-C into sys.exit(1)
            record.update(status=INTERRUPTED, error=f"interrupted in {where}")
            log.error("Interrupted in %s.%s", where,
                      last_checkpoint_said(record.get("last_ckpt")) if stage == "fit" else "")
        if err is not raised:
            raise err from None
        raise
    record[STATUS] = INTERRUPTED if trainer.interrupted else COMPLETED
    return optimized_value(cfg, record)


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
