"""The fused implicit convolution (hand-written backward) against the autograd path."""

from __future__ import annotations

import pytest
import torch

import symgraph as sg
import symgraph.nn.conv as conv_module
from symgraph.graph import knn_graph, radius_graph
from symgraph.nn import ImplicitSteerableConv
from symgraph.ops import EdgeLayout, fused_implicit_convolution, implicit_convolution

F64 = torch.float64


def make_conv(irreps_in, irreps_out, **kwargs) -> ImplicitSteerableConv:
    conv = ImplicitSteerableConv(irreps_in, irreps_out, group=sg.groups.O3(), **kwargs).double()
    with torch.no_grad():
        for parameter in conv.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    return conv


def run(conv, x, pos, edge_index, edge_attr=None, node_attr=None, path="recompute"):
    """Output and the gradients of every input and parameter of ``(out²).sum()`` through
    the fused path (``"recompute"``: checkpoint=True, ``"keep"``: checkpoint=False) or the
    autograd path of :func:`implicit_convolution` with every activation kept."""
    conv.checkpoint = path == "recompute"
    if path == "autograd":
        conv._fused_applies = lambda *args: False
    conv.zero_grad(set_to_none=True)
    inputs = [t for t in (x, pos, edge_attr, node_attr) if t is not None]
    for tensor in inputs:
        tensor.grad = None
    out = conv(x, pos, edge_index, edge_attr=edge_attr, node_attr=node_attr)
    out.square().sum().backward()
    conv.__dict__.pop("_fused_applies", None)
    grads = [t.grad.clone() for t in inputs] + [p.grad.clone() for p in conv.parameters()]
    return out.detach(), grads


def assert_paths_agree(conv, *args):
    out_autograd, grads_autograd = run(conv, *args, path="autograd")
    for path in ("recompute", "keep"):
        out_fused, grads_fused = run(conv, *args, path=path)
        torch.testing.assert_close(out_fused, out_autograd, rtol=0, atol=1e-12)
        for fused, reference in zip(grads_fused, grads_autograd, strict=True):
            torch.testing.assert_close(fused, reference, rtol=0, atol=1e-11)


@pytest.fixture
def count_fused(monkeypatch):
    """Counts calls of the fused path from the layer (so the tests cannot silently compare
    the autograd path with itself)."""
    calls = []

    def counting(*args, **kwargs):
        calls.append(1)
        return fused_implicit_convolution(*args, **kwargs)

    monkeypatch.setattr(conv_module, "fused_implicit_convolution", counting)
    return calls


def test_regular_knn_graph_matches_autograd(count_fused):
    gen = torch.Generator().manual_seed(0)
    conv = make_conv("6x0e + 3x1o", "5x0e + 2x1o + 1x2e")
    pos = torch.randn(30, 3, generator=gen, dtype=F64, requires_grad=True)
    x = torch.randn(30, conv.rep_in.dim, generator=gen, dtype=F64, requires_grad=True)
    assert_paths_agree(conv, x, pos, knn_graph(pos.detach(), 5))
    assert len(count_fused) == 2


@pytest.mark.parametrize("aggr", ["add", "mean"])
def test_irregular_graph_with_attributes_and_cutoff_matches_autograd(aggr, count_fused):
    gen = torch.Generator().manual_seed(1)
    conv = make_conv("3x0e + 2x1o + 1x2e", "2x0e + 1x1o + 0o", edge_dim=2, node_dim=3,
                     cutoff=1.8, aggr=aggr)  # fmt: skip
    pos = torch.randn(40, 3, generator=gen, dtype=F64, requires_grad=True)
    edge_index = radius_graph(pos.detach(), 1.8)
    edge_index = edge_index[:, torch.randperm(edge_index.shape[1], generator=gen)]  # unsorted
    edge_attr = torch.randn(edge_index.shape[1], 2, generator=gen, dtype=F64, requires_grad=True)
    node_attr = torch.randn(40, 3, generator=gen, dtype=F64, requires_grad=True)
    x = torch.randn(40, conv.rep_in.dim, generator=gen, dtype=F64, requires_grad=True)
    assert EdgeLayout.from_receivers(edge_index[1], 40).choose("auto") == "padded"
    assert_paths_agree(conv, x, pos, edge_index, edge_attr, node_attr)
    assert len(count_fused) == 2


def test_many_blocks_empty_blocks_and_isolated_nodes():
    """Tiny blocks, receivers without edges and whole blocks without edges."""
    gen = torch.Generator().manual_seed(2)
    conv = make_conv("4x0e + 1x1o", "4x0e + 1x1o", cutoff=3.0)
    num_nodes = 12
    src = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 8, 0, 1])
    dst = torch.tensor([1, 1, 1, 2, 2, 3, 9, 9, 9, 11, 11])  # 0, 4–8, 10: no edges
    pos = torch.randn(num_nodes, 3, generator=gen, dtype=F64, requires_grad=True)
    x = torch.randn(num_nodes, conv.rep_in.dim, generator=gen, dtype=F64, requires_grad=True)
    kernel = conv.kernel
    rel = pos[src] - pos[dst]
    head = kernel.head.weight_tensor(like=x)
    layout = EdgeLayout.from_receivers(dst, num_nodes)
    reference = implicit_convolution(
        kernel.hidden_function(x), head, x, src, dst, rel, None, None, None, num_nodes,
        checkpoint=False,
    )  # fmt: skip
    weights = torch.randn_like(reference)
    inputs = [x, pos, *kernel.parameters()]
    expected = torch.autograd.grad((reference * weights).sum(), inputs, retain_graph=True)
    for keep in (False, True):
        fused = fused_implicit_convolution(
            kernel.assemble(x).layers, head, x, src, dst, kernel.embed_feature_major(rel),
            kernel.envelope(rel), layout, block_edges=3, keep_activations=keep,
        )  # fmt: skip
        torch.testing.assert_close(fused, reference, rtol=0, atol=1e-12)
        assert fused[[0, 4, 5, 6, 7, 8, 10]].abs().max().item() == 0.0
        grads = torch.autograd.grad((fused * weights).sum(), inputs, retain_graph=True)
        for got, want in zip(grads, expected, strict=True):
            torch.testing.assert_close(got, want, rtol=0, atol=1e-11)


def test_graph_without_edges_gives_zeros_connected_to_the_inputs():
    """No edges at all: the output is zero yet differentiable (zero gradients for x and W̃),
    with and without checkpointing."""
    x = torch.randn(5, 2, dtype=F64, requires_grad=True)
    weight = torch.randn(4, 3, 2, dtype=F64, requires_grad=True)
    none = torch.zeros(0, dtype=torch.long)
    rel = torch.zeros(0, 3, dtype=F64)
    for checkpoint in (False, True):
        out = implicit_convolution(
            lambda r, *_: r, weight, x, none, none, rel, None, None, None, 5,
            checkpoint=checkpoint,
        )  # fmt: skip
        assert out.shape == (5, 4) and out.abs().max().item() == 0.0
        grad_x, grad_weight = torch.autograd.grad(out.sum(), [x, weight])
        assert grad_x.abs().max().item() == 0.0 and grad_weight.abs().max().item() == 0.0


def test_gradcheck_and_double_backward():
    """First and second derivatives (teleportation and force training need the latter)."""
    gen = torch.Generator().manual_seed(3)
    conv = make_conv("2x0e + 1x1o", "1x0e + 1x1o", cutoff=2.5)
    pos = torch.randn(8, 3, generator=gen, dtype=F64, requires_grad=True)
    edge_index = knn_graph(pos.detach(), 3)
    x = torch.randn(8, conv.rep_in.dim, generator=gen, dtype=F64, requires_grad=True)
    _check_second_derivatives(conv, x, pos, edge_index)


def _check_second_derivatives(conv, x, pos, edge_index) -> None:
    """gradcheck and gradgradcheck of ``conv`` in ``x`` and ``pos``, with and without
    recomputing the kernel in backward."""

    def layer(features, positions):
        return conv(features, positions, edge_index)

    for checkpoint in (True, False):
        conv.checkpoint = checkpoint
        assert torch.autograd.gradcheck(layer, (x, pos))
        assert torch.autograd.gradgradcheck(layer, (x, pos))


def test_double_backward_on_a_padded_graph():
    """Second derivatives where receivers have fewer edges than their block's slots (the
    empty slots read a row of zeros appended to the node features), with receivers that
    are not in order of in-degree."""
    gen = torch.Generator().manual_seed(5)
    conv = make_conv("2x0e + 1x1o", "1x0e + 1x1o", cutoff=2.0, block_edges=12)
    src = torch.tensor([1, 2, 3, 0, 0, 1, 2, 4, 5, 0])
    dst = torch.tensor([0, 0, 0, 1, 2, 2, 5, 5, 5, 4])  # in-degrees 3, 1, 2, 0, 1, 3
    edge_index = torch.stack([src, dst])
    assert EdgeLayout.from_receivers(dst, 6).choose("auto") == "padded"
    pos = torch.randn(6, 3, generator=gen, dtype=F64, requires_grad=True)
    x = torch.randn(6, conv.rep_in.dim, generator=gen, dtype=F64, requires_grad=True)
    _check_second_derivatives(conv, x, pos, edge_index)


def test_scatter_layout_is_refused_by_name():
    conv = make_conv("2x0e", "2x0e")
    dst = torch.tensor([0] * 40 + [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16])
    layout = EdgeLayout.from_receivers(dst, 17)
    assert layout.choose("auto") == "scatter"
    x = torch.randn(17, 2, dtype=F64)
    rel = torch.randn(dst.shape[0], 3, dtype=F64)
    with pytest.raises(ValueError, match="layout"):
        weights = conv.kernel.assemble(x)
        fused_implicit_convolution(
            weights.layers, weights.head, x, torch.zeros_like(dst), dst,
            conv.kernel.embed_feature_major(rel), None, layout,
        )  # fmt: skip


def test_kept_intermediates_serve_repeated_backward():
    """``retain_graph=True``: a second backward through the kept blocks gives the same grads."""
    gen = torch.Generator().manual_seed(4)
    conv = make_conv("3x0e + 1x1o", "2x0e + 1x1o")
    conv.checkpoint = False
    pos = torch.randn(20, 3, generator=gen, dtype=F64)
    x = torch.randn(20, conv.rep_in.dim, generator=gen, dtype=F64, requires_grad=True)
    out = conv(x, pos, knn_graph(pos, 4)).square().sum()
    (first,) = torch.autograd.grad(out, x, retain_graph=True)
    (second,) = torch.autograd.grad(out, x)
    torch.testing.assert_close(first, second, rtol=0, atol=0)
