"""The two-stage VAE sampler (Dai & Wipf 2019): a second VAE fitted on codes reproduces their distribution."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import compose_eval, compose_train

from vaelab.errors import ConfigError
from vaelab.models.two_stage import TwoStageSampler
from vaelab.tasks.evaluate import run_evaluation
from vaelab.tasks.train import train


def correlated_codes(n: int = 2000) -> torch.Tensor:
    """Codes far from N(0, I): mean (3, −2, 1), correlated, one dimension with a small spread."""
    g = torch.Generator().manual_seed(0)
    mix = torch.tensor([[1.0, 0.0, 0.0], [0.8, 0.6, 0.0], [0.0, 0.0, 0.2]])
    return torch.randn(n, 3, generator=g) @ mix.T + torch.tensor([3.0, -2.0, 1.0])


def test_the_two_stage_sampler_reproduces_the_codes_mean_and_covariance():
    """Catches a sampler that returns u itself (moments 0 and I), or decodes without the fitted weights: its draws
    must have the codes' mean, and their covariance plus the second VAE's learned noise γI (z = g(u) + noise of
    variance γ in its model; the sampler returns the mean g(u), as Dai & Wipf do) must be the codes' covariance."""
    codes = correlated_codes()
    sampler = TwoStageSampler(hidden_dims=[64, 64], steps=1500, batch_size=256, lr=3e-3)
    sampler.fit(codes)
    drawn = sampler.sample(None, 4000, generator=torch.Generator().manual_seed(1))
    assert drawn.shape == (4000, 3) and drawn.dtype == torch.float32
    torch.testing.assert_close(drawn.mean(0), codes.mean(0), atol=0.15, rtol=0)
    gamma = sampler.log_gamma.exp().item()
    torch.testing.assert_close(torch.cov(drawn.T) + gamma * torch.eye(3), torch.cov(codes.T), atol=0.1, rtol=0)


def test_a_fit_is_seeded_and_leaves_the_callers_random_state_alone():
    codes = correlated_codes(500)
    state = torch.get_rng_state()
    a, b = TwoStageSampler(hidden_dims=[16], steps=50), TwoStageSampler(hidden_dims=[16], steps=50)
    a.fit(codes)
    b.fit(codes)
    assert torch.equal(torch.get_rng_state(), state)
    g = torch.Generator()
    assert torch.equal(a.sample(None, 5, g.manual_seed(2)), b.sample(None, 5, g.manual_seed(2)))


def test_the_second_vaes_loss_is_its_negative_elbo():
    """With log γ = 0 and a decoder that returns 0, the reconstruction term is ‖z‖²/2 + (d/2) log 2π."""
    sampler = TwoStageSampler(hidden_dims=[8], steps=1)
    sampler.fit(correlated_codes(10))
    for p in sampler.decoder.parameters():
        p.data.zero_()
    sampler.log_gamma.data.zero_()
    z = torch.tensor([[1.0, 2.0, 2.0]])
    mu, logvar = sampler.encoder(z).chunk(2, dim=1)
    kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum()
    expected = 4.5 + 1.5 * torch.log(torch.tensor(2 * torch.pi)) + kl
    torch.testing.assert_close(sampler.loss(z)[0], expected)


def test_unfitted_and_bad_settings_are_refused_by_name():
    with pytest.raises(ValueError, match="has not been fitted"):
        TwoStageSampler().sample(None, 2)
    with pytest.raises(ConfigError, match=r"sampler.steps = 0 is invalid"):
        TwoStageSampler(steps=0)
    with pytest.raises(ConfigError, match=r"sampler.hidden_dims"):
        TwoStageSampler(hidden_dims=[0])
    with pytest.raises(ConfigError, match="at least 2"):
        TwoStageSampler().fit(torch.zeros(1, 3))


def test_an_autoencoder_generates_through_the_two_stage_sampler_in_training_and_in_eval(tmp_path):
    cfg = compose_train(tmp_path, ["model=ae", "model.latent_dim=4", "sampler=two_stage", "sampler.steps=50",
                                   "callbacks=[minimal,samples]", "logger=tensorboard"])
    train(cfg)
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "run"), size_guidance={"images": 0})
    acc.Reload()
    assert "val/samples" in acc.Tags()["images"]
    run_evaluation(compose_eval(tmp_path, [f"ckpt_path={record['test_ckpt']}", "iw_k=0", "sampler=two_stage",
                                           "sampler.steps=50", "sample_quality.n=200", "representation=null"]))
    evaluated = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert evaluated["sampler"] == "TwoStageSampler" and "test/fcd" in evaluated["test"]
