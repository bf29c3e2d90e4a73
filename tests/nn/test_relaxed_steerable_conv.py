"""RelaxedSteerableConv and the relaxation utilities: exact equivariance at initialisation for
finite and continuous groups, broken equivariance after relaxing, periodic lattices,
learning, penalties of whole models, bad input."""

from __future__ import annotations

import copy

import pytest
import torch

from symgraph.graph import radius_graph
from symgraph.groups import SO3, C, D, Rep, group_from_name
from symgraph.lattice import FieldLayout, Lattice, lattice_graph, reflect_field, rotate_field
from symgraph.nn import EquivariantBilinear
from symgraph.nn.relaxed_group import RelaxedGroupConv
from symgraph.nn.relaxed_steerable import RelaxedSteerableConv, symmetry_breaking_basis
from symgraph.nn.relaxed_utils import (
    relaxation_penalty,
    relaxation_report,
    relaxed_modules,
    set_relaxation_trainable,
)
from symgraph.testing import equivariance_error, equivariance_error_per_element

GROUPS = [
    "Trivial", "Inversion", "Mirror", "C4", "D3", "D4", "SO2", "O2Conical", "O2Full",
    "Tetrahedral", "Octahedral", "Icosahedral", "SO3", "O3",
]  # fmt: skip
REP_IN = "2x0e + 1x1o + 1x2e"
REP_OUT = "2x0e + 1x1o + 1x1e + 1x0o"
F64 = torch.float64


def _cloud(num_nodes: int = 10, radius: float = 2.0, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    pos = torch.randn(num_nodes, 3, generator=gen, dtype=F64)
    return pos, radius_graph(pos, radius, loop=True)


def _penalty(module) -> float:
    return float(module.relaxation_penalty().detach())


def _relax(conv: RelaxedSteerableConv, scale: float = 0.3) -> None:
    with torch.no_grad():
        conv.relaxed_coefficients.normal_(std=scale)


@pytest.mark.parametrize("name", GROUPS)
def test_exactly_equivariant_at_initialisation_and_broken_when_relaxed(name):
    group = group_from_name(name)
    conv = RelaxedSteerableConv(REP_IN, REP_OUT, group, cutoff=2.5).double()
    pos, edge_index = _cloud()
    x = torch.randn(pos.shape[0], conv.rep_in.dim, dtype=F64)
    args, specs = [x, pos, edge_index], [conv.rep_in, "pos", None]
    assert _penalty(conv) == 0.0
    assert equivariance_error(conv, group, args, specs, conv.rep_out) < 1e-10
    _relax(conv)
    if conv.num_breaking:  # the trivial group has nothing to relax
        assert _penalty(conv) > 0.0
        assert equivariance_error(conv, group, args, specs, conv.rep_out) > 1e-3
    else:
        assert _penalty(conv) == 0.0


def test_float32_bound_mean_aggregation_and_offsets():
    group = SO3()
    conv = RelaxedSteerableConv(REP_IN, REP_OUT, group, aggr="mean", self_interaction=False)
    pos, edge_index = _cloud()
    pos = pos.float()
    x = torch.randn(pos.shape[0], conv.rep_in.dim)
    offsets = pos[edge_index[0]] - pos[edge_index[1]]
    with torch.no_grad():
        torch.testing.assert_close(conv(x, pos, edge_index, offsets), conv(x, pos, edge_index))
    args, specs = [x, pos, edge_index, offsets], [conv.rep_in, "pos", None, "vector"]
    assert equivariance_error(conv, group, args, specs, conv.rep_out) < 1e-5


@pytest.mark.parametrize(
    "name,expected", [("C4", 6), ("Mirror", 3), ("Octahedral", 8), ("Trivial", 0), ("SO3", 8)]
)
def test_symmetry_breaking_basis_is_the_non_invariant_complement(name, expected):
    group = group_from_name(name)
    rep = Rep("1x0e + 1x1o + 1x2e", group)
    u = symmetry_breaking_basis(rep)
    assert u.shape == (expected, rep.dim)
    torch.testing.assert_close(u @ u.T, torch.eye(expected, dtype=F64))
    if group.is_finite:  # U kills the invariants: U · mean_g ρ(g) = 0, and U · U^T = I above
        invariant_projector = rep.rho(group.elements()).mean(0)
        torch.testing.assert_close(u @ invariant_projector, torch.zeros_like(u))
        rank = int(torch.linalg.matrix_rank(invariant_projector))
        assert expected == rep.dim - rank
    else:  # SO(3): only Y_0 is invariant
        assert bool((u[:, 0] == 0).all())


# ----------------------------------------------------------------------------- lattices
@pytest.mark.parametrize("name", ["C4", "D4"])
def test_grid_symmetries_commute_with_the_conv_on_a_periodic_lattice(name):
    group = group_from_name(name)
    lattice = Lattice((6, 6), radius=1, periodic=True)
    graph = lattice_graph(lattice, 2, dtype=F64)
    layout = FieldLayout("1x0e + 1x1o", dim=2)  # density and velocity (u, v)
    conv = RelaxedSteerableConv("1x0e + 1x1o", "1x0e + 1x1o", group, r_max=2.0).double()

    def model(field):  # [B, 3, H, W] -> [B, 3, H, W]
        x = layout.to_nodes(field, lattice)
        out = conv(x, graph.pos, graph.edge_index, graph.offsets)
        return layout.to_field(out, lattice, batch_size=2)

    moves = [lambda f, k=k: rotate_field(f, k, layout) for k in (1, 2, 3)]
    if name == "D4":
        moves += [lambda f, a=a: reflect_field(f, a, layout) for a in ("x", "y")]
    field = torch.randn(2, 3, *lattice.shape, dtype=F64)
    with torch.no_grad():
        reference = model(field)
        for move in moves:
            error = (model(move(field)) - move(reference)).abs().max() / reference.abs().max()
            assert error < 1e-10
        _relax(conv)
        relaxed = model(field)
        error = (model(moves[0](field)) - moves[0](relaxed)).abs().max() / relaxed.abs().max()
        assert error > 1e-3


# ----------------------------------------------------------------------------- learning
def test_relaxed_conv_fits_an_approximately_symmetric_target_better_than_the_strict_one():
    group = C(4)
    lattice = Lattice((6, 6), radius=1, periodic=True)
    graph = lattice_graph(lattice, 2, dtype=F64)
    conv_args = (graph.pos, graph.edge_index, graph.offsets)
    rep = "1x0e + 1x1o"
    teacher = RelaxedSteerableConv(rep, rep, group, r_max=1.5).double()
    x = torch.randn(graph.pos.shape[0], teacher.rep_in.dim, dtype=F64)
    _relax(teacher, scale=0.1)  # a C4-equivariant conv plus a symmetry-breaking term
    with torch.no_grad():
        target = teacher(x, *conv_args)

    relaxed = RelaxedSteerableConv(rep, rep, group, r_max=1.5).double()
    strict = copy.deepcopy(relaxed)
    set_relaxation_trainable(strict, False)
    losses = {}
    for label, model in (("relaxed", relaxed), ("strict", strict)):
        params = [p for p in model.parameters() if p.requires_grad]
        optimiser = torch.optim.Adam(params, lr=2e-2)
        for _ in range(60):
            optimiser.zero_grad()
            loss = (model(x, *conv_args) - target).pow(2).mean()
            (loss + 1e-4 * relaxation_penalty(model)).backward()
            optimiser.step()
        losses[label] = float(loss.detach())
    assert losses["relaxed"] < 0.5 * losses["strict"]
    assert _penalty(strict) == 0.0 and _penalty(relaxed) > 0.0

    specs = [relaxed.rep_in, "pos", None, "vector"]
    elements, errors = equivariance_error_per_element(
        relaxed, group, [x, *conv_args], specs, relaxed.rep_out
    )
    assert errors[0] < 1e-12 and bool((errors[1:] > 1e-3).all())


# ----------------------------------------------------------------------------- utilities
def test_relaxation_utilities_collect_every_relaxed_layer():
    group = D(4)
    model = torch.nn.ModuleDict(
        {
            "lift": RelaxedGroupConv(1, 2, group, lifting=True),
            "steer": RelaxedSteerableConv("1x0e", "1x0e", group),
            "head": torch.nn.Linear(2, 1),
        }
    )
    assert [name for name, _ in relaxed_modules(model)] == ["lift", "steer"]
    assert float(relaxation_penalty(model).detach()) == 0.0
    assert relaxation_report(model) == {"lift": 0.0, "steer": 0.0}
    _relax(model["steer"])
    with torch.no_grad():
        model["lift"].mixing_weights[0, 0] += 1.0
    report = relaxation_report(model)
    total = relaxation_penalty(model)
    assert total.requires_grad
    assert float(total.detach()) == pytest.approx(report["lift"] + report["steer"])
    assert report["lift"] > 0 and report["steer"] > 0
    set_relaxation_trainable(model, False)
    assert not model["lift"].mixing_weights.requires_grad
    assert not model["steer"].relaxed_coefficients.requires_grad
    assert model["lift"].weight.requires_grad
    plain = torch.nn.Linear(2, 2)
    assert float(relaxation_penalty(plain)) == 0.0 and relaxation_report(plain) == {}
    with pytest.raises(TypeError, match="model: expected a torch.nn.Module"):
        relaxation_penalty("not a model")


class _PenaltyOnly(torch.nn.Module):
    """Has a penalty but no relaxation parameters: not a relaxed layer."""

    def relaxation_penalty(self) -> torch.Tensor:
        return torch.tensor(5.0)


def test_a_relaxed_layer_needs_both_methods():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), _PenaltyOnly())
    assert relaxed_modules(model) == []
    assert float(relaxation_penalty(model)) == 0.0 and relaxation_report(model) == {}
    set_relaxation_trainable(model, False)  # nothing to freeze
    assert model[0].weight.requires_grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_penalty_of_a_model_without_relaxed_layers_has_its_dtype(dtype):
    penalty = relaxation_penalty(torch.nn.Linear(2, 2).to(dtype))
    assert penalty.dtype == dtype and penalty.shape == () and float(penalty) == 0.0


# ----------------------------------------------------------------------------- bad input
def test_bad_input_raises_clear_errors():
    group = C(4)
    with pytest.raises(ValueError, match="rep_out: expected a representation of C\\(4\\)"):
        RelaxedSteerableConv(Rep("1x0e", group), Rep("1x0e", SO3()))
    with pytest.raises(ValueError, match="lmax: expected an int ≥ 1"):
        RelaxedSteerableConv("1x0e", "1x0e", group, lmax=0)
    with pytest.raises(ValueError, match="aggr"):
        RelaxedSteerableConv("1x0e", "1x0e", group, aggr="max")
    with pytest.raises(ValueError, match="cutoff"):
        RelaxedSteerableConv("1x0e", "1x0e", group, cutoff=-1.0)

    conv = RelaxedSteerableConv("2x0e + 1x1o", "1x1o", group)
    pos, edge_index = _cloud()
    pos = pos.float()
    with pytest.raises(ValueError, match=r"x: expected shape \[N, 5\]"):
        conv(torch.randn(10, 4), pos, edge_index)
    x = torch.randn(10, 5)
    with pytest.raises(ValueError, match=r"offsets: expected shape \[\d+, 3\]"):
        conv(x, pos, edge_index, torch.randn(edge_index.shape[1], 2))
    with pytest.raises(TypeError, match="offsets: expected a floating-point tensor"):
        conv(x, pos, edge_index, torch.zeros(edge_index.shape[1], 3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"pos: expected shape \[N, 3\]"):
        conv(x, pos[:, :2], edge_index)


def test_repr_and_reset():
    conv = RelaxedSteerableConv("1x0e + 1x1o", "1x1o", C(4))
    assert "C(4)" in repr(conv) and "breaking=6" in repr(conv)
    _relax(conv)
    conv.reset_parameters()
    assert _penalty(conv) == 0.0


@pytest.mark.parametrize("num_nodes", [0, 3])
def test_relaxed_convolutions_take_graphs_without_edges(num_nodes):
    torch.manual_seed(0)
    no_edges = torch.zeros(2, 0, dtype=torch.long)
    pos = torch.randn(num_nodes, 3)
    steerable = RelaxedSteerableConv("2x0e + 1x1o", "2x0e + 1x1o", cutoff=3.0)
    out = steerable(torch.randn(num_nodes, 5), pos, no_edges)
    assert out.shape == (num_nodes, 5) and bool(torch.isfinite(out).all())
    lifted = RelaxedGroupConv(2, 3, C(4), lifting=True)
    out = lifted(torch.randn(num_nodes, 2), pos, no_edges)
    assert out.shape == (num_nodes, 12)
    if num_nodes:  # no neighbour: only the bias, the same for every node
        assert torch.allclose(out, out[:1].expand_as(out))


def test_messages_are_the_bilinear_map_of_the_harmonics_and_the_features():
    """``K(r) f = B(c(r))(Y(r), f)``: every basis triple of an output block contributes, as in
    the :class:`~symgraph.nn.EquivariantBilinear` with the edge's coefficients as weights."""
    # two copies in and out: each triple's coefficients are laid out [mul_out, mul_in, n]
    conv = RelaxedSteerableConv("2x0e + 2x1o", "2x0e + 3x1o", C(4), lmax=2).double()
    _relax(conv)
    rel = torch.randn(3, 3, dtype=F64)
    f = torch.randn(3, conv.rep_in.dim, dtype=F64)
    coefficients, harmonics = conv.edge_coefficients(rel)
    bilinear = EquivariantBilinear(conv.rep_sh, conv.rep_in, conv.rep_out).double()
    messages = conv.messages(rel, f)
    for edge in range(3):
        with torch.no_grad():
            start = 0
            for weight, triple in zip(bilinear.weights, conv.basis.triples, strict=True):
                weight.copy_(coefficients[edge, start : start + triple.num].view(weight.shape))
                start += triple.num
        expected = bilinear(harmonics[edge], f[edge])
        torch.testing.assert_close(messages[edge], expected, rtol=0, atol=1e-12)


def test_kernel_vanishes_beyond_the_cutoff():
    """Messages along edges at least ``cutoff`` long are zero, the relaxed pathway's too."""
    conv = RelaxedSteerableConv("1x0e + 1x1o", "1x0e + 1x1o", C(4), cutoff=1.5).double()
    _relax(conv)
    rel = torch.tensor([[1.5, 0.0, 0.0], [0.0, 2.0, 1.0], [0.3, 0.2, 0.1]], dtype=F64)
    messages = conv.messages(rel, torch.randn(3, conv.rep_in.dim, dtype=F64))
    assert messages[:2].abs().max().item() == 0.0 and messages[2].abs().max().item() > 0.0


def test_mean_aggregation_leaves_isolated_nodes_finite():
    """Nodes without incoming edges average nothing: self-interaction and bias only."""
    conv = RelaxedSteerableConv("2x0e + 1x1o", "2x0e + 1x1o", C(4), aggr="mean").double()
    x = torch.randn(4, conv.rep_in.dim, dtype=F64)
    pos = torch.randn(4, 3, dtype=F64)
    edge_index = torch.tensor([[0, 1, 2], [1, 2, 1]])  # nodes 0 and 3: no incoming edge
    out = conv(x, pos, edge_index)
    assert bool(torch.isfinite(out).all())
    expected = conv.bias(conv.self_linear(x[[0, 3]]))
    torch.testing.assert_close(out[[0, 3]], expected, rtol=0, atol=1e-14)


def test_initial_coefficients_have_variance_one_over_fan_in():
    """``θ ~ N(0, 1/fan_in)``, fan-in = input copies × paths into the output block (here 16
    copies of ``0e`` and the single path ``Y_0 ⊗ 0e -> 0e``)."""
    torch.manual_seed(0)
    conv = RelaxedSteerableConv("16x0e", "4x0e", SO3(), lmax=1)
    assert len(conv.basis.triples) == 1 and conv.coefficients.shape == (8, 64)
    assert conv.coefficients.std().item() == pytest.approx(1 / 16**0.5, rel=0.15)
