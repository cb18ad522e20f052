"""SVHN, the Street View House Numbers in their cropped-digit format (Netzer et al. 2011, "Reading Digits in Natural
Images with Unsupervised Feature Learning", sec. 3), from the official MATLAB files ``<data_dir>/svhn/train_32x32.mat``
(73,257 images) and ``test_32x32.mat`` (26,032); the ``extra`` set is not used.

Each file holds ``X``, uint8 ``(32, 32, 3, N)`` (height, width, channel, image: MATLAB's order) and ``y``,
``(N, 1)`` with the digit's label in 1…10, where 10 stands for the digit 0. Read with :func:`scipy.io.loadmat`;
images become ``(N, 3, 32, 32)`` and labels the digit itself, 0–9 (10 → 0), as torchvision does.
"""

from __future__ import annotations

import numpy as np
import scipy.io
import torch
from torchvision.datasets import SVHN
from torchvision.datasets.utils import download_url

from vaelab.data.fetched import FetchedDataModule
from vaelab.errors import DataFileError

FILES = {split: SVHN.split_list[split][1] for split in ("train", "test")}  # train_32x32.mat, test_32x32.mat


class SVHNDataModule(FetchedDataModule):
    """SVHN's cropped digits: 32×32 colour images, labels 0–9 (see the module docstring)."""

    name = "svhn"
    image_shape = (3, 32, 32)
    num_classes = 10
    folder_name = "svhn"
    expected_files = tuple(FILES.values())
    layout = "the cropped digits' MATLAB files (format 2)"
    source = "http://ufldl.stanford.edu/housenumbers/"

    def fetch(self) -> None:
        for split in FILES:
            url, filename, md5 = SVHN.split_list[split]
            download_url(url, str(self.folder), filename=filename, md5=md5)

    def read_split(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        path = self.folder / FILES["train" if train else "test"]
        try:
            mat = scipy.io.loadmat(str(path), variable_names=["X", "y"])
        except Exception as err:  # scipy raises ValueError, MatReadError, OSError for a damaged file
            raise DataFileError(f"cannot read {path} ({type(err).__name__}: {err}): delete it and download it "
                                "again") from err
        x, y = mat.get("X"), mat.get("y")
        if x is None or y is None or x.ndim != 4 or x.shape[:3] != (32, 32, 3) or y.size != x.shape[3]:
            shapes = {k: getattr(v, "shape", None) for k, v in (("X", x), ("y", y))}
            raise DataFileError(f"{path}: holds {shapes}, not X of (32, 32, 3, N) and y of N labels: is it the "
                                "cropped digits' file? Delete it and download it again")
        labels = y.reshape(-1).astype(np.int64)
        if labels.min() < 1 or labels.max() > 10:
            raise DataFileError(f"{path}: labels run from {labels.min()} to {labels.max()}, not 1-10: delete it and "
                                "download it again")
        images = np.ascontiguousarray(x.transpose(3, 2, 0, 1), dtype=np.uint8)  # (H, W, C, N) -> (N, C, H, W)
        return torch.from_numpy(images), torch.from_numpy(labels % 10)  # 10 stands for the digit 0
