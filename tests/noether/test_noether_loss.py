"""Trajectory container validation and the Noether loss."""

from __future__ import annotations

import pytest
import torch

from symgraph.noether import (
    AngularMomentum,
    CombinedQuantity,
    Frame,
    KineticEnergy,
    LinearMomentum,
    Trajectory,
    noether_loss,
    quantity_series,
)


def frames(t: int = 4, n: int = 3) -> list[Frame]:
    z = torch.tensor([6, 1, 8])[:n]
    return [
        Frame(torch.randn(n, 3, dtype=torch.float64), torch.randn(n, 3, dtype=torch.float64), z)
        for _ in range(t)
    ]


def test_from_frames_stacks_and_flattens():
    traj = Trajectory.from_frames(frames(), dt=0.5)
    assert traj.positions.shape == (4, 3, 3) and len(traj) == 4 and traj.num_graphs == 1
    flat = traj.flatten()
    assert flat.num_graphs == 4 and flat.batch.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert traj[1:3].positions.shape == (2, 3, 3) and traj[::2].dt == 1.0
    series = quantity_series(LinearMomentum(), traj)
    assert series.shape == (4, 1, 3)


def test_noether_loss_values():
    traj = Trajectory.from_frames(frames())
    ke = KineticEnergy(1.0)
    values = quantity_series(ke, traj)[:, 0, 0]
    want = ((values[1:] - values[0]) ** 2).sum()
    torch.testing.assert_close(noether_loss(ke, traj), want)
    want_prev = ((values[1:] - values[:-1]) ** 2).mean()
    torch.testing.assert_close(
        noether_loss(ke, traj, reference="previous", reduction="mean"), want_prev
    )
    # a sequence of frames works the same
    torch.testing.assert_close(noether_loss(ke, list(frames_of(traj))), want)


def frames_of(traj: Trajectory):
    return [traj.frame(t) for t in range(len(traj))]


def test_noether_loss_zero_when_conserved_and_batched():
    base = frames(1)[0]
    traj = Trajectory.from_frames([base] * 5)
    assert noether_loss(LinearMomentum(), traj) == 0
    # a batch of two molecules: the loss is the mean over molecules
    two = Frame.cat([base, base])
    shifted = two.replace(vel=two.vel + torch.cat([torch.zeros(3, 3), torch.ones(3, 3)]).double())
    traj2 = Trajectory.from_frames([two, shifted])
    per = quantity_series(LinearMomentum(), traj2)  # [2, 2, 3]
    assert per.shape == (2, 2, 3)
    want = ((per[1] - per[0]) ** 2).sum(-1).mean()
    torch.testing.assert_close(noether_loss(LinearMomentum(), traj2), want)


def test_tensor_trajectories():
    states = torch.randn(6, 8, 2)  # T=6 frames of 8 pendulums (q, p)
    energy = lambda x: x[..., 1] ** 2 - 3 * torch.cos(x[..., 0])  # noqa: E731
    loss = noether_loss(energy, states)
    h = energy(states)
    torch.testing.assert_close(loss, ((h[1:] - h[:1]) ** 2).sum(0).mean())
    vec = lambda x: torch.stack([x[..., 0], x[..., 1]], -1)  # noqa: E731
    assert quantity_series(vec, states).shape == (6, 8, 2)


def test_bad_trajectories_raise():
    fs = frames()
    with pytest.raises(ValueError, match=r"frames\[2\]: expected 3 atoms"):
        Trajectory.from_frames(fs[:2] + frames(1, n=2))
    other = fs[1].replace(z=torch.tensor([6, 1, 7]))
    with pytest.raises(ValueError, match=r"frames\[1\]: atomic numbers z differ"):
        Trajectory.from_frames([fs[0], other])
    with pytest.raises(ValueError, match=r"positions: expected shape \[T, N, 3\]"):
        Trajectory(torch.zeros(4, 3), z=torch.ones(3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"z: expected atomic numbers of shape \[3\]"):
        Trajectory(torch.zeros(4, 3, 3), z=torch.ones(2, dtype=torch.long))
    with pytest.raises(ValueError, match="velocities"):
        Trajectory(torch.zeros(4, 3, 3), torch.zeros(3, 3, 3), z=torch.ones(3, dtype=torch.long))
    traj = Trajectory.from_frames(fs)
    with pytest.raises(ValueError, match="g: expected a scalar or a vector per frame"):
        noether_loss(lambda f: f.pos, traj)  # per atom, not per frame
    with pytest.raises(ValueError, match="g: expected a scalar or a vector per frame"):
        noether_loss(lambda x: x[..., None, None] * torch.ones(2, 2), torch.randn(5, 2))
    with pytest.raises(TypeError, match="g: expected a tensor"):
        noether_loss(lambda f: 1.0, traj)
    with pytest.raises(ValueError, match="reference"):
        noether_loss(LinearMomentum(), traj, reference="first")
    with pytest.raises(TypeError, match="trajectory"):
        noether_loss(LinearMomentum(), 3)


def test_frames_without_velocities_are_refused_by_quantities_that_read_them():
    """PyG ``Data`` frames without ``vel`` (e.g. MD17 items) are not molecules at rest: the
    trajectory has no velocities, and a velocity-based loss says so instead of being 0."""
    from torch_geometric.data import Data

    z = torch.tensor([6, 1, 8])
    data = [Data(pos=torch.randn(3, 3, dtype=torch.float64), z=z) for _ in range(4)]
    traj = Trajectory.from_frames(data)
    assert traj.velocities is None
    for quantity in (
        KineticEnergy(),
        LinearMomentum(),
        AngularMomentum(),
        CombinedQuantity([LinearMomentum(), KineticEnergy()]),
    ):
        with pytest.raises(ValueError, match="trajectory: .* needs velocities"):
            noether_loss(quantity, data)

    def positions_only(frame):  # Σ |r|² per molecule: no velocities needed
        per_atom = frame.pos.pow(2).sum(-1)
        return per_atom.new_zeros(frame.num_graphs).index_add(0, frame.batch_index(), per_atom)

    assert noether_loss(positions_only, data) > 0
    moving = [Data(pos=d.pos, z=z, vel=torch.ones(3, 3, dtype=torch.float64)) for d in data]
    torch.testing.assert_close(
        Trajectory.from_frames(moving).velocities, torch.ones(4, 3, 3, dtype=torch.float64)
    )
    with pytest.raises(ValueError, match=r"frames\[2\]: expected velocities as in frames\[0\]"):
        Trajectory.from_frames(moving[:2] + data[2:])
    with pytest.raises(ValueError, match=r"frames\[1\]: carries velocities, but frames\[0\]"):
        Trajectory.from_frames(data[:1] + moving[1:])


def test_combined_quantity_weights_must_be_positive():
    with pytest.raises(ValueError, match=r"weights\[0\]: expected a positive finite number"):
        CombinedQuantity([LinearMomentum(), KineticEnergy()], [0.0, 1.0])
    with pytest.raises(ValueError, match=r"weights\[1\]: expected a positive finite number"):
        CombinedQuantity([LinearMomentum(), KineticEnergy()], [1.0, float("nan")])


def test_angular_momentum_refuses_periodic_trajectories():
    traj = Trajectory.from_frames(frames(), dt=0.5)
    periodic = Trajectory(traj.positions, traj.velocities, traj.z, dt=0.5,
                          cells=torch.eye(3).expand(len(traj), 3, 3) * 10.0)  # fmt: skip
    for g in (AngularMomentum(), CombinedQuantity([LinearMomentum(), AngularMomentum()])):
        with pytest.raises(ValueError, match="not conserved .* under periodic boundaries"):
            noether_loss(g, periodic)
    assert noether_loss(LinearMomentum(), periodic) >= 0  # momentum is, and is accepted


def test_particles_with_masses_need_no_atomic_numbers():
    """Generic particles (springs, the Noether-networks setting) give ``mass`` instead of
    ``z``: momentum is ``Σ m v``, and a change of momentum is seen; with neither, refused."""
    from torch_geometric.data import Data

    gen = torch.Generator().manual_seed(0)
    pos, vel = torch.randn(2, 4, 3, generator=gen, dtype=torch.float64)
    mass = 1 + torch.rand(4, generator=gen, dtype=torch.float64)
    states = [Data(pos=pos + t * vel, vel=vel, mass=mass) for t in range(3)]
    assert float(noether_loss(LinearMomentum(), states)) == 0.0
    states[2].vel = 2 * vel
    expected = ((mass[:, None] * vel).sum(0) ** 2).sum()  # |P(x_2) − P(x_0)|², P = Σ m v
    torch.testing.assert_close(noether_loss(LinearMomentum(), states), expected)
    traj = Trajectory(torch.stack([s.pos for s in states]), masses=mass)
    assert traj.z.tolist() == [0, 0, 0, 0] and torch.equal(traj.masses, mass)
    with pytest.raises(ValueError, match=r"z: expected atomic numbers \[N\].*or masses"):
        Frame(pos)


def test_atomic_numbers_and_masses_must_be_physical():
    """z = 0 has no standard mass; a zero mass is refused like a negative one."""
    from symgraph.data.frames import default_masses

    with pytest.raises(ValueError, match=r"z: expected atomic numbers in \[1,"):
        default_masses(torch.tensor([0, 1]))
    pos = torch.zeros(2, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="positive masses"):
        Frame(pos, z=torch.tensor([1, 1]), mass=torch.tensor([1.0, 0.0], dtype=torch.float64))


def test_cat_of_batched_frames_keeps_every_molecule():
    """Two frames of two molecules each make a batch of four molecules."""
    two = Frame.cat(frames(2))
    four = Frame.cat([two, two])
    assert four.num_graphs == 4 and four.batch.tolist() == [0] * 3 + [1] * 3 + [2] * 3 + [3] * 3


def test_per_molecule_energies_of_a_batched_trajectory():
    """With B = 2 molecules, energies are [T, 2]: [T] is refused, and split() gives each
    molecule its own column."""
    traj = Trajectory.from_frames([Frame.cat(frames(2)) for _ in range(4)])
    with pytest.raises(ValueError, match=r"energies: expected shape \[4, 2\]"):
        Trajectory(traj.positions, traj.velocities, traj.z, batch=traj.batch,
                   energies=torch.zeros(4, dtype=torch.float64))  # fmt: skip
    energies = torch.arange(8.0, dtype=torch.float64).reshape(4, 2)
    both = Trajectory(traj.positions, traj.velocities, traj.z, batch=traj.batch, energies=energies)
    first, second = both.split()
    torch.testing.assert_close(first.energies, energies[:, 0])
    torch.testing.assert_close(second.energies, energies[:, 1])


def test_from_frames_refuses_different_masses():
    """Frames of one trajectory share their masses (e.g. no isotope swap mid-way)."""
    base = frames(1)[0]
    heavy = base.replace(mass=base.mass * torch.tensor([1.0, 2.0, 1.0], dtype=torch.float64))
    with pytest.raises(ValueError, match=r"frames\[1\]: masses differ"):
        Trajectory.from_frames([base, heavy])


def test_pyg_frames_may_name_their_masses_masses():
    """A PyG ``Data`` with ``masses`` (not ``mass``) keeps them instead of standard masses."""
    from torch_geometric.data import Data

    from symgraph.data.frames import as_frame

    masses = torch.tensor([13.0, 2.0, 18.0], dtype=torch.float64)  # 13C, D, 18O
    data = Data(pos=torch.zeros(3, 3, dtype=torch.float64), z=torch.tensor([6, 1, 8]))
    data.masses = masses
    torch.testing.assert_close(as_frame(data).mass, masses)


def test_zero_time_step_is_refused():
    """``dt`` is the positive time between frames (``None`` for unordered snapshots)."""
    with pytest.raises(ValueError, match="dt: expected a positive time step"):
        Trajectory(torch.zeros(2, 1, 3), z=torch.tensor([1]), dt=0.0)


def test_a_single_frame_has_zero_loss_with_either_reduction():
    from symgraph.noether import noether_losses

    traj = Trajectory.from_frames([Frame.cat(frames(2))])
    for reduction in ("sum", "mean"):
        per = noether_losses(KineticEnergy(1.0), traj, reduction=reduction)
        torch.testing.assert_close(per, torch.zeros(2, dtype=torch.float64))
        assert noether_loss(KineticEnergy(1.0), traj, reduction=reduction) == 0


def test_tensor_trajectories_are_checked():
    states = torch.randn(5, 4, 2)
    with pytest.raises(TypeError, match="g: expected floating-point values, got dtype torch.int64"):
        noether_loss(lambda x: (x > 0).long().sum(-1), states)
    with pytest.raises(
        ValueError, match=r"trajectory: expected a tensor of states \[T, \.\.\., d\]"
    ):
        noether_loss(lambda x: x, torch.randn(5))
    with pytest.raises(ValueError, match="trajectory: expected states of one shape"):
        noether_loss(lambda x: x.sum(-1), [torch.randn(4, 2), torch.randn(3, 2)])
    stacked = noether_loss(lambda x: x.sum(-1), list(states))  # a list of states is stacked
    torch.testing.assert_close(stacked, noether_loss(lambda x: x.sum(-1), states))
    with pytest.raises(ValueError, match="reduction: expected 'sum' or 'mean', got 'avg'"):
        noether_loss(lambda x: x.sum(-1), states, reduction="avg")


def test_trajectories_and_frames_print_their_sizes_not_their_arrays():
    traj = Trajectory(
        torch.zeros(500, 3, 3, dtype=torch.float64),
        z=torch.tensor([8, 1, 1]),
        energies=torch.zeros(500, dtype=torch.float64),
        dt=0.5,
        info={"source": "test"},
    )
    assert repr(traj) == (
        "Trajectory(frames=500, atoms=3, molecules=1, dt=0.5 fs, dtype=torch.float64, "
        "with=['energies'], energy_unit='eV', info=['source'])"
    )
    assert repr(traj.frame(0)) == "Frame(atoms=3, molecules=1, dtype=torch.float64, device=cpu)"
