"""Hierarchical point-cloud pooling without torch-cluster: farthest-point sampling and
bipartite k-nearest-neighbour graphs, batched over the clouds of a PyG batch.

Both are equivariant under rotations, reflections and translations of every cloud:
they only compare distances, and farthest-point sampling starts from the point farthest
from the cloud's centroid (an invariant rule) rather than from a random or fixed index.
Ties (two candidates at exactly the same distance) are broken by index, so clouds with
exact symmetries may sample different (equally valid) sets after a transformation; for
clouds in general position ties have probability zero. In float32, candidates within
rounding error of each other may also be swapped by a transformation.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch_geometric.utils import to_dense_batch

from symgraph.checks import check_batch, check_positions, is_int, is_real
from symgraph.graph import exact_distances

__all__ = ["farthest_point_sampling", "knn_bipartite"]


def _dense(pos: Tensor, batch: Tensor | None) -> tuple[Tensor, Tensor]:
    """``pos [N, 3] -> ([B, n_max, 3], mask [B, n_max])``."""
    if batch is None:
        return pos[None], torch.ones(1, pos.shape[0], dtype=torch.bool, device=pos.device)
    return to_dense_batch(pos, batch)


@torch.no_grad()
def farthest_point_sampling(
    pos: Tensor, ratio: float, batch: Tensor | None = None
) -> tuple[Tensor, Tensor | None]:
    """Deterministic farthest-point sampling of ``ceil(ratio * n)`` points per cloud.

    The first point of each cloud is the one farthest from its centroid; each next point is
    the one farthest from all points chosen so far. Chosen points are never chosen twice,
    so duplicate points are handled (a duplicate of a chosen point is picked only after
    every distinct point).

    Args:
        pos: ``[N, 3]`` positions.
        ratio: fraction of points kept per cloud, in ``(0, 1]`` (at least one point of
            every non-empty cloud).
        batch: ``[N]`` sorted cloud index, or ``None`` for one cloud.

    Returns:
        ``(index [M], batch [M] or None)``: indices into ``pos`` of the sampled points,
        cloud by cloud in sampling order, and the cloud of each sampled point.
    """
    check_positions(pos, "pos")
    batch = check_batch(batch, pos.shape[0])
    if not is_real(ratio) or not 0 < ratio <= 1:
        raise ValueError(f"ratio: expected a number in (0, 1], got {ratio!r}")
    ratio = float(ratio)
    if pos.shape[0] == 0:
        raise ValueError("pos: expected at least one point, got 0")
    dense, mask = _dense(pos, batch)  # [B, n, 3], [B, n]
    sizes = mask.sum(dim=1)
    # ceil(ratio * n), robust to rounding (0.3 * 10 = 3.0000000000000004); >= 1 when n >= 1
    keep = torch.tensor([math.ceil(ratio * int(n) - 1e-9) for n in sizes], device=pos.device)
    counts = sizes.clamp_min(1).to(pos.dtype)[:, None]
    centroid = (dense * mask[..., None]).sum(dim=1) / counts  # [B, 3]
    spread = (dense - centroid[:, None]).pow(2).sum(-1).masked_fill(~mask, -1.0)
    current = spread.argmax(dim=1)  # [B]
    rows = torch.arange(dense.shape[0], device=pos.device)
    # distance to the chosen set; -inf marks padding, -1 marks chosen points
    nearest = torch.full_like(spread, math.inf).masked_fill(~mask, -math.inf)
    chosen = [current]
    for _ in range(int(keep.max()) - 1):
        step = (dense - dense[rows, current][:, None]).pow(2).sum(-1)
        nearest = torch.minimum(nearest, step)
        nearest[rows, current] = -1.0
        current = nearest.argmax(dim=1)
        chosen.append(current)
    order = torch.stack(chosen, dim=1)  # [B, m_max]
    take = torch.arange(order.shape[1], device=pos.device)[None] < keep[:, None]
    offsets = torch.cumsum(sizes, 0) - sizes
    index = (order + offsets[:, None])[take]
    new_batch = None if batch is None else rows.repeat_interleave(keep)
    return index, new_batch


@torch.no_grad()
def knn_bipartite(
    pos_source: Tensor,
    pos_target: Tensor,
    k: int,
    batch_source: Tensor | None = None,
    batch_target: Tensor | None = None,
) -> Tensor:
    """The ``k`` nearest source points of every target point, within the same cloud.

    A target that is also a source point finds itself (distance 0) among its neighbours.
    Clouds with fewer than ``k`` source points give every target all of them.

    Args:
        pos_source: ``[N, 3]`` source positions.
        pos_target: ``[M, 3]`` target positions.
        k: neighbours per target (positive int).
        batch_source, batch_target: sorted cloud indices ``[N]`` / ``[M]`` (both or neither;
            gaps allowed); every cloud with target points must have at least one source
            point.

    Returns:
        ``edge_index [2, E]`` with ``edge_index[0]`` indexing sources and ``edge_index[1]``
        targets (messages flow source -> target), sorted by target.
    """
    check_positions(pos_source, "pos_source")
    check_positions(pos_target, "pos_target")
    if not is_int(k) or k < 1:
        raise ValueError(f"k: expected a positive int, got {k!r}")
    k = int(k)
    if (batch_source is None) != (batch_target is None):
        raise ValueError("batch_source, batch_target: pass both or neither")
    batch_source = check_batch(batch_source, pos_source.shape[0], "batch_source")
    batch_target = check_batch(batch_target, pos_target.shape[0], "batch_target")
    source, source_mask = _dense(pos_source, batch_source)
    target, target_mask = _dense(pos_target, batch_target)
    # clouds without target points (a gap in batch_target) need no source points
    has_targets = target_mask.any(1)
    if target.shape[0] > source.shape[0] or not bool(
        source_mask[: target.shape[0]].any(1)[has_targets].all()
    ):
        raise ValueError("pos_source: every cloud with target points needs source points")
    source = source[: target.shape[0]]
    dist = exact_distances(target, source)
    dist = dist.masked_fill(~source_mask[: target.shape[0], None], math.inf)
    kk = min(k, source.shape[1])
    nearest = torch.topk(dist, kk, dim=2, largest=False)  # [B, m, kk]
    valid = torch.isfinite(nearest.values) & target_mask[..., None]
    sizes = source_mask.sum(1)
    offsets = (torch.cumsum(sizes, 0) - sizes)[: target.shape[0]]
    src = (nearest.indices + offsets[:, None, None])[valid]
    target_ids = torch.cumsum(target_mask.reshape(-1), 0).reshape(target_mask.shape) - 1
    dst = target_ids[..., None].expand_as(valid)[valid]
    return torch.stack([src, dst])
