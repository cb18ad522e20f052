"""The installed package: a wheel (not the clone) in a fresh virtual environment, its commands run from a folder
that is not the clone, with a user's own configs and net class composed with vaelab's."""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # builds a wheel and installs it into a scratch environment

ROOT = Path(__file__).resolve().parents[1]
FAST = ["trainer.max_epochs=1", "+trainer.limit_train_batches=3", "+trainer.limit_val_batches=1",
        "+trainer.limit_test_batches=1", "+trainer.enable_progress_bar=false"]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A scratch virtual environment with the vaelab wheel installed in it (its dependencies: the test
    environment's, offline)."""
    base = tmp_path_factory.mktemp("packaging")
    # built from a copy of what the wheel is made of, so setuptools' build/ folder is not left in the clone
    source = base / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    wheels = base / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(wheels)], check=True, capture_output=True, text=True, timeout=300)
    (wheel,) = wheels.glob("vaelab-*.whl")
    venv = base / "venv"
    subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    ask = "import sysconfig; print(sysconfig.get_path('purelib'))"
    purelib = subprocess.run([str(venv / "bin" / "python"), "-c", ask], check=True, capture_output=True,
                             text=True).stdout.strip()
    # the test environment's packages (torch, Lightning, Hydra, …), but not its editable vaelab: a .pth line adds
    # the folder without reading the .pth files in it
    (Path(purelib) / "test-environment.pth").write_text(site.getsitepackages()[0] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
                    "--no-deps", "--no-index", str(wheel)], check=True, capture_output=True, text=True, timeout=300)
    return venv


def run(venv: Path, command: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("VAELAB_ROOT", "PYTHONPATH", "VAELAB_RUN_ID")}
    return subprocess.run([str(venv / "bin" / command), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


def test_the_wheel_holds_the_package_and_its_configs_not_the_clone(installed, tmp_path):
    result = subprocess.run([str(installed / "bin" / "python"), "-c",
                             "import vaelab, vaelab.api; print(vaelab.__file__); print(vaelab.api.CONFIG_DIR)"],
                            cwd=tmp_path, capture_output=True, text=True, check=True)
    module, configs = result.stdout.split()
    assert Path(module).is_relative_to(installed) and not Path(module).is_relative_to(ROOT)
    assert (Path(configs) / "train.yaml").is_file() and (Path(configs) / "model" / "vae.yaml").is_file()


def test_vaelab_train_and_eval_run_from_another_folder(installed, tmp_path):
    result = run(installed, "vaelab-train", FAST, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (record_path,) = (tmp_path / "logs" / "train" / "runs").glob("vae_z16_b1_*/metrics.json")
    record = json.loads(record_path.read_text())
    assert record["status"] == "completed"
    result = run(installed, "vaelab-eval", [f"ckpt_path={record['best_ckpt']}", "iw_k=5"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "neg_iw_bound" in result.stdout
    result = run(installed, "vaelab-train", ["model.latent_dim=0"], tmp_path)
    assert result.returncode == 1 and "model.latent_dim = 0 is invalid" in result.stderr


def test_a_users_own_experiment_and_net_class_compose_with_vaelabs_configs(installed, tmp_path):
    (tmp_path / "my_nets.py").write_text(textwrap.dedent('''
        from math import prod
        from torch import nn

        class TanhEncoder(nn.Sequential):
            def __init__(self, image_shape, out_features, width=24):
                super().__init__(nn.Flatten(), nn.Linear(prod(image_shape), width), nn.Tanh(),
                                 nn.Linear(width, out_features))

        class TanhDecoder(nn.Sequential):
            def __init__(self, image_shape, latent_dim, width=24):
                super().__init__(nn.Linear(latent_dim, width), nn.Tanh(), nn.Linear(width, prod(image_shape)),
                                 nn.Unflatten(1, tuple(image_shape)))
    '''))
    conf = tmp_path / "my_conf"
    (conf / "model" / "net").mkdir(parents=True)
    (conf / "experiment").mkdir()
    (conf / "model" / "net" / "tanh.yaml").write_text(
        "encoder:\n  _target_: my_nets.TanhEncoder\n  width: 24\ndecoder:\n  _target_: my_nets.TanhDecoder\n")
    (conf / "experiment" / "my_experiment.yaml").write_text(textwrap.dedent("""
        # @package _global_
        defaults:
          - override /model: beta_vae
          - override /model/net: tanh
          - override /callbacks: minimal
        model:
          beta: 2.0
          latent_dim: 3
    """))
    result = run(installed, "vaelab-train", ["--config-dir", "my_conf", "experiment=my_experiment", *FAST], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (folder,) = (tmp_path / "logs" / "train" / "runs").glob("beta_vae-tanh_z3_b2_*")
    assert json.loads((folder / "metrics.json").read_text())["status"] == "completed"
    config = (folder / ".hydra" / "config.yaml").read_text()
    assert "my_nets.TanhEncoder" in config and "beta: 2.0" in config
