"""data.stream=true: the data set converted once into LitData chunks, then streamed. Each test names the plausible
wrong version it would catch."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from conftest import compose_train
from PIL import Image

from vaelab.data import DigitsDataModule, ImageFolderDataModule, ShapesDataModule
from vaelab.data import stream as streaming
from vaelab.errors import ConfigError
from vaelab.tasks.train import train

SPLITS = ("train", "val", "test")


def rows(images: torch.Tensor, labels: torch.Tensor) -> list[bytes]:
    """Each image with its label as bytes, sorted: the split as a multiset."""
    flat = torch.cat([images.reshape(len(images), -1), labels.reshape(len(labels), -1).to(torch.uint8)], 1)
    return sorted(map(bytes, flat.numpy()))


def streamed(loader) -> tuple[torch.Tensor, torch.Tensor]:
    batches = list(loader)
    return torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])


def image_folder(root, n: int = 240, seed: int = 0):
    """``n`` random 8×8 colour PNGs in two class folders."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        folder = root / ("a" if i % 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(folder / f"{i:04d}.png")
    return root


def pair(cls, tmp_path, **kwargs):
    """The same data set read both ways: the tensor cache (the reference) and streamed."""
    ref = cls(data_dir=tmp_path / "tensor", **kwargs)
    ref.setup()
    dm = cls(data_dir=tmp_path / "stream", stream=True, **kwargs)
    dm.prepare_data()
    dm.setup()
    return ref, dm


# ---------------------------------------------------------------------------------------------------- contents
@pytest.mark.parametrize("binarize", ["none", "static", "dynamic"])
def test_each_split_is_streamed_once_per_epoch_with_the_tensor_loaders_images(tmp_path, binarize):
    # catches: a train/val split drawn other than setup's (another seed, val taken from the end), an image in both
    # train and val, a fixed binary draw not made (static) or made with another generator, labels out of step
    ref, dm = pair(DigitsDataModule, tmp_path, batch_size=32, binarize=binarize)
    for split in SPLITS:
        shuffle = split == "train"
        images, labels = streamed(dm._loader(split, 32, shuffle=shuffle))
        assert images.dtype == torch.uint8 and images.shape[1:] == (1, 8, 8) and labels.dtype == torch.int64
        ref_images, ref_labels = ref.splits[split]
        assert rows(images, labels) == rows(ref_images, ref_labels), split
        if not shuffle:  # evaluation: every image once, in the tensor loader's order
            assert torch.equal(images, ref_images) and torch.equal(labels, ref_labels)
    # a second epoch of the training loader is again the whole split, in a new order
    loader = dm._loader("train", 32, shuffle=True)
    first, second = streamed(loader)[0], streamed(loader)[0]
    assert rows(first, torch.zeros(len(first))) == rows(second, torch.zeros(len(second)))
    assert not torch.equal(first, second)


def test_factor_labels_are_streamed_with_their_images(tmp_path):
    # catches: (N, F) factor labels flattened or cut to their first column when written into the chunks
    settings = {"image_size": 8, "n_scales": 2, "n_orientations": 2, "n_positions": 4, "batch_size": 16}
    ref, dm = pair(ShapesDataModule, tmp_path, **settings)
    for split in SPLITS:
        images, labels = streamed(dm._loader(split, 16, shuffle=False))
        assert labels.shape == ref.splits[split][1].shape and labels.shape[1] == 5
        assert torch.equal(images, ref.splits[split][0]) and torch.equal(labels, ref.splits[split][1])


def test_streamed_batches_become_the_same_floats_as_the_tensor_loaders(tmp_path):
    # catches: a streamed batch converted differently (not divided by 255, channels last), fixed_batch or
    # num_train_images reading another split's images, labels or count than the tensor path's
    ref, dm = pair(DigitsDataModule, tmp_path, batch_size=16)
    batch = next(iter(dm._loader("val", 16, shuffle=False)))
    ref_batch = next(iter(ref._loader("val", 16, shuffle=False)))
    assert torch.equal(dm.on_after_batch_transfer(batch, 0)[0], ref.on_after_batch_transfer(ref_batch, 0)[0])
    for split in SPLITS:
        for got, want in zip(dm.fixed_batch(split, 10), ref.fixed_batch(split, 10), strict=True):
            assert torch.equal(got, want), split
    assert dm.num_train_images == ref.num_train_images


def test_streamed_images_index_like_a_tensor_and_refuse_whole_split_operations(tmp_path):
    # catches: an off-by-one in slices or negative indices, index tensors read in the wrong order
    ref, dm = pair(DigitsDataModule, tmp_path)
    view, tensor = dm.splits["test"][0], ref.splits["test"][0]
    assert len(view) == len(tensor) and view.shape == tensor.shape
    for index in (0, -1, slice(3, 9), slice(None, 4), torch.tensor([7, 2, 2, 30])):
        assert torch.equal(view[index], tensor[index])
    with pytest.raises(IndexError):
        view[len(tensor)]
    with pytest.raises(AttributeError, match="data.stream=true.*'.float'"):
        view.float()


# ---------------------------------------------------------------------------------------------------- DDP
@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("split", SPLITS)
def test_two_ranks_get_disjoint_shards_that_cover_the_split(tmp_path, monkeypatch, split, workers):
    # catches: every rank served the whole split (the rank ignored), workers of a rank serving the same images, an
    # evaluation shard padded or cut (an image counted twice or never)
    _, dm = pair(DigitsDataModule, tmp_path)
    images, _ = dm.splits[split]
    shuffle, batch_size = split == "train", 32
    shards = []
    for rank in (0, 1):
        monkeypatch.setenv("WORLD_SIZE", "2")
        monkeypatch.setenv("GLOBAL_RANK", str(rank))
        loader = streaming.stream_loader(images, batch_size, shuffle, seed=3, world_size=2, num_workers=workers)
        shards.append(streamed(loader)[0])
    keys = [set(map(bytes, s.reshape(len(s), -1).numpy())) for s in shards]
    assert all(len(k) == len(s) for k, s in zip(keys, shards, strict=True))  # (digits has no duplicate images)
    assert not keys[0] & keys[1]
    everything = set(map(bytes, images[:].reshape(len(images), -1).numpy()))
    if shuffle:  # training shards are even: the last images of the epoch are dropped, fewer than a batch per rank
        assert len(shards[0]) == len(shards[1])
        assert keys[0] | keys[1] <= everything and len(everything) - len(keys[0] | keys[1]) < 2 * batch_size
    else:
        assert keys[0] | keys[1] == everything


def test_a_loader_whose_world_size_litdata_does_not_see_is_refused(tmp_path, monkeypatch):
    # catches: DDP without a process group visible to LitData silently serving every rank everything
    _, dm = pair(DigitsDataModule, tmp_path)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(RuntimeError, match="LitData sees 1 processes but the trainer runs 2"):
        streaming.stream_loader(dm.splits["val"][0], 32, False, world_size=2)


# ---------------------------------------------------------------------------------------------------- image folders
def test_an_image_folder_is_converted_file_by_file_and_streams_the_decoded_images(tmp_path, monkeypatch):
    # catches: the folder decoded whole (load_split) to be converted, the test split chosen otherwise than
    # the tensor path's file hash
    folder = image_folder(tmp_path / "images")
    settings = {"folder": folder, "image_size": 8, "mode": "rgb", "batch_size": 50}
    ref = ImageFolderDataModule(data_dir=tmp_path / "tensor", **settings)
    ref.setup()

    def whole(*args, **kwargs):
        raise AssertionError("the whole folder was decoded into memory")

    monkeypatch.setattr(ImageFolderDataModule, "load_split", whole)
    dm = ImageFolderDataModule(data_dir=tmp_path / "stream", stream=True, **settings)
    dm.setup()
    for split in SPLITS:
        images, labels = streamed(dm._loader(split, 50, shuffle=split == "train"))
        assert rows(images, labels) == rows(*ref.splits[split]), split


def test_a_changed_image_folder_is_converted_again(tmp_path):
    # catches: a stream folder keyed on the data set's name or settings only (a changed file served from old chunks)
    folder = image_folder(tmp_path / "images", n=60)
    settings = {"data_dir": tmp_path / "data", "folder": folder, "image_size": 8, "stream": True}
    first = ImageFolderDataModule(**settings)
    first.setup()
    root = streaming.stream_root(first)
    assert ImageFolderDataModule(**settings).setup() is None and streaming.stream_root(
        ImageFolderDataModule(**settings)) == root  # unchanged: the same chunks, not converted again
    target = sorted(folder.rglob("*.png"))[0]
    Image.fromarray(np.full((8, 8, 3), 7, dtype=np.uint8)).save(target)
    changed = ImageFolderDataModule(**settings)
    changed.setup()
    assert streaming.stream_root(changed) != root
    everything = torch.cat([changed.splits[s][0][:] for s in SPLITS])
    assert (everything == 7).flatten(1).all(1).sum() == 1  # the new image is served


def test_a_changed_setting_that_decides_the_splits_is_converted_again(tmp_path):
    # catches: val_fraction or static binarisation left out of the key (old splits served under new settings)
    base = DigitsDataModule(data_dir=tmp_path, stream=True)
    roots = {streaming.stream_root(base), streaming.stream_root(DigitsDataModule(data_dir=tmp_path, stream=True,
                                                                                 val_fraction=0.2)),
             streaming.stream_root(DigitsDataModule(data_dir=tmp_path, stream=True, binarize="static"))}
    assert len(roots) == 3
    # dynamic training draws are made per batch, so only the fixed val/test draws are in the key, not the batch size
    assert streaming.stream_root(DigitsDataModule(data_dir=tmp_path, stream=True, batch_size=7)) == \
        streaming.stream_root(base)


def test_a_killed_conversion_leaves_nothing_that_is_read_and_the_next_start_converts_again(tmp_path, monkeypatch):
    # catches: chunks written straight into the final folder (a killed conversion later read as complete), a
    # temporary folder left behind
    dm = DigitsDataModule(data_dir=tmp_path, stream=True)
    root = streaming.stream_root(dm)
    calls = []

    def killed(dm, image):
        calls.append(1)
        if len(calls) > 500:
            raise KeyboardInterrupt
        return image

    monkeypatch.setattr(streaming, "_checked", killed)
    with pytest.raises(KeyboardInterrupt):
        streaming.convert(dm)
    assert not root.exists() and not list(root.parent.glob("*.tmp*"))
    monkeypatch.undo()
    assert streaming.convert(dm) == root
    meta = json.loads((root / streaming.META).read_text())
    assert meta["counts"] == {"train": 1293, "val": 144, "test": 360}


# ---------------------------------------------------------------------------------------------------- config
@pytest.mark.parametrize("value", ["yes", 1, None])
def test_a_stream_setting_that_is_not_a_bool_is_refused_naming_the_key(tmp_path, value):
    with pytest.raises(ConfigError, match=rf"data.stream = {value!r} is invalid: it must be true .* or false"):
        DigitsDataModule(data_dir=tmp_path, stream=value)


def test_streaming_without_litdata_installed_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "litdata", None)  # (an import of it now raises ImportError)
    with pytest.raises(ConfigError, match=r"data.stream = true needs the litdata package"):
        DigitsDataModule(data_dir=tmp_path, stream=True).setup()


def test_every_data_config_says_stream_false(tmp_path):
    for name in ("mnist", "fashion_mnist", "digits", "shapes", "shapes_full", "image_folder"):
        cfg = compose_train(tmp_path, [f"data={name}"])
        assert cfg.data.stream is False, name


# ---------------------------------------------------------------------------------------------------- training
@pytest.mark.slow
def test_one_epoch_trains_on_streamed_digits(tmp_path):
    cfg = compose_train(tmp_path, ["model=vae", "data=digits", "data.stream=true", "model.latent_dim=4",
                                   "callbacks=minimal", "logger=none"])
    train(cfg)
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["status"] == "completed"
    assert {"train/loss", "val/loss"} <= set(record["train"]) | set(record["val"])
    assert "test/loss" in record["test"]
    assert list((tmp_path / "data" / "vaelab_cache").glob("digits-stream-*"))
