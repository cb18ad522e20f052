"""Tiny MNIST-style data sets in torchvision's folder layout, for tests that must not download anything."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vaelab.data.idx import write_mnist_layout


@dataclass
class IdxData:
    """What was written: images ``(N, 28, 28)`` uint8 and labels ``(N,)``, as numpy arrays."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    raw_folder: Path


def write_mnist_like(
    data_dir: Path, class_name: str = "MNIST", n_train: int = 50, n_test: int = 20, seed: int = 0
) -> IdxData:
    """Write ``<data_dir>/<class_name>/raw/``: four IDX files of random 28×28 images and labels 0–9."""
    rng = np.random.default_rng(seed)
    arrays = [
        rng.integers(0, 256, size=(n_train, 28, 28), dtype=np.uint8),
        rng.integers(0, 10, size=n_train, dtype=np.uint8),
        rng.integers(0, 256, size=(n_test, 28, 28), dtype=np.uint8),
        rng.integers(0, 10, size=n_test, dtype=np.uint8),
    ]
    raw = write_mnist_layout(data_dir, class_name, (arrays[0], arrays[1]), (arrays[2], arrays[3]))
    return IdxData(*arrays, raw_folder=raw)
