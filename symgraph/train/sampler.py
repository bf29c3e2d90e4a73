"""The data order: global batches fixed by ``(seed, epoch)``, split across ranks.

Training with ``W`` processes and batch size ``B`` must see exactly the batches that one
process with batch size ``B`` sees, so :class:`GlobalBatchSampler` first cuts the epoch's
permutation into *global* batches of ``B`` indices and then gives rank ``r`` the slice
``global_batch[r::W]``. The permutation depends only on ``(seed, epoch)``: a resumed run can
skip the batches already applied (``set_epoch(epoch, start_batch=k)``) and continue with the
very same order, with no random state to save.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler

__all__ = ["GlobalBatchSampler", "epoch_permutation"]


def epoch_permutation(num_items: int, seed: int, epoch: int) -> list[int]:
    """A random permutation of ``range(num_items)`` that depends only on ``(seed, epoch)``."""
    mixed = int(np.random.SeedSequence([int(seed), int(epoch)]).generate_state(1)[0])
    generator = torch.Generator().manual_seed(mixed)
    return torch.randperm(num_items, generator=generator).tolist()


class GlobalBatchSampler(Sampler[list[int]]):
    """Batch sampler yielding this rank's share of each global batch.

    Args:
        num_items: dataset length.
        batch_size: the *global* batch size ``B`` (summed over ranks).
        shuffle: permute per epoch (training) or keep ``0..num_items-1`` (evaluation).
        seed: seed of the permutations.
        drop_last: drop a last global batch smaller than ``B``.
        rank, world_size: this process and the number of processes.

    Each yielded item is a list of dataset indices (possibly empty, when a last global batch
    has fewer than ``world_size`` items; the loader turns it into ``None``).
    """

    def __init__(
        self,
        num_items: int,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int = 0,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"GlobalBatchSampler: batch_size must be >= 1, got {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(
                f"GlobalBatchSampler: need 0 <= rank < world_size, got rank={rank}, "
                f"world_size={world_size}"
            )
        self.num_items = int(num_items)
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.drop_last = drop_last
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.start_batch = 0

    @property
    def num_batches(self) -> int:
        """Global batches in one full epoch."""
        if self.drop_last:
            return self.num_items // self.batch_size
        return -(-self.num_items // self.batch_size)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch's permutation and skip its first ``start_batch`` global batches."""
        if not 0 <= start_batch <= self.num_batches:
            raise ValueError(
                f"GlobalBatchSampler.set_epoch: start_batch must be in [0, {self.num_batches}], "
                f"got {start_batch}"
            )
        self.epoch = int(epoch)
        self.start_batch = int(start_batch)

    def global_batches(self) -> list[list[int]]:
        """All global batches of the current epoch, including skipped ones."""
        if self.shuffle:
            order = epoch_permutation(self.num_items, self.seed, self.epoch)
        else:
            order = list(range(self.num_items))
        B = self.batch_size
        return [order[i * B : (i + 1) * B] for i in range(self.num_batches)]

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.global_batches()[self.start_batch :]:
            yield batch[self.rank :: self.world_size]

    def __len__(self) -> int:
        return self.num_batches - self.start_batch
