"""Random and temporal splits, and the global-batch sampler (data order fixed by seed and epoch)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from symgraph.train.sampler import GlobalBatchSampler
from symgraph.train.split import random_split_indices, temporal_split_indices


def test_split_is_deterministic_disjoint_and_complete():
    parts = random_split_indices(103, [0.8, 0.1, 0.1], seed=5)
    assert parts == random_split_indices(103, [0.8, 0.1, 0.1], seed=5)
    assert parts != random_split_indices(103, [0.8, 0.1, 0.1], seed=6)
    assert [len(p) for p in parts] == [82, 10, 11]
    assert sorted(i for p in parts for i in p) == list(range(103))


def test_split_counts_and_partial_fractions():
    parts = random_split_indices(50, [10, 5], seed=0)
    assert [len(p) for p in parts] == [10, 5]
    assert not set(parts[0]) & set(parts[1])
    assert [len(p) for p in random_split_indices(50, [0.5, 0.2], seed=0)] == [25, 10]


@pytest.mark.parametrize(
    ("sizes", "match"),
    [
        ([0.9, 0.2], "sum to"),
        ([0.5, 0.5005], "sum to"),
        ([40, 20], "sum to"),
        ([-1, 2], "non-negative"),
        ([float("inf"), 0], "finite and non-negative"),
        ([0.5, float("inf")], "finite and non-negative"),
        ([], "at least"),
    ],  # fmt: skip
)
def test_split_rejects_bad_sizes(sizes, match):
    with pytest.raises(ValueError, match=match):
        random_split_indices(50, sizes, seed=0)


def test_split_allows_empty_parts():
    """A part of size 0 (no validation set, say) is a valid request, as a count or a fraction."""
    assert [len(p) for p in random_split_indices(50, [10, 0, 5], seed=0)] == [10, 0, 5]
    assert [len(p) for p in random_split_indices(50, [0.5, 0.0], seed=0)] == [25, 0]


def test_split_fractions_floor_exactly_and_numpy_counts_are_counts():
    import numpy as np

    sizes = [len(p) for p in random_split_indices(90, [0.7, 0.15, 0.15], seed=0)]
    assert sizes == [63, 13, 14]  # 0.7 * 90 = 62.99999999999999 in floating point
    assert [len(p) for p in random_split_indices(100, [0.57, 0.2], seed=0)] == [57, 20]
    counts = random_split_indices(100, np.array([80, 10, 10]), seed=0)
    assert [len(p) for p in counts] == [80, 10, 10]


def test_shards_of_ranks_make_up_the_global_batches():
    single = GlobalBatchSampler(23, 5, shuffle=True, seed=1)
    ranks = [GlobalBatchSampler(23, 5, shuffle=True, seed=1, rank=r, world_size=2) for r in (0, 1)]
    for sampler in [single, *ranks]:
        sampler.set_epoch(4)
    shards = [list(r) for r in ranks]
    for batch, shard0, shard1 in zip(single, *shards):
        assert sorted(batch) == sorted(shard0 + shard1)
    assert len(single) == len(shards[0]) == 5
    assert sorted(i for b in single for i in b) == list(range(23))


def test_order_depends_on_seed_and_epoch_only_and_resume_skips():
    def order(seed, epoch, start=0):
        sampler = GlobalBatchSampler(20, 4, shuffle=True, seed=seed)
        sampler.set_epoch(epoch, start_batch=start)
        return list(sampler)

    assert order(0, 1) == order(0, 1)
    assert order(0, 1) != order(0, 2) and order(0, 1) != order(1, 1)
    assert order(0, 1) != order(1, 0)  # seed and epoch are not interchangeable
    assert order(0, 1, start=3) == order(0, 1)[3:]
    resumed = GlobalBatchSampler(20, 4, shuffle=True, seed=0)
    resumed.set_epoch(1, start_batch=2)
    assert len(resumed) == len(list(resumed)) == 3
    resumed.set_epoch(1, start_batch=5)  # a checkpoint at the very end of the epoch
    assert list(resumed) == [] and len(resumed) == 0


def test_empty_shard_and_drop_last():
    sampler = GlobalBatchSampler(5, 4, shuffle=False, rank=1, world_size=2)
    assert list(sampler) == [[1, 3], []]  # last global batch [4] has nothing for rank 1
    assert len(GlobalBatchSampler(5, 4, shuffle=False, drop_last=True)) == 1
    with pytest.raises(ValueError, match="start_batch"):
        sampler.set_epoch(0, start_batch=3)
    with pytest.raises(ValueError, match="rank"):
        GlobalBatchSampler(5, 4, shuffle=False, rank=2, world_size=2)


@settings(max_examples=60, deadline=None)
@given(
    lengths=st.lists(st.integers(4, 40), min_size=1, max_size=5),
    window_length=st.integers(1, 2),
    val_fraction=st.floats(0.05, 0.5),
)
def test_temporal_split_validates_on_the_latest_windows_and_never_shares_a_frame(
    lengths, window_length, val_fraction
):
    windows = [(series, start) for series, n in enumerate(lengths) for start in range(n)]
    train, val = temporal_split_indices(windows, window_length, val_fraction)
    assert train == sorted(train) and val == sorted(val) and not set(train) & set(val)
    for series, n in enumerate(lengths):
        val_starts = [windows[i][1] for i in val if windows[i][0] == series]
        train_starts = [windows[i][1] for i in train if windows[i][0] == series]
        assert val_starts == list(range(n - math.ceil(val_fraction * n), n))  # the latest
        assert train_starts == list(range(0, min(val_starts) - window_length + 1))


def test_temporal_split_bad_input_names_the_argument():
    windows = [(0, start) for start in range(5)]
    with pytest.raises(ValueError, match="val_fraction: expected a fraction in"):
        temporal_split_indices(windows, 2, 1.0)
    with pytest.raises(ValueError, match="window_length: expected a positive integer"):
        temporal_split_indices(windows, 0, 0.2)
    with pytest.raises(ValueError, match="windows: no training window ends before"):
        temporal_split_indices(windows, 5, 0.2)


def test_asking_whether_a_dataset_holds_graphs_draws_no_random_numbers():
    """The probe reads an item, running the dataset's transform: a random transform (a
    rotation drawn from the global RNG) must not shift the run's random stream, or a run
    resumed mid-epoch would differ from the uninterrupted one."""
    import random

    import numpy as np
    from torch_geometric.data import Data

    from symgraph.train.loader import is_graph_dataset

    class RandomlyTransformed(torch.utils.data.Dataset):
        def __len__(self):
            return 3

        def __getitem__(self, i):
            random.random(), np.random.rand()
            return Data(x=torch.randn(2, 3))

    torch.manual_seed(0), random.seed(0), np.random.seed(0)
    expected = torch.rand(1).item(), random.random(), np.random.rand()
    torch.manual_seed(0), random.seed(0), np.random.seed(0)
    assert is_graph_dataset(RandomlyTransformed())
    assert (torch.rand(1).item(), random.random(), np.random.rand()) == expected


def test_loader_yields_none_for_an_empty_shard_and_seeds_per_epoch_and_rank():
    """An empty shard is ``None``; the loader's generator depends on seed, epoch and rank and
    creating it draws nothing from the global torch random state."""
    from torch.utils.data import TensorDataset

    from symgraph.train.loader import make_loader

    dataset = TensorDataset(torch.arange(5.0))

    def loader(seed, epoch, rank):
        sampler = GlobalBatchSampler(5, 4, shuffle=False, seed=seed, rank=rank, world_size=2)
        sampler.set_epoch(epoch)
        return make_loader(dataset, sampler)

    batches = list(loader(0, 0, 1))
    assert len(batches) == 2 and batches[1] is None
    assert torch.equal(batches[0][0], torch.tensor([1.0, 3.0]))
    state = torch.get_rng_state()
    seeds = {
        key: loader(*key).generator.initial_seed() for key in [(0, 1, 0), (0, 2, 0), (0, 1, 1)]
    }
    assert torch.equal(torch.get_rng_state(), state)
    assert len(set(seeds.values())) == 3
    assert loader(0, 1, 0).generator.initial_seed() == seeds[(0, 1, 0)]


def test_random_batch_draws_distinct_items_with_its_own_generator_only():
    """``random_batch`` takes ``min(size, len)`` distinct items, reproducibly from its
    generator and without touching the global torch random state."""
    from torch.utils.data import TensorDataset

    from symgraph.train.loader import random_batch

    dataset = TensorDataset(torch.arange(10))
    state = torch.get_rng_state()
    (first,) = random_batch(dataset, 4, torch.Generator().manual_seed(3))
    (again,) = random_batch(dataset, 4, torch.Generator().manual_seed(3))
    assert torch.equal(torch.get_rng_state(), state)
    assert first.shape == (4,) and len(set(first.tolist())) == 4 and torch.equal(first, again)
    (everything,) = random_batch(dataset, 25, torch.Generator().manual_seed(3))
    assert sorted(everything.tolist()) == list(range(10))


def test_move_to_moves_nested_containers_and_keeps_their_types():
    """Tuples stay tuples, lists lists, and values inside dicts are moved too."""
    from symgraph.train.loader import move_to

    class Box:
        def __init__(self, where=None):
            self.where = where

        def to(self, device):
            return Box(device)

    device = torch.device("cpu")
    moved = move_to((Box(), [Box(), {"a": Box()}], 7), device)
    assert type(moved) is tuple and type(moved[1]) is list and moved[2] == 7
    assert moved[0].where == device and moved[1][0].where == device
    assert moved[1][1]["a"].where == device


def test_an_empty_dataset_holds_no_graphs():
    """``is_graph_dataset`` of an empty dataset is ``False`` (nothing to read)."""
    from torch.utils.data import TensorDataset

    from symgraph.train.loader import is_graph_dataset

    assert is_graph_dataset(TensorDataset(torch.zeros(0))) is False
