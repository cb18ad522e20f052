"""The field's data sets (data=cifar10, svhn, celeba, omniglot, dsprites, shapes3d) on tiny fakes written in each
publisher's own layout: what comes out (a known pixel at a known place, labels), the splits, the message when files
are missing, the publishers' URLs (never fetched here), the restricted unpickler, and the factor data sets feeding
the disentanglement metrics. Each test names the plausible wrong version it catches."""

from __future__ import annotations

import json
import math
import os
import pickle
import struct

import numpy as np
import pytest
import scipy.io
import torch
from conftest import compose_train
from PIL import Image

from vaelab.data import (
    CelebADataModule,
    CIFAR10DataModule,
    DSpritesDataModule,
    OmniglotDataModule,
    Shapes3DDataModule,
    SVHNDataModule,
)
from vaelab.data import celeba as celeba_module
from vaelab.data.safe_pickle import load_data_pickle
from vaelab.errors import ConfigError, DataFileError, DataNotFoundError
from vaelab.metrics.factors import disentanglement_metrics, has_factors
from vaelab.tasks.hydra_job import instantiate_config
from vaelab.tasks.train import train


# ================================================================================================ fakes, as published
def py2_pickle(obj) -> bytes:
    """``obj`` pickled as Python 2's cPickle (protocol 2) pickled CIFAR-10's batches: ``str`` as SHORT_BINSTRING or
    BINSTRING, a numpy array through ``numpy.core.multiarray._reconstruct``, ``numpy.ndarray`` and ``numpy.dtype``.
    For dicts, lists, tuples, ints, None, bytes (Python 2's str) and uint8 arrays."""
    out = bytearray(pickle.PROTO + b"\x02")

    def emit(x) -> None:
        if x is None:
            out.extend(pickle.NONE)
        elif x is False:
            out.extend(pickle.NEWFALSE)
        elif isinstance(x, bytes):
            out.extend(pickle.SHORT_BINSTRING + bytes([len(x)]) + x if len(x) < 256
                       else pickle.BINSTRING + struct.pack("<i", len(x)) + x)
        elif isinstance(x, int):
            out.extend(pickle.BININT1 + bytes([x]) if 0 <= x < 256 else pickle.BININT + struct.pack("<i", x))
        elif isinstance(x, tuple):
            out.extend(pickle.MARK)
            for item in x:
                emit(item)
            out.extend(pickle.TUPLE)
        elif isinstance(x, list):
            out.extend(pickle.EMPTY_LIST + pickle.MARK)
            for item in x:
                emit(item)
            out.extend(pickle.APPENDS)
        elif isinstance(x, dict):
            out.extend(pickle.EMPTY_DICT + pickle.MARK)
            for key, value in x.items():
                emit(key)
                emit(value)
            out.extend(pickle.SETITEMS)
        elif isinstance(x, np.ndarray):
            assert x.dtype == np.uint8
            out.extend(b"cnumpy.core.multiarray\n_reconstruct\n" + b"cnumpy\nndarray\n")
            emit((0,))
            emit(b"b")
            out.extend(pickle.TUPLE3 + pickle.REDUCE + pickle.MARK)
            emit(1)
            emit(tuple(x.shape))
            out.extend(b"cnumpy\ndtype\n")
            emit((b"u1", 0, 1))
            out.extend(pickle.REDUCE)
            emit((3, b"|", None, None, None, -1, -1, 0))
            out.extend(pickle.BUILD)
            emit(False)
            emit(np.ascontiguousarray(x).tobytes())
            out.extend(pickle.TUPLE + pickle.BUILD)
        else:
            raise TypeError(type(x))

    emit(obj)
    return bytes(out + pickle.STOP)


CIFAR_PER_BATCH = 6


def write_cifar(data_dir, per_batch: int = CIFAR_PER_BATCH):
    """cifar-10-batches-py/ with 5 training batches and a test batch of ``per_batch`` images each. Known pixel:
    data_batch_2's image 3 has green (channel 1) 200 at row 2, column 5. Labels: (batch + row) % 10."""
    folder = data_dir / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for b, name in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        data = rng.integers(0, 100, (per_batch, 3072), dtype=np.uint8)
        if name == "data_batch_2":
            data[3, 1 * 1024 + 2 * 32 + 5] = 200  # channel-major planes, each row-major 32x32
        batch = {b"batch_label": b"training batch", b"labels": [(b + r) % 10 for r in range(per_batch)],
                 b"data": data, b"filenames": [b"img%d.png" % r for r in range(per_batch)]}
        (folder / name).write_bytes(py2_pickle(batch))
    return folder


def write_svhn(data_dir, n_train: int = 7, n_test: int = 3):
    """svhn/{train,test}_32x32.mat: X (32, 32, 3, N); image n has channel 1 = 10 n + 7 at row 2, column 5; y (N, 1)
    in 1..10 with the first label 10 (the digit 0)."""
    folder = data_dir / "svhn"
    folder.mkdir(parents=True)
    for name, n in (("train_32x32.mat", n_train), ("test_32x32.mat", n_test)):
        x = np.zeros((32, 32, 3, n), dtype=np.uint8)
        x[2, 5, 1, :] = 10 * np.arange(n) + 7
        y = np.array([[10]] + [[1 + i % 9] for i in range(n - 1)], dtype=np.uint8)
        scipy.io.savemat(folder / name, {"X": x, "y": y})
    return folder


CELEBA_PARTS = (0, 0, 0, 1, 2, 2)


def write_celeba(data_dir, parts=CELEBA_PARTS):
    """celeba/img_align_celeba/00000k.jpg (178x218, red, with the centred 148-square green) and
    list_eval_partition.txt."""
    folder = data_dir / "celeba"
    (folder / "img_align_celeba").mkdir(parents=True)
    lines = []
    for k, part in enumerate(parts):
        image = Image.new("RGB", (178, 218), (255, 0, 0))
        image.paste((0, 255, 0), (15, 35, 163, 183))
        name = f"{k + 1:06d}.jpg"
        image.save(folder / "img_align_celeba" / name, quality=95)
        lines.append(f"{name} {part}")
    (folder / "list_eval_partition.txt").write_text("\n".join(lines) + "\n")
    return folder


def write_omniglot(data_dir, n_train: int = 5, n_test: int = 3):
    """omniglot/chardata.mat: every image has 1.0 at (row 2, column 5) and 0.5 at (row 7, column 1), stored as
    MATLAB does, column-major: index row + 28 * column; targets (50, N) one-hot, alphabet n % 50."""
    folder = data_dir / "omniglot"
    folder.mkdir(parents=True)
    mat = {}
    for key, n in (("data", n_train), ("testdata", n_test)):
        columns = np.zeros((784, n))
        columns[2 + 28 * 5] = 1.0
        columns[7 + 28 * 1] = 0.5
        target = np.zeros((50, n))
        target[np.arange(n) % 50, np.arange(n)] = 1
        mat[key], mat[key.replace("data", "target")] = columns, target
    scipy.io.savemat(folder / "chardata.mat", mat)
    return folder


def unary_images(factors: np.ndarray, channels: int = 1) -> np.ndarray:
    """64x64 images whose row k holds factor k's index in unary (that many 1s from the left), channel 0."""
    images = np.zeros((len(factors), 64, 64, channels), dtype=np.uint8)
    for k in range(factors.shape[1]):
        images[:, k, :, 0] = np.arange(64)[None, :] < factors[:, k : k + 1]
    return images


def read_unary(images: torch.Tensor, n_factors: int) -> np.ndarray:
    """The factors :func:`unary_images` wrote, from uint8 (n, C, 64, 64) images of 0/255."""
    return (images[:, 0, :n_factors, :].cpu().numpy() > 127).sum(-1)


def grid(sizes) -> np.ndarray:
    """Every combination of ``sizes``, in mixed-radix order (the last factor fastest)."""
    return np.stack(np.unravel_index(np.arange(math.prod(sizes)), sizes), axis=1).astype(np.int64)


DSPRITES_SIZES = (1, 3, 2, 2, 2, 2)  # 48 images (the publisher's: 1, 3, 6, 40, 32, 32)


def write_dsprites(data_dir, sizes=DSPRITES_SIZES, drop_last: bool = False):
    folder = data_dir / "dsprites"
    folder.mkdir(parents=True)
    classes = grid(sizes)
    if drop_last:
        classes = classes[:-1]
    np.savez_compressed(folder / "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz",
                        imgs=unary_images(classes)[..., 0], latents_classes=classes,
                        latents_values=classes.astype(np.float64))
    return folder


SHAPES3D_SIZES = (2, 1, 2, 2, 3, 2)  # 48 images (the publisher's: 10, 10, 10, 8, 4, 15)


def shapes3d_values(classes: np.ndarray) -> np.ndarray:
    """Float factor values as 3dshapes.h5 stores them (hues k/10, scale from 0.75, shape k, orientation from −30)."""
    values = classes.astype(np.float64)
    values[:, :3] /= 10
    values[:, 3] = 0.75 + values[:, 3] * 0.5 / 7
    values[:, 5] = -30 + values[:, 5] * 60 / 14
    return values


def write_shapes3d(data_dir, sizes=SHAPES3D_SIZES):
    """shapes3d/3dshapes.h5: images (N, 64, 64, 3), unary factors in channel 0, and channel 2 = 9 at (row 10,
    column 3); labels the float factor values."""
    h5py = pytest.importorskip("h5py")  # (an optional dependency of data=shapes3d)
    folder = data_dir / "shapes3d"
    folder.mkdir(parents=True)
    classes = grid(sizes)
    images = unary_images(classes, channels=3) * 255
    images[:, 10, 3, 2] = 9
    with h5py.File(folder / "3dshapes.h5", "w") as f:
        f["images"], f["labels"] = images, shapes3d_values(classes)
    return folder


# ================================================================================================ CIFAR-10
def test_cifar10_reads_the_official_batches_channel_planes_and_labels(tmp_path):
    """Catches: the rows read as (32, 32, 3) pixels (channel-last) instead of three 32x32 planes; batches read out
    of order; labels taken from the wrong batch."""
    write_cifar(tmp_path)
    dm = CIFAR10DataModule(data_dir=tmp_path, download=False)
    images, labels = dm.load_split(train=True)
    assert images.dtype == torch.uint8 and images.shape == (5 * CIFAR_PER_BATCH, 3, 32, 32)
    known = 1 * CIFAR_PER_BATCH + 3  # data_batch_2, image 3
    assert images[known, 1, 2, 5] == 200
    assert torch.equal(labels, torch.tensor([(b + r) % 10 for b in range(5) for r in range(CIFAR_PER_BATCH)]))
    test_images, test_labels = dm.load_split(train=False)
    assert test_images.shape == (CIFAR_PER_BATCH, 3, 32, 32)
    assert test_labels.tolist() == [(5 + r) % 10 for r in range(CIFAR_PER_BATCH)]
    dm = CIFAR10DataModule(data_dir=tmp_path, download=False, val_fraction=0.2)
    dm.setup()
    assert [len(dm.splits[s][0]) for s in ("train", "val", "test")] == [24, 6, 6]
    assert dm.class_names[0] == "airplane" and dm.image_shape == (3, 32, 32)


class Payload:
    """An object whose unpickling would run ``call(argument)``."""

    def __init__(self, call, argument):
        self.call, self.argument = call, argument

    def __reduce__(self):
        return self.call, (self.argument,)


@pytest.mark.parametrize("call, refused", [(os.system, f"{os.system.__module__}.system"),
                                           (eval, "builtins.eval")])
def test_the_restricted_unpickler_refuses_a_reduce_payload_and_never_runs_it(tmp_path, call, refused):
    """Catches: find_class falling back to pickle's own (any global importable; the payload runs and creates the
    marker file); an error that does not name the file or the global."""
    marker = tmp_path / "ran"
    argument = f"touch {marker}" if call is os.system else f"open({str(marker)!r}, 'w')"
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({"data": Payload(call, argument)}, protocol=4))
    with pytest.raises(DataFileError) as err:
        load_data_pickle(path)
    assert str(path) in str(err.value) and refused in str(err.value) and "nothing of it was run" in str(err.value)
    assert not marker.exists()


def test_a_cifar_batch_with_a_payload_stops_the_data_set_naming_the_file(tmp_path):
    write_cifar(tmp_path)
    marker = tmp_path / "ran"
    bad = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    bad.write_bytes(pickle.dumps({"data": Payload(os.system, f"touch {marker}"), "labels": []}, protocol=4))
    with pytest.raises(DataFileError, match=r"data_batch_3: refused to unpickle it: it names the global"):
        CIFAR10DataModule(data_dir=tmp_path, download=False).setup()
    assert not marker.exists()


def test_the_restricted_unpickler_loads_plain_data_and_arrays_of_either_python(tmp_path):
    """The plain data pickled by Python 3 (numpy 2's module path) loads too; a truncated file is a clear error."""
    data = {"labels": [1, 2], "data": np.arange(6, dtype=np.uint8).reshape(2, 3), "name": b"x"}
    path = tmp_path / "batch"
    path.write_bytes(pickle.dumps(data, protocol=4))
    loaded = load_data_pickle(path)
    assert loaded["labels"] == [1, 2] and np.array_equal(loaded["data"], data["data"]) and loaded["name"] == b"x"
    path.write_bytes(pickle.dumps(data, protocol=4)[:20])
    with pytest.raises(DataFileError, match=r"is not a readable pickle .*damaged or truncated"):
        load_data_pickle(path)


# ================================================================================================ SVHN
def test_svhn_turns_matlab_order_into_images_and_label_10_into_the_digit_0(tmp_path):
    """Catches: X transposed to (N, C, W, H) (a known pixel at row 2, column 5 lands at row 5, column 2); the label
    10 kept as 10 (or taken for 9 by subtracting 1)."""
    write_svhn(tmp_path)
    dm = SVHNDataModule(data_dir=tmp_path, download=False)
    images, labels = dm.load_split(train=True)
    assert images.dtype == torch.uint8 and images.shape == (7, 3, 32, 32)
    assert images[:, 1, 2, 5].tolist() == [10 * n + 7 for n in range(7)]
    assert images[:, 1, 5, 2].tolist() == [0] * 7
    assert labels.tolist() == [0] + [1 + i % 9 for i in range(6)]
    assert len(dm.load_split(train=False)[0]) == 3


# ================================================================================================ CelebA
def test_celeba_crop_box_is_torchvisions_centre_crop():
    """Catches: a crop rounded the other way, or anchored at the corner: 178x218 to 148 is (15, 35, 163, 183)."""
    assert celeba_module.centre_crop_box(178, 218, 148) == (15, 35, 163, 183)
    assert celeba_module.centre_crop_box(5, 6, 2) == (2, 2, 4, 4)  # round(1.5) = 2, round(2.0) = 2


def test_celeba_crops_the_centre_resizes_and_splits_by_the_official_partition(tmp_path):
    """Catches: no crop (or a corner crop: the red border enters the image); the validation partition taken as
    training data, or test taken from the wrong partition; labels other than 0."""
    write_celeba(tmp_path)
    dm = CelebADataModule(data_dir=tmp_path, download=False, image_size=16, val_fraction=0.34)
    images, labels = dm.load_split(train=True)
    assert images.dtype == torch.uint8 and images.shape == (3, 3, 16, 16)
    assert int(images[:, 0].max()) < 80 and int(images[:, 1].min()) > 180  # all green: only the centre
    assert labels.tolist() == [0, 0, 0]
    assert len(dm.load_split(train=False)[0]) == 2
    dm.setup()
    assert [len(dm.splits[s][0]) for s in ("train", "val", "test")] == [2, 1, 2]
    uncropped = CelebADataModule(data_dir=tmp_path, download=False, image_size=16, crop_size=None)
    assert int(uncropped.load_split(train=False)[0][:, 0].max()) > 200  # the red border is there


def test_celeba_settings_are_checked_naming_the_key(tmp_path):
    write_celeba(tmp_path, parts=(0, 2))
    with pytest.raises(ConfigError, match=r"data.image_size = 0 is invalid: it must be a positive integer"):
        CelebADataModule(data_dir=tmp_path, image_size=0)
    with pytest.raises(ConfigError, match=r"data.crop_size = 'big' is invalid"):
        CelebADataModule(data_dir=tmp_path, crop_size="big")
    too_big = CelebADataModule(data_dir=tmp_path, download=False, crop_size=200, image_size=8)
    with pytest.raises(ConfigError, match=r"data.crop_size = 200 is invalid: it must be at most the images' shorter "
                                          r"side \(178 in 000001.jpg, 178x218\)"):
        too_big.load_split(train=True)


# ================================================================================================ Omniglot
def test_omniglot_reads_burdas_columns_in_fortran_order(tmp_path):
    """Catches: the columns reshaped in C order (every character transposed: the pixel at row 2, column 5 would be
    at row 5, column 2); the one-hot targets argmaxed along the wrong axis."""
    write_omniglot(tmp_path)
    dm = OmniglotDataModule(data_dir=tmp_path, download=False)
    images, labels = dm.load_split(train=True)
    assert images.dtype == torch.uint8 and images.shape == (5, 1, 28, 28)
    assert images[:, 0, 2, 5].tolist() == [255] * 5 and images[:, 0, 7, 1].tolist() == [128] * 5
    assert images[:, 0, 5, 2].tolist() == [0] * 5 and int(images.sum()) == 5 * (255 + 128)
    assert labels.tolist() == [0, 1, 2, 3, 4]
    assert dm.load_split(train=False)[1].tolist() == [0, 1, 2]


def test_omniglot_is_binarised_dynamically_by_default(tmp_path):
    cfg = compose_train(tmp_path, ["data=omniglot"])
    assert cfg.data.binarize == "dynamic"


# ================================================================================================ dSprites, 3D Shapes
class FactorReader(torch.nn.Module):
    """A code that is the factors themselves: dim k counts the lit pixels of row k (:func:`unary_images`)."""

    def __init__(self, n_factors: int):
        super().__init__()
        self.n_factors = n_factors
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # (so that it has a device)

    def encode(self, x):
        return (x[:, 0, : self.n_factors, :].sum(-1) + 0 * self.anchor,)


FEW_VOTES = {"n_train_votes": 60, "n_eval_votes": 40, "batch_size": 16, "n_variance_estimate": 200}


@pytest.mark.parametrize("cls, write, sizes, binary", [(DSpritesDataModule, write_dsprites, DSPRITES_SIZES, True),
                                                     (Shapes3DDataModule, write_shapes3d, SHAPES3D_SIZES, False)])
def test_a_factor_grid_has_its_factors_and_renders_any_combination(tmp_path, cls, write, sizes, binary):
    """Catches: render assuming the splits lie in grid order (torch.cat of train, val, test indexed by the grid
    index: the wrong images); labels not the images' own factors; factor sizes off by one."""
    write(tmp_path)
    dm = cls(data_dir=tmp_path, download=False, val_fraction=0.2, test_fraction=0.25)
    dm.setup()
    assert [len(dm.splits[s][0]) for s in ("train", "val", "test")] == [29, 7, 12]  # 36 - 7, 7, 48 / 4
    assert has_factors(dm) and dm.factor_sizes == sizes and len(dm.factor_names) == 6
    for split in ("train", "val", "test"):
        images, labels = dm.splits[split]
        assert images.dtype == torch.uint8 and images.shape[1:] == dm.image_shape
        assert np.array_equal(read_unary(images, 6), labels.numpy())  # each image carries its own factors
        if binary:
            assert set(images.unique().tolist()) <= {0, 255}
    everything = grid(sizes)[::-1].copy()  # every combination, in an order that is not the file's
    assert np.array_equal(read_unary(dm.render(everything), 6), everything)
    with pytest.raises(ValueError, match=r"out of range"):
        dm.render(np.array([sizes]))


@pytest.mark.parametrize("cls, write", [(DSpritesDataModule, write_dsprites), (Shapes3DDataModule, write_shapes3d)])
def test_a_factor_grid_feeds_the_disentanglement_metrics(tmp_path, cls, write):
    """The same function shapes feeds (vaelab.metrics.factors.disentanglement_metrics): a code equal to the factors
    scores FactorVAE 1 (votes on rendered combinations) and MIG near 1 (on the split's images and labels). Catches
    a render that returns other combinations' images (FactorVAE drops) and labels misaligned with the images (MIG
    drops)."""
    write(tmp_path)
    dm = cls(data_dir=tmp_path, download=False, val_fraction=0.2, test_fraction=0.25, eval_batch_size=16)
    scores = disentanglement_metrics(FactorReader(6), dm, "train", factor_vae=FEW_VOTES, dci=False,
                                     protocol="vaelab")
    assert scores["factor_vae"] == 1.0
    assert scores["mig"] > 0.8


def test_shapes3d_reads_rgb_images_and_turns_float_values_into_indices(tmp_path):
    """Catches: images (N, H, W, C) transposed to (N, C, W, H) (the pixel at row 10, column 3 would move); a
    factor's index taken from the file's order rather than the value's rank."""
    write_shapes3d(tmp_path)
    dm = Shapes3DDataModule(data_dir=tmp_path, download=False, test_fraction=0.25)
    raw, factors = dm.read_grid()
    assert np.array_equal(factors, grid(SHAPES3D_SIZES))
    images = torch.from_numpy(dm.to_images(raw))
    assert images.shape == (48, 3, 64, 64) and images[:, 2, 10, 3].tolist() == [9] * 48
    assert images[:, 2, 3, 10].tolist() == [0] * 48
    assert dm.class_names == ("cube", "cylinder", "sphere", "capsule")  # before the data are read: the publisher's


def test_shapes3d_without_h5py_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setattr("vaelab.data.shapes3d.importlib.util.find_spec", lambda name: None)
    with pytest.raises(ImportError, match=r"data=shapes3d reads 3dshapes.h5 with h5py.*pip install h5py"):
        Shapes3DDataModule(data_dir=tmp_path)


def test_a_file_that_is_not_the_whole_grid_is_refused_naming_it(tmp_path):
    """Catches: a truncated grid accepted (render would then index images that are not there)."""
    write_dsprites(tmp_path, drop_last=True)
    with pytest.raises(DataFileError, match=r"dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz: its 47 images are not "
                                            r"the full grid of factor sizes \(1, 3, 2, 2, 2, 2\)"):
        DSpritesDataModule(data_dir=tmp_path, download=False).setup()


def test_factor_grid_settings_are_checked_naming_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"data.test_fraction = 1.5 is invalid: it must be a number in \[0, 1\)"):
        DSpritesDataModule(data_dir=tmp_path, test_fraction=1.5)
    with pytest.raises(ConfigError, match=r"data.color_by = 'hue' is invalid: it must be one of: floor_hue, "
                                          r"wall_hue, object_hue, scale, shape, orientation"):
        Shapes3DDataModule(data_dir=tmp_path, color_by="hue")


# ================================================================================================ missing files
ALL = {
    CIFAR10DataModule: ("cifar-10-batches-py", [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]),
    SVHNDataModule: ("svhn", ["train_32x32.mat", "test_32x32.mat"]),
    CelebADataModule: ("celeba", ["list_eval_partition.txt", "img_align_celeba/"]),
    OmniglotDataModule: ("omniglot", ["chardata.mat"]),
    DSpritesDataModule: ("dsprites", ["dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"]),
    Shapes3DDataModule: ("shapes3d", ["3dshapes.h5"]),
}


@pytest.mark.parametrize("cls", list(ALL), ids=lambda c: c.name)
def test_missing_files_stop_the_run_listing_each_file_and_where_it_goes(tmp_path, cls, monkeypatch):
    """Catches: a message that lists only some files, or not their full paths, or does not say why nothing was
    fetched."""
    folder, files = ALL[cls]
    with pytest.raises(DataNotFoundError) as err:
        cls(data_dir=tmp_path, download=False).setup()
    message = str(err.value)
    assert f"is not in {tmp_path / folder} and downloading is switched off (data.download=false)" in message
    for f in files:
        assert f"  {tmp_path / folder / f}\n" in message
    assert "data=digits" in message

    def offline(self):
        raise OSError("[Errno 101] Network is unreachable")

    monkeypatch.setattr(cls, "fetch", offline)
    with pytest.raises(DataNotFoundError, match=r"the download failed \(\[Errno 101\] Network is unreachable\)"):
        cls(data_dir=tmp_path, download=True).prepare_data()


def test_download_asks_the_publishers_for_their_files(tmp_path, monkeypatch):
    """data.download fetches through torchvision's helpers from the publishers' addresses, into the folder the data
    set reads (recorded here, never fetched). Catches a URL or folder that does not match what is read."""
    calls = []
    for module in ("svhn", "omniglot", "dsprites", "shapes3d"):
        monkeypatch.setattr(f"vaelab.data.{module}.download_url",
                            lambda url, root, filename=None, md5=None: calls.append((url, root, filename, md5)))
    monkeypatch.setattr("vaelab.data.cifar.download_and_extract_archive",
                        lambda url, root, filename=None, md5=None: calls.append((url, root, filename, md5)))
    monkeypatch.setattr("vaelab.data.celeba.download_file_from_google_drive",
                        lambda file_id, root, filename, md5: calls.append((file_id, root, filename, md5)))
    monkeypatch.setattr("vaelab.data.celeba.extract_archive", lambda path: calls.append((path,)))
    for cls in ALL:
        with pytest.raises(DataNotFoundError, match=r"the download did not bring"):
            cls(data_dir=tmp_path).prepare_data()
    d = str(tmp_path)
    assert calls == [
        ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", d, "cifar-10-python.tar.gz",
         "c58f30108f718f92721af3b95e74349a"),
        ("http://ufldl.stanford.edu/housenumbers/train_32x32.mat", f"{d}/svhn", "train_32x32.mat",
         "e26dedcc434d2e4c54c9b2d4a06d8373"),
        ("http://ufldl.stanford.edu/housenumbers/test_32x32.mat", f"{d}/svhn", "test_32x32.mat",
         "eb5a983be6a315427106f1b164d9cef3"),
        ("0B7EVK8r0v71pZjFTYXZWM3FlRnM", f"{d}/celeba", "img_align_celeba.zip", "00d2c5bc6d35e252742224ab0c1e8fcb"),
        ("0B7EVK8r0v71pY0NSMzRuSXJEVkk", f"{d}/celeba", "list_eval_partition.txt",
         "d32c9cbf5e040fd4025c592c306e6668"),
        (f"{d}/celeba/img_align_celeba.zip",),
        ("https://github.com/yburda/iwae/raw/master/datasets/OMNIGLOT/chardata.mat", f"{d}/omniglot", "chardata.mat",
         None),
        ("https://github.com/deepmind/dsprites-dataset/raw/master/dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz",
         f"{d}/dsprites", "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz", None),
        ("https://storage.googleapis.com/3d-shapes/3dshapes.h5", f"{d}/shapes3d", "3dshapes.h5", None),
    ]


# ================================================================================================ through the config
@pytest.mark.parametrize("name, cls", [("cifar10", CIFAR10DataModule), ("svhn", SVHNDataModule),
                                       ("celeba", CelebADataModule), ("omniglot", OmniglotDataModule),
                                       ("dsprites", DSpritesDataModule), ("shapes3d", Shapes3DDataModule)])
def test_each_data_config_builds_its_data_module(tmp_path, name, cls):
    cfg = compose_train(tmp_path, [f"data={name}", "data.download=false"])
    dm = instantiate_config(cfg.data)
    assert type(dm) is cls and dm.allow_download is False and dm.data_dir == tmp_path / "data"


def test_a_vae_with_the_conv_net_trains_on_fake_cifar10(tmp_path):
    write_cifar(tmp_path / "data", per_batch=8)
    cfg = compose_train(tmp_path, ["model=vae", "model/net=conv", "data=cifar10", "data.download=false",
                                   "data.batch_size=8", "data.eval_batch_size=8", "model.latent_dim=4",
                                   "callbacks=minimal", "logger=none"])
    assert cfg.model.net.encoder._target_ == "vaelab.models.nets.ConvEncoder"
    train(cfg)
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["status"] == "completed"
    assert math.isfinite(record["val"]["val/elbo"]) and "test/loss" in record["test"]
