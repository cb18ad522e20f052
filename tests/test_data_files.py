"""Bad data files: one clear message naming the file and the fix, never a traceback and never a wrong result.

Each test writes a tiny data set in torchvision's layout (``<tmp>/MNIST/raw/*-ubyte``), spoils one file the way
real downloads and copies get spoilt, and checks that ``prepare_data`` and ``setup`` (each on a fresh DataModule,
as a rank that skipped ``prepare_data`` would) stop with a ``DataFileError`` that names the file and says what to
do, before anything is cached. The decoded cache under ``vaelab_cache/`` is checked the other way: a torn one is
rebuilt from the sources, with a warning.
"""

from __future__ import annotations

import gzip
import logging
import struct

import numpy as np
import pytest
import torch
from hydra.errors import CompactHydraException
from idx import write_mnist_like

from vaelab.data import FashionMNISTDataModule, MNISTDataModule
from vaelab.data.base import ImageDataModule
from vaelab.data.idx import IDX_FILES, read_idx_header, validate_idx, write_idx
from vaelab.errors import DataFileError, VaelabError

FIX = ("download", "delete")  # every file message says how to get a good file


def _raw(tmp_path, split: str, kind: str, folder: str = "MNIST"):
    return tmp_path / folder / "raw" / IDX_FILES[split, kind]


def _cache_files(tmp_path) -> list:
    cache = tmp_path / "vaelab_cache"
    return sorted(cache.iterdir()) if cache.exists() else []


def _expect_clear_error(tmp_path, files, *phrases, cls=MNISTDataModule, fix=FIX) -> str:
    """prepare_data and setup each stop with a DataFileError naming ``files``; nothing is cached."""
    messages = []
    for step in ("prepare_data", "setup"):
        dm = cls(data_dir=tmp_path, download=False)
        with pytest.raises(DataFileError) as info:
            getattr(dm, step)()
        message = str(info.value)
        for f in files:
            assert str(f) in message, f"{step}: {message!r} does not name {f}"
        for phrase in (*phrases, *fix):
            assert phrase in message, f"{step}: {message!r} does not say {phrase!r}"
        messages.append(message)
    assert messages[0] == messages[1]
    assert _cache_files(tmp_path) == [], "a cache was written from bad source files"
    return messages[0]


def _set_count(path, n: int) -> None:
    data = bytearray(path.read_bytes())
    data[4:8] = struct.pack(">I", n)
    path.write_bytes(bytes(data))


# ------------------------------------------------------------------------------------- the error class


def test_data_file_error_is_compact_and_a_value_error():
    assert issubclass(DataFileError, VaelabError)
    assert issubclass(DataFileError, ValueError)
    assert issubclass(DataFileError, CompactHydraException)  # Hydra prints the message, not a traceback


def test_validator_accepts_good_files(tmp_path):
    write_mnist_like(tmp_path, "MNIST", n_train=7, n_test=3)
    assert validate_idx(_raw(tmp_path, "train", "images"), 3, (28, 28)) == 7
    assert validate_idx(_raw(tmp_path, "test", "labels"), 1) == 3
    header = read_idx_header(_raw(tmp_path, "train", "images"))
    assert header.shape == (7, 28, 28) and header.nbytes == 16 + 7 * 784


# ---------------------------------------------------------------------------------------- one file spoilt


@pytest.mark.parametrize("cls,folder", [(MNISTDataModule, "MNIST"), (FashionMNISTDataModule, "FashionMNIST")])
def test_truncated_images_file(tmp_path, cls, folder):
    """1. An interrupted download or copy: fewer bytes than the header's sizes."""
    write_mnist_like(tmp_path, folder, n_train=50, n_test=10)
    path = _raw(tmp_path, "train", "images", folder)
    path.write_bytes(path.read_bytes()[: 16 + 784 * 3 + 100])
    message = _expect_clear_error(
        tmp_path, [path], "the header says 50 images of 28×28 (39,216 bytes)", "2,468 bytes", "truncated", cls=cls
    )
    assert message.startswith(str(path))


def test_truncated_labels_file(tmp_path):
    write_mnist_like(tmp_path, "MNIST", n_train=50, n_test=10)
    path = _raw(tmp_path, "test", "labels")
    path.write_bytes(path.read_bytes()[:12])
    _expect_clear_error(tmp_path, [path], "the header says 10 labels (18 bytes)", "12 bytes", "truncated")


def test_header_claims_more_images_than_the_file_holds(tmp_path):
    """2. A header that promises 60,000 images in a file of 50."""
    write_mnist_like(tmp_path, "MNIST", n_train=50, n_test=10)
    path = _raw(tmp_path, "train", "images")
    _set_count(path, 60000)
    _expect_clear_error(
        tmp_path, [path], "the header says 60000 images of 28×28 (47,040,016 bytes)", "39,216 bytes", "truncated"
    )


def test_file_longer_than_its_header_says(tmp_path):
    write_mnist_like(tmp_path, "MNIST", n_train=50, n_test=10)
    path = _raw(tmp_path, "train", "labels")
    path.write_bytes(path.read_bytes() + b"\0" * 5)
    _expect_clear_error(tmp_path, [path], "the header says 50 labels (58 bytes)", "63 bytes", "5 bytes more")


@pytest.mark.parametrize(("split", "kind"), [("train", "images"), ("test", "labels")])
def test_zero_byte_file(tmp_path, split, kind):
    """3. What a failed download or a full disk leaves behind."""
    write_mnist_like(tmp_path, "MNIST", n_train=20, n_test=10)
    path = _raw(tmp_path, split, kind)
    path.write_bytes(b"")
    _expect_clear_error(tmp_path, [path], "is empty (0 bytes)")


def test_file_too_short_for_a_header(tmp_path):
    write_mnist_like(tmp_path, "MNIST", n_train=20, n_test=10)
    path = _raw(tmp_path, "train", "images")
    path.write_bytes(path.read_bytes()[:10])
    _expect_clear_error(tmp_path, [path], "10 bytes", "too short")


def _labels_as_images(raw):
    (raw / IDX_FILES["train", "images"]).write_bytes((raw / IDX_FILES["train", "labels"]).read_bytes())
    return raw / IDX_FILES["train", "images"], ["a labels file (1 dimension: 20)", "images need 3 dimensions"]


def _images_as_labels(raw):
    (raw / IDX_FILES["test", "labels"]).write_bytes((raw / IDX_FILES["test", "images"]).read_bytes())
    return raw / IDX_FILES["test", "labels"], ["an images file (3 dimensions: 10×28×28)", "labels need 1 dimension"]


def _garbage(raw):
    path = raw / IDX_FILES["train", "labels"]
    path.write_bytes(b"<html><body>404 Not Found</body></html>")
    return path, ["not an IDX file", "3c 68 74 6d"]


def _gzipped(raw):
    path = raw / IDX_FILES["test", "images"]
    path.write_bytes(gzip.compress(path.read_bytes()))
    return path, ["gzip-compressed", f"mv {path} {path}.gz && gunzip {path}.gz"]


def _float_data(raw):
    path = raw / IDX_FILES["train", "images"]
    data = bytearray(path.read_bytes())
    data[2] = 0x0D  # float32
    path.write_bytes(bytes(data))
    return path, ["type 0x0d (float32)", "uint8 (type 0x08)"]


@pytest.mark.parametrize(
    "spoil",
    [_labels_as_images, _images_as_labels, _garbage, _gzipped, _float_data],
    ids=["labels-as-images", "images-as-labels", "garbage", "gzip", "float32"],
)
def test_wrong_magic_number(tmp_path, spoil):
    """4. A labels file where images are expected (or the reverse), an HTML error page, a still-gzipped file."""
    write_mnist_like(tmp_path, "MNIST", n_train=20, n_test=10)
    path, phrases = spoil(tmp_path / "MNIST" / "raw")
    _expect_clear_error(tmp_path, [path], *phrases)


def test_images_of_the_wrong_size(tmp_path):
    """9. A 3-D header of 32×32 images (another data set's file) where MNIST's 28×28 are expected."""
    write_mnist_like(tmp_path, "MNIST", n_train=20, n_test=10)
    path = _raw(tmp_path, "test", "images")
    write_idx(path, np.zeros((10, 32, 32), np.uint8))
    _expect_clear_error(tmp_path, [path], "images of 32×32", "MNIST images are 28×28", "another data set")


# --------------------------------------------------------------------------------- two files that disagree


def _write_split(raw, split, n_images, n_labels, seed=0):
    rng = np.random.default_rng(seed)
    write_idx(raw / IDX_FILES[split, "images"], rng.integers(0, 256, (n_images, 28, 28), dtype=np.uint8))
    write_idx(raw / IDX_FILES[split, "labels"], rng.integers(0, 10, n_labels, dtype=np.uint8))


@pytest.mark.parametrize(
    "split,n_images,n_labels",
    [
        # 5. Today an IndexError in the middle of training, after the bad pair was cached.
        ("train", 100, 99),
        # 6. Today silently accepted: torchvision serves the first 98 labels with the 98 images.
        ("train", 98, 100),
        # 7. The test files are checked with the training files, in prepare_data and setup: not after training.
        ("test", 20, 19),
    ],
    ids=["fewer labels than images", "fewer images than labels", "a bad test split before anything is cached"],
)
def test_images_and_labels_of_different_counts_stop_the_run(tmp_path, split, n_images, n_labels):
    sizes = {"train": 100, "test": 20}
    data = write_mnist_like(tmp_path, "MNIST", n_train=sizes["train"], n_test=sizes["test"])
    _write_split(data.raw_folder, split, n_images, n_labels)
    images, labels = _raw(tmp_path, split, "images"), _raw(tmp_path, split, "labels")
    message = _expect_clear_error(tmp_path, [images, labels], fix=("download both again", "delete them"))
    assert f"{images} holds {n_images} images but {labels} holds {n_labels} labels" in message
    assert "the two files must come from the same release" in message


def test_a_bad_test_file_is_found_even_with_the_training_split_cached(tmp_path):
    """The training split's cache must not hide a test file spoilt since: setup checks every source file."""
    write_mnist_like(tmp_path, "MNIST", n_train=40, n_test=20)
    MNISTDataModule(data_dir=tmp_path, download=False).setup()
    path = _raw(tmp_path, "test", "images")
    path.write_bytes(b"")
    dm = MNISTDataModule(data_dir=tmp_path, download=False)
    with pytest.raises(DataFileError, match="is empty"):
        dm.setup()


class _Mismatched(ImageDataModule):
    """A data set whose own reader returns one label too few for its test split."""

    name = "mismatched"

    def load_split(self, train):
        n = 30 if train else 10
        return torch.zeros(n, 1, 28, 28, dtype=torch.uint8), torch.zeros(n if train else n - 1, dtype=torch.long)


@pytest.mark.parametrize("cache", [True, False])
def test_every_data_set_checks_images_against_labels(tmp_path, cache):
    """The generic check in the base class, for data sets that are not IDX files."""
    dm = _Mismatched(data_dir=tmp_path, cache=cache)
    with pytest.raises(DataFileError) as info:
        dm.setup()
    message = str(info.value)
    assert "mismatched" in message and "test split" in message and "10 images but 9 labels" in message
    assert _cache_files(tmp_path) == [] or all("test" not in p.name for p in _cache_files(tmp_path))


# ------------------------------------------------------------------------------------------- the cache


def _torn(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _emptied(path):
    path.write_bytes(b"")


def _wrong_keys(path):
    torch.save({"pictures": torch.zeros(3)}, path)


def _wrong_shape(path):
    data = torch.load(path, weights_only=True)
    torch.save({"images": data["images"][:, :, :14], "labels": data["labels"]}, path)


def _short_labels(path):
    data = torch.load(path, weights_only=True)
    torch.save({"images": data["images"], "labels": data["labels"][:-1]}, path)


def _not_a_dict(path):
    torch.save(torch.zeros(3), path)


@pytest.mark.parametrize(
    "spoil",
    [_torn, _emptied, _wrong_keys, _wrong_shape, _short_labels, _not_a_dict],
    ids=["torn", "empty", "wrong-keys", "wrong-shape", "short-labels", "not-a-dict"],
)
def test_a_torn_cache_is_rebuilt(tmp_path, caplog, spoil):
    """8. A cache file cut short (a killed job, a full disk) or holding something else is rebuilt, with a warning."""
    write_mnist_like(tmp_path, "MNIST", n_train=30, n_test=10)
    first = MNISTDataModule(data_dir=tmp_path, download=False)
    first.setup()
    caches = _cache_files(tmp_path)
    assert len(caches) == 2
    for path in caches:
        spoil(path)

    second = MNISTDataModule(data_dir=tmp_path, download=False)
    with caplog.at_level(logging.WARNING, logger="vaelab.data.base"):
        second.setup()
    for split in ("train", "val", "test"):
        for a, b in zip(first.splits[split], second.splits[split], strict=True):
            assert torch.equal(a, b)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    for path in caches:
        assert any(str(path) in w and "rebuilding it" in w for w in warnings), warnings
    # the cache is whole again: the next module reads it without a warning and without decoding
    assert _cache_files(tmp_path) == caches
    for path in caches:
        data = torch.load(path, weights_only=True)
        assert data["images"].dtype == torch.uint8 and len(data["images"]) == len(data["labels"])
    caplog.clear()
    third = MNISTDataModule(data_dir=tmp_path, download=False)
    with caplog.at_level(logging.WARNING, logger="vaelab.data.base"):
        third.setup()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert torch.equal(third.splits["test"][0], first.splits["test"][0])


def _garble_pixels(path) -> None:
    """Overwrite bytes in the middle of the images' storage inside the cache's zip archive, leaving the archive's
    structure as it was (a bad sector, a flipped bit in a copy): the file still opens."""
    import zipfile

    with zipfile.ZipFile(path) as archive:
        entry = max(archive.infolist(), key=lambda info: info.file_size)  # the images' bytes
    with open(path, "r+b") as stream:
        stream.seek(entry.header_offset + 26)
        name_length, extra_length = struct.unpack("<HH", stream.read(4))
        start = entry.header_offset + 30 + name_length + extra_length
        stream.seek(start + entry.file_size // 2)
        stream.write(bytes(range(200, 256)) * 4)


def test_a_damaged_cache_that_still_opens_is_rebuilt(tmp_path, caplog):
    write_mnist_like(tmp_path, "MNIST", n_train=30, n_test=10)
    first = MNISTDataModule(data_dir=tmp_path, download=False)
    first.setup()
    caches = _cache_files(tmp_path)
    for path in caches:
        before = torch.load(path, weights_only=True)["images"]
        _garble_pixels(path)
        garbled = torch.load(path, weights_only=True)["images"]  # it opens, and it holds other pixels
        assert garbled.shape == before.shape and not torch.equal(garbled, before)
    second = MNISTDataModule(data_dir=tmp_path, download=False)
    with caplog.at_level(logging.WARNING, logger="vaelab.data.base"):
        second.setup()
    for split in ("train", "val", "test"):  # the images are the sources', not the damaged cache's
        assert torch.equal(first.splits[split][0], second.splits[split][0])
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    for path in caches:
        assert any(str(path) in w and "do not match the checksum" in w and "rebuilding it" in w
                   for w in warnings), warnings
    caplog.clear()  # the cache is whole again: read without a warning
    with caplog.at_level(logging.WARNING, logger="vaelab.data.base"):
        MNISTDataModule(data_dir=tmp_path, download=False).setup()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_read_only_data_folder_without_a_cache_is_a_warning_and_the_data_in_memory(tmp_path, caplog,
                                                                                       monkeypatch):
    write_mnist_like(tmp_path, "MNIST", n_train=30, n_test=10)
    real_mkdir = type(tmp_path).mkdir

    def read_only(self, *args, **kwargs):  # (the tests run as root, for whom chmod would not stop a write)
        if self.name == "vaelab_cache":
            raise PermissionError(13, "Permission denied", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(type(tmp_path), "mkdir", read_only)
    dm = MNISTDataModule(data_dir=tmp_path, download=False)
    with caplog.at_level(logging.WARNING, logger="vaelab.data.base"):
        dm.setup()
    assert len(dm.splits["train"][0]) == 27 and len(dm.splits["test"][0]) == 10
    warning = next(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert f"cannot write the decoded cache {tmp_path / 'vaelab_cache'}/mnist-train-" in warning
    assert "Permission denied" in warning and "kept in memory for this run" in warning
    assert "data.cache_dir=<folder>" in warning and "data.cache=false" in warning
    assert not (tmp_path / "vaelab_cache").exists()
    monkeypatch.undo()
    # a cache folder of one's own: the cache goes there, and is read from there
    elsewhere = tmp_path / "my_cache"
    MNISTDataModule(data_dir=tmp_path, download=False, cache_dir=elsewhere).setup()
    assert len(list(elsewhere.glob("mnist-*.pt"))) == 2 and not (tmp_path / "vaelab_cache").exists()


def test_a_data_dir_that_is_a_file_is_one_message(tmp_path):
    from conftest import compose_train

    from vaelab.tasks.train import train

    afile = tmp_path / "digits.csv"
    afile.write_text("not a folder")
    with pytest.raises(VaelabError) as caught:
        train(compose_train(tmp_path, ["logger=none", "callbacks=minimal", f"data.data_dir={afile}"]))
    assert str(caught.value) == (
        f"data.data_dir={afile} is a file, not a folder: give the folder that holds the data set's files (and its "
        f"decoded cache, in <data_dir>/vaelab_cache), e.g. data.data_dir={tmp_path}")


class _FakeTrainer:
    """What the DataModule reads of a trainer to shard its splits."""

    def __init__(self, world_size: int, rank: int = 0) -> None:
        self.world_size, self.global_rank, self.overfit_batches, self.current_epoch = world_size, rank, 0, 0


def test_a_validation_split_smaller_than_the_processes_is_refused_under_ddp(tmp_path, monkeypatch):
    from vaelab.data import DigitsDataModule

    monkeypatch.setenv("PL_GLOBAL_SEED", "0")  # (the run's seed, as seed_everything sets it on every rank)
    dm = DigitsDataModule(data_dir=tmp_path, val_fraction=0.002)  # 1,437 training images: 3 held out
    dm.setup()
    assert len(dm.splits["val"][0]) == 3
    dm.trainer = _FakeTrainer(world_size=4)
    with pytest.raises(VaelabError) as caught:
        dm.val_dataloader()
    assert str(caught.value) == (
        "digits: the val split has 3 images for 4 processes: under DDP every process needs at least one. Give it "
        "more images (data.val_fraction), or run on at most 3 devices (trainer.devices)")
    dm.trainer = _FakeTrainer(world_size=3, rank=2)  # one image each: fine
    assert len(list(dm.val_dataloader())) == 1
    dm.trainer = _FakeTrainer(world_size=4)
    assert len(list(dm.train_dataloader())) > 0  # (training shards are padded: every process gets batches)
