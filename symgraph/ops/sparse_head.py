"""The bilinear head ``W̃ [C, A, B]`` applied block-sparsely to node sums ``S [n, A, B]``.

An equivariant head couples a hidden block ``a`` and an input block ``b`` only to the output
blocks that appear in ``a ⊗ b`` (for O(3), the Clebsch–Gordan selection rules): for the
default QM9 layer, ``8x0e + 4x1o + 2x2e`` ⊗ ``32x0e + 8x1o + 4x2e`` → 88 outputs, a dense
``[n, A·B] @ [A·B, C]`` spends about 2.6 times the multiplications that the nonzero blocks
need. :func:`head_groups` finds those blocks from the basis' support once; the fused
convolution (:mod:`symgraph.ops.kernel_conv`) then runs one matrix product per pair of
(``a``-block, ``b``-block) and contiguous output span:
``out[:, span] += S[:, a, b].reshape(n, -1) @ W̃[span, a, b]`` (reshaped to ``[|a|·|b|, |span|]``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor

from symgraph.caching import compile_aware_cache, tensor_cache

__all__ = [
    "HeadGroup",
    "head_groups",
    "group_weights",
    "gathered_sums",
    "grouped_head",
    "scatter_group_grads",
    "uncovered_blocks",
]

MAX_DENSITY = 0.6
"""Grouping pays only when the blocks hold at most this share of the dense head's products."""
MAX_PRODUCTS = 32
"""Above this many matrix products per node block, call overhead eats the saving."""


@dataclass(frozen=True)
class HeadGroup:
    """Rows ``a`` (hidden features) and columns ``b`` (input features) of the node sums,
    and the output spans the head maps them to (sorted, disjoint, not adjacent)."""

    a: slice
    b: slice
    spans: tuple[slice, ...]

    @property
    def size(self) -> int:
        """``|a|·|b|``: the inner dimension of the group's products."""
        return (self.a.stop - self.a.start) * (self.b.stop - self.b.start)


def _merged(spans: Iterable[slice]) -> tuple[slice, ...]:
    merged: list[slice] = []
    for span in sorted(spans, key=lambda s: s.start):
        if merged and span.start <= merged[-1].stop:
            merged[-1] = slice(merged[-1].start, max(merged[-1].stop, span.stop))
        else:
            merged.append(span)
    return tuple(merged)


def head_groups(
    support: Iterable[tuple[slice, slice, slice]], shape: tuple[int, int, int]
) -> tuple[HeadGroup, ...] | None:
    """The head's nonzero blocks as :class:`HeadGroup` s, or None when dense is cheaper.

    Args:
        support: ``(out, a, b)`` slices of every block the head may be nonzero in (e.g. the
            triples of :class:`~symgraph.groups.basis.BilinearBasis`).
        shape: the head's ``(C, A, B)``.
    """
    outputs: dict[tuple[int, int, int, int], list[slice]] = {}
    for out, a, b in support:
        outputs.setdefault((a.start, a.stop, b.start, b.stop), []).append(out)
    groups = tuple(
        HeadGroup(slice(a0, a1), slice(b0, b1), _merged(spans))
        for (a0, a1, b0, b1), spans in sorted(outputs.items())
    )
    products = sum(len(g.spans) for g in groups)
    cost = sum(g.size * sum(s.stop - s.start for s in g.spans) for g in groups)
    num_c, num_a, num_b = shape
    if not groups or products > MAX_PRODUCTS or cost > MAX_DENSITY * num_c * num_a * num_b:
        return None
    return groups


def _group_key(groups: tuple[HeadGroup, ...]) -> tuple:
    """The groups as nested tuples of ints (hashable: slices are not, before Python 3.12)."""
    return tuple(
        (g.a.start, g.a.stop, g.b.start, g.b.stop, tuple((s.start, s.stop) for s in g.spans))
        for g in groups
    )


@tensor_cache(maxsize=64)
def _weight_positions(
    key: tuple, shape: tuple[int, int, int], device: torch.device
) -> tuple[Tensor, tuple[int, ...], tuple[tuple[int, int], ...]]:
    """Where the group matrices of :func:`group_weights` lie in a head of ``shape``
    ``(C, A, B)``: ``(index [M], numels, shapes)``, with ``index`` the flat positions in
    the head of every matrix's entries, matrix after matrix, each row-major (``M``: the
    entries of all the matrices; ``key`` from :func:`_group_key`)."""
    _, num_a, num_b = shape
    parts, numels, shapes = [], [], []
    for a0, a1, b0, b1, spans in key:
        a = torch.arange(a0, a1, device=device)[:, None, None]
        b = torch.arange(b0, b1, device=device)[None, :, None]
        for c0, c1 in spans:
            c = torch.arange(c0, c1, device=device)[None, None, :]
            parts.append(((c * num_a + a) * num_b + b).reshape(-1))  # [|a|, |b|, |span|]
            numels.append(parts[-1].numel())
            shapes.append(((a1 - a0) * (b1 - b0), c1 - c0))
    return torch.cat(parts), tuple(numels), tuple(shapes)


def group_weights(head: Tensor, groups: tuple[HeadGroup, ...]) -> list[list[Tensor]]:
    """``head [C, A, B]`` cut into each group's ``[|a|·|b|, |span|]`` matrices (per span):
    ``head[span, a, b]`` as ``[|a|, |b|, |span|]`` flattened to a matrix, all of them
    gathered by one ``index_select`` (views of one buffer)."""
    index, numels, shapes = _weight_positions(_group_key(groups), tuple(head.shape), head.device)
    chunks = iter(head.reshape(-1).index_select(0, index).split(numels))
    matrices = [chunk.view(shape) for chunk, shape in zip(chunks, shapes, strict=True)]
    out, start = [], 0
    for g in groups:
        out.append(matrices[start : start + len(g.spans)])
        start += len(g.spans)
    return out


def gathered_sums(summed: Tensor, group: HeadGroup, out: Tensor) -> Tensor:
    """``S[:, a, b]`` of ``summed [n, A', B']`` copied into ``out [n, |a|·|b|]``."""
    n = summed.shape[0]
    out.view(n, group.a.stop - group.a.start, -1).copy_(summed[:, group.a, group.b])
    return out


def grouped_head(
    summed: Tensor,
    groups: tuple[HeadGroup, ...],
    weights: list[list[Tensor]],
    num_out: int,
    buffer: Tensor,
) -> Tensor:
    """``out [n, C] = W̃(S)`` from ``summed [n, A', B']``, block by block (``buffer``: at
    least ``n · max |a|·|b|`` elements of scratch)."""
    n = summed.shape[0]
    out = summed.new_zeros(n, num_out)
    for group, matrices in zip(groups, weights, strict=True):
        rows = gathered_sums(summed, group, buffer[: n * group.size].view(n, group.size))
        for span, matrix in zip(group.spans, matrices, strict=True):
            out[:, span].addmm_(rows, matrix)
    return out


def scatter_group_grads(
    grads: list[list[Tensor]], groups: tuple[HeadGroup, ...], shape: tuple[int, int, int], like
) -> Tensor:
    """The head's gradient ``[C, A, B]`` from each group's ``[|a|·|b|, |span|]`` gradients
    (zero outside the groups, where the head is structurally zero): the inverse of
    :func:`group_weights`, one ``index_copy_``."""
    index, _, _ = _weight_positions(_group_key(groups), tuple(shape), like.device)
    flat = torch.cat([matrix.reshape(-1) for matrices in grads for matrix in matrices])
    grad = torch.zeros(math.prod(shape), dtype=like.dtype, device=like.device)
    return grad.index_copy_(0, index, flat).view(shape)


def uncovered_blocks(
    groups: tuple[HeadGroup, ...], rows: int, cols: int
) -> tuple[tuple[slice, slice], ...]:
    """``(a, b)`` rectangles that, with the groups' ``(group.a, group.b)``, tile an
    ``[rows, cols]`` plane of node sums (e.g. ``[A', B']`` with its alignment padding): the
    entries no group reads or writes. A backward that writes ``dL/dS`` group by group
    zeroes only these instead of the whole ``[n, A', B']`` tensor."""
    rects = tuple((g.a.start, g.a.stop, g.b.start, g.b.stop) for g in groups)
    return _uncovered_blocks(rects, rows, cols)


@compile_aware_cache(maxsize=64)
def _uncovered_blocks(
    rects: tuple[tuple[int, int, int, int], ...], rows: int, cols: int
) -> tuple[tuple[slice, slice], ...]:
    """:func:`uncovered_blocks` of the rectangles ``(a0, a1, b0, b1)`` (a hashable key):
    the plane is cut along every rectangle edge into cells, each either inside a rectangle
    or outside all; uncovered cells are merged into runs along a band of rows, and runs
    spanning the same columns in adjacent bands into one rectangle."""
    row_edges = sorted({0, rows, *(r for a0, a1, _, _ in rects for r in (a0, a1))})
    col_edges = sorted({0, cols, *(c for _, _, b0, b1 in rects for c in (b0, b1))})
    blocks: list[list[int]] = []  # [r0, r1, c0, c1]
    for r0, r1 in zip(row_edges, row_edges[1:]):
        runs: list[list[int]] = []
        for c0, c1 in zip(col_edges, col_edges[1:]):
            if any(a0 <= r0 and r1 <= a1 and b0 <= c0 and c1 <= b1 for a0, a1, b0, b1 in rects):
                continue
            if runs and runs[-1][1] == c0:
                runs[-1][1] = c1
            else:
                runs.append([c0, c1])
        for c0, c1 in runs:
            above = next((b for b in blocks if b[1] == r0 and b[2:] == [c0, c1]), None)
            if above is not None:
                above[1] = r1
            else:
                blocks.append([r0, r1, c0, c1])
    return tuple((slice(r0, r1), slice(c0, c1)) for r0, r1, c0, c1 in blocks)
