"""vaelab from Python: ``vaelab.train([...overrides])`` and ``vaelab.evaluate(ckpt_path, [...overrides])`` run the
tasks behind the commands and return their records; ``vaelab.load(ckpt_path)`` gives a trained pure model.

The overrides are the command line's (``["model=beta_vae", "model.beta=4", "trainer.max_epochs=5"]``); the run gets
its folder as a command-line run does (under ``paths.log_dir``, default ``logs/`` in the working folder), and the
record returned is what the run wrote into its ``metrics.json``, with ``run_dir`` added. Errors are raised, as
exceptions, where the command line would print them. A sweep (``-m``) is the command line's job.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from vaelab.record import RECORD_FILE

#: the configs shipped inside the package
CONFIG_DIR = Path(__file__).resolve().parent / "conf"


def compose_config(config_name: str, overrides: Sequence[str] = (), config_dir: str | Path | None = None
                   ) -> DictConfig:
    """The config ``config_name`` (``train`` or ``eval``) with ``overrides``, composed as the command line would
    (``config_dir``: a folder of the user's own config groups, as ``--config-dir``), with its Hydra node: the run
    folder it names is made here, and set as the job's output folder."""
    from vaelab.tasks import run_names

    os.environ[run_names.RUN_ID_ENV] = run_names.new_token()  # a folder of its own for every run of this process
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR), job_name=config_name):
        if config_dir is not None:  # searched before vaelab's own groups, as --config-dir does
            overrides = [f"hydra.searchpath=[file://{Path(config_dir).resolve()}]", *overrides]
        cfg = _compose(config_name, list(overrides))
    run_dir = Path(OmegaConf.select(cfg, "hydra.run.dir")).resolve()
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(run_dir)
        cfg.hydra.job.name = config_name
    HydraConfig.instance().set_config(cfg)  # (for ${hydra:…} and the task's view of its overrides)
    run_dir.mkdir(parents=True, exist_ok=True)
    return cfg


def _compose(config_name: str, overrides: list[str]) -> DictConfig:
    """Hydra's ``compose``, except that a config file that is not valid YAML (one of ``config_dir``'s) is one
    :class:`~vaelab.tasks.hydra_job.ConfigFileError` naming the file, line and column, not YAML's own error."""
    import yaml

    from vaelab.tasks.hydra_job import ConfigFileError, yaml_error_message

    try:
        return compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
    except yaml.YAMLError as err:
        raise ConfigFileError(yaml_error_message(err)) from None


def _run(config_name: str, task: Callable[[DictConfig], Any], overrides: Sequence[str],
         config_dir: str | Path | None) -> dict[str, Any]:
    from vaelab.tasks.hydra_job import quiet_lightning_tips

    cfg = compose_config(config_name, overrides, config_dir)
    quiet_lightning_tips()  # (Lightning's advertisements; its other lines print as they do)
    run_dir = Path(cfg.hydra.runtime.output_dir)
    job = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    OmegaConf.resolve(job)
    task(job)
    record = json.loads((run_dir / RECORD_FILE).read_text())
    return {**record, "run_dir": str(run_dir)}


def train(overrides: Sequence[str] = (), config_dir: str | Path | None = None) -> dict[str, Any]:
    """Train as ``vaelab-train <overrides>`` does and return the run's record (``metrics.json``, with
    ``run_dir``): its status, the last epoch's metrics, the best checkpoint (``best_ckpt``) and its ``test`` metrics.
    """
    from vaelab.tasks.train import train as train_task

    return _run("train", train_task, overrides, config_dir)


def evaluate(ckpt_path: str | os.PathLike, overrides: Sequence[str] = (), config_dir: str | Path | None = None
             ) -> dict[str, Any]:
    """Evaluate a checkpoint as ``vaelab-eval ckpt_path=<ckpt_path> <overrides>`` does and return the record (its
    ``test`` metrics: −ELBO, −L_K, …, with ``run_dir``)."""
    from vaelab.tasks.evaluate import run_evaluation

    return _run("eval", run_evaluation, [f"ckpt_path={Path(ckpt_path).resolve()}", *overrides], config_dir)
