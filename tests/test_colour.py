"""Colour, offline (issue 28): data=shapes_color, the colour likelihoods (a learned-variance Gaussian, per pixel or
shared; the discretised logistic mixture of PixelCNN++), bits/dim for 8-bit data, and the shapes_color feature
network. Each property test names the plausible wrong version it catches."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from conftest import compose_eval, compose_train

from vaelab import rules
from vaelab.data.shapes import FACTOR_NAMES, ColorShapesDataModule, ShapesDataModule, hue_palette
from vaelab.errors import ConfigError
from vaelab.metrics import feature_net as fn
from vaelab.metrics.likelihood import bits_per_dim, comparability_notes, evaluate, importance_weighted_bound
from vaelab.models import Autoencoder
from vaelab.models.likelihoods import (
    MIN_STD,
    DiscretizedLogisticMixture,
    GaussianPerPixelLikelihood,
    GaussianSharedLikelihood,
    discretized_logistic_log_prob,
    floored_log_std,
    make_likelihood,
)

TINY = {"image_size": 16, "n_scales": 2, "n_orientations": 4, "n_positions": 3, "n_colors": 3}  # 648 combinations
SMALL_NET = {"encoder": {"_target_": "vaelab.models.nets.MLPEncoder", "hidden_dims": [16]},
             "decoder": {"_target_": "vaelab.models.nets.MLPDecoder", "hidden_dims": [16]}}
NEW = ("gaussian_per_pixel", "gaussian_shared", "discretized_logistic")
LEVELS = torch.arange(256, dtype=torch.float64) / 255  # the 256 values of an 8-bit pixel, as the data give them


def tiny(tmp_path, **kwargs) -> ColorShapesDataModule:
    return ColorShapesDataModule(data_dir=tmp_path, batch_size=32, eval_batch_size=64, val_fraction=0.2,
                                 **{**TINY, **kwargs})


# ---------------------------------------------------------------------------------------------------- the data
def test_the_colour_shapes_have_six_factors_and_rgb_images_with_the_yaml_defaults(tmp_path):
    cfg = compose_train(tmp_path, ["data=shapes_color"]).data
    assert cfg._target_ == "vaelab.data.shapes.ColorShapesDataModule"
    settings = {k: v for k, v in cfg.items() if k != "_target_"}
    dm = ColorShapesDataModule(**settings)
    assert dm.factor_names == (*FACTOR_NAMES, "color")
    assert dm.factor_sizes == (3, 4, 10, 8, 8, 6) and dm.num_combinations == 46_080
    assert dm.image_shape == (3, 32, 32) and not dm.binary_images
    # scripts/train_feature_net.py trains the shipped network on these settings
    assert {k: settings[k] for k in fn.SHAPES_COLOR_SETTINGS} == fn.SHAPES_COLOR_SETTINGS
    assert hue_palette(6).tolist() == [[255, 0, 0], [255, 255, 0], [0, 255, 0], [0, 255, 255], [0, 0, 255],
                                       [255, 0, 255]]


def test_each_shape_is_drawn_in_its_hue_exactly_where_the_grey_shape_is(tmp_path):
    """Catches colouring by the wrong column (e.g. the shape's), or drawing a different shape than data=shapes."""
    dm = tiny(tmp_path)
    grey = ShapesDataModule(data_dir=tmp_path, **{k: v for k, v in TINY.items() if k != "n_colors"})
    factors = dm.sample_factors(300, np.random.default_rng(0))
    images = dm.render(factors)
    assert images.shape == (300, 3, 16, 16) and images.dtype == torch.uint8
    masks = grey.render(factors[:, :5])[:, 0] > 0
    expected = torch.where(masks[:, None], dm.palette[torch.from_numpy(factors[:, 5])][:, :, None, None], 0)
    assert torch.equal(images, expected.to(torch.uint8))
    assert masks.flatten(1).any(1).all()  # every shape shows


def test_the_data_set_holds_every_combination_once_with_six_factor_labels_and_whole_symmetry_classes_held_out(
        tmp_path):
    dm = tiny(tmp_path, cache=False)
    dm.setup()
    images = torch.cat([dm.splits[s][0] for s in ("train", "val", "test")])
    labels = torch.cat([dm.splits[s][1] for s in ("train", "val", "test")])
    assert labels.shape == (dm.num_combinations, 6)
    flat = np.ravel_multi_index(tuple(labels.numpy().T), dm.factor_sizes)
    assert sorted(flat.tolist()) == list(range(dm.num_combinations))
    assert torch.equal(images, dm.render(labels.numpy()))
    train = {tuple(r) for r in dm._canonical(torch.cat([dm.splits["train"][1], dm.splits["val"][1]]).numpy())}
    test = {tuple(r) for r in dm._canonical(dm.splits["test"][1].numpy())}
    assert test and not train & test


def test_a_bad_number_of_colours_is_refused_naming_the_key(tmp_path):
    for bad in (0, 2.5, 300):
        with pytest.raises(ConfigError, match=rf"data.n_colors = {bad} is invalid: .*integer from 1 to 256"):
            tiny(tmp_path, n_colors=bad)
    with pytest.raises(ConfigError, match="color_by='hue'.*color"):
        tiny(tmp_path, color_by="hue")


def test_the_disentanglement_metrics_score_a_code_on_the_six_factors(tmp_path):
    from vaelab.metrics.factors import disentanglement_metrics

    dm = tiny(tmp_path, cache=False, color_by="color")
    assert dm.num_classes == 3 and dm.class_names == ("hue 0°", "hue 120°", "hue 240°")
    torch.manual_seed(0)
    model = Autoencoder(image_shape=[3, 16, 16], latent_dim=4, net=SMALL_NET, likelihood="discretized_logistic")
    votes = {"n_train_votes": 30, "n_eval_votes": 15, "batch_size": 16, "n_variance_estimate": 200}
    scores = disentanglement_metrics(model, dm, "val", factor_vae=votes, dci_predictor="forest")
    assert set(scores) >= {"mig", "factor_vae", "sap", "dci_disentanglement"}
    assert all(math.isfinite(v) for v in scores.values())


# ---------------------------------------------------------------------------------------------------- the logistic
def _sigmoid(t):
    return 1 / (1 + math.exp(-t))


@pytest.mark.parametrize("x_level,mu,s", [(128, 0.52, 0.03), (37, 0.1, 0.2), (200, 0.78, 0.005)])
def test_one_logistic_bin_is_the_difference_of_two_sigmoids(x_level, mu, s):
    """Closed form, Salimans et al. (2017) eq. 2. Catches a bin of the wrong width (±1/255 for the paper's [-1, 1]
    data instead of ±½/255 on [0, 1]) and a scale taken as a log-scale or inverted."""
    x = x_level / 255
    expected = _sigmoid((x + 0.5 / 255 - mu) / s) - _sigmoid((x - 0.5 / 255 - mu) / s)
    got = discretized_logistic_log_prob(torch.tensor(x, dtype=torch.float64), torch.tensor(mu, dtype=torch.float64),
                                        torch.tensor(math.log(s), dtype=torch.float64)).exp().item()
    assert got == pytest.approx(expected, rel=1e-9)


def test_the_edge_bins_reach_to_minus_and_plus_infinity():
    """Catches the edge cases of sec. 2.1 left out (0 and 255 scored as ordinary bins lose the tails)."""
    mu, s = torch.tensor(0.02, dtype=torch.float64), 0.1
    log_s = torch.tensor(math.log(s), dtype=torch.float64)
    p0 = discretized_logistic_log_prob(torch.tensor(0.0, dtype=torch.float64), mu, log_s).exp().item()
    p255 = discretized_logistic_log_prob(torch.tensor(1.0, dtype=torch.float64), mu, log_s).exp().item()
    assert p0 == pytest.approx(_sigmoid((0.5 / 255 - 0.02) / s), rel=1e-12)
    assert p255 == pytest.approx(1 - _sigmoid((1 - 0.5 / 255 - 0.02) / s), rel=1e-12)


@pytest.mark.parametrize("mu,log_s", [(0.5, -2.0), (0.0, -3.0), (1.0, -3.0), (-0.3, -1.0), (1.4, -1.0),
                                      (0.5, -7.0), (0.3, -9.0), (0.5012, -6.5), (0.5, 5.0)])
def test_the_mass_function_sums_to_one_over_the_256_values(mu, log_s):
    """In float32, as training computes it: locations off the grid and outside [0, 1], scales below the floor and
    down to where the mid-point fallback serves. Catches a wrong edge case (the sum falls short by the tail)."""
    p = discretized_logistic_log_prob(LEVELS.float(), torch.tensor(mu), torch.tensor(log_s)).double().exp()
    assert p.sum().item() == pytest.approx(1.0, abs=2e-5)


def test_the_mixture_sums_to_one_over_all_values_of_two_channels_jointly():
    """The components are shared by the channels: Σ over the 256² values of a 2-channel pixel is 1 (catches the
    weight counted once per channel, π_k^C), and the two channels are not independent (catches a product of two
    per-channel mixtures where the layout says one mixture)."""
    lik = DiscretizedLogisticMixture(components=3)
    gen = torch.Generator().manual_seed(0)
    output = torch.randn(1, lik.output_channels(2), 1, 1, generator=gen, dtype=torch.float64)
    output[:, 3:9] = torch.rand(1, 6, 1, 1, generator=gen, dtype=torch.float64)  # locations in [0, 1]
    output[:, 9:] = -3 + torch.rand(1, 6, 1, 1, generator=gen, dtype=torch.float64)
    a, b = torch.meshgrid(LEVELS, LEVELS, indexing="ij")
    x = torch.stack([a.flatten(), b.flatten()], dim=1)[:, :, None, None]  # (65536, 2, 1, 1)
    p = lik.log_prob(output.expand(len(x), -1, -1, -1), x).exp()
    assert p.sum().item() == pytest.approx(1.0, abs=1e-6)  # (the mid-point fallback moves the far tails a little)
    joint = p.reshape(256, 256)
    independent = joint.sum(1, keepdim=True) * joint.sum(0, keepdim=True)
    assert (joint - independent).abs().sum().item() > 0.1


def test_the_mid_point_fallback_scores_a_far_bin_by_the_density_at_its_centre():
    """A bin 800 scales from the location: in float32 σ(a) − σ(b) is 0 there; the paper's fallback gives log of
    (1/255) × the logistic density at the bin's centre. Catches a missing fallback (−inf or log 1e-12)."""
    mu, s, x = 0.1, 0.001, 0.9
    got = discretized_logistic_log_prob(torch.tensor(x), torch.tensor(mu), torch.tensor(math.log(s))).item()
    t = (x - mu) / s
    expected = -t - math.log(s) - 2 * math.log1p(math.exp(-t)) - math.log(255)
    assert got == pytest.approx(expected, rel=1e-4)


def test_draws_of_the_mixture_fall_in_each_value_as_often_as_its_mass_says():
    """Monte-Carlo agreement: draw a component, a logistic variate by inverse CDF, round to the nearest of the 256
    values (clamped to 0 … 255), and compare the frequencies with exp(log_prob). Catches a wrong bin edge, a
    wrong edge case or a component weight that is not the softmax of the logits."""
    lik = DiscretizedLogisticMixture(components=2)
    output = torch.tensor([1.0, -0.5, 0.02, 0.7, math.log(0.05), math.log(0.2)], dtype=torch.float64)
    output = output[None, :, None, None]
    pmf = lik.log_prob(output.expand(256, -1, -1, -1), LEVELS[:, None, None, None]).exp().flatten()
    gen = torch.Generator().manual_seed(1)
    n = 400_000
    k = torch.multinomial(torch.softmax(output[0, :2, 0, 0], 0), n, replacement=True, generator=gen)
    u = torch.rand(n, generator=gen, dtype=torch.float64)
    draws = torch.tensor([0.02, 0.7], dtype=torch.float64)[k] + torch.tensor([0.05, 0.2], dtype=torch.float64)[k] \
        * torch.log(u / (1 - u))
    values = (draws * 255).round().clamp(0, 255).long()
    freq = torch.bincount(values, minlength=256).double() / n
    assert (freq - pmf).abs().max().item() < 0.004  # sd of a frequency ≤ 0.0008 at n = 400,000
    assert freq[0].item() > 0.1 and pmf[0].item() == pytest.approx(freq[0].item(), abs=0.004)  # the edge's tail


def test_the_mixtures_image_is_the_weighted_mean_of_the_locations_clamped():
    lik = DiscretizedLogisticMixture(components=2)
    output = torch.zeros(1, lik.output_channels(1), 1, 1)
    # (K = 2, C = 1: the logits, the locations, the log-scales; weights 3/4 and 1/4)
    output[0, :, 0, 0] = torch.tensor([math.log(3.0), 0.0, 0.2, 4.0, -2.0, -2.0])
    assert lik.mean(output).item() == 1.0  # 0.75·0.2 + 0.25·4 = 1.15, clamped
    output[0, 3, 0, 0] = 0.6
    assert lik.mean(output).item() == pytest.approx(0.75 * 0.2 + 0.25 * 0.6)
    with pytest.raises(ValueError, match="K\\(1 \\+ 2C\\) output channels, got 7"):
        lik.split(torch.zeros(1, 7, 1, 1))


# ---------------------------------------------------------------------------------------------------- the Gaussians
def test_the_per_pixel_gaussian_is_normals_log_prob_with_the_decoded_variance():
    """Catches the second half read as log σ instead of log σ² (or the halves swapped)."""
    lik = GaussianPerPixelLikelihood()
    assert lik.output_channels(3) == 6
    gen = torch.Generator().manual_seed(0)
    mean = torch.rand(4, 3, 5, 5, generator=gen)
    log_var = -2 + 3 * torch.rand(4, 3, 5, 5, generator=gen)  # σ from 0.37 to 1.6: far above the floor
    x = torch.rand(4, 3, 5, 5, generator=gen)
    expected = -torch.distributions.Normal(mean, torch.exp(0.5 * log_var)).log_prob(x).flatten(1).sum(1)
    got = lik.nll(torch.cat([mean, log_var], dim=1), x)
    assert torch.allclose(got, expected, rtol=2e-2)  # (the floor moves σ by under 0.5 % this far above it)
    # and exactly, with the floor's σ
    exact = -torch.distributions.Normal(mean, floored_log_std(0.5 * log_var).exp()).log_prob(x).flatten(1).sum(1)
    assert torch.allclose(got, exact, rtol=1e-5)
    assert torch.equal(lik.mean(torch.cat([mean, log_var], dim=1)), mean)


def test_the_shared_gaussian_is_normals_log_prob_and_its_sigma_is_a_trained_checkpointed_parameter():
    """Catches σ kept as a plain tensor (not trained, not in the state_dict) or not started at likelihood_std."""
    lik = GaussianSharedLikelihood(0.1)
    assert lik.std == pytest.approx(0.1, rel=1e-6) and lik.output_channels(3) == 3
    gen = torch.Generator().manual_seed(0)
    mean, x = torch.rand(4, 3, 5, 5, generator=gen), torch.rand(4, 3, 5, 5, generator=gen)
    expected = -torch.distributions.Normal(mean, 0.1).log_prob(x).flatten(1).sum(1)
    assert torch.allclose(lik.nll(mean, x), expected, rtol=1e-5)

    torch.manual_seed(0)
    model = Autoencoder([3, 5, 5], latent_dim=2, net=SMALL_NET, likelihood="gaussian_shared", likelihood_std=0.3)
    assert "likelihood.raw_log_std" in model.state_dict()
    assert any(p is model.likelihood.raw_log_std for p in model.parameters())
    model(x).recon.mean().backward()
    assert model.likelihood.raw_log_std.grad is not None and model.likelihood.raw_log_std.grad != 0
    with torch.no_grad():
        model.likelihood.raw_log_std.fill_(-1.0)
    again = Autoencoder([3, 5, 5], latent_dim=2, net=SMALL_NET, likelihood="gaussian_shared", likelihood_std=0.3)
    again.load_state_dict(model.state_dict())
    assert again.likelihood.std == pytest.approx(model.likelihood.std) != pytest.approx(0.3)


def test_the_learned_shared_sigma_squared_is_the_mean_squared_error():
    """Known value: for fixed means the maximum-likelihood σ² is the mean squared error per pixel. Catches a
    missing log σ term or a σ where σ² belongs."""
    gen = torch.Generator().manual_seed(0)
    mean = torch.rand(64, 1, 6, 6, generator=gen)
    x = (mean + 0.07 * torch.randn(64, 1, 6, 6, generator=gen)).clamp(0, 1)
    lik = GaussianSharedLikelihood(0.5)
    optimizer = torch.optim.Adam(lik.parameters(), lr=0.05)
    for _ in range(600):
        optimizer.zero_grad()
        lik.nll(mean, x).mean().backward()
        optimizer.step()
    assert lik.std**2 == pytest.approx((x - mean).pow(2).mean().item(), rel=1e-3)


def test_the_sigma_floor_keeps_the_density_at_most_256_and_keeps_a_gradient():
    """Catches a hard clamp (no gradient below the floor: a σ there would stay for good) and a floor whose peak
    density exceeds the uniform 8-bit bin's 256."""
    assert 1 / (MIN_STD * math.sqrt(2 * math.pi)) == pytest.approx(256.0)
    raw = torch.tensor([-50.0, math.log(MIN_STD) - 3], requires_grad=True)
    log_std = floored_log_std(raw)
    assert log_std[0].item() == pytest.approx(math.log(MIN_STD), abs=1e-6)
    log_std.sum().backward()
    assert (raw.grad > 0).all()
    lik = GaussianPerPixelLikelihood()
    x = torch.zeros(1, 1, 2, 2)  # a black background, predicted exactly with a collapsing variance
    nll = lik.nll(torch.cat([x, torch.full_like(x, -1e4)], dim=1), x)
    assert nll.item() == pytest.approx(-4 * math.log(256.0), rel=1e-5)  # never below -log 256 a pixel


def test_gaussian_shared_refuses_a_starting_sigma_that_is_not_a_positive_number():
    for bad in (0, -1.0, float("nan"), 1e-4):
        with pytest.raises(ValueError, match=rf"model.likelihood_std = {bad} is invalid: .*gaussian_shared"):
            make_likelihood("gaussian_shared", bad)


def test_an_unknown_likelihood_names_the_key_and_lists_the_new_ones():
    with pytest.raises(ConfigError, match="model.likelihood.*logistic.*gaussian_per_pixel.*discretized_logistic"):
        rules.check("model.likelihood", "logistic")


# ---------------------------------------------------------------------------------------------------- in the model
@pytest.mark.parametrize("likelihood,channels", [("gaussian_per_pixel", 6), ("gaussian_shared", 3),
                                                 ("discretized_logistic", 5 * 7)])
def test_the_decoder_outputs_what_the_likelihood_reads_and_the_iw_bound_works(likelihood, channels):
    """The decoder's channels come from the likelihood; nll_samples of n decodes is the nll of each (what the
    importance-weighted bound reads), and L_K is finite. Catches a decoder sized from the image's channels."""
    torch.manual_seed(0)
    model = Autoencoder([3, 4, 4], latent_dim=2, net=SMALL_NET, likelihood=likelihood)
    x = (torch.rand(5, 3, 4, 4) * 255).round() / 255
    out = model(x)
    assert out.x_out.shape == (5, channels, 4, 4) and out.x_mean.shape == x.shape and out.recon.shape == (5,)
    outputs = model.decode(torch.randn(3 * 5, 2)).reshape(3, 5, channels, 4, 4)
    each = torch.stack([model.likelihood.nll(o, x) for o in outputs])
    assert torch.allclose(model.likelihood.nll_samples(outputs, x), each)
    bound = importance_weighted_bound(model, x, k=4, chunk_size=3)
    assert bound.shape == (5,) and torch.isfinite(bound).all()


# ---------------------------------------------------------------------------------------------------- bits per dim
def test_bits_per_dim_of_a_uniform_8_bit_pmf_and_of_a_uniform_density_are_exactly_8():
    """A uniform mass function over 256 values has −log P = D log 256: 8 bits/dim as it is. A uniform density on
    [0, 1] has −log p = 0 and gives each value 1/256: 8 bits/dim only with the dequantisation term. Catches the
    term left out, or added to a mass function."""
    d = 3 * 32 * 32
    assert bits_per_dim(d * math.log(256), d) == pytest.approx(8.0, abs=1e-12)
    assert bits_per_dim(0.0, d, dequantise=True) == pytest.approx(8.0, abs=1e-12)
    assert bits_per_dim(-d * math.log(256), d, dequantise=True) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("likelihood,offset", [("gaussian_shared", 8.0), ("gaussian_per_pixel", 8.0),
                                               ("gaussian", 8.0), ("discretized_logistic", 0.0),
                                               ("bernoulli", 0.0)])
def test_evaluate_adds_the_dequantisation_term_for_densities_only(likelihood, offset):
    torch.manual_seed(0)
    model = Autoencoder([3, 4, 4], latent_dim=2, net=SMALL_NET, likelihood=likelihood)
    x = (torch.rand(6, 3, 4, 4) * 255).round() / 255
    result = evaluate(model, [(x, torch.zeros(6))], k=3)
    d = 48
    assert result["bits_per_dim"] == pytest.approx(result["neg_elbo"] / (d * math.log(2)) + offset, rel=1e-9)
    assert result["iw_bits_per_dim"] == pytest.approx(result["neg_iw_bound"] / (d * math.log(2)) + offset,
                                                      rel=1e-9)


def test_the_comparability_notes_of_the_new_likelihoods():
    assert comparability_notes("discretized_logistic", "none") == []
    for name in ("gaussian_per_pixel", "gaussian_shared"):
        (note,) = comparability_notes(name, "none")
        assert "log 256" in note and "dequantisation" in note


# ---------------------------------------------------------------------------------------------------- feature net
def test_the_shipped_shapes_color_network_is_picked_by_the_image_shape_and_loads_checked():
    spec = fn.FEATURE_NETS["shapes_color"]
    assert spec.image_shape == (3, 32, 32) and spec.num_classes == 18 and spec.test_accuracy is not None
    assert fn.feature_net_for((3, 32, 32)) == "shapes_color"
    assert fn.feature_net_for((1, 28, 28)) == "mnist" and fn.feature_net_for((1, 8, 8)) == "digits"
    assert fn.feature_net_for((3, 16, 16)) is None
    net = fn.load_feature_net("shapes_color")  # (its SHA-256 checked)
    with pytest.raises(ValueError, match=r"images of shape \(N, 3, 32, 32\)"):
        net.features(torch.zeros(2, 1, 32, 32))


def test_sample_quality_uses_the_same_network_choice():
    """vaelab.metrics.sample_quality picks the network through feature_net_for: shapes_color's shape must reach it
    (fails until sample_quality.py imports feature_net_for from vaelab.metrics.feature_net)."""
    from vaelab.metrics.sample_quality import feature_net_for

    assert feature_net_for((3, 32, 32)) == "shapes_color"


def test_the_shapes_color_network_tells_shape_and_colour_on_test_images(tmp_path):
    dm = ColorShapesDataModule(data_dir=tmp_path, cache=False, **fn.SHAPES_COLOR_SETTINGS)
    dm.setup("test")
    images, labels = dm.splits["test"]
    rng = np.random.default_rng(0)
    kept = torch.from_numpy(rng.choice(len(images), 600, replace=False))
    net = fn.load_feature_net("shapes_color")
    correct = fn.accuracy(net, images[kept], fn.shape_color_class(labels[kept], dm.n_colors))
    assert correct >= fn.FEATURE_NETS["shapes_color"].test_accuracy - 0.03
    assert fn.extract_features(net, images[kept][:10]).shape == (10, 128)


# ---------------------------------------------------------------------------------------------------- end to end
SMOKE = ["model=vae", "data=shapes_color", "model/net=conv", "logger=none", "callbacks=minimal", "model.latent_dim=4",
         "data.n_positions=4", "data.n_orientations=4"]
EVAL = ["iw_k=3", "disentanglement.num_samples=300", "disentanglement.dci_predictor=forest",
        "disentanglement.factor_vae.n_train_votes=20", "disentanglement.factor_vae.n_eval_votes=10",
        "disentanglement.factor_vae.batch_size=16", "disentanglement.factor_vae.n_variance_estimate=200",
        "representation=null", "sample_quality.n=200"]


@pytest.mark.parametrize("likelihood", NEW)
def test_a_vae_trains_on_shapes_color_and_eval_gives_finite_bits_per_dim_and_sample_quality(tmp_path, likelihood,
                                                                                             monkeypatch):
    # (until vaelab.metrics.sample_quality takes feature_net_for from vaelab.metrics.feature_net, which knows the
    # shapes_color network: test_sample_quality_uses_the_same_network_choice says whether it does)
    monkeypatch.setattr("vaelab.metrics.sample_quality.feature_net_for", fn.feature_net_for)
    train_cfg = compose_train(tmp_path, [*SMOKE, f"model.likelihood={likelihood}"])
    from vaelab.tasks.train import train

    train(train_cfg)
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["status"] == "completed"
    from vaelab.tasks.evaluate import run_evaluation

    run_evaluation(compose_eval(tmp_path, [f"ckpt_path={record['test_ckpt']}", *EVAL]))
    result = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert result["status"] == "completed" and result["data"] == "ColorShapesDataModule"
    test = result["test"]
    for key in ("bits_per_dim", "iw_bits_per_dim", "fcd", "precision", "recall", "mig"):
        assert math.isfinite(test[f"test/{key}"]), key
    assert test["test/bits_per_dim"] > 0
    offset = 8.0 if likelihood.startswith("gaussian") else 0.0
    assert test["test/bits_per_dim"] == pytest.approx(test["test/neg_elbo"] / (3072 * math.log(2)) + offset)
    if likelihood == "gaussian_shared":  # the learned σ comes back from the checkpoint
        from vaelab.models.checkpoint import model_from_checkpoint

        stored = torch.load(record["test_ckpt"], weights_only=True)
        model = model_from_checkpoint(stored)
        assert model.likelihood.raw_log_std.item() == stored["state_dict"]["model.likelihood.raw_log_std"].item()
        assert model.likelihood.std != pytest.approx(0.1, rel=1e-4)  # it trained
