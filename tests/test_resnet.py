"""The residual conv net (vaelab.models.resnets, model/net=resnet): shapes sized from the data, the stage rule and its
errors, the pre-activation block's skip, gradients, GroupNorm's per-image independence, channels-last, and a training
run through the real config. Each test names the plausible wrong version it would catch."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import compose_train
from hydra.errors import InstantiationException
from PIL import Image

import vaelab
from vaelab.errors import ConfigError
from vaelab.models import Autoencoder
from vaelab.models.resnets import PreActBlock, ResNetDecoder, ResNetEncoder, ResNetShape, exact_halvings, stages
from vaelab.tasks.recording import causes
from vaelab.tasks.train import build_model, train

#: image shape -> (stride-2 stages, smallest map) under downsamples=null: halve exactly while both sides stay >= 4
GEOMETRY = {(1, 28, 28): (2, (7, 7)), (3, 32, 32): (3, (4, 4)), (3, 64, 64): (4, (4, 4)), (1, 8, 8): (1, (4, 4)),
            (3, 32, 64): (3, (4, 8)), (1, 30, 30): (1, (15, 15))}
SMALL = {"base_channels": 8, "max_channels": 32, "groups": 4}


def ids(shape) -> str:
    return "x".join(map(str, shape))


def net(shape, upsample: str = "nearest", **kwargs) -> tuple[ResNetEncoder, ResNetDecoder]:
    torch.manual_seed(0)
    settings = {**SMALL, **kwargs}
    return (ResNetEncoder(shape, out_features=6, **settings),
            ResNetDecoder(shape, latent_dim=3, upsample=upsample, **settings))


# ------------------------------------------------------------------------------------------------------ shapes
@pytest.mark.parametrize("upsample", ["nearest", "transpose"])
@pytest.mark.parametrize("shape", list(GEOMETRY), ids=ids)
def test_shapes_and_the_stages_chosen_from_the_image(shape, upsample):
    """Catches a stopping rule off by one (a 2x2 map for 32x32 and 64x64, or 64x64 stopping at 8x8), a decoder that
    does not mirror the encoder's stages, and an upsampling that does not restore the image's size."""
    encoder, decoder = net(shape, upsample)
    n, grid = GEOMETRY[shape]
    assert (encoder.downsamples, encoder.grid) == (decoder.downsamples, decoder.grid) == (n, grid)
    strided = [m for m in encoder.features if isinstance(m, torch.nn.Conv2d) and m.stride == (2, 2)]
    assert len(strided) == n
    x = torch.rand(2, *shape)
    h = encoder(x)
    assert h.shape == (2, 6)
    assert encoder.features(x).shape[2:] == grid
    assert decoder(h[:, :3]).shape == (2, *shape)


def test_widths_double_each_stage_up_to_the_cap():
    """Catches widths that stay at base_channels, or that ignore max_channels."""
    shape = ResNetShape.of((3, 64, 64), "encoder", base_channels=16, max_channels=64, blocks_per_stage=1,
                           downsamples=None, norm="group", groups=8)
    assert shape.widths == (16, 32, 64, 64, 64)
    assert [m.out_channels for m in ResNetEncoder((3, 64, 64), 4, base_channels=16, max_channels=64).features
            if isinstance(m, torch.nn.Conv2d) and m.stride == (2, 2)] == [32, 64, 64, 64]


def test_exact_halvings():
    assert [exact_halvings(s) for s in (1, 7, 8, 12, 28, 64, 96)] == [0, 0, 3, 2, 2, 6, 5]


# ---------------------------------------------------------------------------------------------- refused settings
@pytest.mark.parametrize("shape", [(3, 27, 27), (1, 28, 9), (1, 6, 6), (3, 4, 4)], ids=ids)
@pytest.mark.parametrize("cls", [ResNetEncoder, ResNetDecoder])
def test_an_image_that_cannot_be_halved_is_refused_naming_the_key(cls, shape):
    role = "encoder" if cls is ResNetEncoder else "decoder"
    with pytest.raises(ConfigError, match=rf"model\.net\.{role}\.downsamples = null cannot be chosen for "
                                          rf"{shape[1]}x{shape[2]} images: .*data\.image_size"):
        cls(shape, 4)


def test_downsamples_zero_takes_an_odd_side_as_it_is():
    encoder, decoder = net((3, 27, 27), downsamples=0)
    assert encoder.grid == (27, 27)
    assert decoder(encoder(torch.rand(2, 3, 27, 27))[:, :3]).shape == (2, 3, 27, 27)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"downsamples": 3}, r"model\.net\.{role}\.downsamples = 3 is invalid for 28x28 images: .*divisible by 2\^3 = 8; "
                         r"use at most 2"),
    ({"downsamples": -1}, r"model\.net\.{role}\.downsamples = -1 is invalid: it must be an integer >= 0"),
    ({"downsamples": True}, r"model\.net\.{role}\.downsamples = True is invalid"),
    ({"base_channels": 0}, r"model\.net\.{role}\.base_channels = 0 is invalid: it must be an integer >= 1"),
    ({"max_channels": 2.5}, r"model\.net\.{role}\.max_channels = 2.5 is invalid"),
    ({"blocks_per_stage": -1}, r"model\.net\.{role}\.blocks_per_stage = -1 is invalid: it must be an integer >= 0"),
    ({"norm": "layer"}, r"model\.net\.{role}\.norm = 'layer' is invalid: choose one of group, batch, none"),
    ({"base_channels": 12}, r"model\.net\.{role}\.groups = 8 is invalid for stage widths \[12, 24, 48\]: .*divisible"),
])
@pytest.mark.parametrize("cls", [ResNetEncoder, ResNetDecoder])
def test_bad_settings_are_refused_naming_the_key(cls, kwargs, message):
    role = "encoder" if cls is ResNetEncoder else "decoder"
    with pytest.raises(ConfigError, match=message.format(role=role)):
        cls((1, 28, 28), 4, **kwargs)


def test_an_unknown_upsampling_is_refused_naming_the_key():
    with pytest.raises(ConfigError, match=r"model\.net\.decoder\.upsample = 'bilinear' is invalid: choose one of "
                                          r"nearest, transpose"):
        ResNetDecoder((3, 32, 32), 4, upsample="bilinear")


def test_stages_refuses_through_its_key():
    with pytest.raises(ConfigError, match=r"^my\.key = 5 is invalid for 8x8 images"):
        stages((1, 8, 8), 5, "my.key")


# ---------------------------------------------------------------------------------------------- parameter count
def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_parameter_count_is_sane_and_follows_the_settings():
    """The default net on 64x64 colour images with 32 latents is of the literature's size (pythae's CelebA ResNet
    and PyTorch-VAE's conv VAE have a few million); widths that do not double (a bug) give well under a million.
    blocks_per_stage adds the same blocks at every resolution in both nets: the count is linear in it."""
    shape = (3, 64, 64)
    full = count(ResNetEncoder(shape, 64)) + count(ResNetDecoder(shape, 32))
    assert 5_000_000 < full < 12_000_000
    by_blocks = [count(ResNetEncoder(shape, 64, blocks_per_stage=b)) + count(ResNetDecoder(shape, 32,
                 blocks_per_stage=b)) for b in (0, 1, 2)]
    assert by_blocks[1] == full
    assert by_blocks[0] < by_blocks[1] < by_blocks[2]
    assert by_blocks[2] - by_blocks[1] == by_blocks[1] - by_blocks[0]
    # two 3x3 convolutions with biases and two GroupNorms per block, at widths 32, 64, 128, 256, 256 on each side
    per_block = sum(2 * (9 * w * w + w) + 4 * w for w in (32, 64, 128, 256, 256))
    assert by_blocks[1] - by_blocks[0] == 2 * per_block


# ---------------------------------------------------------------------------------------------- the residual block
def test_a_block_whose_last_conv_is_zero_is_the_identity():
    """x_{l+1} = x_l + F(x_l): with F's last convolution zeroed the block passes x through exactly. Catches a block
    without its skip (it would give zeros) and a skip that goes through the norm or activation (post-activation)."""
    shape = ResNetShape.of((3, 32, 32), "encoder", 16, 64, 1, None, "group", 8)
    torch.manual_seed(0)
    block = PreActBlock(16, shape)
    x = torch.randn(4, 16, 8, 8)
    assert not torch.allclose(block(x), x)  # the residual branch does contribute
    last = block.body[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
    torch.testing.assert_close(block(x), x, rtol=0, atol=0)


def test_every_net_block_is_pre_activation_with_a_skip():
    """Zeroing every block's last convolution makes a net with blocks equal to the same net without them."""
    torch.manual_seed(0)
    encoder = ResNetEncoder((3, 32, 32), 6, blocks_per_stage=1, **SMALL)
    plain = ResNetEncoder((3, 32, 32), 6, blocks_per_stage=0, **SMALL)
    with torch.no_grad():
        for block in (m for m in encoder.modules() if isinstance(m, PreActBlock)):
            block.body[-1].weight.zero_()
            block.body[-1].bias.zero_()
    kept = [m for m in encoder.features if not isinstance(m, PreActBlock)]
    plain.features.load_state_dict(torch.nn.Sequential(*kept).state_dict())
    plain.head.load_state_dict(encoder.head.state_dict())
    x = torch.rand(3, 3, 32, 32)
    torch.testing.assert_close(encoder(x), plain(x))


# ---------------------------------------------------------------------------------------------- gradients, norms
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)], ids=ids)
def test_gradients_reach_the_first_layer_of_both_nets(shape):
    """Catches a detached feature map or an unused stage: every parameter gets a finite, and the first layers a
    non-zero, gradient."""
    encoder, decoder = net(shape)
    x = torch.rand(2, *shape, requires_grad=True)
    decoder(encoder(x)[:, :3]).square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for name, p in [*encoder.named_parameters(), *decoder.named_parameters()]:
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert encoder.features[0].weight.grad.abs().sum() > 0
    assert decoder.head.weight.grad.abs().sum() > 0
    assert decoder.features[-1].weight.grad.abs().sum() > 0


def test_group_norm_makes_each_image_independent_of_its_batch():
    """Why GroupNorm: an image's code is the same alone or in any batch, in training mode too. BatchNorm (what
    norm=batch gives, and a plausible wrong default) mixes the batch's statistics into every image."""
    x = torch.rand(6, 3, 32, 32)
    for norm, independent in (("group", True), ("batch", False)):
        encoder = net((3, 32, 32), norm=norm)[0].train()
        together, alone = encoder(x)[:1], encoder(x[:1].repeat(2, 1, 1, 1))[:1]
        assert torch.allclose(together, alone, atol=1e-5) == independent, norm


def test_channels_last_gives_the_same_model():
    """The model's channels_last (conv activations in NHWC) changes the memory layout, not the result."""
    torch.manual_seed(0)
    net_cfg = {"encoder": {"_target_": "vaelab.models.resnets.ResNetEncoder", **SMALL},
               "decoder": {"_target_": "vaelab.models.resnets.ResNetDecoder", **SMALL}}
    nchw = Autoencoder([3, 32, 32], latent_dim=4, net=net_cfg, likelihood="gaussian", channels_last=False).eval()
    nhwc = Autoencoder([3, 32, 32], latent_dim=4, net=net_cfg, likelihood="gaussian", channels_last=True).eval()
    nhwc.load_state_dict(nchw.state_dict())
    x = torch.rand(3, 3, 32, 32)
    assert nhwc.features(x).shape == (3, 8)
    torch.testing.assert_close(nhwc.features(x), nchw.features(x), atol=1e-5, rtol=1e-5)
    z = torch.randn(3, 4)
    torch.testing.assert_close(nhwc.decode(z), nchw.decode(z), atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------- through the config
TINY_NET = [f"model.net.{part}.{key}={value}" for part in ("encoder", "decoder") for key, value in SMALL.items()]
RUN = ["model=vae", "model/net=resnet", "model.latent_dim=4", "callbacks=minimal", "logger=none", *TINY_NET]


def _colour_folder(root, n: int = 24, side: int = 32) -> None:
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(root / f"{i:02d}.png")


@pytest.mark.parametrize("data", ["digits", "colour32"])
def test_a_vae_with_the_resnet_trains_one_epoch(tmp_path, data):
    """digits are 8x8 grey (one stage to 4x4); a folder of 32x32 colour PNGs is the net's own setting (three stages,
    a Gaussian likelihood)."""
    if data == "digits":
        overrides = ["data=digits"]
    else:
        _colour_folder(tmp_path / "imgs")
        overrides = ["data=image_folder", f"data.folder={tmp_path / 'imgs'}", "data.image_size=32", "data.batch_size=8",
                     "model.likelihood=gaussian"]
    train(compose_train(tmp_path, [*RUN, *overrides]))
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["status"] == "completed"
    assert all(np.isfinite(record[split][f"{split}/loss"]) for split in ("train", "val", "test"))
    model = vaelab.load(record["last_ckpt"])  # the trusted loader builds the net back from the checkpoint
    assert isinstance(model.encoder, ResNetEncoder) and isinstance(model.decoder, ResNetDecoder)


def test_a_bad_net_setting_stops_the_run_with_a_message_naming_the_key(tmp_path):
    """Through the config the net is built two instantiations deep (module -> Autoencoder -> net), so the
    ConfigError reaches the user inside Hydra's wrapper until vaelab.tasks.hydra_job.instantiate_config unwraps
    nested InstantiationExceptions; the message names the key either way."""
    cfg = compose_train(tmp_path, [*RUN, "data=digits", "model.net.encoder.downsamples=4"])
    message = r"model\.net\.encoder\.downsamples = 4 is invalid for 8x8 images"
    with pytest.raises((ConfigError, InstantiationException), match=message) as info:
        build_model(cfg)
    assert any(isinstance(err, ConfigError) for err in causes(info.value))
