"""`SymmetryBreakingInput`: a learned global input that relaxes an equivariant network."""

from __future__ import annotations

import pytest
import torch

from symgraph.groups import Rep, group_from_name
from symgraph.nn import (
    EquivariantLinear,
    SymmetryBreakingInput,
    relaxation_penalty,
    relaxed_modules,
    set_relaxation_trainable,
)


def test_appends_the_same_learned_vector_to_every_node():
    layer = SymmetryBreakingInput("1x1o + 1x0e", group_from_name("C4"))
    with torch.no_grad():
        layer.value.copy_(torch.tensor([0.1, 0.2, 0.3, 0.4]))
    x = torch.randn(5, 3)
    out = layer(x)
    assert out.shape == (5, 7)
    assert torch.equal(out[:, :3], x)
    assert torch.equal(out[:, 3:], layer.value.detach().expand(5, 4))


@pytest.mark.parametrize("group", ["C4", "D4", "SO2", "O3"])
def test_penalty_counts_only_the_part_that_some_element_moves(group):
    """Components of ``b`` fixed by every group element (the invariant subspace) cost
    nothing; the rest costs its squared norm. ``b − P b`` is checked against the group
    average ``E_g ρ(g) b`` (the projection onto the invariant vectors) on samples."""
    g = group_from_name(group)
    layer = SymmetryBreakingInput("1x1o + 1x0e + 1x2e", g).double()
    assert float(layer.relaxation_penalty().detach()) == 0.0
    torch.manual_seed(0)
    with torch.no_grad():
        layer.value.normal_()
    elements = g.elements() if g.is_finite else g.sample(20000, dtype=torch.float64)
    average = layer.rep.rho(elements.to(torch.float64)).mean(0) @ layer.value.detach()
    tolerance = 1e-12 if g.is_finite else 0.05  # Monte Carlo average for SO(2), O(3)
    assert torch.allclose(layer.breaking_part().detach(), layer.value - average, atol=tolerance)
    expected = float((layer.value - average).detach().square().sum())
    penalty = float(layer.relaxation_penalty().detach())
    assert penalty == pytest.approx(expected, rel=1e-12 if g.is_finite else 0.03)
    assert float(layer.strength.detach()) ** 2 == pytest.approx(penalty)


def test_a_network_that_reads_the_input_is_equivariant_exactly_while_b_is_invariant():
    """``Linear(Rep + breaking)``: equivariant at ``b = 0`` and for an invariant ``b`` (the
    ``z`` component under C4), not for a ``b`` in the plane, whose penalty is then > 0."""
    torch.manual_seed(0)
    group = group_from_name("C4")
    breaking = SymmetryBreakingInput("1x1o", group).double()
    rep = Rep("2x1o + 1x0e", group)
    linear = EquivariantLinear(rep + breaking.rep, Rep("2x1o", group)).double()
    x = torch.randn(6, rep.dim, dtype=torch.float64)
    turn = group.elements()[1:2].to(torch.float64)

    def error() -> float:
        with torch.no_grad():
            moved = linear(breaking(x @ rep.rho(turn)[0].T))
            expected = linear(breaking(x)) @ Rep("2x1o", group).rho(turn)[0].T
            return float((moved - expected).abs().max())

    assert error() < 1e-12
    with torch.no_grad():
        breaking.value.copy_(torch.tensor([0.0, 0.0, 0.8]))
    assert error() < 1e-12
    assert float(breaking.relaxation_penalty().detach()) == 0.0
    with torch.no_grad():
        breaking.value.copy_(torch.tensor([0.6, -0.3, 0.0]))
    assert error() > 1e-3
    assert float(breaking.relaxation_penalty().detach()) == pytest.approx(0.45)


def test_is_a_relaxed_layer_for_the_training_tools():
    model = torch.nn.Sequential(SymmetryBreakingInput("1x1o", group_from_name("C4")))
    assert [name for name, _ in relaxed_modules(model)] == ["0"]
    with torch.no_grad():
        model[0].value.fill_(1.0)
    assert float(relaxation_penalty(model).detach()) == pytest.approx(2.0)  # x and y, not z
    set_relaxation_trainable(model, False)
    assert not model[0].value.requires_grad
    model[0].reset_parameters()
    assert float(relaxation_penalty(model).detach()) == 0.0


def test_bad_input_names_the_argument():
    group = group_from_name("C4")
    with pytest.raises(ValueError, match="rep: expected a non-empty representation"):
        SymmetryBreakingInput(Rep("", group))
    with pytest.raises(TypeError, match="rep: expected an irreps string"):
        SymmetryBreakingInput(3, group)
    with pytest.raises(ValueError, match=r"x: expected node features \[N, C\]"):
        SymmetryBreakingInput("1x1o", group)(torch.randn(2, 3, 4))


def test_breaking_basis_keeps_float64_across_a_float32_round_trip():
    from symgraph.nn.relaxed_steerable import symmetry_breaking_basis

    rep = Rep("1x1o + 1x2e", group_from_name("C3"))
    layer = SymmetryBreakingInput(rep).float().double()
    expected = symmetry_breaking_basis(rep)
    assert layer.breaking_basis.dtype == torch.float64
    assert torch.equal(layer.breaking_basis, expected)
    layer.value.data.normal_()
    b = layer.value.detach()
    assert layer.relaxation_penalty() == (expected @ b).square().sum()


@pytest.mark.parametrize("rep, group", [("1x0e", "C4"), ("1x0o", "C4"), ("2x0e", "D4")])
def test_an_invariant_rep_is_refused(rep, group):
    """Every vector of an invariant rep is fixed by G: the input could never break it."""
    with pytest.raises(ValueError, match=f"rep: every vector of '{rep}' is invariant under"):
        SymmetryBreakingInput(rep, group_from_name(group))
    SymmetryBreakingInput("1x0e + 1x1o", group_from_name(group))  # a non-invariant part
