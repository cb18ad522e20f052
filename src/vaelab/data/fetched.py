"""Data sets read from their publishers' own files: which files, in which folder, fetching them when missing, and
the one message when they are neither there nor downloadable.

The rule, as for ``data=mnist`` (:mod:`vaelab.data.torchvision_sets`): before anything is read, every expected file
must be in ``<data_dir>/<folder>/``; when some are missing and ``data.download`` is true, the publisher's files are
fetched (torchvision's download helpers, which check the MD5 where one is known); when they still are not there, the
run stops with a :class:`~vaelab.errors.DataNotFoundError` that lists every expected file by its full path and says
where to get them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from vaelab.data.base import ImageDataModule
from vaelab.errors import ConfigError, DataNotFoundError


def invalid(key: str, value: Any, allowed: str) -> ConfigError:
    """The error of a bad setting, worded as :func:`vaelab.rules.problem` words it: the key, the value, what is
    allowed."""
    return ConfigError(f"{key} = {value!r} is invalid: it must be {allowed}")


def check_fraction(key: str, value: Any) -> float:
    """``value`` as a float in [0, 1), or the :func:`invalid` error naming ``key``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) < 1.0:
        raise invalid(key, value, "a number in [0, 1), e.g. 0.1")
    return float(value)


def missing_files_error(name: str, folder: Path, files: list[str], reason: str, layout: str,
                        source: str) -> DataNotFoundError:
    """The message of a data set whose files are not all in ``folder``: which, why they were not fetched, where
    they come from, and the ways out (another ``data.data_dir``, or the embedded ``data=digits``)."""
    listed = "\n".join(f"  {folder / f}" for f in files)
    return DataNotFoundError(
        f"{name} is not in {folder} and {reason}.\n"
        f"Put these files there ({layout}; from {source}):\n{listed}\n"
        f"or point data.data_dir at the folder that holds {folder.name}/, "
        f"or train on the embedded data set with data=digits."
    )


class FetchedDataModule(ImageDataModule):
    """An :class:`~vaelab.data.base.ImageDataModule` whose data are files in ``<data_dir>/<folder_name>/``.

    A subclass names its files (``expected_files``, relative to that folder; a name ending in ``/`` is a folder that
    must hold at least one file), says what they are (``layout``) and where they come from (``source``), fetches
    them (:meth:`fetch`) and reads a split of them (:meth:`read_split`).

    Args:
        download: fetch missing files from the publisher (``data.download``).
        *args, **kwargs: :class:`~vaelab.data.base.ImageDataModule`'s.
    """

    folder_name: str = ""
    expected_files: tuple[str, ...] = ()
    layout: str = "the publisher's files, unchanged"
    source: str = "the publisher's page"

    def __init__(self, *args, download: bool = True, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.allow_download = bool(download)

    @property
    def folder(self) -> Path:
        return self.data_dir / self.folder_name

    @property
    def title(self) -> str:
        """What the messages call the data set (its ``name`` unless a subclass says otherwise)."""
        return self.name

    def _present(self, entry: str) -> bool:
        path = self.folder / entry
        if entry.endswith("/"):
            return path.is_dir() and any(p.is_file() for p in path.iterdir())
        return path.is_file()

    def missing(self) -> list[str]:
        """The expected files (and folders) not in :attr:`folder`."""
        return [f for f in self.expected_files if not self._present(f)]

    def source_files(self) -> list[Path]:
        return [self.folder / f for f in self.expected_files if not f.endswith("/")]

    def fetch(self) -> None:
        """Download the publisher's files into :attr:`folder` (raises when it cannot)."""
        raise NotImplementedError

    def download(self) -> None:
        """Fetch the files if some are missing; the clear error when they still are."""
        if not self.missing():
            return
        reason = "downloading is switched off (data.download=false)"
        if self.allow_download:
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
                self.fetch()
            except Exception as err:  # torchvision raises RuntimeError, URLError, OSError, depending on the failure
                lines = [line.strip() for line in str(err).splitlines() if line.strip()]
                reason = f"the download failed ({' '.join(lines[-2:]) if lines else type(err).__name__})"
            else:
                if not self.missing():
                    return
                reason = f"the download did not bring {', '.join(self.missing())}"
        raise missing_files_error(self.title, self.folder, list(self.expected_files), reason, self.layout,
                                  self.source)

    def read_split(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """The training (or test) images as uint8 ``(N, C, H, W)`` and their labels, from files known to be
        there."""
        raise NotImplementedError

    def load_split(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        self.download()  # no-op when present; on a rank that skipped prepare_data, the same clear error
        return self.read_split(train)
