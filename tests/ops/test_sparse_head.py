"""The block-sparse head of the fused convolution against the dense one."""

from __future__ import annotations

import pytest
import torch

from symgraph.graph import radius_graph
from symgraph.groups import group_from_name
from symgraph.models import SteerableMoleculeNet
from symgraph.nn import ImplicitSteerableConv, RelaxedImplicitSteerableConv
from symgraph.ops import EdgeLayout, fused_implicit_convolution
from symgraph.ops.sparse_head import (
    MAX_DENSITY,
    MAX_PRODUCTS,
    group_weights,
    head_groups,
    scatter_group_grads,
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
