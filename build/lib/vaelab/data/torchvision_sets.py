"""MNIST-family data sets through torchvision's own classes and folder layout (``<data_dir>/MNIST/raw/…``)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torchvision import datasets

from vaelab.data.base import ImageDataModule
from vaelab.data.idx import IDX_FILES, validate_idx_pair
from vaelab.errors import DataNotFoundError


class TorchvisionMNISTDataModule(ImageDataModule):
    """A 28×28 grey-scale data set read by a torchvision class of the MNIST family.

    torchvision parses the IDX files straight into a uint8 tensor (``dataset.data``), so no image is ever
    decoded one by one. When the files are missing it downloads them (``download=True``); if that fails too,
    the run stops with a message naming the folder and the files expected there. Before torchvision parses
    anything, all four files (train and test) are checked (:meth:`check_files`), so a truncated, empty or
    mismatched file stops the run with a message naming it, before anything is cached or trained.
    """

    dataset_cls: type[datasets.MNIST] = datasets.MNIST
    image_shape = (1, 28, 28)
    num_classes = 10

    def __init__(self, *args, download: bool = True, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.allow_download = download
        self.class_names = tuple(self.dataset_cls.classes)

    @property
    def raw_folder(self) -> Path:
        return self.data_dir / self.dataset_cls.__name__ / "raw"

    @property
    def expected_files(self) -> list[str]:
        """The four uncompressed IDX files torchvision reads, named as in its ``resources``."""
        return [os.path.splitext(name)[0] for name, _ in self.dataset_cls.resources]

    def source_files(self) -> list[Path]:
        return [self.raw_folder / f for f in self.expected_files]

    def _missing(self) -> list[str]:
        return [f for f in self.expected_files if not (self.raw_folder / f).is_file()]

    def check_files(self) -> None:
        """Check the train and test IDX files (magic number, image size, length against the header, as many
        labels as images): ``DataFileError`` naming the bad file and the fix. Reads headers only."""
        folder = self.dataset_cls.__name__
        for split in ("train", "test"):
            images, labels = (self.raw_folder / IDX_FILES[split, kind] for kind in ("images", "labels"))
            validate_idx_pair(images, labels, self.image_shape[1:], dataset=folder)

    def download(self) -> None:
        """Fetch the files if some are missing, then check all of them (every split, before any is parsed)."""
        self._fetch()
        self.check_files()

    def _fetch(self) -> None:
        if not self._missing():
            return
        reason = "downloading is switched off (data.download=false)"
        if self.allow_download:
            try:
                self.dataset_cls(str(self.data_dir), train=True, download=True)
                self.dataset_cls(str(self.data_dir), train=False, download=True)
                return
            except Exception as err:  # torchvision raises RuntimeError or URLError, depending on the failure
                lines = [line.strip() for line in str(err).splitlines() if line.strip()]
                reason = f"the download failed ({' '.join(lines[-2:]) if lines else type(err).__name__})"
        missing = "\n".join(f"  {self.raw_folder / f}" for f in self.expected_files)
        raise DataNotFoundError(
            f"{self.dataset_cls.__name__} is not in {self.raw_folder} and {reason}.\n"
            f"Put these four files there (uncompressed IDX files, as torchvision lays them out):\n{missing}\n"
            f"or point data.data_dir at the folder that holds {self.dataset_cls.__name__}/raw/, "
            f"or train on the embedded data set with data=digits."
        )

    def load_split(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        self.download()  # no-op when present; on a rank that skipped prepare_data, the same clear error
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
