"""A batch loader over tensors already in memory: no workers, no collation, no per-image work."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch


class TensorBatchLoader:
    """Serves ``(images, labels)`` batches by index from tensors held in memory, on whatever device they are.

    It keeps the contract of a ``DataLoader`` with a ``DistributedSampler``: with ``shuffle`` the order is a fresh
    permutation each epoch, drawn from ``seed + epoch`` (so a resumed run sees the same order); with
    ``world_size > 1`` every rank gets its own interleaved shard, padded to equal length by repeating the first
    indices, exactly as ``DistributedSampler`` does.

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
        if self.pad_shards:
            return -(-len(self.images) // self.world_size)
        return len(range(self.rank, len(self.images), self.world_size))

    def __len__(self) -> int:
        n = self.num_samples
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _indices(self) -> torch.Tensor | None:
        """This epoch's indices for this rank, or None for the plain in-order pass over everything."""
        n = len(self.images)
        if not self.shuffle and self.world_size == 1:
            return None
        epoch = self.epoch_fn() if self.epoch_fn is not None else self._passes
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + epoch)
            order = torch.randperm(n, generator=generator)
        else:
            order = torch.arange(n)
        total = -(-n // self.world_size) * self.world_size
        if self.pad_shards and total > n:  # repeat the order as DistributedSampler does (several times if need be)
            order = order.repeat(-(-total // n))[:total]
        return order[self.rank :: self.world_size].to(self.images.device, non_blocking=True)

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
