"""Sharing a trained model (issue 29): ``model.save_pretrained(folder)`` writes the weights (safetensors), the settings
(config.json) and a model card (README.md); ``vaelab.load(folder)`` and ``vaelab.load("hf://owner/name")`` read
them back without any pickle, through the one trusted loader (:func:`vaelab.trust.read_model_folder`).

A crafted config.json carries the payloads of tests/test_trust_files.py (an interpolation that makes a ``_target_``,
a foreign ``_target_``, ``_args_`` with an interpolation) and is refused with nothing run; a damaged file is one
message naming it; the Hub path is tested offline on a cache folder laid out as huggingface_hub lays it out
(pushing to the Hub needs the network and a token, and is not tested here). Each test fails without its fix.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import compose_train
from omegaconf import OmegaConf

import vaelab
from vaelab.errors import ConfigError
from vaelab.models import Autoencoder
from vaelab.models.nets import MLPEncoder
from vaelab.models.pretrained import weights_for_file
from vaelab.tasks.train import train

#: a tiny model, tested (the card reports the run's test metrics)
TINY = ["logger=none", "callbacks=minimal", "model.latent_dim=4", "model.net.encoder.hidden_dims=[16]",
        "model.net.decoder.hidden_dims=[16]"]
#: what the run's .hydra/overrides.yaml says the command line was
OVERRIDES = ["model=vae", "model.latent_dim=4", "data.batch_size=32"]
RESOLVER = "vaelab_pretrained_marker"
REPO, COMMIT = "someone/tiny-vae", "0123456789abcdef0123456789abcdef01234567"


def write_marker(path: str, **kwargs) -> None:
    """What a crafted config.json wants to call (it leaves a file behind)."""
    Path(path).write_text("this ran")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    """The last checkpoint of a tiny trained and tested run, with the .hydra/overrides.yaml Hydra writes."""
    tmp = tmp_path_factory.mktemp("run")
    train(compose_train(tmp, TINY))
    (tmp / "run" / ".hydra").mkdir()
    (tmp / "run" / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(OVERRIDES))
    return tmp / "run" / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def shared(ckpt, tmp_path_factory) -> Path:
    """The checkpoint's model, saved as a model folder."""
    return vaelab.load(ckpt).save_pretrained(tmp_path_factory.mktemp("shared") / "tiny-vae", license="mit")


@pytest.fixture
def copy(shared, tmp_path) -> Path:
    """A copy of the model folder to damage."""
    return Path(shutil.copytree(shared, tmp_path / "copy"))


@pytest.fixture
def marker(tmp_path) -> Path:
    path = tmp_path / "marker.txt"
    OmegaConf.register_new_resolver(RESOLVER, lambda: write_marker(str(path)) or 16, replace=True)
    yield path
    OmegaConf.clear_resolver(RESOLVER)


def outputs(model: Autoencoder) -> list[torch.Tensor]:
    """What a user asks of a model: codes, decoded images and samples, each with a seeded generator."""
    x = torch.rand(5, *model.image_shape, generator=torch.Generator().manual_seed(1))
    z = torch.randn(5, model.latent_dim, generator=torch.Generator().manual_seed(2))
    mu, logvar = model.encode(x)
    samples = model.sample(5, generator=torch.Generator().manual_seed(3))
    return [mu, logvar, model.decode(z), model.reconstruct(x), samples]


def edit_config(folder: Path, edit) -> None:
    config = json.loads((folder / "config.json").read_text())
    edit(config)
    (folder / "config.json").write_text(json.dumps(config))


# -------------------------------------------------------------------------------------------------- round trip
def test_a_saved_model_loads_back_identical(ckpt, shared):
    model, again = vaelab.load(ckpt), vaelab.load(shared)
    assert sorted(p.name for p in shared.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert type(again) is Autoencoder and not again.training
    before, after = model.state_dict(), again.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(outputs(model), outputs(again), strict=True))
    assert again.provenance == json.loads(json.dumps(model.provenance))  # the card's facts travel with the folder
    assert again.config == {**model.config, "compile": False}


def test_the_folder_is_read_without_torch_load(shared, monkeypatch):
    def no_pickle(*args, **kwargs):
        raise AssertionError("torch.load was called on a model folder")

    monkeypatch.setattr(torch, "load", no_pickle)
    vaelab.load(shared)


def test_tensors_that_share_memory_are_written_each_with_its_values(tmp_path):
    """safetensors refuses tied weights and views of one buffer ("Some tensors share memory")."""
    from safetensors.torch import load_file, save_file

    base = torch.arange(12.0).reshape(3, 4)
    state = {"weight": base, "tied": base, "transposed": base.t(), "row": base[1], "own": torch.ones(2)}
    save_file(weights_for_file(state), tmp_path / "w.safetensors")
    back = load_file(tmp_path / "w.safetensors")
    assert back.keys() == state.keys() and all(torch.equal(back[k], state[k]) for k in state)


def test_a_config_that_would_not_load_back_is_not_written(ckpt, tmp_path):
    model = vaelab.load(ckpt)
    model.provenance["command"] = "python src/train.py paths.root_dir=${oc.env:HOME}"
    with pytest.raises(ConfigError, match=r"Not written: .*provenance.command = .*an interpolation"):
        model.save_pretrained(tmp_path / "out")
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------- a crafted config.json
def payloads(marker: Path) -> dict[str, tuple[str, object]]:
    """Where a crafted config.json puts what (the model's settings, or the provenance nothing is built from)."""
    create = "${oc.create:{_target_: test_pretrained.write_marker, path: '" + str(marker) + "'}}"
    return {
        "oc.create in the net": ("hidden_dims", create),
        "a custom resolver in the net": ("hidden_dims", "${" + RESOLVER + ":}"),
        "a foreign _target_": ("net", {"_target_": "test_pretrained.write_marker", "path": str(marker)}),
        "_args_ with an interpolation": ("code", {"_target_": "vaelab.models.codes.GaussianCode", "_args_": [create]}),
        "an interpolation in the provenance": ("provenance", "${oc.env:HOME}"),
        "a foreign _target_ in the provenance": ("provenance", {"_target_": "os.system", "command": "touch x"}),
    }


def _plant(config: dict, where: str, value: object) -> None:
    if where == "hidden_dims":
        config["model"]["net"]["encoder"]["hidden_dims"] = value
    elif where == "net":
        config["model"]["net"]["encoder"] = value
    elif where == "code":
        config["model"]["code"] = value
    else:
        config["provenance"]["data"] = value


@pytest.mark.parametrize("payload", list(payloads(Path("m"))))
def test_a_crafted_config_is_refused_and_nothing_runs(copy, marker, payload):
    where, value = payloads(marker)[payload]
    edit_config(copy, lambda config: _plant(config, where, value))
    with pytest.raises(ConfigError, match="holds|names code that vaelab does not build") as caught:
        vaelab.load(copy)
    assert not marker.exists(), "the file's payload ran"
    assert str(copy / "config.json") in str(caught.value)


def test_a_target_of_the_users_own_is_built_only_when_trusted(copy):
    edit_config(copy, lambda c: c["model"]["net"]["encoder"].update(_target_="test_pretrained.Encoder"))
    with pytest.raises(ConfigError, match=r"trusted_targets=\[test_pretrained.Encoder\]"):
        vaelab.load(copy)
    assert isinstance(vaelab.load(copy, trusted_targets=["test_pretrained.Encoder"]).encoder, Encoder)


class Encoder(MLPEncoder):
    """A user's own encoder (one of the shared one's shape, so that its weights fit)."""


# --------------------------------------------------------------------------------------------- a damaged folder
GARBLED = {
    "no config.json": (lambda f: (f / "config.json").unlink(), r"config.json is not usable: there is no such file"),
    "config.json not JSON": (lambda f: (f / "config.json").write_text("{model: oops"),
                             r"config.json is not usable: it is not a JSON file"),
    "config.json a list": (lambda f: (f / "config.json").write_text("[1, 2]"), r"holds a JSON list"),
    "another format": (lambda f: edit_config(f, lambda c: c.update(format="transformers")),
                       r"its \"format\" is 'transformers': it must be 'vaelab-pretrained'"),
    "a newer format version": (lambda f: edit_config(f, lambda c: c.update(format_version=2)),
                               r"its \"format_version\" is 2: it must be 1"),
    "no model settings": (lambda f: edit_config(f, lambda c: c.pop("model")), r"its \"model\" must be an object"),
    "a setting the model does not take": (lambda f: edit_config(f, lambda c: c["model"].update(depth=3)),
                                          r"its \"model\" holds depth, which the model does not take"),
    "a bad setting": (lambda f: edit_config(f, lambda c: c["model"].update(likelihood="poisson")),
                      r"config.json is not usable: the model cannot be built"),
    "no weights": (lambda f: (f / "model.safetensors").unlink(), r"model.safetensors is not usable: there is no such"),
    "truncated weights": (lambda f: (f / "model.safetensors").write_bytes((f / "model.safetensors").read_bytes()[:99]),
                          r"model.safetensors is not usable: it cannot be read as a safetensors file"),
    "a pickle for weights": (lambda f: torch.save({"x": torch.zeros(1)}, f / "model.safetensors"),
                             r"model.safetensors is not usable: it cannot be read as a safetensors file"),
    "weights of another model": (lambda f: edit_config(f, lambda c: c["model"].update(latent_dim=5)),
                                 r"model.safetensors does not fit the model that config.json describes"),
}


@pytest.mark.parametrize("case", list(GARBLED))
def test_a_damaged_folder_is_one_message_naming_the_file(copy, case):
    damage, message = GARBLED[case]
    damage(copy)
    with pytest.raises(ConfigError, match=message) as caught:
        vaelab.load(copy)
    assert str(copy) in str(caught.value)


def test_non_finite_weights_are_refused(copy):
    from safetensors.torch import load_file, save_file

    weights = load_file(copy / "model.safetensors")
    next(iter(weights.values()))[0] = float("nan")
    save_file(weights, copy / "model.safetensors")
    with pytest.raises(ConfigError, match=r"model.safetensors is not usable: its weights are not finite"):
        vaelab.load(copy)


# ------------------------------------------------------------------------------------------------------ the Hub
def hub_cache(cache: Path, folder: Path, ref: str = "main") -> Path:
    """``cache`` laid out as huggingface_hub's cache holds ``REPO`` at ``ref``: the ref names a commit, whose
    snapshot folder holds the files."""
    storage = cache / f"models--{REPO.replace('/', '--')}"
    (storage / "refs").mkdir(parents=True)
    (storage / "refs" / ref).write_text(COMMIT)
    shutil.copytree(folder, storage / "snapshots" / COMMIT)
    return cache


@pytest.fixture
def offline(monkeypatch):
    """HF_HUB_OFFLINE=1 (huggingface_hub reads it when imported, so its constant is set too)."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return constants


@pytest.mark.parametrize("how", ["cache_dir", "HF_HUB_CACHE"])
def test_a_hub_model_loads_from_the_cache_offline(shared, tmp_path, offline, monkeypatch, how):
    cache = hub_cache(tmp_path / "hub", shared)
    if how == "HF_HUB_CACHE":
        monkeypatch.setenv("HF_HUB_CACHE", str(cache))
        monkeypatch.setattr(offline, "HF_HUB_CACHE", str(cache))
    model = vaelab.load(f"hf://{REPO}", cache_dir=cache if how == "cache_dir" else None)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(outputs(model), outputs(vaelab.load(shared)), strict=True))


def test_a_hub_revision_is_looked_up_by_its_ref(shared, tmp_path, offline):
    cache = hub_cache(tmp_path / "hub", shared, ref="v1")
    assert vaelab.load(f"hf://{REPO}@v1", cache_dir=cache).latent_dim == 4
    with pytest.raises(ConfigError, match=rf"hf://{REPO} is not in the Hugging Face cache"):
        vaelab.load(f"hf://{REPO}", cache_dir=cache)  # (main was never cached)


def test_a_hub_model_missing_offline_is_one_message(tmp_path, offline):
    with pytest.raises(ConfigError, match=rf"hf://{REPO} is not in the Hugging Face cache {tmp_path}.*, and "
                                          r"HF_HUB_OFFLINE is set .*Load it once online"):
        vaelab.load(f"hf://{REPO}", cache_dir=tmp_path)


def test_a_crafted_hub_model_is_refused_as_a_folder_is(copy, tmp_path, offline, marker):
    edit_config(copy, lambda config: _plant(config, *payloads(marker)["oc.create in the net"]))
    with pytest.raises(ConfigError, match="an interpolation"):
        vaelab.load(f"hf://{REPO}", cache_dir=hub_cache(tmp_path / "hub", copy))
    assert not marker.exists()


@pytest.mark.parametrize("address", ["hf://tiny-vae", "hf://a/b/c", "hf://someone/tiny vae", "hf://someone/x@"])
def test_a_bad_hub_address_says_the_form(address):
    with pytest.raises(ConfigError, match=r"is not a Hugging Face Hub model address: it must be hf://<owner>/<name>"):
        vaelab.load(address)


# ------------------------------------------------------------------------------------------------ the model card
def test_the_card_says_the_family_data_metrics_command_and_licence(ckpt, shared):
    card = (shared / "README.md").read_text()
    meta = yaml.safe_load(card.split("---\n")[1])
    assert meta["license"] == "mit" and meta["library_name"] == "vaelab" and "Elbo" in meta["tags"]
    assert "- objective: `Elbo`, β = 1.0" in card and "- code: `GaussianCode`" in card
    assert "`MLPEncoder` (hidden_dims=[16])" in card and "latent size: 4" in card
    assert "`vaelab.data.digits.DigitsDataModule` (batch_size=32" in card
    assert str(ckpt.parents[2]) not in card, "the card shows a local path"
    test = json.loads((ckpt.parents[1] / "metrics.json").read_text())["test"]
    assert f"| test/elbo | {test['test/elbo']} |" in card
    assert "Measured on `checkpoints/epoch_000.ckpt`" in card and "These weights are `checkpoints/last.ckpt`" in card
    assert "python src/train.py model=vae model.latent_dim=4 data.batch_size=32" in card
    assert "## Licence\n\n`mit`" in card


def test_the_card_says_what_is_unknown_and_takes_what_is_given(tmp_path):
    model = Autoencoder(image_shape=[1, 8, 8], latent_dim=2)
    card = (model.save_pretrained(tmp_path / "bare") / "README.md").read_text()
    assert card.count("Unknown:") == 4  # data, test metrics, command, licence
    assert "license: unknown" in card and "objective: unknown" in card
    card = (model.save_pretrained(tmp_path / "given", license="cc-by-4.0", data="MNIST, binarised",
                                  command="python src/train.py model=vae", test_metrics={"test/elbo": -90.1},
                                  tags=["mnist"], title="A VAE") / "README.md").read_text()
    assert "Unknown:" not in card.replace("objective: unknown", "")
    assert "# A VAE" in card and "MNIST, binarised" in card and "| test/elbo | -90.1 |" in card
    assert "- mnist" in card and "license: cc-by-4.0" in card
    assert vaelab.load(tmp_path / "given").provenance["command"] == "python src/train.py model=vae"


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
