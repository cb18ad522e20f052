"""The objectives of vaelab.models.objectives beyond the ELBO: β-TC-VAE's decomposition and IWAE's bound, by their
known values, limit cases and Monte-Carlo agreement; and every model config trains through the real Hydra config."""

from __future__ import annotations

import itertools
import json
import math
import types

import pytest
import torch
from conftest import compose_eval, compose_train

from vaelab.models.distributions import (
    kl_to_standard_normal,
    normal_log_prob_per_dimension,
    standard_normal_log_prob,
)
from vaelab.models.objectives import BetaTCVAE, DataFacts, tc_decomposition
from vaelab.models.schedules import ConstantBeta
from vaelab.tasks.evaluate import run_evaluation
from vaelab.tasks.train import train
from vaelab.training import AutoencoderModule

DTYPE = torch.float64


def one_sample_kl(z, mu, logvar):
    """log q(z|x) − log p(z) per image: the Monte-Carlo form of the KL that the three terms split."""
    return normal_log_prob_per_dimension(z, mu, logvar).sum(-1) - standard_normal_log_prob(z)


def posterior(batch=64, dim=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(batch, dim, generator=g, dtype=DTYPE)
    logvar = torch.randn(batch, dim, generator=g, dtype=DTYPE).mul(0.3).sub(1.0)
    z = mu + (0.5 * logvar).exp() * torch.randn(batch, dim, generator=g, dtype=DTYPE)
    return z, mu, logvar


# ----------------------------------------------------------------------------------------------------- β-TC-VAE


@pytest.mark.parametrize("sampling", ["mws", "stratified"])
@pytest.mark.parametrize("dataset_size", [64, 60_000])
def test_the_three_terms_sum_to_the_one_sample_kl(sampling, dataset_size):
    z, mu, logvar = posterior()
    terms = tc_decomposition(z, mu, logvar, dataset_size, sampling)
    total = terms["mi"] + terms["tc"] + terms["dw_kl"]
    torch.testing.assert_close(total, one_sample_kl(z, mu, logvar).mean())


def test_the_one_sample_kl_agrees_with_the_closed_form_kl_in_expectation():
    """So the sum of the three terms is the usual KL up to Monte-Carlo noise: many draws of z per posterior."""
    _, mu, logvar = posterior(batch=16, dim=3)
    g = torch.Generator().manual_seed(1)
    draws = 4000
    eps = torch.randn(draws, *mu.shape, generator=g, dtype=DTYPE)
    z = mu + (0.5 * logvar).exp() * eps
    per_draw = one_sample_kl(z, mu, logvar).mean(-1)  # (draws,)
    error = (per_draw.mean() - kl_to_standard_normal(mu, logvar).mean()).abs()
    assert error < 4 * per_draw.std() / math.sqrt(draws)


def grid_posteriors(correlated: bool, sigma: float = 0.3):
    """Posterior means on a product grid (a factorised aggregate posterior, q(z) = q(z_1) q(z_2) exactly when the
    batch is the whole data set) or on its diagonal copy z_2 = z_1 (a correlated one)."""
    values = torch.linspace(-2, 2, 8, dtype=DTYPE)
    if correlated:
        mu = torch.stack([values.repeat(8), values.repeat(8)], dim=1)
    else:
        mu = torch.tensor(list(itertools.product(values.tolist(), values.tolist())), dtype=DTYPE)
    logvar = torch.full_like(mu, 2 * math.log(sigma))
    z = mu + sigma * torch.randn(mu.shape, generator=torch.Generator().manual_seed(2), dtype=DTYPE)
    return z, mu, logvar


def test_total_correlation_is_zero_for_a_factorised_aggregate_posterior_and_positive_for_a_correlated_one():
    z, mu, logvar = grid_posteriors(correlated=False)
    exact = tc_decomposition(z, mu, logvar, dataset_size=len(z), sampling="stratified")  # N = B: the exact mixture
    assert abs(exact["tc"].item()) < 1e-9
    z, mu, logvar = grid_posteriors(correlated=True)
    correlated = tc_decomposition(z, mu, logvar, dataset_size=len(z), sampling="stratified")
    assert correlated["tc"] > 0.5  # nats: z_2 carries z_1's information


def test_minibatch_weighted_sampling_tells_correlated_from_factorised_by_the_same_margin():
    """MWS is biased (by (D − 1)·log N against the exact mixture when the batch is the data set), but the bias is
    the same for both, so the correlated aggregate posterior still scores the higher TC, by as much."""
    factorised = tc_decomposition(*grid_posteriors(False), dataset_size=64, sampling="mws")["tc"]
    correlated = tc_decomposition(*grid_posteriors(True), dataset_size=64, sampling="mws")["tc"]
    exact_f = tc_decomposition(*grid_posteriors(False), dataset_size=64, sampling="stratified")["tc"]
    exact_c = tc_decomposition(*grid_posteriors(True), dataset_size=64, sampling="stratified")["tc"]
    torch.testing.assert_close(factorised - exact_f, torch.tensor(math.log(64), dtype=DTYPE))
    torch.testing.assert_close(correlated - factorised, exact_c - exact_f)


def test_stratified_weights_are_the_exact_mixture_when_the_batch_is_the_data_set():
    z, mu, logvar = posterior(batch=10, dim=2)
    terms = tc_decomposition(z, mu, logvar, dataset_size=10, sampling="stratified")
    pairs = normal_log_prob_per_dimension(z.unsqueeze(1), mu.unsqueeze(0), logvar.unsqueeze(0))
    log_qz = torch.logsumexp(pairs.sum(2), dim=1) - math.log(10)  # (1/N) Σ_n q(z | x_n)
    log_qz_x = normal_log_prob_per_dimension(z, mu, logvar).sum(-1)
    torch.testing.assert_close(terms["mi"], (log_qz_x - log_qz).mean())


def test_beta_tcvae_loss_weights_each_term_and_with_unit_weights_is_recon_plus_the_one_sample_kl():
    torch.manual_seed(0)
    model = AutoencoderModule(image_shape=[1, 8, 8], latent_dim=3, beta=5.0,
                              objective={"_target_": "vaelab.models.objectives.BetaTCVAE", "alpha": 2.0,
                                         "gamma": 3.0, "dataset_size": 1000})
    x = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    out = model.model_step((x,), "train")
    t = out.terms
    assert set(t) == {"mi", "tc", "dw_kl"} and out.beta == 5.0
    torch.testing.assert_close(out.loss, out.recon.mean() + 2.0 * t["mi"] + 5.0 * t["tc"] + 3.0 * t["dw_kl"])
    unit = BetaTCVAE(dataset_size=1000, schedule=ConstantBeta(1.0))
    value = unit(model.model, x, out, step=0)
    torch.testing.assert_close(value.loss, out.recon.mean() + one_sample_kl(out.z, out.mu, out.logvar).mean())
    value.loss.backward()
    assert next(model.model.encoder.parameters()).grad.abs().sum() > 0


def test_beta_tcvae_needs_the_data_set_size_and_is_handed_it():
    objective = BetaTCVAE()
    z, mu, logvar = posterior(batch=4, dim=2)
    out = types.SimpleNamespace(z=z, mu=mu, logvar=logvar, recon=torch.zeros(4))
    with pytest.raises(ValueError, match="dataset_size"):
        objective(None, torch.zeros(4, 1), out, 0)
    objective.bind(DataFacts(num_train_images=1234))
    assert int(objective.dataset_size) == 1234
    assert "dataset_size" in objective.state_dict()  # kept in the checkpoint for eval.py
    with pytest.raises(ValueError, match="sampling"):
        BetaTCVAE(sampling="importance")


# ---------------------------------------------------------------------------------------------------------- IWAE


def iwae_model(k: int) -> AutoencoderModule:
    torch.manual_seed(0)
    return AutoencoderModule(image_shape=[1, 8, 8], latent_dim=4,
                             objective={"_target_": "vaelab.models.objectives.IWAE", "k": k})


X = torch.bernoulli(torch.rand(32, 1, 8, 8, generator=torch.Generator().manual_seed(3)),
                    generator=torch.Generator().manual_seed(4))


def test_iwae_with_one_sample_is_the_elbo_objective_in_expectation():
    iwae = iwae_model(1)
    elbo = AutoencoderModule(image_shape=[1, 8, 8], latent_dim=4)
    elbo.load_state_dict(iwae.state_dict())
    draws = 300
    with torch.no_grad():
        iw = torch.stack([iwae.model_step((X,), "train").loss for _ in range(draws)])
        el = torch.stack([elbo.model_step((X,), "train").loss for _ in range(draws)])
    spread = math.sqrt(iw.var() / draws + el.var() / draws)
    assert (iw.mean() - el.mean()).abs() < 4 * spread
    assert (iw.mean() - el.mean()).abs() < 0.01 * el.mean().abs()  # and the agreement is not a wide tolerance


def test_the_iwae_bound_rises_with_k_on_a_fixed_model():
    bounds = {}
    for k in (1, 5, 50):
        model = iwae_model(k)  # the same weights for every K
        with torch.no_grad():
            draws = [model.model_step((X,), "train").terms["iw_bound"] for _ in range(20)]
            bounds[k] = torch.stack(draws).mean().item()
    assert bounds[1] < bounds[5] - 0.05 < bounds[50] - 0.1


def test_iwae_loss_is_the_negative_bound_and_trains_both_nets():
    model = iwae_model(3)
    out = model.model_step((X,), "train")
    torch.testing.assert_close(out.loss, -out.terms["iw_bound"])
    out.loss.backward()
    assert all(next(net.parameters()).grad.abs().sum() > 0 for net in (model.model.encoder, model.model.decoder))
    with pytest.raises(ValueError, match="k"):
        iwae_model(0)


# ----------------------------------------------------------------------------------------- through the config


@pytest.mark.parametrize("model,terms", [("beta_tcvae", ["mi", "tc", "dw_kl"]), ("iwae", ["iw_bound"])])
def test_new_objectives_train_log_their_terms_and_evaluate(tmp_path, model, terms):
    train(compose_train(tmp_path, [f"model={model}", "logger=none", "callbacks=minimal"]))
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    # eval.py rebuilds the objective from the checkpoint alone (β-TC-VAE's data set size included)
    run_evaluation(compose_eval(tmp_path, [f"ckpt_path={record['test_ckpt']}", "iw_k=10"]))
    scores = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert scores["status"] == "completed"
    assert scores["test"]["test/neg_elbo"] == pytest.approx(-record["test"]["test/elbo"], rel=0.05)
    assert record["status"] == "completed"
    for stage in ("train", "val", "test"):
        values = record[stage]
        for term in terms:
            assert math.isfinite(values[f"{stage}/{term}"])
        assert f"{stage}/elbo" in values and f"{stage}/kl" in values
    if model == "beta_tcvae":
        val = record["val"]
        assert val["val/mi"] + val["val/tc"] + val["val/dw_kl"] != pytest.approx(0.0)
        assert val["val/loss"] == pytest.approx(
            val["val/recon"] + val["val/mi"] + 6.0 * val["val/tc"] + val["val/dw_kl"], rel=1e-5)


def test_importance_weights_are_float32_even_for_bf16_posteriors():
    """Under bf16-mixed precision the encoder's μ may be bf16; the log weights (and so IWAE's loss) must not be
    bf16-coarse (about 0.5 nats near 100 nats)."""
    from vaelab.models.importance import log_importance_weights

    model = iwae_model(2)
    h = torch.zeros(4, 8, dtype=torch.bfloat16)  # μ and log σ² in bf16
    weights = log_importance_weights(model.model, X[:4], h, 3)
    assert weights.dtype == torch.float32 and weights.shape == (3, 4)


def test_beta_tcvae_estimates_hold_for_a_batch_larger_than_the_data_set_and_a_single_image():
    z, mu, logvar = posterior(batch=8, dim=2)
    for sampling in ("mws", "stratified"):  # eval.py's batches may outnumber a small training set
        terms = tc_decomposition(z, mu, logvar, dataset_size=5, sampling=sampling)
        torch.testing.assert_close(terms["mi"] + terms["tc"] + terms["dw_kl"], one_sample_kl(z, mu, logvar).mean())
    single = tc_decomposition(z[:1], mu[:1], logvar[:1], dataset_size=1, sampling="stratified")
    assert abs(single["mi"].item()) < 1e-9 and abs(single["tc"].item()) < 1e-9
