"""Molecular dynamics with ase: new trajectories of any molecule, with energies and forces.

:func:`generate_md_trajectory` runs velocity-Verlet NVE dynamics on a molecule (an
``ase.Atoms`` or a name of ase's g2 collection such as ``"CH3CH2OH"``) with energies and
forces from rdkit's MMFF94 (:class:`MMFFCalculator`) or any ase calculator, and reports its
energy drift (:func:`energy_drift`). Everything returns a
:class:`symgraph.data.frames.Trajectory` (Å, Å/fs, eV, eV/Å);
:func:`symgraph.data.generated_trajectories` caches sets of them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from symgraph.checks import is_int
from symgraph.data.frames import EV_PER_AMU_A2_PER_FS2, Trajectory
from symgraph.data.trajectories import KCAL_PER_MOL_IN_EV

__all__ = ["MMFFCalculator", "energy_drift", "generate_md_trajectory", "mol_from_atoms"]


def mol_from_atoms(atoms: Any, charge: int = 0) -> Any:
    """An rdkit molecule (explicit hydrogens, one conformer) from ``ase.Atoms``.

    Bonds and bond orders are perceived from the 3D geometry with
    ``rdkit.Chem.rdDetermineBonds.DetermineBonds``.
    """
    from rdkit import Chem
    from rdkit.Chem import rdDetermineBonds

    lines = [str(len(atoms)), ""]
    for symbol, (x, y, z) in zip(atoms.get_chemical_symbols(), atoms.positions):
        lines.append(f"{symbol} {x:.10f} {y:.10f} {z:.10f}")
    mol = Chem.MolFromXYZBlock("\n".join(lines) + "\n")
    if mol is None:
        raise ValueError("atoms: rdkit could not read the geometry as an XYZ block")
    try:
        rdDetermineBonds.DetermineBonds(mol, charge=charge)
    except Exception as err:  # rdkit raises plain ValueError/RuntimeError
        raise ValueError(
            f"atoms: rdkit could not perceive bonds of {atoms.get_chemical_formula()} "
            f"(charge {charge}): {err}"
        ) from err
    return mol


def _ase_calculator_base() -> type:
    from ase.calculators.calculator import Calculator

    return Calculator


class MMFFCalculator(_ase_calculator_base()):  # type: ignore[misc]
    """ase calculator for rdkit's MMFF94 force field (energy in eV, forces in eV/Å).

    The topology (bonds, MMFF atom types) is perceived once, from the first geometry seen
    (or from ``mol``), and kept fixed: bonds are never broken or formed.

    Args:
        mol: an rdkit molecule with explicit hydrogens whose atom order matches the
            ``Atoms`` it will be attached to; built from the atoms when omitted.
        charge: total charge used for bond perception.
        variant: ``"MMFF94"`` or ``"MMFF94s"``.
    """

    implemented_properties = ["energy", "forces"]

    def __init__(self, mol: Any = None, charge: int = 0, variant: str = "MMFF94", **kwargs: Any):
        super().__init__(**kwargs)
        if variant not in ("MMFF94", "MMFF94s"):
            raise ValueError(f"variant: expected 'MMFF94' or 'MMFF94s', got {variant!r}")
        self.mol, self.charge, self.variant = mol, charge, variant
        self._ff = None

    def _force_field(self, atoms: Any) -> Any:
        if self._ff is not None:
            return self._ff
        from rdkit.Chem import AllChem

        if self.mol is None:
            self.mol = mol_from_atoms(atoms, self.charge)
        if self.mol.GetNumAtoms() != len(atoms):
            raise ValueError(
                f"mol: expected {len(atoms)} atoms (with explicit hydrogens), got "
                f"{self.mol.GetNumAtoms()}"
            )
        props = AllChem.MMFFGetMoleculeProperties(self.mol, mmffVariant=self.variant)
        if props is None:
            raise ValueError(
                f"atoms: MMFF94 has no parameters for {atoms.get_chemical_formula()} "
                f"(unsupported atom types); use another ase calculator"
            )
        self._ff = AllChem.MMFFGetMoleculeForceField(self.mol, props)
        return self._ff

    def calculate(
        self, atoms: Any = None, properties: Any = ("energy",), system_changes: Any = None
    ) -> None:
        from ase.calculators.calculator import all_changes

        super().calculate(atoms, properties, system_changes or all_changes)
        ff = self._force_field(self.atoms)
        coords = self.atoms.positions.reshape(-1).tolist()
        energy = ff.CalcEnergy(coords) * KCAL_PER_MOL_IN_EV
        grad = np.asarray(ff.CalcGrad(coords), dtype=np.float64).reshape(-1, 3)
        self.results = {"energy": energy, "forces": -grad * KCAL_PER_MOL_IN_EV}


def _make_atoms(atoms_or_name: Any) -> Any:
    from ase import Atoms

    if isinstance(atoms_or_name, str):
        from ase.build import molecule
        from ase.collections import g2

        if atoms_or_name not in g2.names:
            raise ValueError(
                f"atoms_or_name: {atoms_or_name!r} is not in ase's g2 collection "
                f"(e.g. 'CH3CH2OH', 'C6H6', 'H2O'); pass an ase.Atoms for other molecules"
            )
        return molecule(atoms_or_name)
    if isinstance(atoms_or_name, Atoms):
        return atoms_or_name.copy()
    raise TypeError(
        f"atoms_or_name: expected ase.Atoms or a g2 molecule name, "
        f"got {type(atoms_or_name).__name__}"
    )


def energy_drift(trajectory: Trajectory, kinetic_scale: float = EV_PER_AMU_A2_PER_FS2) -> dict:
    """Energy conservation of a trajectory with velocities and potential energies.

    Returns:
        ``{"total_energy": [T] tensor, "drift_per_atom": |E(T−1) − E(0)| / N,
        "max_fluctuation_per_atom": max_t |E(t) − E(0)| / N, "std_per_atom": std_t E / N}``
        in the trajectory's energy unit (eV for the generator).
    """
    if trajectory.velocities is None or trajectory.energies is None:
        raise ValueError(
            "trajectory: expected velocities and potential energies to measure energy drift"
        )
    if trajectory.num_graphs != 1:
        raise ValueError(f"trajectory: expected one molecule, got {trajectory.num_graphs}")
    v2 = (trajectory.velocities**2).sum(-1)  # [T, N]
    kinetic = 0.5 * kinetic_scale * (trajectory.masses * v2).sum(-1)
    total = kinetic + trajectory.energies.reshape(-1)
    n = trajectory.num_atoms
    dev = (total - total[0]).abs()
    return {
        "total_energy": total,
        "drift_per_atom": float(dev[-1]) / n,
        "max_fluctuation_per_atom": float(dev.max()) / n,
        "std_per_atom": float(total.std()) / n if len(total) > 1 else 0.0,
    }


def generate_md_trajectory(
    atoms_or_name: Any = "CH3CH2OH",
    steps: int = 1000,
    dt_fs: float = 0.5,
    temperature_K: float = 300.0,
    calculator: str | Any = "mmff",
    seed: int = 0,
    *,
    save_every: int = 1,
    relax: bool = True,
    zero_momentum: bool = True,
    dtype: torch.dtype = torch.float64,
) -> Trajectory:
    """Velocity-Verlet NVE molecular dynamics of one molecule with ase.

    Args:
        atoms_or_name: an ``ase.Atoms`` or a g2 name for ``ase.build.molecule``.
        steps: integration steps (rounded down to a multiple of ``save_every``).
        dt_fs: integration time step in fs.
        temperature_K: temperature of the initial Maxwell–Boltzmann velocities.
        calculator: ``"mmff"`` (rdkit MMFF94 via :class:`MMFFCalculator`) or an ase
            calculator instance.
        seed: seed of the initial velocities.
        save_every: keep every ``save_every``-th step (``steps // save_every + 1`` frames).
        relax: minimise the geometry (BFGS, fmax 0.005 eV/Å) before assigning velocities.
        zero_momentum: remove the total linear and angular momentum of the initial
            velocities (both are then conserved at zero by the integrator).
        dtype: floating dtype of the returned tensors.

    Returns:
        A :class:`Trajectory` (Å, Å/fs, eV, eV/Å; ``dt = dt_fs * save_every``) whose
        ``info`` holds the generator settings, its :func:`energy_drift` report
        (``info["energy_drift"]``), the ``ase.Atoms`` in its final MD state with its
        calculator (``info["atoms"]``, e.g. for :class:`~symgraph.noether.AsePotential`;
        frame 0 is the relaxed structure) and, for
        MMFF, the perceived ``info["smiles"]``.
    """
    from ase import units
    from ase.md.velocitydistribution import (
        MaxwellBoltzmannDistribution,
        Stationary,
        ZeroRotation,
    )
    from ase.md.verlet import VelocityVerlet

    if not is_int(steps) or steps < 1:
        raise ValueError(f"steps: expected a positive int, got {steps!r}")
    if not is_int(save_every) or save_every < 1:
        raise ValueError(f"save_every: expected a positive int, got {save_every!r}")
    steps, save_every = int(steps), int(save_every)
    if not dt_fs > 0:
        raise ValueError(f"dt_fs: expected a positive time step in fs, got {dt_fs!r}")
    if not temperature_K >= 0:
        raise ValueError(f"temperature_K: expected a non-negative number, got {temperature_K!r}")
    atoms = _make_atoms(atoms_or_name)
    if len(atoms) < 2:  # nothing to integrate (and rdkit aborts on a lone atom)
        raise ValueError(
            f"atoms_or_name: expected a molecule of at least 2 atoms, got "
            f"{atoms.get_chemical_formula() or 'no atoms'} ({len(atoms)} atom(s))"
        )
    if isinstance(calculator, str):
        if calculator.lower() != "mmff":
            raise ValueError(
                f"calculator: expected 'mmff' or an ase calculator, got {calculator!r}"
            )
        atoms.calc = MMFFCalculator()
        name = "rdkit MMFF94"
    else:
        atoms.calc = calculator
        name = type(calculator).__name__
    if relax:
        from ase.optimize import BFGS

        BFGS(atoms, logfile=None).run(fmax=0.005, steps=500)
    from ase.md import velocitydistribution

    # ase >= 3.26 renamed MaxwellBoltzmannDistribution to thermalize_momenta
    thermalize = getattr(velocitydistribution, "thermalize_momenta", MaxwellBoltzmannDistribution)
    thermalize(atoms, temperature_K=temperature_K, rng=np.random.default_rng(seed))
    if zero_momentum:
        Stationary(atoms)
        ZeroRotation(atoms)
    dyn = VelocityVerlet(atoms, timestep=dt_fs * units.fs)
    pos, vel, energy, force = [], [], [], []

    def record() -> None:
        pos.append(atoms.get_positions())
        vel.append(atoms.get_velocities() * units.fs)  # ase velocity unit -> Å/fs
        energy.append(atoms.get_potential_energy())
        force.append(atoms.get_forces())

    record()
    for _ in range(steps // save_every):
        dyn.run(save_every)
        record()
    traj = Trajectory(
        positions=torch.as_tensor(np.stack(pos)).to(dtype),
        velocities=torch.as_tensor(np.stack(vel)).to(dtype),
        z=torch.as_tensor(atoms.get_atomic_numbers(), dtype=torch.long),
        masses=torch.as_tensor(atoms.get_masses()).to(dtype),
        energies=torch.as_tensor(np.array(energy, dtype=np.float64)).to(dtype),
        forces=torch.as_tensor(np.stack(force)).to(dtype),
        dt=dt_fs * save_every,
        energy_unit="eV",
        info={
            "generator": "ase VelocityVerlet (NVE)",
            "calculator": name,
            "formula": atoms.get_chemical_formula(),
            "steps": steps // save_every * save_every,  # the steps integrated
            "dt_fs": dt_fs,
            "temperature_K": temperature_K,
            "seed": seed,
        },
    )
    report = energy_drift(traj)
    report.pop("total_energy")
    traj.info["energy_drift"] = report
    if isinstance(calculator, str):
        from rdkit import Chem

        traj.info["smiles"] = Chem.MolToSmiles(Chem.RemoveHs(atoms.calc.mol))
    traj.info["calculator_object"] = atoms.calc
    traj.info["atoms"] = atoms
    return traj
