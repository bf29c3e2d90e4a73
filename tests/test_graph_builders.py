"""radius_graph / knn_graph against brute force, batches, bad input."""

from __future__ import annotations

import pytest
import torch

from symgraph.graph import knn_graph, radius_graph


def brute_force_radius(pos, r, batch):
    dist = torch.cdist(pos, pos, compute_mode="donot_use_mm_for_euclid_dist")
    same = batch[:, None] == batch[None, :]
    mask = (dist < r) & same & ~torch.eye(len(pos), dtype=torch.bool)
    centre, neighbour = mask.nonzero(as_tuple=True)
    return {(int(a), int(b)) for a, b in zip(neighbour, centre)}


def test_radius_graph_matches_brute_force_with_batches():
    gen = torch.Generator().manual_seed(0)
    pos = torch.rand(60, 3, generator=gen, dtype=torch.float64)
    batch = torch.tensor([0] * 20 + [1] * 25 + [2] * 15)
    edges = radius_graph(pos, 0.4, batch)
    assert {tuple(e) for e in edges.T.tolist()} == brute_force_radius(pos, 0.4, batch)


def test_radius_graph_max_neighbours_keeps_the_nearest():
    pos = torch.tensor([[0.0, 0, 0], [0.1, 0, 0], [0.2, 0, 0], [0.3, 0, 0]])
    edges = radius_graph(pos, 1.0, max_num_neighbors=1)
    nearest = {0: 1, 1: 0, 2: 1, 3: 2}
    for src, dst in edges.T.tolist():
        assert nearest[dst] == src or abs(pos[src, 0] - pos[dst, 0]) <= 0.1 + 1e-6


def test_knn_graph_degree_order_and_neighbours():
    gen = torch.Generator().manual_seed(1)
    pos = torch.randn(40, 3, generator=gen, dtype=torch.float64)
    batch = torch.tensor([0] * 30 + [1] * 10)
    edges = knn_graph(pos, 5, batch)
    assert edges.shape == (2, 40 * 5)
    assert bool((edges[1][1:] >= edges[1][:-1]).all()), "sorted by centre"
    dist = torch.cdist(pos, pos, compute_mode="donot_use_mm_for_euclid_dist")
    dist.fill_diagonal_(float("inf"))
    dist[batch[:, None] != batch[None, :]] = float("inf")
    expected = dist.topk(5, largest=False).indices
    for centre in range(40):
        got = set(edges[0][edges[1] == centre].tolist())
        assert got == set(expected[centre].tolist())


def test_small_graphs_get_fewer_neighbours_and_bad_input_raises():
    pos = torch.randn(3, 3)
    assert knn_graph(pos, 5).shape == (2, 3 * 2)
    with pytest.raises(ValueError, match="`k` must be a positive int"):
        knn_graph(pos, 0)
    with pytest.raises(ValueError, match="`r` must be a positive number"):
        radius_graph(pos, -1.0)
    with pytest.raises(ValueError, match=r"pos: expected shape \[N, D\]"):
        radius_graph(torch.randn(5), 1.0)
    with pytest.raises(ValueError, match="batch: expected sorted"):
        radius_graph(pos, 1.0, torch.tensor([1, 0, 0]))
    nan = pos.clone()
    nan[0, 0] = float("nan")
    with pytest.raises(ValueError, match="pos: expected finite values"):
        knn_graph(nan, 2)
