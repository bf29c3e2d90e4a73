"""Energy models: ase-calculator wrapper (gradient = -forces) and Lennard-Jones."""

from __future__ import annotations

import pytest
import torch
from ase.build import molecule

from symgraph.data.trajectories import MMFFCalculator
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
