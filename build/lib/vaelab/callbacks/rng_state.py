"""Exact resume: the random state at a checkpoint travels in the checkpoint and is put back when fitting resumes.

Lightning's checkpoints hold the weights, the optimizer, the loops' progress and the callbacks' states, but not
the global random number generators. A run resumed from ``last.ckpt`` is seeded again by ``seed_everything`` and so
replays the random numbers of the run's first epoch: the reparameterisation noise ε, the dynamic binarisation
draws, and the base seed a ``DataLoader`` draws from the global torch RNG each time an epoch's iterator is made.
:class:`RNGStateCallback` saves those generators' states with every checkpoint and restores them when fitting
resumes, so that (on the same hardware and software) a resumed run computes exactly what an uninterrupted one does.

When the state is taken and when it is put back:

- It is taken when the checkpoint is written (Lightning calls :meth:`RNGStateCallback.state_dict` then):
  ``ModelCheckpoint`` writes at the end of validation (or at the end of the training epoch when there is no
  validation that epoch), after every draw of that epoch. Nothing vaelab runs between that moment and the next
  epoch's first draw takes random numbers from the global generators (the dashboard callbacks fork theirs).
- It is put back when Lightning restores the callbacks on resuming a fit (:meth:`on_load_checkpoint`), before
  the next epoch's training data iterator is made (which, on the ``DataLoader`` path, draws from the torch RNG;
  a ``DataLoader`` with persistent workers draws only for its first iterator, which the callback accounts for).
  Lightning skips the sanity-check validation when it resumes (and runs it under ``isolate_rng`` anyway).
  Testing or validating a checkpoint (``trainer.test(ckpt_path=...)``) restores callbacks too; the random state
  is then left alone, so a test after a resumed fit draws what the test after an uninterrupted fit draws.

What is exact and what is not:

- A checkpoint written at the end of an epoch (``last.ckpt``, the best ``epoch_*.ckpt``) resumes exactly on the
  CPU. On a GPU the CUDA generator of the process's device is saved and restored too; whether the result is bit
  for bit the same also needs ``trainer.deterministic=true`` (cuDNN and atomics).
- A checkpoint written in the middle of an epoch (``every_n_train_steps``, or the ``hpc_ckpt_*.ckpt`` Lightning
  writes on SLURM's pre-emption signal) is restarted by Lightning at an epoch boundary it cannot replay exactly;
  the random state is restored all the same, but such a resume is not claimed to be exact.
- Under DDP the checkpoint is written by rank 0, so every rank restores rank 0's state. vaelab seeds every rank
  with the same seed (``seed_everything``), so the ranks' states are equal and this is the same thing.
"""

from __future__ import annotations

import logging
import random
from typing import Any

import numpy as np
import torch
from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.trainer.states import TrainerFn
from torch.utils.data import DataLoader

log = logging.getLogger(__name__)

FORMAT = 1


def collect_rng_states(cuda_device: torch.device | None = None) -> dict[str, Any]:
    """The states of the torch CPU, numpy and Python ``random`` generators (and of ``cuda_device``'s CUDA
    generator when given), as tensors and plain numbers only: a checkpoint holding them still loads with
    ``torch.load(..., weights_only=True)``."""
    version, mt, gauss = random.getstate()
    kind, key, pos, has_gauss, cached = np.random.get_state()
    states: dict[str, Any] = {
        "format": FORMAT,
        "torch": torch.get_rng_state(),
        "numpy": {"kind": str(kind), "key": torch.from_numpy(np.asarray(key, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": int(version), "state": torch.tensor(mt, dtype=torch.int64), "gauss": gauss},
    }
    if cuda_device is not None and cuda_device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(cuda_device)
    return states


def restore_rng_states(states: dict[str, Any], cuda_device: torch.device | None = None) -> None:
    """Put back what :func:`collect_rng_states` took; the CUDA state goes to ``cuda_device`` when both are there."""
    torch.set_rng_state(states["torch"])
    numpy_state = states["numpy"]
    np.random.set_state((numpy_state["kind"], numpy_state["key"].numpy().astype(np.uint32), numpy_state["pos"],
                         numpy_state["has_gauss"], numpy_state["cached_gaussian"]))
    python_state = states["python"]
    random.setstate((python_state["version"], tuple(python_state["state"].tolist()), python_state["gauss"]))
    if "cuda" in states:
        if cuda_device is not None and cuda_device.type == "cuda":
            torch.cuda.set_rng_state(states["cuda"], cuda_device)
        else:
            log.warning("The checkpoint holds a CUDA random state but this run is not on a GPU: it is not restored")


class RNGStateCallback(Callback):
    """Save the global random states with every checkpoint; restore them when a fit resumes from one.

    See the module's documentation for when the state is taken and put back, and for what is exact.
    """

    def __init__(self) -> None:
        super().__init__()
        self._trainer: Trainer | None = None
        # (DataLoaders with persistent workers, below) the states restored, until the resumed fit's first epoch;
        # whether its first validation is still to come, and the state before it
        self._resumed: dict[str, Any] | None = None
        self._validation_pending = False
        self._before_validation: dict[str, Any] | None = None

    @staticmethod
    def _device(trainer: Trainer) -> torch.device | None:
        strategy = getattr(trainer, "strategy", None)
        return getattr(strategy, "root_device", None) if strategy is not None else None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._trainer = trainer  # state_dict() is called without one

    def state_dict(self) -> dict[str, Any]:
        return collect_rng_states(self._device(self._trainer) if self._trainer is not None else None)

    def on_load_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        states = (checkpoint.get("callbacks") or {}).get(self.state_key)
        if trainer.state.fn != TrainerFn.FITTING:
            return  # testing or validating a checkpoint: the random numbers go on from where they are
        if not states:
            log.warning("The checkpoint holds no random state (written without %s): the resumed run draws other "
                        "random numbers than an uninterrupted run would", type(self).__name__)
            return
        restore_rng_states(states, self._device(trainer))
        self._resumed, self._validation_pending = states, True
        log.info("Restored the random state saved with the checkpoint (torch, numpy, python%s)",
                 ", cuda" if "cuda" in states else "")

    # ------------------------------------------------------------------ DataLoaders with persistent workers
    # A DataLoader draws its workers' base seed from the global torch RNG each time it makes an iterator. Without
    # persistent workers it makes one for every epoch (every validation), in an uninterrupted run as in a resumed
    # one, so the states match. With them (num_workers > 0 and persistent_workers: vaelab's loader=dataloader with
    # workers) it makes one per fit: the uninterrupted run made its training iterator in epoch 0 and its
    # validation iterator in the sanity check (under isolate_rng: no draw that counts) or its first validation,
    # while the resumed run makes both again, each drawing once more than the uninterrupted run does at that
    # point. Those two draws are undone here (vaelab's workers draw no random numbers of their own, so the seeds
    # they are given change nothing else).

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """The resumed fit's first epoch: its training iterator has just been made (and drawn)."""
        states, self._resumed = self._resumed, None
        if states is not None and _keeps_its_workers(trainer.train_dataloader):
            restore_rng_states(states, self._device(trainer))

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        """Until the resumed fit's first validation: the state before its validation iterator is made."""
        if self._validation_pending and _keeps_its_workers(trainer.val_dataloaders):
            self._before_validation = collect_rng_states(self._device(trainer))

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """The resumed fit's first validation: its validation iterator has just been made (and drawn)."""
        if not self._validation_pending or trainer.sanity_checking:
            return
        states, self._before_validation, self._validation_pending = self._before_validation, None, False
        if states is not None:
            restore_rng_states(states, self._device(trainer))


def _keeps_its_workers(loaders: Any) -> bool:
    """Whether the training loaders (a loader, or a list or dict of them) include a ``DataLoader`` that keeps its
    worker processes from epoch to epoch and draws its base seed from the global RNG (it has no generator)."""
    if isinstance(loaders, DataLoader):
        return loaders.num_workers > 0 and loaders.persistent_workers and loaders.generator is None
    if isinstance(loaders, dict):
        loaders = list(loaders.values())
    return isinstance(loaders, (list, tuple)) and any(_keeps_its_workers(loader) for loader in loaders)
