"""The installed commands: ``vaelab-train``, ``vaelab-eval`` and ``vaelab-summarize`` (``[project.scripts]``).

``vaelab-train`` and ``vaelab-eval`` take the same overrides as ``python src/train.py`` and ``python src/eval.py``
(which call them), from the configs shipped inside the package (``vaelab/conf``). Hydra's own flags work too: a
user's configs compose with vaelab's through ``--config-dir my_conf`` (a folder of config groups searched before
vaelab's: ``my_conf/experiment/my_experiment.yaml`` is then ``experiment=my_experiment``), and ``-m`` runs sweeps.

Outside the clone, logs and data go under the working folder (``logs/``, ``data/``); the folder a command is run
from is importable, as with ``python -m``, so a user's own classes there can be a config's ``_target_``.

What they print: a config file that is not valid YAML is one message naming it, its line and column
(:func:`~vaelab.tasks.hydra_job.say_broken_yaml`); each line Lightning logs is printed once, and is in the run's log
file (:func:`~vaelab.tasks.hydra_job.lightning_lines_once`); Ctrl-C ends the command with exit code 1 and no
traceback, however often it is pressed (the run's record says ``interrupted``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import hydra
from omegaconf import DictConfig

from vaelab.tasks import run_names
from vaelab.tasks.hydra_job import lightning_lines_once, say_broken_yaml


def _prepare() -> None:
    """This process's run token (before Hydra resolves the run folder; inherited by the processes it starts) and
    the working folder on the import path."""
    run_names.export_run_id()
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    say_broken_yaml()


@contextmanager
def _interrupt_said() -> Iterator[None]:
    """Ctrl-C that reaches the command (pressed before training, or again while a run stopped) ends it with exit code
    1, as Lightning's own stop does, and one line instead of a traceback; the run's record says ``interrupted``."""
    try:
        yield
    except KeyboardInterrupt:
        print("Interrupted (Ctrl-C).", file=sys.stderr)
        sys.exit(1)


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def _train(cfg: DictConfig) -> float | None:
    from vaelab.tasks.train import train

    lightning_lines_once()  # (Hydra's job logging is in place now)
    return train(cfg)


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def _evaluate(cfg: DictConfig) -> float | None:
    from vaelab.tasks.evaluate import run_evaluation

    lightning_lines_once()
    return run_evaluation(cfg)


def train() -> None:
    """``vaelab-train [group=option ...] [key=value ...]``: train (see ``vaelab/conf/train.yaml``)."""
    _prepare()
    with _interrupt_said():
        _train()


def evaluate() -> None:
    """``vaelab-eval ckpt_path=… [data=…] [iw_k=…]``: evaluate a checkpoint (see ``vaelab/conf/eval.yaml``)."""
    _prepare()
    with _interrupt_said():
        _evaluate()


def summarize() -> None:
    """``vaelab-summarize <multirun folder> [--out DIR]``: the sweep summary (:mod:`vaelab.reports.sweep`)."""
    from vaelab.reports.sweep import main

    sys.exit(main())
