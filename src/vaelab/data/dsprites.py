"""dSprites (Matthey, Higgins, Hassabis & Lerchner 2017, "dSprites: disentanglement testing sprites dataset"; used
by Higgins et al. 2017, "β-VAE", sec. 4) from the publisher's file
``<data_dir>/dsprites/dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz``: 737,280 binary 64×64 images, the full grid
of six factors,

    color (1: white), shape (3: square, ellipse, heart), scale (6), orientation (40), posX (32), posY (32),

``imgs`` uint8 ``(N, 64, 64)`` of 0/1 and ``latents_classes`` int64 ``(N, 6)``, their indices; row n of the file is
the mixed-radix index of its factors over the sizes 1, 3, 6, 40, 32, 32. Read with ``numpy.load`` and
``allow_pickle=False`` (the file's ``metadata`` entry, a pickled object, is never read). Images become 0/255.
Splits, factor sizes and ``render``: :mod:`vaelab.data.factor_grid`. The constant colour is kept as a factor, as in
the file; the metrics leave a factor with one value out (it carries no information).

For the same factors rendered here, without a download and at any size, see ``data=shapes``
(:mod:`vaelab.data.shapes`).
"""

from __future__ import annotations

import numpy as np
from torchvision.datasets.utils import download_url

from vaelab.data.factor_grid import FactorGridDataModule
from vaelab.errors import DataFileError

FILE = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
URL = f"https://github.com/deepmind/dsprites-dataset/raw/master/{FILE}"


class DSpritesDataModule(FactorGridDataModule):
    """dSprites, the publisher's file (see the module docstring)."""

    name = "dsprites"
    image_shape = (1, 64, 64)
    binary_images = True
    factor_names = ("color", "shape", "scale", "orientation", "posX", "posY")
    official_sizes = (1, 3, 6, 40, 32, 32)
    value_names = {"shape": ("square", "ellipse", "heart")}
    folder_name = "dsprites"
    expected_files = (FILE,)
    layout = "the publisher's npz file, unchanged"
    source = "https://github.com/deepmind/dsprites-dataset"

    def fetch(self) -> None:
        download_url(URL, str(self.folder), filename=FILE)

    def read_grid(self) -> tuple[np.ndarray, np.ndarray]:
        path = self.folder / FILE
        try:
            with np.load(path, allow_pickle=False) as npz:
                imgs, factors = npz["imgs"], npz["latents_classes"]
        except Exception as err:  # zipfile.BadZipFile, KeyError, ValueError, OSError for a damaged file
            raise DataFileError(f"cannot read imgs and latents_classes from {path} ({type(err).__name__}: {err}): "
                                "delete it and download it again") from err
        if imgs.shape[1:] != self.image_shape[1:] or factors.shape != (len(imgs), len(self.factor_names)):
            raise DataFileError(f"{path}: imgs {imgs.shape} and latents_classes {factors.shape} are not (N, 64, 64) "
                                "and (N, 6): delete it and download it again")
        if imgs.dtype != np.uint8 or imgs.max(initial=0) > 1:
            raise DataFileError(f"{path}: imgs are not the binary 0/1 uint8 images of dSprites: delete it and "
                                "download it again")
        return imgs, factors.astype(np.int64)

    def to_images(self, raw: np.ndarray) -> np.ndarray:
        return raw[:, None] * np.uint8(255)
