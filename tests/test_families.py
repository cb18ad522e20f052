"""The autoencoder families on the pure model: denoising (corruptions), sparse, contractive, and the post-hoc
Gaussian-mixture sampler. Each test names the plausible wrong version it would catch."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import compose_eval, compose_train

from vaelab.models import Autoencoder
from vaelab.models.corruption import GaussianNoise, Masking, SaltAndPepper
from vaelab.models.objectives.contractive import Contractive, encoder_jacobian, frobenius_sq
from vaelab.models.objectives.sparse import Sparse, bernoulli_kl
from vaelab.models.samplers import GaussianMixtureSampler, PriorSampler
from vaelab.tasks.evaluate import run_evaluation
from vaelab.tasks.train import train

POINT = {"_target_": "vaelab.models.codes.PointCode"}
SIGMOID = {"_target_": "vaelab.models.codes.PointCode", "activation": "sigmoid"}
SMALL_NET = {"encoder": {"_target_": "vaelab.models.nets.MLPEncoder", "hidden_dims": [16]},
             "decoder": {"_target_": "vaelab.models.nets.MLPDecoder", "hidden_dims": [16]}}


def images(n: int = 4000, side: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, side, side, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------------------- corruptions
def test_masking_zeroes_each_pixel_with_its_probability_and_leaves_the_rest():
    x = images() * 0.9 + 0.05  # no pixel is 0 before
    out = Masking(0.3)(x, generator=torch.Generator().manual_seed(1))
    masked = out == 0
    assert masked.float().mean().item() == pytest.approx(0.3, abs=0.005)  # 256,000 pixels: sd 0.0009
    assert torch.equal(out[~masked], x[~masked])


def test_salt_and_pepper_sets_its_fraction_to_0_or_1_half_each_and_leaves_the_rest():
    x = images() * 0.9 + 0.05
    out = SaltAndPepper(0.4)(x, generator=torch.Generator().manual_seed(2))
    salt, pepper = out == 1, out == 0
    assert salt.float().mean().item() == pytest.approx(0.2, abs=0.005)
    assert pepper.float().mean().item() == pytest.approx(0.2, abs=0.005)
    kept = ~(salt | pepper)
    assert torch.equal(out[kept], x[kept])


def test_gaussian_noise_has_its_standard_deviation_and_is_clipped_to_the_unit_interval():
    x = torch.full((2000, 1, 8, 8), 0.5)
    noisy = GaussianNoise(0.1)(x, generator=torch.Generator().manual_seed(3))
    assert (noisy - x).std().item() == pytest.approx(0.1, rel=0.02)
    wide = GaussianNoise(2.0)(x, generator=torch.Generator().manual_seed(3))
    assert wide.min() == 0 and wide.max() == 1
    assert GaussianNoise(2.0, clip=False)(x).max() > 1


def test_a_seeded_corruption_is_the_same_every_time():
    x = images(16)
    for corruption in (Masking(0.5), SaltAndPepper(0.5), GaussianNoise(0.3)):
        a = corruption(x, generator=torch.Generator().manual_seed(4))
        b = corruption(x, generator=torch.Generator().manual_seed(4))
        assert torch.equal(a, b) and not torch.equal(a, x)


@pytest.mark.parametrize("corruption", [Masking, SaltAndPepper])
def test_a_fraction_outside_the_unit_interval_is_refused(corruption):
    with pytest.raises(ValueError, match=r"model.corruption.fraction = 1.5 is invalid"):
        corruption(1.5)


def dae(fraction: float = 1.0) -> Autoencoder:
    torch.manual_seed(0)
    return Autoencoder([1, 8, 8], latent_dim=3, code=POINT, net=SMALL_NET,
                       corruption={"_target_": "vaelab.models.corruption.Masking", "fraction": fraction})


def test_the_denoising_autoencoder_encodes_the_corrupted_image_and_is_scored_on_the_clean_one():
    """With every pixel masked the encoder sees zeros; the reconstruction error must be against the clean x (the
    wrong version scores it against what the encoder saw)."""
    model = dae(1.0).train()
    x = images(5)
    out = model(x)
    assert torch.equal(out.x_in, torch.zeros_like(x))
    expected = model.likelihood.nll(model.decode(model.encode(torch.zeros_like(x))[0]), x)
    torch.testing.assert_close(out.recon, expected)
    assert not torch.allclose(out.recon, model.likelihood.nll(out.x_out, out.x_in))


def test_validation_and_testing_see_clean_images():
    model = dae(1.0).eval()
    x = images(5)
    out = model(x)
    assert out.x_in is x
    torch.testing.assert_close(out.x_mean, model.reconstruct(x))


def test_the_reconstruction_view_of_a_denoising_autoencoder_shows_the_corrupted_and_denoised_rows(monkeypatch):
    from test_callbacks import RecordingWriter, spy_on_labels

    from vaelab.dashboard import images as views

    model = dae(0.5).eval()
    x = images(4)
    labels = spy_on_labels(monkeypatch, views)
    callback = views.ReconstructionGrid(nrow=4, min_side=8, num_images=4)
    with torch.no_grad():
        callback.draw(RecordingWriter(), "val", 0, model, x, torch.zeros(4), model(x))
    callback.wait()
    callback.teardown(None, model, "fit")
    assert labels[0]["rows"] == ["input", "recon", "corrupted", "denoised"]


# ---------------------------------------------------------------------------------------------------- sparse
def test_bernoulli_kl_has_its_known_values_and_its_direction():
    rho_hat = torch.tensor([0.05, 0.5, 0.01])
    kl = bernoulli_kl(0.05, rho_hat)
    assert kl[0].item() == pytest.approx(0.0, abs=1e-7)
    assert kl[1].item() == pytest.approx(0.05 * math.log(0.1) + 0.95 * math.log(1.9), rel=1e-5)  # 0.4946
    # KL(ρ ‖ ρ̂) ≠ KL(ρ̂ ‖ ρ): the swapped version gives 0.5 log 10 + 0.5 log(0.5 / 0.95) = 0.8304 here
    assert kl[1].item() != pytest.approx(0.5 * math.log(10) + 0.5 * math.log(0.5 / 0.95), rel=1e-2)
    assert kl[2].item() == pytest.approx(0.05 * math.log(5) + 0.95 * math.log(0.95 / 0.99), rel=1e-5)


def test_the_sparsity_penalty_is_the_kl_of_each_units_mean_activation_over_the_batch():
    """Two images, one with every unit at 0.9 and one at 0.1: each unit's mean activation is 0.5. The penalty is
    Σⱼ KL(ρ ‖ 0.5); the wrong version, a mean of per-image KLs, gives more (KL is convex)."""
    objective = Sparse(l1=0.5, rho=0.05, kl_weight=2.0)
    code = torch.tensor([[0.9, 0.9, 0.9], [0.1, 0.1, 0.1]])
    out = type("Pass", (), {"mu": code, "recon": torch.tensor([10.0, 20.0])})()
    value = objective(None, None, out, 0)
    sparsity = 3 * bernoulli_kl(0.05, torch.tensor(0.5))
    torch.testing.assert_close(value.terms["sparsity_kl"], sparsity)
    per_image = (bernoulli_kl(0.05, code).sum(1)).mean()
    assert per_image > sparsity + 0.5
    torch.testing.assert_close(value.terms["l1"], torch.tensor(1.5))  # Σⱼ|zⱼ| = 2.7 and 0.3: mean 1.5
    torch.testing.assert_close(value.terms["mean_activation"], torch.tensor(0.5))
    torch.testing.assert_close(value.loss, torch.tensor(15.0) + 0.5 * 1.5 + 2.0 * sparsity)


def test_the_sparse_objective_refuses_a_target_outside_the_unit_interval():
    with pytest.raises(ValueError, match="model.objective.rho"):
        Sparse(rho=1.0)


# ---------------------------------------------------------------------------------------------------- contractive
def one_layer_sigmoid(latent_dim: int = 3) -> Autoencoder:
    torch.manual_seed(1)
    net = {"encoder": {"_target_": "vaelab.models.nets.MLPEncoder", "hidden_dims": []},
           "decoder": {"_target_": "vaelab.models.nets.MLPDecoder", "hidden_dims": [8]}}
    return Autoencoder([1, 4, 4], latent_dim=latent_dim, code=SIGMOID, net=net).double()


def test_the_encoder_jacobian_matches_central_finite_differences():
    torch.manual_seed(2)
    model = Autoencoder([1, 4, 4], latent_dim=3, code=SIGMOID, net=SMALL_NET).double()
    x = torch.rand(2, 1, 4, 4, dtype=torch.float64)
    jac = encoder_jacobian(model, x)
    assert jac.shape == (2, 3, 1, 4, 4)
    h = 1e-6
    for i in range(16):
        step = torch.zeros(16, dtype=torch.float64)
        step[i] = h
        step = step.reshape(1, 1, 4, 4)
        numeric = (model.embed(x + step) - model.embed(x - step)) / (2 * h)  # (2, 3)
        torch.testing.assert_close(jac.flatten(2)[:, :, i], numeric, rtol=1e-6, atol=1e-8)


def test_the_contraction_is_rifais_closed_form_for_a_one_layer_sigmoid_encoder():
    """‖J‖²_F = Σⱼ (hⱼ(1 − hⱼ))² Σᵢ Wⱼᵢ² (Rifai et al. 2011, eq. 5); the wrong versions (the norm not squared, the
    batch summed instead of averaged) differ from it."""
    model = one_layer_sigmoid()
    x = torch.rand(5, 1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    layer = model.encoder[-1]
    hidden = model.embed(x)
    closed = ((hidden * (1 - hidden)).pow(2) * layer.weight.pow(2).sum(1)).sum(1)
    torch.testing.assert_close(frobenius_sq(encoder_jacobian(model, x)), closed)
    out = model(x)
    value = Contractive(weight=0.5)(model, x, out, 0)
    torch.testing.assert_close(value.terms["contraction"], closed.mean())
    torch.testing.assert_close(value.loss, out.recon.mean() + 0.5 * closed.mean())


def test_the_contraction_penalty_trains_the_encoder():
    model = one_layer_sigmoid()
    x = torch.rand(5, 1, 4, 4, dtype=torch.float64)
    out = model(x)
    Contractive(weight=1.0)(model, x, out, 0).terms["contraction"].backward()
    assert model.encoder[-1].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.decoder.parameters())  # the penalty is the encoder's alone


# ---------------------------------------------------------------------------------------------------- the GMM sampler
def two_clusters(n: int = 4000) -> torch.Tensor:
    g = torch.Generator().manual_seed(5)
    a = torch.randn(n // 4, 2, generator=g) * 0.1 + torch.tensor([3.0, 0.0])
    b = torch.randn(3 * n // 4, 2, generator=g) * torch.tensor([0.2, 0.5]) + torch.tensor([-2.0, 1.0])
    return torch.cat([a, b])


def test_the_mixture_sampler_recovers_a_known_mixture_and_draws_from_it():
    sampler = GaussianMixtureSampler(n_components=2)
    sampler.fit(two_clusters())
    order = sampler.means[:, 0].argsort()
    torch.testing.assert_close(sampler.means[order].float(), torch.tensor([[-2.0, 1.0], [3.0, 0.0]]), atol=0.05,
                               rtol=0)
    torch.testing.assert_close(sampler.weights[order].float(), torch.tensor([0.75, 0.25]), atol=0.01, rtol=0)
    z = sampler.sample(None, 20_000, torch.Generator().manual_seed(6))
    right = z[:, 0] > 0.5
    assert right.float().mean().item() == pytest.approx(0.25, abs=0.01)
    assert z[~right, 1].std().item() == pytest.approx(0.5, rel=0.05)  # the full covariance, not the identity
    torch.testing.assert_close(sampler.sample(None, 20_000, torch.Generator().manual_seed(6)), z)  # seeded


def test_the_mixture_sampler_must_be_fitted_and_the_prior_needs_a_prior():
    with pytest.raises(ValueError, match="not been fitted"):
        GaussianMixtureSampler().sample(None, 3)
    with pytest.raises(ValueError, match="at least as many codes"):
        GaussianMixtureSampler(n_components=10).fit(torch.randn(5, 2))
    ae = Autoencoder([1, 8, 8], latent_dim=2, code=POINT, net=SMALL_NET)
    assert not PriorSampler().available_for(ae)
    with pytest.raises(ValueError, match="sampler=gmm"):
        ae.sample(3)
    fitted = GaussianMixtureSampler(n_components=2)
    fitted.fit(two_clusters())
    assert ae.sample(3, sampler=fitted).shape == (3, 1, 8, 8)


# ---------------------------------------------------------------------------------------------- through the config
@pytest.mark.parametrize(("preset", "terms"), [
    ("dae", ()),
    ("sparse_ae", ("l1", "sparsity_kl", "mean_activation")),
    ("contractive_ae", ("contraction",)),
])
def test_each_family_trains_logs_its_terms_and_evaluates(tmp_path, preset, terms):
    cfg = compose_train(tmp_path, [f"model={preset}", "model.latent_dim=4", "callbacks=minimal", "logger=none"])
    train(cfg)
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["status"] == "completed"
    for split in ("train", "val"):
        assert {f"{split}/{name}" for name in ("loss", "recon", *terms)} <= set(record[split])
        assert f"{split}/kl" not in record[split]  # no prior, no KL
    assert {f"test/{name}" for name in terms} <= set(record["test"])
    run_evaluation(compose_eval(tmp_path, [f"ckpt_path={record['test_ckpt']}", "iw_k=0"]))
    evaluated = json.loads((tmp_path / "eval" / "metrics.json").read_text())["test"]
    # the evaluation's reconstruction error is the tested checkpoint's (clean images in both: no corruption)
    assert evaluated["test/recon"] == pytest.approx(record["test"]["test/recon"], rel=1e-4)


def test_an_autoencoder_generates_with_the_mixture_sampler(tmp_path):
    cfg = compose_train(tmp_path, ["model=ae", "model.latent_dim=4", "sampler=gmm", "sampler.n_components=3",
                                   "trainer.max_epochs=1"])
    train(cfg)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "run"), size_guidance={"images": 0})
    acc.Reload()
    assert "val/samples" in acc.Tags()["images"]
