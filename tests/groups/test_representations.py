"""Representations: homomorphism property, e3nn agreement, algebra, bad input."""

from __future__ import annotations

import pytest
import torch
from e3nn import o3

import symgraph as sg
from symgraph.groups import Rep, group_from_name

GROUP_NAMES = [
    "Trivial", "Inversion", "Mirror", "C4", "D3", "SO2", "O2Dihedral", "O2Conical",
    "SO2Inversion", "O2Full", "Tetrahedral", "Octahedral", "FullOctahedral", "Icosahedral",
    "SO3", "O3",
]  # fmt: skip


@pytest.mark.parametrize("name", GROUP_NAMES)
def test_rho_is_an_orthogonal_homomorphism(name):
    group = group_from_name(name)
    rep = Rep("2x0e + 0o + 1o + 1e + 2e + 2o + 3o", group)
    gen = torch.Generator().manual_seed(0)
    g = group.sample(6, generator=gen, dtype=torch.float64)
    h = group.sample(6, generator=gen, dtype=torch.float64)
    rg, rh, rgh = rep.rho(g), rep.rho(h), rep.rho(g @ h)
    assert rg.shape == (6, rep.dim, rep.dim)
    assert float((rgh - rg @ rh).abs().max()) < 1e-12
    eye = torch.eye(rep.dim, dtype=torch.float64)
    assert float((rg @ rg.transpose(1, 2) - eye).abs().max()) < 1e-12


def test_rho_matches_e3nn():
    """Same basis and parity convention as e3nn (whose D has ~1e-6 angle round-off)."""
    irreps = o3.Irreps("3x0e + 2x1o + 1e + 2x2e + 3o")
    g = sg.groups.O3().sample(8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ours = Rep(irreps).rho(g)
    theirs = irreps.D_from_matrix(g)
    assert float((ours - theirs).abs().max()) < 1e-5


def test_vector_irrep_is_cartesian():
    g = sg.groups.O3().sample(4, dtype=torch.float64)
    assert torch.allclose(Rep("1o").rho(g), g, atol=1e-13)
    assert torch.allclose(Rep("1e").rho(g), g * torch.linalg.det(g)[:, None, None], atol=1e-13)


@pytest.mark.parametrize("irreps", ["0e + 1o + 2e + 3o", "2x1o + 3x2e + 2x0e"])
def test_drho_is_the_derivative_of_rho(irreps):
    """Also with several copies of a block: drho lays them out as rho does."""
    rep = Rep(irreps)
    a = torch.randn(2, 3, 3, dtype=torch.float64)
    a = a - a.transpose(1, 2)
    t = 0.37
    exact = rep.rho(torch.linalg.matrix_exp(t * a))
    via_algebra = torch.linalg.matrix_exp(t * rep.drho(a))
    assert float((exact - via_algebra).abs().max()) < 1e-12


def test_drho_of_a_tensor_product_is_the_derivative_of_its_rho():
    rep = Rep("1o").tensor(Rep("1o"))
    a = torch.randn(2, 3, 3, dtype=torch.float64)
    a = a - a.transpose(1, 2)
    t = 1e-5
    central = rep.rho(torch.linalg.matrix_exp(t * a)) - rep.rho(torch.linalg.matrix_exp(-t * a))
    torch.testing.assert_close(rep.drho(a), central / (2 * t), atol=1e-8, rtol=0)


def test_empty_blocks_scalar_counts_and_scalar_features():
    assert Rep("0x0e + 1x1o") == Rep("1x1o") and len(Rep("0x0e + 1x1o").blocks) == 1
    assert Rep("2x0e + 3x0o").num_invariant_scalars == 2  # 0o is not invariant
    with pytest.raises(ValueError, match="x"):
        Rep("1x1o").check_features(torch.tensor(1.0))


@pytest.mark.parametrize("direction", [(1.0, 1.0, 0.0), (1.0, 2.0, 2.0), (0.0, -3.0, 4.0)])
def test_rotations_about_a_tilted_axis(direction):
    """Groups about another axis than z: samples fix the axis and rho is a homomorphism."""
    axis = torch.tensor(direction, dtype=torch.float64)
    axis = axis / axis.norm()
    generator = torch.tensor(
        [[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]],
        dtype=torch.float64,
    )
    group = sg.groups.MatrixGroup(lie=[generator], name="tilted")
    g = group.sample(4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.testing.assert_close(g @ axis, axis.expand(4, 3), atol=1e-12, rtol=0)
    rep = Rep("1o + 2e", group)
    torch.testing.assert_close(rep.rho(g[:2] @ g[2:]), rep.rho(g[:2]) @ rep.rho(g[2:]))


def test_regular_representation():
    group = sg.groups.D(4)
    rep = Rep.regular(group)
    elements = group.elements()
    r = rep.rho(elements)
    assert rep.dim == 8
    assert torch.equal(r.sum(1), torch.ones(8, 8, dtype=torch.float64)), "permutation matrices"
    idx = torch.tensor([3, 5])
    assert torch.allclose(rep.rho(elements[idx[:1]] @ elements[idx[1:]]), r[3:4] @ r[5:6])


def test_sum_multiplicity_tensor():
    group = sg.groups.SO2()
    a, b = Rep("0e + 1o", group), Rep("2e", group)
    s = a + b
    assert s.dim == 9 and s.irreps == o3.Irreps("0e + 1o + 2e")
    assert (3 * a).dim == 12 and (3 * a).irreps == o3.Irreps("0e + 1o + 0e + 1o + 0e + 1o")
    t = a.tensor(b)
    g = group.sample(3, dtype=torch.float64)
    expected = torch.stack([torch.kron(x, y) for x, y in zip(a.rho(g), b.rho(g))])
    assert t.dim == 20 and torch.allclose(t.rho(g), expected, atol=1e-12)
    assert t.irreps is None
    # a product block is a homomorphism too
    h = group.sample(3, dtype=torch.float64)
    assert float((t.rho(g @ h) - t.rho(g) @ t.rho(h)).abs().max()) < 1e-12


def test_regular_representation_of_inexact_generators_is_a_homomorphism():
    """Generators written to 9 decimals (within the orthogonality tolerance) close on the
    true group: D(59) has 118 elements, and its regular representation is a homomorphism."""
    import math

    from symgraph.groups import MatrixGroup

    angle = 2 * math.pi / 59
    rotation = torch.tensor([[math.cos(angle), -math.sin(angle), 0],
                             [math.sin(angle), math.cos(angle), 0], [0, 0, 1]],
                            dtype=torch.float64)  # fmt: skip
    flip = torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64))
    group = MatrixGroup(discrete=[torch.round(rotation * 1e9) / 1e9, flip], name="D59")
    assert group.order == 118
    rep = Rep.regular(group)
    e = group.elements()
    gen = torch.Generator().manual_seed(0)
    i, j = torch.randint(118, (50,), generator=gen), torch.randint(118, (50,), generator=gen)
    assert torch.equal(rep.rho(e[i] @ e[j]), rep.rho(e[i]) @ rep.rho(e[j]))


def test_empty_batches_and_half_precision():
    rep = Rep("0e + 0o + 1o + 2e", sg.groups.O3())
    assert rep.rho(sg.groups.O3().sample(0, dtype=torch.float64)).shape == (0, 10, 10)
    assert rep.drho(torch.zeros(0, 3, 3, dtype=torch.float64)).shape == (0, 10, 10)
    g = sg.groups.O3().sample(4, dtype=torch.float64)
    torch.testing.assert_close(rep.rho(g.half()).double(), rep.rho(g), atol=2e-2, rtol=0)


def test_accepts_e3nn_irreps():
    assert Rep(o3.Irreps("4x0e + 2x1o")).dim == 10


def test_bad_input_messages():
    with pytest.raises(ValueError, match="irreps string"):
        Rep("16x0q")
    rep = Rep("2x1o")
    with pytest.raises(ValueError, match=r"\[B, 3, 3\]"):
        rep.rho(torch.eye(3))
    with pytest.raises(ValueError, match="last dimension 6"):
        rep.check_features(torch.zeros(4, 5))
    with pytest.raises(ValueError, match="different groups"):
        Rep("0e", sg.groups.SO3()) + Rep("0e", sg.groups.SO2())
    with pytest.raises(ValueError, match="finite group"):
        Rep.regular(sg.groups.SO2())
    with pytest.raises(ValueError, match="elements of D"):
        Rep.regular(sg.groups.D(4)).rho(sg.groups.SO3().sample(1, dtype=torch.float64))
    with pytest.raises(ValueError, match="mul: expected a positive number of copies, got -2"):
        Rep.regular(sg.groups.D(3), mul=-2)
    from symgraph.groups import IrrepBlock, MatrixGroup, bilinear_basis

    with pytest.raises(ValueError, match="l: expected a degree l >= 0, got -2"):
        IrrepBlock(-2, 1)
    with pytest.raises(ValueError, match=r"parity: expected 1 \(even\) or -1 \(odd\), got 0"):
        IrrepBlock(1, 0)
    with pytest.raises(TypeError, match="rep_a: expected a Rep"):
        bilinear_basis("1o", "1o", "0e")
    with pytest.raises(TypeError, match="group: expected a group name"):
        group_from_name(4)
    with pytest.raises(ValueError, match="sample: `n` must be a non-negative int, got True"):
        sg.groups.SO3().sample(True)
    with pytest.raises(ValueError, match="C\\(n\\): `n` at most 5000"):
        sg.groups.C(20000)
    nan = torch.full((3, 3), float("nan"), dtype=torch.float64)
    with pytest.raises(ValueError, match="discrete\\[0\\]: expected an orthogonal matrix"):
        MatrixGroup(discrete=[nan])
    with pytest.raises(ValueError, match="lie\\[0\\]: expected a non-zero skew"):
        MatrixGroup(lie=[torch.zeros(3, 3)])
    basis = sg.equivariant_basis(Rep("1o", sg.groups.SO2()), Rep("1o", sg.groups.SO2()))
    with pytest.raises(TypeError, match="weights: expected a floating-point tensor"):
        basis.matrix(torch.tensor([1, 2, 3]))


def test_tiny_lie_generators_span_the_same_algebra():
    from symgraph.groups import MatrixGroup

    lz = torch.tensor([[0.0, -1, 0], [1, 0, 0], [0, 0, 0]], dtype=torch.float64)
    tiny = MatrixGroup(lie=[1e-9 * lz], name="tiny")
    assert tiny.lie_dim == 1
    assert sg.equivariant_basis(Rep("1o", tiny), Rep("1o", tiny)).dim == 3  # as SO(2)'s


def test_as_rep_checks_the_group_by_value():
    """A Rep of an equal group (built separately) passes; a Rep of another group is named."""
    c4, other_c4 = group_from_name("C4"), group_from_name("C4")
    assert c4 is not other_c4
    rep = Rep("2x0e + 1x1o", other_c4)
    assert sg.groups.as_rep(rep, c4, "rep_in") is rep
    assert sg.groups.as_rep(rep, None, "rep_in") is rep
    assert sg.groups.as_rep("2x0e + 1x1o", c4, "rep_in") == Rep("2x0e + 1x1o", c4)
    with pytest.raises(ValueError, match=r"rep_in: expected a representation of C\(6\)"):
        sg.groups.as_rep(rep, group_from_name("C6"), "rep_in")
    with pytest.raises(TypeError, match="rep_in: expected an irreps string"):
        sg.groups.as_rep(3, c4, "rep_in")


def test_a_rep_given_a_group_moves_to_that_group():
    so3, so2 = sg.groups.SO3(), sg.groups.SO2()
    rep = Rep("2x1o + 1x2e", so3)
    assert Rep(rep) == rep and Rep(rep).group == so3
    moved = Rep(rep, so2)
    assert moved.group == so2 and moved.short() == rep.short() and moved.dim == rep.dim
    assert moved == Rep("2x1o + 1x2e", so2) and moved != rep


def test_copies_zero_and_negative():
    rep = Rep("1x0e + 1x1o", sg.groups.SO3())
    for empty in (0 * rep, rep * 0):
        assert empty.dim == 0 and empty.blocks == () and empty.group == rep.group
    assert (2 * rep).dim == 8
    with pytest.raises(ValueError, match=r"k \* rep: expected a non-negative int k, got -1"):
        -1 * rep
    assert Rep.regular(sg.groups.D(3), mul=2).dim == 12
    with pytest.raises(ValueError, match="mul: expected a positive number of copies, got 0"):
        Rep.regular(sg.groups.D(3), mul=0)


def test_multiplicities_tell_representations_apart():
    group = sg.groups.SO3()
    one, two = Rep("1x1o", group), Rep("2x1o", group)
    assert one != two and Rep("2x1o", group) == two
    assert len({one, two, Rep("2x1o", group)}) == 2


def test_elements_of_the_wrong_shape_or_dtype_are_refused():
    rep = Rep("1o + 2e")
    shape = r"expected group elements of shape \[B, 3, 3\], got"
    with pytest.raises(ValueError, match=rf"g: {shape} \[2, 4, 4\]"):
        rep.rho(torch.zeros(2, 4, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match=rf"a: {shape} \[2, 3, 2\]"):
        rep.drho(torch.zeros(2, 3, 2, dtype=torch.float64))
    with pytest.raises(
        TypeError, match="g: expected a floating-point tensor, got dtype torch.int64"
    ):
        rep.rho(torch.eye(3, dtype=torch.long).expand(2, 3, 3))


def test_a_regular_representation_moves_only_to_subgroups_of_its_group():
    """Its matrices are defined on its group's elements: restricting to a subgroup works, a
    larger or continuous group is refused at once (not later, inside a layer's solve)."""
    c4, d4 = group_from_name("C4"), group_from_name("D4")
    restricted = Rep(Rep.regular(d4), c4)  # C4 ≤ D4: two copies of C4's regular rep
    g, h = c4.elements().repeat_interleave(4, 0), c4.elements().repeat(4, 1, 1)
    assert restricted.dim == 8
    assert torch.equal(restricted.rho(g @ h), restricted.rho(g) @ restricted.rho(h))
    assert sg.equivariant_basis(restricted, restricted).dim == 16
    for larger in (d4, sg.groups.SO2()):
        with pytest.raises(ValueError, match=r"group: expected a subgroup of C\(4\)"):
            Rep(Rep.regular(c4), larger)
    product = Rep.regular(c4) @ Rep("1o", c4)
    with pytest.raises(ValueError, match=r"group: expected a subgroup of C\(4\).*got D\(4\)"):
        Rep(product, d4)


def test_block_multiplicities_must_be_non_negative_ints():
    from symgraph.groups import IrrepBlock

    vector = IrrepBlock(1, -1)
    assert Rep(group="SO3", blocks=[(0, vector), (2, vector)]).short() == "2x1o"
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match=rf"blocks: expected non-negative int .*got {bad}"):
            Rep(group="SO3", blocks=[(bad, vector)])


def test_regular_and_trivial_take_group_names_and_check_their_count():
    assert Rep.regular("C4", 2) == Rep.regular(group_from_name("C4"), 2)
    assert Rep.trivial("SO3", 3) == Rep("3x0e", "SO3") and Rep.trivial("SO3", 0).dim == 0
    for bad in (-2, 1.5):
        with pytest.raises(ValueError, match=f"mul: expected a non-negative number .*got {bad}"):
            Rep.trivial("SO3", bad)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_regular_representation_in_half_precision(dtype):
    """Elements that ``sample`` gives in half precision are recognised, as O(3) irreps'."""
    group = sg.groups.Icosahedral()
    g = group.sample(8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    rep = Rep.regular(group)
    assert torch.equal(rep.rho(g.to(dtype)), rep.rho(g).to(dtype))
    with pytest.raises(ValueError, match=rf"g: {dtype} cannot tell the elements of C\(1000\)"):
        Rep.regular(sg.groups.C(1000)).rho(torch.eye(3, dtype=dtype)[None])


def test_degrees_beyond_e3nn_spherical_harmonics_are_refused_by_name():
    rep = Rep("0e + 13o")
    g = sg.groups.O3().sample(1, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"l: expected an O\(3\) irrep of degree l <= 12.*l = 13"):
        rep.rho(g)
    with pytest.raises(ValueError, match="l = 13"):
        rep.drho(torch.zeros(1, 3, 3, dtype=torch.float64))
    assert Rep("12e").rho(g).shape == (1, 25, 25)


@pytest.mark.parametrize("name", ["C1", "Trivial"])
def test_regular_representation_of_a_one_element_group(name):
    """One element, nothing to tell apart: its regular representation is the 1 x 1
    identity, in every precision."""
    group = group_from_name(name)
    rep = Rep.regular(group)
    for dtype in (torch.float64, torch.float16):
        g = group.elements().to(dtype)
        assert rep.dim == 1 and torch.equal(rep.rho(g), torch.ones(1, 1, 1, dtype=dtype))
