"""Shared test helpers: compose the real Hydra config with run folders under pytest's tmp_path."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
os.environ.setdefault("VAELAB_ROOT", str(ROOT))

# Tiny and quick: a couple of batches per split, no progress bar.
FAST = [
    "trainer=cpu",
    "trainer.max_epochs=1",
    "+trainer.limit_train_batches=3",
    "+trainer.limit_val_batches=1",
    "+trainer.limit_test_batches=1",
    "+trainer.enable_progress_bar=false",
    "+trainer.enable_model_summary=false",
]


def compose_train(tmp_path: Path, overrides: list[str] = (), fast: bool = True) -> DictConfig:
    """The train config as ``src/train.py`` would compose it, writing into ``tmp_path``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose(config_name="train", overrides=[*(FAST if fast else []), *overrides])
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run")
        cfg.paths.log_dir = str(tmp_path / "logs")
        cfg.paths.data_dir = str(tmp_path / "data")
    return cfg


def compose_eval(tmp_path: Path, overrides: list[str] = ()) -> DictConfig:
    """The eval config as ``src/eval.py`` would compose it, writing into ``tmp_path``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose(config_name="eval", overrides=list(overrides))
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "eval")
        cfg.paths.data_dir = str(tmp_path / "data")
    return cfg


def constant_discriminator(objective, logit: float) -> None:
    """D(z) = σ(logit) for every z of an objective's discriminator (FactorVAE's, the AAE's): the last layer's weights
    zero, its bias the logit."""
    import torch

    last = objective.discriminator[-2]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(logit)


@pytest.fixture
def python() -> str:
    return sys.executable
