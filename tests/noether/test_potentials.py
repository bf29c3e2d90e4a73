"""Energy models: ase-calculator wrapper (gradient = -forces) and Lennard-Jones."""

from __future__ import annotations

import pytest
import torch
from ase.build import molecule

from symgraph.data.md_simulation import MMFFCalculator
from symgraph.noether import AsePotential, LennardJones


def test_ase_potential_gradient_is_minus_forces():
    atoms = molecule("CH3CH2OH")
    atoms.calc = MMFFCalculator()
    pot = AsePotential(atoms)
    z = torch.as_tensor(atoms.numbers)
    pos = torch.tensor(atoms.positions, dtype=torch.float64)
    pos2 = torch.cat([pos, pos + 0.01 * torch.randn_like(pos)]).requires_grad_(True)
    batch = torch.arange(2).repeat_interleave(9)
    energy = pot(z.repeat(2), pos2, batch)
    assert energy.shape == (2,)
    energy.sum().backward()
    atoms.positions = pos2[9:].detach().numpy()
    forces = torch.as_tensor(atoms.get_forces())
    torch.testing.assert_close(pos2.grad[9:], -forces)
    # finite differences of the energy along a random direction
    d = torch.randn_like(pos)
    e = lambda x: float(pot(z, x))  # noqa: E731
    fd = (e(pos + 1e-5 * d) - e(pos - 1e-5 * d)) / 2e-5
    p = pos.clone().requires_grad_(True)
    pot(z, p).backward()
    assert abs(fd - float((p.grad * d).sum())) < 1e-5 * max(1.0, abs(fd))


def test_ase_potential_checks_atoms():
    atoms = molecule("H2O")
    pot = AsePotential(atoms, MMFFCalculator())
    with pytest.raises(ValueError, match="z: expected the template's atomic numbers"):
        pot(torch.tensor([1, 1, 8]), torch.randn(3, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="pos: expected a multiple of 3 atoms"):
        pot(torch.tensor([8, 1, 1, 8]), torch.randn(4, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="calculator"):
        AsePotential(molecule("H2O"))


def test_lennard_jones_minimum_and_batches():
    lj = LennardJones(epsilon=0.5, sigma=1.0)
    r_min = 2 ** (1 / 6)
    pos = torch.tensor([[0.0, 0, 0], [r_min, 0, 0]], dtype=torch.float64)
    e = lj(torch.ones(2, dtype=torch.long), pos)
    torch.testing.assert_close(e, torch.tensor([-0.5], dtype=torch.float64))
    both = lj(
        torch.ones(4, dtype=torch.long), torch.cat([pos, pos + 10.0]), torch.tensor([0, 0, 1, 1])
    )
    torch.testing.assert_close(both, torch.tensor([-0.5, -0.5], dtype=torch.float64))


def test_lennard_jones_sums_pairs_within_each_molecule_only():
    """Molecules of several sizes (and a lone atom), packed close together: each energy is
    the molecule's own pair sum, as computed over that molecule alone."""
    torch.manual_seed(0)
    lj = LennardJones(epsilon=0.3, sigma=0.9)
    sizes = [3, 1, 4, 3, 2]
    pos = torch.randn(sum(sizes), 3, dtype=torch.float64)  # molecules overlap in space
    batch = torch.arange(len(sizes)).repeat_interleave(torch.tensor(sizes))
    z = torch.ones(len(batch), dtype=torch.long)
    alone = [lj(z[batch == m], pos[batch == m]) for m in range(len(sizes))]
    torch.testing.assert_close(lj(z, pos, batch), torch.cat(alone))
    assert alone[1].item() == 0.0  # one atom: no pair
    with pytest.raises(ValueError, match="sigma: expected a positive finite number, got 0"):
        LennardJones(sigma=0)


def _water_copies(copies: int, seed: int = 0):
    atoms = molecule("H2O")
    atoms.calc = MMFFCalculator()
    gen = torch.Generator().manual_seed(seed)
    pos = torch.tensor(atoms.positions, dtype=torch.float64)
    pos = torch.cat([pos + 0.02 * torch.randn(3, 3, generator=gen, dtype=torch.float64)
                     for _ in range(copies)])  # fmt: skip
    return atoms, torch.as_tensor(atoms.numbers).repeat(copies), pos


def test_ase_potential_gradient_weights_each_molecule_by_its_upstream_gradient():
    """``d(Σ_b w_b E_b)/dr_i = −w_{b(i)} F_i``: each molecule's forces are scaled by the
    gradient flowing into its own energy."""
    atoms, z, pos = _water_copies(2)
    pot = AsePotential(atoms)
    batch = torch.arange(2).repeat_interleave(3)
    p = pos.clone().requires_grad_(True)
    weights = torch.tensor([2.0, -0.5], dtype=torch.float64)
    (pot(z, p, batch) * weights).sum().backward()
    for b in range(2):
        atoms.positions = pos[3 * b : 3 * b + 3].numpy()
        forces = torch.as_tensor(atoms.get_forces())
        torch.testing.assert_close(p.grad[3 * b : 3 * b + 3], -weights[b] * forces)


def test_ase_potential_keeps_the_dtype_of_the_positions():
    atoms, z, pos = _water_copies(1)
    pot = AsePotential(atoms)
    p = pos.float().requires_grad_(True)
    energy = pot(z, p)
    assert energy.dtype == torch.float32
    energy.sum().backward()
    assert p.grad.dtype == torch.float32
    torch.testing.assert_close(energy.double(), pot(z, pos), rtol=1e-5, atol=1e-5)


def test_ase_potential_refuses_a_batch_of_other_molecules():
    """Six atoms are two copies of water only if the batch says so: molecules of 4 and 2
    atoms, or one molecule of 6 (no batch), are refused rather than split by 3."""
    atoms, z, pos = _water_copies(2)
    pot = AsePotential(atoms)
    for batch in (torch.tensor([0, 0, 0, 0, 1, 1]), None):
        with pytest.raises(ValueError, match="batch: expected 2 molecules of 3 atoms each"):
            pot(z, pos, batch)


@pytest.mark.parametrize("sigma", [0.8, 1.5])
def test_lennard_jones_minimum_and_zero_scale_with_sigma(sigma):
    """``U(2^{1/6} σ) = −ε`` (the well) and ``U(σ) = 0`` for any σ, not only σ = 1."""
    lj = LennardJones(epsilon=0.3, sigma=sigma)
    z = torch.ones(2, dtype=torch.long)
    for r, want in ((2 ** (1 / 6) * sigma, -0.3), (sigma, 0.0)):
        pos = torch.tensor([[0.0, 0, 0], [r, 0, 0]], dtype=torch.float64)
        torch.testing.assert_close(lj(z, pos), torch.tensor([want], dtype=torch.float64))


@pytest.mark.parametrize("bad", [dict(epsilon=float("inf")), dict(sigma=float("inf")),
                                 dict(epsilon=-1.0), dict(sigma=True)])  # fmt: skip
def test_lennard_jones_refuses_non_positive_or_infinite_settings(bad):
    ((name, value),) = bad.items()
    with pytest.raises(ValueError, match=f"{name}: expected a positive finite number"):
        LennardJones(**bad)
