"""Encoders and decoders (vaelab.models.nets): shapes for many image sizes, gradients, argument checks."""

from __future__ import annotations

import pytest
import torch

from vaelab.models.nets import ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder
from vaelab.training import AutoencoderModule

SHAPES = [(1, 8, 8), (1, 28, 28), (3, 32, 32), (1, 64, 64), (3, 13, 17), (2, 4, 4), (1, 9, 30)]
PAIRS = [(MLPEncoder, MLPDecoder), (ConvEncoder, ConvDecoder)]
PAIR_IDS = ["mlp", "conv"]

AE = {"_target_": "vaelab.models.objectives.Reconstruction"}  # the deterministic autoencoder


def _small(cls):
    return (
        {"hidden_dims": [16]} if cls in (MLPEncoder, MLPDecoder) else {"channels": (4, 8), "hidden_dim": 16}
    )


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("encoder_cls,decoder_cls", PAIRS, ids=PAIR_IDS)
def test_shapes_and_gradients(encoder_cls, decoder_cls, shape):
    torch.manual_seed(0)
    encoder = encoder_cls(image_shape=shape, out_features=6, **_small(encoder_cls))
    decoder = decoder_cls(image_shape=shape, latent_dim=3, **_small(decoder_cls))
    x = torch.rand(2, *shape, requires_grad=True)
    h = encoder(x)
    assert h.shape == (2, 6)
    out = decoder(h[:, :3])
    assert out.shape == (2, *shape)

    out.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for name, p in [*encoder.named_parameters(), *decoder.named_parameters()]:
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    # the first and last layers see gradient (nothing is detached on the way)
    assert next(encoder.parameters()).grad.abs().sum() > 0
    assert list(decoder.parameters())[-1].grad.abs().sum() > 0


@pytest.mark.parametrize("channels", [(8,), (4, 8, 16), (4, 8, 16, 32, 64, 128)])
def test_conv_uses_as_many_stages_as_fit(channels):
    """Depth adapts to the image: 28×28 takes at most 3 halvings before a side drops below 2 (28→14→7→3)."""
    shape = (1, 28, 28)
    encoder = ConvEncoder(shape, out_features=5, channels=channels, hidden_dim=8)
    decoder = ConvDecoder(shape, latent_dim=5, channels=channels, hidden_dim=8)
    n_conv = sum(isinstance(m, torch.nn.Conv2d) for m in encoder.features)
    n_deconv = sum(isinstance(m, torch.nn.ConvTranspose2d) for m in decoder.features)
    assert n_conv == n_deconv == min(len(channels), 3)
    assert decoder(encoder(torch.rand(3, *shape))).shape == (3, *shape)


@pytest.mark.parametrize("shape", [(1, 3, 3), (1, 2, 28), (3, 28, 3), (1, 1, 1)])
def test_conv_rejects_too_small_images(shape):
    with pytest.raises(ValueError, match="too small"):
        ConvEncoder(shape, out_features=4)
    with pytest.raises(ValueError, match="too small"):
        ConvDecoder(shape, latent_dim=4)


@pytest.mark.parametrize("cls", [MLPEncoder, MLPDecoder, ConvEncoder, ConvDecoder])
@pytest.mark.parametrize("shape", [(28, 28), (1, 1, 28, 28), (0, 28, 28), (1, -4, 28), ()])
def test_bad_image_shape_raises(cls, shape):
    size_arg = {"out_features": 4} if "Encoder" in cls.__name__ else {"latent_dim": 4}
    with pytest.raises(ValueError, match="image_shape"):
        cls(shape, **size_arg)


CONV_NET = {
    "encoder": {"_target_": "vaelab.models.nets.ConvEncoder"},
    "decoder": {"_target_": "vaelab.models.nets.ConvDecoder"},
}


@pytest.mark.parametrize("variational", [True, False], ids=["vae", "ae"])
@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32)], ids=lambda s: "x".join(map(str, s)))
def test_autoencoder_with_conv_net(shape, variational):
    torch.manual_seed(0)
    model = AutoencoderModule(image_shape=list(shape), latent_dim=4, net=CONV_NET,
                              objective=None if variational else AE)
    x = torch.rand(3, *shape)
    out = model.model_step((x,), "train")
    assert out.x_out.shape == out.x_mean.shape == x.shape
    assert out.z.shape == out.mu.shape == (3, 4)
    assert out.recon.shape == (3,) and torch.isfinite(out.loss)
    out.loss.backward()
    assert all(p.grad is not None for p in model.parameters())
