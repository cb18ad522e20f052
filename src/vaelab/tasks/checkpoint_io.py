"""Checkpoint files written whole or not at all, and read without running pickled code.

Lightning's ``TorchCheckpointIO`` opens the checkpoint under its real name and writes into it, so a full disk or a
process killed while saving leaves a truncated ``last.ckpt`` or ``epoch_….ckpt`` that a resume then trips over.
:class:`AtomicCheckpointIO` (installed by the training task on every trainer) writes a hidden temporary file beside
it and renames it into place, which is atomic on a POSIX file system: a checkpoint name holds either the old file
or the new one. When the write fails (no space left, a folder that became read-only), the temporary file is
removed (giving back the space it took, so that the run's record can still be written) and the run stops with one
:class:`CheckpointWriteError` naming the file, the reason and the fix.

Ctrl-C (or another ``KeyboardInterrupt``/``SystemExit``) during a write stops it the same way, the temporary file
removed and the checkpoint under that name left as it was; the interrupt is raised as itself, so the run is
``interrupted``. (``torch.save`` reports an interrupt inside its zip writer as an internal ``RuntimeError``,
``unexpected pos …``, raised while handling it: taken for an error, that made the run ``failed``.)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.cloud_io import _is_local_file_protocol
from lightning.pytorch.plugins.io import TorchCheckpointIO

from vaelab.errors import VaelabError


class CheckpointWriteError(VaelabError, OSError):
    """A checkpoint could not be written (full disk, unwritable folder); the message says which and what to do."""


def write_error(path: Path, err: OSError) -> CheckpointWriteError:
    reason = err.strerror or str(err) or type(err).__name__
    return CheckpointWriteError(
        f"Cannot write the checkpoint {path}: {reason}. Nothing was left half-written (checkpoints are written to a "
        "temporary file and renamed), so the checkpoints saved before are intact. Free space on that disk or make "
        "the folder writable, or give another folder: callbacks.model_checkpoint.dirpath=<folder> (or "
        "paths.log_dir=<folder> for the whole run)"
    )


def _in_chain(err: BaseException | None, kind: type | tuple[type, ...]) -> BaseException | None:
    """The first of ``err`` and the errors it was raised from or while handling that is a ``kind``, if any."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, kind):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def _os_error(err: BaseException | None) -> OSError | None:
    """The ``OSError`` that ``err`` is or was raised from, if any."""
    return _in_chain(err, OSError)


def _interrupt(err: BaseException) -> BaseException | None:
    """The Ctrl-C (``KeyboardInterrupt``) or exit (``SystemExit``, Lightning's SIGTERM) that ``err`` is or was
    raised while handling, if any: what stopped the write, whatever torch's zip writer made of it."""
    return _in_chain(err, (KeyboardInterrupt, SystemExit))


def _remove(tmp: Path) -> None:
    """Remove the temporary file of a write that did not finish, also when a second Ctrl-C arrives meanwhile (that
    one is raised once the file is gone)."""
    try:
        _unlink(tmp)
    except KeyboardInterrupt:
        _unlink(tmp)
        raise


def _unlink(tmp: Path) -> None:
    try:
        tmp.unlink(missing_ok=True)
    except OSError:
        pass


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` that writes local checkpoints atomically (a temporary file, then a rename) and loads
    with ``weights_only=True`` unless told otherwise (tensors and plain values only: no pickled code)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or not _is_local_file_protocol(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as stream:  # (a Python file: a failed write is an OSError with its errno)
                torch.save(checkpoint, stream)
            os.replace(tmp, path)
        except BaseException as err:
            _remove(tmp)
            interrupt = _interrupt(err)
            if interrupt is not None and interrupt is not err:
                raise interrupt from None  # (Ctrl-C, not torch's zip error about it: the run is interrupted)
            cause = _os_error(err)  # (torch.save reports a failed write as a RuntimeError raised from it)
            if cause is None or interrupt is not None:
                raise
            raise write_error(path, cause) from None

    def load_checkpoint(self, path: Any, map_location: Any = lambda storage, loc: storage,
                        weights_only: bool | None = None) -> dict:
        return super().load_checkpoint(path, map_location=map_location,
                                       weights_only=True if weights_only is None else weights_only)
