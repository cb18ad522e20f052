"""A checkpoint cannot make vaelab run code of its choosing (issue 17): every ``_target_`` it names is checked against
vaelab's classes, torch's optimisers and schedulers and what the user's own config names, before anything is built."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import compose_eval, compose_train

from vaelab.errors import ConfigError
from vaelab.tasks.evaluate import run_evaluation
from vaelab.tasks.train import train
from vaelab.trust import check_targets, config_targets, is_builtin_allowed, targets


def write_marker(path: str, **kwargs) -> None:
    """What a crafted checkpoint names: any function at all (here one that leaves a file behind)."""
    Path(path).write_text("this ran")


@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("good")
    train(compose_train(tmp, ["logger=none", "callbacks=minimal", "test=false", "model.latent_dim=4"]))
    return tmp / "run" / "checkpoints" / "last.ckpt"


def crafted(good: Path, path: Path, where: str, target: str, marker: Path) -> None:
    checkpoint = torch.load(good, weights_only=True)
    if where == "model":
        checkpoint["hyper_parameters"]["net"]["encoder"] = {"_target_": target, "path": str(marker)}
    else:
        checkpoint["vaelab_data"] = {"_target_": target, "path": str(marker)}
    torch.save(checkpoint, path)


@pytest.mark.parametrize("where", ["model", "data"])
def test_a_checkpoint_naming_foreign_code_is_refused_and_nothing_runs(tmp_path, good_checkpoint, where):
    path, marker = tmp_path / "crafted.ckpt", tmp_path / "marker.txt"
    crafted(good_checkpoint, path, where, "test_trust.write_marker", marker)
    with pytest.raises(ConfigError) as caught:
        run_evaluation(compose_eval(tmp_path, [f"ckpt_path={path}"]))
    assert not marker.exists()  # nothing was called
    message = str(caught.value)
    key = "net.encoder._target_" if where == "model" else "_target_"
    settings = "hyper_parameters" if where == "model" else "vaelab_data"
    assert message.startswith(f"ckpt_path={path} (its {'model' if where == 'model' else 'data'} settings, {settings}) "
                              f"names code that vaelab does not build from a file it did not make: "
                              f"{key} = 'test_trust.write_marker'")
    assert "trusted_targets=[test_trust.write_marker]" in message
    record = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert record["status"] == "failed" and "test_trust.write_marker" in record["error"]


def test_os_system_through_a_vaelab_module_is_refused(tmp_path, good_checkpoint):
    path, marker = tmp_path / "crafted.ckpt", tmp_path / "marker.txt"
    checkpoint = torch.load(good_checkpoint, weights_only=True)
    checkpoint["hyper_parameters"]["objective"] = {"_target_": "vaelab.tasks.train.os.system",
                                                   "_args_": [f"touch {marker}"]}
    torch.save(checkpoint, path)
    with pytest.raises(ConfigError, match=r"objective._target_ = 'vaelab.tasks.train.os.system'"):
        run_evaluation(compose_eval(tmp_path, [f"ckpt_path={path}"]))
    assert not marker.exists()


def test_trusted_targets_on_the_command_line_let_a_target_through(tmp_path, good_checkpoint):
    path, marker = tmp_path / "crafted.ckpt", tmp_path / "marker.txt"
    crafted(good_checkpoint, path, "data", "test_trust.write_marker", marker)
    with pytest.raises(Exception):  # noqa: B017  (it ran, and then there is no data module to evaluate on)
        run_evaluation(compose_eval(tmp_path, [f"ckpt_path={path}", "trusted_targets=[test_trust.write_marker]"]))
    assert marker.read_text() == "this ran"


def test_the_allowed_targets():
    for allowed in ("vaelab.models.nets.MLPEncoder", "vaelab.models.objectives.Elbo", "vaelab.data.DigitsDataModule",
                    "vaelab.models.schedules.ConstantBeta", "torch.optim.Adam", "torch.optim.adamw.AdamW",
                    "torch.optim.lr_scheduler.ReduceLROnPlateau", "torch.optim.lr_scheduler.CosineAnnealingLR"):
        assert is_builtin_allowed(allowed), allowed
    for refused in ("os.system", "builtins.eval", "vaelab.tasks.train.os.system", "vaelab.tasks.recording.write_json",
                    "torch.optim.swa_utils.AveragedModel", "torch.load", "vaelab.no.such.Thing", "subprocess.run",
                    "${oc.env:EVIL}", "torch.optim.lr_scheduler.warnings.warn"):
        assert not is_builtin_allowed(refused), refused
    config = {"net": {"encoder": {"_target_": "a.B", "layers": [{"_target_": "c.D"}]}}, "optimizer": {"lr": 1}}
    assert list(targets(config)) == [("net.encoder._target_", "a.B"), ("net.encoder.layers[0]._target_", "c.D")]
    check_targets(config, "here", {"a.B", "c.D"})  # what the user's config names is allowed
    with pytest.raises(ConfigError, match=r"here names code .*net.encoder.layers\[0\]._target_ = 'c.D'"):
        check_targets(config, "here", {"a.B"})
    user = compose_eval(Path("/tmp"), ["ckpt_path=x", "data=mnist", "trusted_targets=[my.Net]"])
    # the data set and the sampler it chose (the sampler group's default, the prior), and what it trusts
    assert config_targets(user) == {"vaelab.data.MNISTDataModule", "vaelab.models.samplers.PriorSampler", "my.Net"}


def test_vaelab_load_refuses_a_checkpoint_naming_foreign_code_unless_trusted(tmp_path, good_checkpoint):
    """``vaelab.load`` (a notebook's way in) builds the pure model from the checkpoint's settings: the same rule."""
    import vaelab

    path, marker = tmp_path / "crafted.ckpt", tmp_path / "marker.txt"
    checkpoint = torch.load(good_checkpoint, weights_only=True)
    checkpoint["hyper_parameters"]["code"] = {"_target_": "test_trust.write_marker", "path": str(marker)}
    torch.save(checkpoint, path)
    with pytest.raises(ConfigError, match="code._target_ = 'test_trust.write_marker'"):
        vaelab.load(path)
    assert not marker.exists()
    with pytest.raises(AttributeError):  # (trusted: it is called, and what it returns, None, is no code)
        vaelab.load(path, trusted_targets=["test_trust.write_marker"])
    assert marker.exists()
