"""IDX files (the MNIST format) in torchvision's folder layout: writing them (for tests, benchmarks and your own
data) and checking them before torchvision parses them (so a bad file stops the run with a message naming it)."""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vaelab.errors import DataFileError

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


# ------------------------------------------------------------------------------------------------- checking

#: IDX type bytes (the third byte of the magic number) and their element types and sizes
IDX_TYPES = {
    0x08: ("uint8", 1),
    0x09: ("int8", 1),
    0x0B: ("int16", 2),
    0x0C: ("int32", 4),
    0x0D: ("float32", 4),
    0x0E: ("float64", 8),
}
UINT8 = 0x08
REFETCH = "download it again, or delete it so that it is downloaded"


@dataclass(frozen=True)
class IdxHeader:
    """An IDX file's header: the type byte, the sizes, and how many bytes header and data take together."""

    path: Path
    type_code: int
    shape: tuple[int, ...]

    @property
    def header_bytes(self) -> int:
        return 4 + 4 * len(self.shape)

    @property
    def nbytes(self) -> int:
        """The file's length as the header tells it (header plus data)."""
        return self.header_bytes + int(np.prod(self.shape, dtype=np.int64)) * IDX_TYPES[self.type_code][1]


def _kind(shape: tuple[int, ...]) -> str:
    sizes = "×".join(map(str, shape))
    kind = {1: "a labels file (1 dimension", 3: "an images file (3 dimensions"}.get(len(shape), f"{len(shape)}-D (")
    return f"{kind}: {sizes})"


def read_idx_header(path: str | Path) -> IdxHeader:
    """Read and check an IDX file's magic number and sizes (``DataFileError`` naming the file when they are bad)."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(4)
        if len(head) == 0:
            raise DataFileError(f"{path} is empty (0 bytes): a failed download or copy leaves such a file; {REFETCH}")
        if len(head) < 4:
            raise DataFileError(f"{path} has only {len(head)} bytes, too short for an IDX header: {REFETCH}")
        if head[:2] == b"\x1f\x8b":
            raise DataFileError(
                f"{path} is gzip-compressed, but torchvision reads the uncompressed IDX file of that name: "
                f"gunzip it (mv {path} {path}.gz && gunzip {path}.gz), or delete it so that it is downloaded"
            )
        if head[:2] != b"\0\0" or head[2] not in IDX_TYPES or not 1 <= head[3] <= 3:
            raise DataFileError(
                f"{path} is not an IDX file: its first 4 bytes are {head.hex(' ')} (an IDX file of uint8 data "
                f"starts 00 00 08 and its number of dimensions); {REFETCH}"
            )
        ndim = head[3]
        sizes = f.read(4 * ndim)
    size = os.path.getsize(path)
    if len(sizes) < 4 * ndim:
        raise DataFileError(
            f"{path} has only {size:,} bytes, too short for the IDX header of {ndim} dimensions it announces "
            f"({4 + 4 * ndim} bytes): the file is truncated; {REFETCH}"
        )
    return IdxHeader(path, head[2], struct.unpack(f">{ndim}I", sizes))


def validate_idx(
    path: str | Path, expected_ndim: int, expected_shape: tuple[int, ...] | None = None, dataset: str = ""
) -> int:
    """Check an uncompressed IDX file of uint8 data before torchvision parses it: the magic number, the number
    of dimensions (3 for images, 1 for labels), the size of each item (``expected_shape``, e.g. ``(28, 28)``) and
    the file's length against the header's sizes. Returns the number of items; raises ``DataFileError`` with a
    message that names the file and says how to get a good one. ``dataset`` names the data set in that message.
    """
    header = read_idx_header(path)
    path = header.path
    if header.type_code != UINT8:
        name = IDX_TYPES[header.type_code][0]
        raise DataFileError(
            f"{path} holds data of type 0x{header.type_code:02x} ({name}), but image data sets are stored as "
            f"uint8 (type 0x08): this is not the data set's file; {REFETCH}"
        )
    want = "images need 3 dimensions (N×H×W)" if expected_ndim == 3 else "labels need 1 dimension (N)"
    if len(header.shape) != expected_ndim:
        raise DataFileError(
            f"{path}: its header is that of {_kind(header.shape)}, but {want}: "
            f"is another file saved under this name? {REFETCH}"
        )
    count, item = header.shape[0], tuple(header.shape[1:])
    noun = "images" if expected_ndim == 3 else "labels" if expected_ndim == 1 else "items"
    of = f" of {'×'.join(map(str, item))}" if item else ""
    if expected_shape is not None and item != tuple(expected_shape):
        raise DataFileError(
            f"{path}: the header says {count} {noun}{of}, but {dataset + ' ' if dataset else ''}{noun} are "
            f"{'×'.join(map(str, expected_shape))}: this is another data set's file; {REFETCH}"
        )
    size = os.path.getsize(path)
    says = f"{path}: the header says {count} {noun}{of} ({header.nbytes:,} bytes) but the file has {size:,} bytes"
    if size < header.nbytes:
        raise DataFileError(f"{says}: the file is truncated; {REFETCH}")
    if size > header.nbytes:
        raise DataFileError(
            f"{says}, {size - header.nbytes:,} bytes more: the file is damaged or its header is wrong; {REFETCH}"
        )
    return count


def validate_idx_pair(images: str | Path, labels: str | Path, image_shape: tuple[int, int], dataset: str = "") -> int:
    """Check an images file and its labels file (each with :func:`validate_idx`) and that they hold as many
    images as labels. Returns that number."""
    n_images = validate_idx(images, 3, image_shape, dataset)
    n_labels = validate_idx(labels, 1, None, dataset)
    if n_images != n_labels:
        raise DataFileError(
            f"{images} holds {n_images} images but {labels} holds {n_labels} labels: the two files must come from "
            f"the same release; download both again, or delete them so that they are downloaded"
        )
    return n_images
