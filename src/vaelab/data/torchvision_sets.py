"""MNIST-family data sets through torchvision's own classes and folder layout (``<data_dir>/MNIST/raw/…``)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torchvision import datasets

from vaelab.data.fetched import FetchedDataModule
from vaelab.data.idx import IDX_FILES, validate_idx_pair


class TorchvisionMNISTDataModule(FetchedDataModule):
    """A 28×28 grey-scale data set read by a torchvision class of the MNIST family.

    torchvision parses the IDX files straight into a uint8 tensor (``dataset.data``), so no image is ever
    decoded one by one. When the files are missing it downloads them (``download=True``); if that fails too,
    the run stops with a message naming the folder and the files expected there (:class:`FetchedDataModule`).
    Before torchvision parses anything, all four files (train and test) are checked (:meth:`check_files`), so a
    truncated, empty or mismatched file stops the run with a message naming it, before anything is cached or
    trained.
    """

    dataset_cls: type[datasets.MNIST] = datasets.MNIST
    image_shape = (1, 28, 28)
    num_classes = 10
    layout = "uncompressed IDX files, as torchvision lays them out"
    source = "torchvision's mirrors of the publisher's files"

    def __init__(self, *args, download: bool = True, **kwargs) -> None:
        super().__init__(*args, download=download, **kwargs)
        self.class_names = tuple(self.dataset_cls.classes)

    @property
    def title(self) -> str:
        return self.dataset_cls.__name__

    @property
    def folder(self) -> Path:
        return self.data_dir / self.dataset_cls.__name__ / "raw"

    @property
    def raw_folder(self) -> Path:
        return self.folder

    @property
    def expected_files(self) -> tuple[str, ...]:
        """The four uncompressed IDX files torchvision reads, named as in its ``resources``."""
        return tuple(os.path.splitext(name)[0] for name, _ in self.dataset_cls.resources)

    def check_files(self) -> None:
        """Check the train and test IDX files (magic number, image size, length against the header, as many
        labels as images): ``DataFileError`` naming the bad file and the fix. Reads headers only."""
        folder = self.dataset_cls.__name__
        for split in ("train", "test"):
            images, labels = (self.raw_folder / IDX_FILES[split, kind] for kind in ("images", "labels"))
            validate_idx_pair(images, labels, self.image_shape[1:], dataset=folder)

    def fetch(self) -> None:
        self.dataset_cls(str(self.data_dir), train=True, download=True)
        self.dataset_cls(str(self.data_dir), train=False, download=True)

    def download(self) -> None:
        """Fetch the files if some are missing, then check all of them (every split, before any is parsed)."""
        super().download()
        self.check_files()

    def read_split(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        ds = self.dataset_cls(str(self.data_dir), train=train, download=False)
        return ds.data.unsqueeze(1), ds.targets


class MNISTDataModule(TorchvisionMNISTDataModule):
    """MNIST handwritten digits (LeCun et al. 1998): 60,000 train and 10,000 test images."""

    dataset_cls = datasets.MNIST
    name = "mnist"


class FashionMNISTDataModule(TorchvisionMNISTDataModule):
    """Fashion-MNIST (Xiao et al. 2017): 60,000 train and 10,000 test images of clothing in 10 classes."""

    dataset_cls = datasets.FashionMNIST
    name = "fashion_mnist"
