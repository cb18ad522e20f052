"""The explorer, ``vaelab-explore`` (issue 29): its views as plain functions (a model and inputs in, numpy images
out), its settings, where its images come from, and the Gradio page served on 127.0.0.1 only and called through
Gradio's own client. Each test fails without the rule it checks."""

from __future__ import annotations

import ast
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, compose_train
from PIL import Image

import vaelab
from vaelab.errors import ConfigError
from vaelab.explorer import views
from vaelab.explorer.config import parse
from vaelab.explorer.source import Source, load_source
from vaelab.models.samplers import GaussianMixtureSampler
from vaelab.tasks.train import train

TINY = ["logger=none", "callbacks=minimal", "test=false", "model.latent_dim=4",
        "model.net.encoder.hidden_dims=[16]", "model.net.decoder.hidden_dims=[16]"]
SHAPE = (1, 8, 8)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("explore")
    train(compose_train(tmp, TINY))
    return tmp / "run" / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def source(ckpt) -> Source:
    return load_source(parse([f"ckpt_path={ckpt}", "gmm.fit_images=300", "gmm.n_components=3"]))


@pytest.fixture(scope="module")
def folder(ckpt, tmp_path_factory) -> Path:
    return vaelab.load(ckpt).save_pretrained(tmp_path_factory.mktemp("folder") / "model")


def image(source: Source, index: int) -> np.ndarray:
    return source.test_image(index).permute(1, 2, 0).numpy()


def write(path: Path, array: np.ndarray, mode: str) -> Path:
    Image.fromarray(array, mode=None).convert(mode).save(path)
    return path


# ------------------------------------------------------------------------------------------ the views
def test_a_traversal_changes_only_the_chosen_dimension(source):
    code = views.code_of(source.model, image(source, 0))
    values = np.linspace(-2, 2, 5)
    codes = views.traversal_codes(code, 2, values)
    assert codes.shape == (5, 4)
    np.testing.assert_array_equal(codes[:, 2], values)
    np.testing.assert_array_equal(np.delete(codes, 2, axis=1), np.repeat(np.delete(code, 2)[None], 5, axis=0))
    walk = views.traverse(source.model, image(source, 0), 2, -2.0, 2.0, 5)
    assert walk.shape == (5, 8, 8, 1) and walk.min() >= 0 and walk.max() <= 1
    assert not np.allclose(walk[0], walk[-1])  # (the walk moves)


def test_the_sliders_set_only_the_moved_dimensions_and_span_the_prior_around_the_code(source):
    code = views.code_of(source.model, image(source, 0))
    moved = views.with_values(code, {1: 5.0})
    assert moved[1] == 5.0 and np.array_equal(np.delete(moved, 1), np.delete(code, 1))
    ranges = views.slider_ranges(code, views.code_spread(source.model, None), 3.0)
    assert ranges == [pytest.approx((c - 3, c + 3)) for c in code]  # a VAE's unit: the prior's sd


def test_the_interpolation_ends_are_the_two_reconstructions(source):
    a, b = image(source, 0), image(source, 1)
    strip = views.interpolate(source.model, a, b, 6)
    assert strip.shape == (6, 8, 8, 1)
    np.testing.assert_allclose(strip[0], views.reconstruct(source.model, a), atol=1e-6)
    np.testing.assert_allclose(strip[-1], views.reconstruct(source.model, b), atol=1e-6)
    assert not np.allclose(strip[0], strip[-1])


def test_prior_samples_are_seeded_images(source):
    first = views.sample(source.model, 5, seed=3)
    assert first.shape == (5, 8, 8, 1)
    np.testing.assert_array_equal(first, views.sample(source.model, 5, seed=3))
    assert not np.allclose(first, views.sample(source.model, 5, seed=4))


def test_the_gmm_is_fitted_on_the_codes_of_the_first_training_images(source):
    sampler = source.gmm()
    assert sampler.fitted and sampler.means.shape == (3, 4)
    expected = GaussianMixtureSampler(n_components=3, fit_images=300)
    with torch.no_grad():
        expected.fit(source.model.embed(source.datamodule.fixed_batch("train", 300)[0]))
    torch.testing.assert_close(sampler.means, expected.means)
    assert views.sample(source.model, 4, seed=0, sampler=sampler).shape == (4, 8, 8, 1)
    assert views.sampler_choices(source.model, has_data=True) == ["prior", "gmm"]
    assert views.sampler_choices(source.model, has_data=False) == ["prior"]  # (no training codes to fit on)


def test_a_class_is_chosen_only_for_a_conditional_model(source):
    assert views.class_choices(source.model, ["a", "b", "c"]) == []
    model = vaelab.models.Autoencoder(**{**source.model.config, "compile": False, "num_classes": 3}).eval()
    assert views.class_choices(model, ["a", "b", "c"]) == ["a", "b", "c"]
    assert views.class_choices(model, ["a", "b"]) == ["0", "1", "2"]
    # the class asked for is the one decoded: the same draws of z, labelled 1 or 2
    ones, twos = views.sample(model, 2, label=1), views.sample(model, 2, label=2)
    with torch.no_grad():
        by_hand = model.sample(2, generator=torch.Generator().manual_seed(0), labels=torch.tensor([1, 1]))
    np.testing.assert_allclose(ones, by_hand.permute(0, 2, 3, 1).numpy(), atol=1e-6)
    assert np.abs(ones - twos).max() > 1e-4


# ------------------------------------------------------------------------------------------ a conditional model
def conditional_model(source: Source, classes: int = 3, **changes) -> vaelab.models.Autoencoder:
    """The fixture's model, made conditional on ``classes`` classes (fresh weights: these views need no training)."""
    torch.manual_seed(0)
    config = {**source.model.config, "compile": False, "num_classes": classes, **changes}
    return vaelab.models.Autoencoder(**config).eval()


def by_hand(model, codes: torch.Tensor, label: int) -> np.ndarray:
    """The images the decoder gives ``codes`` of class ``label``, without the views."""
    with torch.no_grad():
        out = model.mean(model.decode(codes.float(), labels=torch.full((len(codes),), label)))
    return out.permute(0, 2, 3, 1).numpy()


def test_every_view_of_a_conditional_model_encodes_and_decodes_as_the_class_given(source):
    """Each view passes its ``label`` to the model: the decoded image changes with the class and is the model's own
    decode of that class; the code read as another class is another code. Wrong versions it catches: a view that
    drops the label (a conditional model refuses the pass), decodes as another class than the one asked for, or
    encodes an interpolation's ends as the line's class instead of their own."""
    model = conditional_model(source)
    a, b = image(source, 0), image(source, 1)
    x = torch.from_numpy(a).permute(2, 0, 1)[None]
    code = views.code_of(model, a, 1)
    with torch.no_grad():
        expected = model.embed(x, labels=torch.tensor([1]))[0].double().numpy()
    np.testing.assert_allclose(code, expected, atol=1e-6)
    assert np.abs(code - views.code_of(model, a, 2)).max() > 1e-4  # (the encoder sees the class)
    ones, twos = views.decode(model, code, 1), views.decode(model, code, 2)
    np.testing.assert_allclose(ones, by_hand(model, torch.from_numpy(code)[None], 1), atol=1e-6)
    assert np.abs(ones - twos).max() > 1e-4  # (the same code, another class: another image)
    np.testing.assert_allclose(views.reconstruct(model, a, 2), views.decode(model, views.code_of(model, a, 2), 2)[0],
                               atol=1e-6)
    walk = views.traverse(model, a, 0, -2.0, 2.0, 3, label=2)
    codes = views.traversal_codes(views.code_of(model, a, 2), 0, np.linspace(-2.0, 2.0, 3))
    np.testing.assert_allclose(walk, by_hand(model, torch.from_numpy(codes), 2), atol=1e-6)
    # the ends of a line drawn as class 2 from A read as class 0 and B read as class 1
    strip = views.interpolate(model, a, b, 5, label=2, label_a=0, label_b=1)
    np.testing.assert_allclose(strip[0], views.decode(model, views.code_of(model, a, 0), 2)[0], atol=1e-5)
    np.testing.assert_allclose(strip[-1], views.decode(model, views.code_of(model, b, 1), 2)[0], atol=1e-5)
    same = views.interpolate(model, a, b, 5, label=1)  # one class for both: the ends are the reconstructions
    np.testing.assert_allclose(same[0], views.reconstruct(model, a, 1), atol=1e-5)
    np.testing.assert_allclose(same[-1], views.reconstruct(model, b, 1), atol=1e-5)
    assert np.abs(same - views.interpolate(model, a, b, 5, label=0)).max() > 1e-4


def test_a_conditional_model_without_a_class_is_one_message_and_an_unconditional_one_ignores_it(source):
    model = conditional_model(source)
    a = image(source, 0)
    for call in (lambda: views.code_of(model, a), lambda: views.decode(model, np.zeros(4)),
                 lambda: views.reconstruct(model, a), lambda: views.interpolate(model, a, a, 2, label_a=0)):
        with pytest.raises(views.MissingClass, match=r"conditional on a class \(model.num_classes=3\): choose the "
                                                     r"class, one of 0 … 2"):
            call()
    plain = source.model
    code = views.code_of(plain, a)
    np.testing.assert_array_equal(views.code_of(plain, a, 2), code)
    np.testing.assert_array_equal(views.decode(plain, code, 2), views.decode(plain, code))


def test_a_conditional_aes_slider_units_are_the_spread_of_its_codes_read_as_their_classes(source):
    """An AE's unit is each dimension's spread over the data: a conditional AE's codes are read as the images' own
    classes (the wrong version, every image read as one class, gives another spread)."""
    model = conditional_model(source, code={"_target_": "vaelab.models.codes.PointCode"})
    images, labels = source.datamodule.fixed_batch("test", 64)
    labels = labels % 3
    spread = views.code_spread(model, views.to_numpy(images), labels.numpy())
    with torch.no_grad():
        codes = model.embed(images, labels=labels).double().numpy()
    np.testing.assert_allclose(spread, codes.std(axis=0), rtol=1e-5)
    assert np.abs(spread - views.code_spread(model, views.to_numpy(images), 0)).max() > 1e-4


# ------------------------------------------------------------------------------------------ uploads
def test_a_good_upload_is_the_image_as_the_model_takes_it(tmp_path):
    pixels = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    got = views.read_upload(write(tmp_path / "ok.png", pixels, "L"), SHAPE)
    assert got.shape == (8, 8, 1)
    np.testing.assert_allclose(got[..., 0], pixels / 255.0)


@pytest.mark.parametrize("kind", ["size", "mode", "not_an_image", "nothing"])
def test_a_bad_upload_is_one_message_with_the_expected_shape(tmp_path, kind):
    grey = np.zeros((8, 8), dtype=np.uint8)
    path = {"size": lambda: write(tmp_path / "big.png", np.zeros((28, 28), dtype=np.uint8), "L"),
            "mode": lambda: write(tmp_path / "colour.png", grey, "RGB"),
            "not_an_image": lambda: (tmp_path / "notes.png").write_text("not an image") and tmp_path / "notes.png",
            "nothing": lambda: None}[kind]()
    with pytest.raises(views.UploadError) as caught:
        views.read_upload(path, SHAPE)
    message = str(caught.value)
    assert "a greyscale image (mode L) of 8×8 pixels" in message
    said = {"size": "is 28×28 pixels", "mode": "is of colour mode RGB", "not_an_image": "is not an image file",
            "nothing": "No image uploaded"}[kind]
    assert said in message and "\n" not in message


# ------------------------------------------------------------------------------------------ settings and source
def test_the_settings_serve_on_127_0_0_1_without_a_public_link_unless_asked(ckpt):
    cfg = parse([f"ckpt_path={ckpt}"])
    assert cfg.server_name == "127.0.0.1" and cfg.share is False
    assert parse([f"ckpt_path={ckpt}", "server_name=0.0.0.0", "port=7999"]).server_name == "0.0.0.0"
    for argv, said in [([], "ckpt_path is missing"), ([f"ckpt_path={ckpt}", "prot=1"], "no setting prot"),
                       ([f"ckpt_path={ckpt}", "port=http"], "port='http' is invalid"),
                       ([str(ckpt)], "takes key=value arguments")]:
        with pytest.raises(ConfigError, match=said):
            parse(argv)


def test_a_checkpoint_brings_its_data_as_eval_reads_them(ckpt, tmp_path):
    source = load_source(parse([f"ckpt_path={ckpt}", "data.eval_batch_size=7"]))
    assert source.has_data and source.datamodule.eval_batch_size == 7 and source.num_test_images > 100
    assert source.datamodule.hparams.split_seed == 42  # (the checkpoint's own settings, not rebuilt here)


def test_a_model_folder_offers_uploads_only_and_says_so(folder):
    from vaelab.explorer.app import describe

    source = load_source(parse([f"ckpt_path={folder}"]))
    assert not source.has_data and "model folder records no data set" in source.no_data
    assert "No data set: uploads only" in describe(source)
    assert views.sampler_choices(source.model, source.has_data) == ["prior"]


def test_gradio_is_imported_inside_the_explorer_only():
    outside = []
    for file in (ROOT / "src" / "vaelab").rglob("*.py"):
        if "explorer" in file.parts:
            continue
        for node in ast.walk(ast.parse(file.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            outside += [f"{file}:{node.lineno}" for n in names if n.split(".")[0] in ("gradio", "gradio_client")]
    assert not outside
    code = "import sys, vaelab, vaelab.explorer.views, vaelab.explorer.source; print('gradio' in sys.modules)"
    import subprocess

    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"


# ------------------------------------------------------------------------------------------ the page
@pytest.fixture(scope="module")
def conditional(source) -> Source:
    """The digits' data with a conditional model of their 10 classes."""
    return Source(conditional_model(source, 10), source.datamodule)


def handler(demo, name: str, api_name: str | None = None):
    """The function the page calls for the event handler ``name`` (and ``api_name``), as the server would call it."""
    return next(f.fn for f in demo.fns.values() if f.name == name and (api_name is None or f.api_name == api_name))


def blocks_named(demo, *labels: str) -> dict[str, object]:
    return {b.label: b for b in demo.blocks.values() if getattr(b, "label", None) in labels}


CLASS_CHOICES = ("Image: its class", "Decoded as the class", "A: its class", "B: its class",
                 "The line decoded as the class", "Its class", "Class")


def test_the_page_of_an_unconditional_model_hides_every_class_choice(source, ckpt):
    pytest.importorskip("gradio")
    from vaelab.explorer.app import build, describe

    demo = build(source, parse([f"ckpt_path={ckpt}"]))
    choices = blocks_named(demo, *CLASS_CHOICES)
    assert set(choices) == set(CLASS_CHOICES) and not any(b.visible for b in choices.values())
    assert "conditional" not in describe(source)
    demo.close()


def test_the_page_of_a_conditional_model_offers_each_images_class_following_a_picked_test_image(conditional, ckpt):
    """The class choices are shown, a test image's starts at its own label and follows the test image picked (not its
    index: the wrong version), and the image decoded changes with the class chosen for it."""
    pytest.importorskip("gradio")
    from vaelab.explorer.app import build, describe

    labels = [conditional.test_label(i) for i in range(conditional.num_test_images)]
    assert labels[:20] == conditional.datamodule.splits["test"][1][:20].tolist()
    moved = next(i for i, y in enumerate(labels) if y != i and y != labels[0])  # (its label is not its index)
    demo = build(conditional, parse([f"ckpt_path={ckpt}"]))
    choices = blocks_named(demo, *CLASS_CHOICES)
    assert all(b.visible for b in choices.values())
    assert choices["Image: its class"].value == choices["Decoded as the class"].value == str(labels[0])
    assert choices["A: its class"].value == str(labels[0]) and choices["B: its class"].value == str(labels[1])
    assert "conditional on 10 classes" in describe(conditional)
    # the sliders tab: a test image picked sets both choices to its class; another class decodes another image
    picked_out = handler(demo, "pick_test")(moved, None, "0", "0", 0)
    original, decoded, walk, image_class, drawn_class = picked_out[:5]
    assert image_class["value"] == drawn_class["value"] == str(labels[moved])
    x = torch.from_numpy(image(conditional, moved)).permute(2, 0, 1)[None]
    with torch.no_grad():
        own = conditional.model.reconstruct(x, labels=torch.tensor([labels[moved]]))
    np.testing.assert_array_equal(decoded, views.display(views.to_numpy(own)[0]))
    # the sliders at the image's code, decoded as another class: that code drawn as that class
    other = (labels[moved] + 1) % 10
    code = views.code_of(conditional.model, image(conditional, moved), labels[moved])
    moved_out = handler(demo, "move")(moved, None, str(labels[moved]), str(other), 0, *code)
    np.testing.assert_array_equal(moved_out[0], views.display(views.decode(conditional.model, code, other)[0]))
    assert np.abs(moved_out[0].astype(int) - decoded.astype(int)).max() > 0
    # the interpolation: A picked sets A's class and the line's; B picked sets B's only
    strip, a_class, b_class, line_class = handler(demo, "run_a")(moved, None, "0", 1, None, "0", "0", 4)
    assert a_class["value"] == line_class["value"] == str(labels[moved])
    assert strip.shape[1] > strip.shape[0]  # (a strip of 4)
    _, a_class, b_class, line_class = handler(demo, "run_b")(0, None, "0", moved, None, "0", "0", 4)
    assert b_class["value"] == str(labels[moved]) and "value" not in a_class and "value" not in line_class
    demo.close()


def test_an_upload_to_a_conditional_model_is_reconstructed_as_the_chosen_class(conditional, ckpt, tmp_path):
    pytest.importorskip("gradio")
    from vaelab.explorer.app import build

    demo = build(conditional, parse([f"ckpt_path={ckpt}"]))
    path = write(tmp_path / "digit.png", (image(conditional, 3)[..., 0] * 255).round().astype(np.uint8), "L")
    reconstruct = handler(demo, "run", "reconstruct")
    _, as_two = reconstruct(str(path), "2")
    _, as_five = reconstruct(str(path), "5")
    upload = views.read_upload(path, SHAPE)
    np.testing.assert_array_equal(as_two, views.display(views.reconstruct(conditional.model, upload, 2)))
    assert np.abs(as_two.astype(int) - as_five.astype(int)).max() > 0
    assert all(out == {"__type__": "update"} for out in handler(demo, "rerun")(None, "5"))  # (nothing uploaded yet)
    np.testing.assert_array_equal(handler(demo, "rerun")(str(path), "5")[1], as_five)
    demo.close()


# ------------------------------------------------------------------------------------------ the served page
def listening(port: int) -> set[str]:
    """The local addresses listening on TCP ``port`` (Linux's /proc/net/tcp and tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if int(hex_port, 16) == port and state == "0A":
                found.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]) if len(address) == 8 else address)
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_app_is_served_on_127_0_0_1_and_answers_gradios_client(ckpt, source, tmp_path):
    pytest.importorskip("gradio")
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    from vaelab.explorer.app import build, launch

    port = free_port()
    cfg = parse([f"ckpt_path={ckpt}", f"port={port}"])
    demo = build(source, cfg)
    label = next(b for b in demo.blocks.values() if getattr(b, "label", None) == "Class")
    assert label.visible is False  # (no classes to choose: the choice is hidden)
    try:
        _, url, share_url = launch(demo, cfg, block=False)
        assert url.startswith(f"http://127.0.0.1:{port}") and share_url is None
        assert listening(port) == {"127.0.0.1"}  # (nothing on 0.0.0.0)
        client = Client(url, verbose=False)
        grid = client.predict("prior", None, 1, api_name="/sample")
        assert Image.open(grid).size == Image.open(client.predict("prior", None, 1, api_name="/sample")).size
        bad = tmp_path / "big.png"
        Image.new("L", (28, 28)).save(bad)
        with pytest.raises(AppError, match="big.png is 28×28 pixels: the model takes a greyscale image"):
            client.predict(handle_file(str(bad)), api_name="/reconstruct")
        client.close()
    finally:
        demo.close()
    assert listening(port) == set()
