"""VQ-VAE-2 (model=vqvae2, Razavi et al. 2019) and its prior stage (model=vqvae2_prior): the grids of both levels,
the bottom quantiser's dependence on the top, the loss terms of both levels, the prior's causality, normalisation
and sampling, the settings refused, and both stages through the configs. Each test names the plausible wrong
version it would catch."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch
from conftest import compose_train

import vaelab
from vaelab.errors import ConfigError
from vaelab.models import Autoencoder
from vaelab.models.objectives.vqvae2 import LEVEL_TERMS, VQVAE2
from vaelab.models.pixelcnn import GatedPixelCNN
from vaelab.models.schedules import ConstantBeta
from vaelab.models.two_level_nets import TwoLevelGridEncoder, bottom_downsamples
from vaelab.models.two_level_prior import TwoLevelPixelCNNPrior
from vaelab.models.two_level_quantizer import TwoLevelQuantizedCode
from vaelab.tasks.train import train

DTYPE = torch.float64
NET = {"encoder": {"_target_": "vaelab.models.two_level_nets.TwoLevelGridEncoder", "channels": 8,
                   "residual_channels": 4, "residual_blocks": 1},
       "decoder": {"_target_": "vaelab.models.two_level_nets.TwoLevelGridDecoder", "channels": 8,
                   "residual_channels": 4, "residual_blocks": 1}}
PRIOR = {"_target_": "vaelab.models.two_level_prior.TwoLevelPixelCNNPrior", "_partial_": True, "channels": 6,
         "layers": 3}


def code_config(top_codes=5, bottom_codes=6, ema=False, prior=False, **kwargs) -> dict:
    return {"_target_": "vaelab.models.two_level_quantizer.TwoLevelQuantizedCode", "top_codes": top_codes,
            "bottom_codes": bottom_codes, "channels": 8, "residual_channels": 4, "residual_blocks": 1, "ema": ema,
            "dead_code_steps": 0, "prior": PRIOR if prior else None, **kwargs}


def model(side=32, latent_dim=6, seed=0, **kwargs) -> Autoencoder:
    torch.manual_seed(seed)
    made = Autoencoder([1, side, side], latent_dim=latent_dim, code=code_config(**kwargs), net=NET).double()
    spread_out(made.code)
    return made


def spread_out(code: TwoLevelQuantizedCode) -> None:
    """Codebook vectors of the encoder outputs' scale, so the batch's vectors choose several codes (the initial
    vectors, in ±1/K, all sit at the centre of the outputs: every position would choose the same code)."""
    with torch.no_grad():
        for level in (code.top, code.bottom):
            book = level.codebook
            book.vectors.copy_(torch.randn(book.vectors.shape, generator=torch.Generator().manual_seed(7)) * 0.3)
            if book.ema:
                book.ema_sum.copy_(book.vectors)


def images(n=4, side=32, seed=0) -> torch.Tensor:
    return torch.rand(n, 1, side, side, generator=torch.Generator().manual_seed(seed), dtype=DTYPE)


# ---------------------------------------------------------------------------------------------------- the grids
@pytest.mark.parametrize(("side", "bottom", "top"), [(28, 14, 7), (32, 8, 4), (64, 16, 8)])
def test_both_levels_have_their_grids_and_the_decoder_reads_both(side, bottom, top):
    """Wrong versions caught: the fewest stride-2 stages instead of the most that halve (32×32 → a 16×16 bottom
    grid), two stages whatever the size (28×28 → 7×7, which does not halve), a top grid of the bottom's size, the
    decoder reading one level only (z of D channels, not 2D)."""
    m = model(side=side).eval()
    x = images(side=side)
    with torch.no_grad():
        out = m(x)
        top_index, bottom_index = m.code.indices(m.features(x))
    assert top_index.shape == (4, top, top) and bottom_index.shape == (4, bottom, bottom)
    assert m.code.grid_shapes() == ((top, top), (bottom, bottom))
    assert out.z.shape == (4, 6, bottom, bottom)  # [e_bottom ; U(e_top)]: 2D = model.latent_dim channels
    assert out.x_out.shape == x.shape
    assert int(top_index.max()) < 5 and int(bottom_index.max()) < 6


def test_the_deterministic_code_is_what_the_pass_decodes():
    """``encode`` (reconstructions, embeddings) gives the z of an evaluation pass, [e_bottom ; U(e_top)] of the
    indices found. Wrong versions caught: the levels joined in the other order, or the top not upsampled by the
    same U, in one of the two paths."""
    m = model().eval()
    x = images()
    with torch.no_grad():
        z = m(x).z
        top_index, bottom_index = m.code.indices(m.features(x))
        torch.testing.assert_close(m.encode(x)[0], z)
        torch.testing.assert_close(z[:, :3], m.code.bottom.vectors(bottom_index))
        torch.testing.assert_close(z[:, 3:], m.code.upsample_top(m.code.top.vectors(top_index)))


def test_the_automatic_choice_and_a_given_number_of_stages():
    """Wrong version caught: a rule that accepts a given number of stages leaving an odd grid."""
    assert bottom_downsamples([1, 28, 28], None, "k") == 1
    assert bottom_downsamples([1, 32, 32], None, "k") == 2
    assert bottom_downsamples([1, 32, 32], 1, "k") == 1  # 16×16, which halves too
    with pytest.raises(ConfigError, match=r"model.net.encoder.downsamples = 2 is invalid for 28x28 images: it leaves "
                                          r"a 7x7 bottom code grid.*use 1"):
        TwoLevelGridEncoder([1, 28, 28], out_features=4, downsamples=2)
    with pytest.raises(ConfigError, match=r"k = null cannot be chosen for 6x6 images"):
        bottom_downsamples([1, 6, 6], None, "k")


# ---------------------------------------------------------------------------------------------------- the code
def test_the_bottom_quantisers_input_depends_on_the_top_code():
    """Changing the top codebook alone (the encoder's features as they were) changes the bottom quantiser's input.
    Wrong version caught: the bottom conditioned on the top encoder's output before quantisation (or not on the top
    at all), which no change of the top code would reach."""
    m = model().eval()
    seen = []
    m.code.bottom.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    x = images()
    with torch.no_grad():
        h = m.features(x)
        m.code(h)
        m.code.top.codebook.vectors.add_(0.5)  # other top vectors (the same codes, as all moved alike)
        m.code(h)
    assert not torch.allclose(seen[0], seen[1])
    # the bottom quantiser's input is W [h ; D_top(e_top)], with the decoded *quantised* top
    with torch.no_grad():
        e_top = m.code.top.locate(m.code.top_encoder(h))[0]
        torch.testing.assert_close(seen[1], m.code.bottom_input_of(h, e_top))


@pytest.mark.parametrize("prior", [False, True])
def test_the_kl_is_minus_log_p_of_both_grids(prior):
    """Uniform prior: (h/2·w/2)·log K_top + h·w·log K_bottom (32×32: 16·log 5 + 64·log 6). Learned prior:
    −log p_top(k_top) − log p_bottom(k_bottom | k_top), each from the PixelCNNs' softmaxes by hand. Wrong versions
    caught: one level's KL left out, the two K swapped, the bottom's likelihood not conditioned on the top."""
    m = model(prior=prior).eval()
    x = images()
    with torch.no_grad():
        kl = m(x).kl
        top, bottom = m.code.indices(m.features(x))
    if not prior:
        torch.testing.assert_close(kl, torch.full((4,), 16 * math.log(5) + 64 * math.log(6), dtype=DTYPE))
        return
    p = m.code.prior
    with torch.no_grad():
        top_log_p = p.top.logits(top).log_softmax(1).gather(1, top[:, None]).flatten(1).sum(1)
        bottom_logits = p.bottom.logits(bottom, p.condition(top))
        bottom_log_p = bottom_logits.log_softmax(1).gather(1, bottom[:, None]).flatten(1).sum(1)
    torch.testing.assert_close(kl, -(top_log_p + bottom_log_p))


# ---------------------------------------------------------------------------------------------------- the loss
def test_the_loss_holds_both_levels_terms_and_each_codebook_gets_its_gradient():
    """loss = recon + Σ_l codebook_l + β Σ_l commitment_l; after one backward pass both codebooks have a gradient,
    and the top encoder a gradient through the decoder's top half of z alone (straight through at the top too).
    Wrong versions caught: a level's terms left out of the loss (that codebook then gets no gradient), the top
    vectors handed to the decoder without the straight-through path (the top encoder then learns from the bottom's
    terms only)."""
    beta = 0.25
    m = model().train()
    x = images()
    out = m(x)
    value = VQVAE2(schedule=ConstantBeta(beta))(m, x, out, 0)
    terms = value.terms
    assert set(LEVEL_TERMS) <= set(terms) and {"codebook", "commitment"} <= set(terms)
    expected = (out.recon.mean() + terms["codebook_top"] + terms["codebook_bottom"]
                + beta * (terms["commitment_top"] + terms["commitment_bottom"]))
    torch.testing.assert_close(value.loss, expected)
    for level in ("top", "bottom"):
        assert terms[f"commitment_{level}"].item() > 0 and terms[f"codebook_{level}"].item() > 0
        assert 1 <= float(terms[f"perplexity_{level}"]) <= float(terms[f"usage_{level}"])
    value.loss.backward()
    for level in (m.code.top, m.code.bottom):
        assert level.codebook.vectors.grad is not None and level.codebook.vectors.grad.abs().sum() > 0

    m.zero_grad()
    m(x).z[:, m.code.dim:].pow(2).sum().backward()  # (what the decoder reads of the top level: U(e_top))
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.code.top_encoder.parameters()
               if p.dim() > 1)


def test_both_ema_codebooks_move_in_training_and_neither_in_evaluation():
    """Wrong version caught: one level's quantiser left out of the pass's updates (built but never trained)."""
    m = model(ema=True)
    x = images()
    before = [level.codebook.vectors.clone() for level in (m.code.top, m.code.bottom)]
    with torch.no_grad():
        m.eval()(x)
        for level, old in zip((m.code.top, m.code.bottom), before, strict=True):
            torch.testing.assert_close(level.codebook.vectors, old, atol=0, rtol=0)
        m.train()(x)
    for level, old in zip((m.code.top, m.code.bottom), before, strict=True):
        assert not torch.allclose(level.codebook.vectors, old)


# ---------------------------------------------------------------------------------------------------- the prior
def two_level_prior(top_codes=3, bottom_codes=4, seed=0, **kwargs) -> TwoLevelPixelCNNPrior:
    torch.manual_seed(seed)
    prior = TwoLevelPixelCNNPrior(top_codes, bottom_codes, **{"channels": 6, "layers": 4, **kwargs}).double()
    with torch.no_grad():  # larger weights: conditionals far from uniform, so a leak or a lost input shows
        for p in prior.parameters():
            p.mul_(2.0)
    return prior


def raster_unchanged_before(a: torch.Tensor, b: torch.Tensor, position: int) -> bool:
    """Whether logits (B, K, H, W) ``a`` and ``b`` agree at every position before ``position`` in raster order."""
    return torch.equal(a.flatten(2)[:, :, :position], b.flatten(2)[:, :, :position])


def test_changing_a_code_changes_no_logit_before_it_at_either_level():
    """Changing index (i, j) of the top grid changes no top logit before (i, j) in raster order; changing index (i, j)
    of the bottom grid (the top fixed) changes no bottom logit before it, but some at or after it. Wrong version
    caught: the vertical stack's features reaching the horizontal stack unshifted (row r then sees its own row's
    later positions), in the unconditional and the conditioned PixelCNN alike."""
    prior = two_level_prior().eval()
    g = torch.Generator().manual_seed(1)
    top, bottom = torch.randint(3, (2, 3, 3), generator=g), torch.randint(4, (2, 6, 6), generator=g)
    with torch.no_grad():
        condition = prior.condition(top)
        top_logits, bottom_logits = prior.top.logits(top), prior.bottom.logits(bottom, condition)
        for grid, logits, k, net in ((top, top_logits, 3, lambda t: prior.top.logits(t)),
                                     (bottom, bottom_logits, 4, lambda b: prior.bottom.logits(b, condition))):
            width = grid.shape[-1]
            later_changed = 0
            for position in range(grid[0].numel()):
                r, c = divmod(position, width)
                changed = grid.clone()
                changed[:, r, c] = (changed[:, r, c] + 1) % k
                new = net(changed)
                assert raster_unchanged_before(logits, new, position), f"position {position} leaks backwards"
                later_changed += not torch.equal(logits.flatten(2)[:, :, position + 1:],
                                                 new.flatten(2)[:, :, position + 1:])
            assert later_changed >= grid[0].numel() - 1  # (every position but the last reaches a later one)


def test_the_conditioned_pixelcnn_output_sees_only_earlier_positions_and_all_of_the_condition():
    """The gradient form of the causality test (as tests/test_vqvae.py's), for the bottom PixelCNN given a map: the
    logits at each position have no gradient from the features at it or after it, and have one from the map at
    their own position. Wrong versions caught: the vertical stack's features reaching the horizontal stack unshifted,
    a map that never reaches the gates."""
    torch.manual_seed(0)
    prior = GatedPixelCNN(num_codes=5, channels=6, layers=4, condition_channels=3).double()
    height, width = 4, 5
    x = torch.randn(8, 6, height, width, dtype=DTYPE, requires_grad=True)
    s = torch.randn(8, 3, height, width, dtype=DTYPE, requires_grad=True)
    logits = prior.logits_of_features(x, s)
    for i in range(height * width):
        r, c = divmod(i, width)
        grad_x, grad_s = torch.autograd.grad(logits[:, :, r, c].sum(), (x, s), retain_graph=True)
        seen = grad_x.abs().sum((0, 1)).flatten()
        assert torch.all(seen[i:] == 0), f"position {i} sees positions {(seen[i:] != 0).nonzero().flatten() + i}"
        assert grad_s[:, :, r, c].abs().sum() > 0  # the condition at its own position reaches it


def test_the_bottom_logits_change_with_the_top_codes():
    """Wrong version caught: a conditioning map built but not added inside the gates (the bottom prior then ignores
    the top, and p(k_bottom | k_top) = p(k_bottom))."""
    prior = two_level_prior().eval()
    g = torch.Generator().manual_seed(2)
    top, bottom = torch.randint(3, (2, 3, 3), generator=g), torch.randint(4, (2, 6, 6), generator=g)
    with torch.no_grad():
        first = prior.bottom.logits(bottom, prior.condition(top))
        other = prior.bottom.logits(bottom, prior.condition((top + 1) % 3))
    assert not torch.allclose(first, other)
    assert (first - other).flatten(2).abs().amax((0, 1))[0] > 0  # the very first bottom position depends on the top


def every_pair(top_codes: int, bottom_codes: int, top_shape, bottom_shape) -> tuple[torch.Tensor, torch.Tensor]:
    """Every pair of index grids of the given shapes, as two batches."""
    tops = torch.tensor(list(itertools.product(range(top_codes), repeat=math.prod(top_shape)))).view(-1, *top_shape)
    bottoms = torch.tensor(list(itertools.product(range(bottom_codes), repeat=math.prod(bottom_shape))))
    bottoms = bottoms.view(-1, *bottom_shape)
    t = tops.repeat_interleave(len(bottoms), 0)
    b = bottoms.repeat(len(tops), 1, 1)
    return t, b


def test_the_prior_is_normalised_over_every_pair_of_grids_and_its_samples_have_its_probabilities():
    """A 1×1 top grid of 2 codes and a 2×2 bottom grid of 2 codes: the 32 pairs' probabilities exp(−nll) sum to 1
    (a product of normalised conditionals, none of which sees its own or a later index), and 20,000 draws of
    ``sample`` (top first, then bottom given top) hit each pair with that probability (within 5 binomial standard
    deviations). Wrong versions caught: a conditional that sees its own position (the sum is then not 1), the
    bottom drawn given another top than the one drawn (the frequencies then disagree)."""
    prior = two_level_prior(top_codes=2, bottom_codes=2, seed=3).eval()
    top, bottom = every_pair(2, 2, (1, 1), (2, 2))
    with torch.no_grad():
        p = torch.exp(-prior.nll(top, bottom))
    assert float(p.sum()) == pytest.approx(1.0, abs=1e-9)
    assert float(p.max()) > 2.0 / 32  # far from uniform, so the frequencies test something

    n = 20_000
    drawn_top, drawn_bottom = prior.sample(n, (1, 1), (2, 2), torch.Generator().manual_seed(4))
    assert drawn_top.shape == (n, 1, 1) and drawn_bottom.shape == (n, 2, 2)
    index = drawn_top.flatten(1) @ torch.tensor([16]) + drawn_bottom.flatten(1) @ torch.tensor([8, 4, 2, 1])
    frequency = torch.bincount(index, minlength=32).double() / n
    sd = (p * (1 - p) / n).sqrt()
    assert torch.all((frequency - p).abs() <= 5 * sd + 1e-4), (frequency - p).abs().max()


def test_a_conditioned_pixelcnn_needs_its_map_and_an_unconditional_one_takes_none():
    """Wrong version caught: a missing condition silently read as zeros (a bottom prior that ignores the top)."""
    grids = torch.zeros(2, 3, 3, dtype=torch.long)
    with pytest.raises(ValueError, match=r"conditional: pass a conditioning map of shape \(2, 3, 3, 3\)"):
        GatedPixelCNN(4, channels=4, layers=1, condition_channels=3).nll(grids)
    with pytest.raises(ValueError, match="unconditional"):
        GatedPixelCNN(4, channels=4, layers=1).nll(grids, torch.zeros(2, 3, 3, 3))
    # the unconditional PixelCNN's weights are as they were (VQ-VAE's stage-2 checkpoints still load)
    assert not any("condition" in key for key in GatedPixelCNN(4, channels=4, layers=2).state_dict())


# ---------------------------------------------------------------------------------------------------- settings
@pytest.mark.parametrize(("options", "message"), [
    ({"top_codes": 1}, r"model.code.top_codes = 1 is invalid: it must be an integer >= 2"),
    ({"bottom_codes": 0}, r"model.code.bottom_codes = 0 is invalid: it must be an integer >= 2"),
    ({"channels": 0}, r"model.code.channels = 0 is invalid"),
])
def test_bad_code_settings_are_refused_naming_the_key(options, message):
    with pytest.raises(ConfigError, match=message):
        TwoLevelQuantizedCode(**options)


def test_an_odd_latent_dim_and_a_grid_that_does_not_halve_are_refused_naming_the_key():
    """Wrong versions caught: z's channels split unevenly between the levels, a 7×7 bottom grid quantised with a
    3×3 top (the decoder's upsampled top then no longer lines up with the bottom)."""
    with pytest.raises(ConfigError, match=r"model.latent_dim = 5 is invalid for VQ-VAE-2's code: .* must be even"):
        model(latent_dim=5)
    vq_net = {"encoder": {"_target_": "vaelab.models.grid_nets.GridEncoder", "channels": 4, "residual_channels": 2},
              "decoder": {"_target_": "vaelab.models.grid_nets.GridDecoder", "channels": 4, "residual_channels": 2}}
    m = Autoencoder([1, 28, 28], latent_dim=6, code={**code_config(), "channels": 4}, net=vq_net)
    with pytest.raises(ConfigError, match=r"model.net.encoder.downsamples: .* 7x7 bottom code grid, whose sides do "
                                          r"not halve"):
        m(torch.rand(2, 1, 28, 28))


# ---------------------------------------------------------------------------------------------------- both stages
SMALL = ["model.code.channels=8", "model.code.residual_channels=4", "model.code.residual_blocks=1",
         "model.code.top_codes=8", "model.code.bottom_codes=8", "model.latent_dim=8",
         "model.net.encoder.channels=8", "model.net.decoder.channels=8", "model.net.encoder.residual_channels=4",
         "model.net.decoder.residual_channels=4", "data.batch_size=16", "data.eval_batch_size=32",
         "logger=none", "callbacks=minimal"]


def test_both_stages_train_on_32x32_shapes_and_the_second_samples(tmp_path):
    """Stage 1 (model=vqvae2) for a few batches of data=shapes, then stage 2 (model=vqvae2_prior) from its
    checkpoint: the second changes no weight of the first, its loss is the KL −log p(codes) under the learned
    prior (no longer the uniform constant), and the checkpoint alone samples images: top grid, bottom grid given it,
    decoded. Wrong versions caught: a prior stage that updates the frozen codebooks (EMA in training mode), a KL
    still uniform under the learned prior, sampling that needs more than the checkpoint."""
    first_dir, second_dir = tmp_path / "one", tmp_path / "two"
    train(compose_train(first_dir, ["model=vqvae2", "data=shapes", *SMALL]))
    record = json.loads((first_dir / "run" / "metrics.json").read_text())
    assert record["status"] == "completed"
    val = record["val"]
    uniform = 16 * math.log(8) + 64 * math.log(8)  # a 4×4 top grid and an 8×8 bottom grid of 8 codes each
    assert val["val/kl"] == pytest.approx(uniform)
    for name in ("codebook", "commitment", *LEVEL_TERMS):
        assert f"val/{name}" in val
    assert val["val/loss"] == pytest.approx(val["val/recon"] + val["val/codebook"] + 0.25 * val["val/commitment"])
    assert val["val/commitment"] == pytest.approx(val["val/commitment_top"] + val["val/commitment_bottom"])

    cfg = compose_train(second_dir, ["model=vqvae2_prior", "data=shapes", *SMALL,
                                     f"model.init_from={record['test_ckpt']}", "model.code.prior.channels=8",
                                     "model.code.prior.layers=2"])
    train(cfg)
    second = json.loads((second_dir / "run" / "metrics.json").read_text())
    assert second["status"] == "completed"
    before = torch.load(record["test_ckpt"], weights_only=True)["state_dict"]
    after = torch.load(second["test_ckpt"], weights_only=True)["state_dict"]
    for key, value in before.items():
        torch.testing.assert_close(after[key], value, atol=0, rtol=0, msg=key)
    assert any(k.startswith("model.code.prior.bottom.") for k in after)
    assert second["val"]["val/loss"] == pytest.approx(second["val"]["val/kl"])
    assert second["val"]["val/kl"] != pytest.approx(uniform)
    assert second["val"]["val/recon"] == pytest.approx(val["val/recon"], rel=1e-5)

    loaded = vaelab.load(second["test_ckpt"])
    assert isinstance(loaded.code.prior, TwoLevelPixelCNNPrior)
    with torch.no_grad():
        samples = loaded.sample(4, generator=torch.Generator().manual_seed(0))
        again = loaded.sample(4, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (4, 1, 32, 32) and torch.all((samples >= 0) & (samples <= 1))
    torch.testing.assert_close(again, samples)
