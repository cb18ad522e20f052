"""The loss terms (vaelab.models.distributions and .likelihoods) checked against torch.distributions and closed
forms, and the model's ELBO and AE objectives built from them."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from vaelab.models.distributions import kl_per_dimension, kl_to_standard_normal, reparameterize
from vaelab.models.likelihoods import (
    BernoulliLikelihood,
    GaussianLikelihood,
    bernoulli_nll,
    gaussian_nll,
    make_likelihood,
)
from vaelab.training import AutoencoderModule

AE = {"_target_": "vaelab.models.objectives.Reconstruction"}

# -------------------------------------------------------------------------------------------------------- KL


@pytest.mark.parametrize("dim", [3, 5])
def test_kl_matches_monte_carlo_and_torch_distributions(dim):
    """Closed-form KL vs E_q[log q(z) − log p(z)] from 200k draws, to 5 Monte-Carlo standard errors."""
    gen = torch.Generator().manual_seed(dim)
    mu = torch.randn(4, dim, generator=gen, dtype=torch.float64)
    logvar = torch.randn(4, dim, generator=gen, dtype=torch.float64)
    kl = kl_to_standard_normal(mu, logvar)
    assert kl.shape == (4,)

    q, p = Normal(mu, (0.5 * logvar).exp()), Normal(torch.zeros_like(mu), torch.ones_like(mu))
    torch.testing.assert_close(kl, kl_divergence(q, p).sum(-1), rtol=1e-10, atol=1e-10)

    n = 200_000
    torch.manual_seed(0)
    z = q.sample((n,))  # (n, 4, dim)
    log_ratio = (q.log_prob(z) - p.log_prob(z)).sum(-1)  # (n, 4)
    estimate, std_err = log_ratio.mean(0), log_ratio.std(0) / math.sqrt(n)
    assert torch.all((kl - estimate).abs() < 5 * std_err), (kl, estimate, std_err)


def test_kl_is_zero_at_the_prior_and_positive_elsewhere():
    zero = torch.zeros(1, 4)
    assert kl_to_standard_normal(zero, zero).item() == 0.0
    for value in (-2.0, -0.1, 1e-2, 0.5, 3.0):
        perturbed = torch.tensor([[0.0, value, 0.0, 0.0]])
        assert kl_to_standard_normal(perturbed, zero).item() > 0  # μ off zero
        # log σ² = value: σ < 1 for negative values, σ > 1 for positive ones
        assert kl_to_standard_normal(zero, perturbed).item() > 0
    # a pure mean shift: KL = ½ Σ μ²
    mu = torch.tensor([[1.0, -2.0, 0.0, 0.5]])
    assert kl_to_standard_normal(mu, zero).item() == pytest.approx(0.5 * (1 + 4 + 0.25))


def test_kl_per_dimension_sums_to_the_total():
    gen = torch.Generator().manual_seed(1)
    mu, logvar = torch.randn(6, 5, generator=gen), torch.randn(6, 5, generator=gen)
    per_dim = kl_per_dimension(mu, logvar)
    assert per_dim.shape == (6, 5)
    torch.testing.assert_close(per_dim.sum(1), kl_to_standard_normal(mu, logvar))
    assert torch.all(per_dim >= 0)


# ----------------------------------------------------------------------------------------------- likelihoods


@pytest.mark.parametrize("graded", [False, True])
def test_bernoulli_nll_matches_the_probability_formula(graded):
    gen = torch.Generator().manual_seed(2)
    logits = 3 * torch.randn(4, 2, 5, 6, generator=gen, dtype=torch.float64)
    x = torch.rand(4, 2, 5, 6, generator=gen, dtype=torch.float64)
    if not graded:
        x = (x > 0.5).double()
    y = 1 / (1 + torch.exp(-logits))
    expected = -(x * torch.log(y) + (1 - x) * torch.log(1 - y)).sum(dim=(1, 2, 3))
    nll = bernoulli_nll(logits, x)
    assert nll.shape == (4,)
    torch.testing.assert_close(nll, expected, rtol=1e-10, atol=1e-10)


def test_bernoulli_nll_is_finite_for_extreme_logits():
    logits = torch.tensor([[[[100.0, -100.0], [100.0, -100.0]]]])
    x = torch.tensor([[[[0.0, 1.0], [1.0, 0.0]]]])
    y = torch.sigmoid(logits)
    naive = -(x * torch.log(y) + (1 - x) * torch.log(1 - y)).sum()
    assert not torch.isfinite(naive)  # the reason for the logits form
    nll = bernoulli_nll(logits, x)
    assert torch.isfinite(nll).all()
    # two pixels wrong by 100 nats each (log(1 + e^100) ≈ 100), two right (≈ e^-100 ≈ 0)
    assert nll.item() == pytest.approx(200.0, rel=1e-6)


def test_gaussian_nll_matches_torch_distributions():
    gen = torch.Generator().manual_seed(3)
    mean = torch.rand(3, 1, 4, 4, generator=gen, dtype=torch.float64)
    x = torch.rand(3, 1, 4, 4, generator=gen, dtype=torch.float64)
    for std in (0.1, 1.0, 2.5):
        expected = -Normal(mean, std).log_prob(x).sum(dim=(1, 2, 3))
        torch.testing.assert_close(gaussian_nll(mean, x, std), expected, rtol=1e-10, atol=1e-10)


def test_make_likelihood():
    logits = torch.tensor([[[[0.0, 2.0]]]])
    x = torch.tensor([[[[1.0, 0.0]]]])
    bern = make_likelihood("bernoulli")
    assert isinstance(bern, BernoulliLikelihood)
    torch.testing.assert_close(bern.mean(logits), torch.tensor([[[[0.5, 1 / (1 + math.exp(-2))]]]]))
    torch.testing.assert_close(bern.nll(logits, x), torch.tensor([math.log(2) + math.log(1 + math.exp(2))]))

    gauss = make_likelihood("gaussian", std=0.5)
    assert isinstance(gauss, GaussianLikelihood) and gauss.std == 0.5
    assert torch.equal(gauss.mean(logits), logits)
    torch.testing.assert_close(gauss.nll(logits, x), -Normal(logits, 0.5).log_prob(x).sum(dim=(1, 2, 3)))


def test_unknown_likelihood_and_bad_std_raise():
    with pytest.raises(ValueError, match="bernoulli") as info:
        make_likelihood("poisson")
    assert "gaussian" in str(info.value)
    for std in (0.0, -1.0):
        with pytest.raises(ValueError):
            GaussianLikelihood(std)
        with pytest.raises(ValueError):
            make_likelihood("gaussian", std=std)


# -------------------------------------------------------------------------------------------- reparameterize


def test_reparameterize_moments():
    """200k draws: sample mean within 5 SE of μ, sample variance within 5 SE of σ² (SE of s² ≈ σ²·√(2/n))."""
    n = 200_000
    mu = torch.tensor([0.0, 1.5, -3.0], dtype=torch.float64)
    logvar = torch.tensor([0.0, -2.0, 1.0], dtype=torch.float64)
    var = logvar.exp()
    torch.manual_seed(0)
    z = reparameterize(mu.expand(n, 3), logvar.expand(n, 3))
    assert torch.all((z.mean(0) - mu).abs() < 5 * (var / n).sqrt())
    assert torch.all((z.var(0) - var).abs() < 5 * var * math.sqrt(2 / n))


def test_reparameterize_gradients():
    n = 7
    mu = torch.tensor([0.5, -1.0, 2.0], requires_grad=True)
    logvar = torch.tensor([0.1, -0.3, 0.7], requires_grad=True)
    z = reparameterize(mu.expand(n, 3), logvar.expand(n, 3))
    z.sum().backward()
    assert torch.equal(mu.grad, torch.full((3,), float(n)))  # dz/dμ = 1 for every draw
    assert logvar.grad is not None and torch.all(logvar.grad != 0)


def test_reparameterize_is_mu_plus_sigma_eps():
    mu = torch.tensor([[0.5, -1.0, 2.0], [0.0, 3.0, -0.5]])
    logvar = torch.tensor([[0.1, -0.3, 0.7], [-1.0, 0.0, 2.0]])
    torch.manual_seed(123)
    z = reparameterize(mu, logvar)
    torch.manual_seed(123)
    eps = torch.randn_like(mu)
    torch.testing.assert_close(z, mu + torch.exp(0.5 * logvar) * eps, rtol=0, atol=0)


# ------------------------------------------------------------------------------------------ the model's loss


def _pair(**kwargs):
    """Two models with identical weights, one with β = 1 and one with β = 4."""
    a = AutoencoderModule(image_shape=[1, 8, 8], latent_dim=3, beta=1.0, **kwargs)
    b = AutoencoderModule(image_shape=[1, 8, 8], latent_dim=3, beta=4.0, **kwargs)
    b.load_state_dict(a.state_dict())
    return a, b


@pytest.mark.parametrize("schedule", [None, {"_target_": "vaelab.models.schedules.ConstantBeta"}])
def test_beta_scales_only_the_kl_term(schedule):
    a, b = _pair(beta_schedule=schedule)
    x = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(7)
    out_a = a.model_step((x,), "train")
    torch.manual_seed(7)
    out_b = b.model_step((x,), "train")
    assert torch.equal(out_a.recon, out_b.recon) and torch.equal(out_a.kl, out_b.kl)
    assert out_a.recon.shape == out_a.kl.shape == (5,)
    assert torch.all(out_a.kl > 0)
    assert (out_a.beta, out_b.beta) == (1.0, 4.0)
    torch.testing.assert_close(out_b.loss - out_a.loss, 3 * out_a.kl.mean())
    torch.testing.assert_close(out_a.loss, out_a.recon.mean() + out_a.kl.mean())
    assert torch.equal(out_a.elbo, -(out_a.recon + out_a.kl))


def test_model_terms_match_reference_formulas():
    """recon is the Bernoulli NLL of x given the logits, kl the KL of (μ, log σ²), x_mean the sigmoid."""
    model = AutoencoderModule(image_shape=[1, 8, 8], latent_dim=3)
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(1)).double()
    model.double()
    out = model(x)
    y = torch.sigmoid(out.x_out)
    torch.testing.assert_close(out.recon, -(x * y.log() + (1 - x) * (1 - y).log()).sum(dim=(1, 2, 3)))
    q = Normal(out.mu, (0.5 * out.logvar).exp())
    torch.testing.assert_close(out.kl, kl_divergence(q, Normal(0.0, 1.0)).sum(-1))
    torch.testing.assert_close(out.x_mean, y)


def test_deterministic_autoencoder_has_no_kl():
    a, b = _pair(objective=AE)
    x = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    out_a, out_b = a.model_step((x,), "train"), b.model_step((x,), "train")
    assert out_a.logvar is None
    assert torch.equal(out_a.kl, torch.zeros(5))
    assert torch.equal(out_a.z, out_a.mu) and out_a.mu.shape == (5, 3)
    assert out_a.loss.item() == out_a.recon.mean().item()
    assert torch.equal(out_a.loss, out_b.loss)  # β plays no part


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_the_likelihood_of_several_codes_per_image_equals_that_of_the_repeated_images(likelihood):
    """nll_samples broadcasts x over the n codes of each image (the importance-weighted bound's K decodes) instead of
    repeating it; the values must be those of nll on the repeated images, for grey levels as for binary pixels."""
    from vaelab.models.likelihoods import make_likelihood

    g = torch.Generator().manual_seed(3)
    model = make_likelihood(likelihood, 0.3)
    x = torch.rand(4, 1, 5, 5, generator=g, dtype=torch.float64)
    x[:2] = x[:2].round()
    output = 6 * torch.randn(7, 4, 1, 5, 5, generator=g, dtype=torch.float64)
    expected = model.nll(output.flatten(0, 1), x.repeat(7, 1, 1, 1)).reshape(7, 4)
    torch.testing.assert_close(model.nll_samples(output, x), expected, rtol=1e-12, atol=1e-10)
