"""The published experiments (conf/experiment/{celeba_beta_vae, cifar10_vae, omniglot_iwae, dsprites_beta_tcvae,
shapes3d_factor_vae}.yaml) compose as src/train.py would, pass the config rules, and build their model on the image
shape their data implies, without the data's files (none are read to build). A forward pass and one loss on random
images of that shape check the net fits the data. The settings asserted are the papers' (see each file's comment):
a YAML whose override order loses one (a net group overriding the sizes, a preset's beta winning) fails here."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import CONF, compose_train

from vaelab.models.objectives import IWAE, BetaTCVAE, Elbo, FactorVAE
from vaelab.rules import validate_config
from vaelab.tasks.train import build_model

PUBLISHED = {
    # name: (data, its folder under data_dir, image shape, latent_dim, objective class, model.beta, encoder class,
    #        encoder settings)
    "celeba_beta_vae": ("celeba", "celeba", (3, 64, 64), 32, Elbo, 4.0, "ConvEncoder",
                        {"channels": [32, 32, 64, 64], "hidden_dim": 256}),
    "cifar10_vae": ("cifar10", "cifar-10-batches-py", (3, 32, 32), 128, Elbo, 1.0, "ResNetEncoder",
                    {"base_channels": 64, "blocks_per_stage": 2, "norm": "group"}),
    "omniglot_iwae": ("omniglot", "omniglot", (1, 28, 28), 50, IWAE, 1.0, "MLPEncoder",
                      {"hidden_dims": [200, 200], "activation": "tanh"}),
    "dsprites_beta_tcvae": ("dsprites", "dsprites", (1, 64, 64), 10, BetaTCVAE, 6.0, "MLPEncoder",
                            {"hidden_dims": [1200, 1200], "activation": "relu"}),
    "shapes3d_factor_vae": ("shapes3d", "shapes3d", (3, 64, 64), 10, FactorVAE, 10.0, "ConvEncoder",
                            {"channels": [32, 32, 64, 64], "hidden_dim": 256}),
}


def test_every_published_experiment_is_there():
    found = {p.stem for p in (CONF / "experiment").glob("*.yaml")}
    assert set(PUBLISHED) <= found


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_each_experiment_says_what_it_reproduces_and_which_files_it_needs(name):
    text = (CONF / "experiment" / f"{name}.yaml").read_text()
    assert text.startswith("# @package _global_\n# ")
    data, folder = PUBLISHED[name][:2]
    comment = " ".join(line.lstrip("# ") for line in text.splitlines() if line.startswith("#"))
    assert f"needs the real files: data={data} reads them from <data_dir>/{folder}" in comment
    assert "this machine cannot download them" in comment
    assert f"override /data: {data}" in text


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_each_experiment_composes_and_builds_its_model_without_the_data(tmp_path: Path, name):
    _, _, shape, latent_dim, objective, beta, encoder, settings = PUBLISHED[name]
    cfg = compose_train(tmp_path, [f"experiment={name}"], fast=False)
    validate_config(cfg)
    assert cfg.model.net.encoder._target_.endswith(f".{encoder}")
    assert {key: cfg.model.net.encoder[key] for key in settings} == settings

    datamodule, module = build_model(cfg)  # builds, reads nothing
    assert not (tmp_path / "data").exists()
    assert tuple(datamodule.image_shape) == shape
    model = module.model
    assert model.image_shape == shape and model.latent_dim == latent_dim
    assert isinstance(module.objective, objective)
    assert cfg.model.beta == beta

    torch.manual_seed(0)
    model.eval()
    with torch.no_grad():
        out = model(torch.rand(2, *shape).round())
    assert out.x_out.shape == (2, *shape) and out.z.shape == (2, latent_dim)
    assert torch.isfinite(out.recon).all() and torch.isfinite(out.kl).all()


def test_the_objective_and_schedule_settings_are_the_papers(tmp_path):
    """The objective's own settings, which a preset's defaults could silently win over."""
    iwae = compose_train(tmp_path, ["experiment=omniglot_iwae"], fast=False)
    assert iwae.model.objective.k == 50 and iwae.data.batch_size == 20 and iwae.trainer.max_epochs == 3280
    assert iwae.model.optimizer.eps == 1.0e-4 and iwae.data.binarize == "dynamic"
    assert list(iwae.model.scheduler.milestones) == [1, 4, 13, 40, 121, 364, 1093]
    assert iwae.model.scheduler.gamma == pytest.approx(10 ** (-1 / 7))
    tcvae = compose_train(tmp_path, ["experiment=dsprites_beta_tcvae"], fast=False)
    assert (tcvae.model.objective.alpha, tcvae.model.objective.gamma) == (1.0, 1.0)
    assert list(tcvae.model.net.decoder.hidden_dims) == [1200, 1200, 1200]
    assert tcvae.model.net.decoder.activation == "tanh"
    factor = compose_train(tmp_path, ["experiment=shapes3d_factor_vae"], fast=False)
    assert list(factor.model.objective.hidden_dims) == [1000] * 5
    assert list(factor.model.objective.optimizer.betas) == [0.5, 0.9]
