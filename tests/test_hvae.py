"""The hierarchical VAE (model=hvae): the Ladder VAE's code (Sønderby et al. 2016). Each test names the plausible
wrong version it would catch."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import compose_eval, compose_train
from torch.distributions import Normal

from vaelab.errors import ConfigError
from vaelab.models import Autoencoder
from vaelab.models.codes import GaussianCode
from vaelab.models.distributions import kl_to_standard_normal
from vaelab.models.importance import importance_weighted_bound, log_importance_weights
from vaelab.models.ladder_code import HierarchicalCode, gaussian_kl, precision_weighted_merge

SMALL_NET = {"encoder": {"_target_": "vaelab.models.nets.MLPEncoder", "hidden_dims": [32]},
             "decoder": {"_target_": "vaelab.models.nets.MLPDecoder", "hidden_dims": [32]}}


def ladder(latent_dims=(4, 3, 2), hidden_dims=(16, 12, 8), **kwargs) -> dict:
    return {"_target_": "vaelab.models.ladder_code.HierarchicalCode", "latent_dims": list(latent_dims),
            "hidden_dims": list(hidden_dims), **kwargs}


def hvae(seed: int = 0, **kwargs) -> Autoencoder:
    torch.manual_seed(seed)
    code = ladder(**kwargs)
    return Autoencoder([1, 8, 8], latent_dim=code["latent_dims"][0], code=code, net=SMALL_NET).double().eval()


def images(n: int = 3, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.bernoulli(torch.rand(n, 1, 8, 8, generator=g, dtype=torch.float64), generator=g)


def built(latent_dims, hidden_dims, **kwargs) -> HierarchicalCode:
    """A code made as the model makes it (``build`` checks the settings and makes the layers)."""
    code = HierarchicalCode(latent_dims, hidden_dims, **kwargs)
    code.build(latent_dims[0])
    return code


def spread_out(code: HierarchicalCode, scale: float = 2.0) -> HierarchicalCode:
    """Larger weights, so that the posteriors and priors differ from layer to layer by O(1) nats or more (the random
    initialisation leaves every KL near 0, where a wrong KL would hide)."""
    with torch.no_grad():
        for p in code.parameters():
            p.mul_(scale)
    return code


# ---------------------------------------------------------------------------------------------------- the merge
def test_the_precision_weighted_merge_is_the_ladder_vaes_equation():
    """σ̂² = 1, σ_p² = 3: σ_q² = 1/(1 + 1/3) = 0.75, μ_q = (1·1 + 3·(1/3))·0.75 = 1.5 (eq. 17–19). The wrong versions
    give: the average of the means (2.0), the weights swapped (2.5), variances summed instead of precisions."""
    mu_hat, var_hat = torch.tensor([1.0, -2.0]), torch.tensor([1.0, 0.5])
    mu_p, var_p = torch.tensor([3.0, 4.0]), torch.tensor([3.0, 2.0])
    mu_q, logvar_q = precision_weighted_merge(mu_hat, var_hat.log(), mu_p, var_p.log())
    # the second pair by hand: precisions 2 and 0.5, σ_q² = 1/2.5 = 0.4, μ_q = (−2·2 + 4·0.5)·0.4 = −0.8
    torch.testing.assert_close(logvar_q.exp(), torch.tensor([0.75, 0.4]))
    torch.testing.assert_close(mu_q, torch.tensor([1.5, -0.8]))


def test_the_merge_tends_to_the_prior_or_the_estimate_as_the_other_grows_vague():
    """Limit cases: an uninformative bottom-up estimate (σ̂² → ∞) leaves the prior p(z_i | z_{i+1}); an uninformative
    prior leaves the bottom-up estimate."""
    mu_hat, mu_p = torch.tensor([0.3]), torch.tensor([-1.2])
    mu_q, logvar_q = precision_weighted_merge(mu_hat, torch.tensor([40.0]), mu_p, torch.tensor([0.7]))
    torch.testing.assert_close((mu_q, logvar_q), (mu_p, torch.tensor([0.7])))
    mu_q, logvar_q = precision_weighted_merge(mu_hat, torch.tensor([-0.4]), mu_p, torch.tensor([40.0]))
    torch.testing.assert_close((mu_q, logvar_q), (mu_hat, torch.tensor([-0.4])))


def test_the_gaussian_kl_has_its_known_value_and_its_direction():
    """KL(N(1, 1) ‖ N(0, 4)) = ½(log 4 + (1 + 1)/4 − 1) = ½ log 4 − ¼ = 0.4431; the reversed KL(N(0, 4) ‖ N(1, 1)) is
    ½(−log 4 + 4 + 1 − 1) = 1.3069."""
    kl = gaussian_kl(torch.tensor([[1.0]]), torch.tensor([[0.0]]), torch.tensor([[0.0]]), torch.tensor([[math.log(4)]]))
    assert kl.item() == pytest.approx(0.5 * math.log(4) - 0.25, rel=1e-6)


# ---------------------------------------------------------------------------------------------------- the KL
def test_each_layers_kl_agrees_with_monte_carlo():
    """For every layer, E_q[log q(z_i | ·) − log p(z_i | z_{i+1})] over 200,000 draws of the hierarchy equals the
    mean of the analytic per-layer KL over the same draws (each draw's KL given its own z_{i+1}), within 5 standard
    errors. The log-densities are torch.distributions', not the code's. Wrong versions it catches: the KL reversed
    (KL(p ‖ q)), the lower layers' KL taken against N(0, I), the variance used as a standard deviation."""
    torch.manual_seed(1)
    code = spread_out(built((4, 3, 2), (16, 12, 8)).double().eval())
    h = torch.randn(1, 16, dtype=torch.float64)
    n = 200_000
    estimates = [(mu.repeat(n, 1), logvar.repeat(n, 1)) for mu, logvar in code.bottom_up(h)]
    with torch.no_grad():
        layers = code._top_down(estimates, [torch.randn_like(mu) for mu, _ in estimates])
        kls = code.layer_kls(layers)
    for i, (layer, kl) in enumerate(zip(layers, kls, strict=True)):
        q = Normal(layer["mu"], (0.5 * layer["logvar"]).exp())
        p = (Normal(torch.zeros_like(layer["z"]), torch.ones_like(layer["z"])) if layer["mu_p"] is None
             else Normal(layer["mu_p"], (0.5 * layer["logvar_p"]).exp()))
        sampled = (q.log_prob(layer["z"]) - p.log_prob(layer["z"])).sum(-1)
        gap = sampled - kl
        assert kl.mean().item() > 0.3, f"layer {i + 1}'s KL is too small to tell a wrong formula from a right one"
        assert abs(gap.mean().item()) < 5 * gap.std().item() / math.sqrt(n), f"layer {i + 1}"


def test_the_pass_gives_the_sum_of_the_layers_kl_and_each_layer_in_extras():
    model = hvae()
    spread_out(model.code)
    out = model(images())
    assert set(out.extras) == {"kl_layer1", "kl_layer2", "kl_layer3"}
    torch.testing.assert_close(out.kl, sum(out.extras.values()))
    assert out.logvar is None and out.z.shape == out.mu.shape == (3, 4)


def test_the_deterministic_code_is_the_noise_free_top_down_pass():
    """mu is z_1's posterior mean with every layer above at its own posterior mean: the same every pass (the wrong
    version, μ_q,1 given a drawn z_2, changes from pass to pass)."""
    model = hvae()
    spread_out(model.code)
    x = images()
    torch.testing.assert_close(model(x).mu, model(x).mu)
    torch.testing.assert_close(model.encode(x)[0], model(x).mu)


# ---------------------------------------------------------------------------------------------------- one layer
def test_one_layer_is_the_vaes_code():
    """Depth 1: the KL is the VAE's closed form on the same μ, σ², and the importance draws (z and log p − log q)
    are GaussianCode's for the same ε."""
    torch.manual_seed(2)
    code = built([3], [8]).double().eval()
    h = torch.randn(5, 8, dtype=torch.float64)
    mu, logvar = code.bottom_up(h)[0]
    gaussian = GaussianCode()
    out = code(h)
    torch.testing.assert_close(out.kl, kl_to_standard_normal(mu, logvar))
    torch.testing.assert_close(out.mu, mu)
    z, ratio = code.importance_draws(h, 7, torch.Generator().manual_seed(3))
    z_vae, ratio_vae = gaussian.importance_draws(torch.cat([mu, logvar], 1), 7, torch.Generator().manual_seed(3))
    torch.testing.assert_close(z, z_vae)
    torch.testing.assert_close(ratio, ratio_vae)


# ---------------------------------------------------------------------------------------------------- the bound
def test_the_one_sample_bound_averages_to_the_elbo():
    """E[L_1] = E_q[log p(x | z_1)] − E_q[Σ_i KL_i] (the ELBO): the mean over 20,000 draws of the importance weights of
    the whole hierarchy agrees with the mean of the pass's −(recon + KL) over 20,000 passes, within 5 standard errors.
    Wrong versions it catches: log p of every layer under N(0, I), log q without its −½ Σ log σ², a layer left out."""
    model = hvae(seed=3)
    spread_out(model.code, 1.5)
    x = images(2, seed=4)
    n = 20_000
    with torch.no_grad():
        log_w = log_importance_weights(model, x, model.features(x), n, torch.Generator().manual_seed(5))
        torch.manual_seed(6)
        elbo = model(x.repeat(n, 1, 1, 1)).elbo.reshape(n, len(x))
    for b in range(len(x)):
        se = math.sqrt(log_w[:, b].var().item() / n + elbo[:, b].var().item() / n)
        assert elbo[:, b].mean().item() < -1.0  # (not a degenerate zero)
        assert abs(log_w[:, b].mean().item() - elbo[:, b].mean().item()) < 5 * se, f"image {b}"


def test_the_bound_rises_with_k():
    """L_1 < L_10 < L_100 (Burda et al. 2016, Theorem 1), each the mean of 40 estimates. The wrong version, one ε per
    image shared by its K draws, gives L_K = L_1 for every K."""
    model = hvae(seed=7)
    spread_out(model.code, 1.5)
    x = images(2, seed=8)
    g = torch.Generator().manual_seed(9)
    with torch.no_grad():
        h = model.features(x)
        bounds = [torch.stack([importance_weighted_bound(model, x, h, k, generator=g) for _ in range(40)]).mean()
                  for k in (1, 10, 100)]
    assert bounds[0] + 0.05 < bounds[1] < bounds[2] - 0.01, bounds


# ---------------------------------------------------------------------------------------------------- the prior
def test_ancestral_sampling_draws_each_layer_from_its_conditional_prior():
    """With the top-down path fixed to give p(z_1 | z_2) = N(m, s²) whatever z_2 (zero weights, known biases), z_1 of
    the prior's draws has mean m and standard deviation s. Wrong version: σ² used as the standard deviation."""
    code = built((2, 3), (4, 4)).eval()
    with torch.no_grad():
        code.down[0][0].weight.zero_()
        code.down[0][0].bias.fill_(1.0)  # the hidden layer is relu(1) = 1 for every z_2
        head = code.down_heads[0]
        head.mu.weight.zero_(), head.logvar.weight.zero_()
        head.mu.bias.copy_(torch.tensor([2.0, -1.0]))
        head.logvar.bias.copy_(torch.tensor([math.log(0.25), math.log(4.0)]))
        z = code.prior_sample(50_000, 2, torch.Generator().manual_seed(10))
    torch.testing.assert_close(z.mean(0), torch.tensor([2.0, -1.0]), atol=0.03, rtol=0)
    torch.testing.assert_close(z.std(0), torch.tensor([0.5, 2.0]), atol=0.03, rtol=0)
    again = code.prior_sample(5, 2, torch.Generator().manual_seed(11))
    torch.testing.assert_close(code.prior_sample(5, 2, torch.Generator().manual_seed(11)), again)


def test_the_marginals_are_refused_with_a_message():
    model = hvae()
    with pytest.raises(ValueError, match="importance_draws"):
        model.code.prior_log_prob(torch.zeros(1, 4))
    with pytest.raises(ValueError, match="importance_draws"):
        model.code.draw(torch.zeros(1, 16), 2)


# ---------------------------------------------------------------------------------------------------- settings
@pytest.mark.parametrize(("kwargs", "message"), [
    ({"latent_dims": []}, r"model.code.latent_dims = \[\] is invalid"),
    ({"latent_dims": [4, 0]}, r"model.code.latent_dims = \[4, 0\] is invalid: .*integers >= 1"),
    ({"latent_dims": "4"}, r"model.code.latent_dims = '4' is invalid"),
    ({"latent_dims": [4, 2], "hidden_dims": [8]}, r"model.code.hidden_dims = \[8\] is invalid with "
                                                   r"model.code.latent_dims = \[4, 2\]"),
    ({"latent_dims": [4], "hidden_dims": [-1]}, r"model.code.hidden_dims = \[-1\] is invalid"),
    ({"activation": "swish"}, r"model.code.activation = 'swish' is invalid: it must be one of relu"),
])
def test_bad_settings_are_refused_naming_the_key(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        HierarchicalCode(**kwargs).build(4)


def test_a_latent_dim_other_than_the_first_layers_is_refused():
    code = ladder((4, 2), (8, 8))
    with pytest.raises(ConfigError, match=r"model.latent_dim = 5 is invalid with model.code.latent_dims = \[4, 2\]"):
        Autoencoder([1, 8, 8], latent_dim=5, code=code, net=SMALL_NET)


@pytest.mark.parametrize(("dims", "shown"), [("[8,0]", r"\[8, 0\]"), ("[]", r"\[\]")])
def test_a_bad_depth_through_the_config_names_the_key(tmp_path, dims, shown):
    from vaelab.tasks.train import train

    cfg = compose_train(tmp_path, ["model=hvae", "data=digits", f"model.code.latent_dims={dims}", "logger=none",
                                   "callbacks=minimal"])
    with pytest.raises(ConfigError, match=rf"model.code.latent_dims = {shown} is invalid"):
        train(cfg)


# ---------------------------------------------------------------------------------------------- the dashboard view
def test_the_layer_samples_hold_the_layers_above_each_row():
    """In the rows of layer i, the ε of the layers above i is one draw along the row and that of layer i and below
    differs from column to column; the top layer's rows are plain samples."""
    from vaelab.dashboard.layers import LayerSamples

    code = built((4, 3, 2), (8, 8, 8)).eval()
    view = LayerSamples(ncol=5, rows_per_layer=2)
    noise, labels = view.layer_noise(code, torch.Generator().manual_seed(0))
    assert labels == ["z3…z1 new", "z3…z1 new", "z2…z1 new · z3 held", "z2…z1 new · z3 held",
                      "z1 new · z2…z3 held", "z1 new · z2…z3 held"]
    rows = [[eps[r * 5 : (r + 1) * 5] for eps in noise] for r in range(6)]  # per row, each layer's ε (bottom first)
    for r, row in enumerate(rows):
        layer = 2 - r // 2  # the rows' own layer (0-based): 2, 2, 1, 1, 0, 0
        for j, eps in enumerate(row):
            held = bool((eps == eps[:1]).all())
            assert held == (j > layer), (r, j)


def test_the_layer_samples_view_draws_one_labelled_card(monkeypatch):
    from test_callbacks import RecordingWriter, spy_on_labels

    from vaelab.dashboard import layers as views

    model = hvae()
    labels = spy_on_labels(monkeypatch, views)
    view = views.LayerSamples(ncol=4, rows_per_layer=1, min_side=8)
    writer = RecordingWriter()
    with torch.no_grad():
        view.draw(writer, "val", 0, model.float(), None, None, None)
    view.wait()
    view.teardown(None, model, "fit")
    assert writer.tags() == ["val/layer_samples"]
    assert labels[0]["rows"] == ["z3…z1 new", "z2…z1 new · z3 held", "z1 new · z2…z3 held"]
    quiet = RecordingWriter()
    view.draw(quiet, "val", 0, Autoencoder([1, 8, 8], 2, net=SMALL_NET), None, None, None)  # a VAE: nothing
    assert quiet.tags() == []


# ---------------------------------------------------------------------------------------------- through the config
def test_hvae_trains_samples_and_evaluates_through_the_config(tmp_path):
    from vaelab import load
    from vaelab.tasks.evaluate import run_evaluation
    from vaelab.tasks.train import train

    cfg = compose_train(tmp_path, ["model=hvae", "data=digits", "model.code.latent_dims=[6,3]",
                                   "model.code.hidden_dims=[32,16]", "callbacks=[minimal,layers]"])
    assert cfg.model.latent_dim == 6
    train(cfg)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "run"), size_guidance={"images": 0})
    events.Reload()
    assert "val/layer_samples" in events.Tags()["images"]
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["status"] == "completed"
    for split in ("train", "val"):
        assert {f"{split}/{name}" for name in ("loss", "recon", "kl", "elbo", "beta")} <= set(record[split])
    assert record["train"]["train/beta"] < 1.0  # the KL warm-up (model/beta_schedule=linear)
    model = load(record["test_ckpt"])
    assert model.sample(4).shape == (4, 1, 8, 8)
    run_evaluation(compose_eval(tmp_path, [f"ckpt_path={record['test_ckpt']}", "iw_k=20"]))
    test = json.loads((tmp_path / "eval" / "metrics.json").read_text())["test"]
    assert math.isfinite(test["test/neg_iw_bound"])
    assert test["test/neg_iw_bound"] < test["test/neg_elbo"]


# ---------------------------------------------------------------------------------------------- the layer traversal
def traversal_rows(layers: list[torch.Tensor], steps: int) -> list[list[torch.Tensor]]:
    """Per row of the traversal, each layer's z in its cells (bottom first)."""
    count = len(layers[0]) // steps
    return [[z[r * steps : (r + 1) * steps] for z in layers] for r in range(count)]


def test_the_layer_traversal_walks_one_dimension_of_one_layer_in_prior_sds_with_the_layers_above_held():
    """In a row of layer i walking dimension d: z_i moves in d only, by k·σ_p,i,d (σ of p(z_i | z_{i+1}) at the held
    z_{i+1}; 1 at the top) from the first image's noise-free posterior mean; every layer above stays at that image's
    noise-free posterior mean; every layer below is the conditional prior's mean given the one above; a layer's rows
    are its dimensions with the most KL, most first. Wrong versions it catches: every dimension of z_i moved, the
    steps in σ_q (the posterior's) instead of σ_p, the layers above taken from another image or drawn, the layers
    below at their posterior means, the dimensions ranked least KL first."""
    from vaelab.dashboard.layers import LayerTraversal, layer_kl_per_dimension

    model = hvae(seed=4)
    spread_out(model.code)
    code, steps = model.code, 5
    with torch.no_grad():
        h = model.features(images(4, seed=2))
        layers, rows, labels = LayerTraversal(max_dims=2, steps=steps, span=2.0).walk(code, h)
        noise_free = code._top_down(code.bottom_up(h), [None] * code.depth)
    assert [i for i, _ in rows] == [2, 2, 1, 1, 0, 0] and len(labels) == 6
    k = torch.linspace(-2.0, 2.0, steps, dtype=torch.float64)
    kls = code.layer_kls(noise_free)
    for r, ((i, d), row) in enumerate(zip(rows, traversal_rows(layers, steps), strict=True)):
        layer = noise_free[i]
        mu, z_i = layer["mu"][0], row[i]
        sigma = torch.tensor(1.0, dtype=torch.float64) if i == 2 else (0.5 * layer["logvar_p"][0, d]).exp()
        others = [c for c in range(z_i.shape[1]) if c != d]
        torch.testing.assert_close(z_i[:, others], mu[others].expand(steps, -1))  # (only d moves)
        torch.testing.assert_close(z_i[:, d], mu[d] + k * sigma)
        assert (sigma - (0.5 * layer["logvar"][0, d]).exp()).abs() > 0.05  # (σ_p and σ_q tell apart here)
        for j in range(i + 1, code.depth):  # the layers above: the first image's, held
            torch.testing.assert_close(row[j], noise_free[j]["z"][:1].expand(steps, -1))
        for j in range(i - 1, -1, -1):  # the layers below: the conditional prior's mean given the one above
            torch.testing.assert_close(row[j], code.conditional_prior(j, row[j + 1])[0])
        assert labels[r][0].startswith(f"z{i + 1}[{d}] · ")
    for i in range(code.depth):  # the per-dimension KL sums to the layer's KL, and the rows take the largest
        per_dim = layer_kl_per_dimension(noise_free[i])
        torch.testing.assert_close(per_dim.sum(-1), kls[i])
        ranked = per_dim.mean(0).argsort(descending=True)[:2].tolist()
        assert [d for j, d in rows if j == i] == ranked
        assert per_dim.mean(0)[ranked[0]] > per_dim.mean(0)[ranked[-1]]


def test_the_layer_traversal_view_writes_one_card_with_labelled_rows_and_nothing_for_a_vae(monkeypatch):
    from test_callbacks import RecordingWriter, spy_on_labels

    from vaelab.dashboard import layers as views

    model = hvae().float()
    labels = spy_on_labels(monkeypatch, views)
    view = views.LayerTraversal(max_dims=2, steps=5, min_side=8)
    writer = RecordingWriter()
    with torch.no_grad():
        view.draw(writer, "val", 3, model, images(3).float(), torch.zeros(3, dtype=torch.long), None)
    view.wait()
    view.teardown(None, model, "fit")
    assert writer.tags() == ["val/layer_traversal"]
    rows = labels[0]["rows"]
    assert [row.split("[")[0] for row in rows] == ["z3", "z3", "z2", "z2", "z1", "z1"]  # layers stacked, top first
    assert all(" nats · σp " in row for row in rows)
    assert labels[0]["cols"] == ["−3", "−1.5", "0", "1.5", "3"] and labels[0]["caption"] == "zᵢ = μq + k·σp, k:"
    card = writer.calls[0].image
    assert card.ndim == 3 and card.shape[2] == 3 and card.shape[0] >= 6 * 8  # six rows of cells at least 8 px
    quiet = RecordingWriter()
    vae = Autoencoder([1, 8, 8], 2, net=SMALL_NET)
    with torch.no_grad():
        view.draw(quiet, "val", 0, vae, images(3).float(), torch.zeros(3), vae(images(3).float()))  # a VAE: nothing
    assert quiet.tags() == []


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"max_dims": 0}, r"callbacks.layer_traversal.max_dims = 0 is invalid: it must be an integer >= 1"),
    ({"steps": 1}, r"callbacks.layer_traversal.steps = 1 is invalid: it must be an integer >= 2"),
    ({"span": 0.0}, r"callbacks.layer_traversal.span = 0.0 is invalid: it must be a number > 0"),
])
def test_bad_layer_traversal_settings_are_refused_naming_the_key(kwargs, message):
    from vaelab.dashboard.layers import LayerTraversal

    with pytest.raises(ValueError, match=message):
        LayerTraversal(**kwargs)


def test_the_layers_preset_draws_the_layer_traversal_in_training(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from vaelab.tasks.train import train

    cfg = compose_train(tmp_path, ["model=hvae", "data=digits", "model.code.latent_dims=[4,2]",
                                   "model.code.hidden_dims=[16,8]", "callbacks=[minimal,layers]", "test=false"])
    assert cfg.callbacks.layer_traversal._target_ == "vaelab.dashboard.layers.LayerTraversal"
    train(cfg)
    events = EventAccumulator(str(tmp_path / "run"), size_guidance={"images": 0})
    events.Reload()
    assert {"val/layer_samples", "val/layer_traversal"} <= set(events.Tags()["images"])


def test_the_ladder_objective_refuses_a_code_without_layers_naming_what_to_use():
    """Catches the objective reading per-layer KLs that a plain Gaussian code never gives (a KeyError deep in a
    training step instead of one message)."""
    from vaelab.models.objectives.ladder import LadderElbo

    model = Autoencoder([1, 8, 8], latent_dim=3)
    x = torch.rand(4, 1, 8, 8)
    with pytest.raises(ValueError, match=r"needs a hierarchical code .* model.code is a GaussianCode \(it gives no "
                                         r"kl_layer1, kl_layer2\): use model=hvae"):
        LadderElbo([3, 2])(model, x, model(x), 0)
