"""The data layer (vaelab.data): tiny fake IDX data sets, the digits, the cache, batches, binarisation."""

from __future__ import annotations

import os
import socket
import types
from collections import Counter

import numpy as np
import pytest
import torch
from idx import write_mnist_like
from torch.utils.data import DataLoader, DistributedSampler

from vaelab.data import DigitsDataModule, FashionMNISTDataModule, MNISTDataModule, ShardSampler, TensorBatchLoader
from vaelab.data.idx import IDX_FILES as FILES
from vaelab.data.loaders import epoch_indices
from vaelab.errors import DataNotFoundError

IDX_MODULES = [(MNISTDataModule, "MNIST"), (FashionMNISTDataModule, "FashionMNIST")]
IDX_IDS = ["mnist", "fashion"]


def _multiset(images: torch.Tensor, labels: torch.Tensor) -> Counter:
    """Images with their labels as a multiset, to compare collections regardless of order."""
    return Counter(
        (bytes(img.cpu().numpy().tobytes()), int(lab)) for img, lab in zip(images, labels, strict=True)
    )


def _written(images: np.ndarray, labels: np.ndarray) -> Counter:
    return _multiset(torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels))


# --------------------------------------------------------------------------------------------- IDX data sets


@pytest.mark.parametrize("cls,folder", IDX_MODULES, ids=IDX_IDS)
def test_idx_splits_hold_exactly_what_was_written(tmp_path, cls, folder):
    data = write_mnist_like(tmp_path, folder, n_train=50, n_test=20)
    dm = cls(data_dir=tmp_path, val_fraction=0.2, download=False)
    dm.prepare_data()
    dm.setup()
    (train_x, train_y), (val_x, val_y), (test_x, test_y) = (dm.splits[k] for k in ("train", "val", "test"))
    assert (len(train_x), len(val_x), len(test_x)) == (40, 10, 20)
    for images in (train_x, val_x, test_x):
        assert images.dtype == torch.uint8 and images.shape[1:] == (1, 28, 28) and images.device.type == "cpu"
    assert len(dm.class_names) == 10

    # the test split is the test file, in order
    assert np.array_equal(test_x[:, 0].numpy(), data.test_images)
    assert np.array_equal(test_y.numpy(), data.test_labels)
    # train ∪ val is the train file, each image once, with its label
    union = _multiset(torch.cat([train_x, val_x]), torch.cat([train_y, val_y]))
    assert union == _written(data.train_images, data.train_labels)
    # both splits keep the file's order
    for images in (train_x, val_x):
        rows = [
            int(np.flatnonzero((data.train_images == img[0].numpy()).all(axis=(1, 2)))[0]) for img in images
        ]
        assert rows == sorted(rows)


def test_split_depends_only_on_split_seed(tmp_path):
    write_mnist_like(tmp_path, "MNIST", n_train=60, n_test=5)

    def val_images(seed):
        dm = MNISTDataModule(data_dir=tmp_path, val_fraction=0.25, split_seed=seed, download=False)
        dm.setup()
        return dm.splits["val"][0]

    assert torch.equal(val_images(3), val_images(3))
    assert not torch.equal(val_images(3), val_images(4))


def test_cache_is_written_and_reused(tmp_path, monkeypatch):
    data = write_mnist_like(tmp_path, "FashionMNIST", n_train=30, n_test=10)
    first = FashionMNISTDataModule(data_dir=tmp_path, download=False)
    first.setup()
    cached = sorted(p.name for p in (tmp_path / "vaelab_cache").iterdir())
    assert (
        len(cached) == 2
        and cached[0].startswith("fashion_mnist-test")
        and cached[1].startswith("fashion_mnist-train")
    )

    def no_decoding(self, train):
        raise AssertionError("the second module should read the cache, not the IDX files")

    monkeypatch.setattr(FashionMNISTDataModule, "load_split", no_decoding)
    second = FashionMNISTDataModule(data_dir=tmp_path, download=False)
    second.setup()
    for split in ("train", "val", "test"):
        for a, b in zip(first.splits[split], second.splits[split], strict=True):
            assert torch.equal(a, b)
    assert np.array_equal(second.splits["test"][0][:, 0].numpy(), data.test_images)


def test_no_cache_when_switched_off(tmp_path):
    write_mnist_like(tmp_path, "MNIST", n_train=10, n_test=5)
    dm = MNISTDataModule(data_dir=tmp_path, cache=False, download=False)
    dm.setup()
    assert len(dm.splits["test"][0]) == 5
    assert not (tmp_path / "vaelab_cache").exists()


@pytest.mark.parametrize(
    ("n_train", "keep_times"), [(30, False), (40, False), (30, True)], ids=["same-size", "other-size", "same-times"]
)
def test_changed_source_files_invalidate_the_cache(tmp_path, n_train, keep_times):
    write_mnist_like(tmp_path, "MNIST", n_train=30, n_test=10, seed=0)
    MNISTDataModule(data_dir=tmp_path, download=False).setup()
    raw = sorted((tmp_path / "MNIST" / "raw").iterdir())
    times = [(f.stat().st_atime_ns, f.stat().st_mtime_ns) for f in raw]
    new = write_mnist_like(tmp_path, "MNIST", n_train=n_train, n_test=10, seed=1)  # same names, other content
    if keep_times:  # as `cp -p` of other data with the same sizes would leave them
        for f, ns in zip(raw, times, strict=True):
            os.utime(f, ns=ns)
    dm = MNISTDataModule(data_dir=tmp_path, download=False)
    dm.setup()
    assert np.array_equal(dm.splits["test"][0][:, 0].numpy(), new.test_images)
    train, val = dm.splits["train"], dm.splits["val"]
    union = _multiset(torch.cat([train[0], val[0]]), torch.cat([train[1], val[1]]))
    assert union == _written(new.train_images, new.train_labels)


def _assert_names_everything(err: DataNotFoundError, raw_folder) -> None:
    message = str(err)
    assert str(raw_folder) in message
    for name in FILES.values():
        assert name in message


def test_missing_data_without_download(tmp_path):
    dm = MNISTDataModule(data_dir=tmp_path, download=False)
    with pytest.raises(DataNotFoundError) as info:
        dm.prepare_data()
    _assert_names_everything(info.value, tmp_path / "MNIST" / "raw")


@pytest.mark.parametrize("cache", [True, False])
def test_missing_data_on_setup_without_prepare_data(tmp_path, cache):
    """A rank that skipped prepare_data (or a script that only calls setup) gets the same clear error."""
    dm = MNISTDataModule(data_dir=tmp_path, download=False, cache=cache)
    with pytest.raises(DataNotFoundError) as info:
        dm.setup()
    _assert_names_everything(info.value, tmp_path / "MNIST" / "raw")


def test_missing_data_when_the_download_fails(tmp_path, monkeypatch):
    """The network is cut off in the test (connections fail at once): it can neither hang nor download."""

    def offline(*args, **kwargs):
        raise OSError("network disabled in tests")

    monkeypatch.setattr(socket, "create_connection", offline)
    monkeypatch.setattr(socket, "getaddrinfo", offline)
    dm = FashionMNISTDataModule(data_dir=tmp_path, download=True)
    with pytest.raises(DataNotFoundError, match="download failed") as info:
        dm.prepare_data()
    _assert_names_everything(info.value, tmp_path / "FashionMNIST" / "raw")


# ---------------------------------------------------------------------------------------------------- digits


def test_digits(tmp_path):
    a = DigitsDataModule(data_dir=tmp_path, split_seed=1)
    b = DigitsDataModule(data_dir=tmp_path, split_seed=2)
    a.setup()
    b.setup()
    sizes = [len(a.splits[k][0]) for k in ("train", "val", "test")]
    assert sum(sizes) == 1797
    assert sizes[1] == round(0.1 * (1797 - sizes[2]))
    for images, labels in a.splits.values():
        assert images.dtype == torch.uint8 and images.shape[1:] == (1, 8, 8)
        assert labels.min() == 0 and labels.max() == 9
    all_images = torch.cat([a.splits[k][0] for k in a.splits])
    assert all_images.max() == 255 and all_images.min() == 0
    assert len(a.class_names) == 10
    # the test set is part of the data set's definition; train/val follow split_seed
    assert torch.equal(a.splits["test"][0], b.splits["test"][0])
    assert torch.equal(a.splits["test"][1], b.splits["test"][1])
    assert not torch.equal(a.splits["val"][0], b.splits["val"][0])


def test_digits_test_set_has_360_images(tmp_path):
    """The documented size of the fixed test split (DigitsDataModule's docstring: 20 %, 360 images)."""
    dm = DigitsDataModule(data_dir=tmp_path)
    dm.setup()
    assert len(dm.splits["test"][0]) == 360
    assert len(dm.splits["train"][0]) + len(dm.splits["val"][0]) == 1797 - 360


def test_digits_match_scikit_learn(tmp_path):
    """Every digit is scikit-learn's image with 0–16 rescaled to 0–255."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    expected = torch.from_numpy(np.rint(bunch.images * 255 / 16)).to(torch.uint8).unsqueeze(1)
    dm = DigitsDataModule(data_dir=tmp_path)
    dm.setup()
    images = torch.cat([dm.splits[k][0] for k in dm.splits])
    labels = torch.cat([dm.splits[k][1] for k in dm.splits])
    assert _multiset(images, labels) == _multiset(expected, torch.from_numpy(bunch.target))


# --------------------------------------------------------------------------------------------------- batches


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("digits")


def test_tensor_loader_serves_the_train_split_once_per_epoch(digits_dir):
    dm = DigitsDataModule(data_dir=digits_dir, batch_size=100)
    dm.setup()
    loader = dm.train_dataloader()
    assert isinstance(loader, TensorBatchLoader)
    images, labels = dm.splits["train"]
    n = len(images)
    assert len(loader) == -(-n // 100)
    batches = list(loader)
    assert len(batches) == len(loader)
    assert [len(b[0]) for b in batches] == [100] * (n // 100) + [n % 100]
    seen_x, seen_y = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    assert _multiset(seen_x, seen_y) == _multiset(images, labels)
    assert not torch.equal(seen_x, images)  # shuffled


def test_batch_transfer_makes_floats(digits_dir):
    dm = DigitsDataModule(data_dir=digits_dir)
    dm.setup()
    images, labels = dm.splits["val"][0][:16], dm.splits["val"][1][:16]
    x, y = dm.on_after_batch_transfer((images, labels), 0)
    assert x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    torch.testing.assert_close(x, images.double().div(255).float())
    assert torch.equal(y, labels)
    assert images.dtype == torch.uint8  # the uint8 batch is left alone


def test_dataloader_path_serves_the_same_train_split(digits_dir):
    tensor_dm = DigitsDataModule(data_dir=digits_dir)
    dm = DigitsDataModule(data_dir=digits_dir, loader="dataloader", batch_size=256)
    tensor_dm.setup()
    dm.setup()
    loader = dm.train_dataloader()
    assert isinstance(loader, DataLoader)
    seen = list(loader)
    assert [len(b[0]) for b in seen[:-1]] == [256] * (len(seen) - 1)
    got = _multiset(torch.cat([b[0] for b in seen]), torch.cat([b[1] for b in seen]))
    assert got == _multiset(*tensor_dm.splits["train"])
    assert isinstance(dm.val_dataloader(), DataLoader) and isinstance(dm.test_dataloader(), DataLoader)


# ----------------------------------------------------------------------------------------- TensorBatchLoader


def _order(loader: TensorBatchLoader) -> list[int]:
    """One epoch of a loader over images = arange(n): the indices it served."""
    return torch.cat([b[0] for b in loader]).tolist()


def test_shuffle_is_a_fresh_permutation_each_epoch_and_reproducible():
    n = 50
    data = torch.arange(n)
    epoch = {"value": 0}
    loader = TensorBatchLoader(data, data, 8, shuffle=True, seed=11, epoch_fn=lambda: epoch["value"])
    e0 = _order(loader)
    assert sorted(e0) == list(range(n)) and e0 != list(range(n))
    assert _order(loader) == e0  # the epoch did not move: same order (resume contract)
    epoch["value"] = 1
    e1 = _order(loader)
    assert sorted(e1) == list(range(n)) and e1 != e0
    # a fresh loader told it is at epoch 1 (a resumed run) sees the same order
    assert _order(TensorBatchLoader(data, data, 8, shuffle=True, seed=11, epoch_fn=lambda: 1)) == e1
    # without epoch_fn the loader counts its own passes
    counting = TensorBatchLoader(data, data, 8, shuffle=True, seed=11)
    assert [_order(counting), _order(counting)] == [e0, e1]
    # another seed, another order
    assert _order(TensorBatchLoader(data, data, 8, shuffle=True, seed=12, epoch_fn=lambda: 0)) != e0


def test_labels_travel_with_their_images():
    data = torch.arange(23)
    loader = TensorBatchLoader(data * 10, data, 4, shuffle=True, seed=0)
    for x, y in loader:
        assert torch.equal(x, y * 10)


@pytest.mark.parametrize("shuffle", [False, True])
def test_drop_last(shuffle):
    data = torch.arange(10)
    keep = TensorBatchLoader(data, data, 3, shuffle=shuffle)
    drop = TensorBatchLoader(data, data, 3, shuffle=shuffle, drop_last=True)
    assert (len(keep), len(drop)) == (4, 3)
    assert [len(b[0]) for b in keep] == [3, 3, 3, 1]
    assert [len(b[0]) for b in drop] == [3, 3, 3]
    if not shuffle:
        assert _order(keep) == list(range(10)) and _order(drop) == list(range(9))


@pytest.mark.parametrize(
    "n,world_size", [(10, 2), (11, 2), (1, 2), (7, 3), (9, 4), (1, 3), (2, 5)], ids=lambda v: str(v)
)
def test_shards_match_distributed_sampler(n, world_size):
    """Unshuffled shards are DistributedSampler(shuffle=False)'s, padding included, on every rank."""
    data = torch.arange(n)
    for rank in range(world_size):
        loader = TensorBatchLoader(data, data, 2, rank=rank, world_size=world_size)
        expected = list(DistributedSampler(list(range(n)), num_replicas=world_size, rank=rank, shuffle=False))
        served = [b[0] for b in loader]
        assert (torch.cat(served).tolist() if served else []) == expected, f"rank {rank}"
        assert loader.num_samples == len(expected)
        assert len(loader) == len(served) == -(-len(expected) // 2)


def test_two_shuffled_shards_cover_everything():
    n = 21
    data = torch.arange(n)
    shards = [
        _order(TensorBatchLoader(data, data, 4, shuffle=True, seed=5, rank=r, world_size=2)) for r in (0, 1)
    ]
    assert len(shards[0]) == len(shards[1]) == 11
    assert sorted(set(shards[0]) | set(shards[1])) == list(range(n))
    assert len(set(shards[0]) & set(shards[1])) == 1  # the one padding index
    # the two ranks split one shared permutation
    again = [
        _order(TensorBatchLoader(data, data, 4, shuffle=True, seed=5, rank=r, world_size=2)) for r in (0, 1)
    ]
    assert again == shards


def test_tensor_loader_rejects_bad_arguments():
    with pytest.raises(ValueError):
        TensorBatchLoader(torch.zeros(3), torch.zeros(4), 2)
    with pytest.raises(ValueError):
        TensorBatchLoader(torch.zeros(3), torch.zeros(3), 0)


# ---------------------------------------------------------------------------------------------- binarisation


def _values(t: torch.Tensor) -> set[int]:
    return set(torch.unique(t).tolist())


def test_static_binarization(digits_dir):
    a = DigitsDataModule(data_dir=digits_dir, binarize="static")
    b = DigitsDataModule(data_dir=digits_dir, binarize="static")
    plain = DigitsDataModule(data_dir=digits_dir)
    for dm in (a, b, plain):
        dm.setup()
    for split in ("train", "val", "test"):
        assert _values(a.splits[split][0]) == {0, 255}
        assert torch.equal(a.splits[split][0], b.splits[split][0])
        assert torch.equal(a.splits[split][1], plain.splits[split][1])
        # a Bernoulli draw with p = intensity: ink only where there was ink, and the same mean to MC precision
        assert torch.all(a.splits[split][0][plain.splits[split][0] == 0] == 0)
        p = plain.splits[split][0].double() / 255
        drawn = a.splits[split][0].double() / 255
        assert abs(drawn.mean() - p.mean()) < 5 * (p * (1 - p)).sum().sqrt() / p.numel()
    assert len(_values(plain.splits["train"][0])) > 2


def test_dynamic_binarization(digits_dir):
    dm = DigitsDataModule(data_dir=digits_dir, binarize="dynamic")
    dm.setup()
    assert _values(dm.splits["val"][0]) == {0, 255}
    assert _values(dm.splits["test"][0]) == {0, 255}
    train_images, labels = dm.splits["train"]
    assert len(_values(train_images)) > 2  # kept graded, drawn afresh per batch
    batch = (train_images[:64], labels[:64])

    dm.trainer = types.SimpleNamespace(training=True)
    torch.manual_seed(0)
    x1, _ = dm.on_after_batch_transfer(batch, 0)
    x2, _ = dm.on_after_batch_transfer(batch, 0)
    assert _values(x1) == {0.0, 1.0} and _values(x2) == {0.0, 1.0}
    assert not torch.equal(x1, x2)  # a fresh draw every time
    assert torch.all(x1[batch[0] == 0] == 0) and torch.all(x1[batch[0] == 255] == 1)

    dm.trainer = types.SimpleNamespace(training=False)  # validation: no draw
    x, _ = dm.on_after_batch_transfer(batch, 0)
    torch.testing.assert_close(x, batch[0].float() / 255)


def test_dynamic_val_and_test_draws_are_seeded_reproducible_and_those_of_static(digits_dir):
    """Dynamic and static binarisation score on the same binary val/test images when their seeds agree, and a
    different binarize_seed gives a different draw (so the seed is really used)."""
    runs = {}
    for name, kwargs in {"dynamic": {"binarize": "dynamic"}, "dynamic again": {"binarize": "dynamic"},
                         "static": {"binarize": "static"}, "other seed": {"binarize": "dynamic",
                                                                         "binarize_seed": 99}}.items():
        runs[name] = DigitsDataModule(data_dir=digits_dir, cache=False, **kwargs)
        runs[name].setup()
    for split in ("val", "test"):
        images = {name: dm.splits[split][0] for name, dm in runs.items()}
        assert torch.equal(images["dynamic"], images["dynamic again"])
        assert torch.equal(images["dynamic"], images["static"])
        assert not torch.equal(images["dynamic"], images["other seed"])


def test_evaluating_the_train_split_under_dynamic_binarisation_draws_binary_images_once(digits_dir):
    """Evaluation sees Bernoulli samples of the training images (not the grey levels they are stored as), one fixed
    draw: the same binary images in two evaluations, and those of static binarisation with the same seed."""
    dynamic = DigitsDataModule(data_dir=digits_dir, binarize="dynamic", batch_size=100)
    static = DigitsDataModule(data_dir=digits_dir, binarize="static", batch_size=100)
    first = torch.cat([x for x, _ in dynamic.evaluation_batches("train")])
    second = torch.cat([x for x, _ in dynamic.evaluation_batches("train")])
    assert _values(first) == {0.0, 1.0}
    assert torch.equal(first, second)
    assert torch.equal(first, torch.cat([x for x, _ in static.evaluation_batches("train")]))
    grey = DigitsDataModule(data_dir=digits_dir, batch_size=100)
    assert len(_values(torch.cat([x for x, _ in grey.evaluation_batches("train")]))) > 2  # none: the grey levels


@pytest.mark.parametrize(
    "kwargs",
    [
        {"batch_size": 0},
        {"batch_size": -3},
        {"loader": "x"},
        {"binarize": "x"},
        {"val_fraction": 1.0},
        {"val_fraction": -0.1},
    ],
    ids=lambda k: "-".join(f"{a}={b}" for a, b in k.items()),
)
def test_invalid_constructor_values(tmp_path, kwargs):
    with pytest.raises(ValueError):
        DigitsDataModule(data_dir=tmp_path, **kwargs)


@pytest.mark.parametrize(("n", "world_size"), [(10, 3), (7, 2), (2, 5)])
def test_unpadded_shards_see_every_image_exactly_once(n, world_size):
    """Evaluation shards (pad_shards=False): no image counted twice in a val/test mean, lengths as promised."""
    images, labels = torch.arange(n), torch.arange(n)
    seen = []
    for rank in range(world_size):
        loader = TensorBatchLoader(images, labels, 3, rank=rank, world_size=world_size, pad_shards=False)
        shard = [int(i) for batch, _ in loader for i in batch]
        assert len(shard) == loader.num_samples and len(list(loader)) == len(loader)
        seen += shard
    assert sorted(seen) == list(range(n))


# ------------------------------------------------------------------------------ one order for both loaders


def _served_labels(loader) -> list[int]:
    return [int(v) for _, y in loader for v in y]


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_dataloader_and_tensor_paths_serve_the_same_images_in_the_same_order(digits_dir, monkeypatch, world_size):
    monkeypatch.setenv("PL_GLOBAL_SEED", "7")
    dms = {kind: DigitsDataModule(data_dir=digits_dir, batch_size=50, loader=kind) for kind in ("tensor", "dataloader")}
    for epoch in (0, 1):
        served = {}
        for kind, dm in dms.items():
            dm.setup()
            for rank in range(world_size):
                dm.trainer = types.SimpleNamespace(
                    overfit_batches=0, global_rank=rank, world_size=world_size, current_epoch=epoch
                )
                loaders = {"train": dm.train_dataloader(), "val": dm.val_dataloader(), "test": dm.test_dataloader()}
                if kind == "dataloader":
                    assert isinstance(loaders["train"], DataLoader)
                    for loader in loaders.values():
                        if loader.sampler is not None and hasattr(loader.sampler, "set_epoch"):
                            loader.sampler.set_epoch(epoch)  # as Lightning's fit loop does
                served[kind, rank] = {split: _served_labels(loader) for split, loader in loaders.items()}
        for rank in range(world_size):
            assert served["tensor", rank] == served["dataloader", rank], f"epoch {epoch}, rank {rank}"
        n_val = len(dms["tensor"].splits["val"][0])
        # evaluation shards: every image exactly once over the ranks, however the split divides
        assert sum(len(served["tensor", r]["val"]) for r in range(world_size)) == n_val
        if epoch == 0:
            first = served["tensor", 0]["train"]
    assert served["tensor", 0]["train"] != first  # a new order in the next epoch


def test_distributed_dataloader_keeps_its_own_sampler(digits_dir):
    # a DistributedSampler subclass: Lightning does not replace it with its padding one under DDP
    dm = DigitsDataModule(data_dir=digits_dir, loader="dataloader")
    dm.setup()
    dm.trainer = types.SimpleNamespace(overfit_batches=0, global_rank=1, world_size=2, current_epoch=0)
    sampler = dm.val_dataloader().sampler
    assert isinstance(sampler, DistributedSampler) and isinstance(sampler, ShardSampler)
    assert len(sampler) == len(dm.splits["val"][0]) // 2  # 144 val images: 72 each, none repeated


def test_neighbouring_seeds_do_not_give_shifted_copies_of_one_order():
    n = 100
    orders = {(s, e): epoch_indices(n, True, seed=s, epoch=e).tolist() for s in (3, 4) for e in (0, 1)}
    assert orders[3, 1] != orders[4, 0]
    assert len({tuple(o) for o in orders.values()}) == 4
    assert epoch_indices(n, True, seed=3, epoch=1).tolist() == orders[3, 1]  # a pure function of (seed, epoch)


def test_unseeded_runs_draw_their_own_order(digits_dir, monkeypatch):
    monkeypatch.delenv("PL_GLOBAL_SEED", raising=False)
    orders = []
    for _ in range(2):
        dm = DigitsDataModule(data_dir=digits_dir)
        dm.setup()
        orders.append(_served_labels(dm.train_dataloader()))
        assert _served_labels(dm.train_dataloader()) == orders[-1]  # one seed per DataModule
    assert orders[0] != orders[1]
