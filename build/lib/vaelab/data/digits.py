"""scikit-learn's bundled handwritten digits: 1,797 real 8×8 images, shipped inside the package (no download)."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from vaelab.data.base import ImageDataModule

TEST_FRACTION = 0.2
TEST_SPLIT_SEED = 0  # fixed: the test set is part of the data set's definition, not of a run's config


class DigitsDataModule(ImageDataModule):
    """The UCI optical digits as scikit-learn ships them (Alpaydin & Kaynak 1998).

    Intensities 0–16 are rescaled to 0–255. The data set has no official test split, so a fixed 20 % of it
    (360 images, drawn with a fixed seed) is the test set; the rest is split into train and val as usual.
    """

    image_shape = (1, 8, 8)
    num_classes = 10
    name = "digits"

    def source_files(self) -> list[Path]:
        import sklearn.datasets

        return [Path(sklearn.datasets.__file__).parent / "data" / "digits.csv.gz"]

    def load_split(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        images = torch.from_numpy(bunch.images).mul(255.0 / 16.0).round().to(torch.uint8).unsqueeze(1)
        labels = torch.from_numpy(bunch.target).long()
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(TEST_SPLIT_SEED))
        n_test = math.ceil(len(images) * TEST_FRACTION)  # 360 of 1,797, rounded up as scikit-learn does
        idx = order[n_test:] if train else order[:n_test]
        idx = idx.sort().values
        return images[idx], labels[idx]
