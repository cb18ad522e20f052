"""Reading a pickle that should hold only plain data (CIFAR-10's batches), without running anything it names.

A pickle is a program: each global it names (``GLOBAL``/``STACK_GLOBAL``, ``INST``, ``OBJ``) is imported and may be
called (``REDUCE``), so a file whose object has a ``__reduce__`` returning ``(os.system, ("…",))`` runs that command
when loaded by :func:`pickle.load`. Python's documented defence ("Restricting Globals", the :mod:`pickle` docs) is an
:class:`pickle.Unpickler` whose :meth:`~pickle.Unpickler.find_class` returns only allowed globals: every other one is
refused when it is named, before anything could call it. Containers (dict, list, tuple), numbers, ``str`` and
``bytes`` are built by opcodes of their own and need no global; a numpy array needs three (its reconstructor, the
``ndarray`` class and ``dtype``), which is all :data:`ARRAY_GLOBALS` allows. Persistent ids are refused by the
Unpickler's default.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from vaelab.errors import DataFileError

#: the globals a pickled numpy array names (numpy 1 and numpy 2 module paths): all an allowed pickle may name
ARRAY_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): np.ndarray.__reduce__(np.zeros(0))[0],
    ("numpy._core.multiarray", "_reconstruct"): np.ndarray.__reduce__(np.zeros(0))[0],
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class RefusedGlobal(pickle.UnpicklingError):
    """A pickle named a global outside the allowed ones."""

    def __init__(self, module: str, name: str) -> None:
        super().__init__(f"{module}.{name}")
        self.module, self.name = module, name


class ArrayUnpickler(pickle.Unpickler):
    """An Unpickler that builds only containers, numbers, strings, bytes and numpy arrays (:data:`ARRAY_GLOBALS`)."""

    def find_class(self, module: str, name: str) -> Any:
        allowed = ARRAY_GLOBALS.get((module, name))
        if allowed is None:
            raise RefusedGlobal(module, name)
        return allowed


def load_data_pickle(path: str | Path, encoding: str = "latin1") -> Any:
    """The object pickled in ``path`` when it holds only plain data and numpy arrays; otherwise a
    :class:`~vaelab.errors.DataFileError` naming the file and the global it refused (nothing of it is run).

    ``encoding`` decodes Python 2 ``str`` (CIFAR-10's batches were pickled by Python 2): ``latin1`` maps every byte
    to one character, which numpy's array reconstruction needs.
    """
    path = Path(path)
    data = path.read_bytes()
    try:
        return ArrayUnpickler(io.BytesIO(data), encoding=encoding).load()
    except RefusedGlobal as err:
        raise DataFileError(
            f"{path}: refused to unpickle it: it names the global {err.module}.{err.name}, and a data file may "
            f"only name {', '.join(sorted({'.'.join(k) for k in ARRAY_GLOBALS}))} (plain data and numpy arrays). "
            f"It is not the publisher's file and may be harmful: nothing of it was run. Delete it and download "
            f"the data set again"
        ) from None
    except Exception as err:  # UnpicklingError, EOFError, ValueError, … : a damaged file
        raise DataFileError(
            f"{path} is not a readable pickle ({type(err).__name__}: {err}): the file is damaged or truncated; "
            f"delete it and download the data set again"
        ) from err
