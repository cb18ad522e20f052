"""The adversarial autoencoder (Makhzani et al. 2016) and the regularised autoencoder (Ghosh et al. 2020): their
estimators on known values and limit cases, the adversary's game on a toy problem, where each gradient goes, the
refused settings, and both families trained through the real config and sampled. Each test names the plausible wrong
version it catches."""

from __future__ import annotations

import json
import math
import types

import pytest
import torch
from conftest import compose_eval, compose_train, constant_discriminator

from vaelab.errors import ConfigError
from vaelab.models import Autoencoder
from vaelab.models.codes import PointCode
from vaelab.models.objectives.aae import (
    AdversarialAutoencoder,
    discriminator_accuracy,
    discriminator_loss,
    generator_loss,
)
from vaelab.models.objectives.rae import (
    RegularisedAutoencoder,
    code_penalty,
    decoder_jacobian,
    decoder_weight_penalty,
    gradient_penalty,
)
from vaelab.models.schedules import ConstantBeta
from vaelab.tasks.evaluate import run_evaluation
from vaelab.tasks.train import train

NORMAL_POINT = {"_target_": "vaelab.models.codes.PointCode", "prior": "normal"}
POINT = {"_target_": "vaelab.models.codes.PointCode"}
SMALL_NET = {"encoder": {"_target_": "vaelab.models.nets.MLPEncoder", "hidden_dims": [16]},
             "decoder": {"_target_": "vaelab.models.nets.MLPDecoder", "hidden_dims": [16]}}


@pytest.fixture
def one_thread():
    """Tiny tensors: a second thread only adds overhead on a shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def pass_of(z: torch.Tensor, recon: float = 2.0) -> types.SimpleNamespace:
    """What an objective reads of a model's pass: the codes and a per-image reconstruction error."""
    return types.SimpleNamespace(z=z, recon=torch.full((len(z),), recon))


def with_prior(latent_dim: int) -> types.SimpleNamespace:
    """What the AAE reads of the model besides its pass: a code with the prior N(0, I), and the code's size."""
    return types.SimpleNamespace(code=PointCode(prior="normal"), latent_dim=latent_dim)


# ================================================================================ the adversarial autoencoder
def test_the_discriminator_loss_labels_prior_draws_real_and_codes_fake():
    """−½ E_p[log D] − ½ E_q[log(1 − D)] with prior draws as class 1. The swapped labels (codes real, prior fake)
    give another value on these logits, a small loss to a D that is sure and wrong, and a large one to a D that is
    sure and right."""
    g = torch.Generator().manual_seed(0)
    prior, codes = torch.randn(5, generator=g) + 1, torch.randn(8, generator=g) - 1  # (odd sizes: each class ½)
    expected = -0.5 * (torch.sigmoid(prior).log().mean() + (1 - torch.sigmoid(codes)).log().mean())
    torch.testing.assert_close(discriminator_loss(prior, codes), expected)
    swapped = -0.5 * (torch.sigmoid(codes).log().mean() + (1 - torch.sigmoid(prior)).log().mean())
    assert abs(expected - swapped) > 0.5
    assert discriminator_loss(torch.zeros(3), torch.zeros(3)).item() == pytest.approx(math.log(2))  # chance
    assert discriminator_loss(torch.full((4,), 20.0), torch.full((4,), -20.0)) < 1e-6  # sure and right
    assert discriminator_loss(torch.full((4,), -20.0), torch.full((4,), 20.0)) > 19  # sure and wrong
    assert discriminator_accuracy(torch.tensor([1.0, -1.0]), torch.tensor([-1.0, -1.0, 1.0])).item() == \
        pytest.approx(0.5 * (1 / 2 + 2 / 3))


def test_the_encoders_adversarial_loss_is_the_non_saturating_minus_log_d():
    """A D that calls every code a prior draw with probability σ(c): the encoder's term is −log σ(c) per image and the
    loss adds λ times it to the reconstruction. The saturating log(1 − σ(c)) (or −log(1 − σ(c))), and λ applied to
    the reconstruction instead, give other values; where D is sure a code is fake (c = −30) the non-saturating loss
    keeps a slope of −1 in c instead of vanishing."""
    objective = AdversarialAutoencoder(latent_dim=3, hidden_dims=[8], schedule=ConstantBeta(4.0))
    for c in (1.3, -2.0):
        constant_discriminator(objective, c)
        value = objective(with_prior(3), None, pass_of(torch.randn(6, 3)), step=0)
        assert value.terms["adversarial"].item() == pytest.approx(-math.log(torch.sigmoid(torch.tensor(c))), rel=1e-5)
        assert value.loss.item() == pytest.approx(2.0 + 4.0 * value.terms["adversarial"].item(), rel=1e-6)
    assert objective.weights(0) == {"beta": 4.0} and AdversarialAutoencoder.beta_name == "lambda"
    logit = torch.tensor([-30.0], requires_grad=True)
    generator_loss(logit).sum().backward()
    assert logit.grad.item() == pytest.approx(-1.0, abs=1e-6)


def aae(latent_dim: int = 2) -> Autoencoder:
    torch.manual_seed(0)
    return Autoencoder([1, 8, 8], latent_dim=latent_dim, code=NORMAL_POINT, net=SMALL_NET)


def grads(module: torch.nn.Module) -> list[torch.Tensor | None]:
    return [p.grad for p in module.parameters()]


def test_the_adversarial_gradient_reaches_only_the_encoder_and_ds_loss_only_d():
    """The encoder's term (λ E[−log D(z)]) must train the encoder and leave the decoder and D alone; D's loss must
    reach D's weights only. Catches: D called with live weights in the encoder's term (D's .grad filled by the
    model's backward), and codes not detached in D's loss (the encoder's .grad filled by D's backward)."""
    model = aae()
    objective = AdversarialAutoencoder(latent_dim=2, hidden_dims=[8])
    x = torch.rand(6, 1, 8, 8)
    value = objective(model, x, model(x), 0)
    value.terms["adversarial"].backward()
    assert all(g is not None and g.abs().sum() > 0 for g in grads(model.encoder))
    assert all(g is None for g in grads(model.decoder) + grads(objective.discriminator))
    model.zero_grad(set_to_none=True)
    value = objective(model, x, model(x), 0)
    value.adversary_loss.backward()
    assert all(g is not None and g.abs().sum() > 0 for g in grads(objective.discriminator))
    assert all(g is None for g in grads(model))


def test_the_discriminator_learns_the_log_density_ratio_of_a_shifted_code(one_thread):
    """Monte-Carlo agreement: codes q = N(m, I) against the prior p = N(0, I), m = (1.5, −1). D trained on
    :func:`discriminator_loss` with the objective's own optimiser reaches, at its optimum, logit D(z) =
    log p(z) − log q(z) = −z·m + ½‖m‖², and separates the two classes as well as the Bayes classifier, Φ(‖m‖/2) =
    0.79. Swapped labels flip the logit's sign (the test then fails by about 2 nats on these points)."""
    torch.manual_seed(0)
    m = torch.tensor([1.5, -1.0])
    objective = AdversarialAutoencoder(latent_dim=2, hidden_dims=[32], lr=5e-3, betas=[0.5, 0.999])
    optimizer = objective.adversary_optimizer()
    model = with_prior(2)
    for _ in range(300):
        value = objective(model, None, pass_of(torch.randn(512, 2) + m), 0)
        optimizer.zero_grad()
        value.adversary_loss.backward()
        optimizer.step()
    points = torch.tensor([[0.0, 0.0], [0.75, -0.5], [1.5, -1.0], [0.5, 0.5], [1.0, 0.0]])
    with torch.no_grad():
        learned = objective.discriminator(points)
    exact = -points @ m + 0.5 * m.dot(m)
    torch.testing.assert_close(learned, exact, atol=0.3, rtol=0)
    with torch.no_grad():
        value = objective(model, None, pass_of(torch.randn(20_000, 2) + m), 0)
    bayes = 0.5 * (1 + math.erf(m.norm().item() / 2 / math.sqrt(2)))
    assert value.terms["disc_accuracy"].item() == pytest.approx(bayes, abs=0.02)


def test_bad_aae_settings_are_refused_naming_the_key():
    for kwargs, message in [
        ({"hidden_dims": []}, r"model.objective.hidden_dims = \[\] is invalid: it must be a non-empty list"),
        ({"hidden_dims": [8, 0]}, r"model.objective.hidden_dims = \[8, 0\] is invalid"),
        ({"lr": -1.0}, r"model.objective.lr = -1.0 is invalid: it must be a finite number > 0"),
        ({"lr": float("nan")}, r"model.objective.lr = nan is invalid"),
        ({"betas": [0.5]}, r"model.objective.betas = \[0.5\] is invalid: it must be two numbers in \[0, 1\)"),
        ({"betas": [0.5, 1.0]}, r"model.objective.betas = \[0.5, 1.0\] is invalid"),
        ({"negative_slope": -0.1}, r"model.objective.negative_slope = -0.1 is invalid"),
    ]:
        with pytest.raises(ConfigError, match=message):
            AdversarialAutoencoder(latent_dim=2, **kwargs)
    objective = AdversarialAutoencoder(latent_dim=2, hidden_dims=[8])
    no_prior = types.SimpleNamespace(code=PointCode(), latent_dim=2)
    with pytest.raises(ConfigError, match=r"model.code = PointCode without a prior .* model.code.prior=normal"):
        objective(no_prior, None, pass_of(torch.randn(4, 2)), 0)
    with pytest.raises(ValueError, match=r"model.objective.latent_dim"):
        objective(with_prior(3), None, pass_of(torch.randn(4, 3)), 0)


# ================================================================================ the regularised autoencoder
def test_the_code_penalty_is_half_the_squared_norm_of_each_code():
    """½‖z‖²₂ per image, summed over dimensions: (3, 4) gives 12.5, not 25 (no ½) nor 6.25 (a mean over dims)."""
    z = torch.tensor([[3.0, 4.0], [0.0, 0.0], [1.0, -1.0]])
    torch.testing.assert_close(code_penalty(z), torch.tensor([12.5, 0.0, 1.0]))


def rae(latent_dim: int = 3, likelihood: str = "bernoulli", hidden: list[int] | None = None) -> Autoencoder:
    torch.manual_seed(1)
    net = {"encoder": {"_target_": "vaelab.models.nets.MLPEncoder", "hidden_dims": [16]},
           "decoder": {"_target_": "vaelab.models.nets.MLPDecoder", "hidden_dims": [16] if hidden is None else hidden}}
    return Autoencoder([1, 4, 4], latent_dim=latent_dim, code=POINT, net=net, likelihood=likelihood)


def test_the_decoder_weight_penalty_is_the_sum_of_the_squared_decoder_weights_alone():
    """‖θ_dec‖²₂ by hand: the squares of the decoder's two weight matrices. Catches: the whole model's weights (the
    encoder's too), and the biases counted."""
    model = rae()
    linears = [m for m in model.decoder.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 2
    by_hand = sum((m.weight.detach() ** 2).sum() for m in linears)
    torch.testing.assert_close(decoder_weight_penalty(model.decoder), by_hand)
    with torch.no_grad():  # neither the encoder's weights nor any bias moves it
        for p in model.encoder.parameters():
            p.mul_(3.0)
        for m in linears:
            m.bias.add_(5.0)
    torch.testing.assert_close(decoder_weight_penalty(model.decoder), by_hand)


def test_the_rae_l2_loss_adds_the_weight_penalty_once_per_batch():
    """loss = E[recon] + β E[½‖z‖²] + λ ‖θ_dec‖²: the penalty's share of the loss is λ‖θ_dec‖² whatever the batch
    size (a version that adds it to every image and sums, or scales it by the batch, fails), and its gradient on a
    decoder weight is 2λW."""
    model = rae()
    objective = RegularisedAutoencoder(regulariser="l2", lambda_reg=0.01, schedule=ConstantBeta(0.5))
    assert objective.term_names == ("code_penalty", "decoder_l2")
    penalty = decoder_weight_penalty(model.decoder).item()
    for n in (1, 7):
        x = torch.rand(n, 1, 4, 4, generator=torch.Generator().manual_seed(n))
        out = model(x)
        value = objective(model, x, out, 0)
        expected = out.recon.mean() + 0.5 * code_penalty(out.z).mean() + 0.01 * penalty
        torch.testing.assert_close(value.loss, expected)
        torch.testing.assert_close(value.terms["code_penalty"], code_penalty(out.z).mean())
        assert value.terms["decoder_l2"].item() == pytest.approx(penalty, rel=1e-6)
    model.zero_grad()
    value.terms["decoder_l2"].backward()
    first = next(m for m in model.decoder.modules() if isinstance(m, torch.nn.Linear))
    torch.testing.assert_close(first.weight.grad, 2 * first.weight.detach())
    assert first.bias.grad is None
    assert all(p.grad is None for p in model.encoder.parameters())


def test_the_decoder_jacobian_matches_central_finite_differences():
    model = rae(likelihood="bernoulli").double()
    z = torch.randn(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    jac = decoder_jacobian(model, z)
    assert jac.shape == (3, 1, 4, 4, 3)
    h = 1e-6
    for j in range(3):
        step = torch.zeros(3, dtype=torch.float64)
        step[j] = h
        numeric = (model.mean(model.decode(z + step)) - model.mean(model.decode(z - step))) / (2 * h)
        torch.testing.assert_close(jac[..., j], numeric, rtol=1e-6, atol=1e-8)
    # the penalty is the squared Frobenius norm of each code's Jacobian, per image
    torch.testing.assert_close(gradient_penalty(model, z), (jac ** 2).flatten(1).sum(1))


def test_the_gradient_penalty_of_a_linear_decoder_is_the_squared_norm_of_its_matrix():
    """Limit case: a Gaussian likelihood (the image is the decoder's output) and a decoder without hidden layers,
    D(z) = Wz + b: ‖∂D/∂z‖²_F = ‖W‖²_F at every code. Catches the penalty of the gradient of the summed image
    ‖Wᵀ1‖² (one backward pass of D(z).sum()), and a norm not squared."""
    model = rae(likelihood="gaussian", hidden=[]).double()
    linear = next(m for m in model.decoder.modules() if isinstance(m, torch.nn.Linear))
    z = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3)) * 5
    expected = (linear.weight.detach() ** 2).sum().expand(4)
    torch.testing.assert_close(gradient_penalty(model, z), expected)
    assert not torch.allclose(expected, (linear.weight.detach().sum(0) ** 2).sum().expand(4))


def test_the_rae_gp_loss_trains_the_decoder_smoothness_and_is_computed_in_validation_too():
    model = rae()
    objective = RegularisedAutoencoder(regulariser="gp", lambda_reg=2.0, schedule=ConstantBeta(0.1))
    assert objective.term_names == ("code_penalty", "gradient_penalty")
    x = torch.rand(5, 1, 4, 4)
    out = model(x)
    value = objective(model, x, out, 0)
    gp = gradient_penalty(model, out.z).mean()
    torch.testing.assert_close(value.terms["gradient_penalty"], gp)
    torch.testing.assert_close(value.loss, out.recon.mean() + 0.1 * code_penalty(out.z).mean() + 2.0 * gp)
    value.terms["gradient_penalty"].backward()
    assert all(p.grad is not None for p in model.decoder.parameters() if p.dim() >= 2)
    with torch.inference_mode():  # as Lightning validates
        out = model(x)
        later = objective(model, x, out, 0)
    assert later.terms["gradient_penalty"].item() == pytest.approx(gp.item(), rel=1e-5)


def test_bad_rae_settings_are_refused_naming_the_key():
    with pytest.raises(ConfigError, match=r"model.objective.regulariser = 'l1' is invalid: it must be one of l2, gp"):
        RegularisedAutoencoder(regulariser="l1")
    for bad in (-1e-3, float("inf")):
        with pytest.raises(ConfigError, match=rf"model.objective.lambda_reg = {bad!r} is invalid: it must be a "
                                              r"finite number >= 0"):
            RegularisedAutoencoder(lambda_reg=bad)


# ================================================================================ through the real config
COMMON = ["data=digits", "model.latent_dim=4", "callbacks=minimal", "logger=none"]


@pytest.mark.parametrize("preset", ["aae", "rae"])
def test_a_negative_beta_is_refused_before_training_naming_the_key(tmp_path, preset):
    with pytest.raises(ConfigError, match=r"model.beta = -1"):
        train(compose_train(tmp_path, [f"model={preset}", *COMMON, "model.beta=-1"]))


def record_of(tmp_path) -> dict:
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["status"] == "completed"
    return record


def evaluates_alike(tmp_path, record: dict, *overrides: str) -> dict:
    """eval.py on the tested checkpoint: completed, with the test reconstruction error of training's test."""
    run_evaluation(compose_eval(tmp_path, [f"ckpt_path={record['test_ckpt']}", "iw_k=0", *overrides]))
    evaluated = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert evaluated["status"] == "completed"
    assert evaluated["test"]["test/recon"] == pytest.approx(record["test"]["test/recon"], rel=1e-4)
    return evaluated


def test_the_aae_trains_through_the_config_and_samples_its_prior(tmp_path):
    from vaelab.models.checkpoint import load

    train(compose_train(tmp_path, ["model=aae", *COMMON, "model.objective.hidden_dims=[32,32]"]))
    record = record_of(tmp_path)
    assert record["global_step"] == 3  # one optimisation step a batch: D's steps are not counted
    for split in ("train", "val", "test"):
        values = record[split]
        for term in ("loss", "recon", "adversarial", "disc_loss", "disc_accuracy"):
            assert math.isfinite(values[f"{split}/{term}"]), (split, term)
        assert f"{split}/kl" not in values and values[f"{split}/beta"] == 1.0
    val = record["val"]  # exact epoch means: loss = recon + λ·adversarial
    assert val["val/loss"] == pytest.approx(val["val/recon"] + val["val/adversarial"], rel=1e-5)
    state = torch.load(record["test_ckpt"], weights_only=True)
    assert any(k.startswith("objective.discriminator.") for k in state["state_dict"])
    assert len(state["optimizer_states"]) == 2  # the model's and D's
    evaluates_alike(tmp_path, record)
    model = load(record["test_ckpt"])
    samples = model.sample(5, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (5, 1, 8, 8) and 0 <= samples.min() and samples.max() <= 1


def test_the_rae_trains_and_generates_with_the_mixture_sampler(tmp_path):
    """``model=rae`` with ``sampler=gmm``: the samples view fits the mixture on training codes and draws; the trained
    model has no prior, and generates from a mixture fitted on its codes."""
    from sklearn.datasets import load_digits
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from vaelab.models.checkpoint import load
    from vaelab.models.samplers import GaussianMixtureSampler

    train(compose_train(tmp_path, ["model=rae", "data=digits", "model.latent_dim=4", "sampler=gmm",
                                   "sampler.n_components=3"]))
    record = record_of(tmp_path)
    for split in ("train", "val", "test"):
        assert {f"{split}/{name}" for name in ("loss", "recon", "code_penalty", "decoder_l2")} <= set(record[split])
    val = record["val"]
    assert val["val/loss"] == pytest.approx(val["val/recon"] + 1e-4 * val["val/code_penalty"]
                                            + 1e-7 * val["val/decoder_l2"], rel=1e-5)
    acc = EventAccumulator(str(tmp_path / "run"), size_guidance={"images": 0})
    acc.Reload()
    assert "val/samples" in acc.Tags()["images"]
    evaluates_alike(tmp_path, record, "sampler=gmm", "sampler.n_components=3")
    model = load(record["test_ckpt"])
    with pytest.raises(ValueError, match="sampler=gmm"):
        model.sample(3)
    images = torch.as_tensor(load_digits().images[:300], dtype=torch.float32).unsqueeze(1) / 16
    sampler = GaussianMixtureSampler(n_components=3)
    with torch.no_grad():
        sampler.fit(model.embed(images))
        samples = model.sample(6, generator=torch.Generator().manual_seed(0), sampler=sampler)
    assert samples.shape == (6, 1, 8, 8) and torch.isfinite(samples).all()


def test_the_rae_gp_variant_trains_through_the_config(tmp_path):
    train(compose_train(tmp_path, ["model=rae", *COMMON, "model.objective.regulariser=gp",
                                   "model.objective.lambda_reg=0.01"]))
    record = record_of(tmp_path)
    for split in ("train", "val", "test"):
        assert record[split][f"{split}/gradient_penalty"] > 0
        assert f"{split}/decoder_l2" not in record[split]
