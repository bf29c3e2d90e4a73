"""The block-sparse head of the fused convolution against the dense one."""

from __future__ import annotations

import math

import pytest
import torch

from symgraph.graph import radius_graph
from symgraph.groups import group_from_name
from symgraph.models import SteerableMoleculeNet
from symgraph.nn import ImplicitSteerableConv, RelaxedImplicitSteerableConv
from symgraph.ops import EdgeLayout, fused_implicit_convolution, kernel_conv
from symgraph.ops.sparse_head import (
    MAX_DENSITY,
    MAX_PRODUCTS,
    group_weights,
    head_groups,
    scatter_group_grads,
    uncovered_blocks,
)

F64 = torch.float64


def test_spans_of_one_block_pair_are_merged_and_sorted():
    support = [
        (slice(6, 8), slice(0, 2), slice(0, 3)),
        (slice(0, 2), slice(0, 2), slice(0, 3)),
        (slice(2, 4), slice(0, 2), slice(0, 3)),
        (slice(4, 6), slice(2, 4), slice(3, 5)),
    ]
    groups = head_groups(support, (20, 4, 5))
    assert groups is not None and len(groups) == 2
    first, second = groups
    assert (first.a, first.b, first.spans) == (slice(0, 2), slice(0, 3), (slice(0, 4), slice(6, 8)))
    assert (second.a, second.b, second.spans) == (slice(2, 4), slice(3, 5), (slice(4, 6),))


def test_dense_support_gives_none():
    assert head_groups([(slice(0, 5), slice(0, 4), slice(0, 3))], (5, 4, 3)) is None
    assert head_groups([], (5, 4, 3)) is None


def test_qm9_layer_head_needs_under_two_fifths_of_the_dense_products():
    """The default SteerableMoleculeNet layer: 8x0e+4x1o+2x2e ⊗ 32x0e+8x1o+4x2e → 88."""
    model = SteerableMoleculeNet()
    kernel = model.convs[0].kernel
    groups = kernel.head_groups
    assert groups is not None and len(groups) == 9  # every (l_a, l_b) pair of 0, 1, 2
    products = sum(g.size * sum(s.stop - s.start for s in g.spans) for g in groups)
    dense = kernel.rep_out.dim * kernel.rep_hidden.dim * kernel.rep_in.dim
    assert products / dense < 0.4


@pytest.mark.parametrize("group", ["O3", "SO3", "Octahedral", "Inversion", "Icosahedral"])
def test_groups_cover_the_assembled_head_exactly(group):
    """Cutting a random equivariant head into the groups' matrices and scattering them back
    gives the head itself: nothing nonzero lies outside the groups."""
    conv = SteerableMoleculeNet(group=group).convs[0]
    with torch.no_grad():
        for parameter in conv.parameters():
            parameter.copy_(torch.randn_like(parameter))
    head = conv.kernel.assemble(torch.zeros(1)).head
    groups = conv.kernel.head_groups
    assert groups is not None
    rebuilt = scatter_group_grads(group_weights(head, groups), groups, tuple(head.shape), head)
    torch.testing.assert_close(rebuilt, head, rtol=0, atol=0)


@pytest.mark.parametrize("group", ["C4", "SO2"])
def test_planar_groups_couple_every_block_and_keep_a_dense_head(group):
    assert SteerableMoleculeNet(group=group).convs[0].kernel.head_groups is None


def test_relaxed_kernel_keeps_a_dense_head():
    conv = RelaxedImplicitSteerableConv("2x0e + 1x1o", "2x0e + 1x1o", group=group_from_name("O3"))
    assert conv.kernel.head_groups is None


@pytest.mark.parametrize("keep", [False, True])
@pytest.mark.parametrize("aggr", ["add", "mean"])
def test_block_sparse_head_matches_dense_head(keep, aggr):
    """Output and every gradient, block-sparse against dense head, in float64, over several
    node blocks of a padded (irregular) graph."""
    gen = torch.Generator().manual_seed(5)
    conv = ImplicitSteerableConv(
        "4x0e + 2x1o + 2x2e", "3x0e + 2x1o + 1x2e", group=group_from_name("O3"), cutoff=2.0,
        edge_dim=2, aggr=aggr,
    ).double()  # fmt: skip
    with torch.no_grad():
        for parameter in conv.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    kernel = conv.kernel
    assert kernel.head_groups is not None
    num_nodes = 50
    pos = torch.randn(num_nodes, 3, generator=gen, dtype=F64, requires_grad=True)
    src, dst = radius_graph(pos.detach(), 2.0)
    x = torch.randn(num_nodes, conv.rep_in.dim, generator=gen, dtype=F64, requires_grad=True)
    edge_attr = torch.randn(src.shape[0], 2, generator=gen, dtype=F64)
    layout = EdgeLayout.from_receivers(dst, num_nodes)
    assert layout.choose("auto") == "padded"

    def convolve(groups):
        weights = kernel.assemble(x)
        rel = pos[src] - pos[dst]
        return fused_implicit_convolution(
            weights.layers, weights.head, x, src, dst,
            kernel.embed_feature_major(rel, edge_attr), kernel.envelope(rel), layout,
            mean=aggr == "mean", block_edges=64, keep_activations=keep, head_groups=groups,
        )  # fmt: skip

    inputs = [x, pos, *kernel.parameters()]
    dense = convolve(None)
    sparse = convolve(kernel.head_groups)
    torch.testing.assert_close(sparse, dense, rtol=0, atol=1e-12)
    weights = torch.randn(dense.shape, generator=gen, dtype=F64)
    expected = torch.autograd.grad((dense * weights).sum(), inputs)
    got = torch.autograd.grad((sparse * weights).sum(), inputs)
    for value, reference in zip(got, expected, strict=True):
        torch.testing.assert_close(value, reference, rtol=0, atol=1e-11)


def test_grouping_thresholds_are_inclusive_and_contained_spans_merge():
    """Groups are kept at exactly ``MAX_PRODUCTS`` products and exactly ``MAX_DENSITY`` of
    the dense cost ("at most"), dropped one step beyond; a span lying inside an earlier one
    merges into it."""
    n = MAX_PRODUCTS
    support = [(slice(2 * i, 2 * i + 1), slice(i, i + 1), slice(0, 1)) for i in range(n)]
    groups = head_groups(support, (2 * n, n, 1))
    assert groups is not None and sum(len(g.spans) for g in groups) == n
    more = support + [(slice(2 * n, 2 * n + 1), slice(n, n + 1), slice(0, 1))]
    assert head_groups(more, (2 * n + 2, n + 1, 1)) is None
    assert MAX_DENSITY * 5 == 3.0  # three of five outputs is exactly the threshold
    assert head_groups([(slice(0, 3), slice(0, 1), slice(0, 1))], (5, 1, 1)) is not None
    assert head_groups([(slice(0, 4), slice(0, 1), slice(0, 1))], (5, 1, 1)) is None
    a, b = slice(0, 2), slice(0, 3)
    (group,) = head_groups([(slice(0, 4), a, b), (slice(1, 2), a, b)], (20, 4, 5))
    assert group.spans == (slice(0, 4),)


def _holed_conv() -> ImplicitSteerableConv:
    """A layer whose head groups leave holes: under O(3), ``0e ⊗ 2e`` and ``2e ⊗ 0e`` reach
    no output block of ``3x0e + 2x1o``."""
    conv = ImplicitSteerableConv(
        "2x2e + 2x0e", "3x0e + 2x1o", group=group_from_name("O3"), cutoff=2.0,
        hidden="2x0e + 2x1o + 1x2e",
    ).double()  # fmt: skip
    with torch.no_grad():
        for parameter in conv.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    return conv


@pytest.mark.parametrize("holed", [False, True])
def test_group_weights_are_the_head_blocks_as_matrices(holed):
    """Each matrix is ``head[span, a, b]`` as ``[|a|, |b|, |span|]`` flattened row-major to
    ``[|a|·|b|, |span|]``, for the QM9 layer and for groups with holes."""
    conv = _holed_conv() if holed else SteerableMoleculeNet().convs[0]
    groups = conv.kernel.head_groups
    assert groups is not None
    head = torch.randn(conv.kernel.assemble(torch.zeros(1)).head.shape, dtype=F64)
    got = group_weights(head, groups)
    assert [len(matrices) for matrices in got] == [len(g.spans) for g in groups]
    for group, matrices in zip(groups, got, strict=True):
        for span, matrix in zip(group.spans, matrices, strict=True):
            block = head[span, group.a, group.b].permute(1, 2, 0)
            torch.testing.assert_close(matrix, block.reshape(group.size, -1), rtol=0, atol=0)


@pytest.mark.parametrize("holed", [False, True])
def test_uncovered_blocks_tile_the_plane_with_the_groups(holed):
    """Groups and uncovered blocks together cover every entry of the aligned ``[A', B']``
    plane exactly once; the QM9 layer leaves only its alignment padding uncovered."""
    conv = _holed_conv() if holed else SteerableMoleculeNet().convs[0]
    groups = conv.kernel.head_groups
    rows = -(-conv.kernel.rep_hidden.dim // 8) * 8
    cols = -(-conv.kernel.rep_in.dim // 8) * 8
    count = torch.zeros(rows, cols, dtype=torch.long)
    for group in groups:
        count[group.a, group.b] += 1
    blocks = uncovered_blocks(groups, rows, cols)
    for a, b in blocks:
        count[a, b] += 1
    assert bool((count == 1).all())
    num_a, num_b = conv.kernel.rep_hidden.dim, conv.kernel.rep_in.dim
    if holed:  # a hole: a block within the unpadded [A, B]
        assert any(a.stop <= num_a and b.stop <= num_b for a, b in blocks)
    else:
        assert all(a.start >= num_a or b.start >= num_b for a, b in blocks)


def test_uncovered_blocks_do_not_bridge_a_covered_band():
    """Uncovered runs of the same columns above and below a fully covered band stay two
    rectangles (merging them would cover the band's group a second time)."""
    from symgraph.ops.sparse_head import HeadGroup

    band = HeadGroup(a=slice(2, 4), b=slice(0, 4), spans=(slice(0, 1),))
    corner = HeadGroup(a=slice(6, 7), b=slice(3, 4), spans=(slice(0, 1),))
    blocks = uncovered_blocks((band, corner), 8, 4)
    count = torch.zeros(8, 4, dtype=torch.long)
    for a, b in [(band.a, band.b), (corner.a, corner.b), *blocks]:
        count[a, b] += 1
    assert bool((count == 1).all())
    assert (slice(0, 2), slice(0, 4)) in blocks


def test_block_sparse_head_ignores_stale_workspace_memory(monkeypatch):
    """The backward writes ``dL/dS`` group by group and zeroes only the entries no group
    writes (holes and alignment padding): workspace buffers that start full of NaN, as
    reused memory may, still give the dense head's output and gradients, over several
    node blocks of a padded graph, with intermediates kept and recomputed."""

    class StaleWorkspace(kernel_conv.Workspace):
        def get(self, key: str, *shape: int) -> torch.Tensor:
            fresh = key not in self.buffers or self.buffers[key].numel() < math.prod(shape)
            view = super().get(key, *shape)
            if fresh:
                self.buffers[key].fill_(float("nan"))
            return view

    monkeypatch.setattr(kernel_conv, "Workspace", StaleWorkspace)
    gen = torch.Generator().manual_seed(6)
    conv = _holed_conv()
    kernel = conv.kernel
    num_nodes = 40
    pos = torch.randn(num_nodes, 3, generator=gen, dtype=F64, requires_grad=True)
    src, dst = radius_graph(pos.detach(), 2.0)
    x = torch.randn(num_nodes, conv.rep_in.dim, generator=gen, dtype=F64, requires_grad=True)
    layout = EdgeLayout.from_receivers(dst, num_nodes)
    assert layout.choose("auto") == "padded"
    inputs = [x, pos, *kernel.parameters()]
    weights = torch.randn(num_nodes, conv.rep_out.dim, generator=gen, dtype=F64)

    def convolve(groups, keep):
        assembled = kernel.assemble(x)
        rel = pos[src] - pos[dst]
        out = fused_implicit_convolution(
            assembled.layers, assembled.head, x, src, dst, kernel.embed_feature_major(rel),
            kernel.envelope(rel), layout, block_edges=48, keep_activations=keep,
            head_groups=groups,
        )  # fmt: skip
        return out, torch.autograd.grad((out * weights).sum(), inputs)

    for keep in (False, True):
        dense, expected = convolve(None, keep)
        sparse, got = convolve(kernel.head_groups, keep)
        torch.testing.assert_close(sparse, dense, rtol=0, atol=1e-12)
        for value, reference in zip(got, expected, strict=True):
            torch.testing.assert_close(value, reference, rtol=0, atol=1e-11)
