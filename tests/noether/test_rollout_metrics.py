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


def test_predictions_of_another_time_step_are_refused():
    """A model stepping 0.5 fs scored against frames 2 fs apart compares different times."""
    from dataclasses import replace

    from symgraph.noether import rollout

    truth = replace(free_particles(3, 5, 0), dt=2.0)
    with pytest.raises(ValueError, match="truth: expected frames dt=0.5 fs apart .* got dt=2"):
        one_step_mse(Ballistic(0.5), truth)
    with pytest.raises(ValueError, match="truth: expected frames dt=0.5 fs apart .* got dt=2"):
        position_rmse(rollout(Ballistic(0.5), truth.frame(0), 4), truth)
    with pytest.raises(ValueError, match="truth: expected frames dt=0.5 fs apart .* got dt=0.501"):
        position_rmse(rollout(Ballistic(0.5), truth.frame(0), 4), replace(truth, dt=0.501))
    # the same time step (to rounding), or one side without any, is scored as before
    assert float(one_step_mse(Ballistic(2.0), truth)[0][0]) < 1e-20
    assert one_step_mse(Ballistic(0.1 * 3), replace(truth, dt=0.3))[0].shape == (1,)
    plain = rollout(Ballistic(0.5), truth.frame(0), 4)
    assert position_rmse(plain, replace(truth, dt=None)).shape == (5, 1)


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


def test_typical_scales_of_angular_momentum_and_energy():
    """Each scale is its module-table formula averaged over molecules and frames: the arm is
    measured from each molecule's own centroid (not the origin), the energy is in eV."""
    from symgraph.noether import EV_PER_AMU_A2_PER_FS2

    a, b = free_particles(3, 4, 0), free_particles(4, 4, 1)
    b = Trajectory(b.positions + 5.0, b.velocities, b.z)  # far from the origin and from a
    scales = typical_scales([stack_trajectories([a, b]), a])  # 4*2 + 4*1 molecules
    arm_total = energy_total = 0.0
    for traj in (a, b, a):
        arm = (traj.positions - traj.positions.mean(1, keepdim=True)).norm(dim=-1)
        speed = traj.velocities.norm(dim=-1)
        arm_total += float((traj.masses * arm * speed).sum())
        energy_total += float((0.5 * traj.masses * speed**2).sum()) * EV_PER_AMU_A2_PER_FS2
    assert scales["angular"] == pytest.approx(arm_total / 12, rel=1e-12)
    assert scales["energy"] == pytest.approx(energy_total / 12, rel=1e-12)


def test_typical_scales_refuses_no_trajectories_and_missing_velocities():
    with pytest.raises(ValueError, match="trajectories: expected at least one Trajectory"):
        typical_scales([])
    still = free_particles(3, 4, 0)
    no_vel = Trajectory(still.positions, None, still.z)
    with pytest.raises(ValueError, match=r"trajectories\[1\]: expected velocities, got None"):
        typical_scales([still, no_vel])


def test_known_angular_momentum_is_about_the_centre_of_mass():
    """With a non-zero total momentum away from the origin, ``L`` about the centre of mass
    and about the origin differ; the known quantity is the former, divided by its scale."""
    traj = free_particles(4, 2, 3)
    traj = Trajectory(traj.positions + 3.0, traj.velocities + 0.05, traj.z)
    frame = traj.frame(0)
    g = known_quantity("angular", {"angular": 2.0})
    torch.testing.assert_close(g(frame), AngularMomentum()(frame) / 2.0)
    assert not torch.allclose(g(frame), AngularMomentum("origin")(frame) / 2.0)


@pytest.mark.parametrize("scale", [0.0, -1.0, float("nan")])
def test_known_quantity_refuses_scales_that_are_not_positive(scale):
    with pytest.raises(ValueError, match="scales: expected a positive finite scale for 'angular'"):
        known_quantity(["momentum", "angular"], {"momentum": 1.0, "angular": scale})


def test_no_quantity_name_is_refused():
    with pytest.raises(
        ValueError, match="expected names among momentum, angular, energy, got no name"
    ):
        check_quantity_names([])


def test_quantity_drift_is_the_norm_of_the_change_from_frame_zero():
    """Velocities pushed by ``t·u`` each frame: ``|P_t − P_0| = M t |u|`` per molecule, and
    per atom ``M t |u| / n``."""
    a, b = free_particles(3, 4, 0), free_particles(5, 4, 1)
    truth = stack_trajectories([a, b])
    u = torch.tensor([0.03, -0.04, 0.0], dtype=torch.float64)  # |u| = 0.05
    t = torch.arange(4, dtype=torch.float64)
    pushed = Trajectory(truth.positions, truth.velocities + t[:, None, None] * u, truth.z,
                        batch=truth.batch)  # fmt: skip
    mass = torch.stack([a.masses.sum(), b.masses.sum()])  # [2]
    want = t[:, None] * 0.05 * mass
    torch.testing.assert_close(quantity_drift(LinearMomentum(), pushed), want)
    per_atom = quantity_drift(LinearMomentum(), pushed, per_atom=True)
    torch.testing.assert_close(per_atom, want / torch.tensor([3.0, 5.0], dtype=torch.float64))


def test_metrics_refuse_mismatched_or_incomplete_trajectories():
    from symgraph.noether.metrics import squared_errors

    truth = stack_trajectories([free_particles(3, 4, 0), free_particles(5, 4, 1)])
    with pytest.raises(ValueError, match=r"truth: expected positions of shape \[4, 8, 3\]"):
        position_rmse(truth, truth[:3])
    no_vel = Trajectory(truth.positions, None, truth.z, batch=truth.batch)
    with pytest.raises(ValueError, match="truth: expected velocities in the prediction and"):
        squared_errors(truth, no_vel)
    model = Ballistic(2.0)
    with pytest.raises(ValueError, match="truth: expected at least 2 frames with velocities, "
                       "got 1 frames$"):  # fmt: skip
        one_step_mse(model, truth[:1])
    with pytest.raises(ValueError, match="got 4 frames without velocities"):
        one_step_mse(model, no_vel)
