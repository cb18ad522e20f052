"""data=shapes: the dSprites-style data set rendered from its factors (vaelab.data.shapes)."""

from __future__ import annotations

import itertools
from collections import defaultdict

import numpy as np
import pytest
import torch

from vaelab.data import DigitsDataModule, ShapesDataModule
from vaelab.data.shapes import FACTOR_NAMES, SHAPES, SYMMETRY_ORDER, _inside
from vaelab.errors import ConfigError

TINY = {"image_size": 32, "n_scales": 2, "n_orientations": 8, "n_positions": 3}  # 3 * 2 * 8 * 3 * 3 = 432


def _tiny(tmp_path, **kwargs) -> ShapesDataModule:
    return ShapesDataModule(data_dir=tmp_path, **{**TINY, **kwargs})


def _product(dm: ShapesDataModule) -> np.ndarray:
    return np.array(list(itertools.product(*(range(n) for n in dm.factor_sizes))), dtype=np.int64)


def _symmetric(a: np.ndarray, b: np.ndarray, n_orientations: int) -> bool:
    """Whether combinations a and b differ only by a rotation that leaves their shape unchanged (the module
    docstring's rule: the same shape, scale and position, and (k_a - k_b) * m = 0 mod n)."""
    same_rest = a[0] == b[0] and a[1] == b[1] and a[3] == b[3] and a[4] == b[4]
    return bool(same_rest and (a[2] - b[2]) * SYMMETRY_ORDER[a[0]] % n_orientations == 0)


def _assert_only_symmetry_duplicates(dm: ShapesDataModule, factors: np.ndarray) -> int:
    """Every pair of equal images is a symmetry pair, and every symmetry pair gives equal images; returns the
    number of distinct images."""
    images = dm.render(factors).numpy()
    groups = defaultdict(list)
    for row, image in zip(factors, images, strict=True):
        groups[image.tobytes()].append(row)
    n = dm.factor_sizes[2]
    for rows in groups.values():
        for other in rows[1:]:
            assert _symmetric(rows[0], other, n), f"{rows[0]} and {other} render the same image"
    # and conversely: as many distinct images as symmetry classes
    classes = {tuple(row) for row in dm._canonical(factors)}
    assert len(groups) == len(classes)
    return len(groups)


def test_factors_and_values():
    dm = ShapesDataModule(image_size=64)  # dSprites' defaults
    assert dm.factor_names == FACTOR_NAMES == ("shape", "scale", "orientation", "posX", "posY")
    assert dm.factor_sizes == (3, 6, 40, 32, 32) and dm.num_combinations == 737_280
    assert dm.image_shape == (1, 64, 64)
    np.testing.assert_allclose(dm.factor_values[1], [0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    assert dm.factor_values[2][0] == 0 and dm.factor_values[2][-1] < 2 * np.pi
    np.testing.assert_allclose(np.diff(dm.factor_values[2]), 2 * np.pi / 40)
    assert dm.factor_values[3][0] == 0 and dm.factor_values[3][-1] == 1 and len(dm.factor_values[4]) == 32
    assert dm.class_names == SHAPES and dm.num_classes == 3


def test_every_combination_exactly_once_and_the_dataset_holds_the_rendered_images(tmp_path):
    dm = _tiny(tmp_path, val_fraction=0.2)
    dm.setup()
    labels = torch.cat([dm.splits[k][1] for k in ("train", "val", "test")]).numpy()
    images = torch.cat([dm.splits[k][0] for k in ("train", "val", "test")])
    assert labels.shape == (dm.num_combinations, 5) and labels.dtype == np.int64
    assert {tuple(r) for r in labels} == {tuple(r) for r in _product(dm)}  # unique and covering the product
    assert images.dtype == torch.uint8 and images.shape[1:] == (1, 32, 32)
    assert set(torch.unique(images).tolist()) == {0, 255}
    assert torch.equal(images, dm.render(labels))  # the stored images are the rendering of their labels
    assert torch.equal(dm.render(labels), dm.render(labels))  # deterministic
    assert (images.flatten(1) > 0).all(dim=1).sum() == 0 and (images.flatten(1) > 0).any(dim=1).all()


def test_shapes_stay_inside_the_image(tmp_path):
    """In its own frame every shape lies within the unit disc (which scale 1 makes MAX_RADIUS of the side, and the
    positions keep that far from the edges), so at the extreme positions nothing is cut off: a shape in a corner
    has as many pixels as the same shape in the middle, up to one row and one column (the pixel grid's phase)."""
    angle, radius = np.meshgrid(np.linspace(0, 2 * np.pi, 721), np.linspace(1.0 + 1e-9, 1.5, 50))
    u, v = radius * np.cos(angle), radius * np.sin(angle)
    for shape in range(len(SHAPES)):
        assert not _inside(shape, u, v).any()
        assert _inside(shape, np.zeros(1), np.zeros(1)).all()
    dm = ShapesDataModule(data_dir=tmp_path, image_size=64)
    corners = [(0, 0), (0, 31), (31, 0), (31, 31)]
    rows = np.array([(s, 5, o, x, y) for s in range(3) for o in range(0, 40, 3) for x, y in corners])
    middle = rows.copy()
    middle[:, 3:] = 15
    area = (dm.render(rows) > 0).flatten(1).sum(1).float()
    middle_area = (dm.render(middle) > 0).flatten(1).sum(1).float()
    assert ((area - middle_area).abs() <= 2 * middle_area.sqrt() + 1).all()  # a row and a column of the grid's phase


def test_only_symmetry_duplicates_in_the_tiny_product(tmp_path):
    dm = _tiny(tmp_path)
    distinct = _assert_only_symmetry_duplicates(dm, _product(dm))
    # square: 8 orientations in 2 classes, ellipse: 4, heart: 8 -> (2 + 4 + 8) * 2 scales * 9 positions
    assert distinct == (2 + 4 + 8) * 2 * 9


def test_only_symmetry_duplicates_in_the_default_cpu_setting(tmp_path):
    """conf/data/shapes.yaml's product, all 30,720 images: 20,480 distinct (square and ellipse repeat after a half
    turn; a quarter turn is not on the grid of 10 orientations)."""
    dm = ShapesDataModule(data_dir=tmp_path, image_size=32, n_scales=4, n_orientations=10, n_positions=16)
    assert dm.num_combinations == 30_720
    assert _assert_only_symmetry_duplicates(dm, _product(dm)) == 20_480


def test_only_symmetry_duplicates_on_the_full_dsprites_grid(tmp_path):
    """dSprites' 64x64, 6 scales and 40 orientations, at a few positions: each square image 4 times (θ + kπ/2), each
    ellipse image twice (θ + π), each heart image once."""
    dm = ShapesDataModule(data_dir=tmp_path, image_size=64)
    positions = [(0, 0), (5, 5), (16, 9), (31, 30)]
    rows = np.array([(s, c, o, x, y) for s in range(3) for c in range(6) for o in range(40) for x, y in positions])
    assert _assert_only_symmetry_duplicates(dm, rows) == (10 + 20 + 40) * 6 * len(positions)


def test_test_split_holds_out_whole_symmetry_classes(tmp_path):
    dm = _tiny(tmp_path, test_fraction=0.25)
    dm.setup()
    test = dm.splits["test"][1].numpy()
    train = torch.cat([dm.splits["train"][1], dm.splits["val"][1]]).numpy()
    test_classes = {tuple(r) for r in dm._canonical(test)}
    assert test_classes.isdisjoint({tuple(r) for r in dm._canonical(train)})
    assert len(test_classes) == round(0.25 * (2 + 4 + 8) * 2 * 9)
    # no test image has an identical copy in train
    train_images = {img.numpy().tobytes() for img in torch.cat([dm.splits["train"][0], dm.splits["val"][0]])}
    assert not any(img.numpy().tobytes() in train_images for img in dm.splits["test"][0])
    # fixed: the split_seed moves train/val only
    other = _tiny(tmp_path, test_fraction=0.25, split_seed=7)
    other.setup()
    assert torch.equal(other.splits["test"][1], dm.splits["test"][1])


def test_sample_with_fixed_factor(tmp_path):
    dm = _tiny(tmp_path)
    rng = np.random.default_rng(0)
    for factor in range(5):
        factors, images = dm.sample_with_fixed_factor(factor, 200, rng)
        assert factors.shape == (200, 5) and images.shape == (200, 1, 32, 32) and images.dtype == torch.uint8
        assert len(np.unique(factors[:, factor])) == 1
        for other in set(range(5)) - {factor}:
            assert len(np.unique(factors[:, other])) == dm.factor_sizes[other]  # 200 draws cover 2-8 values
        assert torch.equal(images, dm.render(factors))
    by_name, _ = dm.sample_with_fixed_factor("orientation", 10, rng)
    assert len(np.unique(by_name[:, 2])) == 1
    # the held value is itself drawn uniformly
    held = [dm.sample_with_fixed_factor(2, 1, rng)[0][0, 2] for _ in range(200)]
    assert set(held) == set(range(8))


def test_datamodule_with_factor_labels(tmp_path):
    dm = _tiny(tmp_path, color_by="scale", batch_size=50)
    dm.setup()
    n_train, n_val, n_test = (len(dm.splits[k][0]) for k in ("train", "val", "test"))
    assert n_train + n_val + n_test == 432 and n_val == round(0.1 * (n_train + n_val)) and n_test > 0
    x, y = dm.fixed_batch("val", 16)
    assert x.shape == (16, 1, 32, 32) and x.dtype == torch.float32 and y.shape == (16, 5)
    assert torch.equal(y, dm.splits["val"][1][:16])
    assert torch.equal(dm.class_labels(y), y[:, 1]) and dm.class_names == ("0.50", "1.00") and dm.num_classes == 2
    batches = list(dm.train_dataloader())
    assert sum(len(b[1]) for b in batches) == n_train and all(b[1].shape[1:] == (5,) for b in batches)
    served = {tuple(r) for b in batches for r in b[1].tolist()}
    assert served == {tuple(r) for r in dm.splits["train"][1].tolist()}
    for xb, yb in batches[:2]:  # labels still travel with their images
        assert torch.equal(xb, dm.render(yb.numpy()))
    dataloader = _tiny(tmp_path, loader="dataloader", batch_size=50)
    dataloader.setup()
    xb, yb = next(iter(dataloader.val_dataloader()))
    assert yb.shape == (n_val, 5) and torch.equal(xb, dataloader.render(yb.numpy()))


def test_single_labels_are_their_own_class_labels(tmp_path):
    labels = torch.arange(5)
    assert torch.equal(DigitsDataModule(data_dir=tmp_path).class_labels(labels), labels)


def test_cache_is_keyed_on_the_generation_parameters(tmp_path, monkeypatch):
    first = _tiny(tmp_path)
    first.setup()
    other = _tiny(tmp_path, n_orientations=4)
    other.setup()
    cached = sorted(p.name for p in (tmp_path / "vaelab_cache").iterdir())
    assert len(cached) == 4 and all(name.startswith("shapes-") for name in cached)

    def no_rendering(self, train):
        raise AssertionError("a second module with the same settings reads the cache")

    monkeypatch.setattr(ShapesDataModule, "load_split", no_rendering)
    again = _tiny(tmp_path, color_by="posX", split_seed=3)  # neither changes the images
    again.setup()
    assert torch.equal(again.splits["test"][0], first.splits["test"][0])
    assert torch.equal(again.splits["test"][1], first.splits["test"][1])
    labels = torch.cat([again.splits[k][1] for k in again.splits])
    assert torch.equal(torch.cat([again.splits[k][0] for k in again.splits]), again.render(labels.numpy()))


@pytest.mark.parametrize(
    "kwargs",
    [{"image_size": 4}, {"n_scales": 0}, {"n_positions": 2.5}, {"test_fraction": 1.0}, {"color_by": "colour"}],
    ids=lambda k: "-".join(f"{a}={b}" for a, b in k.items()),
)
def test_invalid_settings(kwargs):
    with pytest.raises(ConfigError):
        ShapesDataModule(**kwargs)


def test_render_rejects_out_of_range_factors(tmp_path):
    dm = _tiny(tmp_path)
    with pytest.raises(ValueError):
        dm.render(np.array([[0, 0, 8, 0, 0]]))
    assert dm.render(np.zeros((0, 5), dtype=np.int64)).shape == (0, 1, 32, 32)

