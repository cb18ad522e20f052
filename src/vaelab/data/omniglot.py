"""Omniglot as the VAE literature uses it: the 28×28 version of Burda, Grosse & Salakhutdinov (2016, "Importance
Weighted Autoencoders", sec. 5.1; Omniglot itself is Lake et al. 2015), ``<data_dir>/omniglot/chardata.mat``:
24,345 training and 8,070 test images of handwritten characters from 50 alphabets.

The file holds ``data`` and ``testdata``, floats in [0, 1] of shape ``(784, N)``, one image per column, each image's
784 values in column-major (MATLAB, Fortran) order, and ``target``/``testtarget``, ``(50, N)`` one-hot alphabets. So
image n is ``data[:, n].reshape(28, 28, order="F")``, as the IWAE code reads it (read in row-major order instead,
every character comes out transposed). Grey levels are kept as uint8 (``round(255 v)``); the literature's dynamic
binarisation is ``data.binarize=dynamic``, this data set's default. Labels: the alphabet, 0–49.
"""

from __future__ import annotations

import numpy as np
import scipy.io
import torch
from torchvision.datasets.utils import download_url

from vaelab.data.fetched import FetchedDataModule
from vaelab.errors import DataFileError

URL = "https://github.com/yburda/iwae/raw/master/datasets/OMNIGLOT/chardata.mat"
FILE = "chardata.mat"
KEYS = {True: ("data", "target"), False: ("testdata", "testtarget")}


def to_images(columns: np.ndarray) -> np.ndarray:
    """``(784, N)`` floats in [0, 1], one Fortran-ordered image per column, to uint8 ``(N, 1, 28, 28)``."""
    images = columns.T.reshape(-1, 28, 28, order="F")  # image n, pixel (row i, col j) = columns[i + 28 j, n]
    return np.rint(np.clip(images, 0.0, 1.0) * 255.0).astype(np.uint8)[:, None]


def to_labels(target: np.ndarray, n: int) -> np.ndarray:
    """One-hot ``(K, N)`` (or ``(N, K)``), or plain ``(N,)`` class indices, to int64 ``(N,)``."""
    target = np.asarray(target)
    if target.ndim == 2 and target.shape[1] == n and target.shape[0] != n:
        return target.argmax(axis=0).astype(np.int64)
    if target.ndim == 2 and target.shape[0] == n:
        return (target.argmax(axis=1) if target.shape[1] > 1 else target[:, 0]).astype(np.int64)
    return target.reshape(-1).astype(np.int64)


class OmniglotDataModule(FetchedDataModule):
    """Burda et al.'s 28×28 Omniglot (see the module docstring)."""

    name = "omniglot"
    image_shape = (1, 28, 28)
    num_classes = 50
    class_names = tuple(f"alphabet {i}" for i in range(50))
    folder_name = "omniglot"
    expected_files = (FILE,)
    layout = "Burda et al.'s chardata.mat, as the IWAE repository ships it"
    source = URL

    def fetch(self) -> None:
        download_url(URL, str(self.folder), filename=FILE)

    def read_split(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        path = self.folder / FILE
        data_key, target_key = KEYS[train]
        try:
            mat = scipy.io.loadmat(str(path), variable_names=[data_key, target_key])
        except Exception as err:  # scipy raises ValueError, MatReadError, OSError for a damaged file
            raise DataFileError(f"cannot read {path} ({type(err).__name__}: {err}): delete it and download it "
                                "again") from err
        columns, target = mat.get(data_key), mat.get(target_key)
        if columns is None or target is None or columns.ndim != 2 or columns.shape[0] != 784:
            raise DataFileError(f"{path}: no '{data_key}' of shape (784, N) with its '{target_key}': is it "
                                "Burda et al.'s chardata.mat? Delete it and download it again")
        labels = to_labels(target, columns.shape[1])
        if labels.shape != (columns.shape[1],):
            raise DataFileError(f"{path}: '{target_key}' does not give one label for each of the "
                                f"{columns.shape[1]} images of '{data_key}': delete it and download it again")
        return torch.from_numpy(to_images(columns)), torch.from_numpy(labels)
