"""Sets of MMFF94 NVE trajectories made by the library, cached on disk.

:func:`generated_trajectories` runs :func:`~symgraph.data.md_simulation.generate_md_trajectory`
for several molecules and seeds (rdkit MMFF94 forces, ase velocity Verlet, relaxed start,
zero total momentum and angular momentum) and keeps each trajectory in ``cache_dir`` as a
``.pt`` file named after its settings, so that a second call with the same settings only
reads files. :func:`mmff_atoms` rebuilds the force field of a trajectory (e.g. for the
potential energy of predicted frames).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from symgraph.checks import is_int
from symgraph.data.frames import Trajectory

__all__ = ["cache_name", "generated_trajectories", "mmff_atoms"]

_TENSORS = ("positions", "velocities", "z", "masses", "energies", "forces")
_OBJECTS = ("atoms", "calculator_object")


def cache_name(
    molecule: str, frames: int, dt_fs: float, save_every: int, temperature_K: float, seed: int
) -> str:
    """File name of one cached trajectory, e.g. ``CH3OH-101f-0.5fs-x4-300K-seed7.pt``; the
    time step and temperature are written in full (``repr``), so runs that differ in them
    never share a file."""
    dt, temperature = _exact(dt_fs), _exact(temperature_K)
    return f"{molecule}-{frames}f-{dt}fs-x{save_every}-{temperature}K-seed{seed}.pt"


def _exact(value: float) -> str:
    """The shortest text that reads back as ``value``: ``0.5``, ``300``, ``1e-05``."""
    return repr(float(value)).removesuffix(".0")


def _save(path: Path, traj: Trajectory) -> None:
    """Write atomically (temporary file, then rename) so readers never see half a file."""
    state: dict[str, Any] = {k: getattr(traj, k) for k in _TENSORS}
    state["dt"] = traj.dt
    state["info"] = traj.info
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _load(path: Path) -> Trajectory:
    state = torch.load(path, weights_only=True)
    return Trajectory(**{k: state[k] for k in _TENSORS}, dt=state["dt"], info=state["info"])


def generated_trajectories(
    molecules: Sequence[str],
    per_molecule: int,
    frames: int,
    *,
    dt_fs: float = 0.5,
    save_every: int = 4,
    temperature_K: float = 300.0,
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
) -> list[Trajectory]:
    """``per_molecule`` NVE trajectories of ``frames`` frames for each molecule.

    Args:
        molecules: names of ase's g2 collection (``"CH3CH2OH"``, ``"CH3OH"``, ...).
        per_molecule: trajectories per molecule; trajectory ``k`` starts from velocities
            drawn with seed ``seed * 10000 + k``.
        frames: frames per trajectory (``(frames - 1) * save_every`` integration steps).
        dt_fs, save_every, temperature_K: as in
            :func:`~symgraph.data.md_simulation.generate_md_trajectory`; frames are
            ``dt_fs * save_every`` fs apart.
        seed: seed of the whole set.
        cache_dir: folder of the cached trajectories (created); ``None``: no cache.

    Returns:
        ``len(molecules) * per_molecule`` float64 trajectories, molecule-major; each
        ``info`` holds ``molecule``, ``seed``, ``smiles`` and the generator's
        ``energy_drift`` report.
    """
    from symgraph.data.md_simulation import generate_md_trajectory

    if not molecules:
        raise ValueError("molecules: expected at least one g2 molecule name, got none")
    if not is_int(per_molecule) or per_molecule < 1:
        raise ValueError(f"per_molecule: expected a positive int, got {per_molecule!r}")
    if not is_int(frames) or frames < 2:
        raise ValueError(f"frames: expected an int >= 2, got {frames!r}")
    per_molecule, frames = int(per_molecule), int(frames)
    folder = None if cache_dir is None else Path(cache_dir)
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    out = []
    for molecule in molecules:
        for k in range(per_molecule):
            md_seed = seed * 10000 + k
            name = cache_name(molecule, frames, dt_fs, save_every, temperature_K, md_seed)
            path = None if folder is None else folder / name
            if path is not None and path.is_file():
                out.append(_load(path))
                continue
            traj = generate_md_trajectory(
                molecule,
                steps=(frames - 1) * save_every,
                dt_fs=dt_fs,
                temperature_K=temperature_K,
                seed=md_seed,
                save_every=save_every,
            )
            # keep plain values only (no ase objects), as in the cached files
            traj.info = {k: v for k, v in traj.info.items() if k not in _OBJECTS}
            traj.info.update(molecule=molecule, seed=md_seed)
            if path is not None:
                _save(path, traj)
            out.append(traj)
    return out


def mmff_atoms(trajectory: Trajectory, frame: int = 0) -> Any:
    """``ase.Atoms`` of one frame with an :class:`MMFFCalculator` attached.

    The bonds are perceived from that frame's geometry (frame 0 of a generated trajectory
    is the relaxed structure the generator started from), so the calculator reproduces the
    generator's energies; use it, e.g., in :class:`~symgraph.noether.AsePotential`.
    """
    from ase import Atoms

    from symgraph.data.md_simulation import MMFFCalculator, mol_from_atoms

    if trajectory.num_graphs != 1:
        raise ValueError(f"trajectory: expected one molecule, got {trajectory.num_graphs}")
    atoms = Atoms(
        numbers=trajectory.z.cpu().numpy(),
        positions=trajectory.positions[frame].detach().cpu().double().numpy(),
    )
    atoms.calc = MMFFCalculator(mol=mol_from_atoms(atoms))
    return atoms
