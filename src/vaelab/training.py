"""The training task behind ``src/train.py``: build everything from the Hydra config, fit, test, record."""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf, open_dict

from vaelab.config import validate_config
from vaelab.errors import ConfigError
from vaelab.runtime import quiet_irrelevant_warnings, skip_failing_nvml_probe

log = logging.getLogger(__name__)


def instantiate_all(cfg: DictConfig | None) -> list[Any]:
    """Instantiate every ``_target_`` entry of a config group such as ``callbacks`` or ``logger``.

    An entry set to null (``callbacks.samples=null``) is left out.
    """
    if not cfg:
        return []
    return [instantiate(entry) for entry in cfg.values() if isinstance(entry, DictConfig) and "_target_" in entry]


def scalar_metrics(metrics: dict[str, Any], prefix: str) -> dict[str, float]:
    """The ``prefix/…`` entries of Lightning's metric dict as plain floats."""
    return {k: float(v) for k, v in sorted(metrics.items()) if k.startswith(prefix)}


@rank_zero_only
def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    tmp.replace(path)


@contextmanager
def recorded(path: Path, record: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Write ``record`` to ``path`` (on rank 0) however the block ends: with ``status: failed`` and the error when
    it raises (unless the block marked it ``interrupted``), and always with the seconds it took, so no run's
    outcome is lost."""
    start = time.perf_counter()
    try:
        yield record
    except BaseException as err:
        if record.get("status") != "interrupted":  # (the caller has already said how it was interrupted)
            record.update(status="failed", error=f"{type(err).__name__}: {err}")
        raise
    finally:
        record["seconds"] = round(time.perf_counter() - start, 2)
        write_json(path, record)


def command_line_overrides() -> list[str]:
    """The command-line overrides of this Hydra job (empty outside a Hydra run)."""
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


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


def in_multirun() -> bool:
    """Whether this is a job of a Hydra multirun (``-m``)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def continues_its_run(ckpt: Path) -> bool:
    """Whether ``ckpt`` is the ``last.ckpt`` of a run's ``checkpoints/`` folder, written by a ModelCheckpoint
    that saved into that very folder: the one case where resuming should go on writing there."""
    if ckpt.name != "last.ckpt" or ckpt.parent.name != "checkpoints":
        return False
    try:
        callbacks = torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True).get("callbacks", {})
    except Exception:  # not one of vaelab's checkpoints: Lightning reports it when it loads it
        return False
    dirpaths = [state.get("dirpath") for state in callbacks.values() if isinstance(state, dict)]
    return any(d is not None and Path(d).resolve() == ckpt.parent for d in dirpaths)


def continue_in_checkpoint_run(cfg: DictConfig) -> dict[str, str]:
    """Resuming a run from its ``last.ckpt``: write checkpoints, and TensorBoard events, on where that run did.

    Hydra gives the resumed run a folder of its own (its config, log and ``metrics.json``), but Lightning restores
    the best score so far and the best checkpoints only when the checkpoint folder stays the same, and a
    TensorBoard curve continues only in its own folder. This is done only for a single run resuming a run's
    ``last.ckpt`` (see :func:`continues_its_run`), and only for what is configured in its default place
    (``<run>/checkpoints``, ``<run>/tensorboard``); a sweep over a checkpoint, or a start from any other
    checkpoint, writes into its own folder and leaves the old run as it was. Returns what was redirected.
    """
    ckpt = Path(str(cfg.ckpt_path)).resolve()
    if in_multirun() or not continues_its_run(ckpt):
        log.info("Starting from %s: this run writes its checkpoints into its own folder (the best score from "
                 "before is not carried over)", ckpt)
        return {}
    own = Path(str(cfg.paths.output_dir))
    moved = {}
    with open_dict(cfg):
        checkpoint = (cfg.get("callbacks") or {}).get("model_checkpoint")
        if checkpoint is not None and Path(str(checkpoint.get("dirpath"))) == own / "checkpoints":
            checkpoint.dirpath = moved["checkpoints_dir"] = str(ckpt.parent)
        tensorboard = (cfg.get("logger") or {}).get("tensorboard")
        old_events = ckpt.parent.parent / "tensorboard"
        if (tensorboard is not None and Path(str(tensorboard.get("save_dir"))) == own / "tensorboard"
                and old_events.is_dir()):
            tensorboard.save_dir = moved["tensorboard_dir"] = str(old_events)
    for what, where in moved.items():
        log.info("Resuming %s: %s go on in %s", ckpt, what.removesuffix("_dir"), where)
    return moved


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
