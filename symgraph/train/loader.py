"""Data loaders over a :class:`~symgraph.train.sampler.GlobalBatchSampler`, and moving batches.

Graph datasets (items are PyG ``Data``) are collated with PyG's ``Collater`` (what PyG's
``DataLoader`` uses) into a ``Batch``; any other dataset with torch's ``default_collate``. An
empty shard (a last global batch smaller than the number of ranks) becomes ``None``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, default_collate
from torch_geometric.data.data import BaseData
from torch_geometric.loader.dataloader import Collater

from symgraph.train.checkpoint import capture_rng_state, restore_rng_state
from symgraph.train.sampler import GlobalBatchSampler

__all__ = ["is_graph_dataset", "make_loader", "move_to", "random_batch"]


def is_graph_dataset(dataset: Dataset) -> bool:
    """Whether the items of ``dataset`` are PyG graphs (``Data`` / ``HeteroData``).

    Reading the first item runs the dataset's transform, which may draw random numbers;
    the global random states are put back afterwards, so that asking leaves a run (and
    its exact resume) as it was."""
    if len(dataset) == 0:
        return False
    states = capture_rng_state()
    try:
        return isinstance(dataset[0], BaseData)
    finally:
        restore_rng_state(states)


class _ShardCollate:
    """Collate a (possibly empty) list of items; picklable for worker processes."""

    def __init__(self, collate: Callable[[list[Any]], Any]) -> None:
        self.collate = collate

    def __call__(self, items: list[Any]) -> Any:
        return self.collate(items) if items else None


def make_loader(dataset: Dataset, sampler: GlobalBatchSampler, num_workers: int = 0) -> DataLoader:
    """A loader yielding this rank's shard of each global batch of ``sampler``'s current epoch.

    Call it after ``sampler.set_epoch(...)``. The loader has its own generator, seeded from
    ``(seed, epoch, rank)``, so creating it never draws from the global torch random state
    (which is part of a checkpoint) and worker processes get per-epoch seeds.
    """
    inner = Collater(dataset) if is_graph_dataset(dataset) else default_collate
    mixed = np.random.SeedSequence([sampler.seed, sampler.epoch, sampler.rank]).generate_state(1)
    generator = torch.Generator().manual_seed(int(mixed[0]))
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=_ShardCollate(inner),
        num_workers=num_workers,
        generator=generator,
    )


def random_batch(dataset: Dataset, size: int, generator: torch.Generator) -> Any:
    """``min(size, len(dataset))`` distinct random items of ``dataset`` (drawn with
    ``generator``), collated as :func:`make_loader` collates them."""
    picked = torch.randperm(len(dataset), generator=generator)[:size].tolist()
    collate = Collater(dataset) if is_graph_dataset(dataset) else default_collate
    return collate([dataset[i] for i in picked])


def move_to(batch: Any, device: torch.device) -> Any:
    """Move a batch (PyG ``Batch``, tensor, or tuple / list / dict of them) to ``device``."""
    if isinstance(batch, (tuple, list)):
        return type(batch)(move_to(item, device) for item in batch)
    if isinstance(batch, dict):
        return {key: move_to(value, device) for key, value in batch.items()}
    if hasattr(batch, "to"):
        return batch.to(device)
    return batch
