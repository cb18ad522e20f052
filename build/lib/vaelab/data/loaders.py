"""Which images each process sees in each epoch, and a batch loader over tensors already in memory.

Both ways of serving data (:class:`TensorBatchLoader` and a ``DataLoader`` with :class:`ShardSampler`) take their
order from :func:`epoch_indices`, so they keep one contract: the same images, in the same order, on the same rank.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DistributedSampler


def permutation_seed(seed: int, epoch: int) -> int:
    """The seed of epoch ``epoch``'s permutation: ``seed`` and ``epoch`` mixed by numpy's ``SeedSequence``, so that
    runs with neighbouring seeds do not see shifted copies of one sequence of orders (as ``seed + epoch`` would)."""
    return int(np.random.SeedSequence([int(seed), int(epoch)]).generate_state(1, dtype=np.uint64)[0] >> 1)


def epoch_indices(
    n: int, shuffle: bool, seed: int = 0, epoch: int = 0, rank: int = 0, world_size: int = 1, pad: bool = True
) -> torch.Tensor:
    """The indices, out of ``n``, that rank ``rank`` of ``world_size`` serves in epoch ``epoch``.

    With ``shuffle`` the order is a fresh permutation each epoch (drawn from ``seed`` and ``epoch`` only, so a
    resumed run sees the same order), shared by all ranks; otherwise it is ``0 … n-1``. Each rank takes every
    ``world_size``-th index from its rank on, as ``DistributedSampler`` does. With ``pad`` (what training needs:
    every process must take the same number of steps) the order is first extended by repeating it, as
    ``DistributedSampler`` does, so every shard has the same length; without it (evaluation) every index is served
    exactly once and shards may differ in length by one.
    """
    if shuffle:
        order = torch.randperm(n, generator=torch.Generator().manual_seed(permutation_seed(seed, epoch)))
    else:
        order = torch.arange(n)
    total = -(-n // world_size) * world_size
    if pad and total > n:  # several repeats when there are more ranks than indices
        order = order.repeat(-(-total // n))[:total]
    return order[rank::world_size]


def shard_size(n: int, rank: int, world_size: int, pad: bool) -> int:
    """How many indices :func:`epoch_indices` gives rank ``rank``."""
    return -(-n // world_size) if pad else len(range(rank, n, world_size))


class ShardSampler(DistributedSampler):
    """The ``DataLoader`` path's sampler: :func:`epoch_indices` for the epoch Lightning sets with ``set_epoch``.

    A ``DistributedSampler`` subclass, so Lightning keeps it under DDP instead of putting in its own (which pads
    evaluation shards, counting some images twice in a val/test mean, and which is seeded differently).
    """

    def __init__(self, n: int, shuffle: bool, seed: int = 0, rank: int = 0, world_size: int = 1,
                 pad: bool = True) -> None:
        super().__init__(range(n), num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed)
        self.n, self.pad = n, pad

    def __iter__(self) -> Iterator[int]:
        return iter(epoch_indices(self.n, self.shuffle, self.seed, self.epoch, self.rank, self.num_replicas,
                                  self.pad).tolist())

    def __len__(self) -> int:
        return shard_size(self.n, self.rank, self.num_replicas, self.pad)


class TensorBatchLoader:
    """Serves ``(images, labels)`` batches by index from tensors held in memory, on whatever device they are.

    It serves the order of :func:`epoch_indices` (as a ``DataLoader`` with :class:`ShardSampler` does): with
    ``shuffle`` a fresh permutation each epoch, drawn from ``seed`` and the epoch (so a resumed run sees the same
    order); with ``world_size > 1`` every rank gets its own interleaved shard, padded to equal length by repeating
    the first indices, as ``DistributedSampler`` does.

    Args:
        images, labels: tensors with the same first dimension.
        batch_size: images per batch.
        shuffle: permute each epoch.
        drop_last: drop the last, smaller batch.
        seed: base seed of the permutations.
        epoch_fn: returns the current epoch; without it the loader counts its own passes.
        rank, world_size: this process's shard.
        pad_shards: make every shard as long as the longest by repeating indices (DistributedSampler's way, which
            training needs: every process must take the same number of steps). Without it (for evaluation) each
            image is seen exactly once and the shards may differ in length by one.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        shuffle: bool = False,
        drop_last: bool = False,
        seed: int = 0,
        epoch_fn: Callable[[], int] | None = None,
        rank: int = 0,
        world_size: int = 1,
        pad_shards: bool = True,
    ) -> None:
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.seed, self.epoch_fn = seed, epoch_fn
        self.rank, self.world_size, self.pad_shards = rank, world_size, pad_shards
        self._passes = 0

    @property
    def num_samples(self) -> int:
        """Images this rank sees per epoch (the shard size, padding included)."""
        return shard_size(len(self.images), self.rank, self.world_size, self.pad_shards)

    def __len__(self) -> int:
        n = self.num_samples
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _indices(self) -> torch.Tensor | None:
        """This epoch's indices for this rank, or None for the plain in-order pass over everything."""
        if not self.shuffle and self.world_size == 1:
            return None
        epoch = self.epoch_fn() if self.epoch_fn is not None else self._passes
        indices = epoch_indices(len(self.images), self.shuffle, self.seed, epoch, self.rank, self.world_size,
                                self.pad_shards)
        return indices.to(self.images.device, non_blocking=True)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        indices = self._indices()
        self._passes += 1
        n = self.num_samples if indices is None else len(indices)
        stop = n - n % self.batch_size if self.drop_last else n
        for start in range(0, stop, self.batch_size):
            if indices is None:
                yield self.images[start : start + self.batch_size], self.labels[start : start + self.batch_size]
            else:
                idx = indices[start : start + self.batch_size]
                yield self.images.index_select(0, idx), self.labels.index_select(0, idx)
