"""RelaxedGroupConv and GroupPooling: the formula, exact equivariance at initialisation,
broken equivariance after relaxing, periodic lattices, learning, bad input."""

from __future__ import annotations

import copy

import pytest
import torch

from symgraph.graph import radius_graph
from symgraph.groups import SO2, C, D, Rep, group_from_name
from symgraph.lattice import (
    Lattice,
    field_to_nodes,
    lattice_graph,
    nodes_to_field,
    reflect_field,
    rotate_field,
    rotation_matrix_90,
)
from symgraph.nn.relaxed_group import GroupPooling, RelaxedGroupConv
from symgraph.nn.relaxed_utils import (
    relaxation_penalty,
    relaxation_report,
    set_relaxation_trainable,
)
from symgraph.testing import equivariance_error, equivariance_error_per_element

FINITE = ["C1", "C3", "C4", "D4", "D6", "Inversion", "Mirror", "Tetrahedral", "Octahedral"]
F64 = torch.float64


def _cloud(num_nodes: int = 10, radius: float = 2.0, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    pos = torch.randn(num_nodes, 3, generator=gen, dtype=F64)
    return pos, radius_graph(pos, radius, loop=True)


def _relax(conv: RelaxedGroupConv, scale: float = 0.3) -> None:
    with torch.no_grad():
        conv.mixing_weights.add_(scale * torch.randn_like(conv.mixing_weights))


def _penalty(module) -> float:
    return float(module.relaxation_penalty().detach())


def _args(conv: RelaxedGroupConv, pos, edge_index):
    x = torch.randn(pos.shape[0], conv.rep_in.dim, dtype=F64)
    return [x, pos, edge_index], [conv.rep_in, "pos", None]


def _naive(conv: RelaxedGroupConv, x, pos, edge_index) -> torch.Tensor:
    """The defining formula, one edge, output element and input element at a time."""
    elements, order = conv.elements, conv.order
    lifted = x.reshape(x.shape[0], conv.in_channels, -1)
    out = torch.zeros(x.shape[0], conv.out_channels, order, dtype=x.dtype)
    for j, i in edge_index.T.tolist():
        rel = pos[j] - pos[i]
        for h in range(order):
            phi = conv.kernel_features(elements[h].T @ rel)  # φ(h^-1 r)
            for l in range(conv.num_filter_banks):
                kernel = torch.einsum("a,oacg->ocg", phi, conv.weight[l])  # K_l(h^-1 r)
                w = conv.mixing_weights[l, h]
                if conv.lifting:
                    out[i, :, h] += w * kernel[..., 0] @ lifted[j, :, 0]
                    continue
                for g in range(order):
                    k = int(conv.shift[h, g])  # index of h^-1 g
                    out[i, :, h] += w * kernel[:, :, k] @ lifted[j, :, g]
    if conv.bias is not None:
        out = out + conv.bias[:, None]
    return out.reshape(x.shape[0], -1)


@pytest.mark.parametrize("name", ["C4", "D3"])
@pytest.mark.parametrize("lifting", [True, False])
def test_matches_the_defining_formula(name, lifting):
    conv = RelaxedGroupConv(2, 3, group_from_name(name), lifting=lifting, hidden=8).double()
    _relax(conv)
    with torch.no_grad():
        conv.bias.normal_()
    pos, edge_index = _cloud(6, radius=1.8)
    x = torch.randn(6, conv.rep_in.dim, dtype=F64)
    with torch.no_grad():
        expected = _naive(conv, x, pos, edge_index)
        torch.testing.assert_close(conv(x, pos, edge_index), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", FINITE)
@pytest.mark.parametrize("lifting", [True, False])
def test_exactly_equivariant_at_initialisation_and_broken_when_relaxed(name, lifting):
    group = group_from_name(name)
    conv = RelaxedGroupConv(2, 3, group, lifting=lifting, num_filter_banks=3).double()
    args, specs = _args(conv, *_cloud())
    assert _penalty(conv) == 0.0
    assert equivariance_error(conv, group, args, specs, conv.rep_out) < 1e-10
    _relax(conv)
    if group.order > 1:  # (the trivial group has nothing to relax)
        assert _penalty(conv) > 0.0
        assert equivariance_error(conv, group, args, specs, conv.rep_out) > 1e-3


def test_mean_aggregation_offsets_and_cutoff_stay_equivariant():
    group = D(4)
    conv = RelaxedGroupConv(2, 2, group, cutoff=2.0, aggr="mean").double()
    pos, edge_index = _cloud()
    x = torch.randn(pos.shape[0], conv.rep_in.dim, dtype=F64)
    offsets = pos[edge_index[0]] - pos[edge_index[1]]
    with torch.no_grad():
        torch.testing.assert_close(conv(x, pos, edge_index, offsets), conv(x, pos, edge_index))
    specs = [conv.rep_in, "pos", None, "vector"]
    args = [x, pos, edge_index, offsets]
    assert equivariance_error(conv, group, args, specs, conv.rep_out) < 1e-10


def test_float32_equivariance():
    group = D(4)
    conv = RelaxedGroupConv(2, 3, group)
    pos, edge_index = _cloud()
    pos = pos.float()
    x = torch.randn(pos.shape[0], conv.rep_in.dim)
    specs = [conv.rep_in, "pos", None]
    assert equivariance_error(conv, group, [x, pos, edge_index], specs, conv.rep_out) < 1e-5


def test_float32_module_cast_to_float64_keeps_exact_group_elements():
    group = C(6)  # cos(π/3) is not a float32 number
    conv = RelaxedGroupConv(2, 2, group).double()
    args, specs = _args(conv, *_cloud())
    assert equivariance_error(conv, group, args, specs, conv.rep_out) < 1e-10


@pytest.mark.parametrize("name", ["C4", "D4"])
def test_group_pooling_is_invariant(name):
    group = group_from_name(name)
    conv = RelaxedGroupConv(1, 4, group, lifting=True).double()
    for reduce in ("mean", "max"):
        pool = GroupPooling(4, group, reduce)
        args, specs = _args(conv, *_cloud())

        def pooled(x, pos, edge_index, pool=pool):
            return pool(conv(x, pos, edge_index))

        assert equivariance_error(pooled, group, args, specs, None) < 1e-10
        assert pool(torch.zeros(5, 4 * group.order)).shape == (5, 4)


# ----------------------------------------------------------------------------- lattices
def _lattice(batch: int = 2, size: int = 6):
    lattice = Lattice((size, size), radius=1, periodic=True)
    graph = lattice_graph(lattice, batch, dtype=F64)
    return lattice, graph


def _move_lifted(field: torch.Tensor, group, channels: int, spatial, matrix: torch.Tensor):
    """Move a lifted field ``[B, C * |G|, H, W]``: cells by ``spatial``, group axis by ``ρ``."""
    rho = Rep.regular(group, channels).rho(matrix[None])[0]
    return torch.einsum("oc,bchw->bohw", rho, spatial(field))


def _planar_moves():
    flip_y = torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=F64))  # in D(n): y -> -y
    flip_x = torch.diag(torch.tensor([-1.0, 1.0, -1.0], dtype=F64))  # in D(4): x -> -x
    rotations = [
        (lambda f, k=k: rotate_field(f, k), rotation_matrix_90(k, 3, F64)) for k in (1, 2, 3)
    ]
    reflections = [
        (lambda f: reflect_field(f, "y"), flip_y),
        (lambda f: reflect_field(f, "x"), flip_x),
    ]
    return rotations, reflections


@pytest.mark.parametrize("name", ["C4", "D4"])
def test_grid_symmetries_commute_with_the_conv_on_a_periodic_lattice(name):
    group = group_from_name(name)
    lattice, graph = _lattice()
    lift = RelaxedGroupConv(2, 3, group, lifting=True).double()
    conv = RelaxedGroupConv(3, 2, group).double()

    def model(field):  # [B, 2, H, W] -> [B, 2 * |G|, H, W]
        x = field_to_nodes(field, lattice)
        hidden = torch.relu(lift(x, graph.pos, graph.edge_index, graph.offsets))
        out = conv(hidden, graph.pos, graph.edge_index, graph.offsets)
        return nodes_to_field(out, lattice, batch_size=2)

    rotations, reflections = _planar_moves()
    moves = rotations + (reflections if name == "D4" else [])
    field = torch.randn(2, 2, *lattice.shape, dtype=F64)
    with torch.no_grad():
        reference = model(field)
        for spatial, matrix in moves:
            expected = _move_lifted(reference, group, 2, spatial, matrix)
            error = (model(spatial(field)) - expected).abs().max() / reference.abs().max()
            assert error < 1e-10
        _relax(conv)
        relaxed = model(field)
        spatial, matrix = rotations[0]
        expected = _move_lifted(relaxed, group, 2, spatial, matrix)
        assert (model(spatial(field)) - expected).abs().max() / relaxed.abs().max() > 1e-3


# ----------------------------------------------------------------------------- learning
def test_relaxed_conv_fits_an_approximately_symmetric_target_better_than_the_strict_one():
    group = C(4)
    lattice, graph = _lattice(batch=2, size=8)
    conv_args = (graph.pos, graph.edge_index, graph.offsets)
    x = field_to_nodes(torch.randn(2, 1, *lattice.shape, dtype=F64), lattice)
    teacher = RelaxedGroupConv(1, 2, group, lifting=True, hidden=16).double()
    with torch.no_grad():  # a C4 conv plus a symmetry-breaking term
        teacher.mixing_weights.mul_(1 + 0.3 * torch.randn_like(teacher.mixing_weights))
        target = teacher(x, *conv_args)

    relaxed = RelaxedGroupConv(1, 2, group, lifting=True, hidden=16).double()
    strict = copy.deepcopy(relaxed)
    set_relaxation_trainable(strict, False)
    losses = {}
    for label, model in (("relaxed", relaxed), ("strict", strict)):
        params = [p for p in model.parameters() if p.requires_grad]
        optimiser = torch.optim.Adam(params, lr=2e-2)
        for _ in range(80):
            optimiser.zero_grad()
            loss = (model(x, *conv_args) - target).pow(2).mean()
            (loss + 1e-4 * relaxation_penalty(model)).backward()
            optimiser.step()
        losses[label] = float(loss.detach())
    assert losses["relaxed"] < 0.5 * losses["strict"]
    assert _penalty(strict) == 0.0
    assert relaxation_report(relaxed)["<model>"] > 0.0

    # the per-element report: the identity is exact, the rotations are not
    specs = [relaxed.rep_in, "pos", None, "vector"]
    elements, errors = equivariance_error_per_element(
        relaxed, group, [x, *conv_args], specs, relaxed.rep_out
    )
    assert torch.equal(elements[0], torch.eye(3, dtype=F64))
    assert errors[0] < 1e-12 and bool((errors[1:] > 1e-3).all())


# ----------------------------------------------------------------------------- bad input
def test_bad_input_raises_clear_errors():
    with pytest.raises(ValueError, match="group: expected a finite group"):
        RelaxedGroupConv(2, 2, SO2())
    with pytest.raises(ValueError, match="group: expected a finite group"):
        GroupPooling(2, SO2())
    with pytest.raises(TypeError, match="group: expected a MatrixGroup or a group name"):
        RelaxedGroupConv(2, 2, 4)
    assert RelaxedGroupConv(2, 2, "C4").group == C(4) == GroupPooling(2, "C4").group
    with pytest.raises(ValueError, match="in_channels: expected a positive int, got 0"):
        RelaxedGroupConv(0, 2, C(4))
    with pytest.raises(ValueError, match="aggr"):
        RelaxedGroupConv(1, 2, C(4), aggr="max")
    with pytest.raises(ValueError, match="reduce"):
        GroupPooling(2, C(4), reduce="sum")

    conv = RelaxedGroupConv(2, 3, C(4))
    pos, edge_index = _cloud()
    pos = pos.float()
    with pytest.raises(ValueError, match=r"x: expected shape \[N, 8\]"):
        conv(torch.randn(10, 2), pos, edge_index)  # scalars given to a non-lifting conv
    x = torch.randn(10, 8)
    with pytest.raises(ValueError, match=r"offsets: expected shape \[\d+, 3\]"):
        conv(x, pos, edge_index, torch.randn(3, 3))
    with pytest.raises(ValueError, match="offsets: expected finite values"):
        conv(x, pos, edge_index, torch.full((edge_index.shape[1], 3), float("nan")))
    with pytest.raises(ValueError, match="edge_index: expected node indices"):
        conv(x, pos, edge_index + 100)
    with pytest.raises(ValueError, match=r"x: expected last dimension 12"):
        GroupPooling(3, C(4))(torch.randn(5, 8))


def test_cutoff_must_be_a_positive_number():
    """Bools are not numbers here, and a string is named rather than failing a comparison."""
    for bad in (True, "2", 0.0, float("inf")):
        with pytest.raises(ValueError, match="cutoff: expected a positive finite number or None"):
            RelaxedGroupConv(2, 2, C(4), cutoff=bad)
    assert RelaxedGroupConv(2, 2, C(4), cutoff=2).cutoff == 2.0


def test_repr_and_reset():
    conv = RelaxedGroupConv(2, 3, D(4), lifting=True)
    assert "D(4)" in repr(conv) and "lifting" in repr(conv)
    # the kernel's length scale and the bias were missing
    shown = repr(RelaxedGroupConv(2, 3, D(4), length_scale=2.5, bias=False))
    assert "length_scale=2.5," in shown and "bias=False" in shown
    _relax(conv)
    conv.reset_parameters()
    assert _penalty(conv) == 0.0


def test_relaxation_penalty_is_the_squared_deviation_from_the_mean():
    """``Σ_l Σ_h (w_l(h) − mean_h w_l)²``, computed here directly."""
    conv = RelaxedGroupConv(2, 3, D(4), num_filter_banks=3).double()
    _relax(conv)
    w = conv.mixing_weights.detach()
    expected = (w - w.mean(dim=1, keepdim=True)).square().sum().item()
    assert _penalty(conv) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("lifting", [True, False])
def test_mean_aggregation_leaves_isolated_nodes_at_the_bias(lifting):
    """Nodes without incoming edges average nothing: only the bias, no 0/0."""
    conv = RelaxedGroupConv(2, 3, C(4), lifting=lifting, aggr="mean").double()
    with torch.no_grad():
        conv.bias.normal_()
    pos = torch.randn(4, 3, dtype=F64)
    edge_index = torch.tensor([[0, 1, 2], [1, 2, 1]])  # nodes 0 and 3: no incoming edge
    out = conv(torch.randn(4, conv.rep_in.dim, dtype=F64), pos, edge_index)
    assert bool(torch.isfinite(out).all())
    bias = conv.bias.detach().repeat_interleave(conv.order)
    for node in (0, 3):
        torch.testing.assert_close(out[node], bias, rtol=0, atol=0)


def test_mixed_kernel_starts_with_the_variance_of_one_bank():
    """``w = 1/sqrt(L)``: the sum of L independent banks has the variance of one bank."""
    torch.manual_seed(0)
    conv = RelaxedGroupConv(4, 8, C(4), num_filter_banks=4, hidden=32).double()
    ratio = (conv.mixed_weights().var() / conv.weight.var()).item()
    assert 0.8 < ratio < 1.25  # 1/L = 0.25 with w = 1/L


def test_group_pooling_reduces_the_group_axis():
    """``[C, |G|]`` layout: the mean or the maximum over the group elements of each channel."""
    group = C(4)
    x = torch.randn(5, 3 * group.order, dtype=F64)
    lifted = x.reshape(5, 3, group.order)
    torch.testing.assert_close(GroupPooling(3, group, "mean")(x), lifted.mean(-1))
    assert torch.equal(GroupPooling(3, group, "max")(x), lifted.max(-1).values)
