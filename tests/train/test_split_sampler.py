"""Random splits and the global-batch sampler (data order fixed by seed and epoch)."""

from __future__ import annotations

import pytest

from symgraph.train.sampler import GlobalBatchSampler
from symgraph.train.split import random_split_indices


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
    [([0.9, 0.2], "sum to"), ([40, 20], "sum to"), ([-1, 2], "non-negative"), ([], "at least")],
)
def test_split_rejects_bad_sizes(sizes, match):
    with pytest.raises(ValueError, match=match):
        random_split_indices(50, sizes, seed=0)


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
    assert order(0, 1, start=3) == order(0, 1)[3:]


def test_empty_shard_and_drop_last():
    sampler = GlobalBatchSampler(5, 4, shuffle=False, rank=1, world_size=2)
    assert list(sampler) == [[1, 3], []]  # last global batch [4] has nothing for rank 1
    assert len(GlobalBatchSampler(5, 4, shuffle=False, drop_last=True)) == 1
    with pytest.raises(ValueError, match="start_batch"):
        sampler.set_epoch(0, start_batch=3)
    with pytest.raises(ValueError, match="rank"):
        GlobalBatchSampler(5, 4, shuffle=False, rank=2, world_size=2)
