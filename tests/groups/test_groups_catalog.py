"""Groups of the catalog: generators, elements, Haar sampling, bad input."""

from __future__ import annotations

import math

import pytest
import torch

import symgraph as sg
from symgraph.groups import MatrixGroup, group_from_name

FINITE = {
    "Trivial": 1, "Inversion": 2, "Mirror": 2, "C4": 4, "C6": 6, "D3": 6, "D4": 8,
    "Tetrahedral": 12, "Octahedral": 24, "FullOctahedral": 48, "Icosahedral": 60,
}  # fmt: skip
CONTINUOUS = {
    "SO2": 1, "O2Dihedral": 2, "O2Conical": 2, "SO2Inversion": 2, "O2Full": 4, "SO3": 1, "O3": 2,
}  # fmt: skip


@pytest.mark.parametrize("name,order", FINITE.items())
def test_finite_group_order_and_closure(name, order):
    group = group_from_name(name)
    elements = group.elements()
    assert group.order == order and elements.shape == (order, 3, 3)
    assert torch.allclose(elements[0], torch.eye(3, dtype=torch.float64))
    products = (elements[:, None] @ elements[None]).reshape(-1, 9)
    dist = torch.cdist(
        products, elements.reshape(-1, 9), compute_mode="donot_use_mm_for_euclid_dist"
    )
    dist = dist.min(dim=1).values
    assert float(dist.max()) < 1e-10, "the element list is closed under multiplication"
    eye = torch.eye(3, dtype=torch.float64)
    assert torch.allclose(elements.transpose(1, 2) @ elements, eye.expand(order, 3, 3), atol=1e-12)


@pytest.mark.parametrize("name,components", CONTINUOUS.items())
def test_continuous_group_samples(name, components):
    group = group_from_name(name)
    assert group.order == math.inf and group.num_components == components
    g = group.sample(500, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    eye = torch.eye(3, dtype=torch.float64)
    assert torch.allclose(g.transpose(1, 2) @ g, eye.expand(500, 3, 3), atol=1e-12)
    dets = torch.linalg.det(g).round()
    if components == 1:
        assert bool((dets == 1).all())
    if name == "SO2":
        z = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
        assert torch.allclose(g @ z, z.expand(500, 3), atol=1e-12)


def test_so3_sampling_is_haar():
    """Haar SO(3): E[R] = 0 and trace R has mean 0 and variance 1."""
    g = sg.groups.SO3().sample(
        20000, generator=torch.Generator().manual_seed(1), dtype=torch.float64
    )
    assert float(g.mean(0).abs().max()) < 0.03
    trace = g.diagonal(dim1=1, dim2=2).sum(-1)
    assert abs(float(trace.mean())) < 0.03 and abs(float(trace.var()) - 1.0) < 0.05


def test_so2_angles_uniform():
    g = sg.groups.SO2().sample(
        20000, generator=torch.Generator().manual_seed(2), dtype=torch.float64
    )
    angle = torch.atan2(g[:, 1, 0], g[:, 0, 0])
    hist = torch.histc(angle, bins=8, min=-math.pi, max=math.pi) / 20000
    assert float((hist - 1 / 8).abs().max()) < 0.015


def test_finite_sampling_uses_every_element():
    group = sg.groups.D(3)
    g = group.sample(300, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    dist = torch.cdist(g.reshape(-1, 9), group.elements().reshape(-1, 9))
    assert float(dist.min(1).values.max()) < 1e-12
    assert len(set(dist.argmin(1).tolist())) == 6


def test_custom_group_from_generators():
    rot = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    group = MatrixGroup(discrete=[rot, -torch.eye(3)], name="C4h-like")
    assert group.order == 8
    assert "C4h-like" in repr(group) and "order 8" in repr(group)


def test_bad_generators_raise():
    with pytest.raises(ValueError, match="orthogonal"):
        MatrixGroup(discrete=[2 * torch.eye(3)])
    with pytest.raises(ValueError, match="skew"):
        MatrixGroup(lie=[torch.eye(3)])
    with pytest.raises(ValueError, match="3x3"):
        MatrixGroup(discrete=[torch.eye(2)])
    lx = torch.tensor([[0.0, 0, 0], [0, 0, -1], [0, 1, 0]])
    ly = torch.tensor([[0.0, 0, 1], [0, 0, 0], [-1, 0, 0]])
    with pytest.raises(ValueError, match="2-dimensional"):
        MatrixGroup(lie=[lx, ly])
    with pytest.raises(ValueError, match="rotation axis"):
        MatrixGroup(discrete=[sg.groups.Octahedral().elements()[5]], lie=[lx])


def test_rounded_generators_without_atol_are_refused_saying_what_to_do():
    """A float32 generator (orthogonal to ~1e-8) is refused at the default ``atol=1e-9``
    with a message naming the fix: float64 generators or ``atol``; a matrix far from
    orthogonal gets no such hint."""
    t = 2 * math.pi / 3
    turn = torch.tensor(
        [[1.0, 0.0, 0.0], [0.0, math.cos(t), -math.sin(t)], [0.0, math.sin(t), math.cos(t)]]
    )
    with pytest.raises(ValueError, match=r"discrete\[0\].*atol=1e-09.*float64.*atol=1e-6"):
        MatrixGroup(discrete=[turn])
    assert MatrixGroup(discrete=[turn], atol=1e-6).order == 3
    with pytest.raises(ValueError, match=r"orthogonal.*got an error of 3\.00e\+00$"):
        MatrixGroup(discrete=[2 * torch.eye(3)])
    for bad in (0.0, -1e-6, float("nan"), "1e-6", True):
        with pytest.raises(ValueError, match="atol: expected a positive number"):
            MatrixGroup(discrete=[turn], atol=bad)


def test_generators_that_close_on_no_group_within_atol_raise():
    """An ``atol`` so loose that distinct elements merge (C(100)'s turns lie 0.09 apart,
    within the drift of 15 products at ``atol=1e-3``) leaves no group to snap onto: the
    error names ``atol``; at a fitting ``atol`` the same generator closes."""
    turn = sg.groups.C(100).discrete_generators
    with pytest.raises(ValueError, match="discrete: .*atol=0.001.*do not close on a group"):
        MatrixGroup(discrete=turn, atol=1e-3)
    assert MatrixGroup(discrete=turn, atol=1e-6).order == 100


def test_unknown_group_name_lists_valid_ones():
    with pytest.raises(ValueError, match="SO3.*O2, C<n>"):
        group_from_name("SO4")
    assert group_from_name("D6").order == 12


def test_as_group_names_its_argument_for_an_unknown_name():
    """``as_group(value, name)`` refuses an unknown name naming ``name``, as it does a
    value of another type (it said ``group:`` whatever the argument)."""
    from symgraph.groups import as_group

    with pytest.raises(ValueError, match="tta_group: unknown group name 'SO4'; expected one of"):
        as_group("SO4", "tta_group")
    with pytest.raises(ValueError, match="group: unknown group name 'SO4'"):
        as_group("SO4")
    assert as_group("D6", "tta_group").order == 12


def test_o2_is_the_planar_o2_with_z_fixed():
    """``O2()`` and the name ``"O2"`` give O2Conical: it acts on the xy plane as O(2)."""
    for group in (sg.groups.O2(), group_from_name("O2")):
        assert group == sg.groups.O2Conical() and group.name == "O2Conical"
    assert "O2" not in sg.groups.GROUPS  # listed once, under its catalog name


def test_names_are_accepted_wherever_a_group_is_and_printed_names_parse():
    """A catalog name works for ``Rep`` and every layer's ``group=``; every group's own
    ``name`` (``"C(4)"``) parses back to it."""
    from symgraph.nn import EquivariantLinear, ImplicitSteerableConv

    assert sg.Rep("1x1o", "C4") == sg.Rep("1x1o", sg.groups.C(4))
    assert ImplicitSteerableConv("2x0e + 1x1o", "2x0e", group="SO2").group == sg.groups.SO2()
    linear = EquivariantLinear("1x1o", "1x1o", group="D3")
    assert linear.rep_in.group == sg.groups.D(3)
    for group in (sg.groups.C(4), sg.groups.D(6), sg.groups.O3(), sg.groups.O2()):
        assert group_from_name(group.name) == group
    for bad in ("C(0)", "C()", "C(4", "X(4)", "D(a)", "C04", "D(012)", "C\u0664", "C+4", "C 4"):
        with pytest.raises(ValueError, match="unknown group name"):
            group_from_name(bad)
    with pytest.raises(TypeError, match="group: expected a MatrixGroup or a group name.*int"):
        sg.Rep("1x1o", 3)


def test_samples_follow_the_default_dtype_unless_one_is_given():
    group = sg.groups.SO3()
    assert group.sample(2).dtype == torch.get_default_dtype() == torch.float32
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        g = group.sample(3, generator=torch.Generator().manual_seed(0))
        assert g.dtype == torch.float64
        eye = torch.eye(3, dtype=torch.float64).expand(3, 3, 3)
        assert torch.allclose(g @ g.transpose(1, 2), eye, atol=1e-14)
        assert group.sample(1, dtype=torch.float16).dtype == torch.float16
    finally:
        torch.set_default_dtype(previous)


def test_elements_of_continuous_group_raises():
    with pytest.raises(ValueError, match="continuous"):
        sg.groups.SO3().elements()


def _contains(elements: torch.Tensor, matrix: torch.Tensor) -> bool:
    return float((elements - matrix).abs().flatten(1).max(1).values.min()) < 1e-12


@pytest.mark.parametrize("n", [3, 5, 6])
def test_cyclic_and_dihedral_generators_follow_the_axis_conventions(n):
    """C(n) and D(n) turn by 2π/n about z; D(n)'s flip is the half turn about x,
    ``diag(1, -1, -1)`` (the catalog's convention, which odd ``n`` tells apart)."""
    t = 2 * math.pi / n
    turn = torch.tensor(
        [[math.cos(t), -math.sin(t), 0.0], [math.sin(t), math.cos(t), 0.0], [0.0, 0.0, 1.0]],
        dtype=torch.float64,
    )
    flip = torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64))
    assert _contains(sg.groups.C(n).elements(), turn)
    assert _contains(sg.groups.D(n).elements(), turn)
    assert _contains(sg.groups.D(n).elements(), flip)


def test_mirror_groups_follow_the_axis_conventions():
    """Mirror is ``z -> -z``; O2Conical's mirror is vertical, so every element fixes z and
    half of them have ``det = -1``; O2Dihedral's flip sends z to -z with ``det = +1``."""
    mirror_z = torch.diag(torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64))
    assert _contains(sg.groups.Mirror().elements(), mirror_z)
    z = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    conical = sg.groups.O2Conical().sample(200, generator=gen, dtype=torch.float64)
    assert torch.allclose(conical @ z, z.expand(200, 3), atol=1e-12)
    assert set(torch.linalg.det(conical).round().tolist()) == {-1.0, 1.0}
    dihedral = sg.groups.O2Dihedral().sample(200, generator=gen, dtype=torch.float64)
    assert set(torch.linalg.det(dihedral).round().tolist()) == {1.0}
    assert set(dihedral[:, 2, 2].round().tolist()) == {-1.0, 1.0}


@pytest.mark.parametrize(
    "name,vertices",
    [
        ("Tetrahedral", [[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]]),
        ("Octahedral", [[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]]),
        ("Icosahedral", None),
    ],
)
def test_polyhedral_groups_permute_their_polyhedron(name, vertices):
    """Every element maps the documented polyhedron's vertices onto themselves (the
    icosahedron's are the cyclic permutations of ``(0, ±1, ±φ)``)."""
    if vertices is None:
        phi = (1 + math.sqrt(5)) / 2
        vertices = []
        for s1 in (1, -1):
            for s2 in (phi, -phi):
                vertices += [[0, s1, s2], [s1, s2, 0], [s2, 0, s1]]
    points = torch.tensor(vertices, dtype=torch.float64)
    moved = torch.einsum("gij,vj->gvi", group_from_name(name).elements(), points)
    distance = torch.cdist(moved, points.expand(moved.shape[0], -1, -1))
    assert float(distance.min(-1).values.max()) < 1e-10


def test_elements_take_the_requested_dtype():
    group = sg.groups.D(3)
    single = group.elements(torch.float32)
    assert single.dtype == torch.float32
    assert torch.equal(single, group.elements().float())
    assert group.elements().dtype == torch.float64


def test_stratified_samples_take_the_components_in_turn():
    """``sample(n, stratified=True)``: element i lies in the (i mod k)-th component, so O(3)
    alternates rotations and improper rotations; the elements stay in the group."""
    gen = torch.Generator().manual_seed(0)
    o3 = sg.groups.O3()
    g = o3.sample(6, generator=gen, dtype=torch.float64, stratified=True)
    assert torch.linalg.det(g).round().tolist() == [1.0, -1.0] * 3
    torch.testing.assert_close(
        g @ g.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand(6, 3, 3)
    )
    assert sg.groups.SO3().sample(3, generator=gen, stratified=True).shape == (3, 3, 3)
    c4 = sg.groups.C(4)
    torch.testing.assert_close(
        c4.sample(8, stratified=True, dtype=torch.float64), c4.elements().repeat(2, 1, 1)
    )
