"""Lattices as graphs: round trips, stencil order vs conv, boundaries, vector fields."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from e3nn import o3

from symgraph.lattice import (
    FieldLayout,
    Lattice,
    cell_positions,
    field_to_nodes,
    grid_to_graph,
    kernel_index,
    kernel_to_stencil,
    lattice_graph,
    nodes_to_field,
    nodes_to_vector_field,
    reflect_field,
    rotate_field,
    rotation_matrix_90,
    stencil_offsets,
    stencil_to_kernel,
    vector_field_to_nodes,
)

# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("shape", [(5, 7), (3, 4, 6)])
@pytest.mark.parametrize("batch", [1, 3])
def test_field_round_trip_is_exact(shape, batch):
    lattice = Lattice(shape)
    field = torch.randn(batch, 4, *shape)
    nodes = field_to_nodes(field, lattice)
    assert nodes.shape == (batch * lattice.num_cells, 4)
    assert torch.equal(nodes_to_field(nodes, lattice, batch), field)
    x = torch.randn(batch * lattice.num_cells, 2, dtype=torch.float64)
    assert torch.equal(field_to_nodes(nodes_to_field(x, lattice, batch)), x)


@pytest.mark.parametrize("shape", [(4, 6), (3, 4, 5)])
def test_node_order_matches_positions(shape):
    """Node ``b * N + flat`` is cell ``flat`` of field ``b``: a field holding the cell's own
    coordinates becomes exactly the node positions."""
    lattice = Lattice(shape, spacing=0.5)
    pos, _, _ = grid_to_graph(lattice, batch_size=2, dtype=torch.float64)
    axes = [(torch.arange(n, dtype=torch.float64) - (n - 1) / 2) * 0.5 for n in shape]
    grids = torch.meshgrid(*axes, indexing="ij")  # array order (y, x) / (z, y, x)
    coords = torch.stack(grids[::-1], dim=0)  # channels (x, y[, z])
    nodes = field_to_nodes(torch.stack([coords, coords]))
    assert torch.equal(nodes, pos[:, : len(shape)])
    if len(shape) == 2:
        assert torch.equal(pos[:, 2], torch.zeros(pos.shape[0], dtype=torch.float64))


def test_layout_round_trip_and_vector_embedding():
    lattice = Lattice((6, 6))
    layout = FieldLayout("1x0e + 1x1o + 2x0e", dim=2)
    assert (layout.field_channels, layout.node_dim) == (5, 6)
    field = torch.randn(2, 5, 6, 6)
    nodes = layout.to_nodes(field, lattice)
    assert torch.equal(nodes[:, 0], field_to_nodes(field)[:, 0])
    assert torch.equal(nodes[:, 1:3], field_to_nodes(field)[:, 1:3])  # (u, v) -> (x, y)
    assert torch.equal(nodes[:, 3], torch.zeros(nodes.shape[0]))  # z = 0
    assert torch.equal(layout.to_field(nodes, lattice, 2), field)
    velocity = field[:, 1:3]
    v_nodes = vector_field_to_nodes(velocity)
    assert torch.equal(v_nodes, nodes[:, 1:4])
    assert torch.equal(nodes_to_vector_field(v_nodes, lattice, 2), velocity)


def test_layout_3d_vectors_take_three_channels():
    lattice = Lattice((3, 4, 4))
    layout = FieldLayout("1x1o + 1x0e", dim=3)
    field = torch.randn(1, 4, 3, 4, 4)
    nodes = layout.to_nodes(field, lattice)
    assert torch.equal(nodes, field_to_nodes(field))
    assert torch.equal(layout.to_field(nodes, lattice), field)


# --------------------------------------------------------------------------- graph structure


def test_periodic_offsets_are_minimum_image():
    lattice = Lattice((5, 6), spacing=(0.5, 0.25), radius=2, periodic=True)
    pos, edge_index, offsets = grid_to_graph(lattice, dtype=torch.float64)
    src, dst = edge_index
    extent = torch.tensor([6 * 0.25, 5 * 0.5, 1.0], dtype=torch.float64)
    diff = pos[src] - pos[dst]
    # congruent modulo the domain, and no longer than the stencil
    wrapped = torch.remainder(diff - offsets + extent / 2, extent) - extent / 2
    assert torch.allclose(wrapped, torch.zeros_like(wrapped), atol=1e-12)
    assert float(offsets[:, 0].abs().max()) <= 2 * 0.25 + 1e-12
    assert float(offsets[:, 1].abs().max()) <= 2 * 0.5 + 1e-12
    assert torch.equal(offsets[:, 2], torch.zeros(offsets.shape[0], dtype=torch.float64))
    # across the wrap pos[j] - pos[i] is not the offset
    assert bool((diff - offsets).abs().amax(dim=1).gt(1e-9).any())
    # every centre has the full stencil, sorted by centre
    deg = torch.bincount(dst, minlength=lattice.num_cells)
    assert torch.equal(deg, torch.full_like(deg, 25))
    assert bool((dst[1:] >= dst[:-1]).all())


def test_bounded_degrees_and_offsets():
    lattice = Lattice((4, 5), radius=1, periodic=False)
    graph = lattice_graph(lattice, batch_size=2, dtype=torch.float64)
    src, dst = graph.edge_index
    assert bool((dst[1:] >= dst[:-1]).all())
    deg = torch.bincount(dst, minlength=2 * lattice.num_cells).reshape(2, 4, 5)
    expected = torch.tensor([[4, 6, 6, 6, 4], [6, 9, 9, 9, 6], [6, 9, 9, 9, 6], [4, 6, 6, 6, 4]])
    assert torch.equal(deg[0], expected) and torch.equal(deg[1], expected)
    # no wrap: offsets are plain position differences, and graphs stay separate
    assert torch.allclose(graph.pos[src] - graph.pos[dst], graph.offsets)
    assert torch.equal(graph.batch[src], graph.batch[dst])


def test_mixed_boundaries_and_self_loops():
    lattice = Lattice((4, 6), radius=1, periodic=(False, True))  # bounded in y, periodic in x
    _, edge_index, offsets = grid_to_graph(lattice, self_loops=False)
    deg = torch.bincount(edge_index[1], minlength=24).reshape(4, 6)
    assert torch.equal(deg[0], torch.full((6,), 5)) and torch.equal(deg[1], torch.full((6,), 8))
    assert bool(offsets.abs().sum(1).gt(0).all())
    assert not bool((edge_index[0] == edge_index[1]).any())


def test_stencil_order_and_kernel_index():
    offsets = stencil_offsets(1, dim=2)
    assert offsets.tolist() == [[dy, dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    assert torch.equal(kernel_index(offsets, 1), offsets + 1)
    rect = stencil_offsets((1, 2), dim=2)
    assert rect.shape == (15, 2)
    assert torch.equal(kernel_index(rect, (1, 2)), rect + torch.tensor([1, 2]))
    disc = stencil_offsets(2, dim=2, shape="disc")
    assert disc.shape == (13, 2) and bool((disc.pow(2).sum(1) <= 4).all())
    cube = stencil_offsets(1, dim=3)
    assert cube.shape == (27, 3) and cube[0].tolist() == [-1, -1, -1]
    lattice = Lattice((8, 8), radius=2, stencil="disc")
    w = torch.randn(3, 2, 13)
    kernel = stencil_to_kernel(w, lattice)
    assert kernel.shape == (3, 2, 5, 5) and float(kernel[..., 0, 0].abs().max()) == 0.0
    assert torch.equal(kernel_to_stencil(kernel, lattice), w)


def test_zero_radius_axes_keep_only_the_centre_row():
    """A radius of 0 on an axis is allowed: the stencil does not extend along it (square and
    disc alike), e.g. a 1D stencil along x on a 2D grid."""
    line = stencil_offsets((0, 1), dim=2)
    assert line.tolist() == [[0, -1], [0, 0], [0, 1]]
    assert stencil_offsets((0, 2), dim=2, shape="disc").tolist() == [[0, d] for d in range(-2, 3)]
    assert torch.equal(kernel_index(line, (0, 1)), line + torch.tensor([0, 1]))
    assert stencil_offsets(0, dim=3).tolist() == [[0, 0, 0]]


def _message_passing(x: torch.Tensor, graph, weight: torch.Tensor) -> torch.Tensor:
    """``out_i = sum_{j -> i} weight[k(j - i)] x_j`` with plain ``index_add_``."""
    src, dst = graph.edge_index
    msg = torch.einsum("eoc,ec->eo", weight[graph.stencil_index], x[src])
    out = torch.zeros(x.shape[0], weight.shape[1], dtype=x.dtype)
    return out.index_add_(0, dst, msg)


@pytest.mark.parametrize(
    "shape, radius, periodic, stencil",
    [
        ((7, 9), 1, True, "square"),
        ((7, 9), 2, False, "square"),
        ((6, 8), (1, 2), True, "square"),
        ((9, 9), 2, True, "disc"),
        ((8, 7), 3, False, "disc"),
        ((7, 6), 1, (True, False), "square"),
    ],
)
def test_graph_sum_equals_conv2d(shape, radius, periodic, stencil):
    lattice = Lattice(shape, radius=radius, periodic=periodic, stencil=stencil)
    offsets = stencil_offsets(lattice.radius, 2, stencil)
    b, c_in, c_out = 2, 3, 4
    weight = torch.randn(offsets.shape[0], c_out, c_in, dtype=torch.float64)
    field = torch.randn(b, c_in, *shape, dtype=torch.float64)
    graph = lattice_graph(lattice, b, dtype=torch.float64)
    out = nodes_to_field(_message_passing(field_to_nodes(field), graph, weight), lattice, b)

    kernel = stencil_to_kernel(weight.permute(1, 2, 0), lattice)  # [C_out, C_in, kH, kW]
    ry, rx = lattice.radius
    padded = field
    if lattice.periodic[1]:
        padded = F.pad(padded, (rx, rx, 0, 0), mode="circular")
    else:
        padded = F.pad(padded, (rx, rx, 0, 0))
    if lattice.periodic[0]:
        padded = F.pad(padded, (0, 0, ry, ry), mode="circular")
    else:
        padded = F.pad(padded, (0, 0, ry, ry))
    expected = F.conv2d(padded, kernel)
    assert torch.allclose(out, expected, atol=1e-12)


@pytest.mark.parametrize("periodic", [True, False])
def test_graph_sum_equals_conv3d(periodic):
    lattice = Lattice((4, 5, 6), radius=1, periodic=periodic)
    weight = torch.randn(27, 2, 3, dtype=torch.float64)
    field = torch.randn(1, 3, 4, 5, 6, dtype=torch.float64)
    graph = lattice_graph(lattice, 1, dtype=torch.float64)
    out = nodes_to_field(_message_passing(field_to_nodes(field), graph, weight), lattice)
    kernel = weight.permute(1, 2, 0).reshape(2, 3, 3, 3, 3)  # the plain reshape works
    if periodic:
        expected = F.conv3d(F.pad(field, (1,) * 6, mode="circular"), kernel)
    else:
        expected = F.conv3d(field, kernel, padding=1)
    assert torch.allclose(out, expected, atol=1e-12)


# --------------------------------------------------------------------------- symmetries


def _node_permutation(lattice: Lattice, matrix3: torch.Tensor) -> torch.Tensor:
    """``perm[i]`` = index of the node at ``matrix3 @ pos[i]``."""
    pos = cell_positions(lattice, torch.float64)
    moved = pos @ matrix3.T
    dist = torch.cdist(moved, pos)
    perm = dist.argmin(dim=1)
    assert float(dist.min(dim=1).values.max()) < 1e-9
    return perm


@pytest.mark.parametrize("k", [1, 2, 3])
def test_rotating_the_grid_commutes_with_vector_mapping(k):
    lattice = Lattice((6, 6))
    layout = FieldLayout("1x1o + 1x0e + 1x0o + 1x1e", dim=2)
    field = torch.randn(2, layout.field_channels, 6, 6, dtype=torch.float64)
    r3 = torch.eye(3, dtype=torch.float64)
    r3[:2, :2] = rotation_matrix_90(k, dtype=torch.float64)
    d = o3.Irreps(layout.irreps).D_from_matrix(r3)  # e3nn's action on the node features
    nodes = layout.to_nodes(field)
    rotated_nodes = layout.to_nodes(rotate_field(field, k, layout))
    perm = _node_permutation(lattice, r3).repeat(2) + torch.arange(2).repeat_interleave(36) * 36
    # the node at R p of the rotated field holds D(R) x(p)
    assert torch.allclose(rotated_nodes[perm], nodes @ d.T, atol=1e-6)  # e3nn D ~1e-7


@pytest.mark.parametrize("axis", ["x", "y"])
def test_reflecting_the_grid_commutes_with_vector_mapping(axis):
    lattice = Lattice((5, 6))
    layout = FieldLayout("1x1o + 1x0o + 1x1e", dim=2)
    field = torch.randn(1, layout.field_channels, 5, 6, dtype=torch.float64)
    m3 = torch.eye(3, dtype=torch.float64)
    m3[{"x": 0, "y": 1}[axis]] *= -1
    d = o3.Irreps(layout.irreps).D_from_matrix(m3)
    perm = _node_permutation(lattice, m3)
    reflected = layout.to_nodes(reflect_field(field, axis, layout))
    assert torch.allclose(reflected[perm], layout.to_nodes(field) @ d.T, atol=1e-6)


@pytest.mark.parametrize(
    "args, error, message",
    [
        ((1.5,), TypeError, "k: expected an int number of quarter turns, got 1.5"),
        ((True,), TypeError, "k: expected an int number of quarter turns, got True"),
        ((1, 4), ValueError, "dim: expected 2 or 3, got 4"),
        ((1, 1), ValueError, "dim: expected 2 or 3, got 1"),
        ((1, 2.0), ValueError, "dim: expected 2 or 3, got 2.0"),
    ],
)
def test_rotation_matrix_90_refuses_fractional_turns_and_other_dimensions(args, error, message):
    """``k=1.5`` was truncated to a quarter turn and ``dim=4`` gave a 4x4 matrix, silently."""
    with pytest.raises(error, match=message):
        rotation_matrix_90(*args)


def test_quarter_turns_count_modulo_four():
    field = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    for k in range(-4, 9):
        expected = rotation_matrix_90(k % 4, dtype=torch.float64)
        assert torch.equal(rotation_matrix_90(k, dtype=torch.float64), expected)
        turned = rotate_field(field, k, "1x1o + 1x0e")
        assert torch.equal(turned, rotate_field(field, k % 4, "1x1o + 1x0e"))
    assert torch.equal(rotate_field(field, 4, "1x1o + 1x0e"), field)


def test_odd_turns_need_a_square_grid_and_half_turns_do_not():
    field = torch.randn(1, 2, 3, 5, dtype=torch.float64)
    for k in (1, 3, -1, 5):
        with pytest.raises(ValueError, match="a quarter turn needs H == W"):
            rotate_field(field, k)
    for k in (2, -2):  # (x, y) -> (-x, -y): both axes reversed, vectors negated
        assert torch.equal(rotate_field(field, k), field.flip(-1, -2))
        assert torch.equal(rotate_field(field, k, "1x1o"), -field.flip(-1, -2))


@pytest.mark.parametrize("k", [1, 2, 3])
def test_a_3d_field_turns_like_a_stack_of_planes(k):
    """About z, each depth slice of a 3D field turns as a 2D field: ``(u, v)`` as a vector,
    ``w`` and scalars as scalars; the mirror ``z -> -z`` reverses the depth and negates ``w``."""
    layout = "1x1o + 1x0e"  # 3D channels (u, v, w, s)
    field = torch.randn(2, 4, 3, 4, 4, dtype=torch.float64)
    turned = rotate_field(field, k, layout)
    for d in range(3):
        assert torch.equal(turned[:, :2, d], rotate_field(field[:, :2, d], k, "1x1o"))
        assert torch.equal(turned[:, 2:, d], rotate_field(field[:, 2:, d], k))
    mirrored = reflect_field(field, "z", layout)
    assert torch.equal(mirrored, field.flip(2) * torch.tensor([1.0, 1, -1, 1])[:, None, None, None])


def test_rotation_matches_stencil_graph():
    """A quarter turn maps the stencil graph onto itself (square stencil, square grid)."""
    lattice = Lattice((5, 5), radius=1, periodic=False)
    graph = lattice_graph(lattice, dtype=torch.float64)
    r3 = torch.eye(3, dtype=torch.float64)
    r3[:2, :2] = rotation_matrix_90(1, dtype=torch.float64)
    perm = _node_permutation(lattice, r3)
    edges = {tuple(e) for e in graph.edge_index.T.tolist()}
    moved = {(int(perm[s]), int(perm[t])) for s, t in edges}
    assert moved == edges


# --------------------------------------------------------------------------- bad input


def test_nan_in_field_is_rejected():
    field = torch.zeros(1, 2, 4, 4)
    field[0, 1, 2, 3] = float("nan")
    with pytest.raises(ValueError, match="field: expected finite"):
        field_to_nodes(field)
    with pytest.raises(ValueError, match="finite"):
        vector_field_to_nodes(field)


def test_channel_mismatch_is_rejected():
    layout = FieldLayout("1x0e + 1x1o")
    with pytest.raises(ValueError, match="expected 3 channels for layout"):
        layout.to_nodes(torch.zeros(1, 4, 4, 4))
    with pytest.raises(ValueError, match="expected 2 channels"):
        vector_field_to_nodes(torch.zeros(1, 3, 4, 4))
    with pytest.raises(ValueError, match=r"x: expected shape \[N, 4\]"):
        layout.to_field(torch.zeros(16, 3), Lattice((4, 4)))
    with pytest.raises(ValueError, match="l=2"):
        FieldLayout("1x2e")
    with pytest.raises(ValueError, match="spec"):
        FieldLayout("not irreps")


def test_shape_mismatches_are_rejected():
    lattice = Lattice((4, 4))
    with pytest.raises(ValueError, match=r"x: expected shape \[32, C\]"):
        nodes_to_field(torch.zeros(16, 2), lattice, batch_size=2)
    with pytest.raises(ValueError, match="spatial shape"):
        field_to_nodes(torch.zeros(1, 2, 4, 5), lattice)
    with pytest.raises(ValueError, match="field: expected"):
        field_to_nodes(torch.zeros(4, 4))
    with pytest.raises(ValueError, match="batch_size"):
        grid_to_graph(lattice, batch_size=0)


def test_invalid_lattices_are_rejected():
    with pytest.raises(ValueError, match="non-square stencil"):
        Lattice((8, 8), radius=(1, 2), periodic=False)
    with pytest.raises(ValueError, match="non-square stencil"):
        Lattice((8, 8), radius=(1, 2), periodic=(True, False))
    with pytest.raises(ValueError, match="bounded axis H of size 3"):
        Lattice((3, 8), radius=3, periodic=False)
    with pytest.raises(ValueError, match="wraps onto itself"):
        Lattice((4, 8), radius=2, periodic=True)
    with pytest.raises(ValueError, match="shape"):
        Lattice((8,))
    with pytest.raises(ValueError, match="stencil"):
        Lattice((8, 8), stencil="hexagon")
    with pytest.raises(ValueError, match="spacing"):
        Lattice((8, 8), spacing=-1.0)
    Lattice((8, 8), radius=(1, 2), periodic=True)  # non-square is fine on a torus


@pytest.mark.parametrize("layout", ["1x0e + 1x0o", "1x1o + 1x1e"])
def test_pseudo_fields_follow_the_mirror_not_the_half_turn(layout):
    """``reflect_field`` is a mirror: odd-parity channels change sign. A group whose flip is
    that mirror (C4v) is equivariant to it on such layouts; the catalog's D4, whose flip is a
    half turn about x, is not (the convention the fields docstring states)."""
    from symgraph.groups import D, MatrixGroup
    from symgraph.lattice import FieldLayout, Lattice, lattice_graph, reflect_field
    from symgraph.nn import ImplicitSteerableConv

    quarter = torch.tensor([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]], dtype=torch.float64)
    mirror = torch.diag(torch.tensor([1.0, -1, 1], dtype=torch.float64))
    c4v = MatrixGroup(discrete=[quarter, mirror], name="C4v")
    lattice, fields = Lattice((5, 5), periodic=True), FieldLayout(layout)
    graph = lattice_graph(lattice, 1, dtype=torch.float64)
    errors = {}
    for name, group in (("C4v", c4v), ("D4", D(4))):
        torch.manual_seed(0)
        conv = ImplicitSteerableConv(
            fields.irreps, fields.irreps, group=group, hidden="4x0e + 2x1o + 2x0o + 2x1e",
            num_radial=3, r_max=3.0,
        ).double()  # fmt: skip

        def apply(field, conv=conv):
            nodes = fields.to_nodes(field, lattice)
            out = conv(nodes, graph.pos, graph.edge_index, lattice=lattice)
            return fields.to_field(out, lattice)

        field = torch.randn(1, fields.field_channels, 5, 5, dtype=torch.float64)
        ref = apply(field)
        moved = apply(reflect_field(field, "y", fields)) - reflect_field(ref, "y", fields)
        errors[name] = float((moved.abs().max() / ref.abs().max()).detach())
    assert errors["C4v"] < 1e-10
    assert errors["D4"] > 1e-2


def test_lattice_per_axis_properties():
    """Per-axis settings become tuples; ``kernel_size = 2r + 1``, ``extent = shape · spacing``
    per array axis and ``num_cells = prod(shape)``."""
    lattice = Lattice((4, 6), spacing=(0.5, 0.25), radius=(1, 2))
    assert lattice.radius == (1, 2) and lattice.periodic == (True, True)
    assert lattice.kernel_size == (3, 5)
    assert lattice.extent == (2.0, 1.5)
    assert (lattice.dim, lattice.num_cells) == (2, 24)
    assert Lattice((3, 4, 5), spacing=2.0).extent == (6.0, 8.0, 10.0)


def test_layout_to_field_rejects_a_lattice_of_the_other_dimension():
    """A 2D layout refuses a 3D lattice (and a 3D layout a 2D one) even when the number of
    nodes matches the lattice's cells."""
    with pytest.raises(ValueError, match="lattice: expected a 2D lattice"):
        FieldLayout("1x0e", dim=2).to_field(torch.zeros(36, 1), Lattice((3, 3, 4)))
    with pytest.raises(ValueError, match="lattice: expected a 3D lattice"):
        FieldLayout("1x0e", dim=3).to_field(torch.zeros(36, 1), Lattice((6, 6)))


def test_positions_and_offsets_follow_the_default_dtype_unless_one_is_given():
    lattice = Lattice((4, 4), periodic=True, radius=1)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        graph = lattice_graph(lattice)
        assert graph.pos.dtype == graph.offsets.dtype == torch.float64
        assert cell_positions(lattice).dtype == torch.float64
        assert lattice_graph(lattice, dtype=torch.float32).offsets.dtype == torch.float32
    finally:
        torch.set_default_dtype(previous)
    assert lattice_graph(lattice).pos.dtype == torch.float32
