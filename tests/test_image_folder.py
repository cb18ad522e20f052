"""data=image_folder: a folder of one's own images, flat or in class sub-folders (vaelab.data.image_folder)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from vaelab.data import ImageFolderDataModule
from vaelab.errors import ConfigError, DataFileError, DataNotFoundError


def _write(path, array: np.ndarray) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return array


def _grey(seed: int, size=(8, 8)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8)


def _rgb(seed: int, size=(8, 8)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)


def _module(tmp_path, folder, **kwargs) -> ImageFolderDataModule:
    settings = {"image_size": 8, "mode": "grey", "val_fraction": 0.0, "test_fraction": 0.25, **kwargs}
    return ImageFolderDataModule(data_dir=tmp_path / "data", folder=folder, **settings)


def _all(dm) -> tuple[torch.Tensor, torch.Tensor]:
    return tuple(torch.cat([dm.splits[k][i] for k in ("train", "val", "test")]) for i in (0, 1))


def test_flat_grey_folder(tmp_path):
    written = {f"img{i}.png": _write(tmp_path / "imgs" / f"img{i}.png", _grey(i)) for i in range(8)}
    (tmp_path / "imgs" / "notes.txt").write_text("not an image")
    (tmp_path / "imgs" / ".hidden.png").write_bytes(b"not read")
    dm = _module(tmp_path, tmp_path / "imgs")
    dm.prepare_data()
    dm.setup()
    assert dm.class_names == ("all",) and dm.num_classes == 1 and dm.image_shape == (1, 8, 8)
    assert [len(dm.splits[k][0]) for k in ("train", "val", "test")] == [6, 0, 2]
    images, labels = _all(dm)
    assert images.dtype == torch.uint8 and images.shape == (8, 1, 8, 8)
    assert labels.dtype == torch.int64 and labels.tolist() == [0] * 8
    # at their own size the pixels are the files' own, each file once
    assert sorted(img[0].numpy().tobytes() for img in images) == sorted(a.tobytes() for a in written.values())


def test_class_folders_rgb(tmp_path):
    root = tmp_path / "imgs"
    expected = {}
    for label, name in enumerate(["cat", "dog", "eel"]):  # sorted names -> labels 0, 1, 2
        for i in range(4):
            nested = "deeper/" if i == 3 else ""  # images at any depth below a class folder
            expected[_write(root / name / f"{nested}{i}.png", _rgb(10 * label + i)).tobytes()] = label
    (root / "empty").mkdir()  # a sub-folder without images is no class
    dm = _module(tmp_path, root, mode="rgb", val_fraction=0.2)
    dm.setup()
    assert dm.class_names == ("cat", "dog", "eel") and dm.num_classes == 3 and dm.image_shape == (3, 8, 8)
    assert [len(dm.splits[k][0]) for k in ("train", "val", "test")] == [7, 2, 3]
    images, labels = _all(dm)
    assert images.shape == (12, 3, 8, 8)
    got = {img.permute(1, 2, 0).numpy().tobytes(): int(label) for img, label in zip(images, labels, strict=True)}
    assert got == expected


def test_modes_sizes_and_fits(tmp_path):
    """RGB files read as grey and grey files as RGB, a JPEG too; a 4:1 image cropped to its centre or stretched."""
    wide = np.zeros((8, 32, 3), dtype=np.uint8)
    wide[:, 12:20] = (255, 0, 0)  # a red centre, black sides
    _write(tmp_path / "imgs" / "wide.png", wide)
    _write(tmp_path / "imgs" / "grey.png", np.full((16, 16), 200, dtype=np.uint8))
    _write(tmp_path / "imgs" / "solid.jpg", np.full((12, 12, 3), (40, 160, 90), dtype=np.uint8))
    kwargs = {"test_fraction": 0.0, "cache": False}
    crop = _module(tmp_path, tmp_path / "imgs", image_size=[8, 8], mode="rgb", fit="crop", **kwargs)
    stretch = _module(tmp_path, tmp_path / "imgs", image_size=[4, 6], mode="grey", fit="resize", **kwargs)
    crop.setup()
    stretch.setup()
    grey_rgb, solid, wide_crop = crop.splits["train"][0]  # sorted file names: grey.png, solid.jpg, wide.png
    assert wide_crop.shape == (3, 8, 8)
    assert (wide_crop[0] > 200).all() and (wide_crop[1:] < 30).all()  # only the red centre is left
    assert (grey_rgb == 200).all()
    assert (solid.flatten(1).float().mean(1) - torch.tensor([40.0, 160.0, 90.0])).abs().max() < 3
    grey, solid_grey, wide_stretched = stretch.splits["train"][0]
    assert abs(solid_grey.float().mean() - (0.299 * 40 + 0.587 * 160 + 0.114 * 90)) < 3  # PIL's luma
    assert wide_stretched.shape == (1, 4, 6) and (grey == 200).all()
    assert wide_stretched[0, :, 0].max() < 30 and wide_stretched[0, :, 3].min() > 50  # sides kept, squeezed


def test_decoded_once_and_cached(tmp_path, monkeypatch):
    root = tmp_path / "imgs"
    for i in range(6):
        _write(root / f"{i}.png", _grey(i))
    first = _module(tmp_path, root)
    first.setup()
    assert len(list((tmp_path / "data" / "vaelab_cache").glob("image_folder-*.pt"))) == 2

    def no_decoding(self, path):
        raise AssertionError("the second module should read the cache")

    monkeypatch.setattr(ImageFolderDataModule, "_decode", no_decoding)
    second = _module(tmp_path, root)
    second.setup()
    for split in ("train", "test"):
        assert torch.equal(second.splits[split][0], first.splits[split][0])
    # another image size, another cache; a changed file, another cache (its size and time changed)
    monkeypatch.undo()
    _module(tmp_path, root, image_size=4).setup()
    _write(root / "0.png", _grey(100, size=(9, 9)))
    changed = _module(tmp_path, root)
    changed.setup()
    assert len(list((tmp_path / "data" / "vaelab_cache").glob("image_folder-*.pt"))) == 6
    assert not torch.equal(_all(changed)[0], _all(first)[0])


def test_same_size_and_time_replacement_needs_hash_contents(tmp_path):
    """The documented limit of the stat key: a file replaced by one of the same size and time (PGM files of one
    size always have one length) is only noticed with hash_contents=true."""
    root = tmp_path / "imgs"
    for i in range(4):
        _write(root / f"{i}.pgm", _grey(i))
    for hash_contents in (False, True):
        _module(tmp_path, root, hash_contents=hash_contents, test_fraction=0.0).setup()
    stat = (root / "0.pgm").stat()
    _write(root / "0.pgm", _grey(50))
    os.utime(root / "0.pgm", ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (root / "0.pgm").stat().st_size == stat.st_size
    for hash_contents, expected in ((False, _grey(0)), (True, _grey(50))):
        dm = _module(tmp_path, root, hash_contents=hash_contents, test_fraction=0.0)
        dm.setup()
        assert np.array_equal(dm.splits["train"][0][0, 0].numpy(), expected)


def test_split_is_fixed_by_file_names(tmp_path):
    root = tmp_path / "imgs"
    for i in range(20):
        _write(root / f"{i:02d}.png", _grey(i))
    a = _module(tmp_path, root, split_seed=1, val_fraction=0.1)
    b = _module(tmp_path, root, split_seed=2, val_fraction=0.1)
    a.setup()
    b.setup()
    assert len(a.splits["test"][0]) == 5 and torch.equal(a.splits["test"][0], b.splits["test"][0])
    assert not torch.equal(a.splits["val"][0], b.splits["val"][0])
    # a new file leaves the test set as it was, or swaps one image at its edge
    _write(root / "20.png", _grey(20))
    c = _module(tmp_path, root)
    c.setup()
    before = {img.numpy().tobytes() for img in a.splits["test"][0]}
    after = {img.numpy().tobytes() for img in c.splits["test"][0]}
    assert len(after) == 6 and len(before - after) <= 1


# ---------------------------------------------------------------------------------------------------- errors


def test_missing_folder(tmp_path):
    dm = _module(tmp_path, tmp_path / "nowhere")
    with pytest.raises(DataNotFoundError, match="nowhere.*does not exist.*data.folder"):
        dm.prepare_data()
    with pytest.raises(DataNotFoundError, match="nowhere"):
        _module(tmp_path, tmp_path / "nowhere").setup()  # a rank that skipped prepare_data


@pytest.mark.parametrize("cache", [True, False])
def test_folder_without_images(tmp_path, cache):
    (tmp_path / "imgs" / "sub").mkdir(parents=True)
    (tmp_path / "imgs" / "readme.txt").write_text("hello")
    with pytest.raises(DataNotFoundError, match=r"no image files .*imgs"):
        _module(tmp_path, tmp_path / "imgs", cache=cache).setup()


def test_unreadable_image_is_named(tmp_path):
    for i in range(3):
        _write(tmp_path / "imgs" / f"{i}.png", _grey(i))
    (tmp_path / "imgs" / "broken.jpg").write_bytes(b"\xff\xd8 this is not a JPEG")
    with pytest.raises(DataFileError, match=r"broken\.jpg.*replace it .* or remove it"):
        _module(tmp_path, tmp_path / "imgs", test_fraction=0.0).setup()


def test_loose_images_beside_class_folders(tmp_path):
    _write(tmp_path / "imgs" / "cat" / "0.png", _grey(0))
    _write(tmp_path / "imgs" / "stray.png", _grey(1))
    with pytest.raises(ConfigError, match="stray.png"):
        _module(tmp_path, tmp_path / "imgs").setup()


@pytest.mark.parametrize(
    "kwargs",
    [{"folder": None}, {"mode": "cmyk"}, {"fit": "pad"}, {"image_size": 0}, {"image_size": [8]},
     {"test_fraction": 1.0}],
    ids=lambda k: "-".join(f"{a}={b}" for a, b in k.items()),
)
def test_invalid_settings(tmp_path, kwargs):
    with pytest.raises(ConfigError):
        ImageFolderDataModule(data_dir=tmp_path, **{"folder": tmp_path, **kwargs})


# ------------------------------------------------------------------------------ more than 8 bits, other modes (17)
def _png16(path, array: np.ndarray) -> None:
    """A 16-bit PNG of ``array`` (uint16, (H, W) grey or (H, W, C): C = 2 grey + alpha, 3 RGB, 4 RGBA), written by
    hand: Pillow writes 16-bit grey only."""
    import struct
    import zlib

    a = np.asarray(array, dtype=">u2")
    channels = 1 if a.ndim == 2 else a.shape[2]
    raw = b"".join(b"\x00" + row.tobytes() for row in a)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", a.shape[1], a.shape[0], 16, {1: 0, 2: 4, 3: 2, 4: 6}[channels], 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))


def test_sixteen_bit_and_other_modes_are_scaled_not_clipped(tmp_path):
    ramp16 = (np.arange(64, dtype=np.uint32).reshape(8, 8) * 1040).astype(np.uint16)  # 0 … 65520
    scaled = np.rint(ramp16 / 257).astype(np.uint8)  # what 0 … 65535 → 0 … 255 gives
    assert scaled.max() == 255 and len(np.unique(scaled)) == 64
    folder = tmp_path / "imgs"
    Image.fromarray(ramp16).save(folder.mkdir() or folder / "grey16.png")  # Pillow's own 16-bit grey PNG: I;16
    assert Image.open(folder / "grey16.png").mode == "I;16"
    _png16(folder / "rgb16.png", np.stack([ramp16] * 3, axis=-1))
    _png16(folder / "la16.png", np.stack([ramp16, np.full_like(ramp16, 65535)], axis=-1))
    _png16(folder / "rgba16.png", np.stack([ramp16] * 3 + [np.full_like(ramp16, 65535)], axis=-1))
    Image.fromarray(ramp16.astype(np.int32)).save(folder / "int32.tif")  # mode I
    Image.fromarray((ramp16 / 65535).astype(np.float32)).save(folder / "float.tif")  # mode F, in [0, 1]
    palette = Image.fromarray(scaled).convert("P")  # a palette image (its 64 greys, exactly)
    palette.save(folder / "palette.png")
    assert {Image.open(folder / f).mode for f in ("int32.tif", "float.tif", "palette.png")} == {"I", "F", "P"}
    dm = _module(tmp_path, folder, test_fraction=0.0)
    for path in sorted(folder.iterdir()):
        decoded = dm._decode(path)[0]
        assert np.abs(decoded.astype(int) - scaled).max() <= 1, path.name  # (float rounding: at most one level)
        assert decoded.max() >= 254, path.name
    rgb = _module(tmp_path, folder, test_fraction=0.0, mode="rgb")._decode(folder / "grey16.png")
    assert rgb.shape == (3, 8, 8) and (rgb == scaled).all()


def test_values_outside_the_scaled_range_are_an_error_naming_the_file(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray(np.full((8, 8), 2.5, dtype=np.float32)).save(folder / "hdr.tif")
    with pytest.raises(DataFileError, match=r"hdr\.tif holds floating-point values from 2.5 to 2.5; .* \[0, 1\]"):
        _module(tmp_path, folder, test_fraction=0.0)._decode(folder / "hdr.tif")


@pytest.mark.parametrize("count, settings, said", [
    (1, {}, "1 image files in {folder}: data.test_fraction=0.5 holds out 1 for testing, leaving 0 training images, of "
            "which data.val_fraction=0.0 holds out 0 for validation, leaving 0 to train on"),
    (3, {"val_fraction": 0.1}, "3 image files in {folder}: data.test_fraction=0.25 holds out 1 for testing, leaving 2 "
                               "training images, of which data.val_fraction=0.1 holds out 0 for validation, leaving 2"),
])
def test_a_folder_too_small_for_its_splits_is_one_message(tmp_path, count, settings, said):
    for i in range(count):
        _write(tmp_path / "imgs" / f"{i}.png", _grey(i))
    dm = _module(tmp_path, tmp_path / "imgs", test_fraction=0.5 if count == 1 else 0.25, **settings)
    with pytest.raises(ConfigError) as caught:
        dm.setup()
    message = str(caught.value)
    assert message.startswith("image_folder: too few images for its splits: ")
    assert said.format(folder=tmp_path / "imgs") in message
    assert "data.test_fraction or data.val_fraction" in message
