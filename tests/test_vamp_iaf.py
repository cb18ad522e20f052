"""The VampPrior (model=vamp_vae; Tomczak & Welling 2018) and the inverse autoregressive flow posterior
(model=iaf_vae; Kingma et al. 2016): their densities against independent computations (autograd Jacobians,
torch.distributions, a grid integral, closed-form KLs), the importance-weighted bound on both, the settings refused
by name, and both families trained through the real config. Each test names the plausible wrong version it would
catch."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import compose_eval, compose_train
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal, kl_divergence

from vaelab.errors import ConfigError
from vaelab.metrics.likelihood import importance_weighted_bound
from vaelab.models import Autoencoder
from vaelab.models import priors as priors_module
from vaelab.models.flow_code import GATE_BIAS, GatedUpdate, IAFCode
from vaelab.models.priors import VampPrior, mixture_log_prob
from vaelab.tasks.evaluate import run_evaluation
from vaelab.tasks.train import train

SMALL_NET = {"encoder": {"_target_": "vaelab.models.nets.MLPEncoder", "hidden_dims": [16]},
             "decoder": {"_target_": "vaelab.models.nets.MLPDecoder", "hidden_dims": [16]}}


def iaf_code(latent_dim: int = 4, steps: int = 2, context_dim: int = 3, hidden=(12, 12), spread: float = 0.6,
             seed: int = 0) -> IAFCode:
    """An IAF code in float64 whose MADEs have random weights (far from the near-identity initialisation, so that
    every step moves z and every log σ matters)."""
    torch.manual_seed(seed)
    code = IAFCode(steps=steps, hidden_dims=list(hidden), context_dim=context_dim)
    code.build(latent_dim)
    with torch.no_grad():
        for p in code.parameters():
            p.normal_(0.0, spread)
    return code.double()


def features(code: IAFCode, batch: int, seed: int = 1, log_sigma_sq: float | None = None) -> torch.Tensor:
    """Encoder features (μ, log σ², c) for ``batch`` images, log σ² around −1 unless given."""
    g = torch.Generator().manual_seed(seed)
    d, c = code.latent_dim, code.context_dim
    mu = torch.randn(batch, d, generator=g, dtype=torch.float64)
    logvar = (torch.randn(batch, d, generator=g, dtype=torch.float64) * 0.3 - 1.0 if log_sigma_sq is None
              else torch.full((batch, d), log_sigma_sq, dtype=torch.float64))
    return torch.cat([mu, logvar, torch.randn(batch, c, generator=g, dtype=torch.float64)], dim=1)


def inverse(code: IAFCode, z: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """z_0 of z_T, through zuko's (sequential) inverse of each step: the direction the code itself never uses."""
    for step in reversed(code.flow):
        z = step(context).inv(z)
    return z


def flow_log_density(code: IAFCode, h: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """log q(z|x) at any z by the change of variables: log N(f⁻¹(z); μ, σ²) − log|det ∂f/∂z_0| at f⁻¹(z)."""
    mu, logvar, context = code.split(h)
    z0 = inverse(code, z, context)
    _, log_det = code.transform(z0, context)
    return Independent(Normal(mu, torch.exp(0.5 * logvar)), 1).log_prob(z0) - log_det


# ====================================================================================== the IAF posterior
def test_the_gated_update_is_the_papers_step_and_its_log_derivative_is_log_sigma():
    """Injected: log|dy/dx| = log(1 − σ) (the gate of the wrong term): caught."""
    shift = torch.tensor([0.5, -2.0, 3.0], dtype=torch.float64)
    gate = torch.tensor([1.0, -3.0, 0.0], dtype=torch.float64)
    x = torch.tensor([2.0, 0.1, -1.0], dtype=torch.float64)
    t = GatedUpdate(shift, gate)
    sigma = torch.sigmoid(gate)
    assert torch.allclose(t(x), sigma * x + (1 - sigma) * shift)
    assert torch.allclose(t.inv(t(x)), x)
    derivative = torch.autograd.functional.jacobian(lambda v: GatedUpdate(shift, gate)(v), x).diagonal()
    assert torch.allclose(t.log_abs_det_jacobian(x, t(x)), derivative.log())


def test_the_flows_log_determinant_is_that_of_its_autograd_jacobian():
    """log|det ∂z_T/∂z_0| from torch.autograd.functional.jacobian of z_0 ↦ z_T (one image) equals the accumulated
    Σ_t Σ_i log σ_{t,i}. Injected: log(1 − σ) in the gated update; the total overwritten by the last step's term
    instead of summed; both caught."""
    code = iaf_code(latent_dim=5, steps=3)
    _, _, context = code.split(features(code, 1))
    z0 = torch.randn(1, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    jac = torch.autograd.functional.jacobian(lambda z: code.transform(z.unsqueeze(0), context)[0].squeeze(0), z0[0])
    _, log_det = code.transform(z0, context)
    assert torch.linalg.slogdet(jac).logabsdet.item() == pytest.approx(log_det.item(), abs=1e-10)
    assert abs(log_det.item()) > 0.5  # the steps do move z: the test could tell the terms apart


def test_each_step_is_autoregressive_and_the_order_is_reversed_between_steps():
    """The first step's Jacobian is lower triangular (z_t,i reads z_{t−1,<i}), the second's upper triangular.
    Injected: the same order at every step: caught (the second is lower triangular too)."""
    code = iaf_code(latent_dim=4, steps=2)
    _, _, context = code.split(features(code, 1))
    z = torch.randn(4, dtype=torch.float64)
    for t, triangle in ((0, torch.tril), (1, torch.triu)):
        jac = torch.autograd.functional.jacobian(lambda v, t=t: code.flow[t](context)(v.unsqueeze(0)).squeeze(0), z)
        assert torch.equal(jac, triangle(jac)), t
        assert (jac - torch.diag(jac.diagonal())).abs().sum() > 0  # and really depends on the other dimensions


def test_the_draws_log_q_is_the_change_of_variables_density_and_it_integrates_to_one():
    """``draw``'s log q at its own draws equals log N(f⁻¹(z); μ, σ²) − log|det J| (the inverse taken by zuko), and
    that density integrates to 1 over a fine grid of the 2-D code. Injected: log q = log N(z_0) + Σ log σ (the
    determinant's sign): the draws' log q disagrees and the integral is far from 1; caught."""
    code = iaf_code(latent_dim=2, steps=2, context_dim=2, spread=0.5)
    h = features(code, 1, log_sigma_sq=math.log(0.5))
    z, log_q = code.draw(h, 64, torch.Generator().manual_seed(3))
    assert torch.allclose(log_q, flow_log_density(code, h, z), atol=1e-9)
    axis = torch.linspace(-9.0, 9.0, 451, dtype=torch.float64)
    grid = torch.cartesian_prod(axis, axis).unsqueeze(1)  # (points, 1, 2): one image
    with torch.no_grad():
        mass = flow_log_density(code, h, grid).exp().sum() * (axis[1] - axis[0]) ** 2
    assert mass.item() == pytest.approx(1.0, abs=2e-3)


def test_with_no_steps_the_code_is_the_vaes_diagonal_gaussian():
    """Limit case T = 0: log q is log N(z; μ, σ²), the deterministic code is μ, and the one-sample KL averages to
    the closed form. Injected: kl = log q + log p(z): caught."""
    code = iaf_code(latent_dim=3, steps=0, context_dim=2)
    h = features(code, 1)
    mu, logvar, _ = code.split(h)
    z, log_q = code.draw(h, 5)
    assert torch.allclose(log_q, Independent(Normal(mu, torch.exp(0.5 * logvar)), 1).log_prob(z))
    assert torch.equal(code.locate(h)[0], mu)
    kl = code(h.expand(40000, -1)).kl
    exact = kl_divergence(Normal(mu, torch.exp(0.5 * logvar)), Normal(0.0, 1.0)).sum()
    assert kl.mean().item() == pytest.approx(exact.item(), abs=4 * kl.std().item() / 200)


def test_the_deterministic_code_is_the_flow_of_mu_and_where_narrow_draws_land():
    """``locate``/``mu`` is the flow applied to μ (ε = 0): as σ → 0 every draw lands on it. Injected: μ itself as
    the deterministic code (the flow forgotten): caught."""
    code = iaf_code(latent_dim=4, steps=2)
    h = features(code, 3, log_sigma_sq=-40.0)
    mu, logvar, context = code.split(h)
    det, det_logvar = code.locate(h)
    assert torch.allclose(det, code.transform(mu, context)[0]) and torch.equal(det_logvar, logvar)
    assert not torch.allclose(det, mu, atol=1e-2)
    z, _ = code.draw(h, 3)
    assert torch.allclose(z, det.expand(3, -1, -1), atol=1e-6)
    out = code(h)
    assert torch.equal(out.mu, det) and torch.allclose(out.kl, out.log_q - Normal(0.0, 1.0).log_prob(out.z).sum(-1))


def test_the_gates_start_near_one_so_the_untrained_flow_moves_z_only_a_little():
    """Kingma et al. (2016, sec. 4): s_t starts positive. With the MADE's weights zeroed, σ = sigmoid(GATE_BIAS).
    Injected: the bias added to the shifts m instead of the gates (``bias[0::2]``): caught."""
    torch.manual_seed(0)
    code = IAFCode(steps=1, hidden_dims=[8], context_dim=0)
    code.build(3)
    with torch.no_grad():
        code.flow[0].hyper[-1].weight.zero_()
    z = torch.randn(5, 3)
    _, log_det = code.transform(z, None)
    expected = 3 * math.log(torch.sigmoid(torch.tensor(GATE_BIAS)).item())
    assert torch.allclose(log_det, torch.full_like(log_det, expected), atol=0.05 * 3)


# ====================================================================================== the VampPrior
def vamp_model(k: int, latent_dim: int = 3, seed: int = 0) -> Autoencoder:
    torch.manual_seed(seed)
    model = Autoencoder([1, 4, 4], latent_dim, net=SMALL_NET,
                        prior={"_target_": "vaelab.models.priors.VampPrior", "num_pseudo_inputs": k})
    with torch.no_grad():  # pseudo-inputs unlike one another and a wide encoder, so that the components differ
        model.prior.raw_pseudo_inputs.uniform_(0.0, 1.0)
        for p in model.encoder.parameters():
            p.mul_(3.0)
    return model.double()


def component_normals(model: Autoencoder) -> Independent:
    """The K components q(z|u_k) from the encoder directly, as torch distributions."""
    mu, logvar = model.encode(model.prior.pseudo_inputs)
    return Independent(Normal(mu, torch.exp(0.5 * logvar)), 1)


def test_with_one_pseudo_input_the_prior_is_that_posterior():
    """K = 1: log p(z) = log N(z; μ(u), σ²(u)) for z of shape (B, D) and (n, B, D)."""
    model = vamp_model(1)
    q_u = component_normals(model)
    for shape in ((6, 3), (2, 5, 3)):
        z = torch.randn(*shape, dtype=torch.float64)
        assert torch.allclose(model.prior_log_prob(z), q_u.log_prob(z.unsqueeze(-2)).squeeze(-1))


def test_with_k_pseudo_inputs_the_prior_is_the_mean_of_their_posteriors():
    """log p(z) = log (1/K) Σ_k q(z|u_k), against torch's MixtureSameFamily with equal weights. Injected: no
    −log K; the mean of the K log-densities instead of the log of their mean: both caught."""
    model = vamp_model(5)
    mixture = MixtureSameFamily(Categorical(logits=torch.zeros(5, dtype=torch.float64)), component_normals(model))
    z = torch.randn(4, 7, 3, dtype=torch.float64) * 2
    assert torch.allclose(model.prior_log_prob(z), mixture.log_prob(z))


def test_the_mixture_density_is_the_same_whatever_rows_a_chunk_holds(monkeypatch):
    """Evaluation hands the prior n·B codes at once; computed a row at a time the result is the same. Injected:
    chunks joined in the wrong order (reversed): caught."""
    mu, logvar = torch.randn(6, 3, dtype=torch.float64), torch.randn(6, 3, dtype=torch.float64)
    z = torch.randn(5, 4, 3, dtype=torch.float64)
    whole = mixture_log_prob(z, mu, logvar)
    monkeypatch.setattr(priors_module, "MIXTURE_CHUNK", 1)
    assert torch.allclose(mixture_log_prob(z, mu, logvar), whole)


def test_the_one_sample_kl_averages_to_the_closed_form_kl_between_two_gaussians():
    """With one pseudo-input the model's KL, log q(z|x) − log p(z) at z ~ q(z|x), has expectation
    KL(N(μ_x, σ_x²) ‖ N(μ_u, σ_u²)) in closed form (torch's kl_divergence). Injected: log p(z) with σ_u in place
    of σ_u² (logvar halved): caught."""
    model = vamp_model(1, seed=3)
    x = torch.rand(1, 1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    mu_x, logvar_x = model.encode(x)
    mu_u, logvar_u = model.encode(model.prior.pseudo_inputs)
    exact = kl_divergence(Normal(mu_x, torch.exp(0.5 * logvar_x)), Normal(mu_u, torch.exp(0.5 * logvar_u))).sum()
    torch.manual_seed(5)
    with torch.no_grad():
        kl = model(x.expand(40000, -1, -1, -1)).kl
    assert exact.item() > 0.05
    assert kl.mean().item() == pytest.approx(exact.item(), abs=4 * kl.std().item() / 200)


def test_pseudo_inputs_start_as_the_authors_and_stay_in_the_images_range_and_learn():
    """u = hardtanh(raw, 0, 1), raw ~ N(0.05, 0.01²) at the start; the KL's gradient reaches them. Injected: no
    squash: caught."""
    torch.manual_seed(0)
    model = Autoencoder([1, 8, 8], 3, net=SMALL_NET,
                        prior={"_target_": "vaelab.models.priors.VampPrior", "num_pseudo_inputs": 200})
    raw = model.prior.raw_pseudo_inputs
    assert raw.shape == (200, 1, 8, 8)
    assert raw.mean().item() == pytest.approx(0.05, abs=1e-3) and raw.std().item() == pytest.approx(0.01, rel=0.05)
    with torch.no_grad():
        raw.uniform_(-1.0, 2.0)
    u = model.prior.pseudo_inputs
    assert u.min() == 0 and u.max() == 1 and torch.equal(u[(raw > 0) & (raw < 1)], raw[(raw > 0) & (raw < 1)])
    model(torch.rand(8, 1, 8, 8)).kl.mean().backward()
    assert raw.grad is not None and raw.grad.abs().sum() > 0


def test_samples_pick_a_component_uniformly_and_draw_from_it(monkeypatch):
    """Two far-apart components of standard deviations 0.5 and 2: half the draws each, each with its spread.
    Injected: log σ² used as σ; always the first component: both caught."""
    model = vamp_model(2, latent_dim=2)
    mu = torch.tensor([[-20.0, -20.0], [20.0, 20.0]], dtype=torch.float64)
    logvar = torch.log(torch.tensor([[0.25, 0.25], [4.0, 4.0]], dtype=torch.float64))
    monkeypatch.setattr(model.prior, "components", lambda m: (mu, logvar))
    z = model.prior_sample(20000, torch.Generator().manual_seed(0))
    left = z[:, 0] < 0
    assert left.double().mean().item() == pytest.approx(0.5, abs=0.015)  # sd 0.0035
    assert z[left].std(0).tolist() == pytest.approx([0.5, 0.5], rel=0.05)
    assert z[~left].std(0).tolist() == pytest.approx([2.0, 2.0], rel=0.05)
    assert torch.equal(z, model.prior_sample(20000, torch.Generator().manual_seed(0)))  # seeded: the same draws


# ====================================================================================== the bound on both
def iaf_model(latent_dim: int = 3) -> Autoencoder:
    torch.manual_seed(0)
    code = {"_target_": "vaelab.models.flow_code.IAFCode", "steps": 2, "hidden_dims": [8], "context_dim": 2}
    return Autoencoder([1, 4, 4], latent_dim, code=code, net=SMALL_NET).double()


@pytest.mark.parametrize("make", [lambda: vamp_model(4), iaf_model], ids=["vamp", "iaf"])
def test_l1_is_the_elbo_and_lk_is_tighter_on_both(make):
    """The importance-weighted bound of eval.py runs on both: L_1's mean equals the mean ELBO of the forward pass,
    and L_20 lies above it. Injected: the IAF's forward KL taken as the closed-form KL of z_0 (the Gaussian code's)
    instead of log q(z_T|x) − log p(z_T); the VampPrior dropped from latent_draws (N(0, I) used): both caught by
    L_1 ≠ ELBO."""
    model = make().eval()
    image = torch.rand(1, 1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    x = image.expand(20000, -1, -1, -1)
    torch.manual_seed(7)
    with torch.no_grad():
        elbo = model(x).elbo
        l1 = importance_weighted_bound(model, x, 1)
        l20 = importance_weighted_bound(model, x[:2000], 20)
    se = math.hypot(elbo.std().item(), l1.std().item()) / math.sqrt(20000)
    assert l1.mean().item() == pytest.approx(elbo.mean().item(), abs=4 * se)
    assert l20.mean().item() > l1.mean().item() + 10 * se


# ====================================================================================== bad settings
@pytest.mark.parametrize(("prior", "match"), [
    ({"num_pseudo_inputs": 0}, r"model.prior.num_pseudo_inputs = 0 is invalid: it must be an integer >= 1"),
    ({"num_pseudo_inputs": -3}, r"model.prior.num_pseudo_inputs = -3 is invalid"),
    ({"num_pseudo_inputs": 2.5}, r"model.prior.num_pseudo_inputs = 2.5 is invalid"),
    ({"init_std": -0.1}, r"model.prior.init_std = -0.1 is invalid: it must be a finite number >= 0"),
    ({"init_mean": float("nan")}, r"model.prior.init_mean = nan is invalid"),
])
def test_bad_vampprior_settings_are_refused_naming_the_key(prior, match):
    with pytest.raises(ConfigError, match=match):
        Autoencoder([1, 4, 4], 3, net=SMALL_NET, prior={"_target_": "vaelab.models.priors.VampPrior", **prior})


def test_a_vampprior_needs_the_gaussian_code():
    code = {"_target_": "vaelab.models.flow_code.IAFCode", "hidden_dims": [4]}
    with pytest.raises(ConfigError, match=r"model.prior \(a VampPrior\) needs model.code=gaussian, not a IAFCode"):
        Autoencoder([1, 4, 4], 3, code=code, net=SMALL_NET, prior={"_target_": "vaelab.models.priors.VampPrior"})
    with pytest.raises(ValueError, match="model.prior needs a code with a posterior density"):
        Autoencoder([1, 4, 4], 3, code={"_target_": "vaelab.models.codes.PointCode"}, net=SMALL_NET,
                    prior={"_target_": "vaelab.models.priors.VampPrior"})


@pytest.mark.parametrize(("setting", "latent_dim", "match"), [
    ({"steps": -1}, 3, r"model.code.steps = -1 is invalid: it must be an integer >= 0"),
    ({"steps": 1.5}, 3, r"model.code.steps = 1.5 is invalid"),
    ({"context_dim": -2}, 3, r"model.code.context_dim = -2 is invalid: it must be an integer >= 0"),
    ({"hidden_dims": []}, 3, r"model.code.hidden_dims = \[\] is invalid"),
    ({"hidden_dims": [8, 0]}, 3, r"model.code.hidden_dims = \[8, 0\] is invalid"),
    ({}, 1, r"model.latent_dim = 1 is invalid with model.code=iaf"),
])
def test_bad_iaf_settings_are_refused_naming_the_key(setting, latent_dim, match):
    code = {"_target_": "vaelab.models.flow_code.IAFCode", **setting}
    with pytest.raises(ConfigError, match=match):
        Autoencoder([1, 4, 4], latent_dim, code=code, net=SMALL_NET)


def test_a_bad_setting_stops_training_before_it_starts_naming_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"model.prior.num_pseudo_inputs = 0"):
        train(compose_train(tmp_path, ["model=vamp_vae", "data=digits", "model.prior.num_pseudo_inputs=0",
                                       "logger=none", "callbacks=minimal"]))
    with pytest.raises(ConfigError, match=r"model.code.steps = -1"):
        train(compose_train(tmp_path, ["model=iaf_vae", "data=digits", "model.code.steps=-1", "logger=none",
                                       "callbacks=minimal"]))


# ====================================================================================== through the real config
@pytest.mark.parametrize(("preset", "settings"), [
    ("vamp_vae", ["model.prior.num_pseudo_inputs=50", "model.beta_schedule.warmup_steps=3"]),
    ("iaf_vae", ["model.code.hidden_dims=[64,64]"]),
])
def test_each_family_trains_through_the_config_evaluates_and_samples(tmp_path, preset, settings):
    """One epoch of a few batches on the digits, eval.py's −L_K on the checkpoint, and samples from the loaded
    model's prior."""
    from vaelab.models.checkpoint import load

    train(compose_train(tmp_path, [f"model={preset}", "data=digits", "model.latent_dim=4", "callbacks=minimal",
                                   "logger=none", *settings]))
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["status"] == "completed"
    for split in ("train", "val", "test"):
        for term in ("loss", "recon", "kl", "elbo"):
            assert math.isfinite(record[split][f"{split}/{term}"]), (split, term)
    val = record["val"]
    assert val["val/elbo"] == pytest.approx(-(val["val/recon"] + val["val/kl"]), rel=1e-5)
    run_evaluation(compose_eval(tmp_path, [f"ckpt_path={record['test_ckpt']}", "iw_k=20"]))
    evaluated = json.loads((tmp_path / "eval" / "metrics.json").read_text())["test"]
    assert math.isfinite(evaluated["test/neg_iw_bound"])
    assert evaluated["test/neg_iw_bound"] < evaluated["test/neg_elbo"]
    model = load(record["test_ckpt"])
    samples = model.sample(4, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (4, 1, 8, 8) and 0 <= samples.min() and samples.max() <= 1
    assert isinstance(model.prior, VampPrior) if preset == "vamp_vae" else isinstance(model.code, IAFCode)
