"""Nothing in a file runs code or reaches outside its run (issue 24, sections 1 and 2).

Every route that builds anything from a checkpoint (``vaelab.load``, eval.py's model and data, a resume,
``model.init_from``, scripts/vqvae_figures.py) goes through the one trusted loader,
:func:`vaelab.trust.read_checkpoint`.
The crafted files here carry an interpolation that would make a ``_target_`` (``oc.create``), read the environment
(``oc.env``) or call a resolver of the process's own, Hydra's special keys with values no checkpoint vaelab wrote
has, and such values deep in nested lists and dicts. A resume whose checkpoint state names files outside the run
deletes none of them. Each test fails without its fix (the marker file is written, the environment read, or the
file deleted).
"""

from __future__ import annotations

import ast
import importlib.util
import sys
import warnings
from pathlib import Path

import pytest
import torch
from conftest import ROOT, compose_eval, compose_train
from omegaconf import OmegaConf

import vaelab
from vaelab.errors import ConfigError
from vaelab.models.checkpoint import model_from_checkpoint
from vaelab.tasks.evaluate import run_evaluation
from vaelab.tasks.train import train
from vaelab.trust import plain_settings

TINY = ["logger=none", "callbacks=minimal", "test=false", "model.latent_dim=4",
        "model.net.encoder.hidden_dims=[16]", "model.net.decoder.hidden_dims=[16]"]
RESOLVER = "vaelab_test_marker"


def write_marker(path: str, **kwargs) -> None:
    """What a crafted checkpoint wants to call: any function at all (here one that leaves a file behind)."""
    Path(path).write_text("this ran")


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("good")
    train(compose_train(tmp, TINY))
    return tmp / "run" / "checkpoints" / "last.ckpt"


@pytest.fixture
def marker(tmp_path) -> Path:
    """A file the payloads try to write; a resolver of this process's own that writes it too."""
    path = tmp_path / "marker.txt"
    OmegaConf.register_new_resolver(RESOLVER, lambda: write_marker(str(path)) or 16, replace=True)
    yield path
    OmegaConf.clear_resolver(RESOLVER)


def payloads(marker: Path) -> dict[str, object]:
    """Values a crafted file puts where a number, a path or a class should be."""
    create = "${oc.create:{_target_: test_trust_files.write_marker, path: '" + str(marker) + "'}}"
    return {
        "oc.create": create,
        "oc.env": "${oc.env:HOME}",
        "custom resolver": "${" + RESOLVER + ":}",
        "in a nested list": [[16, {"deep": [create]}]],
        "_args_ with an interpolation": {"_target_": "vaelab.models.schedules.ConstantBeta", "_args_": [create]},
        "_partial_ as an interpolation": {"_target_": "vaelab.models.schedules.ConstantBeta", "_partial_": create},
        "_recursive_ not a boolean": {"_target_": "vaelab.models.schedules.ConstantBeta", "_recursive_": create},
        "a special key Hydra reads": {"_target_": "vaelab.models.schedules.ConstantBeta", "_set_": create},
    }


def crafted(good: Path, path: Path, where: str, value: object) -> Path:
    """``good`` with ``value`` in the encoder's hidden sizes (``model``) or the data's cache folder (``data``)."""
    checkpoint = torch.load(good, weights_only=True)
    if where == "model":
        checkpoint["hyper_parameters"]["net"]["encoder"]["hidden_dims"] = value
    else:
        checkpoint["vaelab_data"]["cache_dir"] = value
    torch.save(checkpoint, path)
    return path


def refused(call, marker: Path, match: str = "holds") -> ConfigError:
    with pytest.raises(ConfigError, match=match) as caught:
        call()
    assert not marker.exists(), "the file's payload ran"
    return caught.value


# ----------------------------------------------------------------------------------------------- every route
@pytest.mark.parametrize("payload", list(payloads(Path("m"))))
def test_vaelab_load_refuses_every_payload(tmp_path, good, marker, payload):
    path = crafted(good, tmp_path / "crafted.ckpt", "model", payloads(marker)[payload])
    error = refused(lambda: vaelab.load(path), marker)
    assert str(path) in str(error) and "hidden_dims" in str(error)


@pytest.mark.parametrize("payload", ["oc.create", "oc.env", "custom resolver", "in a nested list"])
def test_the_pure_model_is_never_built_from_an_unchecked_dict(tmp_path, good, marker, payload):
    """Code that reads a checkpoint its own way still builds it the trusted way."""
    checkpoint = torch.load(crafted(good, tmp_path / "c.ckpt", "model", payloads(marker)[payload]), weights_only=True)
    refused(lambda: model_from_checkpoint(checkpoint), marker)


@pytest.mark.parametrize("where", ["model", "data"])
@pytest.mark.parametrize("payload", ["oc.create", "custom resolver", "_args_ with an interpolation"])
def test_eval_refuses_payloads_in_the_model_and_the_data_settings(tmp_path, good, marker, where, payload):
    path = crafted(good, tmp_path / "crafted.ckpt", where, payloads(marker)[payload])
    error = refused(lambda: run_evaluation(compose_eval(tmp_path, [f"ckpt_path={path}"])), marker)
    assert ("hyper_parameters" if where == "model" else "vaelab_data") in str(error)


def test_eval_never_reads_the_environment_for_a_file(tmp_path, good, marker, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home-was-read"))
    path = crafted(good, tmp_path / "crafted.ckpt", "data", "${oc.env:HOME}")
    error = refused(lambda: run_evaluation(compose_eval(tmp_path, [f"ckpt_path={path}"])), marker)
    assert "an interpolation" in str(error) and "cache_dir" in str(error)
    assert not (tmp_path / "home-was-read").exists()


def test_a_resume_from_a_crafted_checkpoint_is_refused(tmp_path, good, marker):
    path = crafted(good, tmp_path / "crafted.ckpt", "model", payloads(marker)["oc.create"])
    cfg = compose_train(tmp_path, [*TINY, f"ckpt_path={path}", "trainer.max_epochs=2"])
    refused(lambda: train(cfg), marker)


def test_init_from_a_crafted_checkpoint_is_refused(tmp_path, good, marker):
    path = crafted(good, tmp_path / "crafted.ckpt", "model", payloads(marker)["custom resolver"])
    cfg = compose_train(tmp_path, [*TINY, f"+model.init_from={path}"])
    error = refused(lambda: train(cfg), marker)
    assert str(error).startswith(f"model.init_from={path} (its model settings, hyper_parameters) holds")


def test_init_from_a_pickle_says_it_is_not_loaded(tmp_path, marker):
    path = tmp_path / "pickled.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"x": Path("x")}}, path)
    error = refused(lambda: train(compose_train(tmp_path, [*TINY, f"+model.init_from={path}"])), marker,
                    match="Python objects")
    assert "it is not loaded: unpickling such a file can run arbitrary code" in str(error)
    assert "weights_only=False" not in str(error)


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_vqvae_figures_script_builds_no_crafted_data(tmp_path, good, marker):
    """It built the checkpoint's data settings with no check at all (a file was written)."""
    checkpoint = torch.load(good, weights_only=True)
    checkpoint["vaelab_data"] = {"_target_": "test_trust_files.write_marker", "path": str(marker)}
    torch.save(checkpoint, tmp_path / "c.ckpt")
    refused(lambda: _script("vqvae_figures").test_images(tmp_path / "c.ckpt", 4, None), marker,
            match="names code that vaelab does not build")


def test_the_checkpoints_data_settings_never_say_where_to_write(tmp_path, good):
    """A checkpoint says what data, not where eval writes: its cache folder and download switch are not taken."""
    elsewhere = tmp_path / "not-the-runs"
    checkpoint = torch.load(good, weights_only=True)
    checkpoint["vaelab_data"].update(cache=True, cache_dir=str(elsewhere), download=True)
    torch.save(checkpoint, tmp_path / "c.ckpt")
    run_evaluation(compose_eval(tmp_path, [f"ckpt_path={tmp_path / 'c.ckpt'}", "iw_k=0", "representation=null",
                                           "sample_quality=null"]))
    assert not elsewhere.exists()


def test_a_link_to_a_text_file_is_named_not_an_index_error(tmp_path):
    (tmp_path / "notes.txt").write_text("not a checkpoint\n")
    (tmp_path / "model.ckpt").symlink_to(tmp_path / "notes.txt")
    with pytest.raises(ConfigError, match=r"model.ckpt is not a usable checkpoint: it is not a PyTorch checkpoint"):
        vaelab.load(tmp_path / "model.ckpt")


def test_plain_settings_keep_what_vaelab_writes():
    stored = {"net": {"encoder": {"_target_": "vaelab.models.nets.MLPEncoder", "hidden_dims": (512, 256)}},
              "optimizer": {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-3},
              "objective": {"_target_": "vaelab.models.objectives.FactorVAE", "_recursive_": False}, "x": None}
    assert plain_settings(stored, "f")["net"]["encoder"]["hidden_dims"] == [512, 256]
    with pytest.raises(ConfigError, match=r"f holds t = a Tensor, not a plain value"):
        plain_settings({"t": torch.zeros(1)}, "f")
    with pytest.raises(ConfigError, match=r"a key that is not a string"):
        plain_settings({1: 2}, "f")


# ------------------------------------------------------------------------------ one loader for every file route
#: every place that calls ``instantiate``, and why what it builds is trusted (a new one fails here until reviewed)
INSTANTIATE_SITES = {
    ("src/vaelab/tasks/hydra_job.py", "instantiate_config"): "the composed config (the user's own)",
    ("src/vaelab/tasks/train.py", "build_trainer"): "the composed config",
    ("src/vaelab/training/module.py", "__init__"): "the module's arguments: the composed config (a resume restores "
                                                 "weights and state, never settings, from the file)",
    ("src/vaelab/training/module.py", "configure_optimizers"): "the module's arguments",
    ("src/vaelab/tasks/evaluate.py", "load"): "data settings from trust.read_checkpoint, merged with the config",
    ("src/vaelab/tasks/evaluate.py", "_evaluate"): "the sampler of the composed config",
    ("src/vaelab/models/autoencoder.py", "__init__"): "arguments made plain and checked by trust.trusted_settings "
                                                      "when they come from a file (models.checkpoint)",
    ("src/vaelab/models/objectives/factor_vae.py", "adversary_optimizer"): "the objective's own arguments",
    ("scripts/vqvae_figures.py", "test_images"): "data settings from trust.read_checkpoint",
}
#: the only modules that may read a PyTorch file, and why
TORCH_LOAD_SITES = {
    "src/vaelab/trust.py": "the trusted loader",
    "src/vaelab/metrics/feature_net.py": "vaelab's own shipped weights, SHA-256 checked first",
    "src/vaelab/data/base.py": "the data cache: tensors only, nothing built from it",
}


def _calls(name: str) -> set[tuple[str, str]]:
    found = set()
    for file in [*(ROOT / "src").rglob("*.py"), *(ROOT / "scripts").rglob("*.py")]:
        tree = ast.parse(file.read_text())
        for function in [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]:
            for node in ast.walk(function):
                called = getattr(node, "func", None)
                if isinstance(node, ast.Call) and (getattr(called, "id", None) == name
                                                   or getattr(called, "attr", None) == name):
                    found.add((str(file.relative_to(ROOT)), function.name))
    return found


def test_every_instantiate_is_reviewed():
    found = _calls("instantiate")
    assert not found - set(INSTANTIATE_SITES), f"instantiate() where nobody said why its input is trusted: " \
                                               f"{sorted(found - set(INSTANTIATE_SITES))}"
    assert not set(INSTANTIATE_SITES) - found, f"reviewed sites that are gone: {sorted(set(INSTANTIATE_SITES) - found)}"


def test_only_the_trusted_loader_reads_checkpoint_files():
    readers = {file for file, _ in _calls("load") if file in TORCH_LOAD_SITES or "torch.load(" in
               (ROOT / file).read_text()}
    assert readers <= set(TORCH_LOAD_SITES), f"torch.load outside the trusted loader: {sorted(readers)}"
    assert "read_checkpoint" in (ROOT / "src/vaelab/training/stages.py").read_text()  # init_from


# ------------------------------------------------------------------------------------ 2. a resume deletes nothing
@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink"])
def test_a_resume_deletes_no_file_outside_its_checkpoint_folder(tmp_path, kind):
    """The state names a victim as the worst of the best checkpoints (superseded, so deleted, by the next epoch's)
    and another as last.ckpt (superseded by the next last.ckpt): both stay."""
    first = tmp_path / "first"
    train(compose_train(first, TINY))
    folder = first / "run" / "checkpoints"
    victim, last_victim = tmp_path / "victim.txt", tmp_path / "last.txt"
    victim.write_text("keep me")
    last_victim.write_text("keep me")
    (folder / "link.ckpt").symlink_to(victim)
    named = {"dotdot": f"{folder}/../../../victim.txt", "absolute": str(victim), "symlink": str(folder / "link.ckpt")}
    checkpoint = torch.load(folder / "last.ckpt", weights_only=True)
    (state,) = [v for k, v in checkpoint["callbacks"].items() if "Checkpoint" in k and "best_k_models" in v]
    worst = torch.tensor(-1e9)
    state.update(best_k_models={named[kind]: worst}, kth_best_model_path=named[kind], kth_value=worst,
                 best_model_path=named[kind], best_model_score=worst, last_model_path=f"{folder}/../../../last.txt")
    torch.save(checkpoint, folder / "last.ckpt")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(compose_train(tmp_path / "second", [*TINY, f"ckpt_path={folder / 'last.ckpt'}", "trainer.max_epochs=2"]))
    assert victim.is_file() and last_victim.is_file(), "the resume deleted a file outside its run"
    assert (folder / "last.ckpt").is_file() and (folder / "epoch_001.ckpt").is_file()
    assert any("names files outside its folder" in str(w.message) for w in caught)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
