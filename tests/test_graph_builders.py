"""radius_graph / knn_graph against brute force, batches, bad input; order_by_in_degree."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import symgraph as sg
from symgraph.graph import knn_graph, order_by_in_degree, radius_graph


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


def test_graphs_of_points_far_from_the_origin_are_exact():
    """More than 25 points 1000 Å from the origin in float32: the distances must come from
    the differences (cdist's matrix-product form is off by ~0.1 Å there)."""
    gen = torch.Generator().manual_seed(2)
    local = torch.randn(80, 3, generator=gen, dtype=torch.float64)
    local[1] = local[0] + 0.003  # a pair much closer than the cloud's spacing
    pos = (local + 1000.0).float()
    batch = torch.tensor([0] * 50 + [1] * 30)
    reference = pos.double()  # float32 points, exact distances
    edges = radius_graph(pos, 0.3, batch)
    assert {tuple(e) for e in edges.T.tolist()} == brute_force_radius(reference, 0.3, batch)
    assert (0, 1) in {tuple(e) for e in edges.T.tolist()}
    nearest = knn_graph(pos, 1, batch)
    dist = torch.cdist(reference, reference)
    dist.fill_diagonal_(float("inf"))
    dist[batch[:, None] != batch[None, :]] = float("inf")
    assert nearest[0].tolist() == dist.argmin(dim=1).tolist()


def test_radius_graph_max_neighbours_keeps_the_nearest():
    pos = torch.tensor([[0.0, 0, 0], [0.1, 0, 0], [0.2, 0, 0], [0.3, 0, 0]])
    edges = radius_graph(pos, 1.0, max_num_neighbors=1)
    assert torch.bincount(edges[1], minlength=4).tolist() == [1, 1, 1, 1]  # one per centre
    gaps = (pos[edges[0], 0] - pos[edges[1], 0]).abs()
    assert torch.allclose(gaps, torch.full_like(gaps, 0.1))  # and it is a nearest one


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


def test_order_by_in_degree_renumbers_and_sorts():
    gen = torch.Generator().manual_seed(3)
    pos = torch.rand(50, 3, generator=gen, dtype=torch.float64)
    edge_index = radius_graph(pos, 0.35)
    edge_index = edge_index[:, torch.randperm(edge_index.shape[1], generator=gen)]
    order = order_by_in_degree(edge_index, 50)
    degree = torch.bincount(order.edge_index[1], minlength=50)
    assert bool((degree[1:] >= degree[:-1]).all())
    assert bool((order.edge_index[1][1:] >= order.edge_index[1][:-1]).all())
    assert torch.equal(order.rank[order.nodes], torch.arange(50))
    # the same edges, renumbered, with the edge permutation given
    assert torch.equal(order.edge_index, order.rank[edge_index[:, order.edges]])
    assert torch.equal(order.nodes[order.edge_index], edge_index[:, order.edges])
    # stable: equal degrees keep their node order, a receiver's edges their edge order
    in_degree = torch.bincount(edge_index[1], minlength=50)
    assert torch.equal(order.nodes, torch.argsort(in_degree, stable=True))
    assert torch.equal(order.edges, torch.argsort(order.rank[edge_index][1], stable=True))


def test_radius_is_exclusive():
    """ "Closer than r": a pair exactly at distance r is no edge."""
    pos = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    assert radius_graph(pos, 1.0).shape == (2, 0)
    assert radius_graph(pos, 1.0 + 1e-6).shape == (2, 2)


def test_graphs_built_in_chunks_equal_the_graphs_built_at_once(monkeypatch):
    """Large point sets are paired a block of rows at a time; small blocks change nothing."""
    import symgraph.graph as graph_module

    gen = torch.Generator().manual_seed(0)
    pos = torch.rand(30, 3, generator=gen, dtype=torch.float64)
    batch = torch.tensor([0] * 14 + [1] * 16)
    whole = radius_graph(pos, 0.5, batch), knn_graph(pos, 4, batch)
    monkeypatch.setattr(graph_module, "_CHUNK_ELEMENTS", 20)  # a few rows per block
    chunked = radius_graph(pos, 0.5, batch), knn_graph(pos, 4, batch)
    for a, b in zip(whole, chunked):
        assert torch.equal(a, b)


def test_convolution_on_the_renumbered_graph_is_the_renumbered_convolution():
    gen = torch.Generator().manual_seed(4)
    pos = torch.rand(40, 3, generator=gen, dtype=torch.float64)
    edge_index = radius_graph(pos, 0.4)
    edge_index = edge_index[:, torch.randperm(edge_index.shape[1], generator=gen)]
    edge_attr = torch.rand(edge_index.shape[1], 2, generator=gen, dtype=torch.float64)
    conv = sg.nn.ImplicitSteerableConv("4x0e + 2x1o", "3x0e + 2x1o", edge_dim=2, cutoff=0.4)
    conv = conv.double()
    x = torch.randn(40, conv.rep_in.dim, generator=gen, dtype=torch.float64)
    order = order_by_in_degree(edge_index, 40)
    expected = conv(x, pos, edge_index, edge_attr)
    got = conv(x[order.nodes], pos[order.nodes], order.edge_index, edge_attr[order.edges])
    torch.testing.assert_close(got[order.rank], expected, rtol=0, atol=1e-12)


def test_order_by_in_degree_rejects_bad_edges():
    with pytest.raises(ValueError, match="edge_index"):
        order_by_in_degree(torch.tensor([[0, 5], [1, 0]]), 3)


@st.composite
def point_sets(draw):
    """Points on a coarse grid (ties and coinciding points are common), split into graphs."""
    sizes = draw(st.lists(st.integers(1, 9), min_size=1, max_size=4))
    n = sum(sizes)
    coords = draw(st.lists(st.integers(0, 3), min_size=3 * n, max_size=3 * n))
    pos = 0.5 * torch.tensor(coords, dtype=torch.float64).reshape(n, 3)
    batch = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    return pos, batch


def _pair_distances(pos, batch):
    """``[N, N]`` distances, ``inf`` across graphs."""
    dist = torch.cdist(pos, pos, compute_mode="donot_use_mm_for_euclid_dist")
    return dist.masked_fill(batch[:, None] != batch[None, :], float("inf"))


def _check_nearest_kept(edges, dist, loop):
    """Per centre: no repeated edge, and no dropped candidate nearer than a kept one."""
    pairs = [tuple(e) for e in edges.T.tolist()]
    assert len(pairs) == len(set(pairs))
    for centre in range(dist.shape[0]):
        kept = edges[0][edges[1] == centre]
        candidates = dist[centre].clone()
        if not loop:
            candidates[centre] = float("inf")
        dropped = torch.ones_like(candidates, dtype=torch.bool)
        dropped[kept] = False
        if kept.numel() and dropped.any():
            assert candidates[kept].max() <= candidates[dropped].min()


@settings(max_examples=60, deadline=None)
@given(
    cloud=point_sets(),
    r=st.sampled_from([0.5, 0.75, 1.0, 1.6]),
    loop=st.booleans(),
    max_neighbours=st.one_of(st.none(), st.integers(1, 5)),
)
def test_radius_graph_properties(cloud, r, loop, max_neighbours):
    """The pairs closer than ``r`` in one graph (with self-pairs when ``loop``); with a
    limit, ``min(limit, count)`` of them per centre, the nearest."""
    pos, batch = cloud
    dist = _pair_distances(pos, batch)
    within = dist < r
    if not loop:
        within.fill_diagonal_(False)
    edges = radius_graph(pos, r, batch, loop=loop, max_num_neighbors=max_neighbours)
    got = {tuple(e) for e in edges.T.tolist()}
    expected = {(int(j), int(i)) for i, j in within.nonzero().tolist()}
    if max_neighbours is None:
        assert got == expected and edges.shape[1] == len(expected)
        return
    assert got <= expected
    counts = torch.bincount(edges[1], minlength=len(pos))
    assert counts.tolist() == within.sum(1).clamp_max(max_neighbours).tolist()
    _check_nearest_kept(edges, dist.masked_fill(~within, float("inf")), loop=True)


@settings(max_examples=60, deadline=None)
@given(cloud=point_sets(), k=st.integers(1, 6), loop=st.booleans())
def test_knn_graph_properties(cloud, k, loop):
    """Every centre gets ``min(k, n_graph − (not loop))`` of the nearest nodes of its own
    graph, itself included when ``loop`` (even among coinciding points), sorted by centre."""
    pos, batch = cloud
    dist = _pair_distances(pos, batch)
    edges = knn_graph(pos, k, batch, loop=loop)
    sizes = torch.bincount(batch)[batch]
    counts = torch.bincount(edges[1], minlength=len(pos))
    assert counts.tolist() == (sizes - (0 if loop else 1)).clamp_max(k).tolist()
    assert bool((edges[1][1:] >= edges[1][:-1]).all())
    assert bool((batch[edges[0]] == batch[edges[1]]).all())
    self_edges = edges[0] == edges[1]
    assert int(self_edges.sum()) == (len(pos) if loop else 0)
    _check_nearest_kept(edges, dist, loop)
