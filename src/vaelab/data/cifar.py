"""CIFAR-10 (Krizhevsky 2009, "Learning Multiple Layers of Features from Tiny Images", ch. 3) from its official
python-version files: ``<data_dir>/cifar-10-batches-py/data_batch_1`` … ``data_batch_5`` (50,000 training images)
and ``test_batch`` (10,000), as torchvision lays them out.

Each batch is a pickled dict: ``data``, a uint8 array ``(10000, 3072)`` whose rows are one image's red, then green,
then blue plane, each 32×32 in row-major order (so ``reshape(-1, 3, 32, 32)`` is ``(N, C, H, W)``), and ``labels``,
a list of class indices 0–9 (:data:`CLASSES`). The batches are read with a restricted unpickler
(:func:`vaelab.data.safe_pickle.load_data_pickle`): a file that names anything but plain data and numpy arrays is
refused, and nothing of it is run.
"""

from __future__ import annotations

import numpy as np
import torch
from torchvision.datasets import CIFAR10
from torchvision.datasets.utils import download_and_extract_archive

from vaelab.data.fetched import FetchedDataModule
from vaelab.data.safe_pickle import load_data_pickle
from vaelab.errors import DataFileError

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
TRAIN_BATCHES = tuple(name for name, _ in CIFAR10.train_list)  # data_batch_1 … data_batch_5
TEST_BATCHES = tuple(name for name, _ in CIFAR10.test_list)  # test_batch


class CIFAR10DataModule(FetchedDataModule):
    """CIFAR-10: 32×32 colour images of 10 classes; 50,000 train and 10,000 test (see the module docstring)."""

    name = "cifar10"
    image_shape = (3, 32, 32)
    num_classes = 10
    class_names = CLASSES
    folder_name = CIFAR10.base_folder  # cifar-10-batches-py
    expected_files = (*TRAIN_BATCHES, *TEST_BATCHES)
    layout = "the python version's pickled batches, extracted from cifar-10-python.tar.gz"
    source = CIFAR10.url

    def fetch(self) -> None:
        download_and_extract_archive(CIFAR10.url, str(self.data_dir), filename=CIFAR10.filename, md5=CIFAR10.tgz_md5)

    def read_batch(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """One batch file's images ``(n, 3, 32, 32)`` and labels ``(n,)``, checked."""
        path = self.folder / name
        batch = load_data_pickle(path)
        data = batch.get("data") if isinstance(batch, dict) else None
        labels = batch.get("labels") if isinstance(batch, dict) else None
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            what = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
            raise DataFileError(f"{path}: its 'data' is {what}, not the uint8 (N, 3072) array of a CIFAR-10 batch: "
                                "delete it and download the data set again")
        labels = np.asarray(labels if labels is not None else [], dtype=np.int64)
        if labels.shape != (len(data),) or (labels.size and (labels.min() < 0 or labels.max() > 9)):
            raise DataFileError(f"{path}: its 'labels' are not {len(data)} class indices 0-9: delete it and download "
                                "the data set again")
        return data.reshape(-1, *self.image_shape), labels

    def read_split(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        parts = [self.read_batch(name) for name in (TRAIN_BATCHES if train else TEST_BATCHES)]
        images = np.concatenate([p[0] for p in parts])
        labels = np.concatenate([p[1] for p in parts])
        return torch.from_numpy(images), torch.from_numpy(labels)
