"""CelebA's aligned faces (Liu, Luo, Wang & Tang 2015, "Deep Learning Face Attributes in the Wild", sec. 5) at the
VAE literature's 64×64: ``<data_dir>/celeba/img_align_celeba/*.jpg`` (202,599 images of 178×218) and
``list_eval_partition.txt`` beside it (``<file> <0|1|2>`` per line: 0 train, 1 validation, 2 test), as torchvision
lays them out.

Each image is cut to its centre ``crop_size`` × ``crop_size`` square (148: the face, as in the VAE literature's CelebA
pipelines) and resized to ``image_size`` × ``image_size`` (64) by Pillow's bilinear filter, which widens its support
when shrinking (anti-aliased, like torchvision's ``Resize`` on a PIL image). The crop's corner is that of
torchvision's ``CenterCrop``: ``round((218 − 148) / 2) = 35`` rows from the top, ``round((178 − 148) / 2) = 15``
columns from the left.

Splits: the official partition's 162,770 training images are the training set (``data.val_fraction`` of them the
validation set, as for every data set), its 19,962 test images the test set; its 19,867 validation images are not
used. Labels: CelebA has no class; every label is 0 (the optional attributes in ``list_attr_celeba.txt`` are not
read).

The decoded images are cached like every data set's; the cache is keyed on the partition file's contents and on
every image's name, size and modification time (a ``stat`` per file, as for ``data=image_folder``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.datasets import CelebA
from torchvision.datasets.utils import download_file_from_google_drive, extract_archive

from vaelab.data.fetched import FetchedDataModule, invalid
from vaelab.errors import DataFileError

log = logging.getLogger(__name__)

IMAGES = "img_align_celeba"
PARTITION = "list_eval_partition.txt"
PARTS = {True: "0", False: "2"}  # the partition's training and test sets (1, its validation set, is not used)
DECODE_VERSION = 1  # bump when the decoding changes (it is part of the cache key)
#: torchvision's Google Drive ids and MD5s of the two files read here
DRIVE = {name: (file_id, md5) for file_id, md5, name in CelebA.file_list if name in (f"{IMAGES}.zip", PARTITION)}


def centre_crop_box(width: int, height: int, size: int) -> tuple[int, int, int, int]:
    """The ``(left, top, right, bottom)`` of the centred ``size`` square, rounded as torchvision's CenterCrop."""
    left, top = int(round((width - size) / 2.0)), int(round((height - size) / 2.0))
    return left, top, left + size, top + size


class CelebADataModule(FetchedDataModule):
    """CelebA's aligned faces, centre-cropped and resized (see the module docstring).

    Args:
        crop_size: side of the centred square cut from each image before resizing (null: no crop, the whole image
            is resized, stretched).
        image_size: side of the square images served.
        *args, **kwargs: :class:`~vaelab.data.fetched.FetchedDataModule`'s.
    """

    name = "celeba"
    num_classes = 1
    class_names = ("face",)
    folder_name = CelebA.base_folder  # celeba
    expected_files = (PARTITION, f"{IMAGES}/")
    layout = "the aligned-and-cropped JPEGs unzipped from img_align_celeba.zip, and the evaluation partition"
    source = "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html (Google Drive: 'Align&Cropped Images', 'Eval')"

    def __init__(self, *args, crop_size: int | None = 148, image_size: int = 64, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for key, value in (("data.crop_size", crop_size), ("data.image_size", image_size)):
            if (value is not None or key == "data.image_size") and (
                    isinstance(value, bool) or not isinstance(value, int) or value < 1):
                allowed = "a positive integer, e.g. 148" if key == "data.crop_size" else "a positive integer, e.g. 64"
                raise invalid(key, value, allowed + (" (or null: no crop)" if key == "data.crop_size" else ""))
        self.crop_size, self.image_size = crop_size, int(image_size)
        self.image_shape = (3, self.image_size, self.image_size)

    def fetch(self) -> None:
        for name, (file_id, md5) in DRIVE.items():
            download_file_from_google_drive(file_id, str(self.folder), name, md5)
        extract_archive(str(self.folder / f"{IMAGES}.zip"))

    def source_files(self) -> list[Path]:
        return [self.folder / PARTITION]  # the images enter the cache key by their stat (cache_key)

    @functools.cached_property
    def partition(self) -> dict[str, list[str]]:
        """The image names of each part ("0", "1", "2"), in the file's order, read once."""
        path = self.folder / PARTITION
        parts: dict[str, list[str]] = {"0": [], "1": [], "2": []}
        for number, line in enumerate(path.read_text().splitlines(), 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 2 or fields[1] not in parts:
                raise DataFileError(f"{path}, line {number}: {line!r} is not '<image file> <0|1|2>': delete it and "
                                    "download it again")
            parts[fields[1]].append(fields[0])
        return parts

    def cache_key(self) -> list:
        self.download()  # (the images' folder is listed below: first the clear error when it is missing)
        stats = sorted([e.name, s.st_size, s.st_mtime_ns] for e in os.scandir(self.folder / IMAGES) for s in [e.stat()])
        digest = hashlib.sha1(json.dumps(stats).encode()).hexdigest()
        return [DECODE_VERSION, self.crop_size, self.image_size, digest]

    def read_split(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        names = self.partition[PARTS[train]]
        log.info("%s: decoding the %d %s images of %s (once; then cached)", self.name, len(names),
                 "train" if train else "test", self.folder / IMAGES)
        images = torch.empty((len(names), *self.image_shape), dtype=torch.uint8)
        for row, name in enumerate(names):
            images[row] = torch.from_numpy(self.decode(self.folder / IMAGES / name))
        return images, torch.zeros(len(names), dtype=torch.int64)

    def decode(self, path: Path) -> np.ndarray:
        """One JPEG as uint8 ``(3, image_size, image_size)``: centre crop, then resize."""
        if not path.is_file():
            raise DataFileError(f"{path} is listed in {self.folder / PARTITION} but is not there: unzip "
                                f"{IMAGES}.zip into {self.folder} again")
        try:
            with Image.open(path) as opened:
                image = opened.convert("RGB")
        except Exception as err:  # PIL raises UnidentifiedImageError, OSError, … for a damaged file
            raise DataFileError(f"cannot read the image file {path} ({type(err).__name__}: {err}): unzip "
                                f"{IMAGES}.zip into {self.folder} again") from err
        if self.crop_size is not None:
            if self.crop_size > min(image.size):
                raise invalid("data.crop_size", self.crop_size,
                              f"at most the images' shorter side ({min(image.size)} in {path.name}, "
                              f"{image.size[0]}x{image.size[1]})")
            image = image.crop(centre_crop_box(*image.size, self.crop_size))
        image = image.resize((self.image_size, self.image_size), Image.Resampling.BILINEAR)
        return np.array(image, dtype=np.uint8).transpose(2, 0, 1)
