"""PyG explainability on ImplicitSteerableConv: edge masks scale messages as ``propagate``
would, on every path (fused CPU, generic, lattice fallback), and propagate hooks refuse."""

from __future__ import annotations

from unittest import mock

import pytest
import torch
from torch import Tensor, nn
from torch_geometric.explain import AttentionExplainer, Explainer, GNNExplainer
from torch_geometric.explain.algorithm.utils import clear_masks, set_masks
from torch_geometric.nn import GATConv

import symgraph.nn.conv as conv_module
from symgraph.graph import radius_graph
from symgraph.lattice import Lattice, lattice_graph
from symgraph.nn import ImplicitSteerableConv
from symgraph.nn.relaxed_implicit import RelaxedImplicitSteerableConv
from symgraph.ops import EdgeLayout

IN, OUT = "3x0e + 2x1o", "2x0e + 1x1o"
#: constructor options forcing each path: (backend, checkpoint) and whether the fused
#: CPU path (``_fused_applies``) runs.
PATHS = {
    "fused": ({"backend": "auto", "checkpoint": True}, True),
    "fused-kept": ({"backend": "auto", "checkpoint": False}, True),
    "generic": ({"backend": "scatter", "checkpoint": True}, False),
    "generic-no-checkpoint": ({"backend": "scatter", "checkpoint": False}, False),
}
HOOKS = [
    f"register_{stage}_forward{kind}_hook"
    for stage in ("propagate", "message", "aggregate", "message_and_aggregate", "edge_update")
    for kind in ("_pre", "")
]


def random_graph(num_nodes: int = 16, seed: int = 0) -> dict[str, Tensor]:
    """Positions ``[N, 3]``, ``edge_index [2, E]``, edge/node attributes and ``x [N, 9]``
    (float64)."""
    gen = torch.Generator().manual_seed(seed)
    pos = 1.5 * torch.randn(num_nodes, 3, generator=gen, dtype=torch.float64)
    edge_index = radius_graph(pos, 2.5)
    num_edges = edge_index.shape[1]
    return {
        "x": torch.randn(num_nodes, 9, generator=gen, dtype=torch.float64),
        "pos": pos,
        "edge_index": edge_index,
        "edge_attr": torch.randn(num_edges, 2, generator=gen, dtype=torch.float64),
        "node_attr": torch.randn(num_nodes, 1, generator=gen, dtype=torch.float64),
    }


def make_conv(path: str, aggr: str = "add", cls=ImplicitSteerableConv) -> ImplicitSteerableConv:
    """A float64 layer with attributes and a cutoff, forced onto ``path`` of :data:`PATHS`."""
    torch.manual_seed(0)
    conv = cls(IN, OUT, edge_dim=2, node_dim=1, cutoff=2.5, aggr=aggr, **PATHS[path][0])
    with torch.no_grad():
        for bias in conv.bias.biases:
            bias.normal_()
    return conv.double()


def run(conv: ImplicitSteerableConv, graph: dict[str, Tensor]) -> Tensor:
    return conv(
        graph["x"], graph["pos"], graph["edge_index"], graph["edge_attr"], graph["node_attr"]
    )


def masked(conv, graph, mask: Tensor, apply_sigmoid: bool = True) -> Tensor:
    """The layer's output with ``mask [E]`` set as PyG's explainers set it."""
    set_masks(conv, mask, graph["edge_index"], apply_sigmoid=apply_sigmoid)
    try:
        return run(conv, graph)
    finally:
        clear_masks(conv)


def explicit_reference(conv, graph, weight: Tensor) -> Tensor:
    """``Σ_j w_ij K_ij f_j`` (``/ in-degree`` for ``"mean"``) ``+ W_self f_i + b`` with
    materialised per-edge kernels: PyG's masked propagate, written out."""
    x, pos, (src, dst) = graph["x"], graph["pos"], graph["edge_index"]
    node_attr = graph["node_attr"]
    kernels = conv.kernel(pos[src] - pos[dst], graph["edge_attr"], node_attr[src], node_attr[dst])
    messages = weight[:, None] * (kernels @ x[src, :, None])[..., 0]
    out = torch.zeros(x.shape[0], conv.rep_out.dim, dtype=x.dtype).index_add(0, dst, messages)
    if conv.aggr == "mean":
        out = out / torch.bincount(dst, minlength=x.shape[0]).clamp_min(1).to(out)[:, None]
    return conv.bias(out + conv.self_linear(x))


@pytest.mark.parametrize("path", list(PATHS))
def test_each_path_is_the_one_forced(path):
    conv, graph = make_conv(path), random_graph()
    layout = EdgeLayout.from_receivers(graph["edge_index"][1], graph["x"].shape[0])
    assert conv._fused_applies(graph["x"], layout) is PATHS[path][1]


@pytest.mark.parametrize("path", list(PATHS))
def test_a_mask_of_ones_leaves_the_output_unchanged(path):
    conv, graph = make_conv(path), random_graph()
    ones = torch.ones(graph["edge_index"].shape[1], dtype=torch.float64)
    expected = run(conv, graph)
    out = masked(conv, graph, ones, apply_sigmoid=False)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
    assert conv.explain is None and conv._edge_mask is None  # cleared: plain forward again


@pytest.mark.parametrize("path", list(PATHS))
def test_a_mask_of_zeros_removes_those_edges(path):
    conv, graph = make_conv(path), random_graph()
    num_edges = graph["edge_index"].shape[1]
    keep = torch.arange(num_edges) % 3 != 0
    out = masked(conv, graph, keep.double(), apply_sigmoid=False)
    pruned = dict(
        graph, edge_index=graph["edge_index"][:, keep], edge_attr=graph["edge_attr"][keep]
    )
    torch.testing.assert_close(out, run(conv, pruned), rtol=0, atol=1e-12)


@pytest.mark.parametrize("aggr", ["add", "mean"])
@pytest.mark.parametrize("path", ["fused", "generic"])
def test_mask_logits_scale_each_message_by_their_sigmoid(path, aggr):
    """As ``MessagePassing.explain_message``: sigmoid of the logits times each message,
    ``"mean"`` dividing by the full in-degree; gradients reach every logit."""
    conv, graph = make_conv(path, aggr), random_graph()
    logits = torch.randn(graph["edge_index"].shape[1], dtype=torch.float64, requires_grad=True)
    out = masked(conv, graph, logits)
    expected = explicit_reference(conv, graph, logits.sigmoid())
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-12)
    probe = torch.randn_like(out)
    (grad,) = torch.autograd.grad((out * probe).sum(), logits)
    (expected_grad,) = torch.autograd.grad((expected * probe).sum(), logits)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-9, atol=1e-12)


def test_a_float32_mask_scales_a_float64_layer():
    """Explainers create float32 masks whatever the model's dtype."""
    conv, graph = make_conv("fused"), random_graph()
    logits = torch.randn(graph["edge_index"].shape[1])
    expected = explicit_reference(conv, graph, logits.sigmoid().double())
    torch.testing.assert_close(masked(conv, graph, logits), expected, rtol=1e-10, atol=1e-12)


def test_relaxed_implicit_conv_honours_the_mask():
    conv, graph = make_conv("fused", cls=RelaxedImplicitSteerableConv), random_graph()
    with torch.no_grad():
        conv.kernel.head.free.normal_()  # the non-equivariant pathway on
    keep = torch.arange(graph["edge_index"].shape[1]) % 2 == 0
    out = masked(conv, graph, keep.double(), apply_sigmoid=False)
    pruned = dict(
        graph, edge_index=graph["edge_index"][:, keep], edge_attr=graph["edge_attr"][keep]
    )
    torch.testing.assert_close(out, run(conv, pruned), rtol=0, atol=1e-12)


def test_an_explained_lattice_layer_runs_message_passing():
    """The dense fast path has no per-edge messages: with a mask, the layer runs message
    passing on the lattice graph (minimum-image offsets on the periodic axes)."""
    lattice = Lattice((5, 4), radius=1, periodic=(True, False))
    graph = lattice_graph(lattice, 2, dtype=torch.float64)
    torch.manual_seed(0)
    conv = ImplicitSteerableConv(IN, OUT, r_max=3.0).double()
    x = torch.randn(graph.pos.shape[0], conv.rep_in.dim, dtype=torch.float64)
    logits = torch.randn(graph.edge_index.shape[1], dtype=torch.float64)
    set_masks(conv, logits, graph.edge_index)
    expected = conv(x, graph.pos, graph.edge_index, rel=graph.offsets)
    spy = mock.patch.object(
        conv_module, "lattice_convolution", wraps=conv_module.lattice_convolution
    )
    with spy as dense:
        out = conv(x, graph.pos, graph.edge_index, lattice=lattice)
        assert dense.call_count == 0
        with pytest.raises(ValueError, match=r"edge_index: expected lattice_graph\(lattice, 2\)"):
            conv(x, graph.pos, graph.edge_index.flip(1), lattice=lattice)
        clear_masks(conv)
        unmasked = conv(x, graph.pos, graph.edge_index, lattice=lattice)
        assert dense.call_count == 1  # unexplained: the fast path again
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
    assert float((out - unmasked).detach().abs().max()) > 1e-3  # and the mask did act


class SumModel(nn.Module):
    """One convolution and a sum over nodes of its invariant output: ``[1, 1]``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = ImplicitSteerableConv(IN, "1x0e", cutoff=2.5)

    def forward(self, x: Tensor, edge_index: Tensor, pos: Tensor) -> Tensor:
        return self.conv(x, pos, edge_index).sum(0, keepdim=True)


def test_gnn_explainer_gets_gradients_for_every_edge():
    torch.manual_seed(0)
    model, graph = SumModel().double(), random_graph()
    explainer = Explainer(
        model,
        algorithm=GNNExplainer(epochs=5),
        explanation_type="model",
        node_mask_type="attributes",
        edge_mask_type="object",
        model_config={"mode": "regression", "task_level": "graph", "return_type": "raw"},
    )
    explanation = explainer(graph["x"], graph["edge_index"], pos=graph["pos"])
    edge_mask = explanation.edge_mask
    assert edge_mask.shape == (graph["edge_index"].shape[1],)
    assert bool(torch.isfinite(edge_mask).all()) and bool((edge_mask > 0).any())
    assert float(edge_mask.std()) > 0  # gradient-driven, not one value for all
    assert explanation.node_mask.shape == graph["x"].shape
    assert model.conv.explain is None  # the explainer cleared its masks


@pytest.mark.parametrize(
    "mask, message",
    [
        (torch.zeros(3), r"edge_mask: expected shape \[\d+\]"),
        (None, "edge_mask: expected an explanation edge mask"),
    ],
)
def test_bad_masks_are_named(mask, message):
    conv, graph = make_conv("fused"), random_graph()
    conv.explain, conv._edge_mask = True, mask
    with pytest.raises(ValueError, match=message):
        run(conv, graph)


def test_a_replaced_explain_message_is_refused():
    """Messages are never materialised, so a custom explain_message cannot be honoured."""
    conv, graph = make_conv("fused"), random_graph()
    set_masks(conv, torch.ones(graph["edge_index"].shape[1]), graph["edge_index"])
    conv.explain_message = lambda inputs, dim_size: inputs
    with pytest.raises(NotImplementedError, match="explain_message"):
        run(conv, graph)


@pytest.mark.parametrize("name", HOOKS)
def test_propagate_hooks_refuse_and_name_the_module_hook(name):
    conv = make_conv("fused")
    with pytest.raises(NotImplementedError, match=f"{name}: .*register_forward_hook"):
        getattr(conv, name)(lambda *args: None)


def test_module_forward_hooks_run():
    conv, graph = make_conv("fused"), random_graph()
    seen = []
    conv.register_forward_hook(lambda module, inputs, output: seen.append(output.shape))
    out = run(conv, graph)
    assert seen == [out.shape]


class AttentionModel(nn.Module):
    """A GAT layer, then the convolution (no attention of its own): ``[1, 1]``."""

    def __init__(self) -> None:
        super().__init__()
        self.gat = GATConv(9, 9, add_self_loops=False)
        self.conv = ImplicitSteerableConv("9x0e", "1x0e", cutoff=2.5)

    def forward(self, x: Tensor, edge_index: Tensor, pos: Tensor) -> Tensor:
        return self.conv(self.gat(x, edge_index), pos, edge_index).sum(0, keepdim=True)


def test_attention_explainer_runs_once_the_layer_opts_out():
    """AttentionExplainer hooks the messages of every MessagePassing layer: refused by name,
    then (as the error says) skipped after ``conv.explain = False``."""
    torch.manual_seed(0)
    model, graph = AttentionModel().double(), random_graph()
    explainer = Explainer(
        model,
        algorithm=AttentionExplainer(),
        explanation_type="model",
        edge_mask_type="object",
        model_config={"mode": "regression", "task_level": "graph", "return_type": "raw"},
    )
    with pytest.raises(NotImplementedError, match="explain = False"):
        explainer(graph["x"], graph["edge_index"], pos=graph["pos"])
    model.conv.explain = False
    explanation = explainer(graph["x"], graph["edge_index"], pos=graph["pos"])
    assert explanation.edge_mask.shape == (graph["edge_index"].shape[1],)
