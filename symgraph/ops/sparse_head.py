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

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "HeadGroup",
    "head_groups",
    "group_weights",
    "gathered_sums",
    "grouped_head",
    "scatter_group_grads",
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


def group_weights(head: Tensor, groups: tuple[HeadGroup, ...]) -> list[list[Tensor]]:
    """``head [C, A, B]`` cut into each group's ``[|a|·|b|, |span|]`` matrices (per span)."""
    return [
        [head[span, g.a, g.b].permute(1, 2, 0).reshape(g.size, -1) for span in g.spans]
        for g in groups
    ]


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
    (zero outside the groups, where the head is structurally zero)."""
    grad = torch.zeros(shape, dtype=like.dtype, device=like.device)
    for group, matrices in zip(groups, grads, strict=True):
        size_a = group.a.stop - group.a.start
        for span, matrix in zip(group.spans, matrices, strict=True):
            grad[span, group.a, group.b] = matrix.view(size_a, -1, matrix.shape[1]).permute(2, 0, 1)
    return grad
