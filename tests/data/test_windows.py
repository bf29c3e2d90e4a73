"""Trajectory windows as PyG graphs, their batches as trajectories, pieces, generated sets."""

from __future__ import annotations

import pytest
import torch
from torch_geometric.data import Batch

from symgraph.data.frames import Trajectory
from symgraph.data.md_generated import generated_trajectories, mmff_atoms
from symgraph.data.trajectories import stack_trajectories
from symgraph.data.windows import TrajectoryWindows, cut_segments, window_trajectory
from symgraph.noether import AsePotential


def traj(frames: int, atoms: int, seed: int) -> Trajectory:
    gen = torch.Generator().manual_seed(seed)
    return Trajectory(
        torch.randn(frames, atoms, 3, generator=gen),
        torch.randn(frames, atoms, 3, generator=gen),
        torch.randint(1, 9, (atoms,), generator=gen),
        dt=2.0,
    )


def test_windows_round_trip_through_a_batch():
    a, b = traj(7, 3, 0), traj(9, 5, 1)
    train = TrajectoryWindows([a, b], length=2, ids=[10, 11])
    assert len(train) == (7 - 2) + (9 - 2)
    item = train[6]  # trajectory b, start 1
    assert item.future_pos.shape == (5, 2, 3) and item.trajectory.item() == 11
    assert item.start.item() == 1
    torch.testing.assert_close(window_trajectory(item).positions, b.positions[1:4])
    evaluation = TrajectoryWindows([a, b], length=3, step=3, tag=1)
    assert [evaluation[i].start.item() for i in range(len(evaluation))] == [0, 3, 0, 3]
    batch = Batch.from_data_list([evaluation[1], evaluation[2]])
    joined = window_trajectory(batch)
    assert joined.num_graphs == 2 and batch.tag.tolist() == [1, 1]
    expected = stack_trajectories([a[3:7], b[0:4]])
    torch.testing.assert_close(joined.positions, expected.positions)
    torch.testing.assert_close(joined.velocities, expected.velocities)
    first, second = joined.split()
    torch.testing.assert_close(second.positions, b.positions[0:4])
    assert torch.equal(first.z, a.z) and first.batch is None


def test_windows_and_pieces_check_their_input():
    with pytest.raises(ValueError, match="at least length \\+ 1 = 8 frames, got 7"):
        TrajectoryWindows([traj(7, 3, 0)], length=7)
    no_vel = Trajectory(torch.randn(4, 2, 3), None, torch.tensor([1, 1]))
    with pytest.raises(ValueError, match="expected velocities"):
        TrajectoryWindows([no_vel], length=1)
    pieces = cut_segments(traj(10, 2, 0), 3)
    assert [len(p) for p in pieces] == [3, 3, 3]
    with pytest.raises(ValueError, match="at most 2 frames per piece"):
        cut_segments(traj(2, 2, 0), 3)


def test_generated_set_is_cached_and_its_force_field_rebuilt(tmp_path):
    made = generated_trajectories(["H2O"], 2, 4, seed=1, cache_dir=tmp_path)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["H2O-4f-0.5fs-x4-300K-seed10000.pt", "H2O-4f-0.5fs-x4-300K-seed10001.pt"]
    read = generated_trajectories(["H2O"], 2, 4, seed=1, cache_dir=tmp_path)
    for new, old in zip(read, made):
        assert torch.equal(new.positions, old.positions) and new.info == old.info
    assert read[0].info["molecule"] == "H2O" and read[0].dt == 2.0
    potential = AsePotential(mmff_atoms(read[1]))
    energy = potential(read[1].z, read[1].positions[3])
    torch.testing.assert_close(energy, read[1].energies[3:4])


def test_generated_set_reads_its_cache_and_checks_counts(tmp_path, monkeypatch):
    """Each trajectory has ``frames`` frames and its own seed in ``info``; a second call reads
    the files without integrating; bad counts and a multi-molecule trajectory are refused."""
    import symgraph.data.md_simulation as md_simulation

    made = generated_trajectories(["H2O"], 2, 3, seed=2, cache_dir=tmp_path)
    assert [t.positions.shape[0] for t in made] == [3, 3]
    assert [t.info["seed"] for t in made] == [20000, 20001]

    def no_integration(*args, **kwargs):
        raise AssertionError("integrated: the cache was not read or a bad count was accepted")

    monkeypatch.setattr(md_simulation, "generate_md_trajectory", no_integration)
    read = generated_trajectories(["H2O"], 2, 3, seed=2, cache_dir=tmp_path)
    assert torch.equal(read[1].positions, made[1].positions)
    atoms = mmff_atoms(read[1], frame=2)
    assert torch.equal(torch.as_tensor(atoms.positions), read[1].positions[2].double())
    with pytest.raises(ValueError, match="one molecule"):
        mmff_atoms(stack_trajectories(read))
    with pytest.raises(ValueError, match="per_molecule"):
        generated_trajectories(["H2O"], 0, 3)
    with pytest.raises(ValueError, match="frames"):
        generated_trajectories(["H2O"], 1, 1)
    with pytest.raises(ValueError, match="per_molecule: expected a positive int, got True"):
        generated_trajectories(["H2O"], True, 3)
    with pytest.raises(ValueError, match="frames: expected an int >= 2, got True"):
        generated_trajectories(["H2O"], 1, True)
    with pytest.raises(ValueError, match="molecules"):
        generated_trajectories([], 1, 3)


def test_split_ids_follow_the_order_of_first_appearance():
    """``split_ids`` lists trajectory ids as the chosen windows first meet them, not sorted."""
    windows = TrajectoryWindows([traj(4, 2, 0), traj(5, 2, 1)], length=2, ids=[7, 3])
    assert [windows.index[k][0] for k in range(len(windows))] == [0, 0, 1, 1, 1]
    assert windows.split_ids() == [7, 3]
    assert windows.split_ids([3, 0, 4, 1]) == [3, 7]


def test_pieces_need_at_least_two_frames():
    """A piece of one frame holds no transition: ``frames`` must be at least 2."""
    with pytest.raises(ValueError, match="frames: expected an int >= 2, got 1"):
        cut_segments(traj(6, 2, 0), 1)
    assert [len(p) for p in cut_segments(traj(5, 2, 0), 2)] == [2, 2]


def test_windows_refuse_trajectories_of_different_time_steps():
    """Items carry no time step: 0.5 fs MD17 frames beside 2 fs generated ones would train
    one "next frame" on two different steps."""
    a, b = traj(7, 3, 0), traj(9, 5, 1)
    fine = TrajectoryWindows([a, b[::1]], length=2)
    assert fine.dt == 2.0
    with pytest.raises(ValueError, match=r"trajectories\[1\]: expected dt=2.0 fs .* got dt=4.0"):
        TrajectoryWindows([a, b[::2]], length=2)
    thirds = [Trajectory(a.positions, a.velocities, a.z, dt=dt) for dt in (0.1 * 3, 0.3)]
    assert TrajectoryWindows(thirds, length=1).dt == pytest.approx(0.3)  # rounding is fine


def test_generated_trajectory_cache_names_tell_every_time_step_and_temperature_apart():
    """Cached files are named by the exact time step and temperature: values that agree to
    six digits no longer share (and silently reuse) one file; round values keep the names
    older caches have."""
    from symgraph.data.md_generated import cache_name

    assert cache_name("CH3OH", 101, 0.5, 4, 300.0, 7) == "CH3OH-101f-0.5fs-x4-300K-seed7.pt"
    assert cache_name("H2O", 3, 1, 1, 1e-05, 0) == "H2O-3f-1fs-x1-1e-05K-seed0.pt"
    assert cache_name("H2O", 3, 0.5, 1, 300, 0) != cache_name("H2O", 3, 0.5000001, 1, 300, 0)
    assert cache_name("H2O", 3, 0.5, 1, 300, 0) != cache_name("H2O", 3, 0.5, 1, 300.0000001, 0)
