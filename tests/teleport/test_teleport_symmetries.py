"""Every detected or declared symmetry leaves the model output unchanged (float64)."""

from __future__ import annotations

import pytest
import torch
import torch_geometric.nn as pyg_nn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn
from torch_geometric.nn.models import GCN, GIN, GraphSAGE

import symgraph.teleport as tp
from symgraph.groups import Rep, group_from_name
from symgraph.nn import EquivariantLinear, EquivariantMLP
from symgraph.nn.mlp import EquivariantMLPLayer
from symgraph.teleport import (
    GLSymmetry,
    LinearGLSymmetry,
    NoSymmetryError,
    ParamSlice,
    RescaleSymmetry,
    SO2ChartSymmetry,
    TeleportBatchError,
    TeleportContext,
    find_symmetries,
)


def _seq_plain():
    return nn.Sequential(
        nn.Linear(3, 5),
        nn.ReLU(),
        nn.Linear(5, 4),
        nn.LeakyReLU(0.2),
        nn.Dropout(0.3),
        nn.Linear(4, 6),
        nn.PReLU(6),
        nn.Identity(),
        nn.Linear(6, 2),
    )


def _seq_norms():
    return nn.Sequential(
        nn.Linear(3, 6),
        nn.BatchNorm1d(6),
        nn.ReLU(),
        nn.Linear(6, 6),
        nn.LayerNorm(6),
        nn.LeakyReLU(0.1),
        nn.Linear(6, 4),
        nn.GroupNorm(2, 4),
        nn.ReLU(),
        nn.Linear(4, 2),
    )


def _seq_nested():
    inner = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 5))
    return nn.Sequential(
        inner, nn.ReLU(), nn.Sequential(nn.Linear(5, 4), nn.ReLU()), nn.Linear(4, 1)
    )


def _pyg_mlps():
    return nn.Sequential(
        pyg_nn.MLP([3, 8, 8, 6], norm=None, dropout=0.2),
        nn.ReLU(),
        pyg_nn.MLP([6, 7, 5], norm="batch_norm", act="leaky_relu"),
        pyg_nn.MLP([5, 6, 6, 2], norm="layer_norm", act_first=True, plain_last=False),
    )


SEQUENTIAL_MODELS = {
    "sequential": (_seq_plain, 3),
    "sequential+norms": (_seq_norms, 2),  # GroupNorm provides no output side
    "nested": (_seq_nested, 3),
    "pyg-mlp": (_pyg_mlps, 7),
}


@pytest.mark.parametrize("name", sorted(SEQUENTIAL_MODELS))
@pytest.mark.parametrize("train", [False, True])
def test_rescale_is_exact_on_mlps(name, train, check_invariant):
    factory, expected = SEQUENTIAL_MODELS[name]
    model = factory().double().train(train)
    syms = find_symmetries(model, kinds="rescale")
    assert len(syms) == expected, [s.name for s in syms]
    assert all(s.exact and s.kind == "rescale" for s in syms)
    x = torch.randn(16, 3, dtype=torch.float64)
    check_invariant(model, (x,), syms)


def _gnn_models():
    return {
        "gcn": GCN(4, 16, 3, out_channels=2),
        "gcn-bn-jk": GCN(4, 16, 3, out_channels=2, norm="batch_norm", jk="last"),
        "gin": GIN(4, 16, 3, out_channels=2),
        "gin-bn": GIN(4, 12, 2, out_channels=2, norm="batch_norm", jk="last"),
        "sage-max": GraphSAGE(4, 16, 3, out_channels=2, aggr="max"),
        "graphconv-seq": pyg_nn.Sequential(
            "x, edge_index",
            [
                (pyg_nn.GraphConv(4, 8), "x, edge_index -> x"),
                nn.ReLU(),
                (pyg_nn.GraphConv(8, 8, aggr="mean"), "x, edge_index -> x"),
                nn.LeakyReLU(0.3),
                pyg_nn.Linear(8, 2),
            ],
        ),
    }


@pytest.mark.parametrize("name", sorted(_gnn_models()))
def test_rescale_is_exact_on_pyg_gnns(name, graph, check_invariant):
    model = _gnn_models()[name].double().train()
    syms = find_symmetries(model, kinds="rescale")
    assert syms, name
    check_invariant(model, graph(), syms)


def test_gnn_detection_finds_cross_conv_pairs():
    names = [s.name for s in find_symmetries(GIN(4, 16, 3, out_channels=2))]
    assert "rescale convs.0 -> convs.1" in names
    assert "rescale convs.0.nn.lins.0 -> convs.0.nn.lins.1" in names


def test_pyg_sequential_skips_values_used_twice():
    class Add(nn.Module):
        def forward(self, a, b):
            return a + b

    model = pyg_nn.Sequential(
        "x, edge_index",
        [
            (pyg_nn.GCNConv(4, 8), "x, edge_index -> x1"),
            (nn.ReLU(), "x1 -> x1"),
            (pyg_nn.GCNConv(8, 8), "x1, edge_index -> x2"),
            (nn.ReLU(), "x2 -> x2"),
            (Add(), "x1, x2 -> x3"),
            (pyg_nn.Linear(8, 2), "x3 -> x3"),
        ],
    )
    assert find_symmetries(model, raise_if_empty=False) == []


def test_norm_scale_invariance_exact_only_with_eps_zero(check_invariant):
    model = nn.Sequential(
        nn.Linear(3, 6),
        nn.ReLU(),
        nn.LayerNorm(6, eps=0.0),
        nn.Linear(6, 5),
        pyg_nn.GraphNorm(5, eps=0.0),
        nn.Linear(5, 2),
    ).double()
    syms = find_symmetries(model, kinds="norm")
    assert [s.size for s in syms] == [1, 5]  # global for layer norm, per channel for graph norm
    check_invariant(model.train(), (torch.randn(16, 3, dtype=torch.float64),), syms)

    # torch's batch norm needs eps > 0 in training: its scale invariance is only approximate
    default_eps = nn.Sequential(nn.Linear(3, 6), nn.BatchNorm1d(6), nn.Linear(6, 1)).double()
    assert find_symmetries(default_eps, kinds="norm", raise_if_empty=False) == []
    approx = find_symmetries(default_eps, kinds="norm", approximate=True)
    assert len(approx) == 1 and not approx[0].exact and approx[0].size == 6


def test_pyg_norm_scale_invariance(graph, check_invariant):
    model = GCN(4, 16, 3, out_channels=2, norm="graph_norm", norm_kwargs={"eps": 0.0})
    model = model.double()
    syms = find_symmetries(model, kinds=("norm",))
    assert len(syms) == 2
    check_invariant(model, graph(), syms)


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    widths=st.lists(st.integers(2, 7), min_size=3, max_size=5),
    slope=st.floats(0.05, 0.9),
    bias=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_gl_and_rescale_exact_on_random_leaky_mlps(widths, slope, bias, seed, check_invariant):
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers += [nn.Linear(a, b, bias=bias)] + (
            [nn.LeakyReLU(slope)] if i < len(widths) - 2 else []
        )
    model = nn.Sequential(*layers).double()
    syms = find_symmetries(model, kinds=("gl", "rescale"))
    assert len(syms) == 2 * (len(widths) - 2)
    n = min(widths[:-2])  # at most d_in samples for every first layer: the action is exact
    x = torch.randn(n, widths[0], dtype=torch.float64)
    check_invariant(model, (x,), syms, scale=0.1, seed=seed, rtol=1e-8)


def test_gl_action_exact_paper_mlp(check_invariant):
    torch.manual_seed(3)
    model = nn.Sequential(
        nn.Linear(5, 6, bias=False),
        nn.LeakyReLU(0.1),
        nn.Linear(6, 7, bias=False),
        nn.LeakyReLU(0.1),
        nn.Linear(7, 8, bias=False),
    ).double()
    syms = find_symmetries(model, kinds="gl")
    assert [type(s) for s in syms] == [GLSymmetry, GLSymmetry]
    x = torch.randn(4, 5, dtype=torch.float64)  # 4 samples <= 5 inputs: exact
    check_invariant(model, (x,), syms, scale=0.1, rtol=1e-9)


def test_gl_rejects_batches_it_cannot_act_on_exactly(check_invariant):
    model = nn.Sequential(nn.Linear(3, 4), nn.LeakyReLU(0.1), nn.Linear(4, 2)).double()
    (sym,) = find_symmetries(model, kinds="gl")
    with pytest.raises(TeleportBatchError, match=r"at most 4 linearly independent samples"):
        check_invariant(model, (torch.randn(5, 3, dtype=torch.float64),), [sym])
    repeated = torch.randn(1, 3, dtype=torch.float64).repeat(3, 1)
    with pytest.raises(TeleportBatchError, match=r"rank 1 < 3 samples"):
        check_invariant(model, (repeated,), [sym])


def test_gl_detection_needs_invertible_activation():
    relu = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    assert find_symmetries(relu, kinds="gl", raise_if_empty=False) == []
    dropout = nn.Sequential(nn.Linear(3, 4), nn.LeakyReLU(), nn.Dropout(0.5), nn.Linear(4, 2))
    assert find_symmetries(dropout, kinds="gl", raise_if_empty=False) == []
    linear = nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.0), nn.Linear(4, 2))
    (sym,) = find_symmetries(linear, kinds="gl")
    assert sym.negative_slope is None


def _booth(x):
    return (x[0] + 2 * x[1] - 7) ** 2 + (2 * x[0] + x[1] - 5) ** 2


def booth_symmetry() -> SO2ChartSymmetry:
    def to_chart(x):
        return torch.stack([x[0] + 2 * x[1] - 7, 2 * x[0] + x[1] - 5])

    def from_chart(v):
        return torch.stack([(-v[0] + 2 * v[1]) / 3 + 1, (2 * v[0] - v[1]) / 3 + 3])

    return SO2ChartSymmetry("SO(2) Booth", "x", to_chart, from_chart)


def test_so2_chart_leaves_booth_unchanged():
    x = torch.tensor([-3.0, 2.5], dtype=torch.float64)
    sym = booth_symmetry()
    for angle in (0.3, -1.2, 2.9):
        new = sym.act({"x": x}, torch.tensor([angle], dtype=torch.float64))["x"]
        assert not torch.allclose(new, x)
        assert float(_booth(new)) == pytest.approx(float(_booth(x)), rel=1e-12)


def test_param_slice_with_index_scales_blocks(check_invariant):
    # a "vector" unit spans three hidden channels: scale them together
    model = nn.Sequential(nn.Linear(3, 6), nn.ReLU(), nn.Linear(6, 2)).double()
    index = torch.tensor([0, 0, 0, 1, 1, 1])
    sym = RescaleSymmetry(
        "blocks",
        [ParamSlice("0.weight", 0, index), ParamSlice("0.bias", 0, index)],
        [ParamSlice("2.weight", 1, index)],
        2,
    )
    check_invariant(model, (torch.randn(8, 3, dtype=torch.float64),), [sym])
    assert sym.elementwise_factors(
        torch.zeros(2, dtype=torch.float64), dict(model.named_parameters())
    )["0.weight"].shape == (6, 1)


def test_no_symmetry_message_lists_what_was_searched():
    with pytest.raises(NoSymmetryError) as info:
        find_symmetries(nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)))
    message = str(info.value)
    for needle in (
        "Sequential at '<root>'",
        "torch.nn.ReLU",
        "torch_geometric.nn.GCNConv",
        "rescale",
        "register_rule",
        "kinds searched",
    ):
        assert needle in message
    with pytest.raises(
        NoSymmetryError, match="containers with a known execution order found in the model: none"
    ):
        find_symmetries(nn.Linear(3, 3))


def test_gat_is_not_detected():
    from torch_geometric.nn.models import GAT

    with pytest.raises(NoSymmetryError, match="GATConv|GAT"):
        find_symmetries(GAT(4, 8, 2, out_channels=1))


def test_subclass_with_new_forward_is_not_trusted():
    class Reversed(nn.Sequential):
        def forward(self, x):
            for module in reversed(self):
                x = module(x)
            return x

    model = Reversed(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4))
    assert find_symmetries(model, raise_if_empty=False) == []


def test_shared_and_frozen_parameters_are_left_alone(check_invariant):
    torch.manual_seed(0)
    shared = nn.Linear(4, 4)
    model = nn.Sequential(
        nn.Linear(3, 4), nn.ReLU(), shared, nn.ReLU(), shared, nn.ReLU(), nn.Linear(4, 2)
    ).double()
    found = find_symmetries(model, raise_if_empty=False)
    held = {id(p) for p in shared.parameters()}
    params = dict(model.named_parameters())
    assert not any(id(params[n]) in held for s in found for n in s.param_names)
    if found:
        check_invariant(model, (torch.randn(8, 3, dtype=torch.float64),), found)
    tied = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4))
    tied[4].weight = tied[2].weight  # tied weights: rescaling either place changes the other
    assert find_symmetries(tied, raise_if_empty=False) == []
    frozen = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    frozen[2].weight.requires_grad_(False)
    assert find_symmetries(frozen, raise_if_empty=False) == []


def test_a_pyg_mlp_with_dropout_after_its_last_layer_has_no_linear_chain_through_it():
    model = nn.Sequential(pyg_nn.MLP([3, 8, 6], dropout=[0.0, 0.5]), nn.Linear(6, 2))
    assert find_symmetries(model, ("linear",), raise_if_empty=False) == []
    plain = nn.Sequential(pyg_nn.MLP([3, 8, 6], dropout=[0.0, 0.0]), nn.Linear(6, 2))
    assert len(find_symmetries(plain, ("linear",))) == 1


def test_misspelt_options_are_refused():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    with pytest.raises(TypeError, match=r"options: .* got unknown \['max_imbalanse'\]"):
        find_symmetries(model, max_imbalanse=2.0)
    assert find_symmetries(model, max_imbalance=2.0)[0].max_imbalance == 2.0


def test_registry_custom_container_and_rule(check_invariant):
    class TwoLayer(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 5), nn.Linear(5, 2)

        def forward(self, x):
            return self.b(torch.relu(self.a(x)))

    model = TwoLayer().double()
    with pytest.raises(NoSymmetryError):
        find_symmetries(model)
    tp.register_container(
        TwoLayer,
        lambda m, prefix: [
            (f"{prefix}a".lstrip("."), m.a),
            ("relu", nn.ReLU()),
            (f"{prefix}b".lstrip("."), m.b),
        ],
    )
    syms = find_symmetries(model)
    assert [s.name for s in syms] == ["rescale a -> b"]
    check_invariant(model, (torch.randn(7, 3, dtype=torch.float64),), syms)

    @tp.register_rule("test-output-sign")
    def _rule(m, **_):
        return [RescaleSymmetry("b only", [ParamSlice("b.weight", 0)], [], 2, kind="custom")]

    assert [s.name for s in find_symmetries(model, kinds=("test-output-sign",))] == ["b only"]
    with pytest.raises(ValueError, match="unknown"):
        find_symmetries(model, kinds=("nope",))


def test_bad_arguments_are_named():
    with pytest.raises(TypeError, match="model"):
        find_symmetries("not a model")
    with pytest.raises(ValueError, match="size"):
        RescaleSymmetry("x", [ParamSlice("w", 0)], [], 0)
    with pytest.raises(ValueError, match="negative_slope"):
        GLSymmetry("x", "a", "b", 3, has_bias=True, negative_slope=0.0)
    with pytest.raises(TypeError, match="module_type"):
        tp.register_container(int, lambda m, p: [])


@pytest.mark.parametrize("group", ["O3", "SO2"])
def test_gated_equivariant_mlp_scale_is_exact(group, check_invariant):
    torch.manual_seed(0)
    model = EquivariantMLP(
        "4x0e + 2x1o",
        "1x0e + 1x1o",
        hidden="8x0e + 4x1o + 2x2e",
        layers=2,
        group=group_from_name(group),
    ).double()
    syms = find_symmetries(model, kinds="gated")
    assert [s.size for s in syms] == [6, 6]  # one unit per gated copy: 4x1o + 2x2e
    x = torch.randn(10, 4 + 2 * 3, dtype=torch.float64)
    check_invariant(model, (x,), syms)


def _pooled_gin(pool: nn.Module, width: int = 8) -> pyg_nn.Sequential:
    """GIN → pooling (a module) → MLP head: the usual graph-level regressor."""
    return pyg_nn.Sequential(
        "x, edge_index, batch",
        [
            (GIN(4, width, 2), "x, edge_index -> x"),
            (pool, "x, batch -> x"),
            nn.Linear(width, width),
            nn.ReLU(),
            nn.Linear(width, 1),
        ],
    )


def _two_graphs(graph):
    x, edge_index = graph(num_nodes=14, num_edges=40)
    batch = torch.cat([torch.zeros(6, dtype=torch.long), torch.ones(8, dtype=torch.long)])
    return x, edge_index, batch


@pytest.mark.parametrize("pool", ["sum", "mean"])
def test_linear_gl_is_exact_across_gin_and_pooling(pool, graph, check_invariant):
    aggr = pyg_nn.aggr.SumAggregation() if pool == "sum" else pyg_nn.aggr.MeanAggregation()
    model = _pooled_gin(aggr).double().train()
    (sym,) = find_symmetries(model, kinds="linear")
    assert isinstance(sym, LinearGLSymmetry) and not sym.data_dependent
    assert (sym.first, sym.second) == ("module_0.convs.1.nn.lins.1", "module_2")
    # 14 nodes, 2 graphs: no batch-size limit, and composable with the rescalings
    check_invariant(model, _two_graphs(graph), [sym], scale=0.3)
    rescale = find_symmetries(model, kinds="rescale")
    assert "rescale module_0 -> module_2" in [s.name for s in rescale]
    check_invariant(model, _two_graphs(graph), [sym, *rescale], scale=0.3)


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    widths=st.lists(st.integers(1, 6), min_size=3, max_size=3),
    samples=st.integers(1, 40),
    bias=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_linear_gl_exact_at_any_batch_size(widths, samples, bias, seed, check_invariant):
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Linear(widths[0], widths[1], bias=bias),
        nn.Identity(),
        nn.Dropout(0.0),
        nn.Linear(widths[1], widths[2]),
    ).double()
    (sym,) = find_symmetries(model, kinds="linear")
    assert sym.hidden == widths[1]
    x = torch.randn(samples, widths[0], dtype=torch.float64)
    check_invariant(model, (x,), [sym], scale=0.5, seed=seed)


@pytest.mark.parametrize(
    "between",
    [
        pytest.param(lambda: nn.ReLU(), id="relu"),
        pytest.param(lambda: nn.LeakyReLU(0.1), id="leaky-relu"),
        pytest.param(lambda: nn.Dropout(0.5), id="dropout"),
        pytest.param(lambda: nn.BatchNorm1d(4), id="batch-norm"),
    ],
)
def test_linear_gl_needs_a_linear_chain(between):
    model = nn.Sequential(nn.Linear(3, 4), between(), nn.Linear(4, 2))
    assert find_symmetries(model, kinds="linear", raise_if_empty=False) == []


def test_linear_gl_not_through_max_pooling_or_max_aggregation():
    model = _pooled_gin(pyg_nn.aggr.MaxAggregation())
    assert find_symmetries(model, kinds="linear", raise_if_empty=False) == []
    # a max pooling still commutes with positive per-channel scales
    names = [s.name for s in find_symmetries(model, kinds="rescale")]
    assert "rescale module_0 -> module_2" in names
    # GIN's neighbour sum is linear, a max aggregation is not
    chain = [nn.Linear(4, 6), pyg_nn.GINConv(nn.Sequential(nn.Linear(6, 5)), aggr="add")]
    summed = pyg_nn.Sequential(
        "x, edge_index", [(chain[0], "x -> x"), (chain[1], "x, edge_index -> x")]
    )
    (sym,) = find_symmetries(summed, kinds="linear")
    assert (sym.first, sym.second) == ("module_0", "module_1.nn.0")
    maxed = pyg_nn.Sequential(
        "x, edge_index",
        [
            (nn.Linear(4, 6), "x -> x"),
            (pyg_nn.GINConv(nn.Sequential(nn.Linear(6, 5)), aggr="max"), "x, edge_index -> x"),
        ],
    )
    assert find_symmetries(maxed, kinds="linear", raise_if_empty=False) == []


def test_linear_gl_through_gin_neighbour_sum_is_exact(graph, check_invariant):
    model = pyg_nn.Sequential(
        "x, edge_index",
        [
            (nn.Linear(4, 6), "x -> x"),
            (
                pyg_nn.GINConv(nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))),
                "x, edge_index -> x",
            ),
        ],
    ).double()
    (sym,) = find_symmetries(model, kinds="linear")
    check_invariant(model, graph(), [sym], scale=0.4)


def test_linear_gl_bad_arguments_are_named():
    with pytest.raises(ValueError, match="max_norm"):
        LinearGLSymmetry("x", "a", "b", 4, has_bias=True, max_norm=0.0)
    with pytest.raises(ValueError, match="hidden"):
        LinearGLSymmetry("x", "a", "b", 0, has_bias=True)
    sym = LinearGLSymmetry("x", "a", "b", 3, has_bias=False)
    params = {"a.weight": torch.ones(3, 2), "b.weight": torch.ones(1, 3)}
    with pytest.raises(ValueError, match=r"theta: expected shape \[3, 3\]"):
        sym.act(params, torch.zeros(2, 2))
    big = sym.project(torch.full((3, 3), 5.0))
    assert float(torch.linalg.matrix_norm(big)) == pytest.approx(1.0)


def _shared_activation(act: nn.Module) -> nn.Sequential:
    return nn.Sequential(nn.Linear(3, 4), act, nn.Linear(4, 4), act, nn.Linear(4, 2)).double()


def test_a_module_used_twice_in_a_sequential_stays_in_the_chain(check_invariant):
    """``named_children`` lists a repeated module once: the layers around its second use
    looked directly connected (GL(4) across a Tanh, rescalings across it)."""
    kinds = ("rescale", "norm", "linear", "gl")
    assert find_symmetries(_shared_activation(nn.Tanh()), kinds, raise_if_empty=False) == []
    relu = _shared_activation(nn.ReLU())
    syms = find_symmetries(relu, kinds, raise_if_empty=False)
    assert [s.name for s in syms] == ["rescale 0 -> 2", "rescale 2 -> 4"]
    check_invariant(relu, (torch.randn(6, 3, dtype=torch.float64),), syms)


@pytest.mark.parametrize(
    "norm, shape",
    [
        (nn.BatchNorm2d(4), (6, 4, 5, 4)),
        (nn.BatchNorm3d(4), (6, 4, 2, 3, 4)),
        (nn.GroupNorm(2, 4), (6, 4, 4)),
    ],  # fmt: skip
)
def test_norms_scaling_axis_one_provide_no_output_side(norm, shape):
    """These scale axis 1, the next Linear reads the last axis: pairing them was wrong."""
    model = nn.Sequential(norm, nn.ReLU(), nn.Linear(4, 3)).double()
    assert find_symmetries(model, ("rescale",), raise_if_empty=False) == []
    model(torch.randn(*shape, dtype=torch.float64))  # a valid model all the same


def test_linear_rules_skip_functions_and_lazy_layers():
    """A plain function child of a PyG Sequential, or a lazy layer not yet called, is no
    linear layer (the rules crashed on both)."""
    seq = pyg_nn.Sequential(
        "x", [(nn.Linear(3, 4), "x -> x"), (torch.tanh, "x -> x"), (nn.Linear(4, 2), "x -> x")]
    )
    lazy = nn.Sequential(nn.LazyLinear(4), nn.LeakyReLU(0.1), nn.Linear(4, 2))
    pyg_lazy = nn.Sequential(pyg_nn.Linear(-1, 4), nn.Linear(4, 2))
    for model in (seq, lazy, pyg_lazy):
        assert find_symmetries(model, ("gl", "linear"), raise_if_empty=False) == []


def test_no_rule_may_touch_a_frozen_parameter():
    model = nn.Sequential(nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 1))
    model[0].weight.requires_grad_(False)

    @tp.register_rule("test-frozen-scale")
    def _rule(m, **_):
        return [RescaleSymmetry("first only", [ParamSlice("0.weight", 0)], [], 2, kind="x")]

    assert find_symmetries(model, ("test-frozen-scale",), raise_if_empty=False) == []


def test_pairs_of_other_widths_or_a_zero_slope_give_no_symmetry():
    """A ``Linear(3, 4) → Linear(5, 2)`` chain has no common units (a shape bug, but no
    symmetry to claim), and ``LeakyReLU(0)`` is a ReLU, not invertible."""
    mismatched = nn.Sequential(nn.Linear(3, 4), nn.Linear(5, 2))
    for kinds in (("rescale",), ("linear",)):
        assert find_symmetries(mismatched, kinds, raise_if_empty=False) == []
    flat = nn.Sequential(nn.Linear(3, 4), nn.LeakyReLU(0.0), nn.Linear(4, 2))
    assert find_symmetries(flat, ("gl",), raise_if_empty=False) == []


def test_inexact_symmetries_of_a_user_rule_need_approximate():
    model = nn.Sequential(nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 1))

    @tp.register_rule("test-inexact")
    def _rule(m, **_):
        return [RescaleSymmetry("rough", [ParamSlice("0.weight", 0)], [], 2, exact=False)]

    assert find_symmetries(model, ("test-inexact",), raise_if_empty=False) == []
    (found,) = find_symmetries(model, ("test-inexact",), approximate=True)
    assert not found.exact


def test_bounds_of_the_group_coordinates_are_checked():
    """``max_imbalance`` must exceed 1 (``log 1 = 0`` would freeze every unit) and the GL(d)
    ``max_norm`` must stay below 1 (``I + T`` with ``‖T‖_F = 1``, e.g. ``T = -e₁e₁ᵀ``, may be
    singular)."""
    up, down = [ParamSlice("a.weight", 0)], [ParamSlice("b.weight", 1)]
    with pytest.raises(ValueError, match="max_imbalance"):
        RescaleSymmetry("x", up, down, 2, max_imbalance=1.0)
    assert RescaleSymmetry("x", up, down, 2, max_imbalance=1.5).max_imbalance == 1.5
    with pytest.raises(ValueError, match="max_norm"):
        GLSymmetry("x", "a", "b", 3, has_bias=True, negative_slope=0.1, max_norm=1.0)
    assert GLSymmetry("x", "a", "b", 3, has_bias=True, negative_slope=0.1, max_norm=0.9)


def test_rescale_projection_clips_log_scales_on_both_sides():
    """Without a trust-region state ``project`` clips each log-scale to ``±max_log_scale``."""
    sym = RescaleSymmetry(
        "x", [ParamSlice("a.weight", 0)], [ParamSlice("b.weight", 1)], 3, max_log_scale=1.5
    )
    theta = torch.tensor([4.0, -4.0, 0.5], dtype=torch.float64)
    assert sym.project(theta).tolist() == [1.5, -1.5, 0.5]


def test_rescale_without_up_slices_has_no_trust_region():
    """A symmetry with "down" slices only has no up/down imbalance to bound: ``prepare``
    gives no state and the action divides the columns by ``exp(theta)``."""
    sym = RescaleSymmetry("inputs", [], [ParamSlice("w", 1)], 3)
    params = {"w": torch.randn(2, 3, dtype=torch.float64)}
    assert sym.prepare(params, TeleportContext(inputs={})) is None
    theta = torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64)
    new = sym.act(params, sym.project(theta))["w"]
    torch.testing.assert_close(new, params["w"] * torch.exp(-theta), rtol=1e-12, atol=0)


def test_sage_conv_with_normalized_outputs_gives_no_rescaling(graph, check_invariant):
    """``SAGEConv(normalize=True)`` divides its output by its norm, which a per-channel scale
    changes: no pair through it; the same chain without normalisation has an exact one."""

    def chain(normalize):
        return pyg_nn.Sequential(
            "x, edge_index",
            [
                (pyg_nn.SAGEConv(4, 8, normalize=normalize), "x, edge_index -> x"),
                nn.ReLU(),
                (pyg_nn.SAGEConv(8, 2), "x, edge_index -> x"),
            ],
        ).double()

    assert find_symmetries(chain(True), kinds="rescale", raise_if_empty=False) == []
    plain = chain(False)
    (sym,) = find_symmetries(plain, kinds="rescale")
    check_invariant(plain, graph(), [sym])


@pytest.mark.parametrize("act_first", [False, True])
def test_pyg_mlp_norm_feeds_the_next_layer_only_after_its_activation(act_first, check_invariant):
    """In a PyG MLP with a tanh, the norm's affine output reaches the next layer directly only
    with ``act_first=True`` (``lin → tanh → norm → lin``); by default the tanh follows the
    norm, and a tanh does not commute with positive scales."""
    torch.manual_seed(0)
    model = nn.Sequential(
        pyg_nn.MLP([3, 6, 6, 2], norm="batch_norm", act="tanh", act_first=act_first, dropout=0.0)
    ).double()
    syms = find_symmetries(model, kinds="rescale", raise_if_empty=False)
    if not act_first:
        assert syms == []
        return
    assert [s.name for s in syms] == [
        "rescale 0.norms.0 -> 0.lins.1",
        "rescale 0.norms.1 -> 0.lins.2",
    ]
    check_invariant(model.train(), (torch.randn(16, 3, dtype=torch.float64),), syms)


def test_gin_with_max_aggregation_still_absorbs_input_scales(graph, check_invariant):
    """A max over neighbours commutes with positive per-channel scales, so a GINConv with
    ``aggr="max"`` absorbs a rescaling of its input (only the GL(d) rule needs a sum)."""
    torch.manual_seed(0)
    model = pyg_nn.Sequential(
        "x, edge_index",
        [
            (nn.Linear(4, 6), "x -> x"),
            nn.ReLU(),
            (pyg_nn.GINConv(nn.Sequential(nn.Linear(6, 5)), aggr="max"), "x, edge_index -> x"),
        ],
    ).double()
    (sym,) = find_symmetries(model, kinds="rescale")
    assert sym.name == "rescale module_0 -> module_2"
    check_invariant(model, graph(), [sym])


def test_a_break_at_the_end_of_a_container_hides_its_output_layer():
    """The output of this PyG Sequential is ``relu(h)``, not the layer just before it (whose
    result is unused): the outer ``Linear`` has no layer to pair with."""
    inner = pyg_nn.Sequential(
        "x",
        [(nn.Linear(3, 4), "x -> h"), (nn.Linear(4, 4), "h -> g"), (nn.ReLU(), "h -> y")],
    )
    model = nn.Sequential(inner, nn.Linear(4, 2))
    assert find_symmetries(model, kinds="rescale", raise_if_empty=False) == []


def _gated_layer(rep_in, rep_out, bilinear):
    return EquivariantMLPLayer(rep_in, rep_out, "gate", True, bilinear)


def test_gated_scale_skips_bilinear_layers_and_reaches_the_next_projection(check_invariant):
    """A gated layer with a bilinear term has no copy scale (its bilinear output would need
    it too); a following bilinear layer reads the copies through its linear map and its
    projection, and both absorb ``1/s``."""
    group = group_from_name("O3")
    rep_in, hidden, rep_out = (
        Rep(r, group) for r in ("4x0e + 2x1o", "8x0e + 4x1o + 2x2e", "1x0e + 1x1o")
    )
    bilinear = EquivariantMLP(
        "4x0e + 2x1o", "1x0e + 1x1o", hidden="8x0e + 4x1o + 2x2e", layers=2, group=group,
        bilinear=True,
    )  # fmt: skip
    assert find_symmetries(bilinear, kinds="gated", raise_if_empty=False) == []
    torch.manual_seed(0)
    mixed = nn.Sequential(
        _gated_layer(rep_in, hidden, False),
        _gated_layer(hidden, hidden, True),
        EquivariantLinear(hidden, rep_out),
    ).double()
    (sym,) = find_symmetries(mixed, kinds="gated")
    assert sym.name == "gated copies 0 -> 1" and sym.size == 6
    assert any(s.name.startswith("1.project.") for s in sym.down)
    check_invariant(mixed, (torch.randn(10, 4 + 2 * 3, dtype=torch.float64),), [sym])


def test_gated_copies_scale_independently():
    """Each gated copy is its own unit: scaling unit ``u`` alone changes the parameters and
    leaves the output unchanged."""
    torch.manual_seed(0)
    model = EquivariantMLP(
        "4x0e + 2x1o", "1x0e + 1x1o", hidden="8x0e + 4x1o + 2x2e", layers=2,
        group=group_from_name("O3"),
    ).double()  # fmt: skip
    sym = find_symmetries(model, kinds="gated")[0]
    params = {n: p.detach() for n, p in model.named_parameters()}
    x = torch.randn(10, 4 + 2 * 3, dtype=torch.float64)
    ref = model(x).detach()
    for unit in range(sym.size):
        theta = sym.identity(ref)
        theta[unit] = 0.7
        new = sym.act(params, theta)
        assert any(not torch.equal(new[n], params[n]) for n in sym.param_names), unit
        out = torch.func.functional_call(model, new, (x,))
        torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10 * float(ref.abs().max()))


def test_two_leaky_relus_between_linear_layers_give_no_gl_symmetry():
    """``LeakyReLU(a)`` after ``LeakyReLU(b)`` is a leaky ReLU of slope ``a·b``: the GL(d)
    action built for one slope only would not be exact."""
    model = nn.Sequential(
        nn.Linear(3, 4), nn.LeakyReLU(0.1), nn.LeakyReLU(0.2), nn.Linear(4, 2)
    ).double()
    assert find_symmetries(model, kinds="gl", raise_if_empty=False) == []
    single = nn.Sequential(nn.Linear(3, 4), nn.LeakyReLU(0.1), nn.Linear(4, 2)).double()
    (sym,) = find_symmetries(single, kinds="gl")
    assert sym.negative_slope == 0.1


def test_batch_norm_with_running_statistics_is_not_exact_even_with_eps_zero():
    """With ``eps = 0`` (accepted by torch outside training) a batch norm that tracks
    running statistics normalises by them in eval mode: the scale of its input matters."""
    model = nn.Sequential(nn.Linear(3, 6), nn.BatchNorm1d(6, eps=0.0), nn.Linear(6, 1)).double()
    assert find_symmetries(model, kinds="norm", raise_if_empty=False) == []
    (approx,) = find_symmetries(model, kinds="norm", approximate=True)
    assert not approx.exact
    batch_only = nn.Sequential(
        nn.Linear(3, 6), nn.BatchNorm1d(6, eps=0.0, track_running_stats=False), nn.Linear(6, 1)
    ).double()
    (sym,) = find_symmetries(batch_only, kinds="norm")
    assert sym.exact and sym.size == 6


def test_an_output_side_of_mixed_widths_gives_no_rescaling():
    """A layer whose declared output slices disagree on their number of units has no
    common per-unit scale, even when one of the widths matches the next layer's."""

    class TwoHeads(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 4), nn.Linear(3, 5)

    tp.register_channel_map(
        TwoHeads,
        outputs=lambda m, prefix: [
            ParamSlice(f"{prefix}.a.weight", 0),
            ParamSlice(f"{prefix}.b.weight", 0),
        ],
    )
    model = nn.Sequential(TwoHeads(), nn.ReLU(), nn.Linear(5, 2))
    assert find_symmetries(model, kinds="rescale", raise_if_empty=False) == []


def test_no_symmetry_message_names_what_was_excluded():
    frozen = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    frozen[2].weight.requires_grad_(False)
    with pytest.raises(
        NoSymmetryError, match=r"excluded.*'rescale 0 -> 2' \(frozen: \['2.weight'\]"
    ):
        find_symmetries(frozen)
    twice = nn.Linear(4, 4)
    with pytest.raises(NoSymmetryError, match=r"excluded.*'rescale 0 -> 2' \(shared: "):
        find_symmetries(nn.Sequential(twice, nn.ReLU(), twice))


def test_a_rule_must_return_a_list_of_symmetries():
    tp.register_rule("test-returns-none", lambda m, **_: None)
    with pytest.raises(TypeError, match=r"rule 'test-returns-none' .*expected a list .*got None"):
        find_symmetries(nn.Sequential(nn.Linear(3, 2)), ("test-returns-none",))


def test_container_stage_names_must_be_module_names():
    class Pair(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 5), nn.Linear(5, 2)

    tp.register_container(Pair, lambda m, prefix: [("a", m.a), ("relu", nn.ReLU()), ("b", m.b)])
    with pytest.raises(ValueError, match=r"register_container: .*Pair at '0' name \['a', 'b'\]"):
        find_symmetries(nn.Sequential(Pair()))
    assert len(find_symmetries(Pair())) == 1  # at the root the names are right


def test_declared_slices_are_checked_against_the_model():
    model = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 1))
    batch = (torch.randn(4, 3), torch.randn(4, 1))
    loss = lambda m, b: (m(b[0]) - b[1]).pow(2).mean()  # noqa: E731
    up = [ParamSlice("0.weight", 0), ParamSlice("0.bias", 0)]
    wrong_size = RescaleSymmetry("h", up, [ParamSlice("2.weight", 1)], 5)
    with pytest.raises(
        ValueError, match=r"'h', up slice ParamSlice\('0.weight', dim=0\): expected size=5 .*got 8"
    ):
        tp.teleport(model, loss, batch, symmetries=[wrong_size])
    wrong_dim = RescaleSymmetry("h", up, [ParamSlice("2.weight", 2)], 8)
    with pytest.raises(
        ValueError, match=r"down slice ParamSlice\('2.weight', dim=2\): expected dim in \[-2, 2\)"
    ):
        tp.teleport(model, loss, batch, symmetries=[wrong_dim])
    single = RescaleSymmetry("h", up, [ParamSlice("2.weight", 1)], 8)
    assert tp.teleport(model, loss, batch, steps=1, symmetries=single).symmetries == ("h",)


def _clip(module, args, out):
    return out.clamp(max=0.5)


def _shift(module, args):
    return (args[0] + 1.0,)


def _plain3(middle: nn.Module) -> nn.Sequential:
    return nn.Sequential(nn.Linear(3, 4), middle, nn.Linear(4, 2)).double()


def _nested_hooked() -> nn.Sequential:
    return nn.Sequential(
        nn.Sequential(nn.Linear(3, 4), nn.ReLU()), nn.ReLU(), nn.Linear(4, 2)
    ).double()


def _gcn_sequential() -> pyg_nn.Sequential:
    return pyg_nn.Sequential(
        "x, edge_index",
        [(pyg_nn.GCNConv(4, 6), "x, edge_index -> x"), nn.ReLU(), nn.Linear(6, 2)],
    ).double()


def _gcn_reader() -> pyg_nn.Sequential:
    return pyg_nn.Sequential(
        "x, edge_index",
        [(nn.Linear(3, 4), "x -> x"), nn.ReLU(), (pyg_nn.GCNConv(4, 2), "x, edge_index -> x")],
    ).double()


# (model, kind, stage, hook side, whether the symmetry survives): a forward hook may replace
# a module's output, a pre-hook its input, so e.g. an activation clipped by a hook is not
# positively homogeneous; a hook on the far side (a pre-hook on the first layer, a forward
# hook on the last) changes nothing the symmetry touches
_HOOKED = {
    "rescale-first-post": (lambda: _plain3(nn.ReLU()), "rescale", "0", "post", False),
    "rescale-act-post": (lambda: _plain3(nn.ReLU()), "rescale", "1", "post", False),
    "rescale-act-pre": (lambda: _plain3(nn.ReLU()), "rescale", "1", "pre", False),
    "rescale-second-pre": (lambda: _plain3(nn.ReLU()), "rescale", "2", "pre", False),
    "rescale-first-pre": (lambda: _plain3(nn.ReLU()), "rescale", "0", "pre", True),
    "rescale-second-post": (lambda: _plain3(nn.ReLU()), "rescale", "2", "post", True),
    "rescale-nested-post": (_nested_hooked, "rescale", "0", "post", False),
    "rescale-gcn-inner": (_gcn_sequential, "rescale", "module_0.lin", "post", False),
    "gl-act-post": (lambda: _plain3(nn.LeakyReLU(0.1)), "gl", "1", "post", False),
    "gl-first-post": (lambda: _plain3(nn.LeakyReLU(0.1)), "gl", "0", "post", False),
    "gl-second-pre": (lambda: _plain3(nn.LeakyReLU(0.1)), "gl", "2", "pre", False),
    "gl-identity-post": (lambda: _plain3(nn.Identity()), "gl", "1", "post", False),
    "rescale-gcn-reader-inner": (_gcn_reader, "rescale", "module_2.lin", "pre", False),
    "linear-between-post": (lambda: _plain3(nn.Identity()), "linear", "1", "post", False),
    "linear-first-post": (lambda: _plain3(nn.Identity()), "linear", "0", "post", False),
    "linear-second-pre": (lambda: _plain3(nn.Identity()), "linear", "2", "pre", False),
    "norm-pre": (lambda: _plain3(nn.LayerNorm(4, eps=0.0)), "norm", "1", "pre", False),
}


@pytest.mark.parametrize("case", sorted(_HOOKED))
def test_forward_hooks_that_may_change_the_chain_break_it(case):
    """A hook the detector cannot see through hides the symmetry, and the message says so;
    the output of such a model would change under the action (a clipping hook: teleport's
    loss check may pass on the teleport batch and the model still change elsewhere)."""
    build, kind, stage, side, survives = _HOOKED[case]
    torch.manual_seed(0)
    assert find_symmetries(build(), kinds=kind)  # found without the hook
    model = build()
    module = model.get_submodule(stage)
    if side == "pre":
        module.register_forward_pre_hook(_shift)
    else:
        module.register_forward_hook(_clip)
    found = find_symmetries(model, kinds=kind, raise_if_empty=False)
    assert bool(found) is survives, found
    if not survives:
        with pytest.raises(NoSymmetryError, match="forward hooks"):
            find_symmetries(model, kinds=kind)


def test_hooked_symmetries_that_survive_are_exact(check_invariant):
    """A pre-hook on the first layer and a forward hook on the last leave the rescaling."""
    torch.manual_seed(0)
    model = _plain3(nn.ReLU())
    model[0].register_forward_pre_hook(_shift)
    model[2].register_forward_hook(_clip)
    syms = find_symmetries(model, kinds="rescale")
    check_invariant(model, (torch.randn(7, 3, dtype=torch.float64),), syms)


def test_hooks_inside_a_gated_layer_hide_its_copy_scales():
    torch.manual_seed(0)
    model = EquivariantMLP(
        "4x0e + 2x1o", "1x0e + 1x1o", hidden="8x0e + 4x1o + 2x2e", layers=2,
        group=group_from_name("O3"),
    ).double()  # fmt: skip
    assert len(find_symmetries(model, kinds="gated")) == 2
    layer = next(m for m in model.modules() if isinstance(m, EquivariantMLPLayer))
    layer.activation.register_forward_hook(_clip)
    assert len(find_symmetries(model, kinds="gated", raise_if_empty=False)) == 1


def test_linear_wrapped_sees_no_inner_end_behind_a_hook_on_that_side():
    """A GINConv's output end is its inner ``nn``, unless a forward hook may replace the
    output; a pre-hook hides the input end only."""
    from symgraph.teleport.registry import linear_wrapped

    conv = pyg_nn.GINConv(nn.Sequential(nn.Linear(6, 5)), aggr="add")
    assert linear_wrapped(conv, "c", last=True) == ("c.nn", conv.nn)
    assert linear_wrapped(conv, "c", last=False) == ("c.nn", conv.nn)
    handle = conv.register_forward_hook(_clip)
    assert linear_wrapped(conv, "c", last=True) is None
    assert linear_wrapped(conv, "c", last=False) == ("c.nn", conv.nn)
    handle.remove()
    conv.register_forward_pre_hook(_shift)
    assert linear_wrapped(conv, "c", last=True) == ("c.nn", conv.nn)
    assert linear_wrapped(conv, "c", last=False) is None


@pytest.mark.parametrize(
    "stage, side, left",
    [("net.1", "pre", ["gated copies net.1 -> net.2"]),  # may change what net.1 reads
     ("net.1.linear", "post", []),  # inside the reader (and inside the next gated layer)
     ("net.0.linear.bias", "post", ["gated copies net.1 -> net.2"])],  # deep inside net.0
)  # fmt: skip
def test_hooks_on_or_inside_the_reader_of_a_gated_layer_hide_its_copy_scales(stage, side, left):
    torch.manual_seed(0)
    model = EquivariantMLP(
        "4x0e + 2x1o", "1x0e + 1x1o", hidden="8x0e + 4x1o + 2x2e", layers=2,
        group=group_from_name("O3"),
    ).double()  # fmt: skip
    module = model.get_submodule(stage)
    if side == "pre":
        module.register_forward_pre_hook(_shift)
    else:
        module.register_forward_hook(_clip)
    found = find_symmetries(model, kinds="gated", raise_if_empty=False)
    assert [s.name for s in found] == left
