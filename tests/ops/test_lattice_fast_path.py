"""The lattice fast path (one dense conv) against message passing on the lattice graph."""

from __future__ import annotations

from unittest import mock

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import symgraph.nn.conv as conv_module
from symgraph.groups import group_from_name
from symgraph.lattice import FieldLayout, Lattice, lattice_graph
from symgraph.nn import ImplicitSteerableConv
from symgraph.nn.relaxed_implicit import RelaxedImplicitSteerableConv
from symgraph.ops.lattice_conv import (
    _PeriodicPad,
    lattice_convolution,
    lattice_degree,
    lattice_edge_count,
    lattice_weight,
    stencil_relative_positions,
)

LATTICES = {
    "2d-periodic": Lattice((6, 7), radius=1),
    "2d-bounded-disc": Lattice((7, 6), radius=2, periodic=False, stencil="disc"),
    "2d-mixed": Lattice((5, 6), radius=1, periodic=(True, False)),
    "2d-periodic-rect": Lattice((6, 8), radius=(1, 2)),
    "3d-periodic": Lattice((3, 4, 5), radius=1),
    "3d-bounded": Lattice((3, 4, 4), radius=1, periodic=False),
}
LAYOUT_IN, LAYOUT_OUT = "2x0e + 2x1o", "1x0e + 1x1o"  # planar fields: scalars and vectors


def make_conv(group_name: str, aggr: str = "add", dtype=torch.float64, relaxed=False):
    cls = RelaxedImplicitSteerableConv if relaxed else ImplicitSteerableConv
    conv = cls(LAYOUT_IN, LAYOUT_OUT, group=group_from_name(group_name), aggr=aggr, r_max=3.0)
    with torch.no_grad():
        for bias in conv.bias.biases:
            bias.normal_()
        if relaxed:
            conv.kernel.head.free.normal_()
    return conv.to(dtype)


def random_nodes(lattice: Lattice, batch: int, dtype) -> torch.Tensor:
    """Node features of random planar fields (vectors with z = 0), in field_to_nodes order."""
    layout = FieldLayout(LAYOUT_IN, dim=lattice.dim)
    field = torch.randn(batch, layout.field_channels, *lattice.shape, dtype=dtype)
    return layout.to_nodes(field)


def both_paths(conv, lattice, batch, dtype, self_loops=True):
    graph = lattice_graph(lattice, batch, self_loops=self_loops, dtype=dtype)
    x = random_nodes(lattice, batch, dtype).requires_grad_()
    dense = mock.patch.object(
        conv_module, "lattice_convolution", wraps=conv_module.lattice_convolution
    )
    with dense as spy:
        slow = conv(x, graph.pos, graph.edge_index, rel=graph.offsets)
        assert spy.call_count == 0
        fast = conv(x, graph.pos, graph.edge_index, rel=graph.offsets, lattice=lattice)
        assert spy.call_count == 1  # the dense path ran, not message passing again
    return x, slow, fast


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().abs().max() / b.detach().abs().max())


@pytest.mark.parametrize("name", list(LATTICES))
@pytest.mark.parametrize("group_name", ["C4", "D4", "SO2", "O3"])
def test_fast_path_matches_message_passing(name, group_name):
    lattice = LATTICES[name]
    conv = make_conv(group_name, dtype=torch.float32)
    _, slow, fast = both_paths(conv, lattice, batch=2, dtype=torch.float32)
    assert fast.shape == slow.shape == (2 * lattice.num_cells, conv.rep_out.dim)
    assert relative_error(fast, slow) < 1e-5
    conv = conv.double()
    _, slow, fast = both_paths(conv, lattice, batch=3, dtype=torch.float64)
    assert relative_error(fast, slow) < 1e-12


@pytest.mark.parametrize("name", ["2d-periodic", "2d-bounded-disc", "3d-bounded"])
@pytest.mark.parametrize("aggr", ["add", "mean"])
@pytest.mark.parametrize("self_loops", [True, False])
def test_aggregations_and_self_loops(name, aggr, self_loops):
    lattice = LATTICES[name]
    conv = make_conv("C4", aggr)
    _, slow, fast = both_paths(conv, lattice, 2, torch.float64, self_loops)
    assert relative_error(fast, slow) < 1e-12


@pytest.mark.parametrize("relaxed", [False, True])
def test_gradients_agree(relaxed):
    lattice = LATTICES["2d-mixed"]
    conv = make_conv("D4", relaxed=relaxed)
    x, slow, fast = both_paths(conv, lattice, 2, torch.float64)
    weights = torch.randn_like(slow)
    params = [p for p in conv.parameters() if p.requires_grad]
    grads_slow = torch.autograd.grad((slow * weights).sum(), [x, *params], allow_unused=True)
    grads_fast = torch.autograd.grad((fast * weights).sum(), [x, *params], allow_unused=True)
    for a, b in zip(grads_fast, grads_slow):
        if b is None:
            assert a is None or float(a.abs().max()) == 0.0
            continue
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-11)


@pytest.mark.parametrize("name", ["2d-periodic-rect", "2d-mixed", "3d-periodic"])
def test_periodic_padding_matches_circular_pad_and_differentiates_twice(name):
    lattice = LATTICES[name]
    pads = tuple(r if p else 0 for r, p in zip(lattice.radius, lattice.periodic))
    cells = torch.randn(2, *lattice.shape, 3, dtype=torch.float64, requires_grad=True)
    padded = _PeriodicPad.apply(cells, pads)
    reference = torch.nn.functional.pad(
        cells.movedim(-1, 1), [q for p in reversed(pads) for q in (p, p)], mode="circular"
    )
    assert torch.equal(padded, reference)
    assert torch.autograd.gradcheck(lambda t: _PeriodicPad.apply(t, pads), (cells,))
    assert torch.autograd.gradgradcheck(lambda t: _PeriodicPad.apply(t, pads), (cells,))


def test_layers_with_attributes_keep_message_passing():
    """With attributes the lattice layer passes messages along the lattice's own offsets
    (minimum image across periodic axes), not ``pos`` differences, which wrap wrongly."""
    lattice = LATTICES["2d-periodic"]
    conv = ImplicitSteerableConv(LAYOUT_IN, LAYOUT_OUT, group=group_from_name("C4"), edge_dim=1)
    graph = lattice_graph(lattice, 1)
    x = random_nodes(lattice, 1, torch.float32)
    edge_attr = torch.randn(graph.edge_index.shape[1], 1)
    plain = conv(x, graph.pos, graph.edge_index, edge_attr, rel=graph.offsets)
    given = conv(x, graph.pos, graph.edge_index, edge_attr, lattice=lattice)
    assert torch.equal(plain, given)
    unwrapped = conv(x, graph.pos, graph.edge_index, edge_attr)  # pos differences
    assert not torch.allclose(unwrapped, given, atol=1e-3)
    with pytest.raises(ValueError, match=r"edge_index: expected lattice_graph\(lattice, 1\)"):
        conv(x, graph.pos, graph.edge_index.flip(1), edge_attr, lattice=lattice)


# --------------------------------------------------------------------------- the ops


@pytest.mark.parametrize("name", list(LATTICES))
def test_edge_counts_degrees_and_offsets_match_the_graph(name):
    lattice = LATTICES[name]
    for self_loops in (True, False):
        graph = lattice_graph(lattice, 1, self_loops=self_loops, dtype=torch.float64)
        assert lattice_edge_count(lattice, self_loops) == graph.edge_index.shape[1]
        degree = torch.bincount(graph.edge_index[1], minlength=lattice.num_cells)
        expected = degree.clamp_min(1).double().reshape(lattice.shape)
        assert torch.equal(
            lattice_degree(lattice, self_loops=self_loops, dtype=torch.float64), expected
        )
    rel = stencil_relative_positions(lattice, torch.float64)
    graph = lattice_graph(lattice, 1, dtype=torch.float64)
    assert torch.equal(rel[graph.stencil_index], graph.offsets)


def test_weight_is_the_kernel_at_the_offsets():
    lattice = Lattice((5, 5), spacing=0.5, radius=2, stencil="disc")
    weight = lattice_weight(lambda rel: rel[:, :, None].expand(-1, 3, 2), lattice)
    assert weight.shape == (3, 2, 5, 5)
    assert float(weight[0, 0, 2, 4]) == 1.0  # offset (dy, dx) = (0, 2) at x = 2 * 0.5
    assert float(weight[1, 1, 0, 2]) == -1.0  # (dy, dx) = (-2, 0): y = -1
    assert float(weight.abs()[..., 0, 0].sum()) == 0.0  # a disc has no corner taps


def test_bad_input_names_the_argument():
    lattice = LATTICES["2d-periodic"]
    conv = make_conv("C4", dtype=torch.float32)
    graph = lattice_graph(lattice, 2)
    x = random_nodes(lattice, 2, torch.float32)
    with pytest.raises(ValueError, match="edge_index: .* edges do not form"):
        conv(x, graph.pos, graph.edge_index[:, :-3], lattice=lattice)
    other = Lattice((7, 6), radius=1)
    with pytest.raises(ValueError, match="lattice: 84 nodes"):
        conv(x, graph.pos, graph.edge_index, lattice=Lattice((5, 5)))
    with pytest.raises(TypeError, match="lattice: expected a Lattice"):
        conv(x, graph.pos, graph.edge_index, lattice=(6, 7))
    with pytest.raises(ValueError, match=r"rel: expected \d+ rows \(one per edge\)"):
        conv(x, graph.pos, graph.edge_index, rel=graph.offsets[:-1])
    with pytest.raises(ValueError, match=r"centre: expected shape \[4, 8\]"):
        lattice_weight(conv.kernel, lattice, centre=torch.zeros(8, 4))
    with pytest.raises(ValueError, match="edge_index: 84 edges"):
        conv(x, graph.pos, graph.edge_index[:, :84], lattice=other)
    with pytest.raises(ValueError, match=r"x: expected shape \[N, 8\]"):
        conv(x[:, :5], graph.pos, graph.edge_index, lattice=lattice)
    with pytest.raises(ValueError, match="weight: expected shape"):
        lattice_convolution(x, torch.zeros(3, 8, 5, 5), lattice)
    # another lattice with as many cells and edges, or another spacing: other positions
    for wrong in (Lattice((7, 6), radius=1), Lattice((6, 7), radius=1, spacing=2.0)):
        with pytest.raises(ValueError, match="lattice: pos does not hold the cell positions"):
            conv(x, graph.pos, graph.edge_index, lattice=wrong)
    shifted = graph.pos + torch.tensor([3.0, -1.0, 0.0])  # a translated copy is the same grid
    torch.testing.assert_close(
        conv(x, shifted, graph.edge_index, lattice=lattice),
        conv(x, graph.pos, graph.edge_index, lattice=lattice),
    )
    with pytest.raises(ValueError, match="kernel: expected kernels"):
        lattice_weight(lambda rel: torch.zeros(2, 3, 3), lattice)
    with pytest.raises(ValueError, match="radius: non-square stencil"):
        Lattice((8, 8), radius=(1, 2), periodic=(True, False))


def test_bias_with_a_degree_is_added_once_and_undivided():
    lattice = Lattice((4, 5), periodic=False, radius=1)
    x, weight, bias = torch.randn(20, 2), torch.randn(3, 2, 3, 3), torch.randn(3)
    degree = lattice_degree(lattice)
    plain = lattice_convolution(x, weight, lattice, degree=degree)
    torch.testing.assert_close(
        lattice_convolution(x, weight, lattice, degree=degree, bias=bias), plain + bias
    )


def test_a_lone_cell_without_self_loops_has_degree_one():
    """No neighbour at all: the mean divides by 1, not 0."""
    lone = Lattice((2, 2), periodic=False, radius=0)  # the stencil is the centre alone
    assert torch.equal(lattice_degree(lone, self_loops=False), torch.ones(2, 2))


def test_node_attributes_on_the_lattice_keep_message_passing():
    """A layer with node attributes is not the plain lattice convolution: the lattice
    call must still read them."""
    lattice = LATTICES["2d-periodic"]
    conv = ImplicitSteerableConv(LAYOUT_IN, LAYOUT_OUT, group=group_from_name("C4"), node_dim=2)
    graph = lattice_graph(lattice, 1)
    x = random_nodes(lattice, 1, torch.float32)
    attrs = torch.randn(x.shape[0], 2), torch.randn(x.shape[0], 2)
    outs = [conv(x, graph.pos, graph.edge_index, node_attr=a, lattice=lattice) for a in attrs]
    by_offsets = conv(x, graph.pos, graph.edge_index, node_attr=attrs[0], rel=graph.offsets)
    assert torch.equal(outs[0], by_offsets)
    assert not torch.equal(outs[0], outs[1])


def test_each_copy_of_a_batch_may_be_translated_on_its_own():
    """Copies of a batch shifted by different vectors are still the lattice: same output."""
    lattice = LATTICES["2d-periodic"]
    conv = make_conv("C4")
    graph = lattice_graph(lattice, 3, dtype=torch.float64)
    x = random_nodes(lattice, 3, torch.float64)
    shifts = torch.tensor([[0.0, 0.0, 0.0], [4.0, -2.5, 0.0], [-1.0, 7.0, 0.0]]).double()
    moved = (graph.pos.reshape(3, -1, 3) + shifts[:, None]).reshape(-1, 3)
    torch.testing.assert_close(
        conv(x, moved, graph.edge_index, lattice=lattice),
        conv(x, graph.pos, graph.edge_index, lattice=lattice),
    )


def test_positions_changed_in_place_are_checked_again():
    """The check is remembered per in-place version: editing ``pos`` in place re-runs it."""
    lattice = LATTICES["2d-periodic"]
    conv = make_conv("C4")
    graph = lattice_graph(lattice, 1, dtype=torch.float64)
    x = random_nodes(lattice, 1, torch.float64)
    pos = graph.pos.clone()
    conv(x, pos, graph.edge_index, lattice=lattice)  # checked and remembered
    pos.mul_(2.0)  # another spacing, same tensor object
    with pytest.raises(ValueError, match="lattice: pos does not hold the cell positions"):
        conv(x, pos, graph.edge_index, lattice=lattice)


def test_position_tolerance_follows_the_smallest_spacing():
    """Rounding-level noise is accepted; an error of 0.1 % of the finest spacing is not,
    even when another axis is 100 times coarser."""
    lattice = Lattice((6, 7), radius=1, spacing=(1.0, 0.01))
    conv = make_conv("C4")
    graph = lattice_graph(lattice, 1, dtype=torch.float64)
    x = random_nodes(lattice, 1, torch.float64)
    noisy = graph.pos + 1e-9 * torch.randn_like(graph.pos)
    torch.testing.assert_close(
        conv(x, noisy, graph.edge_index, lattice=lattice),
        conv(x, graph.pos, graph.edge_index, lattice=lattice),
    )
    off = graph.pos.clone()
    off[5, 0] += 1e-3 * min(lattice.spacing)
    with pytest.raises(ValueError, match="lattice: pos does not hold the cell positions"):
        conv(x, off, graph.edge_index, lattice=lattice)


@st.composite
def lattices(draw) -> Lattice:
    """Valid 2D and 3D lattices: sizes, radii, boundaries, stencils and spacings at random."""
    dim = draw(st.sampled_from([2, 3]))
    periodic = tuple(draw(st.booleans()) for _ in range(dim))
    radius = tuple(draw(st.integers(1, 2)) for _ in range(dim))
    if not all(periodic):  # per-axis radii need every axis periodic
        radius = (radius[0],) * dim
    # smallest size per axis: 2r + 1 cells on a periodic axis, r + 1 on a bounded one
    shape = tuple(
        draw(st.integers((2 * r + 1) if p else (r + 1), 6)) for r, p in zip(radius, periodic)
    )
    stencil = "disc" if len(set(radius)) == 1 and draw(st.booleans()) else "square"
    spacing = draw(st.sampled_from([1.0, 0.5, (0.5, 1.0, 2.0)[:dim]]))
    return Lattice(shape, spacing=spacing, radius=radius, periodic=periodic, stencil=stencil)


@settings(max_examples=20, deadline=None)
@given(
    lattice=lattices(),
    aggr=st.sampled_from(["add", "mean"]),
    self_loops=st.booleans(),
    batch=st.integers(1, 2),
)
def test_fast_path_matches_message_passing_on_any_lattice(lattice, aggr, self_loops, batch):
    """Random sizes, radii, boundaries, stencils and spacings: the dense path computes what
    message passing on ``lattice_graph`` computes, to float64 precision."""
    conv = make_conv("C4", aggr)
    _, slow, fast = both_paths(conv, lattice, batch, torch.float64, self_loops)
    assert relative_error(fast, slow) < 1e-12


def test_lattice_helpers_refuse_an_integer_dtype():
    """An integer ``dtype`` truncated the offsets of a lattice of spacing 0.5 to zero (and
    so evaluated the kernel at the centre for every tap), silently."""
    lattice = Lattice((4, 4), spacing=0.5)
    message = "dtype: expected a floating-point torch dtype, got torch.int64"
    with pytest.raises(TypeError, match=message):
        stencil_relative_positions(lattice, dtype=torch.long)
    kernel = ImplicitSteerableConv("0e", "0e").kernel
    with pytest.raises(TypeError, match=message):
        lattice_weight(kernel, lattice, dtype=torch.long)
    with pytest.raises(TypeError, match=message):
        lattice_degree(lattice, dtype=torch.long)
