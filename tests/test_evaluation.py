"""Tests of vaelab.metrics.likelihood and vaelab.metrics.active_units.

The central check is probabilistic PCA (Tipping & Bishop 1999), where log p(x) is known exactly:
z ~ N(0, I_d), x | z ~ N(W z + b, σ² I_D), so p(x) = N(b, W Wᵀ + σ² I) and the posterior is
N(M⁻¹ Wᵀ (x − b), σ² M⁻¹) with M = Wᵀ W + σ² I. The references come from torch.distributions, independently
of the code under test.
"""

from __future__ import annotations

import math
import types

import pytest
import torch
from torch.distributions import MultivariateNormal, kl_divergence

from vaelab.metrics.active_units import active_units, posterior_mean_variance
from vaelab.metrics.likelihood import bits_per_dim, comparability_notes, evaluate, importance_weighted_bound
from vaelab.models import Autoencoder
from vaelab.models.distributions import gaussian_draws, kl_to_standard_normal, standard_normal_log_prob
from vaelab.models.likelihoods import GaussianLikelihood
from vaelab.training import AutoencoderModule

DTYPE = torch.float64
IMAGE_SHAPE = (1, 2, 3)  # D = 6 pixels
LATENT = 2
SIGMA = 0.5

POINT = {"_target_": "vaelab.models.codes.PointCode"}  # the deterministic autoencoder's code


class PPCAModel:
    """A linear-Gaussian 'autoencoder' with the encode/decode/likelihood interface, and a chosen diagonal q.

    q(z | x) = N(posterior mean + shift·posterior std, var_scale · diag(posterior covariance)): with shift = 0
    and var_scale = 1 it is the exact posterior whenever that posterior is diagonal.
    """

    variational = True

    def __init__(
        self, w: torch.Tensor, b: torch.Tensor, sigma: float, shift: float = 0.0, var_scale: float = 1.0
    ):
        self.w, self.b, self.sigma = w, b, sigma
        self.latent_dim = w.shape[1]
        self.likelihood = GaussianLikelihood(sigma)
        eye = torch.eye(self.latent_dim, dtype=w.dtype)
        m_inv = torch.linalg.inv(w.T @ w + sigma**2 * eye)
        self.post_gain = m_inv @ w.T  # (d, D)
        self.post_cov = sigma**2 * m_inv
        post_var = torch.diagonal(self.post_cov)
        self.q_shift = shift * post_var.sqrt()
        self.q_var = var_scale * post_var
        self.encode_calls = 0

    def posterior_mean(self, x: torch.Tensor) -> torch.Tensor:
        return (x.flatten(1) - self.b) @ self.post_gain.T

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.encode_calls += 1
        mu = self.posterior_mean(x) + self.q_shift
        return mu, self.q_var.log().expand_as(mu)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(self.encode(x), dim=1)

    def latent_draws(self, h: torch.Tensor, n: int, generator: torch.Generator | None = None):
        z, log_q = gaussian_draws(*h.chunk(2, dim=1), n, generator)
        return z, standard_normal_log_prob(z) - log_q

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return (z @ self.w.T + self.b).reshape(-1, *IMAGE_SHAPE)

    # ---- independent references
    def log_px(self, x: torch.Tensor) -> torch.Tensor:
        cov = self.w @ self.w.T + self.sigma**2 * torch.eye(self.w.shape[0], dtype=self.w.dtype)
        return MultivariateNormal(self.b, covariance_matrix=cov).log_prob(x.flatten(1))

    def elbo(self, x: torch.Tensor) -> torch.Tensor:
        """ELBO(q) = log p(x) − KL(q(z|x) ‖ p(z|x)), with both Gaussians from torch.distributions."""
        mu, logvar = self.encode(x)
        q = MultivariateNormal(mu, scale_tril=torch.diag_embed((0.5 * logvar).exp()))
        posterior = MultivariateNormal(self.posterior_mean(x), covariance_matrix=self.post_cov)
        return self.log_px(x) - kl_divergence(q, posterior)

    def sample_data(self, n: int, generator: torch.Generator) -> torch.Tensor:
        z = torch.randn(n, self.latent_dim, generator=generator, dtype=self.w.dtype)
        noise = torch.randn(n, self.w.shape[0], generator=generator, dtype=self.w.dtype)
        return (z @ self.w.T + self.b + self.sigma * noise).reshape(n, *IMAGE_SHAPE)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _ppca_params(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = _gen(seed)
    w = torch.randn(6, LATENT, generator=g, dtype=DTYPE)
    b = 0.5 * torch.randn(6, generator=g, dtype=DTYPE)
    return w, b


@pytest.fixture
def imperfect() -> PPCAModel:
    """q has a shifted mean, inflated variances and (necessarily) no correlation: q ≠ posterior."""
    w, b = _ppca_params()
    model = PPCAModel(w, b, SIGMA, shift=1.0, var_scale=2.0)
    # The exact posterior is correlated here, so even the best diagonal q could not be exact.
    assert abs(model.post_cov[0, 1].item()) > 1e-3
    return model


def _mean_se(values: torch.Tensor) -> tuple[float, float]:
    return values.mean().item(), (values.std() / math.sqrt(values.numel())).item()


# ----------------------------------------------------------------------- the importance-weighted bound
def test_iw_bound_is_ordered_between_elbo_and_log_likelihood(imperfect: PPCAModel) -> None:
    x = imperfect.sample_data(4000, _gen(1))
    log_px = imperfect.log_px(x)
    gen = _gen(2)
    gap_1 = importance_weighted_bound(imperfect, x, 1, generator=gen) - log_px
    gap_10 = importance_weighted_bound(imperfect, x, 10, generator=gen) - log_px
    assert gap_1.shape == gap_10.shape == (4000,)

    m1, se1 = _mean_se(gap_1)
    m10, se10 = _mean_se(gap_10)
    m_diff, se_diff = _mean_se(gap_10 - gap_1)
    # L_1 ≤ L_10 ≤ log p(x), each beyond Monte-Carlo noise where it is strict.
    assert m1 < -0.3 and m1 + 5 * se1 < 0
    assert m_diff > 5 * se_diff and m_diff > 0.2
    assert m10 < 4 * se10 + 1e-3  # a missing −log K would put it at +log 10


def test_iw_bound_converges_to_log_likelihood(imperfect: PPCAModel) -> None:
    x = imperfect.sample_data(1000, _gen(3))
    log_px = imperfect.log_px(x)
    gen = _gen(4)
    gap_1 = (importance_weighted_bound(imperfect, x, 1, generator=gen) - log_px).mean().item()
    gap_1000, se_1000 = _mean_se(importance_weighted_bound(imperfect, x, 1000, generator=gen) - log_px)
    assert gap_1 < -0.3
    assert se_1000 < 0.003  # the check below has power
    assert abs(gap_1000) < 4 * se_1000 + 1e-3  # the remaining bias is O(1/K)
    assert abs(gap_1000) < abs(gap_1) / 30


def test_one_sample_bound_is_unbiased_for_the_analytic_elbo(imperfect: PPCAModel) -> None:
    x = imperfect.sample_data(200, _gen(5))
    elbo = imperfect.elbo(x)
    log_px = imperfect.log_px(x)
    assert (log_px - elbo).mean() > 0.3  # q is far enough from the posterior for the check to have power

    repeats = 200
    x_rep = x.repeat(repeats, 1, 1, 1)
    l1 = importance_weighted_bound(imperfect, x_rep, 1, generator=_gen(6))
    mean, se = _mean_se(l1 - elbo.repeat(repeats))
    assert se < 0.02
    assert abs(mean) < 4 * se


def test_exact_diagonal_posterior_gives_log_likelihood_for_every_sample() -> None:
    # Orthogonal columns of different norms: Wᵀ W is diagonal, so is the posterior covariance σ² M⁻¹.
    q_mat, _ = torch.linalg.qr(torch.randn(6, LATENT, generator=_gen(7), dtype=DTYPE))
    w = q_mat * torch.tensor([2.0, 0.7], dtype=DTYPE)
    b = 0.5 * torch.randn(6, generator=_gen(8), dtype=DTYPE)
    model = PPCAModel(w, b, SIGMA)
    assert torch.allclose(model.post_cov, torch.diag(torch.diagonal(model.post_cov)), atol=1e-12)

    x = model.sample_data(64, _gen(9))
    log_px = model.log_px(x)
    for k, chunk in [(1, None), (7, 3)]:
        bound = importance_weighted_bound(model, x, k, chunk, generator=_gen(10))
        torch.testing.assert_close(bound, log_px, rtol=0, atol=1e-9)


def test_chunking_matches_unchunked_with_the_same_draws(imperfect: PPCAModel) -> None:
    x = imperfect.sample_data(8, _gen(11))  # B·d = 16 normals per sample
    # Chunked draws equal one big draw only if torch's normal sampler is stream-consistent for these sizes.
    whole = torch.randn(10, 8, LATENT, generator=_gen(12), dtype=DTYPE)
    g = _gen(12)
    parts = torch.cat([torch.randn(n, 8, LATENT, generator=g, dtype=DTYPE) for n in (3, 3, 3, 1)])
    if not torch.equal(whole, parts):
        pytest.skip("torch.randn is not stream-consistent across chunk sizes on this build")
    reference = importance_weighted_bound(imperfect, x, 10, generator=_gen(12))
    for chunk in (3, 1, 10, 50):
        chunked = importance_weighted_bound(imperfect, x, 10, chunk, generator=_gen(12))
        torch.testing.assert_close(chunked, reference, rtol=0, atol=1e-12)


def test_chunking_is_statistically_equal(imperfect: PPCAModel) -> None:
    x = imperfect.sample_data(2000, _gen(13))
    torch.manual_seed(14)  # the global RNG, no generator
    whole = importance_weighted_bound(imperfect, x, 20)
    chunked = importance_weighted_bound(imperfect, x, 20, chunk_size=6)
    m, se = _mean_se(chunked - whole)
    assert abs(m) < 4 * se
    # both estimate the same L_20, which lies above L_1 by a clear margin
    assert whole.mean() > importance_weighted_bound(imperfect, x, 1).mean() + 0.2


def test_bound_encodes_once_and_checks_arguments(imperfect: PPCAModel) -> None:
    x = imperfect.sample_data(4, _gen(15))
    importance_weighted_bound(imperfect, x, 10, chunk_size=3)
    assert imperfect.encode_calls == 1
    with pytest.raises(ValueError, match="k must be"):
        importance_weighted_bound(imperfect, x, 0)
    with pytest.raises(ValueError, match="chunk_size"):
        importance_weighted_bound(imperfect, x, 5, chunk_size=0)


def test_bound_refuses_a_deterministic_autoencoder() -> None:
    torch.manual_seed(0)
    ae = Autoencoder(image_shape=[1, 8, 8], latent_dim=4, code=POINT)
    with pytest.raises(ValueError, match="variational"):
        importance_weighted_bound(ae, torch.rand(3, 1, 8, 8), 5)


def test_bound_on_a_real_vae_has_no_gradient_and_keeps_train_mode() -> None:
    torch.manual_seed(0)
    vae = Autoencoder(image_shape=[1, 8, 8], latent_dim=4)
    vae.train()
    bound = importance_weighted_bound(vae, torch.rand(3, 1, 8, 8), 4, chunk_size=3)
    assert bound.shape == (3,) and torch.isfinite(bound).all()
    assert not bound.requires_grad
    assert vae.training


# ----------------------------------------------------------------------- active units, bits per dim
def test_active_units_counts_variance_of_posterior_means() -> None:
    n = 1000
    signs = torch.ones(n, dtype=DTYPE)
    signs[1::2] = -1.0
    # population variances 0.5, 0.02, 0.005, 0.001 (the last around a large mean), and 0
    scales = torch.tensor([0.5, 0.02, 0.005, 0.001, 0.0], dtype=DTYPE).sqrt()
    offsets = torch.tensor([0.0, 1.0, 0.0, 3.0, -2.0], dtype=DTYPE)
    mu = signs[:, None] * scales + offsets
    torch.testing.assert_close(
        posterior_mean_variance(mu),
        torch.tensor([0.5, 0.02, 0.005, 0.001, 0.0], dtype=DTYPE),
        rtol=1e-6,
        atol=1e-9,
    )
    assert active_units(mu) == 2
    assert active_units(mu, threshold=0.003) == 3
    assert active_units(mu, threshold=0.0005) == 4
    assert active_units(mu, threshold=1.0) == 0


def test_bits_per_dim_known_values() -> None:
    assert bits_per_dim(784 * math.log(2.0), 784) == pytest.approx(1.0)
    assert bits_per_dim(100.0, 10) == pytest.approx(14.426950408889634)
    torch.testing.assert_close(
        bits_per_dim(torch.tensor([0.0, 2 * math.log(2.0)]), 2),
        torch.tensor([0.0, 1.0]),
        rtol=1e-6,
        atol=1e-7,
    )
    with pytest.raises(ValueError):
        bits_per_dim(1.0, 0)


# ----------------------------------------------------------------------- evaluate
VAE_ONLY = ("kl", "neg_elbo", "bits_per_dim", "neg_iw_bound", "iw_bits_per_dim", "iw_k", "active_units")
KEYS = {"num_images", "recon", "mse", *VAE_ONLY}


def _data() -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
    x = torch.rand(8, 1, 8, 8, generator=_gen(20))
    y = torch.zeros(8, dtype=torch.long)
    return x, [(x[:5], y[:5]), (x[5:], y[5:])]  # batches of different sizes


def test_evaluate_vae_gives_exact_per_image_means() -> None:
    torch.manual_seed(0)
    vae = Autoencoder(image_shape=[1, 8, 8], latent_dim=4)
    x, batches = _data()

    torch.manual_seed(21)
    result = evaluate(vae, batches, k=5, chunk_size=2)
    assert set(result) == KEYS
    assert result["num_images"] == 8 and result["iw_k"] == 5

    # The same draws by hand, in evaluate's documented order (forward pass, then the bound, per batch).
    torch.manual_seed(21)
    vae.eval()
    with torch.no_grad():
        outs = [vae(xb) for xb, _ in batches[:1]]
        iws = [importance_weighted_bound(vae, batches[0][0], 5, 2)]
        outs.append(vae(batches[1][0]))
        iws.append(importance_weighted_bound(vae, batches[1][0], 5, 2))
        full = vae(x)  # the KL and posterior means are deterministic
    recon = torch.cat([o.recon for o in outs]).mean().item()
    mse = torch.cat([(xb - o.x_mean).pow(2) for (xb, _), o in zip(batches, outs, strict=True)]).mean().item()
    neg_iw = -torch.cat(iws).mean().item()
    assert result["recon"] == pytest.approx(recon, rel=1e-6)
    assert result["mse"] == pytest.approx(mse, rel=1e-6)
    assert result["neg_iw_bound"] == pytest.approx(neg_iw, rel=1e-6)
    assert result["kl"] == pytest.approx(full.kl.mean().item(), rel=1e-6)
    assert result["active_units"] == active_units(full.mu)
    assert result["neg_elbo"] == pytest.approx(result["recon"] + result["kl"])
    assert result["bits_per_dim"] == pytest.approx(result["neg_elbo"] / (64 * math.log(2.0)))
    assert result["iw_bits_per_dim"] == pytest.approx(result["neg_iw_bound"] / (64 * math.log(2.0)))
    # the per-image means are not the mean of the two batch means
    batch_mean_kl = (outs[0].kl.mean() + outs[1].kl.mean()).item() / 2
    assert abs(batch_mean_kl - result["kl"]) > 1e-6


def test_evaluate_vae_without_iw_and_mode_restored() -> None:
    torch.manual_seed(0)
    vae = Autoencoder(image_shape=[1, 8, 8], latent_dim=4)
    vae.train()
    _, batches = _data()
    result = evaluate(vae, batches, k=0)
    assert vae.training
    assert result["neg_iw_bound"] is None and result["iw_bits_per_dim"] is None and result["iw_k"] is None
    assert all(result[key] is not None for key in ("kl", "neg_elbo", "bits_per_dim", "active_units"))


def test_evaluate_autoencoder_gives_none_for_vae_only_keys() -> None:
    torch.manual_seed(0)
    ae = Autoencoder(image_shape=[1, 8, 8], latent_dim=4, code=POINT)
    x, batches = _data()
    result = evaluate(ae, [xb for xb, _ in batches], k=10)  # bare tensors are accepted too
    assert set(result) == KEYS
    assert all(result[key] is None for key in VAE_ONLY)
    with torch.no_grad():
        out = ae(x)
    assert result["num_images"] == 8
    assert result["recon"] == pytest.approx(out.recon.mean().item(), rel=1e-6)
    assert result["mse"] == pytest.approx((x - out.x_mean).pow(2).mean().item(), rel=1e-6)


def test_evaluate_rejects_empty_input() -> None:
    torch.manual_seed(0)
    vae = Autoencoder(image_shape=[1, 8, 8], latent_dim=4)
    with pytest.raises(ValueError, match="non-empty"):
        evaluate(vae, [])


# ------------------------------------------------------------------------ comparability, Bernoulli IWAE, active units


@pytest.mark.parametrize(
    "likelihood,binarize,warns",
    [
        ("bernoulli", "dynamic", None),  # the published protocol: nothing to say
        ("bernoulli", "none", "cross-entropy"),
        ("bernoulli", "static", "Larochelle"),
        ("gaussian", "none", "dequantisation"),
        ("gaussian", "dynamic", "dequantisation"),
        ("bernoulli", "none (binary data)", None),  # data=shapes: binary as it comes
    ],
)
def test_comparability_notes_say_exactly_when_numbers_are_not_published_log_likelihoods(likelihood, binarize, warns):
    binary = binarize.endswith("(binary data)")
    notes = comparability_notes(likelihood, binarize.split()[0], binary_images=binary)
    if warns is None:
        assert notes == []
    else:
        assert len(notes) == 1 and warns in notes[0]


def bernoulli_vae(seed: int = 0) -> Autoencoder:
    torch.manual_seed(seed)
    return Autoencoder(image_shape=[1, 6, 6], latent_dim=3,
                             net={"encoder": {"_target_": "vaelab.models.nets.MLPEncoder", "hidden_dims": [32]},
                                  "decoder": {"_target_": "vaelab.models.nets.MLPDecoder", "hidden_dims": [32]}})


BINARY = torch.bernoulli(torch.full((16, 1, 6, 6), 0.3), generator=torch.Generator().manual_seed(1))


def test_bernoulli_one_sample_bound_agrees_with_the_elbo_on_a_nonlinear_vae():
    model = bernoulli_vae()
    g = torch.Generator().manual_seed(2)
    draws = torch.stack([importance_weighted_bound(model, BINARY, 1, generator=g) for _ in range(400)])  # (R, B)
    with torch.no_grad():
        mu, logvar = model.encode(BINARY)
    z = mu + (0.5 * logvar).exp() * torch.randn(2000, *mu.shape, generator=g)
    with torch.no_grad():
        recon = model.likelihood.nll(model.decode(z.reshape(-1, 3)), BINARY.repeat(2000, 1, 1, 1)).reshape(2000, -1)
    elbo = -(recon.mean(0) + kl_to_standard_normal(mu, logvar))  # E_q[log p(x|z)] − KL, per image
    error = draws.mean(0) - elbo
    assert error.abs().max() < 4 * (draws.std(0) / 20 + recon.std(0) / math.sqrt(2000)).max()


def test_bernoulli_bound_rises_with_k_on_a_nonlinear_vae():
    model = bernoulli_vae()
    with torch.no_grad():  # a posterior far from the prior and from the truth, so that more samples help
        model.encoder[-1].weight[:3].mul_(8.0)
    g = torch.Generator().manual_seed(3)
    bounds = [torch.stack([importance_weighted_bound(model, BINARY, k, generator=g) for _ in range(30)]).mean().item()
              for k in (1, 10, 100)]
    assert bounds[0] < bounds[1] - 0.05 < bounds[2] - 0.1


class FixedCodes(torch.nn.Module):
    """An encoder that returns given posterior means (and log σ² = 0) for the batch's images, by their index."""

    def __init__(self, mu: torch.Tensor) -> None:
        super().__init__()
        self.mu = mu
        self.seen = 0
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mu = self.mu[self.seen : self.seen + len(x)]
        self.seen += len(x)
        return torch.cat([mu, torch.zeros_like(mu)], dim=1) + 0 * self.dummy


def test_active_units_logged_while_validating_count_the_constructed_means():
    """μ varies a lot in dims 0 and 2, a little in dim 1 (variance 0.0025 < 0.01) and not at all in dim 3 (held at
    2): the model's own epoch reduction must log 2 active units, over batches of uneven size."""
    g = torch.Generator().manual_seed(4)
    mu = torch.zeros(50, 4)
    mu[:, 0] = torch.randn(50, generator=g)
    mu[:, 1] = 0.05 * torch.tensor([1.0, -1.0]).repeat(25)  # mean 0, variance exactly 0.0025
    mu[:, 2] = 3.0 + torch.randn(50, generator=g)
    mu[:, 3] = 2.0  # constant away from 0: a count of E[μ²] instead of the variance would call it active
    model = AutoencoderModule(image_shape=[1, 2, 2], latent_dim=4)
    model.model.encoder = FixedCodes(mu)
    logged = {}
    model.log_dict = lambda values, **kwargs: logged.update(values)
    model._trainer = types.SimpleNamespace(
        strategy=types.SimpleNamespace(reduce=lambda t, reduce_op: t), global_step=0, state=None,
    )
    model.on_validation_epoch_start()
    for n in (20, 20, 10):
        model.model_step((torch.rand(n, 1, 2, 2), torch.zeros(n)), "val")
    model._log_epoch("val")
    assert logged["val/active_units"] == 2 == active_units(mu)
    variances = posterior_mean_variance(mu)
    assert variances[1] == pytest.approx(0.0025) and variances[3] == 0
