"""The one DataModule layer every data set and every model shares.

A data set subclass only says how to read its train and test images as a uint8 tensor ``(N, C, H, W)`` with
integer labels (:meth:`ImageDataModule.load_split`). Everything else is here: the decoded-once cache in
``data_dir``, the seeded train/val split, binarisation, and serving batches either from tensors held on the
training device (``loader=tensor``, the default) or through a standard ``DataLoader`` (``loader=dataloader``).
Batches travel as uint8 and become floats in [0, 1] on the device, in ``on_after_batch_transfer``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from lightning import LightningDataModule
from torch.utils.data import DataLoader, TensorDataset

from vaelab import rules
from vaelab.data import stream as streaming
from vaelab.data.loaders import ShardSampler, TensorBatchLoader, shard_size
from vaelab.errors import ConfigError, DataFileError

log = logging.getLogger(__name__)

CACHE_VERSION = 3  # bump when a data set's decoding, its fixed split or the cache's format changes


def content_digest(images: torch.Tensor, labels: torch.Tensor) -> str:
    """SHA-256 of the tensors' bytes (and their shapes and types): what a cache file must still hold when read."""
    digest = hashlib.sha256(json.dumps([list(images.shape), str(images.dtype), list(labels.shape),
                                        str(labels.dtype)]).encode())
    for tensor in (images, labels):
        digest.update(memoryview(tensor.contiguous().view(torch.uint8).reshape(-1).numpy()))
    return digest.hexdigest()


class ImageDataModule(LightningDataModule):
    """Base DataModule for labelled image data sets.

    Args:
        data_dir: where the data set's files live (and the decoded cache, under ``vaelab_cache/``).
        batch_size: training batch size.
        eval_batch_size: batch size for validation and test (defaults to ``batch_size``).
        val_fraction: fraction of the training set held out for validation, by a seeded permutation.
        split_seed: seed of that permutation (independent of the run's seed, so every run sees the same split).
        loader: ``tensor`` (batches indexed from tensors on the device) or ``dataloader`` (torch DataLoader).
        num_workers, pin_memory: for ``loader=dataloader``.
        binarize: ``none``, ``dynamic`` (a fresh Bernoulli draw of every training batch, one fixed draw of
            val/test) or ``static`` (one fixed draw of every split).
        binarize_seed: seed of the fixed draws.
        cache: keep the decoded tensors on disk for the next run (in ``cache_dir``).
        cache_dir: where that cache goes (default ``<data_dir>/vaelab_cache``): a folder you can write to when the
            data folder is read-only. Where it cannot be written, the decoded data stay in memory for this run, with
            a warning saying so.
        stream: convert the data set once into chunks in ``cache_dir`` and stream them (:mod:`vaelab.data.stream`)
            instead of holding the decoded splits in memory; ``loader`` is then not used.
    """

    #: (channels, height, width) and number of classes; set by each subclass.
    image_shape: tuple[int, int, int] = (1, 28, 28)
    num_classes: int = 10
    class_names: tuple[str, ...] = tuple(str(i) for i in range(10))
    name: str = "images"
    #: whether the images are binary (0 or 255) as the data set comes, without data.binarize (synthetic shapes)
    binary_images: bool = False

    def __init__(
        self,
        data_dir: str | os.PathLike = "data/",
        batch_size: int = 128,
        eval_batch_size: int | None = None,
        val_fraction: float = 0.1,
        split_seed: int = 42,
        loader: str = "tensor",
        num_workers: int = 0,
        pin_memory: bool = False,
        binarize: str = "none",
        binarize_seed: int = 1234,
        cache: bool = True,
        cache_dir: str | os.PathLike | None = None,
        stream: bool = False,
    ) -> None:
        super().__init__()
        streaming.check_stream(stream)
        for key, value in [("batch_size", batch_size), ("eval_batch_size", eval_batch_size),
                           ("val_fraction", val_fraction), ("loader", loader), ("binarize", binarize)]:
            if value is not None:
                rules.check(f"data.{key}", value)
        self.save_hyperparameters(logger=False)
        self.data_dir = Path(data_dir)
        if self.data_dir.exists() and not self.data_dir.is_dir():
            raise ConfigError(
                f"data.data_dir={data_dir} is a file, not a folder: give the folder that holds the data set's files "
                f"(and its decoded cache, in <data_dir>/vaelab_cache), e.g. data.data_dir={self.data_dir.parent}"
            )
        self.cache_dir = Path(cache_dir) if cache_dir else self.data_dir / "vaelab_cache"
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size or batch_size)
        self.splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._drawn_seed: int | None = None

    # ------------------------------------------------------------------ what a data set provides
    def load_split(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the training (or test) images as uint8 ``(N, C, H, W)`` and labels as int64: ``(N,)`` (one class per
        image) or ``(N, F)`` (F factors per image, as :class:`~vaelab.data.shapes.ShapesDataModule`'s)."""
        raise NotImplementedError

    def source_files(self) -> list[Path]:
        """Files the decoded cache depends on (a change to any of them invalidates it)."""
        return []

    def cache_key(self) -> list:
        """JSON-able settings the decoded data depend on besides the source files (a generated data set's
        parameters, an image size): caches of different settings never collide. Empty by default."""
        return []

    def download(self) -> None:
        """Fetch the data set's files if it has any to fetch (called once, on rank 0, by ``prepare_data``)."""

    # ------------------------------------------------------------------ decoding, once
    @functools.cached_property
    def _source_hashes(self) -> list[str]:
        """Names and SHA-1s of the source files, read once per DataModule (both splits' cache paths use them).

        The contents, not the files' times: a same-sized file of other data copied with its times kept (KMNIST has
        MNIST's sizes) must not be served from the old cache.
        """
        hashes = []
        for f in self.source_files():
            digest = hashlib.sha1()
            with f.open("rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):  # (hashlib.file_digest needs Python 3.11)
                    digest.update(block)
            hashes += [f.name, digest.hexdigest()]
        return hashes

    def _cache_path(self, train: bool) -> Path:
        stamp = [CACHE_VERSION, self.name, train, *self._source_hashes, *self.cache_key()]
        digest = hashlib.sha1(json.dumps(stamp).encode()).hexdigest()[:12]
        return self.cache_dir / f"{self.name}-{'train' if train else 'test'}-{digest}.pt"

    def _decoded(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.hparams.cache or not all(f.is_file() for f in self.source_files()):
            # (missing sources: load_split raises the data set's own clear error)
            return self._checked(*self.load_split(train), train=train)
        path = self._cache_path(train)
        if path.exists():
            cached = self._read_cache(path, train)
            if cached is not None:
                return cached
        images, labels = self._checked(*self.load_split(train), train=train)
        self._write_cache(path, images, labels)
        return images, labels

    def _write_cache(self, path: Path, images: torch.Tensor, labels: torch.Tensor) -> None:
        """Write the cache atomically (a temporary file, then a rename: a parallel job never reads half a file),
        with a checksum of its contents; where it cannot be written (a read-only data folder, a full disk), say so
        and go on with the data in memory."""
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save({"images": images, "labels": labels, "checksum": content_digest(images, labels)}, tmp)
            os.replace(tmp, path)
        except OSError as err:
            tmp.unlink(missing_ok=True)
            log.warning(
                "%s: cannot write the decoded cache %s (%s), so the data are decoded again at every start; they are "
                "kept in memory for this run. Give a folder you can write to, data.cache_dir=<folder>, or "
                "data.cache=false to not try", self.name, path, err.strerror or type(err).__name__,
            )

    def _read_cache(self, path: Path, train: bool) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The cached split, or None (with a warning, and the caller rebuilds the file from the sources) when the
        file is torn (a job killed while copying it, a full disk), does not hold what this data set decodes to, or
        its contents no longer match the checksum written with them (bytes damaged inside an archive that opens)."""
        try:
            data = torch.load(path, weights_only=True)
            if not isinstance(data, dict) or not {"images", "labels"} <= data.keys():
                keys = f" with keys {sorted(map(str, data))}" if isinstance(data, dict) else ""
                raise ValueError(f"it holds a {type(data).__name__}{keys}, not images and labels")
            images, labels = data["images"], data["labels"]
            if not isinstance(images, torch.Tensor) or not isinstance(labels, torch.Tensor):
                raise ValueError("its images or labels are not tensors")
            if data.get("checksum") != content_digest(images, labels):
                raise ValueError("its contents do not match the checksum written with them: the file is damaged"
                                 if "checksum" in data else "it has no checksum of its contents")
            return self._checked(images, labels, train=train)
        except Exception as err:  # whatever is wrong with it, the sources can make it again
            reason = " ".join(str(err).split()).split(". ")[0][:160] or type(err).__name__
            log.warning(
                "%s: the decoded cache %s is unusable (%s); rebuilding it from the source files",
                self.name, path, reason,
            )
            return None

    def _checked(
        self, images: torch.Tensor, labels: torch.Tensor, train: bool | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if images.dtype != torch.uint8 or images.shape[1:] != self.image_shape:
            raise ValueError(
                f"{type(self).__name__}.load_split must return uint8 images of shape (N, *{self.image_shape}), "
                f"got {images.dtype} {tuple(images.shape)}"
            )
        if labels.ndim == 0 or len(labels) != len(images):
            split = {True: "the train split", False: "the test split"}.get(train, "a split")
            n_labels = len(labels) if labels.ndim else "no list of"
            raise DataFileError(
                f"{self.name}: {split} has {len(images)} images but {n_labels} labels "
                f"(from {type(self).__name__}.load_split): its images and labels must come from the same "
                f"release of the data set; get both files again"
            )
        return images.contiguous(), labels.long()

    # ------------------------------------------------------------------ Lightning hooks
    def prepare_data(self) -> None:
        self.download()
        if self.hparams.stream:  # data.stream=true: convert once, on one process per machine
            streaming.convert(self)

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        if self.hparams.stream:  # data.stream=true: the splits stay in their chunks on disk
            self.splits = streaming.open_splits(self)
            return
        images, labels = self._decoded(train=True)
        n_val = int(round(len(images) * self.hparams.val_fraction))
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(self.hparams.split_seed))
        val_idx, train_idx = order[:n_val].sort().values, order[n_val:].sort().values
        #: positions of the train and val images in the data set's training set
        self.split_indices = {"train": train_idx, "val": val_idx}
        self._check_sizes(len(images), len(val_idx), len(train_idx))
        test_images, test_labels = self._decoded(train=False)
        splits = {
            "train": (images[train_idx], labels[train_idx]),
            "val": (images[val_idx], labels[val_idx]),
            "test": (test_images, test_labels),
        }
        fixed = {"static": ("train", "val", "test"), "dynamic": ("val", "test")}.get(self.hparams.binarize, ())
        for split in fixed:
            # one seed per split, so static and dynamic runs are scored on the same binarised val/test images
            gen = torch.Generator().manual_seed(self.hparams.binarize_seed + ("train", "val", "test").index(split))
            imgs, labs = splits[split]
            draw = torch.bernoulli(imgs.float() / 255.0, generator=gen)
            splits[split] = ((draw * 255).to(torch.uint8), labs)
        device = self._device()
        self.splits = {k: (v[0].to(device), v[1].to(device)) for k, v in splits.items()}
        log.info(
            "%s: %d train / %d val / %d test images of shape %s on %s",
            self.name, *(len(self.splits[k][0]) for k in ("train", "val", "test")), self.image_shape, device,
        )

    def split_settings(self) -> str:
        """The settings that decide the sizes of the splits, for a message about them."""
        return "data.val_fraction"

    def training_part(self, n_images: int) -> str:
        """How many images the training part has (and where they come from), for a message about the splits."""
        return f"{n_images} training images"

    def _check_sizes(self, n_images: int, n_val: int, n_train: int) -> None:
        """One clear error, at setup, for a data set too small for its splits (rather than an empty split failing
        later inside Lightning)."""
        fraction = self.hparams.val_fraction
        if n_train > 0 and (n_val > 0 or fraction == 0):
            return
        said = (f"{self.training_part(n_images)}, of which data.val_fraction={fraction} holds out {n_val} for "
                f"validation, leaving {n_train} to train on")
        raise ConfigError(
            f"{self.name}: too few images for its splits: {said}. Add images, or change {self.split_settings()} "
            "(data.val_fraction=0 trains without validation)"
        )

    def _device(self) -> torch.device:
        """The training device for the tensor-resident path, the CPU for the DataLoader path."""
        if self.hparams.loader == "tensor" and self.trainer is not None:
            return self.trainer.strategy.root_device
        return torch.device("cpu")

    def shuffle_seed(self) -> int:
        """The seed of the training order: the run's (``seed_everything`` sets ``PL_GLOBAL_SEED`` on every rank);
        in a run without one, a random seed drawn on rank 0 and broadcast, so the ranks still split one
        permutation (and two unseeded runs do not see the same order)."""
        if "PL_GLOBAL_SEED" in os.environ:
            return int(os.environ["PL_GLOBAL_SEED"])
        if self._drawn_seed is None:
            seed = int(torch.randint(2**31 - 1, ()).item())
            self._drawn_seed = self.trainer.strategy.broadcast(seed) if self.trainer is not None else seed
        return self._drawn_seed

    def _loader(self, split: str, batch_size: int, shuffle: bool) -> Any:
        trainer = self.trainer
        if trainer is not None and trainer.overfit_batches:
            shuffle = False  # Lightning's overfit_batches: the same first batches every epoch
        images, labels = self.splits[split]
        if len(images) == 0:
            raise ConfigError(f"{self.name}: the {split} split is empty: add images, or change "
                              f"{self.split_settings()} (test=false skips testing)")
        world_size = trainer.world_size if trainer is not None else 1
        if not shuffle and shard_size(len(images), world_size - 1, world_size, pad=False) == 0:
            # (validation and test shards are not padded: a process without a batch would leave the others waiting
            # for it at the end of the epoch, for ever)
            raise ConfigError(
                f"{self.name}: the {split} split has {len(images)} images for {world_size} processes: under DDP every "
                f"process needs at least one. Give it more images ({self.split_settings()}), or run on at most "
                f"{len(images)} devices (trainer.devices)"
            )
        order = {
            "shuffle": shuffle,
            "seed": self.shuffle_seed() if shuffle else 0,
            "rank": trainer.global_rank if trainer is not None else 0,
            "world_size": trainer.world_size if trainer is not None else 1,
        }
        if self.hparams.stream:  # data.stream=true: LitData's loader over the split's chunks
            return streaming.stream_loader(images, batch_size, shuffle, seed=order["seed"],
                                           world_size=order["world_size"], num_workers=self.hparams.num_workers,
                                           pin_memory=self.hparams.pin_memory)
        # training shards must be even (every rank takes the same number of steps); val/test see every image once
        pad = shuffle
        if self.hparams.loader == "tensor":
            return TensorBatchLoader(
                images, labels, batch_size, **order, pad_shards=pad,
                epoch_fn=(lambda: trainer.current_epoch) if trainer is not None else None,
            )
        workers = self.hparams.num_workers
        dataset = TensorDataset(images, labels)
        # the same order as the tensor path; a plain in-order pass needs no sampler (and Lightning's
        # overfit_batches wants a SequentialSampler)
        sampler = ShardSampler(len(dataset), **order, pad=pad) if shuffle or order["world_size"] > 1 else None
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=workers,
            pin_memory=self.hparams.pin_memory,
            persistent_workers=workers > 0,
        )

    def train_dataloader(self) -> Any:
        return self._loader("train", self.batch_size, shuffle=True)

    def val_dataloader(self) -> Any:
        return self._loader("val", self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> Any:
        return self._loader("test", self.eval_batch_size, shuffle=False)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        images, labels = batch
        training = self.trainer is not None and self.trainer.training
        return self.convert(images, fresh_draw=training), labels

    def convert(
        self, images: torch.Tensor, fresh_draw: bool = False, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """The one conversion of a batch, for training, callbacks and evaluation alike: uint8 images to floats in
        [0, 1]; under dynamic binarisation, a Bernoulli draw of them when ``fresh_draw`` (each training batch) or
        with ``generator`` (a fixed draw). Static binarisation and the val/test splits were drawn once at setup."""
        x = self.to_float(images)
        if self.hparams.binarize == "dynamic" and (fresh_draw or generator is not None):
            x = torch.bernoulli(x, generator=generator)
        return x

    def evaluation_batches(self, split: str) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches of ``split`` (train, val or test) as evaluation scores them, in order: converted by
        :meth:`convert`, and under dynamic binarisation the train split as one fixed draw (seeded with
        ``binarize_seed``), like val and test, so that two evaluations see the same binary images."""
        if not self.splits:
            self.setup()
        loader = self._loader(split, self.eval_batch_size, shuffle=False)
        fixed = split == "train" and self.hparams.binarize == "dynamic"
        generator = torch.Generator().manual_seed(self.hparams.binarize_seed) if fixed else None
        for images, labels in loader:
            yield self.convert(images, generator=generator), labels

    # ------------------------------------------------------------------ for callbacks and evaluation
    @property
    def num_train_images(self) -> int:
        """N, the number of training images (all processes together): what estimates of the aggregate posterior
        q(z) = (1/N) Σ_n q(z | x_n) need (β-TC-VAE)."""
        if not self.splits:
            self.setup()
        return len(self.splits["train"][0])

    @staticmethod
    def to_float(images: torch.Tensor) -> torch.Tensor:
        """uint8 images to floats in [0, 1]."""
        return images.float().div_(255.0) if images.dtype == torch.uint8 else images

    def fixed_batch(self, split: str = "val", n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``n`` images of a split as floats in [0, 1], with labels: the same every epoch."""
        if not self.splits:
            self.setup()
        images, labels = self.splits[split]
        return self.convert(images[:n]), labels[:n]

    def class_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """One class per image, for colouring plots: ``labels`` itself when ``(N,)``; for ``(N, F)`` factor labels,
        the column ``color_index`` (the factor the data set's ``color_by`` names; 0 when it has none)."""
        return labels if labels.ndim == 1 else labels[:, getattr(self, "color_index", 0)]
