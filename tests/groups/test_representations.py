"""Representations: homomorphism property, e3nn agreement, algebra, bad input."""

from __future__ import annotations

import pytest
import torch
from e3nn import o3

import symgraph as sg
from symgraph.groups import Rep, group_from_name

GROUP_NAMES = [
    "Trivial", "Inversion", "Mirror", "C4", "D3", "SO2", "O2Dihedral", "O2Conical",
    "SO2Inversion", "Octahedral", "FullOctahedral", "SO3", "O3",
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


def test_drho_is_the_derivative_of_rho():
    rep = Rep("0e + 1o + 2e + 3o")
    a = torch.randn(2, 3, 3, dtype=torch.float64)
    a = a - a.transpose(1, 2)
    t = 0.37
    exact = rep.rho(torch.linalg.matrix_exp(t * a))
    via_algebra = torch.linalg.matrix_exp(t * rep.drho(a))
    assert float((exact - via_algebra).abs().max()) < 1e-12


def test_regular_representation():
    group = sg.groups.D(4)
    rep = Rep.regular(group)
    elements = group.elements()
    r = rep.rho(elements)
    assert rep.dim == 8
    assert torch.equal(r.sum(1), torch.ones(8, 8, dtype=torch.float64)), "permutation matrices"
    idx = torch.tensor([3, 5])
    assert torch.allclose(rep.rho(elements[idx[:1]] @ elements[idx[1:]]), r[3:4] @ r[5:6])


def test_sum_multiplicity_tensor_dual():
    group = sg.groups.SO2()
    a, b = Rep("0e + 1o", group), Rep("2e", group)
    s = a + b
    assert s.dim == 9 and s.irreps == o3.Irreps("0e + 1o + 2e")
    assert (3 * a).dim == 12 and (3 * a).irreps == o3.Irreps("0e + 1o + 0e + 1o + 0e + 1o")
    t = a.tensor(b)
    g = group.sample(3, dtype=torch.float64)
    expected = torch.stack([torch.kron(x, y) for x, y in zip(a.rho(g), b.rho(g))])
    assert t.dim == 20 and torch.allclose(t.rho(g), expected, atol=1e-12)
    assert a.dual() == a
    assert t.irreps is None


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
