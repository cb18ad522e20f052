"""Writing IDX files (the MNIST format) in torchvision's folder layout: for tests, benchmarks and your own data."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

IDX_FILES = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file: magic 0x0000 08 <ndim>, big-endian int32 sizes, then the bytes."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    with open(path, "wb") as f:
        f.write(struct.pack(">I", 0x0800 + array.ndim))
        f.write(struct.pack(f">{array.ndim}I", *array.shape))
        f.write(array.tobytes())


def write_mnist_layout(
    data_dir: str | Path,
    folder: str,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
) -> Path:
    """Write ``<data_dir>/<folder>/raw/`` (``folder`` is e.g. ``MNIST`` or ``FashionMNIST``) as torchvision reads
    it: (images ``(N, 28, 28)``, labels ``(N,)``) for train and test. Returns the raw folder."""
    raw = Path(data_dir) / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for split, (images, labels) in (("train", train), ("test", test)):
        write_idx(raw / IDX_FILES[split, "images"], images)
        write_idx(raw / IDX_FILES[split, "labels"], labels)
    return raw


def write_random_mnist_layout(data_dir: str | Path, folder: str, n_train: int, n_test: int, seed: int = 0) -> Path:
    """Random 28×28 images and labels 0–9 of the given sizes in torchvision's layout (for tests and benchmarks)."""
    rng = np.random.default_rng(seed)

    def split(n: int) -> tuple[np.ndarray, np.ndarray]:
        return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n, dtype=np.uint8)

    return write_mnist_layout(data_dir, folder, split(n_train), split(n_test))
