"""The views a VAE researcher expects besides the image grids: labelled grids, interpolations, the 2-D manifold,
histograms of μ and log σ², the Projector, and the posterior-collapse alarm."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import compose_train
from hydra.utils import instantiate
from PIL import Image
from test_callbacks import (
    LEVEL,
    SIDE,
    RecordingWriter,
    cells,
    corner,
    draw,
    fit,
    forward,
    grid_size,
    hand_made_output,
    make_batch,
    make_module,
    png,
    read_events,
    record_decoder_inputs,
    same_image,
    spy_on_labels,
)

from vaelab.dashboard import (
    CollapseAlarm,
    Interpolations,
    LatentHistograms,
    LatentManifold,
    Projector,
    codes,
    grids,
    interpolation,
)
from vaelab.dashboard.base import DashboardCallback
from vaelab.dashboard.health import code_health


# ---------------------------------------------------------------------------------------------------- labelled grids
def test_a_labelled_grid_keeps_the_grid_exact_and_every_label_inside_the_image():
    images = torch.rand(6, 1, SIDE, SIDE, generator=torch.Generator().manual_seed(0))
    grid = grids.image_grid(images, 3, min_side=24)  # 2 rows of 3 cells of 24 px
    picture = grids.labelled_grid(grid, 24, ["first row", ("second", grids.ALERT)], ["a", "bb", "ccc"], title="T")

    rows = cells(corner(picture, 2, 3, 24), side=24, atol=LEVEL)
    same_image(rows[1][2], images[5].repeat_interleave(3, -1).repeat_interleave(3, -2), atol=LEVEL)
    height, width = grid_size(2, 3, 24)
    margin = picture[:, : picture.shape[1] - width]
    assert margin.shape[1] > 0
    # ink in the band of each row (the labels), in the alert colour for the second
    for r, band in enumerate((slice(-height + 2, -height + 26), slice(-height + 28, -height + 52))):
        ink = margin[band][(margin[band] < 200).any(-1)]
        assert len(ink) > 10, r
    second = margin[-height + 28 : -height + 52].reshape(-1, 3).astype(int)
    assert ((second[:, 0] > 150) & (second[:, 1] < 90)).any()  # red
    assert (picture[: picture.shape[0] - height] < 200).any()  # the column labels and the title above the grid
    # nothing touches the border of the image: no label is cut off
    frame = np.concatenate([picture[0], picture[-height - 1 :: -1][:1].reshape(-1, 3), picture[: -height, 0]])
    assert (frame == 255).all()


def test_column_labels_that_would_overlap_are_thinned_evenly():
    grid = grids.image_grid(torch.zeros(9, 1, 8, 8), 9, min_side=8)  # 10-px columns: too narrow for "−2.25"
    seen = []

    class Draw:
        def __init__(self, real):
            self.real = real

        def __getattr__(self, name):
            return getattr(self.real, name)

        def text(self, xy, text, **kwargs):
            seen.append(text)
            return self.real.text(xy, text, **kwargs)

    real = grids.ImageDraw.Draw
    try:
        grids.ImageDraw.Draw = lambda image: Draw(real(image))
        cols = [grids.signed(v) for v in np.linspace(-3, 3, 9)]
        grids.labelled_grid(grid, 8, ["r"], cols, font_size=11)
    finally:
        grids.ImageDraw.Draw = real
    shown = [t for t in seen if t != "r"]
    assert shown[0] == "−3" and shown[-1] == "3" and len(shown) < 9  # every k-th, the ends kept
    assert [cols.index(t) for t in shown] == list(range(0, 9, 8 // (len(shown) - 1)))


def test_signed_numbers_read_like_print():
    assert [grids.signed(v) for v in (-1.5, -0.0001, 0.0, 2.0, 0.25, -3.0)] == ["−1.5", "0", "0", "2", "0.25", "−3"]


# ---------------------------------------------------------------------------------------------------- interpolations
def test_interpolations_decode_the_line_between_two_posterior_means(monkeypatch):
    module = make_module(latent_dim=3)
    x, y = make_batch(4)
    mu = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [4.0, 0.0, -4.0], [-1.0, 2.0, 3.0]])
    out = hand_made_output(torch.zeros(4, 1, SIDE, SIDE), mu, torch.zeros(4, 3), module.likelihood)
    seen = record_decoder_inputs(module, monkeypatch)
    labels = spy_on_labels(monkeypatch, interpolation)
    callback = Interpolations(num_pairs=2, steps=5, min_side=8)
    callback.class_names = tuple("abcdefghij")
    writer = draw(callback, module, x, y, out, step=2)

    assert [(c.tag, c.step, c.dataformats) for c in writer.calls] == [("val/interpolations", 2, "HWC")]
    (z,) = seen  # pair 0: images 0 and 2; pair 1: images 1 and 3
    alphas = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0])[:, None]
    torch.testing.assert_close(z[:5], mu[0] + alphas * (mu[2] - mu[0]))
    torch.testing.assert_close(z[5:], mu[1] + alphas * (mu[3] - mu[1]))
    rows = cells(corner(writer.calls[0].image, 2, 7, SIDE), atol=LEVEL)
    with torch.no_grad():
        decoded = module.likelihood.mean(module.decode(z))
    for r, (a, b) in enumerate([(0, 2), (1, 3)]):
        same_image(rows[r][0], x[a], atol=LEVEL)  # the first image, its line, the second image
        same_image(rows[r][6], x[b], atol=LEVEL)
        for c in range(5):
            same_image(rows[r][c + 1], decoded[5 * r + c], atol=LEVEL)
    assert labels[0]["rows"] == ["a → c", "b → d"]  # the classes of each pair (labels 0, 1, 2, 3)
    assert labels[0]["cols"] == ["A", "0", "0.25", "0.5", "0.75", "1", "B"]


def test_interpolations_of_an_autoencoder_use_its_codes():
    module = make_module(latent_dim=3, variational=False)
    x, y = make_batch(2)
    writer = draw(Interpolations(num_pairs=1, steps=3, min_side=8), module, x, y, forward(module, x))
    rows = cells(corner(writer.calls[0].image, 1, 5, SIDE), atol=LEVEL)
    with torch.no_grad():
        midpoint = module.likelihood.mean(module.decode(module.encode(x)[0].mean(0, keepdim=True)))
    same_image(rows[0][2], midpoint[0], atol=LEVEL)


# ---------------------------------------------------------------------------------------------------- 2-D manifold
def test_the_manifold_of_a_2d_vae_is_a_grid_over_the_priors_quantiles(monkeypatch):
    module = make_module(latent_dim=2)
    x, y = make_batch(8)
    out = forward(module, x)
    seen = record_decoder_inputs(module, monkeypatch)
    labels = spy_on_labels(monkeypatch, interpolation)
    writer = draw(LatentManifold(n=3, quantile=0.1, min_side=8), module, x, y, out, step=5)

    assert [(c.tag, c.step, c.dataformats) for c in writer.calls] == [("val/manifold", 5, "HWC")]
    (z,) = seen
    q = 1.2815516  # Φ⁻¹(0.9)
    values = torch.tensor([-q, 0.0, q])
    # row by row from the top: z 2 from its largest value down, z 1 rising along each row
    expected = torch.stack([values.repeat(3), values.flip(0).repeat_interleave(3)], dim=1)
    torch.testing.assert_close(z, expected, atol=1e-5, rtol=0)
    assert corner(writer.calls[0].image, 3, 3, SIDE).shape[1:] == grid_size(3, 3, SIDE)
    assert labels[0]["rows"] == ["1.3", "0", "−1.3"] and labels[0]["cols"] == ["−1.3", "0", "1.3"]


def test_the_manifold_of_a_2d_autoencoder_spans_its_codes_and_other_codes_draw_nothing(monkeypatch, caplog):
    module = make_module(latent_dim=2, variational=False)
    x, y = make_batch(5)
    mu = torch.tensor([[0.0, 10.0], [1.0, 20.0], [2.0, 30.0], [3.0, 40.0], [4.0, 50.0]])
    out = hand_made_output(torch.zeros(5, 1, SIDE, SIDE), mu, None, module.likelihood)
    seen = record_decoder_inputs(module, monkeypatch)
    draw(LatentManifold(n=3, quantile=0.25, min_side=8), module, x, y, out)
    (z,) = seen
    assert sorted(set(z[:, 0].tolist())) == [1.0, 2.0, 3.0]  # the codes' quartiles and median
    assert sorted(set(z[:, 1].tolist())) == [20.0, 30.0, 40.0]

    wide = make_module(latent_dim=5)
    with caplog.at_level(logging.INFO, logger="vaelab.dashboard.interpolation"):
        callback = LatentManifold()
        for _ in range(2):
            assert draw(callback, wide, x, y, forward(wide, x)).calls == []
    assert len([r for r in caplog.records if "2-D code" in r.getMessage()]) == 1  # said once


# ---------------------------------------------------------------------------------------------------- histograms
def test_histograms_pool_mu_and_logvar_of_a_vae_and_the_code_of_an_ae():
    vae = make_module(latent_dim=3)
    x, y = make_batch(10)
    out = forward(vae, x)
    writer = draw(LatentHistograms(num_images=10), vae, x, y, out, step=4)
    assert [(c.tag, c.step, c.dataformats) for c in writer.calls] == [("val/mu", 4, "histogram"),
                                                                       ("val/logvar", 4, "histogram")]
    # numpy arrays, made on the main thread: the worker thread runs no torch operation
    torch.testing.assert_close(torch.from_numpy(writer.calls[0].image), out.mu.flatten())
    torch.testing.assert_close(torch.from_numpy(writer.calls[1].image), out.logvar.flatten())

    per_dim = draw(LatentHistograms(num_images=10, per_dimension=True), vae, x, y, out)
    assert per_dim.tags() == ["val/mu", "val/mu_z0", "val/mu_z1", "val/mu_z2",
                              "val/logvar", "val/logvar_z0", "val/logvar_z1", "val/logvar_z2"]
    torch.testing.assert_close(torch.from_numpy(per_dim.calls[2].image), out.mu[:, 1])

    ae = make_module(latent_dim=3, variational=False)
    assert draw(LatentHistograms(num_images=10), ae, x, y, forward(ae, x)).tags() == ["val/mu"]


# ---------------------------------------------------------------------------------------------------- collapse
def collapsed_output(n: int = 20, beta: float = 4.0):
    out = hand_made_output(torch.zeros(n, 1, SIDE, SIDE), torch.randn(n, 4) * 0.01, torch.full((n, 4), -0.001))
    out.weights = {"beta": beta}
    return out


def healthy_output(n: int = 20):
    return hand_made_output(torch.zeros(n, 1, SIDE, SIDE), torch.randn(n, 4), torch.full((n, 4), -2.0))


def test_code_health_tells_a_collapsed_code_from_a_working_one():
    torch.manual_seed(0)
    collapsed, healthy = code_health(collapsed_output()), code_health(healthy_output())
    assert collapsed.collapsed and collapsed.n_active == 0 and collapsed.kl_total < 0.01
    assert "β = 4" in collapsed.message() and "model.beta" in collapsed.message()
    assert not healthy.collapsed and healthy.n_active == 4 and healthy.kl_total > 1
    # units whose means move a little are "active", but a code of 0.05 nats per image still carries nothing
    weak = hand_made_output(torch.zeros(20, 1, SIDE, SIDE), torch.randn(20, 4) * 0.15, torch.zeros(20, 4))
    health = code_health(weak)
    assert health.n_active > 0 and health.kl_total < 0.1 and health.collapsed
    assert code_health(hand_made_output(torch.zeros(3, 1, SIDE, SIDE), torch.zeros(3, 4), None)) is None  # an AE


def test_the_collapse_alarm_warns_after_its_patience_writes_a_text_card_and_says_when_it_recovers(caplog):
    torch.manual_seed(0)
    module, (x, y) = make_module(latent_dim=4), make_batch(20)
    alarm, writer = CollapseAlarm(num_images=20, patience=2), RecordingWriter()
    with caplog.at_level(logging.INFO, logger="vaelab.dashboard.health"):
        for step, out in enumerate([collapsed_output(), collapsed_output(), collapsed_output(), healthy_output()]):
            draw(alarm, module, x, y, out, step=step, writer=writer)
    assert [(c.tag, c.step, c.dataformats) for c in writer.calls] == [
        ("val/collapse", 1, "text"), ("val/collapse", 2, "text"), ("val/collapse", 3, "text")]
    assert writer.calls[0].image.startswith("**Posterior collapse** at step 1: ")
    assert "0 of 4 units active" in writer.calls[0].image and "Recovered" in writer.calls[2].image
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "posterior collapse" in warnings[0]  # once per collapse, not every epoch
    assert any("recovered" in r.getMessage() for r in caplog.records if r.levelno == logging.INFO)


def test_the_collapse_alarm_warns_at_the_end_of_a_run_that_ended_collapsed_and_is_silent_otherwise(caplog):
    torch.manual_seed(0)
    module, (x, y) = make_module(latent_dim=4), make_batch(20)
    trainer = SimpleNamespace(is_global_zero=True)
    quiet, loud = CollapseAlarm(num_images=20), CollapseAlarm(num_images=20, patience=5)
    with caplog.at_level(logging.WARNING, logger="vaelab.dashboard.health"):
        assert draw(quiet, module, x, y, healthy_output()).calls == []
        quiet.on_train_end(trainer, module)
        ae = make_module(variational=False)
        assert draw(quiet, ae, x, y, forward(ae, x)).calls == []
        assert caplog.records == []
        assert draw(loud, module, x, y, collapsed_output()).calls == []  # within its patience: not yet
        loud.on_train_end(trainer, module)
    assert [r.getMessage().split(":")[0] for r in caplog.records] == ["training ended with the posterior collapsed"]


# ---------------------------------------------------------------------------------------------------- projector
def test_the_projector_is_written_once_at_the_end_of_training_with_labels_and_thumbnails(tmp_path):
    callbacks = [Projector(num_images=30, thumbnail_side=16), LatentHistograms(num_images=30),
                 CollapseAlarm(num_images=30, kl_threshold=1e9, patience=1)]
    trainer, model, datamodule = fit(tmp_path, callbacks, max_epochs=2, latent_dim=3)
    acc = read_events(trainer)
    log_dir = tmp_path / "tb" / "version_0"

    steps = [e.step for e in acc.Scalars("val/loss")]
    assert [e.step for e in acc.Histograms("val/mu")] == steps == [e.step for e in acc.Histograms("val/logvar")]
    text = acc.Tensors("val/collapse/text_summary")[-1].tensor_proto.string_val[0].decode()
    assert text.startswith("**Posterior collapse**")

    config = (log_dir / "projector_config.pbtxt").read_text()
    assert config.count("embeddings {") == 1  # once, at the end: not at every epoch
    folder = next(log_dir.glob("0*/val_mu"))
    assert folder.parent.name == f"{steps[-1]:05d}" and f'tensor_name: "val/mu:{steps[-1]:05d}"' in config
    tensors = np.loadtxt(folder / "tensors.tsv", ndmin=2)
    x, y = datamodule.fixed_batch("val", 30)
    with torch.no_grad():
        model.eval()
        np.testing.assert_allclose(tensors, model.model.encode(x)[0].numpy(), atol=1e-5)
    metadata = (folder / "metadata.tsv").read_text().splitlines()
    assert metadata[0] == "class\tindex" and metadata[1:] == [f"{int(k)}\t{i}" for i, k in enumerate(y)]
    picture = np.asarray(Image.open(folder / "sprite.png"))
    assert picture.shape == (6 * 16, 6 * 16)  # 30 grey thumbnails of 16 px (8 px ×2) in a 6 × 6 square
    np.testing.assert_allclose(picture[16:32, 16:32] / 255, x[7, 0].repeat_interleave(2, 0).repeat_interleave(2, 1),
                               atol=0.5 / 255 + 1e-6)  # the 8th image: row 1, column 1
    assert (picture[5 * 16 :, 0:] == 0).all()  # no 31st to 36th image: black
    assert "single_image_dim: 16" in config


def test_the_manifold_is_drawn_each_epoch_of_a_2d_model_and_the_projector_leaves_a_2d_code_out(tmp_path):
    callbacks = [LatentManifold(n=4, min_side=8), Projector(num_images=30)]
    trainer, _, _ = fit(tmp_path, callbacks, max_epochs=2, latent_dim=2)
    acc = read_events(trainer)
    assert [e.step for e in acc.Images("val/manifold")] == [e.step for e in acc.Scalars("val/loss")]
    height, width = png(acc.Images("val/manifold")[-1]).shape[:2]
    assert height > grid_size(4, 4, SIDE)[0] and width > grid_size(4, 4, SIDE)[1]  # the grid and its labels
    assert not (tmp_path / "tb" / "version_0" / "projector_config.pbtxt").exists()  # its PCA would show nothing


def test_an_embedding_keeps_the_other_entries_of_the_projector_config(tmp_path):
    mat, meta = np.arange(12.0).reshape(3, 4), [("a", "0"), ("b", "1"), ("c", "2")]
    rgb = torch.rand(3, 3, 5, 5)
    codes.write_embedding(tmp_path, "val/mu", 7, mat, meta, ("class", "index"), rgb)
    codes.write_embedding(tmp_path, "test/mu", 7, mat, meta, ("class", "index"), rgb)
    codes.write_embedding(tmp_path, "val/mu", 7, mat * 2, meta, ("class", "index"), rgb)  # rewritten, not doubled
    config = (tmp_path / "projector_config.pbtxt").read_text()
    assert config.count("embeddings {") == 2 and 'tensor_name: "test/mu:00007"' in config
    np.testing.assert_allclose(np.loadtxt(tmp_path / "00007" / "val_mu" / "tensors.tsv"), mat * 2)
    sprite = np.asarray(Image.open(tmp_path / "00007" / "val_mu" / "sprite.png"))
    assert sprite.shape == (10, 10, 3)  # RGB thumbnails stay RGB: 2 × 2 of 5 px
    np.testing.assert_allclose(sprite[5:, :5] / 255, rgb[2].permute(1, 2, 0).numpy(), atol=0.5 / 255 + 1e-6)


# ---------------------------------------------------------------------------------------------------- configuration
def dashboard(tmp_path, overrides) -> dict[str, DashboardCallback]:
    cfg = compose_train(tmp_path, overrides)
    made = [instantiate(c) for c in cfg.callbacks.values() if c is not None]
    return {type(c).__name__: c for c in made if isinstance(c, DashboardCallback)}


def test_the_default_callbacks_include_every_view_and_minimal_none(tmp_path):
    views = dashboard(tmp_path, [])
    assert set(views) == {"ReconstructionGrid", "PriorSamples", "LatentTraversal", "LatentScatter", "KLPerDimension",
                          "Interpolations", "LatentManifold", "LatentHistograms", "CollapseAlarm", "Projector"}
    assert views["LatentTraversal"].num_images > 100  # an AE's spread is measured on more than a handful of codes
    assert dashboard(tmp_path, ["callbacks=minimal"]) == {}


def test_factor_labels_are_reduced_to_the_class_the_data_colours_by(monkeypatch):
    seen = []

    class Spy(DashboardCallback):
        def draw(self, writer, tag_prefix, step, module, x, y, out):
            seen.append(y)

    x, _ = make_batch(4)
    DashboardCallback._shared = None
    factors = torch.tensor([[0, 5], [1, 6], [2, 7], [3, 8]])
    datamodule = SimpleNamespace(class_names=None, fixed_batch=lambda split, n: (x[:n], factors[:n]),
                                 class_labels=lambda labels: labels[:, 1])
    monkeypatch.setattr("vaelab.dashboard.base.tensorboard_writer", lambda t: RecordingWriter())
    module = make_module().train()
    Spy(num_images=4).draw_now(stub_trainer(datamodule), module)
    assert seen[0].tolist() == [5, 6, 7, 8]
    assert module.training  # drawn in eval mode, then given back its mode


def stub_trainer(datamodule, global_step: int = 0):
    return SimpleNamespace(datamodule=datamodule, fit_loop=SimpleNamespace(epoch_loop=None), global_step=global_step,
                           current_epoch=0)


def test_callbacks_that_want_the_same_pass_share_one_and_draw_as_if_alone(monkeypatch):
    x, y = make_batch(6)
    datamodule = SimpleNamespace(class_names=None, fixed_batch=lambda split, n: (x[:n], y[:n]))
    monkeypatch.setattr("vaelab.dashboard.base.tensorboard_writer", lambda t: RecordingWriter())
    module = make_module()
    passes, drawn = [], []
    forward_pass = module.forward
    monkeypatch.setattr(module, "forward", lambda images: passes.append(len(images)) or forward_pass(images))

    class Spy(DashboardCallback):
        def draw(self, writer, tag_prefix, step, module, x, y, out):
            drawn.append((type(self).__name__, out.z.clone(), torch.randn(3)))  # after the pass: ε, then a draw

    class Other(Spy):
        pass

    trainer = stub_trainer(datamodule, global_step=5)
    Spy(num_images=4).draw_now(trainer, module)
    Other(num_images=4).draw_now(trainer, module)  # the same pass: taken, not run again
    assert passes == [4]
    Spy(num_images=6).draw_now(trainer, module)  # another one
    Spy(num_images=4, seed=1).draw_now(trainer, module)
    Spy(num_images=4).draw_now(stub_trainer(datamodule, global_step=6), module)  # new weights
    assert passes == [4, 6, 4, 4]
    (_, z0, after0), (_, z1, after1) = drawn[:2]
    torch.testing.assert_close(z0, z1, rtol=0, atol=0)
    torch.testing.assert_close(after0, after1, rtol=0, atol=0)  # the random state the pass left, restored
    DashboardCallback._shared = None
    Other(num_images=4).draw_now(trainer, module)
    torch.testing.assert_close(drawn[-1][2], after0, rtol=0, atol=0)  # as if it had been the only one

    # on a trainer, one pass of as many images as the most any of its dashboard callbacks wants serves them all
    DashboardCallback._shared, passes[:], drawn[:] = None, [], []
    few, many = Spy(num_images=2), Other(num_images=5)
    trainer = stub_trainer(datamodule, global_step=7)
    trainer.callbacks = [few, many, Spy(num_images=3, seed=9)]
    few.draw_now(trainer, module)
    many.draw_now(trainer, module)
    assert passes == [5]
    (_, z_few, after_few), (_, z_many, after_many) = drawn
    assert z_few.shape == (2, 4) and z_many.shape == (5, 4)
    torch.testing.assert_close(z_few, z_many[:2], rtol=0, atol=0)
    torch.testing.assert_close(after_few, after_many, rtol=0, atol=0)
    DashboardCallback._shared = None


@pytest.mark.parametrize("bad", [{"num_pairs": 0}, {"steps": 1}])
def test_interpolations_reject_settings_that_draw_nothing(bad):
    with pytest.raises(ValueError):
        Interpolations(**bad)


def test_the_samples_view_fits_its_mixture_on_the_deterministic_code(monkeypatch):
    """``sampler=gmm`` is fitted on the training images' posterior means (``embed``), not on a sampled z: a fit on
    sampled codes would blur every mixture component by the posterior's noise (the mutation the tests missed)."""
    from vaelab.dashboard.images import PriorSamples
    from vaelab.models import Autoencoder

    torch.manual_seed(0)
    model = Autoencoder(image_shape=[1, 8, 8], latent_dim=3).train()  # (training mode, as during fitting)
    images = torch.rand(20, 1, 8, 8)
    fitted = []
    sampler = SimpleNamespace(needs_fit=True, fit_images=20, fit=lambda codes: fitted.append(codes.clone()))
    trainer = SimpleNamespace(callback_metrics={}, datamodule=SimpleNamespace(fixed_batch=lambda split, n: (
        images[:n], torch.zeros(n, dtype=torch.long))))
    monkeypatch.setattr(DashboardCallback, "draw_now", lambda self, *args, **kwargs: None)  # (the drawing itself)
    PriorSamples(sampler=sampler).draw_now(trainer, model)
    with torch.no_grad():
        means, sampled = model.eval().embed(images), model(images).z.flatten(1)
    assert len(fitted) == 1 and torch.equal(fitted[0], means)
    assert not torch.allclose(sampled, means)  # (a sampled z differs, so the test can tell the two apart)
