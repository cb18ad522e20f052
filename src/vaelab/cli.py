"""The installed commands: ``vaelab-train``, ``vaelab-eval`` and ``vaelab-summarize`` (``[project.scripts]``).

``vaelab-train`` and ``vaelab-eval`` take the same overrides as ``python src/train.py`` and ``python src/eval.py``
(which call them), from the configs shipped inside the package (``vaelab/conf``). Hydra's own flags work too: a
user's configs compose with vaelab's through ``--config-dir my_conf`` (a folder of config groups searched before
vaelab's: ``my_conf/experiment/my_experiment.yaml`` is then ``experiment=my_experiment``), and ``-m`` runs sweeps.

Outside the clone, logs and data go under the working folder (``logs/``, ``data/``); the folder a command is run
from is importable, as with ``python -m``, so a user's own classes there can be a config's ``_target_``.
"""

from __future__ import annotations

import os
import sys

import hydra
from omegaconf import DictConfig

from vaelab.tasks import naming


def _prepare() -> None:
    """This process's run token (before Hydra resolves the run folder; inherited by the processes it starts) and
    the working folder on the import path."""
    naming.export_run_id()
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def _train(cfg: DictConfig) -> float | None:
    from vaelab.tasks.train import train

    return train(cfg)


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def _evaluate(cfg: DictConfig) -> float | None:
    from vaelab.tasks.evaluate import run_evaluation

    return run_evaluation(cfg)


def train() -> None:
    """``vaelab-train [group=option ...] [key=value ...]``: train (see ``vaelab/conf/train.yaml``)."""
    _prepare()
    _train()


def evaluate() -> None:
    """``vaelab-eval ckpt_path=… [data=…] [iw_k=…]``: evaluate a checkpoint (see ``vaelab/conf/eval.yaml``)."""
    _prepare()
    _evaluate()


def summarize() -> None:
    """``vaelab-summarize <multirun folder> [--out DIR]``: the sweep summary (:mod:`vaelab.reports.sweep`)."""
    from vaelab.reports.sweep import main

    sys.exit(main())
