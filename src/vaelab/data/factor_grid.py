"""Data sets published as the full grid of their generative factors (dSprites, 3D Shapes): every combination of
factor values exactly once, each image labelled with its factor indices. What they share: the test split, the
factors the disentanglement metrics read (``factor_sizes``, ``factor_names``) and the images of any chosen
combination (``render``, as :class:`~vaelab.data.shapes.ShapesDataModule` has; :mod:`vaelab.metrics.factors`).

- Factor sizes: ``K_k = 1 + max`` of factor k's indices over the file. The file must hold the whole product
  ``∏_k K_k`` of combinations, each once (checked when it is read: otherwise a ``DataFileError`` naming the file).
- Test split: a fixed, seeded ``test_fraction`` of the images (the data sets have no official one).
- ``render``: the image of combination ``(v_1, …, v_F)`` is the one at the mixed-radix index
  ``Σ_k v_k ∏_{l>k} K_l`` of the grid (``numpy.ravel_multi_index`` over the factor sizes), looked up among the
  train, val and test images already in memory (which together are the whole grid): no second copy of the data.

Labels: the factor indices of each image, int64 ``(N, F)``; ``color_by`` names the factor whose index colours plots
(:meth:`~vaelab.data.base.ImageDataModule.class_labels`).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from vaelab.data.fetched import FetchedDataModule, check_fraction, invalid
from vaelab.errors import DataFileError

TEST_SPLIT_SEED = 0  # fixed: the test set is part of the data set's definition, not of a run's config
SPLITS = ("train", "val", "test")


def grid_sizes(factors: np.ndarray, path: Path) -> tuple[int, ...]:
    """The factor sizes of ``factors`` ``(N, F)``, checked to be the whole grid, each combination once."""
    if factors.ndim != 2 or len(factors) == 0 or factors.min() < 0:
        raise DataFileError(f"{path}: its factor labels are not (N, F) indices >= 0: delete it and download it again")
    sizes = tuple(int(m) + 1 for m in factors.max(axis=0))
    flat = np.ravel_multi_index(tuple(factors.T), sizes)
    distinct = len(np.unique(flat))
    if len(factors) != math.prod(sizes) or distinct != len(factors):
        raise DataFileError(
            f"{path}: its {len(factors):,} images are not the full grid of factor sizes {sizes} "
            f"({math.prod(sizes):,} combinations, {distinct:,} of them present): the file is not the publisher's "
            "whole data set; delete it and download it again"
        )
    return sizes


class FactorGridDataModule(FetchedDataModule):
    """A full factor grid read from the publisher's file (see the module docstring).

    A subclass names its factors (``factor_names``; ``official_sizes``, the publisher's counts, for names before
    the data are read), reads the file (:meth:`read_grid`) and turns chosen rows of its images into uint8
    ``(n, C, H, W)`` (:meth:`to_images`).

    Args:
        test_fraction: fraction of the images held out as the test set, chosen with a fixed seed.
        color_by: the factor whose value index is each image's class for colouring plots.
        *args, **kwargs: :class:`~vaelab.data.fetched.FetchedDataModule`'s.
    """

    factor_names: tuple[str, ...] = ()
    official_sizes: tuple[int, ...] = ()
    #: names of the values of some factors (e.g. dSprites' shapes), for plots
    value_names: dict[str, tuple[str, ...]] = {}

    def __init__(self, *args, test_fraction: float = 0.1, color_by: str = "shape", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.test_fraction = check_fraction("data.test_fraction", test_fraction)
        if color_by not in self.factor_names:
            raise invalid("data.color_by", color_by, f"one of: {', '.join(self.factor_names)}")
        self.color_by = color_by
        self.color_index = self.factor_names.index(color_by)
        self._lookup: tuple[tuple[int, ...], np.ndarray, np.ndarray] | None = None

    # ------------------------------------------------------------------ reading
    def read_grid(self) -> tuple[np.ndarray, np.ndarray]:
        """The file's images (in its own layout: :meth:`to_images` converts chosen rows) and factor indices
        ``(N, F)`` int64."""
        raise NotImplementedError

    def to_images(self, raw: np.ndarray) -> np.ndarray:
        """Rows of :meth:`read_grid`'s images as uint8 ``(n, C, H, W)``."""
        raise NotImplementedError

    def cache_key(self) -> list:
        return [TEST_SPLIT_SEED, self.test_fraction]

    def split_settings(self) -> str:
        return "data.test_fraction or data.val_fraction"

    def test_mask(self, n: int) -> np.ndarray:
        """Which of the ``n`` images are in the test set: a seeded ``test_fraction`` of them."""
        mask = np.zeros(n, dtype=bool)
        mask[np.random.default_rng(TEST_SPLIT_SEED).permutation(n)[: round(self.test_fraction * n)]] = True
        return mask

    def read_split(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        raw, factors = self.read_grid()
        grid_sizes(factors, self.source_files()[0])
        chosen = np.flatnonzero(self.test_mask(len(factors)) != train)
        return torch.from_numpy(self.to_images(raw[chosen])), torch.from_numpy(factors[chosen])

    # ------------------------------------------------------------------ the factors, for the metrics
    def _grid(self) -> tuple[tuple[int, ...], np.ndarray, np.ndarray]:
        """(factor sizes, the split and the row of every grid index), from the splits in memory."""
        if self._lookup is None:
            if not self.splits:
                self.setup()
            labels = [self.splits[s][1].cpu().numpy() for s in SPLITS]
            sizes = grid_sizes(np.concatenate(labels), self.source_files()[0])
            split_of = np.empty(math.prod(sizes), dtype=np.int8)
            row_of = np.empty(math.prod(sizes), dtype=np.int64)
            for i, part in enumerate(labels):
                flat = np.ravel_multi_index(tuple(part.T), sizes)
                split_of[flat], row_of[flat] = i, np.arange(len(part))
            self._lookup = (sizes, split_of, row_of)
        return self._lookup

    @property
    def factor_sizes(self) -> tuple[int, ...]:
        """How many values each factor takes, as the file holds them (the data are read if they were not)."""
        return self._grid()[0]

    @property
    def num_classes(self) -> int:
        sizes = self._lookup[0] if self._lookup is not None else self.official_sizes
        return sizes[self.color_index]

    @property
    def class_names(self) -> tuple[str, ...]:
        names = self.value_names.get(self.color_by)
        return names[: self.num_classes] if names else tuple(str(i) for i in range(self.num_classes))

    def render(self, factor_indices: np.ndarray) -> torch.Tensor:
        """The images of any combinations, given as factor indices ``(n, F)``: uint8 ``(n, C, H, W)``, on the
        device of the splits."""
        sizes, split_of, row_of = self._grid()
        factors = np.asarray(factor_indices, dtype=np.int64).reshape(-1, len(sizes))
        if len(factors) and ((factors < 0).any() or (factors >= np.asarray(sizes)).any()):
            raise ValueError(f"factor indices out of range for factor sizes {sizes}")
        flat = np.ravel_multi_index(tuple(factors.T), sizes)
        device = self.splits["train"][0].device
        out = torch.empty((len(flat), *self.image_shape), dtype=torch.uint8, device=device)
        for i, split in enumerate(SPLITS):
            where = np.flatnonzero(split_of[flat] == i)
            if len(where):
                rows = torch.from_numpy(row_of[flat[where]]).to(device)
                out[torch.from_numpy(where).to(device)] = self.splits[split][0][rows]
        return out
