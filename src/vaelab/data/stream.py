"""``data.stream=true``: a data set converted once into LitData chunks on disk, then streamed, never held in memory.

Conversion (:func:`convert`) writes each split (train, val, test) into its own LitData folder under the data set's
cache folder, ``<cache_dir>/<name>-stream-<key>/<split>/``, image by image, as the tensor path's
:meth:`~vaelab.data.base.ImageDataModule.setup` would hold it: the same train/val split (``val_fraction``,
``split_seed``), the same order within each split, and under ``binarize=static`` or ``dynamic`` the same fixed
Bernoulli draws (one generator per split, seeded ``binarize_seed + split index``, drawn image after image: CPU draws
from one generator are the same whole or in pieces). ``<key>`` hashes everything the data depend on (the decoded
cache's own stamp: the source files, the data set's :meth:`cache_key`, plus the split and binarisation settings), so a
changed data set or setting is converted again into a new folder. A folder is written under a temporary name and
renamed when complete, so a killed conversion is never read.

What is never held whole:

- ``data=image_folder``: conversion decodes file by file (the case where the data are larger than memory);
- every other data set (MNIST, Fashion-MNIST, digits, shapes): conversion reads the decoded split once through the
  tensor cache (one split in memory, during conversion only); training then streams it.

Reading: a ``litdata.StreamingDataLoader`` over a ``StreamingDataset`` with ``data.num_workers`` workers. LitData
gives each DDP rank its own part of the chunks (it reads the rank and world size from ``torch.distributed``, or the
``WORLD_SIZE`` and ``GLOBAL_RANK`` variables) and each worker its own part of the rank's. Batches are what the tensor
loader gives, uint8 ``(B, C, H, W)`` images and int64 labels, converted to floats (and binarised) by the same
``on_after_batch_transfer``. What differs from ``loader=tensor``: the training order is LitData's (chunks shuffled,
then images within them), not :func:`~vaelab.data.loaders.epoch_indices`; and under DDP the training shards are made
even by dropping the last images of the epoch (LitData's ``drop_last``) rather than by repeating some.
Validation and test are read in order, every image once.

Callbacks and metrics that read ``datamodule.splits[split]`` get a :class:`StreamedImages` (random access by index,
slice or index tensor, one image read at a time) with the labels, which are small, in memory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from vaelab.errors import ConfigError

if TYPE_CHECKING:
    from vaelab.data.base import ImageDataModule

log = logging.getLogger(__name__)

STREAM_VERSION = 2  # bump when the chunks or their side files change (2: labels as .npy)
SPLITS = ("train", "val", "test")
#: LitData's chunk size: a few thousand 64x64 colour images per chunk, so a shuffle has many chunks to permute
CHUNK_BYTES = "16MB"
META = "vaelab_stream.json"
#: each split's labels, a plain .npy array (no pickle)
LABELS = "labels.npy"


def check_stream(value: Any) -> bool:
    """``data.stream`` must be a bool: one clear error naming the key otherwise."""
    if not isinstance(value, bool):
        raise ConfigError(f"data.stream = {value!r} is invalid: it must be true (stream the data set from chunks on "
                          "disk, converted once) or false (decode it into memory)")
    return value


def fixed_draw_splits(binarize: str) -> tuple[str, ...]:
    """The splits whose binary images are one fixed draw, made at conversion (as setup makes them in memory)."""
    return {"static": SPLITS, "dynamic": ("val", "test")}.get(binarize, ())


def stream_root(dm: ImageDataModule) -> Path:
    """``<cache_dir>/<name>-stream-<key>``: the key hashes the decoded cache's stamp (source files and
    :meth:`cache_key`) and the settings that decide the splits' contents."""
    from vaelab.data.base import CACHE_VERSION

    hp = dm.hparams
    fixed = fixed_draw_splits(hp.binarize)
    stamp = [STREAM_VERSION, CACHE_VERSION, dm.name, *dm._source_hashes, *dm.cache_key(), float(hp.val_fraction),
             int(hp.split_seed), hp.binarize if fixed else "none", int(hp.binarize_seed) if fixed else 0]
    digest = hashlib.sha1(json.dumps(stamp).encode()).hexdigest()[:12]
    return dm.cache_dir / f"{dm.name}-stream-{digest}"


# ---------------------------------------------------------------------------------------------------- conversion
def _training_set(dm: ImageDataModule, train: bool) -> tuple[int, Iterator[tuple[np.ndarray, Any]]]:
    """The number of images of the data set's training (or test) set, and an iterator over them, in order, as
    ``(uint8 (C, H, W) array, label)``: file by file for an image folder, else from the decoded split."""
    from vaelab.data.image_folder import ImageFolderDataModule

    if isinstance(dm, ImageFolderDataModule):
        files, labels, _ = dm.listing
        chosen = np.flatnonzero(dm._test_mask(files) != train)
        return len(chosen), ((dm._decode(files[i]), labels[i]) for i in chosen)
    images, labels = dm._decoded(train)
    return len(images), ((images[i].numpy(), labels[i].numpy()) for i in range(len(images)))


def _split_of(n: int, val_fraction: float, split_seed: int) -> np.ndarray:
    """For each of the ``n`` training-set images, whether it is in val: the seeded permutation of
    :meth:`~vaelab.data.base.ImageDataModule.setup`."""
    n_val = int(round(n * val_fraction))
    order = torch.randperm(n, generator=torch.Generator().manual_seed(split_seed))
    in_val = np.zeros(n, dtype=bool)
    in_val[order[:n_val].numpy()] = True
    return in_val


class _SplitWriter:
    """One split's LitData folder, written image by image (with the split's fixed binary draw, if it has one),
    and its labels kept to be saved beside the chunks."""

    def __init__(self, folder: Path, draw_seed: int | None) -> None:
        from litdata.streaming.writer import BinaryWriter

        folder.mkdir(parents=True)
        self.folder, self.count, self.labels = folder, 0, []
        self.writer = BinaryWriter(str(folder), chunk_bytes=CHUNK_BYTES)
        self.generator = torch.Generator().manual_seed(draw_seed) if draw_seed is not None else None

    def add(self, image: np.ndarray, label: Any) -> None:
        if self.generator is not None:
            draw = torch.bernoulli(torch.from_numpy(image).float() / 255.0, generator=self.generator)
            image = (draw * 255).to(torch.uint8).numpy()
        label = np.asarray(label, dtype=np.int64)
        self.writer.add_item(self.count, (np.ascontiguousarray(image), label))
        self.labels.append(label)
        self.count += 1

    def close(self) -> None:
        if self.count:
            self.writer.done()
            self.writer.merge()
        labels = np.stack(self.labels).astype(np.int64) if self.labels else np.zeros(0, dtype=np.int64)
        np.save(self.folder / LABELS, labels)  # (a plain array: read back without any pickle)


def require_litdata() -> None:
    """One clear error where LitData, which ``data.stream=true`` reads and writes with, is not installed."""
    try:
        import litdata  # noqa: F401
    except ImportError as err:
        raise ConfigError("data.stream = true needs the litdata package (pip install litdata), which is not "
                          "installed: install it, or set data.stream=false") from err


def convert(dm: ImageDataModule) -> Path:
    """Convert the data set into its stream folder unless that folder is already there; return it."""
    require_litdata()
    root = stream_root(dm)
    if (root / META).is_file():
        return root
    tmp = root.with_name(f"{root.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    log.info("%s: converting the data set into streaming chunks in %s (once)", dm.name, root)
    hp = dm.hparams
    fixed = fixed_draw_splits(hp.binarize)
    writers = {split: _SplitWriter(tmp / split, hp.binarize_seed + i if split in fixed else None)
               for i, split in enumerate(SPLITS)}
    try:
        n, items = _training_set(dm, train=True)
        in_val = _split_of(n, hp.val_fraction, hp.split_seed)
        for row, (image, label) in enumerate(items):
            writers["val" if in_val[row] else "train"].add(_checked(dm, image), label)
        _, items = _training_set(dm, train=False)
        for image, label in items:
            writers["test"].add(_checked(dm, image), label)
        for writer in writers.values():
            writer.close()
        counts = {split: w.count for split, w in writers.items()}
        meta = {"version": STREAM_VERSION, "image_shape": list(dm.image_shape), "counts": counts}
        (tmp / META).write_text(json.dumps(meta))
        try:
            os.rename(tmp, root)
        except OSError:
            if not (root / META).is_file():  # (another process finished first: its folder is as good)
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("%s: %d train / %d val / %d test images in streaming chunks", dm.name, *counts.values())
    return root


def _checked(dm: ImageDataModule, image: np.ndarray) -> np.ndarray:
    if image.dtype != np.uint8 or tuple(image.shape) != tuple(dm.image_shape):
        raise ValueError(f"{dm.name}: an image to stream is {image.dtype} {tuple(image.shape)}, not uint8 "
                         f"{tuple(dm.image_shape)}")
    return image


# ---------------------------------------------------------------------------------------------------- reading
class StreamedImages:
    """A split's images in their chunks, read on demand: ``len``, ``images[i]``, ``images[a:b]`` and
    ``images[index_tensor]`` give uint8 tensors (one image read at a time); what needs the whole split in memory
    (``.to``, ``.float``, arithmetic) is refused with a message saying so."""

    def __init__(self, folder: Path, count: int, image_shape: tuple[int, int, int], split: str) -> None:
        self.folder, self.count, self.split = folder, count, split
        self.shape = (count, *image_shape)
        self.dtype, self.device = torch.uint8, torch.device("cpu")
        self._dataset = None

    def __len__(self) -> int:
        return self.count

    def _read(self, i: int) -> torch.Tensor:
        if self._dataset is None:
            from litdata import StreamingDataset

            self._dataset = StreamingDataset(str(self.folder), shuffle=False, drop_last=False)
        return torch.from_numpy(np.asarray(self._dataset[int(i)][0]))

    def __getitem__(self, index: int | slice | torch.Tensor | np.ndarray) -> torch.Tensor:
        if isinstance(index, (int, np.integer)):
            if not -self.count <= index < self.count:
                raise IndexError(f"image {index} of the {self.split} split, which has {self.count}")
            return self._read(index % self.count)
        rows = range(self.count)[index] if isinstance(index, slice) else torch.as_tensor(index).reshape(-1).tolist()
        if not rows:
            return torch.empty((0, *self.shape[1:]), dtype=torch.uint8)
        return torch.stack([self[int(i)] for i in rows])

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(
            f"data.stream=true: the {self.split} images are read from chunks on disk, so '.{name}' (which needs the "
            f"whole split in memory) is not available; index them (images[i], images[a:b], images[indices]) or set "
            "data.stream=false"
        )


def open_splits(dm: ImageDataModule) -> dict[str, tuple[StreamedImages, torch.Tensor]]:
    """Convert if need be, then each split as :class:`StreamedImages` with its labels (in memory)."""
    root = convert(dm)
    meta = json.loads((root / META).read_text())
    splits = {}
    for split in SPLITS:
        labels = torch.from_numpy(np.load(root / split / LABELS, allow_pickle=False))
        splits[split] = (StreamedImages(root / split, meta["counts"][split], dm.image_shape, split), labels)
    log.info("%s: %d train / %d val / %d test images of shape %s, streamed from %s", dm.name,
             *(meta["counts"][s] for s in SPLITS), dm.image_shape, root)
    return splits


def stream_loader(
    images: StreamedImages,
    batch_size: int,
    shuffle: bool,
    seed: int = 0,
    world_size: int = 1,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> Any:
    """A ``StreamingDataLoader`` over one split's chunks: shuffled (chunks, then images within them) for training,
    in order for evaluation. Under DDP, LitData gives this rank its own shard; training shards are made even by
    dropping (``drop_last``), evaluation shards are not (every image once). ``world_size`` is the trainer's: a
    LitData that sees another one (no process group, no ``WORLD_SIZE``) would serve every rank everything."""
    from litdata import StreamingDataLoader, StreamingDataset

    dataset = StreamingDataset(str(images.folder), shuffle=shuffle, seed=seed, drop_last=None if shuffle else False)
    seen = dataset.distributed_env.world_size
    if seen != world_size:
        raise RuntimeError(f"data.stream=true: LitData sees {seen} processes but the trainer runs {world_size}: it "
                           "reads them from torch.distributed (or WORLD_SIZE and GLOBAL_RANK), which must be set up "
                           "before the data loaders are made")
    return StreamingDataLoader(dataset, batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory)

