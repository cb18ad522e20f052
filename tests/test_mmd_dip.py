"""The MMD families (WAE-MMD, InfoVAE) and DIP-VAE: the kernels and the unbiased MMD² estimator against the closed
form for two Gaussians, DIP-VAE's penalties on a known covariance, the InfoVAE's reductions, the refused settings,
and a one-epoch training of each through the real config. Each test names the plausible wrong version it catches."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import compose_train

from vaelab.errors import ConfigError
from vaelab.models.checkpoint import load
from vaelab.models.kernels import CodeKernel, imq, mmd_batch_problems, mmd_unbiased, rbf, squared_distances
from vaelab.models.objectives.base import DataFacts
from vaelab.models.objectives.dip_vae import DIPVAE, batch_covariance
from vaelab.models.objectives.infovae import InfoVAE
from vaelab.models.objectives.wae import WAE
from vaelab.models.output import AutoencoderOutput
from vaelab.models.schedules import ConstantBeta, LinearWarmup
from vaelab.rules import validate_config
from vaelab.tasks.train import train


# ---------------------------------------------------------------------------------------------------- the maths
def gaussian_rbf_mean(delta: torch.Tensor, s: float, l2: float) -> float:
    """E exp(−‖x − y‖²/(2ℓ²)) for x − y ~ N(Δ, s I) in d dimensions: (ℓ²/(ℓ² + s))^{d/2} exp(−‖Δ‖²/(2(ℓ² + s)))."""
    d = delta.numel()
    return (l2 / (l2 + s)) ** (d / 2) * math.exp(-float(delta.pow(2).sum()) / (2 * (l2 + s)))


def gaussian_mmd2(mu1, var1, mu2, var2, l2) -> float:
    """MMD² of N(μ1, σ1² I) and N(μ2, σ2² I) under the RBF kernel of length scale ℓ, in closed form."""
    zero = torch.zeros_like(mu1)
    return (gaussian_rbf_mean(zero, 2 * var1, l2) + gaussian_rbf_mean(zero, 2 * var2, l2)
            - 2 * gaussian_rbf_mean(mu1 - mu2, var1 + var2, l2))


def mmd_biased(x, y, kernel):
    """The V-statistic (every pair, diagonals included): what the unbiased estimator must not be."""
    return kernel(x, x).mean() + kernel(y, y).mean() - 2 * kernel(x, y).mean()


def repeated(estimator, n_repeats, m, mu1, var1, mu2, var2, kernel, seed=0):
    g = torch.Generator().manual_seed(seed)
    d = mu1.numel()
    x = mu1 + math.sqrt(var1) * torch.randn(n_repeats, m, d, generator=g, dtype=torch.float64)
    y = mu2 + math.sqrt(var2) * torch.randn(n_repeats, m, d, generator=g, dtype=torch.float64)
    return torch.stack([estimator(x[r], y[r], kernel) for r in range(n_repeats)])


MU1, MU2 = torch.tensor([0.0, 0.0], dtype=torch.float64), torch.tensor([1.0, -0.5], dtype=torch.float64)
VAR1, VAR2, L2 = 1.0, 0.5, 1.5


def rbf_l2(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return rbf(a, b, L2)


def test_the_kernels_have_their_known_values():
    # (catches: the RBF's exponent without the 2 (exp(−r²/ℓ²)); the IMQ as 1/(C + r²); C = d instead of 2d)
    x, y = torch.tensor([[0.0, 0.0]]), torch.tensor([[3.0, 4.0]])
    assert squared_distances(x, y).item() == pytest.approx(25.0)
    assert rbf(x, y, 12.5).item() == pytest.approx(math.exp(-1.0))
    assert imq(x, y, 25.0).item() == pytest.approx(0.5)
    # C = 2 * d * 1 = 4 for d = 2; scales [1, 2] sum the kernel at C = 4 and C = 8
    assert CodeKernel("imq", [1.0, 2.0])(x, y).item() == pytest.approx(4 / 29 + 8 / 33)
    assert CodeKernel("rbf", [1.0])(x, y).item() == pytest.approx(math.exp(-25 / 4))


def test_the_mmd_of_two_gaussians_matches_its_closed_form_on_a_large_sample():
    # Monte-Carlo agreement; (catches: the cross term weighted 1 instead of 2, a wrong kernel width)
    kernel = rbf_l2
    g = torch.Generator().manual_seed(1)
    x = MU1 + math.sqrt(VAR1) * torch.randn(3000, 2, generator=g, dtype=torch.float64)
    y = MU2 + math.sqrt(VAR2) * torch.randn(3000, 2, generator=g, dtype=torch.float64)
    exact = gaussian_mmd2(MU1, VAR1, MU2, VAR2, L2)
    assert exact > 0.1
    assert mmd_unbiased(x, y, kernel).item() == pytest.approx(exact, abs=0.01)


def test_the_mmd_estimator_is_unbiased_where_the_v_statistic_is_not():
    # many estimates from 4 points a side: their mean is the closed form; the V-statistic's is off by about
    # (1 − E k(x, x'))/m + (1 − E k(y, y'))/n. (catches: the diagonal kept in the within-sample sums, or those sums
    # divided by m² instead of m(m − 1))
    kernel = rbf_l2
    exact = gaussian_mmd2(MU1, VAR1, MU2, VAR2, L2)
    unbiased = repeated(mmd_unbiased, 4000, 4, MU1, VAR1, MU2, VAR2, kernel)
    biased = repeated(mmd_biased, 4000, 4, MU1, VAR1, MU2, VAR2, kernel)
    se = unbiased.std().item() / math.sqrt(len(unbiased))
    assert abs(unbiased.mean().item() - exact) < 4 * se
    assert abs(biased.mean().item() - exact) > 20 * se


def test_the_mmd_of_equal_distributions_is_zero_on_average_and_can_be_negative():
    # (catches: a biased estimator, which is never negative, or an MMD clamped at 0)
    kernel = rbf_l2
    estimates = repeated(mmd_unbiased, 2000, 8, MU1, VAR1, MU1, VAR1, kernel, seed=3)
    se = estimates.std().item() / math.sqrt(len(estimates))
    assert abs(estimates.mean().item()) < 4 * se
    assert (estimates < 0).float().mean() > 0.3


def test_the_mmd_needs_two_points_a_side():
    with pytest.raises(ValueError, match="at least 2 points"):
        mmd_unbiased(torch.zeros(1, 2), torch.zeros(3, 2), rbf_l2)


# ---------------------------------------------------------------------------------------------------- WAE, InfoVAE
def output(z, recon, kl=None, mu=None, logvar=None) -> AutoencoderOutput:
    b = z.shape[0]
    return AutoencoderOutput(x_out=torch.zeros(b, 1, 2, 2), z=z, mu=z if mu is None else mu, logvar=logvar,
                             recon=recon, kl=torch.zeros(b) if kl is None else kl)


def test_the_wae_penalty_is_the_mmd_of_the_codes_and_standard_normal_draws():
    # with the RBF kernel (2ℓ² = C = 2d, so ℓ² = d) the mean of the WAE's MMD term over many batches is the closed
    # form of MMD²(N(Δ, σ² I), N(0, I)). (catches: prior draws that are not N(0, I), e.g. torch.rand, or of
    # another variance; a kernel sized on the wrong C)
    torch.manual_seed(0)
    wae = WAE(kernel="rbf", scales=[1.0], schedule=ConstantBeta(10.0))
    d, var = 2, 0.5
    delta = torch.tensor([0.8, 0.0])
    recon = torch.full((16,), 3.0)
    values = []
    for _ in range(1500):
        z = delta + math.sqrt(var) * torch.randn(16, d)
        value = wae(None, None, output(z, recon), 0)
        assert value.loss.item() == pytest.approx(3.0 + 10.0 * value.terms["mmd"].item(), rel=1e-5)
        values.append(value.terms["mmd"].item())
    values = torch.tensor(values, dtype=torch.float64)
    exact = gaussian_mmd2(delta.double(), var, torch.zeros(d, dtype=torch.float64), 1.0, float(d))
    se = values.std().item() / math.sqrt(len(values))
    assert abs(values.mean().item() - exact) < 4 * se
    assert exact > 10 * se  # (the test can tell the codes' distribution from the prior's)


def test_infovae_with_alpha_0_and_lambda_1_is_the_elbo_and_with_alpha_1_drops_the_kl():
    # (Zhao et al. 2019, eq. 6: weights 1 − α on the KL and α + λ − 1 on the MMD.) (catches: the MMD weighted
    # α + λ (the ELBO case would add an MMD), the KL weighted 1 + α or α)
    torch.manual_seed(0)
    z, recon, kl = torch.randn(8, 3) + 2.0, torch.rand(8) * 5, torch.rand(8)
    elbo_case = InfoVAE(alpha=0.0, schedule=ConstantBeta(1.0))(None, None, output(z, recon, kl), 0)
    assert elbo_case.terms["mmd"].abs().item() > 1e-3  # (codes far from the prior: the MMD is there, weighted 0)
    assert elbo_case.loss.item() == pytest.approx((recon + kl).mean().item(), rel=1e-6)
    no_kl = InfoVAE(alpha=1.0, schedule=ConstantBeta(1.0))(None, None, output(z, recon, kl), 0)
    assert no_kl.loss.item() == pytest.approx(recon.mean().item() + no_kl.terms["mmd"].item(), rel=1e-6)
    mmd_vae = InfoVAE(alpha=0.0, schedule=ConstantBeta(1000.0))(None, None, output(z, recon, kl), 0)
    assert mmd_vae.loss.item() == pytest.approx((recon + kl).mean().item() + 999 * mmd_vae.terms["mmd"].item(),
                                                rel=1e-5)


# ---------------------------------------------------------------------------------------------------- DIP-VAE
def with_covariance(cov: torch.Tensor, b: int = 8, offset: float = 3.0, seed: int = 0) -> torch.Tensor:
    """A batch of b means whose empirical covariance (1/b) is exactly ``cov`` and whose mean is ``offset``."""
    g = torch.Generator().manual_seed(seed)
    raw = torch.randn(b, cov.shape[0], generator=g, dtype=torch.float64)
    raw = raw - raw.mean(dim=0)
    white = raw @ torch.linalg.inv(torch.linalg.cholesky(raw.T @ raw / b)).T
    return offset + white @ torch.linalg.cholesky(cov).T


COV = torch.tensor([[2.0, 0.5, 0.0], [0.5, 1.0, -0.3], [0.0, -0.3, 0.5]], dtype=torch.float64)


def test_the_batch_covariance_of_constructed_means_is_the_prescribed_one():
    # (catches: the unbiased 1/(B − 1) covariance, which is B/(B − 1) = 8/7 of it; forgetting to centre)
    assert torch.allclose(batch_covariance(with_covariance(COV)), COV, atol=1e-10)


@pytest.mark.parametrize("kind", ["i", "ii"])
def test_the_dip_penalty_on_a_known_covariance(kind):
    # DIP-VAE-I penalises C = COV (eq. 6), DIP-VAE-II C = COV + diag(mean σ²) (eq. 7), here σ² = 0.25 everywhere.
    # off = Σ_{i≠j} C_ij² = 2(0.5² + 0.3²) = 0.68. (catches: the diagonal counted off the diagonal; II without
    # E[Σ(x)], or with σ instead of σ²; λ_d and λ_od swapped)
    mu = with_covariance(COV)
    logvar = torch.full_like(mu, math.log(0.25))
    cov = COV + (0.25 * torch.eye(3, dtype=torch.float64) if kind == "ii" else 0)
    expected_diag = float(((cov.diagonal() - 1) ** 2).sum())
    dip = DIPVAE(kind=kind, lambda_od=2.0, lambda_d=5.0, schedule=ConstantBeta(1.0))
    recon, kl = torch.full((8,), 7.0, dtype=torch.float64), torch.full((8,), 1.5, dtype=torch.float64)
    value = dip(None, None, output(mu, recon, kl, mu=mu, logvar=logvar), 0)
    assert value.terms["dip_offdiag"].item() == pytest.approx(0.68)
    assert value.terms["dip_diag"].item() == pytest.approx(expected_diag)
    assert value.terms["dip_penalty"].item() == pytest.approx(2.0 * 0.68 + 5.0 * expected_diag)
    assert value.loss.item() == pytest.approx(7.0 + 1.5 + 2.0 * 0.68 + 5.0 * expected_diag)


def test_the_dip_penalty_is_zero_for_decorrelated_codes_of_unit_variance():
    # the limit case: C = I. (catches: (C_ii − 1)² written as C_ii² or (C_ii − 1))
    mu = with_covariance(torch.eye(4, dtype=torch.float64), b=16)
    value = DIPVAE(kind="i")(None, None, output(mu, torch.zeros(16), mu=mu, logvar=torch.zeros_like(mu)), 0)
    assert value.terms["dip_penalty"].item() == pytest.approx(0.0, abs=1e-9)


def test_dip_vae_takes_the_papers_diagonal_weight_by_default():
    # (Kumar et al. 2018: λ_d = 10 λ_od for DIP-VAE-I, λ_d = λ_od for DIP-VAE-II)
    assert DIPVAE(kind="i", lambda_od=3.0).lambda_d == 30.0
    assert DIPVAE(kind="ii", lambda_od=3.0).lambda_d == 3.0
    assert DIPVAE(kind="ii", lambda_od=3.0, lambda_d=0.5).lambda_d == 0.5


# ---------------------------------------------------------------------------------------------------- settings
@pytest.mark.parametrize(("build", "key"), [
    (lambda: DIPVAE(kind="iii"), "model.objective.kind = 'iii'"),
    (lambda: DIPVAE(lambda_od=-1), "model.objective.lambda_od = -1"),
    (lambda: DIPVAE(lambda_d=-2.0), "model.objective.lambda_d = -2.0"),
    (lambda: WAE(kernel="laplace"), "model.objective.kernel = 'laplace'"),
    (lambda: WAE(scales=[1.0, 0.0]), r"model.objective.scales = \[1.0, 0.0\]"),
    (lambda: WAE(scales=[]), r"model.objective.scales = \[\]"),
    (lambda: InfoVAE(scales=[-1.0]), r"model.objective.scales = \[-1.0\]"),
    (lambda: InfoVAE(alpha=1.5), "model.objective.alpha = 1.5"),
    (lambda: InfoVAE(alpha=0.0, schedule=ConstantBeta(0.5)), "model.beta = 0.5"),
    (lambda: InfoVAE(alpha=0.0, schedule=LinearWarmup(1000.0, start=0.0)), "model.beta = 1000.0"),
    (lambda: WAE(schedule=ConstantBeta(-1.0)), "model.beta = -1.0"),
])
def test_bad_settings_are_refused_naming_the_key(build, key):
    with pytest.raises(ConfigError, match=key):
        build()


def test_a_negative_lambda_is_refused_before_anything_is_built(tmp_path):
    cfg = compose_train(tmp_path, ["model=wae", "model.beta=-1"])
    with pytest.raises(ConfigError, match=r"model.beta = -1"):
        validate_config(cfg)


def test_batches_that_leave_one_code_for_the_mmd_are_refused_naming_the_key():
    # 33 training images in batches of 32 leave one code: no pair for the MMD. (catches: checking only the batch
    # size, not the last batch; suggesting a size that also leaves one)
    facts = DataFacts(33, {"train": 32, "val": 16, "test": 16}, {"train": (33,), "val": (20,), "test": (20,)})
    with pytest.raises(ConfigError, match=r"data.batch_size = 32 is invalid for the WAE here") as caught:
        WAE().bind(facts)
    assert "data.eval_batch_size" not in str(caught.value)
    suggested = int(str(caught.value).rsplit("data.batch_size=", 1)[1].split()[0])
    assert 33 % suggested != 1
    assert mmd_batch_problems("InfoVAE", {"train": 1}, {"train": (10,)})[0].startswith("data.batch_size = 1 is")
    assert mmd_batch_problems("InfoVAE", {"train": 32}, {"train": (64,)}) == []


# ---------------------------------------------------------------------------------------------- through the config
@pytest.mark.parametrize(("overrides", "terms", "has_kl"), [
    (["model=wae"], ("mmd",), False),
    (["model=infovae"], ("mmd",), True),
    (["model=dip_vae"], ("dip_penalty", "dip_offdiag", "dip_diag"), True),
    (["model=dip_vae", "model.objective.kind=ii"], ("dip_penalty", "dip_offdiag", "dip_diag"), True),
])
def test_each_family_trains_a_epoch_and_logs_its_terms(tmp_path, overrides, terms, has_kl):
    cfg = compose_train(tmp_path, [*overrides, "data=digits", "model.latent_dim=4", "callbacks=minimal",
                                   "logger=none"])
    train(cfg)
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["status"] == "completed"
    for split in ("train", "val"):
        assert {f"{split}/{name}" for name in ("loss", "recon", *terms)} <= set(record[split])
        assert (f"{split}/kl" in record[split]) == has_kl
        assert all(math.isfinite(record[split][f"{split}/{name}"]) for name in terms)
    if overrides == ["model=wae"]:
        model = load(record["test_ckpt"])
        images = model.sample(4, generator=torch.Generator().manual_seed(0))
        assert images.shape == (4, 1, 8, 8)
        assert torch.isfinite(images).all()
