"""The generator's own NVE trajectories conserve what physics conserves.

Energy within the velocity-Verlet integration error (second order in dt); linear and
angular momentum to round-off, because they start at zero and Verlet conserves both.
"""

from __future__ import annotations

import pytest
import torch

from symgraph.data.md_simulation import MMFFCalculator, energy_drift, generate_md_trajectory
from symgraph.noether import (
    AngularMomentum,
    AsePotential,
    KineticEnergy,
    LinearMomentum,
    TotalEnergy,
    noether_loss,
    quantity_series,
)


@pytest.fixture(scope="module")
def ethanol():
    return generate_md_trajectory(
        "CH3CH2OH", steps=400, dt_fs=0.5, temperature_K=300.0, seed=3, save_every=4
    )


def test_generator_output(ethanol):
    traj = ethanol
    assert len(traj) == 101 and traj.dt == 2.0 and traj.num_atoms == 9
    assert traj.positions.dtype == torch.float64 and traj.energy_unit == "eV"
    assert traj.info["smiles"] == "CCO"
    report = traj.info["energy_drift"]
    assert report["drift_per_atom"] < 2e-3 and report["max_fluctuation_per_atom"] < 2e-3
    # the atoms actually move: about 300 K of kinetic energy
    ke = KineticEnergy()(traj.flatten())[:, 0]
    kelvin = 2 * ke.mean() / (3 * 9 * 8.617333e-5)
    assert 100 < kelvin < 400


def test_momentum_and_angular_momentum_conserved(ethanol):
    frames = ethanol.flatten()
    p = LinearMomentum()(frames)
    l = AngularMomentum()(frames)
    l0 = AngularMomentum("origin")(frames)
    m, v = ethanol.masses[None, :, None], ethanol.velocities
    p_scale = (m * v.abs()).sum()
    r = ethanol.positions - ethanol.positions.mean(1, keepdim=True)
    l_scale = (m * r.norm(dim=-1, keepdim=True) * v.norm(dim=-1, keepdim=True)).sum()
    assert p.abs().max() / p_scale < 1e-10
    assert l.abs().max() / l_scale < 1e-10
    assert l0.abs().max() / l_scale < 1e-10


def test_momenta_conserved_when_they_are_not_zero(ethanol):
    """A Galilean boost of a solution is a solution (r + u t, v + u): P = M u and the
    angular momenta are conserved at non-zero values, which tells the centre of mass from
    any other point (the centroid moves against it as the molecule vibrates)."""
    boost = torch.tensor([0.02, -0.01, 0.015], dtype=torch.float64)  # Å/fs, ~thermal speeds
    t = torch.arange(len(ethanol), dtype=torch.float64)[:, None, None] * ethanol.dt
    moving = ethanol[:]
    offset = torch.tensor([5.0, 0.0, 0.0], dtype=torch.float64)  # R far from the origin
    moving.positions = ethanol.positions + offset + boost * t
    moving.velocities = ethanol.velocities + boost
    frames = moving.flatten()
    total_mass = ethanol.masses.sum()
    p = LinearMomentum()(frames)
    torch.testing.assert_close(p, (total_mass * boost).expand_as(p), rtol=1e-10, atol=1e-12)
    for about in ("com", "origin"):
        l = AngularMomentum(about)(frames)
        assert (l - l[0]).abs().max() < 1e-10 * l[0].norm().clamp_min(1.0), about
    assert AngularMomentum("origin")(frames)[0].norm() > 1.0  # R x P: far from zero


def test_total_energy_conserved_within_integration_error(ethanol):
    potential = AsePotential(ethanol.info["atoms"], MMFFCalculator())
    total = quantity_series(TotalEnergy(potential), ethanol)[:, 0, 0]
    report = energy_drift(ethanol)
    torch.testing.assert_close(total, report["total_energy"], atol=1e-10, rtol=1e-10)
    kinetic = KineticEnergy()(ethanol.flatten())[:, 0]
    assert (total - total[0]).abs().max() < 0.05 * kinetic.mean()
    # a rescaled trajectory (not a solution) breaks energy conservation by far more
    fake = ethanol[:]
    fake.velocities = ethanol.velocities * torch.linspace(1, 1.2, len(ethanol))[:, None, None]
    q = TotalEnergy(potential)
    assert noether_loss(q, fake) > 100 * noether_loss(q, ethanol)


def test_energy_error_is_second_order_in_dt():
    coarse = generate_md_trajectory("H2O", steps=200, dt_fs=1.0, seed=1, save_every=10)
    fine = generate_md_trajectory("H2O", steps=400, dt_fs=0.5, seed=1, save_every=20)
    e_coarse = coarse.info["energy_drift"]["max_fluctuation_per_atom"]
    e_fine = fine.info["energy_drift"]["max_fluctuation_per_atom"]
    assert e_fine < e_coarse / 2.5


def test_generator_bad_inputs():
    with pytest.raises(ValueError, match="atoms_or_name"):
        generate_md_trajectory("not-a-molecule", steps=2)
    with pytest.raises(ValueError, match="steps"):
        generate_md_trajectory("H2O", steps=0)
    with pytest.raises(ValueError, match="calculator"):
        generate_md_trajectory("H2O", steps=2, calculator="dft")
