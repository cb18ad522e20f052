"""A user's own images: a folder of image files, flat or with one sub-folder per class.

Layout (the rule :meth:`ImageFolderDataModule.listing` applies):

- ``folder/<class>/**/*.png``: each sub-folder that holds images (at any depth) is a class, named after it; classes
  are sorted by name and numbered from 0, as torchvision's ``ImageFolder`` does. Sub-folders without images are
  ignored; image files lying beside the class folders are an error (ambiguous).
- ``folder/*.png`` with no class sub-folders: one class, ``all``, label 0.

Image files are PNG, JPEG, BMP, GIF (first frame), WebP, TIFF and PPM/PGM, by their suffix (any case); names starting
with ``.`` (hidden files and folders) are skipped. Each image is turned upright by its EXIF orientation, brought to 8
bits by scaling (:func:`to_8bit`: a 16-bit grey image's 0…65535 to 0…255, not clipped at 255), put on black where it
is transparent (alpha, or a palette's transparent entry), converted to ``mode`` (``grey``: 1 channel, ``rgb``: 3),
and brought to ``image_size`` by ``fit``: ``crop`` scales it so that it covers the target and cuts the centre (no
distortion), ``resize`` stretches it.

Test split: the ``ceil(test_fraction · N)`` files whose relative paths have the lowest SHA-1 (salted with a fixed
seed) are the test set, the rest the training set (val is ``val_fraction`` of it, as for every data set). A file's
side depends only on its own name and the count, so adding or removing images moves at most a few others across.

Cache: the decoded tensors are cached in ``<data_dir>/vaelab_cache/`` like every data set's, keyed on the folder's
absolute path, the settings above, and every image's relative path, size and modification time. Only a ``stat`` per
file, not the contents: hashing a folder of photos (gigabytes) would cost seconds to minutes at every start, and an
edited, added, removed or renamed image changes the key all the same. What a stat key misses is a file replaced by
one of the same size and modification time (``cp -p`` of other data of equal size); with ``hash_contents=true`` the
contents are hashed too (SHA-1 of every file, as the MNIST-family sets do).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from vaelab.data.base import ImageDataModule
from vaelab.errors import ConfigError, DataFileError, DataNotFoundError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
MODES = {"grey": "L", "rgb": "RGB"}
FITS = ("crop", "resize")
TEST_SPLIT_SEED = 0  # fixed: the test set is part of the data set's definition, not of a run's config
DECODE_VERSION = 2  # bump when the decoding changes (it is part of the cache key)
#: Pillow's modes of 16-bit grey images (PNG, TIFF, PGM with more than 8 bits per sample)
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


def to_8bit(image: Image.Image, path: Path) -> Image.Image:
    """``image`` with samples of more than 8 bits scaled to 8 (Pillow's own ``convert`` clips them at 255).

    - 16-bit grey (``I;16…``) and 32-bit integer (``I``, which Pillow also gives 16-bit files) images: 0…65535 to
      0…255 (v / 257, rounded); ``I`` values outside 0…65535 are an error naming the file.
    - floating-point (``F``) images: intensities in [0, 1] to 0…255; values outside [0, 1] are an error.
    - everything else is returned as it is: Pillow already reads 16-bit RGB, RGBA and grey-with-alpha PNGs as
      8-bit ``RGB``, ``RGBA`` and ``LA``, scaled.
    """
    if image.mode not in (*SIXTEEN_BIT_MODES, "I", "F"):
        return image
    values = np.asarray(image, dtype=np.float64)
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if image.mode == "F":
        if low < 0 or high > 1:
            raise DataFileError(f"the image file {path} holds floating-point values from {low:g} to {high:g}; vaelab "
                                "reads float images as intensities in [0, 1]: rescale it, or save it with 8 or 16 bits")
        scaled = values * 255.0
    else:
        if low < 0 or high > 65535:
            raise DataFileError(f"the image file {path} holds integer values from {low:g} to {high:g}, beyond the "
                                "16-bit range 0…65535 vaelab scales from: save it with 8 or 16 bits per sample")
        scaled = values / 257.0
    return Image.fromarray(np.rint(scaled).astype(np.uint8))


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".") and path.is_file()


def _images_under(folder: Path) -> list[Path]:
    """Image files anywhere under ``folder``, hidden files and folders skipped, sorted."""
    found = []
    for parent, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [p for p in (Path(parent) / f for f in files) if _is_image(p)]
    return sorted(found)


def _size(image_size: int | list[int]) -> tuple[int, int]:
    if isinstance(image_size, int) and not isinstance(image_size, bool):
        size = (image_size, image_size)
    else:
        size = tuple(image_size) if not isinstance(image_size, (str, bool)) else ()
    if len(size) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in size):
        raise ConfigError(f"data.image_size must be a positive integer or [height, width], got {image_size!r}")
    return size


class ImageFolderDataModule(ImageDataModule):
    """Images from a folder of one's own (see the module docstring for the layout, split and cache rules).

    Args:
        folder: the folder of images (relative paths are taken from the directory the run starts in).
        image_size: side of the square images, or ``[height, width]``.
        mode: ``grey`` or ``rgb``.
        fit: ``crop`` (scale to cover, cut the centre) or ``resize`` (stretch).
        test_fraction: fraction of the files held out as the test set.
        hash_contents: key the cache on the files' contents too, not only on their names, sizes and times.
        *args, **kwargs: :class:`~vaelab.data.base.ImageDataModule`'s.
    """

    name = "image_folder"

    def __init__(
        self,
        *args,
        folder: str | os.PathLike | None = None,
        image_size: int | list[int] = 64,
        mode: str = "rgb",
        fit: str = "crop",
        test_fraction: float = 0.1,
        hash_contents: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        if folder is None or str(folder).strip() in ("", "???"):
            raise ConfigError("data=image_folder needs the folder of images: data.folder=/path/to/images")
        if mode not in MODES:
            raise ConfigError(f"unknown data.mode={mode!r}: choose one of {', '.join(MODES)}")
        if fit not in FITS:
            raise ConfigError(f"unknown data.fit={fit!r}: choose one of {', '.join(FITS)}")
        if not 0.0 <= float(test_fraction) < 1.0:
            raise ConfigError(f"data.test_fraction must be in [0, 1), got {test_fraction}")
        self.folder = Path(folder).expanduser().absolute()
        self.size, self.mode, self.fit = _size(image_size), mode, fit
        self.test_fraction, self.hash_contents = float(test_fraction), bool(hash_contents)
        self.image_shape = (1 if mode == "grey" else 3, *self.size)

    # ------------------------------------------------------------------ the files
    @functools.cached_property
    def listing(self) -> tuple[list[Path], list[int], tuple[str, ...]]:
        """The image files (sorted by class, then path), their labels and the class names, read once."""
        root = self.folder
        fix = "set data.folder to a folder of image files, or of one sub-folder of them per class"
        if not root.is_dir():
            raise DataNotFoundError(f"the image folder {root} does not exist or is not a folder: {fix}")
        loose = sorted(p for p in root.iterdir() if _is_image(p))
        classes = {}
        for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            files = _images_under(sub)
            if files:
                classes[sub.name] = files
        if classes and loose:
            raise ConfigError(
                f"{root} holds both class sub-folders ({', '.join(classes)}) and {len(loose)} image files beside "
                f"them (e.g. {loose[0].name}): move those into a class folder, or remove the sub-folders"
            )
        if not classes and not loose:
            raise DataNotFoundError(
                f"no image files ({', '.join(IMAGE_SUFFIXES)}) in {root} or its sub-folders: {fix}"
            )
        if not classes:
            return loose, [0] * len(loose), ("all",)
        files = [f for group in classes.values() for f in group]
        labels = [i for i, group in enumerate(classes.values()) for _ in group]
        return files, labels, tuple(classes)

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.listing[2]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def download(self) -> None:
        _ = self.listing  # nothing to fetch: only the clear error of a missing or empty folder, early

    def source_files(self) -> list[Path]:
        return list(self.listing[0]) if self.hash_contents else []

    def split_settings(self) -> str:
        return "data.test_fraction or data.val_fraction"

    def training_part(self, n_images: int) -> str:
        files = self.listing[0]
        return (f"{len(files)} image files in {self.folder}: data.test_fraction={self.test_fraction} holds out "
                f"{len(files) - n_images} for testing, leaving {n_images} training images")

    def cache_key(self) -> list:
        stats = []
        for f in self.listing[0]:
            stat = f.stat()
            stats.append([f.relative_to(self.folder).as_posix(), stat.st_size, stat.st_mtime_ns])
        files_digest = hashlib.sha1(json.dumps(stats).encode()).hexdigest()
        return [DECODE_VERSION, str(self.folder), *self.size, self.mode, self.fit, self.test_fraction,
                TEST_SPLIT_SEED, files_digest]

    # ------------------------------------------------------------------ the data set
    def _test_mask(self, files: list[Path]) -> np.ndarray:
        keys = [hashlib.sha1(f"{TEST_SPLIT_SEED}:{f.relative_to(self.folder).as_posix()}".encode()).hexdigest()
                for f in files]
        n_test = math.ceil(self.test_fraction * len(files))
        mask = np.zeros(len(files), dtype=bool)
        mask[np.argsort(keys, kind="stable")[:n_test]] = True
        return mask

    def load_split(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        files, labels, _ = self.listing
        chosen = np.flatnonzero(self._test_mask(files) != train)
        log.info("%s: decoding %d images from %s", self.name, len(chosen), self.folder)
        images = torch.empty((len(chosen), *self.image_shape), dtype=torch.uint8)
        for row, i in enumerate(chosen):
            images[row] = torch.from_numpy(self._decode(files[i]))
        return images, torch.tensor([labels[i] for i in chosen], dtype=torch.int64)

    def _decode(self, path: Path) -> np.ndarray:
        """One image file as uint8 ``(C, H, W)``."""
        height, width = self.size
        try:
            with Image.open(path) as opened:
                image = to_8bit(ImageOps.exif_transpose(opened), path)
                if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
                    image = Image.alpha_composite(Image.new("RGBA", image.size, "black"), image.convert("RGBA"))
                image = image.convert(MODES[self.mode])
                if self.fit == "crop":
                    image = ImageOps.fit(image, (width, height), Image.Resampling.BICUBIC)
                else:
                    image = image.resize((width, height), Image.Resampling.BICUBIC)
                array = np.array(image, dtype=np.uint8)
        except DataFileError:
            raise
        except Exception as err:  # PIL raises UnidentifiedImageError, OSError, ValueError, SyntaxError, ...
            raise DataFileError(
                f"cannot read the image file {path} ({type(err).__name__}: {err}): replace it with a readable image "
                f"or remove it from {self.folder}"
            ) from err
        return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
