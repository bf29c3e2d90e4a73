"""Neighbour graphs built from positions, without torch-cluster, and a node order that
saves stacked convolutions their per-layer edge sorting.

Both builders follow torch-cluster's conventions, so they are drop-in replacements:
``edge_index[1]`` is the centre node and ``edge_index[0]`` its neighbour, i.e. messages
flow ``edge_index[0] -> edge_index[1]`` (PyG's ``source_to_target``). ``radius_graph``
uses ``torch_cluster`` when it is importable; otherwise, and always in ``knn_graph``,
distances are computed in chunks of rows so that memory stays bounded (about 2^24 entries of
the distance matrix at a time).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from symgraph.checks import check_batch, check_edge_index, check_positions, is_int, is_real

try:  # optional accelerator, used when present
    import torch_cluster as _torch_cluster
except ImportError:  # pragma: no cover - depends on the environment
    _torch_cluster = None

__all__ = [
    "radius_graph",
    "knn_graph",
    "order_by_in_degree",
    "DegreeOrder",
    "check_max_num_neighbors",
    "exact_distances",
]

_CHUNK_ELEMENTS = 1 << 24  # entries of the distance matrix held at once


def _graph_ranges(batch: Tensor | None, num_nodes: int) -> list[tuple[int, int]]:
    """Contiguous ``[start, stop)`` node ranges of each graph of a sorted ``batch``."""
    if batch is None or num_nodes == 0:
        return [(0, num_nodes)]
    counts = torch.bincount(batch).tolist()
    ranges, start = [], 0
    for count in counts:
        if count:
            ranges.append((start, start + count))
        start += count
    return ranges


def _row_chunks(start: int, stop: int, width: int) -> list[tuple[int, int]]:
    rows = max(1, _CHUNK_ELEMENTS // max(width, 1))
    return [(a, min(a + rows, stop)) for a in range(start, stop, rows)]


def check_max_num_neighbors(value: object) -> int | None:
    """``max_num_neighbors`` must be ``None`` or a positive int (returned as a Python int)."""
    if value is None:
        return None
    if not is_int(value) or value < 1:
        raise ValueError(f"max_num_neighbors: expected a positive int or None, got {value!r}")
    return int(value)


def exact_distances(rows: Tensor, block: Tensor) -> Tensor:
    """``[..., R, M]`` Euclidean distances, computed from the differences: cdist's default
    ``|x|² + |y|² − 2x·y`` (used above 25 rows) loses the small distances between points
    far from the origin (at 1000 Å in float32, errors of ~0.1 Å)."""
    return torch.cdist(rows, block, compute_mode="donot_use_mm_for_euclid_dist")


def radius_graph(
    pos: Tensor,
    r: float,
    batch: Tensor | None = None,
    loop: bool = False,
    max_num_neighbors: int | None = None,
) -> Tensor:
    """All pairs closer than ``r`` within the same graph.

    Args:
        pos: ``[N, 3]`` (or ``[N, D]``) positions.
        r: cutoff radius (strict ``<`` comparison, as torch-cluster).
        batch: ``[N]`` sorted graph index of each node, or ``None`` for one graph.
        loop: keep self-loops.
        max_num_neighbors: keep at most this many neighbours per centre (the nearest; with
            torch-cluster installed, the ones it keeps).

    Returns:
        ``edge_index [2, E]`` (int64) with ``edge_index[1]`` the centre node.
    """
    check_positions(pos, "pos", dims=None)
    batch = check_batch(batch, pos.shape[0])
    if not is_real(r) or not r > 0:
        raise ValueError(f"radius_graph: `r` must be a positive number, got {r!r}")
    r = float(r)
    max_num_neighbors = check_max_num_neighbors(max_num_neighbors)
    if _torch_cluster is not None and pos.device.type != "mps":
        kwargs = {"max_num_neighbors": max_num_neighbors or pos.shape[0]}
        return _torch_cluster.radius_graph(pos, r, batch, loop, **kwargs)
    edges = []
    for start, stop in _graph_ranges(batch, pos.shape[0]):
        block = pos[start:stop]
        for a, b in _row_chunks(start, stop, stop - start):
            dist = exact_distances(pos[a:b], block)
            mask = dist < r
            if not loop:
                rows = torch.arange(b - a, device=pos.device)
                mask[rows, rows + (a - start)] = False
            if max_num_neighbors is not None:
                dist = dist.masked_fill(~mask, float("inf"))
                k = min(max_num_neighbors, dist.shape[1])
                keep = torch.topk(dist, k, dim=1, largest=False).indices
                limited = torch.zeros_like(mask)
                limited.scatter_(1, keep, True)
                mask &= limited
            centre, neighbour = mask.nonzero(as_tuple=True)
            edges.append(torch.stack([neighbour + start, centre + a]))
    if not edges:
        return torch.empty(2, 0, dtype=torch.long, device=pos.device)
    return torch.cat(edges, dim=1)


def knn_graph(pos: Tensor, k: int, batch: Tensor | None = None, loop: bool = False) -> Tensor:
    """The ``k`` nearest neighbours of every node within its graph.

    Every centre gets exactly ``min(k, n_graph - (not loop))`` incoming edges, ordered by
    centre (``edge_index[1]`` sorted), which lets the convolution use its constant-degree
    batched path.

    Args:
        pos: ``[N, 3]`` (or ``[N, D]``) positions.
        k: neighbours per node (positive int).
        batch: ``[N]`` sorted graph index, or ``None``.
        loop: count the node itself as a neighbour (always one of its ``k``, even when
            other points coincide with it).

    Returns:
        ``edge_index [2, N * k']`` (int64), ``edge_index[1]`` the centre node.
    """
    check_positions(pos, "pos", dims=None)
    batch = check_batch(batch, pos.shape[0])
    if not is_int(k) or k < 1:
        raise ValueError(f"knn_graph: `k` must be a positive int, got {k!r}")
    k = int(k)
    edges = []
    for start, stop in _graph_ranges(batch, pos.shape[0]):
        block = pos[start:stop]
        kk = min(k, (stop - start) - (0 if loop else 1))
        if kk <= 0:
            continue
        for a, b in _row_chunks(start, stop, stop - start):
            dist = exact_distances(pos[a:b], block)
            rows = torch.arange(b - a, device=pos.device)
            # the node itself: first when counted (before duplicates of it at distance 0)
            dist[rows, rows + (a - start)] = -1.0 if loop else float("inf")
            nearest = torch.topk(dist, kk, dim=1, largest=False).indices
            centre = torch.arange(a, b, device=pos.device).repeat_interleave(kk)
            edges.append(torch.stack([nearest.reshape(-1) + start, centre]))
    if not edges:
        return torch.empty(2, 0, dtype=torch.long, device=pos.device)
    return torch.cat(edges, dim=1)


@dataclass(frozen=True)
class DegreeOrder:
    """A graph renumbered by in-degree, from :func:`order_by_in_degree`.

    Attributes:
        nodes: ``[N]`` the old index of each new node (``x[nodes]`` renumbers node features).
        rank: ``[N]`` the new index of each old node (``h[rank]`` restores the old order).
        edges: ``[E]`` the old index of each new edge (``edge_attr[edges]``).
        edge_index: ``[2, E]`` the renumbered edges, sorted by receiver.
    """

    nodes: Tensor
    rank: Tensor
    edges: Tensor
    edge_index: Tensor


def order_by_in_degree(edge_index: Tensor, num_nodes: int) -> DegreeOrder:
    """Renumber the nodes by in-degree (stable) and sort the edges by receiver.

    :class:`~symgraph.nn.ImplicitSteerableConv` groups a node's incoming edges into
    padded ``[n, k]`` slots, for blocks of receivers of similar degree; on a graph in this
    order every layer finds that grouping already done, so a model stacking several layers
    on one graph renumbers it once (as :class:`~symgraph.models.SteerableMoleculeNet`
    does) instead of once per layer. The graph and the layers' outputs are the same up to
    the renumbering.

    Args:
        edge_index: ``[2, E]``, messages flowing ``edge_index[0] -> edge_index[1]``.
        num_nodes: N.
    """
    if not is_int(num_nodes) or num_nodes < 0:
        raise ValueError(f"num_nodes: expected a non-negative int, got {num_nodes!r}")
    num_nodes = int(num_nodes)
    edge_index = check_edge_index(edge_index, num_nodes).long()
    degree = torch.bincount(edge_index[1], minlength=num_nodes)
    nodes = torch.argsort(degree, stable=True)
    rank = torch.empty_like(nodes)
    rank[nodes] = torch.arange(num_nodes, device=nodes.device)
    renumbered = rank[edge_index]
    edges = torch.argsort(renumbered[1], stable=True)
    return DegreeOrder(nodes, rank, edges, renumbered[:, edges])
