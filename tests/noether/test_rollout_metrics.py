"""Per-molecule rollout metrics, known quantities by name, potentials by molecule."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from symgraph.data.trajectories import stack_trajectories
from symgraph.noether import (
    AngularMomentum,
    LennardJones,
    LinearMomentum,
    TotalEnergy,
    Trajectory,
    noether_loss,
)
from symgraph.noether.known import check_quantity_names, known_quantity, typical_scales
from symgraph.noether.metrics import one_step_mse, position_rmse, quantity_drift
from symgraph.noether.potentials import PotentialsByMolecule


class Ballistic(nn.Module):
    """Straight-line motion ``r' = r + dt v`` (exact for free particles)."""

    def __init__(self, dt: float) -> None:
        super().__init__()
        self.dt = dt
        self.unused = nn.Parameter(torch.zeros(1))

    def forward(self, pos, vel, z, batch=None):
        return pos + self.dt * vel, vel


def free_particles(atoms: int, frames: int, seed: int) -> Trajectory:
    gen = torch.Generator().manual_seed(seed)
    pos0 = torch.randn(atoms, 3, generator=gen, dtype=torch.float64)
    vel = 0.01 * torch.randn(atoms, 3, generator=gen, dtype=torch.float64)
    t = torch.arange(frames, dtype=torch.float64)[:, None, None]
    return Trajectory(pos0 + 2.0 * t * vel, vel.expand(frames, -1, -1), torch.full((atoms,), 6))


def test_errors_are_per_molecule():
    a, b = free_particles(3, 6, 0), free_particles(5, 6, 1)
    truth = stack_trajectories([a, b])
    model = Ballistic(2.0)
    pos_se, vel_se = one_step_mse(model, truth)
    assert pos_se.shape == (2,) and float(pos_se.abs().max()) < 1e-20
    assert float(vel_se.abs().max()) == 0.0
    moved = Trajectory(truth.positions.clone(), truth.velocities, truth.z, batch=truth.batch)
    moved.positions[2:, 3:] += 0.1  # shift molecule b (atoms 3..7) from frame 2 on
    rmse = position_rmse(moved, truth)
    assert rmse.shape == (6, 2)
    torch.testing.assert_close(rmse[:, 0], torch.zeros(6, dtype=torch.float64))
    torch.testing.assert_close(rmse[2:, 1], torch.full((4,), 0.1, dtype=torch.float64))
    assert float(one_step_mse(model, moved)[0][0]) < 1e-20
    assert float(one_step_mse(model, moved)[0][1]) > 0


def test_quantity_drift_and_known_quantities():
    truth = stack_trajectories([free_particles(3, 4, 0), free_particles(4, 4, 1)])
    p = quantity_drift(LinearMomentum(), truth)
    assert p.shape == (4, 2) and float(p.abs().max()) < 1e-15  # free particles conserve P
    frame = truth.flatten()
    scales = typical_scales([truth])
    expected = (frame.mass * frame.vel.norm(dim=-1)).sum() / 8  # 4 frames x 2 molecules
    assert scales["momentum"] == pytest.approx(float(expected))
    g = known_quantity(["angular", "momentum"], scales)
    assert g.dim == 6 and g.weights == [1 / scales["momentum"], 1 / scales["angular"]]
    wobbly = Trajectory(truth.positions, 1.5 * truth.velocities, truth.z, batch=truth.batch)
    wobbly.velocities[2:] *= 2.0
    plain = noether_loss(AngularMomentum(), wobbly, reduction="mean")
    assert plain > 0 and float(noether_loss(g, wobbly, reduction="mean")) > 0
    with pytest.raises(ValueError, match="names among momentum, angular, energy, got 'spin'"):
        check_quantity_names(["momentum", "spin"])
    with pytest.raises(ValueError, match="energy_model: expected a potential energy model"):
        known_quantity(["energy"], scales)
    with pytest.raises(ValueError, match="scales: expected a positive finite scale for "
                       "'momentum', got inf"):  # fmt: skip
        known_quantity(["momentum"], {"momentum": float("inf")})


def test_potentials_by_molecule_dispatch_on_atomic_numbers():
    soft, hard = LennardJones(0.01, 1.0), LennardJones(0.5, 1.2)
    table = PotentialsByMolecule([(torch.tensor([6, 1, 1]), soft), (torch.tensor([8, 1]), hard)])
    pos_a, pos_b = torch.randn(3, 3, dtype=torch.float64), torch.randn(2, 3, dtype=torch.float64)
    z = torch.tensor([8, 1, 6, 1, 1])
    batch = torch.tensor([0, 0, 1, 1, 1])
    energy = table(z, torch.cat([pos_b, pos_a]), batch)
    torch.testing.assert_close(energy, torch.cat([hard(z[:2], pos_b), soft(z[2:], pos_a)]))
    total = TotalEnergy(table)
    traj = Trajectory(torch.cat([pos_b, pos_a])[None], None, z, batch=batch)
    assert total(traj.frame(0)).shape == (2, 1)
    with pytest.raises(ValueError, match="no potential for a molecule with atomic numbers"):
        table(torch.tensor([1, 8]), pos_b)
    with pytest.raises(ValueError, match="two potentials for the same atomic numbers"):
        PotentialsByMolecule([(torch.tensor([8, 1]), soft), (torch.tensor([8, 1]), hard)])
