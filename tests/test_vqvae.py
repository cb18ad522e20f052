"""VQ-VAE (van den Oord et al. 2017) and its second stage: the quantiser against brute force and hand computations,
the loss terms' gradients, the gated PixelCNN's masks, the KL of the code, and both stages through the configs."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch
from conftest import compose_eval, compose_train
from test_callbacks import RecordingWriter, draw

import vaelab
from vaelab.dashboard.images import PriorSamples
from vaelab.errors import ConfigError
from vaelab.metrics.likelihood import evaluate
from vaelab.models.codebook import Codebook, perplexity
from vaelab.models.grid_nets import GridDecoder, GridEncoder
from vaelab.models.objectives import VQVAE, PriorFit
from vaelab.models.pixelcnn import GatedPixelCNN
from vaelab.models.quantizer import QuantizedCode
from vaelab.models.schedules import ConstantBeta
from vaelab.tasks.evaluate import run_evaluation
from vaelab.tasks.train import train
from vaelab.training import AutoencoderModule

DTYPE = torch.float64
VQ_NET = {"encoder": {"_target_": "vaelab.models.grid_nets.GridEncoder", "channels": 8, "residual_channels": 4},
          "decoder": {"_target_": "vaelab.models.grid_nets.GridDecoder", "channels": 8, "residual_channels": 4}}


def code(num_codes=5, dim=3, seed=0, **options) -> QuantizedCode:
    torch.manual_seed(seed)
    made = QuantizedCode(num_codes=num_codes, **options)
    made.build(dim)
    made.codebook.vectors.data = torch.randn(num_codes, dim)  # spread out, so the nearest is never a near tie
    if made.ema:
        made.codebook.ema_sum.copy_(made.codebook.vectors)
    return made.double()


def features(batch=4, dim=3, height=2, width=3, seed=1) -> torch.Tensor:
    return torch.randn(batch, dim, height, width, generator=torch.Generator().manual_seed(seed), dtype=DTYPE)


def brute_force_nearest(h: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
    """The index of the nearest vector at every grid position, by looping over positions and codes."""
    b, _, height, width = h.shape
    out = torch.empty(b, height, width, dtype=torch.long)
    for i in range(b):
        for r in range(height):
            for c in range(width):
                distances = [float(((h[i, :, r, c] - v) ** 2).sum()) for v in vectors]
                out[i, r, c] = min(range(len(vectors)), key=distances.__getitem__)
    return out


# ---------------------------------------------------------------------------------------------------- quantisation
def test_quantisation_picks_the_nearest_codebook_vector():
    vq = code(num_codes=7, dim=3).eval()
    h = features(batch=5)
    expected = brute_force_nearest(h, vq.codebook.vectors.detach())
    assert torch.equal(vq.indices(h), expected)
    z_q = vq.codebook.vectors.detach()[expected].permute(0, 3, 1, 2)
    torch.testing.assert_close(vq.locate(h)[0], z_q, atol=0, rtol=0)
    torch.testing.assert_close(vq(h).z, z_q)  # the decoder sees the quantised vectors


def test_the_gradient_passes_the_quantisation_straight_through():
    vq = code().eval()
    h = features().requires_grad_(True)
    upstream = torch.randn(h.shape, dtype=DTYPE)  # the gradient the decoder hands back at z_q
    (vq(h).z * upstream).sum().backward()
    torch.testing.assert_close(h.grad, upstream, atol=0, rtol=0)
    assert vq.codebook.vectors.grad is None  # the decoder's gradient trains the encoder, not the codebook


@pytest.mark.parametrize("ema", [False, True])
def test_the_codebook_and_commitment_terms_have_their_formulas_and_separate_gradients(ema):
    beta = 0.25
    vq = code(ema=ema).eval()  # (eval: no EMA step, so the vectors stay those the terms were computed with)
    h = features().requires_grad_(True)
    out = vq(h)
    e = vq.codebook.vectors.detach()[brute_force_nearest(h.detach(), vq.codebook.vectors.detach())]
    e = e.permute(0, 3, 1, 2)
    diff = h.detach() - e
    per_image = diff.pow(2).flatten(1).sum(1)
    torch.testing.assert_close(out.extras["commitment"], per_image.mean())
    torch.testing.assert_close(out.extras["codebook"], per_image.mean() * (0.0 if ema else 1.0))

    recon = torch.zeros(h.shape[0], dtype=DTYPE)
    model_out = SimpleNamespace(recon=recon, extras=out.extras)
    loss = VQVAE(schedule=ConstantBeta(beta))(SimpleNamespace(code=vq), None, model_out, 0).loss
    loss.backward()
    batch = h.shape[0]
    # the encoder gets β·∂‖z_e − sg[e]‖²/∂z_e only: the codebook term stops at sg[z_e]
    torch.testing.assert_close(h.grad, beta * 2 * diff / batch)
    if ema:
        assert not isinstance(vq.codebook.vectors, torch.nn.Parameter)
        return
    # the codebook gets ∂‖sg[z_e] − e‖²/∂e only, weight 1: the commitment term stops at sg[e]
    expected = torch.zeros_like(vq.codebook.vectors)
    index = brute_force_nearest(h.detach(), vq.codebook.vectors.detach()).flatten()
    expected.index_add_(0, index, (-2 * diff / batch).permute(0, 2, 3, 1).reshape(-1, diff.shape[1]))
    torch.testing.assert_close(vq.codebook.vectors.grad, expected)


def test_one_ema_step_matches_a_hand_computation():
    gamma, eps = 0.9, 1e-2
    book = Codebook(num_codes=3, dim=2, ema=True, decay=gamma, epsilon=eps, dead_code_steps=0).double()
    book.vectors.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0], [5.0, 5.0]]))
    book.ema_sum.copy_(book.vectors)
    flat = torch.tensor([[0.1, 0.0], [0.0, 0.3], [1.0, 1.2], [0.2, 0.1]], dtype=DTYPE)
    index = book.nearest(flat)
    assert index.tolist() == [0, 0, 1, 0]
    book.update(flat, index)

    count = [gamma * 1 + (1 - gamma) * n for n in (3, 1, 0)]  # N starts at 1
    sums = [[0.3, 0.4], [1.0, 1.2], [0.0, 0.0]]
    start = [[0.0, 0.0], [1.0, 1.0], [5.0, 5.0]]  # m starts at the vectors
    m = [[gamma * start[k][d] + (1 - gamma) * sums[k][d] for d in range(2)] for k in range(3)]
    total = sum(count)
    smoothed = [(count[k] + eps) / (total + 3 * eps) * total for k in range(3)]
    expected = torch.tensor([[m[k][d] / smoothed[k] for d in range(2)] for k in range(3)], dtype=DTYPE)
    torch.testing.assert_close(book.ema_count, torch.tensor(count, dtype=DTYPE))
    torch.testing.assert_close(book.ema_sum, torch.tensor(m, dtype=DTYPE))
    torch.testing.assert_close(book.vectors, expected)


def test_a_code_unused_for_long_enough_is_moved_onto_an_encoder_output():
    vq = code(num_codes=4, dim=2, dead_code_steps=3)
    vq.codebook.vectors.data = torch.tensor([[0.0, 0.0], [10.0, 10.0], [-10.0, 10.0], [10.0, -10.0]], dtype=DTYPE)
    h = torch.randn(2, 2, 2, 2, dtype=DTYPE) * 0.1  # every vector nearest code 0
    outputs = h.permute(0, 2, 3, 1).reshape(-1, 2)
    before = vq.codebook.vectors.detach().clone()
    vq.eval()
    for _ in range(5):
        vq(h)  # in eval mode nothing changes
    torch.testing.assert_close(vq.codebook.vectors.detach(), before)
    vq.train()
    vq(h)
    vq(h)
    torch.testing.assert_close(vq.codebook.vectors.detach(), before)  # unused for 2 steps: not yet
    vq(h)
    after = vq.codebook.vectors.detach()
    torch.testing.assert_close(after[0], before[0])  # the used code stays
    for k in (1, 2, 3):  # each dead code now sits on one of the batch's encoder outputs, each on another
        assert any(torch.equal(after[k], row) for row in outputs)
    assert len({tuple(after[k].tolist()) for k in (1, 2, 3)}) == 3
    assert vq.codebook.idle_steps.tolist() == [0, 0, 0, 0]


def test_perplexity_is_the_number_of_codes_for_even_use_and_one_for_a_single_code():
    assert float(perplexity(torch.tensor([5, 5, 5, 5]))) == pytest.approx(4.0)
    assert float(perplexity(torch.tensor([0, 9, 0, 0]))) == pytest.approx(1.0)
    assert float(perplexity(torch.tensor([1, 1, 2, 0]))) == pytest.approx(math.exp(1.5 * math.log(2)))
    vq = code(num_codes=4, dim=2).eval()
    vq.codebook.vectors.data = torch.tensor([[0.0, 0.0], [10.0, 10.0], [-10.0, 10.0], [10.0, -10.0]], dtype=DTYPE)
    h = vq.codebook.vectors.detach().T.reshape(1, 2, 2, 2)  # each code once
    out = vq(h)
    assert float(out.extras["perplexity"]) == pytest.approx(4.0) and float(out.extras["usage"]) == 4
    out = vq(torch.zeros(1, 2, 2, 2, dtype=DTYPE))
    assert float(out.extras["perplexity"]) == pytest.approx(1.0) and float(out.extras["usage"]) == 1


# ---------------------------------------------------------------------------------------------------- the prior
def test_the_pixelcnn_output_at_a_position_sees_only_the_positions_before_it():
    torch.manual_seed(0)
    prior = GatedPixelCNN(num_codes=5, channels=6, layers=4, kernel_size=3).double()
    height, width = 4, 5
    x = torch.randn(8, 6, height, width, dtype=DTYPE, requires_grad=True)  # (several, so no ReLU hides a path)
    logits = prior.logits_of_features(x)
    for i in range(height * width):
        r, c = divmod(i, width)
        (grad,) = torch.autograd.grad(logits[:, :, r, c].sum(), x, retain_graph=True)
        seen = grad.abs().sum((0, 1)).flatten()  # by raster position
        assert torch.all(seen[i:] == 0), f"position {i} sees positions {(seen[i:] != 0).nonzero().flatten() + i}"
        if c > 0:
            assert seen[i - 1] > 0  # its left neighbour
        if r > 0:
            assert seen[i - width] > 0 and seen[i - width + min(1, width - 1 - c)] > 0  # above, and above-right
    # with four layers the stacks reach every earlier position of a 4×5 grid (no blind spot)
    (grad,) = torch.autograd.grad(logits[:, :, height - 1, width - 1].sum(), x)
    assert torch.all(grad.abs().sum((0, 1)).flatten()[:-1] > 0)


def test_the_pixelcnn_learns_a_constant_grid():
    torch.manual_seed(0)
    prior = GatedPixelCNN(num_codes=8, channels=8, layers=2)
    grids = torch.full((16, 3, 3), 5)
    optimizer = torch.optim.Adam(prior.parameters(), lr=1e-2)
    first = prior.nll(grids).mean().item()
    assert first == pytest.approx(9 * math.log(8), rel=0.2)  # about uniform at the start
    for _ in range(60):
        loss = prior.nll(grids).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert prior.nll(grids).mean().item() < 0.1 * first
    assert torch.all(prior.sample(4, (3, 3), torch.Generator().manual_seed(0)) == 5)


def test_the_nll_is_the_sum_of_the_conditionals():
    torch.manual_seed(0)
    prior = GatedPixelCNN(num_codes=6, channels=4, layers=2).double()
    grids = torch.randint(6, (3, 2, 4))
    log_p = prior.logits(grids).log_softmax(1).gather(1, grids[:, None]).squeeze(1)
    torch.testing.assert_close(prior.nll(grids), -log_p.flatten(1).sum(1))


def test_the_kl_is_hw_log_k_under_the_uniform_prior_and_minus_log_p_under_the_learned_one():
    vq = code(num_codes=5).eval()
    h = features(batch=3, height=2, width=3)
    torch.testing.assert_close(vq(h).kl, torch.full((3,), 6 * math.log(5), dtype=DTYPE))

    torch.manual_seed(0)
    learned = code(num_codes=5, prior=lambda num_codes: GatedPixelCNN(num_codes, channels=4, layers=2)).eval()
    learned.codebook.vectors.data = vq.codebook.vectors.detach().clone()
    grids = learned.indices(h)
    log_p = learned.prior.logits(grids).log_softmax(1).gather(1, grids[:, None]).flatten(1).sum(1)
    torch.testing.assert_close(learned(h).kl, -log_p)
    assert not torch.allclose(learned(h).kl, vq(h).kl)


def test_prior_samples_are_codebook_vectors_on_the_grid_and_repeat_under_a_seed():
    for prior in (None, lambda num_codes: GatedPixelCNN(num_codes, channels=4, layers=2)):
        vq = code(num_codes=5, dim=3, prior=prior).eval()
        with pytest.raises(ValueError, match="grid's size is not known"):
            vq.prior_sample(2, 3)
        vq(features(height=2, width=3))
        z = vq.prior_sample(4, 3, torch.Generator().manual_seed(1))
        assert z.shape == (4, 3, 2, 3)
        vectors = z.permute(0, 2, 3, 1).reshape(-1, 3)
        assert all(any(torch.equal(v, e) for e in vq.codebook.vectors.detach()) for v in vectors)
        torch.testing.assert_close(vq.prior_sample(4, 3, torch.Generator().manual_seed(1)), z, atol=0, rtol=0)


# ---------------------------------------------------------------------------------------------------- the net
@pytest.mark.parametrize(("side", "grid"), [(28, 7), (8, 2), (22, 5), (64, 16)])
def test_the_grid_net_maps_images_to_a_quarter_size_grid_and_back(side, grid):
    encoder = GridEncoder([1, side, side], out_features=3, channels=4, residual_channels=2)
    decoder = GridDecoder([1, side, side], latent_dim=3, channels=4, residual_channels=2)
    h = encoder(torch.rand(2, 1, side, side))
    assert h.shape == (2, 3, grid, grid)
    assert decoder(h).shape == (2, 1, side, side)


def test_a_grid_too_small_for_the_downsampling_is_refused():
    with pytest.raises(ValueError, match="downsamples = 3 is invalid for 4x4"):
        GridEncoder([1, 4, 4], out_features=3, downsamples=3)


# ---------------------------------------------------------------------------------------------------- the model
def vq_module(**kwargs) -> AutoencoderModule:
    torch.manual_seed(0)
    options = {"image_shape": [1, 8, 8], "latent_dim": 3, "net": VQ_NET, "beta": 0.25,
               "code": {"_target_": "vaelab.models.quantizer.QuantizedCode", "num_codes": 6},
               "objective": {"_target_": "vaelab.models.objectives.VQVAE"}}
    return AutoencoderModule(**{**options, **kwargs})


def test_the_evaluation_reports_the_elbo_of_a_code_with_a_kl_that_is_not_variational():
    model = vq_module().model.eval()
    x = torch.rand(10, 1, 8, 8)
    result = evaluate(model, [(x, None)], k=5)
    with torch.no_grad():
        recon = model(x).recon.double().mean().item()
    assert result["kl"] == pytest.approx(4 * math.log(6))  # a 2×2 grid of 6 codes
    assert result["neg_elbo"] == pytest.approx(recon + 4 * math.log(6))
    assert result["bits_per_dim"] is not None
    assert result["neg_iw_bound"] is None and result["active_units"] is None  # no Gaussian posterior


def test_the_samples_view_draws_for_vqvae():
    model = vq_module().model.eval()
    x, y = torch.rand(4, 1, 8, 8), torch.arange(4)
    with torch.no_grad():
        out = model(x)
    writer = draw(PriorSamples(nrow=3, min_side=8, num_images=6), model, x, y, out, step=3, writer=RecordingWriter())
    assert [(c.tag, c.step) for c in writer.calls] == [("val/samples", 3)]


def test_frozen_parts_stay_in_eval_mode_and_out_of_the_optimiser():
    module = vq_module(trainable=["decoder"])
    module.train()
    assert module.model.decoder.training and all(m.training for m in module.model.decoder.modules())
    assert not module.model.training and not module.model.encoder.training and not module.model.code.training
    names = {id(p) for p in module.configure_optimizers().param_groups[0]["params"]}
    assert names == {id(p) for p in module.model.decoder.parameters()}
    assert not any(p.requires_grad for p in module.model.encoder.parameters())
    with pytest.raises(ConfigError, match="'decodr' is not a part of this model"):
        vq_module(trainable=["decodr"])


# ---------------------------------------------------------------------------------------------------- both stages
@pytest.fixture(scope="module")
def stage1(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stage1")
    overrides = ["model=vqvae", "logger=none", "callbacks=minimal", "model.net.encoder.channels=8",
                 "model.net.decoder.channels=8", "model.code.num_codes=8", "trainer.limit_test_batches=1.0"]
    train(compose_train(tmp, overrides))
    return tmp, overrides, json.loads((tmp / "run" / "metrics.json").read_text())


def test_vqvae_trains_through_the_config_and_its_checkpoint_evaluates(stage1, tmp_path):
    run_tmp, _, record = stage1
    assert record["status"] == "completed" and record["best"]["monitor"] == "val/elbo"
    val = record["val"]
    for name in ("codebook", "commitment", "perplexity", "usage", "kl", "elbo"):
        assert f"val/{name}" in val
    assert val["val/kl"] == pytest.approx(4 * math.log(8))  # 8×8 digits: a 2×2 grid of 8 codes
    assert val["val/loss"] == pytest.approx(val["val/recon"] + val["val/codebook"] + 0.25 * val["val/commitment"])
    assert 1 <= val["val/perplexity"] <= val["val/usage"] <= 8

    neg_elbo = run_evaluation(compose_eval(tmp_path, [f"ckpt_path={record['test_ckpt']}"]))
    result = json.loads((tmp_path / "eval" / "metrics.json").read_text())["test"]
    assert neg_elbo == result["test/neg_elbo"] == pytest.approx(-record["test"]["test/elbo"], rel=1e-5)
    assert result["test/kl"] == pytest.approx(4 * math.log(8))


def test_the_prior_stage_trains_the_prior_alone_from_the_first_stages_checkpoint(stage1, tmp_path):
    run_tmp, overrides, record = stage1
    first = torch.load(record["test_ckpt"], weights_only=True)["state_dict"]
    overrides = [o if o != "model=vqvae" else "model=vqvae_prior" for o in overrides]
    cfg = compose_train(tmp_path, [*overrides, f"model.init_from={record['test_ckpt']}",
                                   "model.code.prior.channels=8", "model.code.prior.layers=2"])
    train(cfg)
    second = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert second["status"] == "completed" and second["best"]["monitor"] == "val/elbo"
    state = torch.load(second["test_ckpt"], weights_only=True)["state_dict"]
    # every weight and buffer of the first stage is as it was (no codebook update, no restart, no step count)
    for key, value in first.items():
        torch.testing.assert_close(state[key], value, atol=0, rtol=0, msg=key)
    assert any(k.startswith("model.code.prior.") for k in state)
    # the same reconstructions, another KL: −log p(codes) under the prior instead of h·w·log K
    assert second["val"]["val/recon"] == pytest.approx(record["val"]["val/recon"], rel=1e-5)
    assert second["val"]["val/loss"] == pytest.approx(second["val"]["val/kl"])
    assert second["val"]["val/kl"] != pytest.approx(4 * math.log(8))

    model = vaelab.load(second["test_ckpt"])  # the checkpoint alone rebuilds the model with its prior
    assert isinstance(model.code.prior, GatedPixelCNN)
    samples = model.sample(3, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (3, 1, 8, 8)
    torch.testing.assert_close(model.sample(3, generator=torch.Generator().manual_seed(0)), samples)


def test_the_prior_stage_refuses_a_checkpoint_of_other_settings(stage1, tmp_path):
    _, _, record = stage1
    with pytest.raises(ConfigError, match=r"model.code.num_codes: 8 in the checkpoint, 16 here") as info:
        vq_module(image_shape=[1, 8, 8], latent_dim=16, net={
            "encoder": {**VQ_NET["encoder"], "channels": 8}, "decoder": {**VQ_NET["decoder"], "channels": 8}},
            code={"_target_": "vaelab.models.quantizer.QuantizedCode", "num_codes": 16},
            init_from=record["test_ckpt"], trainable=["decoder"])
    assert record["test_ckpt"] in str(info.value)
    with pytest.raises(ConfigError, match="there is no such file"):
        vq_module(init_from=str(tmp_path / "missing.ckpt"))


def test_the_prior_objective_needs_a_prior():
    vq = code()
    out = SimpleNamespace(kl=torch.zeros(2), extras={})
    with pytest.raises(ValueError, match="set model.code.prior"):
        PriorFit()(SimpleNamespace(code=vq), None, out, 0)
    with pytest.raises(ValueError, match="needs a quantised code"):
        VQVAE()(SimpleNamespace(code=SimpleNamespace()), None, SimpleNamespace(extras={}, recon=torch.zeros(2)), 0)


def test_a_quantized_code_needs_a_grid_net():
    with pytest.raises(ValueError, match="model/net=vqvae"):
        AutoencoderModule(image_shape=[1, 8, 8], latent_dim=3,
                          code={"_target_": "vaelab.models.quantizer.QuantizedCode"},
                          objective={"_target_": "vaelab.models.objectives.VQVAE"}).model(torch.rand(2, 1, 8, 8))


def test_every_process_of_distributed_training_makes_the_same_codebook_update(tmp_path):
    import torch.multiprocessing as mp
    from codebook_processes import update_on_one_of_two_processes  # (a light module: the processes import it)

    results = str(tmp_path / "book")
    mp.spawn(update_on_one_of_two_processes, args=(str(tmp_path / "init"), results), nprocs=2)
    for ema in (False, True):
        first, second = (torch.load(f"{results}.{ema}.{rank}") for rank in (0, 1))
        for key in first:
            torch.testing.assert_close(first[key], second[key], atol=0, rtol=0, msg=f"ema={ema}: {key}")
        torch.manual_seed(0)
        assert not torch.equal(first["vectors"], Codebook(6, 2, ema=ema).vectors)  # (it did change)


def test_the_grid_size_comes_from_the_latest_pass_or_the_loaded_weights():
    vq = code()
    vq(features(height=2, width=3))
    other = code()
    other(features(height=4, width=5))
    other.load_state_dict(vq.state_dict())
    assert other.grid_shape() == (2, 3)  # the checkpoint's
    other(features(height=4, width=5))
    assert other.grid_shape() == (4, 5)  # and again the pass's
