"""Deterministic random splits of ``range(n)`` into train / val / test (or any number of parts)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch.utils.data import Dataset, Subset
from torch_geometric.data import Dataset as PygDataset

__all__ = ["random_split_indices", "dataset_indices"]


def _part_sizes(n: int, sizes: Sequence[float] | Sequence[int]) -> list[int]:
    if len(sizes) == 0:
        raise ValueError("random_split_indices: sizes must name at least one part, got []")
    if any(s < 0 for s in sizes):
        raise ValueError(f"random_split_indices: sizes must be non-negative, got {list(sizes)}")
    if all(isinstance(s, int) and not isinstance(s, bool) for s in sizes):
        counts = [int(s) for s in sizes]
        if sum(counts) > n:
            raise ValueError(
                f"random_split_indices: counts {counts} sum to {sum(counts)} > n = {n}"
            )
        return counts
    total = float(sum(sizes))
    if total > 1.0 + 1e-9:
        raise ValueError(
            f"random_split_indices: fractions {list(sizes)} sum to {total} > 1 "
            "(give fractions summing to at most 1, or integer counts)"
        )
    counts = [math.floor(float(f) * n) for f in sizes]
    if math.isclose(total, 1.0, abs_tol=1e-9):
        counts[-1] = n - sum(counts[:-1])  # fractions summing to 1 use every index
    return counts


def random_split_indices(
    n: int, sizes: Sequence[float] | Sequence[int], seed: int
) -> list[list[int]]:
    """Split ``range(n)`` into disjoint random parts, the same for the same ``(n, sizes, seed)``.

    Args:
        n: number of items.
        sizes: either integer counts (summing to at most ``n``), or fractions summing to at
            most 1 (each part gets ``floor(f * n)`` items; when they sum to 1 the last part
            also takes the remainder, so every index is used).
        seed: seed of the permutation (independent of the global random state).

    Returns:
        one sorted list of indices per part.

    >>> random_split_indices(10, [0.8, 0.1, 0.1], seed=0)[1:]
    [[6], [2]]
    """
    if n < 0:
        raise ValueError(f"random_split_indices: n must be >= 0, got {n}")
    counts = _part_sizes(n, sizes)
    generator = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(n, generator=generator).tolist()
    parts, start = [], 0
    for count in counts:
        parts.append(sorted(perm[start : start + count]))
        start += count
    return parts


def dataset_indices(dataset: Dataset) -> list[int]:
    """Indices of ``dataset``'s items in the dataset it was cut from, for ``split.json``.

    ``torch.utils.data.Subset`` → its ``indices``; a PyG dataset indexed by a split
    (``dataset[idx]``) → ``dataset.indices()``; any other dataset → ``range(len(dataset))``.
    """
    if isinstance(dataset, Subset):
        return [int(i) for i in dataset.indices]
    if isinstance(dataset, PygDataset):
        return [int(i) for i in dataset.indices()]
    return list(range(len(dataset)))
