"""Known conserved quantities: how they transform under E(3), and basic values."""

from __future__ import annotations

import pytest
import torch

from symgraph.noether import (
    AngularMomentum,
    CentreOfMassVelocity,
    CombinedQuantity,
    ConservedQuantity,
    Frame,
    KineticEnergy,
    LennardJones,
    LinearMomentum,
    TotalEnergy,
    Trajectory,
    noether_loss,
)
from symgraph.noether.quantities import segment_sum


def random_orthogonal(det: float = 1.0) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64))
    if torch.det(q) * det < 0:
        q[:, 0] = -q[:, 0]
    return q


def random_frame(num_graphs: int = 3, atoms: int = 5) -> Frame:
    n = num_graphs * atoms
    return Frame(
        pos=torch.randn(n, 3, dtype=torch.float64) * 2,
        vel=torch.randn(n, 3, dtype=torch.float64) * 0.01,
        z=torch.randint(1, 10, (n,)),
        batch=torch.arange(num_graphs).repeat_interleave(atoms),
    )


def transform(frame: Frame, rot: torch.Tensor, shift: torch.Tensor) -> Frame:
    return frame.replace(pos=frame.pos @ rot.T + shift, vel=frame.vel @ rot.T)


@pytest.mark.parametrize("det", [1.0, -1.0])
def test_vectors_rotate_and_ignore_translations(det):
    frame = random_frame()
    rot, shift = random_orthogonal(det), torch.randn(3, dtype=torch.float64)
    moved = transform(frame, rot, shift)
    for q in (LinearMomentum(), CentreOfMassVelocity()):
        torch.testing.assert_close(q(moved), q(frame) @ rot.T, atol=1e-14, rtol=1e-12)
    # angular momentum about the centre of mass is a pseudovector: det(R) R L
    ang = AngularMomentum("com")
    torch.testing.assert_close(ang(moved), det * ang(frame) @ rot.T, atol=1e-14, rtol=1e-12)


def test_angular_momentum_about_origin_shifts_by_t_cross_p():
    frame = random_frame()
    shift = torch.randn(3, dtype=torch.float64)
    moved = transform(frame, torch.eye(3, dtype=torch.float64), shift)
    l0, l1 = AngularMomentum("origin")(frame), AngularMomentum("origin")(moved)
    p = LinearMomentum()(frame)
    torch.testing.assert_close(
        l1, l0 + torch.linalg.cross(shift.expand_as(p), p), atol=1e-14, rtol=1e-12
    )
    # and the two definitions agree when the total momentum vanishes
    still = frame.replace(vel=frame.vel - CentreOfMassVelocity()(frame)[frame.batch])
    torch.testing.assert_close(AngularMomentum("origin")(still), AngularMomentum("com")(still))


@pytest.mark.parametrize("det", [1.0, -1.0])
def test_energies_are_invariant(det):
    frame = random_frame()
    rot, shift = random_orthogonal(det), torch.randn(3, dtype=torch.float64)
    moved = transform(frame, rot, shift)
    for q in (KineticEnergy(), TotalEnergy(LennardJones(0.01, 1.0))):
        a, b = q(frame), q(moved)
        assert a.shape == (3, 1)
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)


def test_values_and_shapes():
    frame = Frame(
        pos=torch.tensor([[0.0, 0, 0], [1.0, 0, 0]], dtype=torch.float64),
        vel=torch.tensor([[0.0, 1, 0], [0.0, -1, 0]], dtype=torch.float64),
        z=torch.tensor([1, 1]),
        mass=torch.tensor([2.0, 2.0], dtype=torch.float64),
    )
    assert LinearMomentum()(frame).abs().max() == 0
    torch.testing.assert_close(
        AngularMomentum()(frame), torch.tensor([[0.0, 0.0, -2.0]], dtype=torch.float64)
    )
    torch.testing.assert_close(
        KineticEnergy(scale=1.0)(frame), torch.tensor([[2.0]], dtype=torch.float64)
    )
    both = CombinedQuantity([LinearMomentum(), KineticEnergy(1.0)], weights=[1.0, 0.5])
    assert both.dim == 4 and both(frame).shape == (1, 4)
    assert both(frame)[0, 3] == 1.0


def test_unequal_masses_use_the_centre_of_mass():
    """Masses 1 and 3 at x = 0 and 4: the centre of mass is at x = 3 (the centroid at 2)."""
    frame = Frame(
        pos=torch.tensor([[0.0, 0, 0], [4.0, 0, 0]], dtype=torch.float64),
        vel=torch.tensor([[0.0, 2, 0], [0.0, 0, 0]], dtype=torch.float64),
        z=torch.tensor([1, 1]),
        mass=torch.tensor([1.0, 3.0], dtype=torch.float64),
    )
    f64 = dict(dtype=torch.float64)
    torch.testing.assert_close(LinearMomentum()(frame), torch.tensor([[0.0, 2.0, 0.0]], **f64))
    torch.testing.assert_close(CentreOfMassVelocity()(frame), torch.tensor([[0.0, 0.5, 0]], **f64))
    # about the centre of mass: 1 * (-3, 0, 0) x (0, 2, 0) = (0, 0, -6); about the origin: 0
    torch.testing.assert_close(AngularMomentum()(frame), torch.tensor([[0.0, 0, -6.0]], **f64))
    torch.testing.assert_close(AngularMomentum("origin")(frame), torch.zeros(1, 3, **f64))
    torch.testing.assert_close(KineticEnergy(scale=1.0)(frame), torch.tensor([[2.0]], **f64))


def test_molecule_indices_with_a_gap_are_refused():
    with pytest.raises(ValueError, match=r"batch: expected molecule indices 0 \.\. B-1 without "
                       r"gaps, got no atoms for molecule\(s\) \[1\]"):  # fmt: skip
        Frame(pos=torch.zeros(4, 3), z=torch.ones(4, dtype=torch.long),
              batch=torch.tensor([0, 0, 2, 2]))  # fmt: skip


def test_accepts_pyg_data():
    from torch_geometric.data import Data

    frame = random_frame(1)
    data = Data(pos=frame.pos, vel=frame.vel, z=frame.z)
    torch.testing.assert_close(LinearMomentum()(data), LinearMomentum()(frame))


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="about"):
        AngularMomentum("centre")
    with pytest.raises(TypeError, match="energy_model"):
        TotalEnergy(3.0)
    frame = random_frame()
    with pytest.raises(ValueError, match=r"energy_model: expected a potential energy of shape"):
        TotalEnergy(lambda z, pos, batch: pos.sum(-1))(frame)
    with pytest.raises(ValueError, match="vel"):
        Frame(pos=torch.zeros(4, 3), vel=torch.zeros(3, 3), z=torch.ones(4, dtype=torch.long))
    with pytest.raises(ValueError, match="z"):
        Frame(pos=torch.zeros(4, 3), z=torch.ones(3, dtype=torch.long))
    with pytest.raises(ValueError, match="weights"):
        CombinedQuantity([LinearMomentum()], weights=[1.0, 2.0])


def test_total_energy_keeps_the_dtype_of_the_positions():
    """A potential computed in float64 is cast to the frame's float32, not the reverse."""
    frame = random_frame().to(torch.float32)
    total = TotalEnergy(lambda z, pos, batch: LennardJones(0.01, 1.0)(z, pos.double(), batch))
    out = total(frame)
    assert out.dtype == torch.float32 and out.shape == (3, 1)


def test_a_combination_reads_velocities_when_any_part_does():
    class PositionsOnly(ConservedQuantity):  # Σ |r|² per molecule
        def forward(self, frame):
            per_atom = frame.pos.pow(2).sum(-1)
            return segment_sum(per_atom, frame.batch_index(), frame.num_graphs)[:, None]

    both = CombinedQuantity([PositionsOnly(), LinearMomentum()])
    assert both.uses_velocities and not PositionsOnly().uses_velocities
    frame = random_frame()
    traj = Trajectory(torch.stack([frame.pos, frame.pos + 1.0]), None, frame.z, batch=frame.batch)
    with pytest.raises(ValueError, match="trajectory: CombinedQuantity needs velocities"):
        noether_loss(both, traj)
    assert noether_loss(PositionsOnly(), traj) > 0
