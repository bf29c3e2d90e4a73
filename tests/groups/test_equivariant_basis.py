"""The equivariant-basis solver: dimensions from characters and known values, orthonormality."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import symgraph as sg
from symgraph.groups import Rep, equivariant_basis, group_from_name

FINITE = ["Trivial", "Inversion", "Mirror", "C3", "C4", "D3", "D6", "Tetrahedral",
          "Octahedral", "FullOctahedral", "Icosahedral"]  # fmt: skip
ALL = FINITE + ["SO2", "O2Dihedral", "O2Conical", "SO2Inversion", "O2Full", "SO3", "O3"]

irrep_strategy = st.builds(
    lambda l, p: f"{l}{p}", st.integers(min_value=0, max_value=3), st.sampled_from("eo")
)
rep_strategy = st.lists(
    st.tuples(st.integers(min_value=1, max_value=3), irrep_strategy), min_size=1, max_size=4
).map(lambda items: " + ".join(f"{m}x{ir}" for m, ir in items))


def character_dimension(group, rep_in: Rep, rep_out: Rep) -> float:
    g = group.elements()
    chi_in = rep_in.rho(g).diagonal(dim1=1, dim2=2).sum(-1)
    chi_out = rep_out.rho(g).diagonal(dim1=1, dim2=2).sum(-1)
    return float((chi_in * chi_out).mean())


@pytest.mark.parametrize("name", FINITE)
@settings(max_examples=8, deadline=None)
@given(text_in=rep_strategy, text_out=rep_strategy)
def test_dimension_equals_character_formula(name, text_in, text_out):
    group = group_from_name(name)
    rep_in, rep_out = Rep(text_in, group), Rep(text_out, group)
    expected = character_dimension(group, rep_in, rep_out)
    assert equivariant_basis(rep_in, rep_out).dim == round(expected)
    assert abs(expected - round(expected)) < 1e-9


@pytest.mark.parametrize("name", ["C4", "D3", "Octahedral", "Icosahedral"])
def test_regular_representation_dimension(name):
    group = group_from_name(name)
    reg = Rep.regular(group)
    mixed = Rep("0e + 1o + 2e", group)
    assert equivariant_basis(reg, reg).dim == group.order
    assert equivariant_basis(reg, mixed).dim == round(character_dimension(group, reg, mixed))


KNOWN = [
    ("SO3", "1o", "1o", 1), ("SO3", "1o", "0e", 0), ("SO3", "1o", "1e", 1), ("SO3", "2e", "2e", 1),
    ("O3", "1o", "1e", 0), ("O3", "0o", "0e", 0), ("O3", "1o", "1o", 1),
    ("SO2", "1o", "1o", 3), ("SO2", "1o", "0e", 1), ("SO2", "2e", "2e", 5), ("SO2", "2e", "1o", 3),
    ("O2Dihedral", "1o", "0e", 0), ("O2Dihedral", "1o", "1o", 2), ("O2Dihedral", "1o", "0o", 0),
    ("O2Conical", "1o", "0o", 0), ("SO2Inversion", "1e", "0e", 1),
    ("O2Conical", "1o", "0e", 1), ("O2Conical", "1o", "1o", 2),
    ("SO2Inversion", "1o", "0e", 0), ("SO2Inversion", "1o", "1o", 3),
    ("Trivial", "2e", "1o", 15),
]  # fmt: skip


@pytest.mark.parametrize("name,a,b,dim", KNOWN)
def test_known_dimensions(name, a, b, dim):
    group = group_from_name(name)
    assert equivariant_basis(Rep(a, group), Rep(b, group)).dim == dim


@pytest.mark.parametrize("name", ALL)
def test_basis_is_orthonormal_and_equivariant(name):
    group = group_from_name(name)
    rep_in, rep_out = Rep("2x0e + 1o + 2e + 0o", group), Rep("0e + 2x1o + 1e + 3o", group)
    basis = equivariant_basis(rep_in, rep_out)
    dense = basis.to_dense()
    flat = dense.reshape(basis.dim, -1)
    assert torch.allclose(flat @ flat.T, torch.eye(basis.dim, dtype=torch.float64), atol=1e-12)
    g = group.sample(5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    r_in, r_out = rep_in.rho(g), rep_out.rho(g)
    err = (r_out[:, None] @ dense[None] - dense[None] @ r_in[:, None]).abs().max()
    assert float(err) < 1e-12


def test_large_representation_keeps_only_nonzero_pairs_and_is_cached(monkeypatch):
    from symgraph.groups import basis as basis_module

    rep = Rep("64x0e + 32x1o + 16x2e", sg.groups.SO3())
    basis = equivariant_basis(rep, rep)
    assert basis.dim == 64 * 64 + 32 * 32 + 16 * 16
    assert len(basis.pairs) == 3  # only the non-zero block pairs are kept

    def no_solve(*args):
        raise AssertionError("solved again: the solves are not cached")

    monkeypatch.setattr(basis_module, "_solve", no_solve)
    again = equivariant_basis(rep, rep)
    torch.testing.assert_close(again.pairs[1].basis, basis.pairs[1].basis)
    again.pairs[1].basis.mul_(0)  # a caller's copy: the cached solve is untouched
    assert equivariant_basis(rep, rep).pairs[1].basis.abs().sum() > 0


def test_basis_depends_on_the_span_only():
    """The layers store coefficients on the basis, not the basis: a span found with other
    rounding (another BLAS, another machine) must give the same basis. A 1e-13 change of
    SO(2)'s axis moves an SVD's null vectors by O(1), the canonical basis by ~1e-13."""
    from symgraph.groups import MatrixGroup
    from symgraph.groups.basis import _canonical

    lz = torch.tensor([[0.0, -1, 0], [1, 0, 0], [0, 0, 0]], dtype=torch.float64)
    tilt = torch.tensor([[0.0, 0, 1], [0, 0, 0], [-1, 0, 0]], dtype=torch.float64)
    straight = MatrixGroup(lie=[lz], name="axis")
    wobbly = MatrixGroup(lie=[lz + 1e-13 * tilt], name="axis")
    a = equivariant_basis(Rep("2e", straight), Rep("2e", straight)).to_dense()
    b = equivariant_basis(Rep("2e", wobbly), Rep("2e", wobbly)).to_dense()
    assert (a - b).abs().max() < 1e-10
    # any rotation of an orthonormal basis of the span comes back as the same basis
    q, _ = torch.linalg.qr(torch.randn(a.shape[0], a.shape[0], dtype=torch.float64))
    rotated = torch.einsum("ij,jab->iab", q, a)
    torch.testing.assert_close(_canonical(rotated), a, atol=1e-12, rtol=0)


def test_mismatched_groups_raise():
    with pytest.raises(ValueError, match="same group"):
        equivariant_basis(Rep("1o", sg.groups.SO3()), Rep("1o", sg.groups.SO2()))


@pytest.mark.parametrize("failures", [1, 2])
def test_null_space_survives_an_svd_that_does_not_converge(monkeypatch, failures):
    """LAPACK's divide-and-conquer SVD can fail on large constraint systems; the solve falls
    back to the SVD of R (C = QR), then to eigh(RᵀR), and finds the same (canonical) basis."""
    from symgraph.groups import basis as basis_module

    group = sg.groups.Octahedral()
    rep_in, rep_out = Rep("1x0e + 2x1o + 1x2e", group), Rep("1x1o + 2x2e + 1x3o", group)
    expected = equivariant_basis(rep_in, rep_out).to_dense()
    svd = torch.linalg.svd
    calls = {"n": 0}

    def failing_svd(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] <= failures:
            raise torch.linalg.LinAlgError("linalg.svd: The algorithm failed to converge")
        return svd(*args, **kwargs)

    basis_module.clear_cache()
    monkeypatch.setattr(torch.linalg, "svd", failing_svd)
    got = equivariant_basis(rep_in, rep_out).to_dense()
    monkeypatch.undo()
    basis_module.clear_cache()
    assert calls["n"] >= failures
    torch.testing.assert_close(got, expected, atol=1e-9, rtol=0)


def test_the_eigh_fallback_keeps_null_vectors_of_a_large_constraint_system(monkeypatch):
    """With both SVDs failing, the rank is read from ‖R v‖: the square roots of the
    eigenvalues' rounding (~1e-8 σ_max) counted 6 of the 15 maps of the full octahedral
    group's 1o ⊗ 2e -> regular as constraints."""
    from symgraph.groups import basis as basis_module
    from symgraph.groups.rep import ProductBlock, RegularBlock

    group = sg.groups.FullOctahedral()
    block_in = ProductBlock(Rep("1o", group).blocks[0][1], Rep("2e", group).blocks[0][1])
    block_out = RegularBlock(group)
    expected = basis_module._solve_by_constraints(group, block_in, block_out)
    assert expected.shape[0] == 15

    def failing_svd(*args, **kwargs):
        raise torch.linalg.LinAlgError("linalg.svd: The algorithm failed to converge")

    monkeypatch.setattr(torch.linalg, "svd", failing_svd)
    got = basis_module._solve_by_constraints(group, block_in, block_out)
    monkeypatch.undo()
    torch.testing.assert_close(got, expected, atol=1e-9, rtol=0)


def _largest(x: torch.Tensor) -> float:
    return float(x.abs().max()) if x.numel() else 0.0


def _block(text: str, group):
    from symgraph.groups.rep import ProductBlock

    def rep(part: str) -> Rep:
        return Rep.regular(group) if part == "regular" else Rep(part, group)

    if "*" in text:
        a, b = text.split("*")
        return ProductBlock(rep(a), rep(b))
    return rep(text).blocks[0][1]


@pytest.mark.parametrize(
    "name, text_in, text_out, expected_dim",
    [
        ("Octahedral", "regular", "regular", 24),
        ("FullOctahedral", "3e*3o", "3o", None),
        ("FullOctahedral", "3e*3e", "3o", 0),  # parity: no map at all
        ("Icosahedral", "regular*1o", "regular", 180),
    ],
)
def test_group_average_finds_the_constraints_basis(name, text_in, text_out, expected_dim):
    """Large blocks of finite groups are solved by averaging over the elements (an SVD of
    the generator constraints took 34 s for the icosahedral regular representation); both
    solves must give the same canonical basis."""
    from symgraph.groups import basis as basis_module

    group = group_from_name(name)
    block_in, block_out = _block(text_in, group), _block(text_out, group)
    assert basis_module._averaging_is_cheaper(group, block_in.dim, block_out.dim)
    averaged = basis_module._solve_by_averaging(group, block_in, block_out)
    assert averaged is not None
    averaged = basis_module._canonical(averaged)
    if expected_dim is not None:
        assert averaged.shape[0] == expected_dim
    g = group.discrete_generators  # equivariant under the generators: under every element
    r_in, r_out = block_in.rho(g)[:, None], block_out.rho(g)[:, None]
    assert _largest(r_out @ averaged - averaged @ r_in) < 1e-10
    if block_in.dim * block_out.dim <= 1000:  # the constraint SVD is quick enough here
        constrained = basis_module._solve_by_constraints(group, block_in, block_out)
        assert constrained.shape == averaged.shape
        assert _largest(constrained - averaged) < 1e-10


def test_group_average_falls_back_to_the_constraints(monkeypatch):
    from symgraph.groups import basis as basis_module

    group = group_from_name("Octahedral")
    block_in, block_out = _block("regular*1o", group), _block("regular", group)
    assert basis_module._averaging_is_cheaper(group, block_in.dim, block_out.dim)
    expected = basis_module._solve(group, block_in, block_out)
    monkeypatch.setattr(basis_module, "_solve_by_averaging", lambda *args: None)
    got = basis_module._solve(group, block_in, block_out)
    assert got.shape == expected.shape == (72, 24, 72)
    assert (got - expected).abs().max() < 1e-10


@pytest.mark.parametrize("name", ["C4", "D3", "D4", "Tetrahedral", "Octahedral"])
@pytest.mark.parametrize(
    "text_in, text_out",
    [("regular", "regular"), ("regular", "0e"), ("0e", "regular"), ("regular*0e", "regular"),
     ("regular*regular", "regular")],
)  # fmt: skip
def test_permutation_blocks_are_solved_by_orbits(monkeypatch, name, text_in, text_out):
    """Blocks on which G acts by permutations: the orbit indicators give the canonical basis
    the averaging and constraint solvers reach (to rounding), without either of them."""
    from symgraph.groups import basis as basis_module

    group = group_from_name(name)
    block_in, block_out = _block(text_in, group), _block(text_out, group)
    orbits = basis_module._solve_by_orbits(group, block_in, block_out)
    assert orbits is not None
    n = orbits.shape[0]
    flat = orbits.reshape(n, -1)
    torch.testing.assert_close(flat @ flat.T, torch.eye(n, dtype=torch.float64))
    g = group.discrete_generators  # equivariant under the generators: under every element
    r_in, r_out = block_in.rho(g)[:, None], block_out.rho(g)[:, None]
    assert _largest(r_out @ orbits - orbits @ r_in) == 0.0  # exact: entries are 1/sqrt(k)
    if block_in.dim * block_out.dim <= 4096:
        reference = basis_module._canonical(
            basis_module._solve_by_constraints(group, block_in, block_out)
        )
        assert reference.shape == orbits.shape
        assert _largest(reference - orbits) < 1e-12

    def refuse(*args):
        raise AssertionError("a permutation pair reached another solver")

    monkeypatch.setattr(basis_module, "_solve_by_averaging", refuse)
    monkeypatch.setattr(basis_module, "_solve_by_constraints", refuse)
    assert torch.equal(basis_module._solve(group, block_in, block_out), orbits)


@pytest.mark.parametrize(
    "name, text_in, text_out",
    [("C4", "1o", "2e"), ("FullOctahedral", "0o", "1o"), ("Octahedral", "regular*1o", "1o"),
     ("Icosahedral", "3o", "1o*2e"), ("SO2", "0e", "0e")],
)  # fmt: skip
def test_blocks_that_are_no_permutations_are_left_to_the_other_solvers(name, text_in, text_out):
    from symgraph.groups import basis as basis_module

    group = group_from_name(name)
    if not group.is_finite:  # continuous groups never reach the orbit solver
        with pytest.raises(ValueError, match="continuous"):
            basis_module._solve_by_orbits(group, _block(text_in, group), _block(text_out, group))
        return
    assert (
        basis_module._solve_by_orbits(group, _block(text_in, group), _block(text_out, group))
        is None
    )


@pytest.mark.parametrize(("name", "text"), [("D3", "regular"), ("Octahedral", "regular*0e")])
def test_permutation_images_say_where_each_coordinate_goes(name, text):
    """``images[g, j]`` is the coordinate ``ρ(g)`` sends ``e_j`` to (not where it comes from:
    in a non-abelian group the two differ)."""
    from symgraph.groups import basis as basis_module

    group = group_from_name(name)
    block, elements = _block(text, group), group.elements()
    images = basis_module._permutations(block.rho(elements))
    assert images is not None and images.shape == (len(elements), block.dim)
    eye = torch.eye(block.dim, dtype=torch.float64)
    assert torch.equal(block.rho(elements), eye[images].transpose(1, 2))  # column j: e_{images[j]}


def test_regular_products_of_the_octahedral_group_are_solved():
    """``regular ⊗ regular -> regular`` of O (576 maps of 24 × 576) took 75 s and 4 GB
    through averaging; the orbits give it in 0.2 s, and the bilinear layer on two regular
    copies works."""
    group = group_from_name("Octahedral")
    reg = Rep.regular(group)
    basis = sg.groups.bilinear_basis(reg, reg, reg + Rep("1o", group))
    assert [t.basis.shape[0] for t in basis.triples] == [576, 72]
    layer = sg.nn.EquivariantBilinear(reg, reg, reg + Rep("1o", group)).double()
    a, b = torch.randn(4, 24, dtype=torch.float64), torch.randn(4, 24, dtype=torch.float64)
    g = group.elements()[7]
    rho = lambda rep: rep.rho(g[None])[0]  # noqa: E731
    with torch.no_grad():
        out = layer(a @ rho(reg).T, b @ rho(reg).T)
        expected = layer(a, b) @ rho(reg + Rep("1o", group)).T
    assert _largest(out - expected) < 1e-10


class _PointsBlock:
    """A test block: G permuting a G-invariant set of vectors ``points [d, 3]``
    (``ρ(g) e_i = e_j`` for ``g p_i = p_j``), whose stabilisers are proper subgroups, e.g.
    the rotations about a face's axis for the six face centres of the cube."""

    def __init__(self, points: torch.Tensor, name: str) -> None:
        self.points, self.dim, self.key = points, len(points), ("points", name)

    def rho(self, g: torch.Tensor) -> torch.Tensor:
        moved = torch.einsum("gab,jb->gja", g.to(torch.float64), self.points)  # [G, d, 3]
        images = torch.cdist(moved, self.points.expand(len(g), -1, -1)).argmin(dim=2)
        eye = torch.eye(self.dim, dtype=g.dtype)
        return eye[images].transpose(1, 2)  # column i: e_{images[i]}


def _orbit_of(group, vector) -> torch.Tensor:
    """The distinct images ``[m, 3]`` of ``vector`` under the group's elements (to 1e-9)."""
    images = group.elements() @ torch.tensor(vector, dtype=torch.float64)
    return torch.unique(torch.round(images, decimals=9), dim=0)


_GOLDEN = (1 + math.sqrt(5)) / 2  # (0, 1, φ) and its images: the icosahedron's vertices
_AXES = sg.groups.MatrixGroup(
    discrete=[
        [[0.0, 0, 1], [1, 0, 0], [0, 1, 0]],  # x -> y -> z -> x
        [[0.0, 1, 0], [1, 0, 0], [0, 0, 1]],  # x <-> y
    ],
    name="axis permutations",
)  # S3 by permutation matrices: the stabiliser of an axis swaps the other two


def _one_sided_block(text: str, group):
    """:func:`_block`, and ``points:x,y,z``: G permuting the images of that vector."""
    if text.startswith("points:"):
        vector = [float(c) for c in text.removeprefix("points:").split(",")]
        return _PointsBlock(_orbit_of(group, vector), text)
    return _block(text, group)


def _one_sided_reference(group, block_in, block_out) -> torch.Tensor:
    """The basis the general solvers give, as ``_solve`` found it before the orbit solvers
    took pairs with one permuted block: the canonical group average where it is cheaper
    (itself checked against the constraint SVD above), else the constraint SVD."""
    from symgraph.groups import basis as basis_module

    if basis_module._averaging_is_cheaper(group, block_in.dim, block_out.dim):
        averaged = basis_module._solve_by_averaging(group, block_in, block_out)
        assert averaged is not None
        return basis_module._canonical(averaged)
    return basis_module._solve_by_constraints(group, block_in, block_out)


def _check_one_sided(monkeypatch, group, block_in, block_out) -> torch.Tensor:
    """The orbit solver's basis of a pair with one permuted block: orthonormal, exactly
    equivariant to rounding, the general solvers' canonical basis to 1e-12, and what
    ``_solve`` returns without reaching the general solvers."""
    from symgraph.groups import basis as basis_module

    orbits = basis_module._solve_by_orbits(group, block_in, block_out)
    assert orbits is not None, "a pair with one permuted block was left to the general solvers"
    n = orbits.shape[0]
    flat = orbits.reshape(n, block_out.dim * block_in.dim)
    assert _largest(flat @ flat.T - torch.eye(n, dtype=torch.float64)) < 1e-12
    g = group.discrete_generators  # equivariant under the generators: under every element
    r_in, r_out = block_in.rho(g)[:, None], block_out.rho(g)[:, None]
    assert _largest(r_out @ orbits - orbits @ r_in) < 1e-12
    reference = _one_sided_reference(group, block_in, block_out)
    assert reference.shape == orbits.shape
    assert _largest(reference - orbits) < 1e-12

    def refuse(*args):
        raise AssertionError("a pair with one permuted block reached a general solver")

    with monkeypatch.context() as patch:
        patch.setattr(basis_module, "_solve_by_averaging", refuse)
        patch.setattr(basis_module, "_solve_by_constraints", refuse)
        assert torch.equal(basis_module._solve(group, block_in, block_out), orbits)
    return orbits


_ONE_SIDED_PAIRS = [
    ("regular", "1o"), ("1o", "regular"), ("regular*1o", "regular"), ("2e", "regular"),
    ("regular", "2e"), ("1o*2e", "regular"), ("regular", "1o*2e"), ("3o", "0e"),
    ("0e", "2e"), ("0o", "regular"),
]  # fmt: skip


@pytest.mark.parametrize(
    "name, text_in, text_out",
    [
        (name, text_in, text_out)
        for name in ["C4", "D3", "D6", "Octahedral", "FullOctahedral", "Icosahedral"]
        for text_in, text_out in _ONE_SIDED_PAIRS
        # the icosahedral regular x 1o: test_icosahedral_regular_vector_products (the
        # general solvers' reference takes seconds)
        if not (name == "Icosahedral" and text_in == "regular*1o")
    ],
)
def test_one_permuted_block_is_solved_by_orbits(monkeypatch, name, text_in, text_out):
    """Pairs with one permuted block (a regular representation, a product with one, ``0e``)
    and any other (an irrep, a reducible product such as ``1o ⊗ 2e``): one row (or column)
    per orbit of the permuted coordinates, fixed by the orbit's stabiliser, gives the
    canonical basis of the general solvers without them (3.5 s for the icosahedral
    ``regular ⊗ 1o -> regular`` through the group average)."""
    group = group_from_name(name)
    _check_one_sided(monkeypatch, group, _block(text_in, group), _block(text_out, group))


@pytest.mark.parametrize(
    "name, text_in, text_out",
    [("axis permutations", "points:1,0,0", "1o"), ("axis permutations", "2e", "points:1,0,0"),
     ("axis permutations", "1o*1e", "points:1,0,0"), ("axis permutations", "regular", "2e"),
     ("Octahedral", "points:1,0,0", "1o*1o"), ("Octahedral", "2e", "points:1,0,0"),
     ("Octahedral", "points:1,1,1", "3o"), ("Octahedral", "1o*2e", "points:1,1,0"),
     ("FullOctahedral", "points:1,1,0", "1o"), ("Icosahedral", f"points:0,1,{_GOLDEN}", "2e"),
     ("Icosahedral", "3o", f"points:0,1,{_GOLDEN}")],
)  # fmt: skip
def test_permuted_points_with_proper_stabilisers(monkeypatch, name, text_in, text_out):
    """G permuting the faces, vertices or edges of a polyhedron (or the axes, for a group
    built from permutation matrices): the stabilisers are proper subgroups, whose fixed
    vectors give the rows (columns) of each orbit."""
    group = _AXES if name == _AXES.name else group_from_name(name)
    block_in, block_out = _one_sided_block(text_in, group), _one_sided_block(text_out, group)
    points = block_in if isinstance(block_in, _PointsBlock) else block_out
    assert 1 < points.dim < group.order  # one orbit, its stabilisers proper subgroups
    _check_one_sided(monkeypatch, group, block_in, block_out)


@settings(max_examples=12, deadline=None)
@given(
    name=st.sampled_from(["C3", "D4", "Tetrahedral", "Octahedral", "FullOctahedral"]),
    permuted=st.sampled_from(["regular", "regular*0e", "regular*2x0e"]),
    other=st.tuples(rep_strategy, st.sampled_from(["", "0e", "1o", "2e"])),
    permuted_side=st.sampled_from(["in", "out"]),
)
def test_one_permuted_block_against_any_other(name, permuted, other, permuted_side):
    """A regular block (one or two copies) against a random sum of irreps, possibly
    tensored with another irrep, on the other side: the orbit solver's basis is the one
    the general solvers find."""
    from symgraph.groups import basis as basis_module
    from symgraph.groups.rep import ProductBlock

    group = group_from_name(name)
    reg = Rep.regular(group)
    permuted_block = (
        ProductBlock(reg, Rep(permuted.split("*")[1], group))
        if "*" in permuted
        else reg.blocks[0][1]
    )
    text, factor = other
    other_block = ProductBlock(Rep(text, group), Rep(factor or "0e", group))
    assume(permuted_block.dim * other_block.dim <= 2500)  # the reference takes seconds beyond
    block_in, block_out = (
        (permuted_block, other_block) if permuted_side == "in" else (other_block, permuted_block)
    )
    orbits = basis_module._solve_by_orbits(group, block_in, block_out)
    assert orbits is not None
    assert _largest(_one_sided_reference(group, block_in, block_out) - orbits) < 1e-12


def test_icosahedral_regular_vector_products():
    """``regular ⊗ 1o -> regular`` of the icosahedral group (10,800 unknowns, 3.5 s
    through the group average), and the other way round: the canonical basis of the whole
    space (orthonormal, equivariant, as many maps as the characters say, a fixed point of
    the canonical form) in a fraction of a second."""
    import time

    from symgraph.groups import basis as basis_module

    group = group_from_name("Icosahedral")
    product, regular = _block("regular*1o", group), _block("regular", group)
    for block_in, block_out in ((product, regular), (regular, product)):
        start = time.perf_counter()
        orbits = basis_module._solve_by_orbits(group, block_in, block_out)
        assert time.perf_counter() - start < 2.0
        assert orbits is not None and orbits.shape[0] == 180  # 60 · 3 = Σ_g χ_reg χ_product / 60
        flat = orbits.reshape(180, -1)
        assert _largest(flat @ flat.T - torch.eye(180, dtype=torch.float64)) < 1e-12
        g = group.discrete_generators
        r_in, r_out = block_in.rho(g)[:, None], block_out.rho(g)[:, None]
        assert _largest(r_out @ orbits - orbits @ r_in) < 1e-12
    assert _largest(basis_module._canonical(orbits) - orbits) < 1e-12


@pytest.mark.parametrize("side", ["in", "out"])
def test_one_sided_orbit_bases_keep_exact_zeros(side):
    """Rounding of ``ρ`` (the Wigner fit's identity included, ~1e-16) is no entry of the
    basis, as in the canonical form: C4 fixes the z axis, so its maps between the regular
    representation and a vector split exactly into those through z and those through the
    xy plane (a z row of 1e-16 in the planar maps gave a breaking input along z a penalty
    of 1e-33 instead of 0)."""
    group = group_from_name("C4")
    regular, vector = Rep.regular(group), Rep("1o", group)
    if side == "in":
        through = equivariant_basis(regular, vector).to_dense()  # [n, 3, 4]
    else:
        through = equivariant_basis(vector, regular).to_dense().transpose(1, 2)
    z = through[:, 2].ne(0).any(dim=1)
    plane = through[:, :2].ne(0).flatten(1).any(dim=1)
    assert int(z.sum()) == 1 and int(plane.sum()) == 2 and not bool((z & plane).any())


def test_fixed_space_refuses_a_representation_that_is_not_orthogonal():
    """The stabilisers' averages are orthogonal projectors only for orthogonal
    representations (every block here is one): anything else is refused, not solved."""
    from symgraph.groups import basis as basis_module

    flip = torch.tensor([[1.0, 0.0], [1.0, -1.0]], dtype=torch.float64)  # an involution
    with pytest.raises(ValueError, match="not orthogonal"):
        basis_module._fixed_space(torch.stack([torch.eye(2, dtype=torch.float64), flip]))


def test_matrix_refuses_weights_of_another_shape():
    """One coefficient per basis element: a longer vector or a batch is refused, not sliced."""
    group = sg.groups.SO2()
    basis = equivariant_basis(Rep("2x0e + 1o", group), Rep("0e + 2x1o", group))
    assert basis.matrix(torch.zeros(basis.dim, dtype=torch.float64)).shape == (7, 5)
    for bad in (torch.zeros(basis.dim + 1), torch.zeros(1, basis.dim)):
        with pytest.raises(ValueError, match=rf"weights: expected shape \[{basis.dim}\]"):
            basis.matrix(bad)


def test_bilinear_basis_needs_one_group_for_all_three_representations():
    so3, so2 = sg.groups.SO3(), sg.groups.SO2()
    with pytest.raises(ValueError, match="all representations must belong to the same group"):
        sg.groups.bilinear_basis(Rep("1o", so3), Rep("1o", so3), Rep("0e", so2))
    with pytest.raises(ValueError, match="all representations must belong to the same group"):
        sg.groups.bilinear_basis(Rep("1o", so3), Rep("1o", so2), Rep("0e", so3))


def _rotation_x(angle: float) -> torch.Tensor:
    c, s = math.cos(angle), math.sin(angle)
    return torch.tensor([[1.0, 0, 0], [0, c, -s], [0, s, c]], dtype=torch.float64)


def _turned(generators: torch.Tensor, size: float, seed: int) -> torch.Tensor:
    """Each generator moved by a random rotation of angle ~``size`` (an error of that size)."""
    from symgraph.groups.matrix_group import _rotation_about

    draws = torch.Generator().manual_seed(seed)
    axes = torch.randn(len(generators), 3, generator=draws, dtype=torch.float64)
    turns = [
        _rotation_about(a / a.norm(), torch.tensor([size], dtype=torch.float64))[0] for a in axes
    ]
    return torch.stack(turns) @ generators


C3_ABOUT_X = sg.groups.MatrixGroup(discrete=[_rotation_x(2 * math.pi / 3)])
INEXACT = {  # generators accurate to ~1e-7, the exact group they stand for
    "C3 about x, float32": (C3_ABOUT_X.discrete_generators.float(), C3_ABOUT_X),
    "D(3), float32": (sg.groups.D(3).discrete_generators.float(), sg.groups.D(3)),
    "Icosahedral, float32": (
        sg.groups.Icosahedral().discrete_generators.float(),
        sg.groups.Icosahedral(),
    ),
    "Icosahedral, turned by 3e-7": (
        _turned(sg.groups.Icosahedral().discrete_generators, 3e-7, seed=0),
        sg.groups.Icosahedral(),
    ),
}
PAIRS = [("1o + 2e", "1o + 2e"), ("0e + 1o", "2e + 3o"), ("1e + 2o + 3e", "1o + 2e + 3o")]


@pytest.mark.parametrize("case", INEXACT)
def test_inexact_generators_give_the_exact_groups_basis(case):
    """Generators accurate to ``atol`` close on the true group and are snapped onto an
    exact one: the same basis dimensions as the exact group (not those of the dense
    subgroup that inexact rotations generate: 14 instead of 22 for C3's ``1o + 2e``), and
    maps that commute with every element of the snapped group to float64 rounding."""
    generators, exact = INEXACT[case]
    group = sg.groups.MatrixGroup(discrete=generators, atol=1e-6)
    assert group.order == exact.order
    elements = group.elements()
    assert _largest(elements - _nearest(elements, exact.elements())) < 1e-6
    for text_in, text_out in PAIRS:
        rep_in, rep_out = Rep(text_in, group), Rep(text_out, group)
        basis = equivariant_basis(rep_in, rep_out)
        assert basis.dim == equivariant_basis(Rep(text_in, exact), Rep(text_out, exact)).dim
        dense = basis.to_dense()
        r_in, r_out = rep_in.rho(elements)[:, None], rep_out.rho(elements)[:, None]
        assert _largest(r_out @ dense - dense @ r_in) < 1e-10


def _nearest(elements: torch.Tensor, among: torch.Tensor) -> torch.Tensor:
    """The element of ``among [m, 3, 3]`` nearest each of ``elements [n, 3, 3]``."""
    distance = torch.cdist(elements.reshape(-1, 9), among.reshape(-1, 9))
    return among[distance.argmin(1)]


@pytest.mark.parametrize("case", ["C3 about x, float32", "D(3), float32"])
def test_rounded_generators_snap_onto_the_group_they_round(case):
    """Rounding that only moves the rotation angles (entries 0, ±1, ±1/2 are exact in
    float32) snaps back onto the float64 group itself: equal keys (one basis cache entry),
    the same elements, and maps equivariant under the float64 group's elements."""
    generators, exact = INEXACT[case]
    group = sg.groups.MatrixGroup(discrete=generators, atol=1e-6, name=exact.name)
    assert group == exact
    assert _largest(group.elements() - exact.elements()) < 1e-14
    rep = Rep("1o + 2e + 3o", exact)
    dense = equivariant_basis(Rep("1o + 2e + 3o", group), Rep("1o + 2e + 3o", group)).to_dense()
    r = rep.rho(exact.elements())[:, None]
    assert _largest(r @ dense - dense @ r) < 1e-10


def test_exact_generators_are_kept_as_given():
    """Groups exact to float64 rounding (the catalog's) are not snapped: bit for bit."""
    for group in (sg.groups.Icosahedral(), sg.groups.D(7), sg.groups.FullOctahedral()):
        again = sg.groups.MatrixGroup(discrete=group.discrete_generators, atol=1e-6)
        assert torch.equal(again.discrete_generators, group.discrete_generators)
        assert torch.equal(again.elements(), group.elements())


@pytest.mark.parametrize("name", ["C1", "Trivial", "Inversion"])
def test_a_group_under_which_every_map_is_equivariant_gives_the_whole_space(name):
    """Averaging a large block (17 x 17 = 289 unknowns) of a group under which every map is
    equivariant read a singular value past the end of the spectrum (IndexError)."""
    group = sg.groups.group_from_name(name)
    basis = equivariant_basis(Rep("8e", group), Rep("8e", group)).to_dense()  # [n, 17, 17]
    assert basis.shape == (17 * 17, 17, 17)
    torch.testing.assert_close(basis.reshape(289, 289), torch.eye(289, dtype=torch.float64))
