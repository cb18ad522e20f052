"""MIWAE, CIWAE and PIWAE (Rainforth et al. 2018): each bound against IWAE's and the ELBO's on the same draws, in its
limit cases; PIWAE's two gradients against the gradients of its two bounds; bad settings; and a training run of each
through the real config."""

from __future__ import annotations

import json
import math
import types

import pytest
import torch
from conftest import compose_eval, compose_train

from vaelab.errors import ConfigError
from vaelab.models.autoencoder import Autoencoder
from vaelab.models.importance import importance_weighted_bound, log_importance_weights
from vaelab.models.objectives.ciwae import CIWAE, combined_bound
from vaelab.models.objectives.miwae import MIWAE, grouped_bound
from vaelab.models.objectives.piwae import PIWAE
from vaelab.models.schedules import ConstantBeta, LinearWarmup
from vaelab.tasks.evaluate import run_evaluation
from vaelab.tasks.train import train

X = torch.bernoulli(torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(3)),
                    generator=torch.Generator().manual_seed(4))
SEED = 7


def tiny_model() -> Autoencoder:
    torch.manual_seed(0)
    return Autoencoder([1, 8, 8], latent_dim=4)


def run(objective, model, seed=SEED):
    """The objective's value on X with the global RNG seeded, so another call with the same seed draws the same z."""
    torch.manual_seed(seed)
    return objective(model, X, types.SimpleNamespace(features=model.features(X)), 0)


def seeded(fn, model, seed=SEED):
    """``fn(model, X, h)`` with the global RNG seeded as :func:`run` seeds it."""
    torch.manual_seed(seed)
    return fn(model, X, model.features(X))


# ---------------------------------------------------------------------------------------------------------- MIWAE
def test_the_grouped_bound_is_the_mean_of_the_groups_iwae_bounds():
    m, k = 3, 4
    log_w = torch.randn(m * k, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 3
    expected = torch.stack([torch.logsumexp(log_w[i * k:(i + 1) * k], 0) - math.log(k) for i in range(m)]).mean(0)
    torch.testing.assert_close(grouped_bound(log_w, m, k), expected)
    # equal weights: every bound is their log weight, whatever M and K
    torch.testing.assert_close(grouped_bound(torch.full((m * k, 2), -3.0), m, k), torch.full((2,), -3.0))
    with pytest.raises(ValueError, match="M·K = 12"):
        grouped_bound(log_w[:-1], m, k)


def test_miwae_with_one_group_is_iwae_on_the_same_draws():
    model = tiny_model()
    value = run(MIWAE(m=1, k=5), model)
    iwae = seeded(lambda mod, x, h: importance_weighted_bound(mod, x, h, 5).mean(), model)
    torch.testing.assert_close(value.loss, -iwae)
    torch.testing.assert_close(value.terms["iw_bound"], iwae)  # L_{M·K} = L_K when M = 1


def test_miwae_with_one_draw_per_group_is_the_m_draw_elbo():
    model = tiny_model()
    value = run(MIWAE(m=6, k=1), model)
    elbo = seeded(lambda mod, x, h: log_importance_weights(mod, x, h, 6).mean(0).mean(), model)
    torch.testing.assert_close(value.loss, -elbo)


def test_miwae_lies_between_the_elbo_and_the_iwae_bound_of_all_its_draws():
    model = tiny_model()
    with torch.no_grad():
        value = run(MIWAE(m=4, k=3), model)
        iw_all = seeded(lambda mod, x, h: importance_weighted_bound(mod, x, h, 12).mean(), model)
        elbo = seeded(lambda mod, x, h: log_importance_weights(mod, x, h, 12).mean(0).mean(), model)
    torch.testing.assert_close(value.terms["iw_bound"], iw_all)  # the logged L_{M·K}, on the same draws
    torch.testing.assert_close(value.terms["miwae_bound"], -value.loss)
    # Jensen, draw by draw: ELBO < (1/M) Σ_m L_K^(m) < L_{M·K}, by margins well above round-off
    assert elbo + 0.1 < value.terms["miwae_bound"] < iw_all - 0.1


# ---------------------------------------------------------------------------------------------------------- CIWAE
@pytest.mark.parametrize("beta", [0.0, 1.0])
def test_ciwae_is_iwae_at_beta_0_and_the_k_draw_elbo_at_beta_1(beta):
    model = tiny_model()
    value = run(CIWAE(k=5, schedule=ConstantBeta(beta)), model)
    iwae = seeded(lambda mod, x, h: importance_weighted_bound(mod, x, h, 5).mean(), model)
    elbo = seeded(lambda mod, x, h: log_importance_weights(mod, x, h, 5).mean(0).mean(), model)
    torch.testing.assert_close(value.loss, -(elbo if beta == 1.0 else iwae))
    torch.testing.assert_close(value.terms["iw_bound"], iwae)
    torch.testing.assert_close(value.terms["mc_elbo"], elbo)
    assert elbo < iwae - 0.1  # the two limits differ, so each comparison above tells them apart


def test_ciwae_mixes_the_two_bounds_linearly_and_follows_its_schedule():
    log_w = torch.randn(6, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 2
    parts = combined_bound(log_w, 0.25)
    torch.testing.assert_close(parts["ciwae_bound"], 0.25 * log_w.mean(0) + 0.75 * (log_w.logsumexp(0) - math.log(6)))
    model = tiny_model()
    ciwae = CIWAE(k=4, schedule=LinearWarmup(beta=1.0, warmup_steps=10, start=0.0))
    for step, limit in ((0, "iw_bound"), (10, "mc_elbo")):  # β(0) = 0: IWAE; β(10) = 1: the ELBO
        torch.manual_seed(SEED)
        value = ciwae(model, X, types.SimpleNamespace(features=model.features(X)), step)
        torch.testing.assert_close(value.loss, -value.terms[limit])
    assert ciwae.weights(5) == {"beta": 0.5}


# ---------------------------------------------------------------------------------------------------------- PIWAE
def decoder_and_encoder_grads(loss, model):
    """d loss / d (decoder's weights), d loss / d (encoder's weights)."""
    decoder, encoder = list(model.decoder.parameters()), list(model.encoder.parameters())
    found = torch.autograd.grad(loss, decoder + encoder)
    return found[:len(decoder)], found[len(decoder):]


def test_piwae_gives_the_decoder_iwaes_gradient_and_the_encoder_miwaes():
    m, k = 4, 2
    model = tiny_model()
    value = run(PIWAE(m=m, k=k), model)
    value.loss.backward()
    # the references, each on the same draws (the same seed): −L_{M·K} and −MIWAE(M, K), differentiated by autograd
    iw = seeded(lambda mod, x, h: importance_weighted_bound(mod, x, h, m * k).mean(), model)
    miwae = -run(MIWAE(m=m, k=k), model).loss
    iw_dec, iw_enc = decoder_and_encoder_grads(-iw, model)
    mi_dec, mi_enc = decoder_and_encoder_grads(-miwae, model)

    torch.testing.assert_close(value.loss, -iw)  # the logged loss is −L_{M·K}, and its terms the two bounds
    torch.testing.assert_close(value.terms["iw_bound"], iw.detach())
    torch.testing.assert_close(value.terms["miwae_bound"], miwae.detach())
    for p, want in zip(model.decoder.parameters(), iw_dec, strict=True):
        torch.testing.assert_close(p.grad, want)
    for p, want in zip(model.encoder.parameters(), mi_enc, strict=True):
        torch.testing.assert_close(p.grad, want)
    # the two references differ on each side, so the checks above tell the bounds apart
    assert max((a - b).abs().max() for a, b in zip(iw_dec, mi_dec, strict=True)) > 1e-3
    assert max((a - b).abs().max() for a, b in zip(iw_enc, mi_enc, strict=True)) > 1e-3


def test_piwae_refuses_a_model_whose_prior_has_parameters():
    model = tiny_model()
    model.prior = torch.nn.Linear(1, 1)  # (a stand-in: anything but None)
    with pytest.raises(ConfigError, match="model.prior"):
        run(PIWAE(m=2, k=2), model)


# ---------------------------------------------------------------------------------------------------- bad settings
@pytest.mark.parametrize(("build", "message"), [
    (lambda: MIWAE(m=0, k=4), "model.objective.m = 0 is invalid"),
    (lambda: MIWAE(m=2, k=0), "model.objective.k = 0 is invalid"),
    (lambda: MIWAE(m=2.5, k=4), "model.objective.m = 2.5 is invalid"),
    (lambda: PIWAE(m=-1, k=4), "model.objective.m = -1 is invalid"),
    (lambda: PIWAE(m=2, k=0), "model.objective.k = 0 is invalid"),
    (lambda: CIWAE(k=0), "model.objective.k = 0 is invalid"),
    (lambda: CIWAE(k=4, schedule=ConstantBeta(1.5)),
     r"model.beta = 1.5 is invalid for CIWAE: it must be a number in \[0, 1\]"),
    (lambda: CIWAE(k=4, schedule=LinearWarmup(beta=0.5, start=2.0)), "model.beta_schedule.start = 2.0 is invalid"),
])
def test_bad_settings_name_their_key(build, message):
    with pytest.raises(ConfigError, match=message):
        build()


def test_a_bad_setting_stops_training_through_the_config(tmp_path):
    with pytest.raises(ConfigError, match="model.objective.m = 0 is invalid"):
        train(compose_train(tmp_path, ["model=miwae", "model.objective.m=0", "logger=none", "callbacks=minimal"]))
    with pytest.raises(ConfigError, match="model.beta = 2.0 is invalid for CIWAE"):
        train(compose_train(tmp_path, ["model=ciwae", "model.beta=2.0", "logger=none", "callbacks=minimal"]))


# ----------------------------------------------------------------------------------------- through the config
@pytest.mark.parametrize(("preset", "settings", "terms"), [
    ("miwae", ["model.objective.m=2", "model.objective.k=3"], ("miwae_bound", "iw_bound")),
    ("ciwae", ["model.objective.k=4"], ("ciwae_bound", "iw_bound", "mc_elbo", "beta")),
    ("piwae", ["model.objective.m=2", "model.objective.k=3"], ("iw_bound", "miwae_bound")),
])
def test_each_variant_trains_logs_its_bounds_and_evaluates(tmp_path, preset, settings, terms):
    train(compose_train(tmp_path, [f"model={preset}", "data=digits", "model.latent_dim=4", *settings,
                                   "logger=none", "callbacks=minimal"]))
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["status"] == "completed"
    for stage in ("train", "val", "test"):
        values = record[stage]
        assert all(math.isfinite(values[f"{stage}/{term}"]) for term in terms)
        assert f"{stage}/elbo" in values
    val = record["val"]
    if preset == "piwae":  # the loss it logs is the decoder's bound
        assert val["val/loss"] == pytest.approx(-val["val/iw_bound"], rel=1e-6)
    else:
        bound = "miwae_bound" if preset == "miwae" else "ciwae_bound"
        assert val["val/loss"] == pytest.approx(-val[f"val/{bound}"], rel=1e-6)
    if preset == "ciwae":
        assert val["val/beta"] == 0.5
    # eval.py rebuilds the objective from the checkpoint alone
    run_evaluation(compose_eval(tmp_path, [f"ckpt_path={record['test_ckpt']}", "iw_k=5"]))
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["status"] == "completed"
