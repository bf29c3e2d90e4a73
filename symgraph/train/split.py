"""Deterministic splits of ``range(n)`` into train / val / test (or any number of parts).

- :func:`random_split_indices`: random parts of any dataset;
- :func:`temporal_split_indices`: windows of time series, validated on each series' latest
  windows (forecasting: the model is chosen on data later than what it trained on).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch.utils.data import Dataset, Subset
from torch_geometric.data import Dataset as PygDataset

from symgraph.checks import is_int

__all__ = ["random_split_indices", "temporal_split_indices", "dataset_indices"]


def _part_sizes(n: int, sizes: Sequence[float] | Sequence[int]) -> list[int]:
    if len(sizes) == 0:
        raise ValueError("random_split_indices: sizes must name at least one part, got []")
    if not all(math.isfinite(s) and s >= 0 for s in sizes):  # NaN passed `s < 0`
        raise ValueError(
            f"random_split_indices: sizes must be finite and non-negative, got {list(sizes)}"
        )
    if all(is_int(s) for s in sizes):
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
    # f * n in floating point can land just below an integer (0.7 * 90 = 62.99999999999999)
    counts = [math.floor(round(float(f) * n, 9)) for f in sizes]
    if math.isclose(total, 1.0, abs_tol=1e-9):
        counts[-1] = n - sum(counts[:-1])  # fractions summing to 1 use every index
    return counts


def temporal_split_indices(
    windows: Sequence[tuple[int, int]], window_length: int, val_fraction: float
) -> tuple[list[int], list[int]]:
    """Train / validation indices of time-series windows, validating on the latest ones.

    For each series, the windows with the ``ceil(val_fraction * count)`` latest starts are
    validation; training keeps the windows that end before the first validation frame
    (``start + window_length <= first validation start``), so training never reads a
    validation frame; the ``window_length - 1`` windows per series that straddle the
    boundary are dropped. ``window_length`` is what training *reads* of a window: a model
    trained on ``T`` input frames and ``S`` target frames of longer windows needs ``T + S``.

    Args:
        windows: ``(series id, first frame)`` of every window, e.g.
            :meth:`SmokePlumeDataset.window <symgraph.data.fluids.SmokePlumeDataset.window>`
            of each index.
        window_length: frames of each window that training reads.
        val_fraction: fraction of each series' windows for validation, in ``(0, 1)``.

    Returns:
        ``(train, val)``: sorted lists of indices into ``windows``.

    >>> temporal_split_indices([(0, t) for t in range(6)], window_length=2, val_fraction=0.3)
    ([0, 1, 2], [4, 5])
    """
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction: expected a fraction in (0, 1), got {val_fraction!r}")
    if not is_int(window_length) or window_length < 1:
        raise ValueError(f"window_length: expected a positive integer, got {window_length!r}")
    starts: dict[int, list[int]] = {}
    for series, start in windows:
        starts.setdefault(int(series), []).append(int(start))
    boundary = {}
    for series, values in starts.items():
        ordered = sorted(values)
        boundary[series] = ordered[-math.ceil(val_fraction * len(ordered))]
    train, val = [], []
    for index, (series, start) in enumerate(windows):
        if start >= boundary[int(series)]:
            val.append(index)
        elif start + window_length <= boundary[int(series)]:
            train.append(index)
    if not train:
        raise ValueError(
            f"windows: no training window ends before the validation windows (window_length "
            f"{window_length}, val_fraction {val_fraction}); give longer series or a smaller "
            "val_fraction"
        )
    return train, val


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
