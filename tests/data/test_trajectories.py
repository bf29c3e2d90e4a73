"""Trajectory loaders on the real samples in ../shared/data/md, and their errors."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from symgraph.data.trajectories import (
    KCAL_PER_MOL_IN_EV,
    MD17,
    finite_difference_velocities,
    load_deepmd,
    load_md17,
    load_padded_molecules,
    stack_trajectories,
)
from symgraph.noether import LinearMomentum, Trajectory, quantity_series


def test_md17_dft_trajectory(shared_data):
    path = shared_data / "md" / "md17" / "md17_ethanol_dft_first2000.npz"
    traj = load_md17(path)
    raw = np.load(path)
    assert traj.positions.shape == (2000, 9, 3) and traj.z.tolist() == [6, 6, 8, 1, 1, 1, 1, 1, 1]
    assert traj.dt == 0.5 and traj.energy_unit == "eV" and traj.velocities is None
    torch.testing.assert_close(
        traj.energies[:3], torch.as_tensor(raw["E"][:3, 0]) * KCAL_PER_MOL_IN_EV
    )
    torch.testing.assert_close(  # forces: kcal/mol/Å -> eV/Å, the same factor
        traj.forces[:3], torch.as_tensor(raw["F"][:3]).to(traj.forces) * KCAL_PER_MOL_IN_EV
    )
    native = load_md17(path, energy_unit="native", max_frames=10, dtype=torch.float32)
    assert len(native) == 10 and native.energy_unit == "kcal/mol"
    assert native.positions.dtype == torch.float32
    # consecutive frames: finite-difference velocities are physical (~0.01 Å/fs at 500 K)
    vel = finite_difference_velocities(traj.positions[:200], traj.dt)
    speed = vel.norm(dim=-1).mean()
    assert 0.002 < float(speed) < 0.05
    with_v = Trajectory(traj.positions[:200], vel, traj.z, dt=traj.dt)
    p = quantity_series(LinearMomentum(), with_v)
    assert p.shape == (200, 1, 3)


def test_finite_difference_velocities_are_the_verlet_velocities():
    """Velocity Verlet's positions: the central difference is the stored velocity (to
    rounding), so a wrong divisor or a half-step shift cannot pass."""
    from symgraph.data.md_simulation import generate_md_trajectory

    traj = generate_md_trajectory("H2O", steps=40, dt_fs=0.5, seed=2, save_every=1)
    estimate = finite_difference_velocities(traj.positions, traj.dt)
    torch.testing.assert_close(estimate[1:-1], traj.velocities[1:-1], rtol=1e-8, atol=1e-10)
    steps = torch.arange(4.0)[:, None, None].expand(4, 1, 3).to(torch.int64) * 3  # 3 Å/step
    torch.testing.assert_close(finite_difference_velocities(steps, 2.0),
                               torch.full((4, 1, 3), 1.5))  # fmt: skip
    with pytest.raises(TypeError, match="positions: expected a tensor"):
        finite_difference_velocities(np.zeros((3, 1, 3)), 1.0)


def test_md17_root_lookup_and_ccsd(shared_data):
    root = shared_data / "md" / "md17"
    ccsd = load_md17(root / "ethanol_ccsd_t-train.npz")
    assert len(ccsd) == 1000 and ccsd.dt is None and "CCSD(T)" in ccsd.info["theory"]
    found = load_md17(root, "ethanol CCSD(T)", max_frames=5)
    assert len(found) == 5
    data = MD17(root, "ethanol CCSD(T)", split="train")
    assert len(data) == 1000 and data[0].pos.shape == (9, 3) and data[0].energy.shape == (1,)
    assert data.url == "http://quantum-machine.org/gdml/data/npz/ethanol_ccsd_t.zip"
    with pytest.raises(FileNotFoundError, match="download=True"):
        MD17(root, "aspirin")
    with pytest.raises(FileNotFoundError, match="download"):
        load_md17(root, "aspirin")
    with pytest.raises(ValueError, match="molecule"):
        MD17(root, "caffeine")
    with pytest.raises(ValueError, match="pass molecule="):
        load_md17(root)


def test_qm7x_files(shared_data):
    qm7x = shared_data / "md" / "qm7x"
    conf = load_md17(qm7x / "qm7x_226_100conformers.npz")
    assert conf.positions.shape == (100, 18, 3) and conf.energy_unit == "eV"
    assert sorted(set(conf.z.tolist())) == [1, 6]
    with pytest.raises(ValueError, match="load_padded_molecules"):
        load_md17(qm7x / "qm7x_250_small.npz")
    mols = load_padded_molecules(qm7x / "qm7x_250_small.npz")
    assert sum(len(m) for m in mols) == 2500
    assert all(bool((m.z > 0).all()) for m in mols)
    assert 4 <= min(m.num_atoms for m in mols) and max(m.num_atoms for m in mols) <= 23


def test_deepmd_water(shared_data):
    water = shared_data / "md" / "water_dft_pbc"
    one = load_deepmd(water / "data_1")
    assert one.positions.shape == (160, 192, 3) and one.cells.shape == (160, 3, 3)
    assert (one.z == 8).sum() == 64 and (one.z == 1).sum() == 128
    everything = load_md17(water)
    assert len(everything) == 400 and everything.energies.shape == (400,)
    with pytest.raises(ValueError, match="energy_unit: expected 'eV' or 'native'"):
        load_md17(water, energy_unit="kcal/mol")  # was ignored for DeePMD folders
    md17 = shared_data / "md" / "md17" / "md17_ethanol_dft_first2000.npz"
    for bad in (0, -1):
        with pytest.raises(ValueError, match="max_frames: expected None or a positive int"):
            load_md17(md17, max_frames=bad)
    torch.testing.assert_close(
        everything.cells[0].diagonal(),
        torch.full((3,), 12.444661, dtype=torch.float64),
        rtol=1e-6,
        atol=1e-5,
    )


def test_unknown_layouts_and_stacking(tmp_path):
    bad = tmp_path / "weird.npz"
    np.savez(bad, positions=np.zeros((2, 3, 3)))
    with pytest.raises(ValueError, match="unknown npz layout"):
        load_md17(bad)
    with pytest.raises(ValueError, match="expected an .npz file"):
        (tmp_path / "x.txt").write_text("1")
        load_md17(tmp_path / "x.txt")
    with pytest.raises(FileNotFoundError):
        load_md17(tmp_path / "missing.npz")
    rmd17 = tmp_path / "rmd17_toy.npz"
    np.savez(
        rmd17,
        coords=np.zeros((3, 2, 3)),
        energies=np.ones(3),
        forces=np.zeros((3, 2, 3)),
        nuclear_charges=np.array([1, 1]),
    )
    toy = load_md17(rmd17)
    torch.testing.assert_close(
        toy.energies, torch.full((3,), KCAL_PER_MOL_IN_EV, dtype=torch.float64)
    )
    both = stack_trajectories([toy, toy])
    assert both.num_graphs == 2 and both.positions.shape == (3, 4, 3)
    with pytest.raises(ValueError, match="dt"):
        finite_difference_velocities(toy.positions, 0.0)


def _toy(molecules: int = 1, dt: float | None = 0.5, seed: int = 0, **extra) -> Trajectory:
    gen = torch.Generator().manual_seed(seed)
    n = 3 * molecules
    return Trajectory(
        torch.randn(4, n, 3, generator=gen, dtype=torch.float64),
        torch.randn(4, n, 3, generator=gen, dtype=torch.float64),
        torch.tensor([6, 1, 8] * molecules),
        batch=torch.arange(molecules).repeat_interleave(3) if molecules > 1 else None,
        dt=dt,
        **extra,
    )


def test_stack_trajectories_keeps_molecules_energies_and_forces():
    one = _toy(energies=torch.arange(4.0, dtype=torch.float64))
    two = _toy(2, seed=1, energies=torch.ones(4, 2, dtype=torch.float64))
    for both in (one, two):
        both.forces = torch.zeros_like(both.positions)
    packed = stack_trajectories([one, two])
    assert packed.num_graphs == 3 and packed.batch.tolist() == [0] * 3 + [1] * 3 + [2] * 3
    torch.testing.assert_close(packed.energies[:, 0], one.energies)
    torch.testing.assert_close(packed.energies[:, 1:], two.energies)
    assert packed.forces.shape == (4, 9, 3) and packed.dt == 0.5
    torch.testing.assert_close(packed.velocities[:, 3:], two.velocities)
    # momentum per molecule: the packed batch's rows are the parts' rows
    torch.testing.assert_close(
        quantity_series(LinearMomentum(), packed)[:, 1:], quantity_series(LinearMomentum(), two)
    )


def test_stack_trajectories_refuses_what_it_cannot_pack():
    with pytest.raises(
        ValueError, match=r"trajectories\[1\]: expected dt=0.5 as trajectories\[0\], got 2.0"
    ):
        stack_trajectories([_toy(), _toy(dt=2.0)])
    with pytest.raises(ValueError, match=r"trajectories\[1\]: expected energies as in the others"):
        stack_trajectories([_toy(energies=torch.zeros(4, dtype=torch.float64)), _toy()])
    cells = torch.eye(3, dtype=torch.float64).expand(4, 3, 3)
    with pytest.raises(ValueError, match=r"trajectories\[0\]: expected no periodic cells"):
        stack_trajectories([_toy(cells=cells)])
    with pytest.raises(TypeError, match=r"trajectories\[0\]: expected a Trajectory"):
        stack_trajectories([_toy().positions])


def test_kcal_per_mol_constant():
    """1 kcal/mol = 4184 J/mol / (N_A e) = 0.0433641 eV (exact SI values of N_A and e)."""
    assert KCAL_PER_MOL_IN_EV == pytest.approx(4184 / (6.02214076e23 * 1.602176634e-19), rel=1e-6)


def test_deepmd_sets_are_read_in_order(shared_data):
    """Frames of set.000 come before those of set.001."""
    system = shared_data / "md" / "water_dft_pbc" / "data_1"
    first = np.load(system / "set.000" / "coord.npy").astype(np.float64)
    last = np.load(system / "set.001" / "coord.npy").astype(np.float64)
    traj = load_deepmd(system)
    assert len(traj) == len(first) + len(last)
    torch.testing.assert_close(traj.positions[0], torch.as_tensor(first[0]).reshape(-1, 3))
    torch.testing.assert_close(traj.positions[-1], torch.as_tensor(last[-1]).reshape(-1, 3))


def test_md17_split_picks_the_test_file(shared_data, tmp_path):
    """``split="test"`` reads ``<name>-test.npz`` of a CCSD(T) set, not its train file."""
    source = shared_data / "md" / "md17" / "ethanol_ccsd_t-train.npz"
    (tmp_path / source.name).symlink_to(source)
    with np.load(source) as raw:
        np.savez(tmp_path / "ethanol_ccsd_t-test.npz", **{k: raw[k][:5] for k in "REF"}, z=raw["z"])
    test = MD17(tmp_path, "ethanol CCSD(T)", split="test")
    assert len(test) == 5 and test.path.name == "ethanol_ccsd_t-test.npz"
    assert len(MD17(tmp_path, "ethanol CCSD(T)", split="train")) == 1000


def test_finite_difference_velocities_of_two_frames():
    """Two frames are enough: both ends use the one-sided difference."""
    positions = torch.tensor([[[0.0, 0.0, 0.0]], [[3.0, -1.0, 0.5]]], dtype=torch.float64)
    velocities = finite_difference_velocities(positions, 2.0)
    torch.testing.assert_close(velocities, torch.tensor([[[1.5, -0.5, 0.25]]] * 2).double())


def test_energy_drift_report():
    """Drift is the final deviation from E(0), the fluctuation the largest one, both and the
    standard deviation divided by the number of atoms."""
    from symgraph.data.md_simulation import energy_drift

    energies = torch.tensor([0.0, 3.0, 1.0], dtype=torch.float64)
    traj = Trajectory(
        torch.zeros(3, 2, 3, dtype=torch.float64),
        torch.zeros(3, 2, 3, dtype=torch.float64),  # at rest: the total energy is E
        torch.tensor([1, 1]),
        energies=energies,
    )
    report = energy_drift(traj)
    assert report["drift_per_atom"] == pytest.approx(1.0 / 2)
    assert report["max_fluctuation_per_atom"] == pytest.approx(3.0 / 2)
    assert report["std_per_atom"] == pytest.approx(float(energies.std()) / 2)


def test_stack_trajectories_offsets_by_molecules_not_trajectories():
    """A two-molecule trajectory first: the next one's molecule gets index 2, not 1."""
    packed = stack_trajectories([_toy(2), _toy(1, seed=1)])
    assert packed.num_graphs == 3 and packed.batch.tolist() == [0] * 3 + [1] * 3 + [2] * 3


def test_zero_padded_atoms_are_refused_even_when_every_frame_agrees(tmp_path):
    """``z [T, N]`` with the same zero padding in every frame is not one molecule."""
    padded = tmp_path / "padded.npz"
    z = np.array([[6, 1, 0], [6, 1, 0]])
    np.savez(padded, R=np.zeros((2, 3, 3)), E=np.zeros((2, 1)), F=np.zeros((2, 3, 3)), z=z)
    with pytest.raises(ValueError, match="load_padded_molecules"):
        load_md17(padded)


def test_given_dt_overrides_the_md17_default(shared_data):
    """The 0.5 fs of the original MD17 files is a default: an explicit ``dt`` wins; given
    for a DeePMD system (snapshots by default) it declares the frames consecutive."""
    path = shared_data / "md" / "md17" / "md17_ethanol_dft_first2000.npz"
    assert load_md17(path, dt=2.0, max_frames=3).dt == 2.0
    water = shared_data / "md" / "water_dft_pbc" / "data_1"
    assert load_md17(water, max_frames=3).dt is None
    assert load_md17(water, dt=1.0, max_frames=3).dt == 1.0
    for bad in (-1.0, 0.0):  # a zero dt is refused, not taken for "no dt"
        with pytest.raises(ValueError, match=f"dt: expected a positive time step in fs, got {bad}"):
            load_md17(water, dt=bad, max_frames=3)


def test_generated_trajectory_records_the_steps_it_integrated():
    """``steps`` not a multiple of ``save_every``: the steps integrated are recorded."""
    from symgraph.data.md_simulation import generate_md_trajectory

    traj = generate_md_trajectory("H2O", steps=10, dt_fs=0.5, seed=0, save_every=4)
    assert len(traj) == 3 and traj.dt == 2.0
    assert traj.info["steps"] == 8


def test_slices_keep_frames_in_time_order():
    traj = Trajectory(torch.randn(6, 2, 3), torch.randn(6, 2, 3), torch.tensor([1, 8]), dt=0.5)
    every_other = traj[1::2]
    assert len(every_other) == 3 and every_other.dt == 1.0
    with pytest.raises(ValueError, match="index: expected a slice with a positive step"):
        traj[::-1]


def test_a_lone_atom_is_refused_before_the_force_field(capfd):
    """MD needs at least two atoms; rdkit would abort with a C++ trace on one."""
    from ase import Atoms

    from symgraph.data.md_simulation import generate_md_trajectory

    with pytest.raises(
        ValueError, match=r"atoms_or_name: expected a molecule of at least 2 atoms, got H \(1 atom"
    ):
        generate_md_trajectory(Atoms("H", positions=[[0.0, 0.0, 0.0]]), steps=4)
    assert "Violation" not in capfd.readouterr().err


def test_corrupt_npz_files_are_refused_naming_the_file(shared_data, tmp_path):
    """A NaN coordinate or energy, frames that do not line up, an empty or truncated file:
    ``ValueError`` naming the file (a NaN used to load silently)."""
    source = shared_data / "md" / "md17" / "md17_ethanol_dft_first2000.npz"
    with np.load(source) as data:
        arrays = {k: data[k][:20] if data[k].ndim > 1 else data[k] for k in ("z", "R", "E", "F")}
    positions = arrays["R"].copy()
    positions[5, 2, 1] = np.nan
    nan = tmp_path / "md17_nan.npz"
    np.savez(nan, **{**arrays, "R": positions})
    with pytest.raises(ValueError, match=r"md17_nan\.npz: expected finite positions.*first \[5\]"):
        load_md17(nan)
    assert len(load_md17(nan, max_frames=5)) == 5  # the frames before it are fine
    short = tmp_path / "md17_short.npz"
    np.savez(short, **{**arrays, "E": arrays["E"][:19]})
    with pytest.raises(ValueError, match=r"md17_short\.npz: energies: expected shape \[20\]"):
        load_md17(short)
    raw = source.read_bytes()
    for name, content in (("md17_empty.npz", b""), ("md17_cut.npz", raw[: len(raw) // 2])):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ValueError, match=rf"{name}: could not be read.*truncated"):
            load_md17(tmp_path / name)


def test_corrupt_deepmd_sets_are_refused_naming_the_file(shared_data, tmp_path):
    system = tmp_path / "water"
    shutil.copytree(shared_data / "md" / "water_dft_pbc" / "data_0", system)
    coord = system / "set.000" / "coord.npy"
    good = np.load(coord)
    bad = good.copy()
    bad[3, 10] = np.nan
    np.save(coord, bad)
    with pytest.raises(ValueError, match=r"coord\.npy: expected finite values.*first \[3\]"):
        load_deepmd(system)
    np.save(coord, good)
    np.save(system / "set.000" / "energy.npy", np.zeros(len(good) - 1))
    with pytest.raises(ValueError, match=r"energy\.npy: expected 80 frames \(as coord\.npy\)"):
        load_deepmd(system)
    (system / "type.raw").write_text("0 1 2\n")
    with pytest.raises(ValueError, match=r"type\.raw: expected types in \[0, 2\)"):
        load_deepmd(system)


def _deepmd_molecule(folder, nopbc: bool) -> None:
    """A 3-atom water DeePMD system of 4 frames, as dpdata writes a gas-phase one (a
    ``nopbc`` marker file and a ``box.npy`` of zeros)."""
    (folder / "set.000").mkdir(parents=True)
    np.savetxt(folder / "type.raw", [0, 1, 1], fmt="%d")
    (folder / "type_map.raw").write_text("O\nH\n")
    np.save(folder / "set.000" / "coord.npy", np.random.default_rng(0).normal(size=(4, 9)))
    box = np.zeros((4, 9)) if nopbc else np.tile(9.0 * np.eye(3).ravel(), (4, 1))
    np.save(folder / "set.000" / "box.npy", box)
    np.save(folder / "set.000" / "energy.npy", np.zeros(4))
    if nopbc:
        (folder / "nopbc").write_text("")


def test_deepmd_nopbc_systems_have_no_cells(tmp_path):
    """DeePMD-kit's ``nopbc`` marks a non-periodic system: its zero box is no cell, so
    angular momentum (refused under periodic cells) applies to it."""
    from symgraph.noether import AngularMomentum

    _deepmd_molecule(tmp_path / "gas" / "a", nopbc=True)
    gas = load_deepmd(tmp_path / "gas" / "a")
    assert gas.cells is None and gas.info["pbc"] is False
    moving = Trajectory(
        gas.positions, finite_difference_velocities(gas.positions, 1.0), gas.z, cells=gas.cells
    )
    assert quantity_series(AngularMomentum(), moving).shape == (4, 1, 3)
    _deepmd_molecule(tmp_path / "gas" / "b", nopbc=False)
    periodic = load_deepmd(tmp_path / "gas" / "b")
    assert periodic.cells.shape == (4, 3, 3) and periodic.info["pbc"] is True
    with pytest.raises(ValueError, match=r"b: periodic, but .*a is non-periodic \(nopbc\)"):
        load_deepmd(tmp_path / "gas")
