"""3D Shapes (Burgess & Kim 2018, "3D Shapes Dataset"; used by Kim & Mnih 2018, "Disentangling by Factorising",
sec. 4) from the publisher's file ``<data_dir>/shapes3d/3dshapes.h5``: 480,000 RGB 64×64 images, the full grid of
six factors,

    floor_hue (10), wall_hue (10), object_hue (10), scale (8), shape (4), orientation (15),

``images`` uint8 ``(N, 64, 64, 3)`` and ``labels`` float64 ``(N, 6)``, each factor's value (hues in [0, 1), scale in
[0.75, 1.25], shape 0–3, orientation in [−30, 30] degrees). A factor's index is the rank of its value among the
factor's distinct values in the file (``numpy.unique``), so indices follow the values' order. Read with h5py (an
optional dependency: ``pip install h5py``). Splits, factor sizes and ``render``: :mod:`vaelab.data.factor_grid`.
"""

from __future__ import annotations

import importlib.util

import numpy as np
from torchvision.datasets.utils import download_url

from vaelab.data.factor_grid import FactorGridDataModule
from vaelab.errors import DataFileError

FILE = "3dshapes.h5"
URL = f"https://storage.googleapis.com/3d-shapes/{FILE}"
MISSING_H5PY = "data=shapes3d reads 3dshapes.h5 with h5py, which is not installed: pip install h5py"


def value_indices(values: np.ndarray) -> np.ndarray:
    """Float factor values ``(N, F)`` to int64 indices: each value's rank among its column's distinct values."""
    return np.stack([np.unique(column, return_inverse=True)[1].reshape(-1) for column in values.T], axis=1)


class Shapes3DDataModule(FactorGridDataModule):
    """3D Shapes, the publisher's file (see the module docstring)."""

    name = "shapes3d"
    image_shape = (3, 64, 64)
    factor_names = ("floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation")
    official_sizes = (10, 10, 10, 8, 4, 15)
    value_names = {"shape": ("cube", "cylinder", "sphere", "capsule")}
    folder_name = "shapes3d"
    expected_files = (FILE,)
    layout = "the publisher's HDF5 file, unchanged"
    source = "https://github.com/deepmind/3d-shapes"

    def __init__(self, *args, **kwargs) -> None:
        if importlib.util.find_spec("h5py") is None:  # (before anything is read: the one early error)
            raise ImportError(MISSING_H5PY)
        super().__init__(*args, **kwargs)

    def fetch(self) -> None:
        download_url(URL, str(self.folder), filename=FILE)

    def read_grid(self) -> tuple[np.ndarray, np.ndarray]:
        import h5py  # (an optional dependency: imported only here)

        path = self.folder / FILE
        try:
            with h5py.File(path, "r") as f:
                images, values = f["images"][()], f["labels"][()]
        except Exception as err:  # OSError, KeyError for a damaged or foreign file
            raise DataFileError(f"cannot read images and labels from {path} ({type(err).__name__}: {err}): delete "
                                "it and download it again") from err
        if images.dtype != np.uint8 or images.shape[1:] != (64, 64, 3) or values.shape != (len(images), 6):
            raise DataFileError(f"{path}: images {images.dtype} {images.shape} and labels {values.shape} are not "
                                "uint8 (N, 64, 64, 3) and (N, 6): delete it and download it again")
        return images, value_indices(values).astype(np.int64)

    def to_images(self, raw: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(raw.transpose(0, 3, 1, 2))
