"""Frames and trajectories of molecules: the states of dynamics data and models.

Units throughout :mod:`symgraph.data.trajectories`, :mod:`symgraph.data.md_simulation`,
:mod:`symgraph.noether` and the dynamics job: positions in Å, velocities in Å/fs, masses in
atomic mass units (amu), energies in eV (loaders record the unit in
:attr:`Trajectory.energy_unit`), time in fs; kinetic energies ``½ m v²`` convert from
amu·Å²/fs² to eV with :data:`EV_PER_AMU_A2_PER_FS2`.

A :class:`Frame` is one state of ``B`` molecules packed as a PyG batch::

    pos   [N, 3]   positions
    vel   [N, 3]   velocities
    z     [N]      atomic numbers (int64); 0 for particles given only masses
    mass  [N]      masses (default: standard atomic masses of ``z``)
    batch [N]      sorted graph index of each atom, or None for one molecule

A :class:`Trajectory` is ``T`` frames of the same atoms: ``positions [T, N, 3]``,
``velocities [T, N, 3]`` (optional), one ``z [N]``, ``masses [N]`` and ``batch [N]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

import torch
from ase import units as _ase_units
from torch import Tensor

from symgraph.checks import check_batch, check_tensor

__all__ = [
    "EV_PER_AMU_A2_PER_FS2", "Frame", "Trajectory", "as_frame", "default_masses", "same_time_step",
]  # fmt: skip

#: 1 amu·Å²/fs² in eV (= 1 / ase.units.fs², ≈ 103.6427), ase's CODATA constants.
EV_PER_AMU_A2_PER_FS2 = 1.0 / _ase_units.fs**2


def same_time_step(a: float | None, b: float | None) -> bool:
    """Whether two frame spacings ``dt`` (fs) are equal to rounding (``0.1 * 3`` and
    ``0.3``); ``None`` (no time step, e.g. snapshots) equals only ``None``."""
    return a == b or (a is not None and b is not None and math.isclose(a, b, rel_tol=1e-9))


def default_masses(z: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """Standard atomic masses (amu, from ``ase.data``) of atomic numbers ``z [N]`` -> ``[N]``."""
    from ase.data import atomic_masses

    z = check_tensor(z, "z")
    if z.numel() and (int(z.min()) < 1 or int(z.max()) >= len(atomic_masses)):
        raise ValueError(
            f"z: expected atomic numbers in [1, {len(atomic_masses) - 1}], "
            f"got values in [{int(z.min())}, {int(z.max())}]"
        )
    table = torch.as_tensor(atomic_masses, dtype=dtype or torch.get_default_dtype())
    return table.to(z.device)[z.long()]


def _check_z(z: object, num_atoms: int, name: str = "z") -> Tensor:
    z = check_tensor(z, name)
    if z.dim() != 1 or z.shape[0] != num_atoms:
        raise ValueError(
            f"{name}: expected atomic numbers of shape [{num_atoms}], got shape {list(z.shape)}"
        )
    if z.is_floating_point() or z.is_complex():
        raise TypeError(f"{name}: expected an integer tensor, got dtype {z.dtype}")
    return z.long()


def _species(z: object, mass: object, num_atoms: int, device: torch.device) -> Tensor:
    """``z`` checked; particles given only masses get species 0 (none: no element)."""
    if z is None:
        if mass is None:
            raise ValueError(
                "z: expected atomic numbers [N] (int64), or masses (`mass`) for particles "
                "without an element; got neither"
            )
        return torch.zeros(num_atoms, dtype=torch.long, device=device)
    return _check_z(z, num_atoms)


def _check_vectors(value: object, name: str, lead: tuple[int, ...]) -> Tensor:
    value = check_tensor(value, name)
    want = (*lead, 3)
    if tuple(value.shape) != want:
        raise ValueError(f"{name}: expected shape {list(want)}, got shape {list(value.shape)}")
    if not value.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got dtype {value.dtype}")
    return value


def _check_masses(mass: object, z: Tensor, dtype: torch.dtype, name: str) -> Tensor:
    if mass is None:
        return default_masses(z, dtype)
    mass = check_tensor(mass, name)
    if mass.dim() != 1 or mass.shape[0] != z.shape[0]:
        raise ValueError(f"{name}: expected shape [{z.shape[0]}], got shape {list(mass.shape)}")
    if not mass.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got dtype {mass.dtype}")
    if mass.numel() and not bool((mass > 0).all()):
        raise ValueError(f"{name}: expected positive masses, got min {float(mass.min())}")
    return mass


def _check_molecule_batch(batch: object, num_atoms: int) -> Tensor | None:
    """``batch`` as :func:`check_batch` wants it, with every molecule ``0 .. B-1`` holding
    atoms (an empty one would enter per-molecule sums and means as a phantom molecule)."""
    batch = check_batch(batch, num_atoms)
    if batch is not None and batch.numel() and not torch.compiler.is_compiling():
        empty = (torch.bincount(batch) == 0).nonzero().flatten().tolist()
        if empty:
            raise ValueError(
                f"batch: expected molecule indices 0 .. B-1 without gaps, got no atoms for "
                f"molecule(s) {empty[:5]}{' ...' if len(empty) > 5 else ''}"
            )
    return batch


def _num_graphs(batch: Tensor | None) -> int:
    if batch is None:
        return 1
    return int(batch.max()) + 1 if batch.numel() else 0


@dataclass
class Frame:
    """One state of ``B`` molecules (see the module docstring for shapes and units).

    Attributes:
        pos: ``[N, 3]`` positions (Å).
        vel: ``[N, 3]`` velocities (Å/fs); zeros when not given.
        z: ``[N]`` atomic numbers (zeros when only ``mass`` is given: plain particles).
        mass: ``[N]`` masses (amu); standard masses of ``z`` when not given.
        batch: ``[N]`` sorted graph index, or ``None`` for a single molecule.
    """

    pos: Tensor
    vel: Tensor | None = None
    z: Tensor | None = None
    mass: Tensor | None = None
    batch: Tensor | None = None

    def __post_init__(self) -> None:
        pos = check_tensor(self.pos, "pos")
        if pos.dim() != 2 or pos.shape[1] != 3:
            raise ValueError(f"pos: expected a float tensor [N, 3], got shape {list(pos.shape)}")
        if not pos.is_floating_point():
            raise TypeError(f"pos: expected a float tensor [N, 3], got dtype {pos.dtype}")
        n = pos.shape[0]
        self.z = _species(self.z, self.mass, n, pos.device)
        self.vel = (
            torch.zeros_like(pos) if self.vel is None else _check_vectors(self.vel, "vel", (n,))
        )
        self.mass = _check_masses(self.mass, self.z, pos.dtype, "mass")
        self.batch = _check_molecule_batch(self.batch, n)

    @property
    def num_atoms(self) -> int:
        return int(self.pos.shape[0])

    @property
    def num_graphs(self) -> int:
        """Number of molecules ``B`` in the frame."""
        return _num_graphs(self.batch)

    def __repr__(self) -> str:
        return (
            f"Frame(atoms={self.num_atoms}, molecules={self.num_graphs}, "
            f"dtype={self.pos.dtype}, device={self.pos.device})"
        )

    def batch_index(self) -> Tensor:
        """``[N]`` graph index (zeros when :attr:`batch` is ``None``)."""
        if self.batch is not None:
            return self.batch
        return torch.zeros(self.num_atoms, dtype=torch.long, device=self.pos.device)

    def replace(self, **changes: Any) -> Frame:
        """A copy with some fields replaced (``Frame.replace(pos=new_pos)``)."""
        return replace(self, **changes)

    def split(self) -> list[Frame]:
        """One :class:`Frame` per molecule (``batch`` ``None`` in each)."""
        if self.batch is None:
            return [self]
        counts = torch.bincount(self.batch, minlength=self.num_graphs).tolist()
        out, start = [], 0
        for count in counts:
            sl = slice(start, start + count)
            out.append(Frame(self.pos[sl], self.vel[sl], self.z[sl], self.mass[sl], None))
            start += count
        return out

    @staticmethod
    def cat(frames: Sequence[Frame]) -> Frame:
        """Pack frames (each possibly a batch itself) into one batch, graphs in order."""
        if not frames:
            raise ValueError("frames: expected at least one Frame, got an empty sequence")
        batches, offset = [], 0
        for f in frames:
            batches.append(f.batch_index() + offset)
            offset += f.num_graphs
        return Frame(
            torch.cat([f.pos for f in frames]),
            torch.cat([f.vel for f in frames]),
            torch.cat([f.z for f in frames]),
            torch.cat([f.mass for f in frames]),
            torch.cat(batches),
        )

    def to(self, *args: Any, **kwargs: Any) -> Frame:
        """Move / cast the floating tensors (``z`` and ``batch`` keep their integer dtype)."""
        pos = self.pos.to(*args, **kwargs)
        batch = None if self.batch is None else self.batch.to(pos.device)
        return Frame(
            pos,
            self.vel.to(*args, **kwargs),
            self.z.to(pos.device),
            self.mass.to(*args, **kwargs),
            batch,
        )


def _attribute(frame: object, *keys: str) -> Any:
    """The first of ``keys`` that a PyG ``Data`` (attribute) or dict (item) holds, or
    ``None``."""
    for key in keys:
        value = getattr(frame, key, None)
        if value is None and isinstance(frame, dict):
            value = frame.get(key)
        if value is not None:
            return value
    return None


def _given_velocities(frame: object) -> Any:
    """The velocities a PyG ``Data`` (or dict) carries (``vel``, ``velocities`` or ``v``), or
    ``None``; a :class:`Frame`'s own (zeros when it was built without)."""
    if isinstance(frame, Frame):
        return frame.vel
    return _attribute(frame, "vel", "velocities", "v")


def as_frame(frame: object, name: str = "frame") -> Frame:
    """Accept a :class:`Frame` or a PyG ``Data``/``Batch`` (``pos``, ``z``, and optionally
    ``vel``/``velocities``, ``mass``/``masses``, ``batch``) and return a :class:`Frame`."""
    if isinstance(frame, Frame):
        return frame
    get = getattr(frame, "get", None)
    if get is None and not hasattr(frame, "pos"):
        raise TypeError(
            f"{name}: expected a symgraph Frame or a PyG Data with `pos` and `z` (or `mass`), "
            f"got {type(frame).__name__}"
        )

    pos = _attribute(frame, "pos", "positions")
    if pos is None:
        raise ValueError(f"{name}: expected a `pos` attribute [N, 3], found none")
    return Frame(
        pos,
        _given_velocities(frame),
        _attribute(frame, "z", "atomic_numbers"),
        _attribute(frame, "mass", "masses"),
        _attribute(frame, "batch"),
    )


@dataclass
class Trajectory:
    """``T`` frames of the same ``N`` atoms (``B`` molecules packed as a PyG batch).

    Attributes:
        positions: ``[T, N, 3]`` (Å).
        velocities: ``[T, N, 3]`` (Å/fs) or ``None`` (e.g. data sets that store none).
        z: ``[N]`` atomic numbers, the same in every frame (zeros when only ``masses`` are
            given: plain particles).
        masses: ``[N]`` (amu); standard masses of ``z`` when not given.
        batch: ``[N]`` sorted molecule index, or ``None`` for one molecule.
        energies: ``[T]`` (one molecule) or ``[T, B]`` potential energies, or ``None``.
        forces: ``[T, N, 3]`` or ``None``.
        cells: ``[T, 3, 3]`` periodic cell rows (Å) or ``None``.
        dt: time between consecutive frames in fs, or ``None`` (unordered snapshots).
        energy_unit: unit of ``energies`` (and ``forces`` per Å), ``"eV"`` by default.
        info: free-form metadata (source, generator report, ...).

    Raises:
        ValueError: frames of different atom counts, ``z`` not ``[N]``, and similar.
    """

    positions: Tensor
    velocities: Tensor | None = None
    z: Tensor | None = None
    masses: Tensor | None = None
    batch: Tensor | None = None
    energies: Tensor | None = None
    forces: Tensor | None = None
    cells: Tensor | None = None
    dt: float | None = None
    energy_unit: str = "eV"
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        pos = check_tensor(self.positions, "positions")
        if pos.dim() != 3 or pos.shape[2] != 3:
            raise ValueError(
                f"positions: expected shape [T, N, 3] (T frames of N atoms), "
                f"got shape {list(pos.shape)}"
            )
        if not pos.is_floating_point():
            raise TypeError(f"positions: expected a floating-point tensor, got {pos.dtype}")
        t, n = pos.shape[0], pos.shape[1]
        self.z = _species(self.z, self.masses, n, pos.device)
        if self.velocities is not None:
            self.velocities = _check_vectors(self.velocities, "velocities", (t, n))
        if self.forces is not None:
            self.forces = _check_vectors(self.forces, "forces", (t, n))
        self.masses = _check_masses(self.masses, self.z, pos.dtype, "masses")
        self.batch = _check_molecule_batch(self.batch, n)
        b = _num_graphs(self.batch)
        if self.energies is not None:
            e = check_tensor(self.energies, "energies")
            if e.dim() == 2 and e.shape[1] == 1 and b == 1:
                e = e[:, 0]
            if tuple(e.shape) not in ((t,), (t, b)) or (e.dim() == 1 and b != 1):
                want = f"[{t}]" if b == 1 else f"[{t}, {b}]"
                raise ValueError(f"energies: expected shape {want}, got shape {list(e.shape)}")
            self.energies = e
        if self.cells is not None:
            c = check_tensor(self.cells, "cells")
            if tuple(c.shape) != (t, 3, 3):
                raise ValueError(f"cells: expected shape [{t}, 3, 3], got {list(c.shape)}")
        if self.dt is not None and not self.dt > 0:
            raise ValueError(f"dt: expected a positive time step in fs, got {self.dt!r}")

    # -- sizes ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.positions.shape[0])

    @property
    def num_frames(self) -> int:
        return len(self)

    @property
    def num_atoms(self) -> int:
        return int(self.positions.shape[1])

    @property
    def num_graphs(self) -> int:
        """Molecules per frame ``B``."""
        return _num_graphs(self.batch)

    def __repr__(self) -> str:
        """Sizes and what is stored, not the arrays (a trajectory holds thousands of rows)."""
        stored = [
            name
            for name in ("velocities", "energies", "forces", "cells")
            if getattr(self, name) is not None
        ]
        dt = "None" if self.dt is None else f"{self.dt:g} fs"
        return (
            f"Trajectory(frames={self.num_frames}, atoms={self.num_atoms}, "
            f"molecules={self.num_graphs}, dt={dt}, dtype={self.positions.dtype}, "
            f"with={stored}, energy_unit={self.energy_unit!r}, info={sorted(self.info)})"
        )

    # -- access --------------------------------------------------------------------------
    def frame(self, t: int) -> Frame:
        """Frame ``t`` as a :class:`Frame` (velocities zero when the trajectory has none)."""
        vel = None if self.velocities is None else self.velocities[t]
        return Frame(self.positions[t], vel, self.z, self.masses, self.batch)

    def __getitem__(self, index: slice) -> Trajectory:
        """Frames ``index`` (a slice) as a new trajectory sharing ``z``, masses and batch."""
        if not isinstance(index, slice):
            raise TypeError(
                f"index: expected a slice of frames (use .frame(t) for one frame), "
                f"got {type(index).__name__}"
            )
        step = index.step or 1
        if step < 1:
            raise ValueError(
                f"index: expected a slice with a positive step (frames stay in time order), "
                f"got step {step}"
            )

        def cut(x: Tensor | None) -> Tensor | None:
            return None if x is None else x[index]

        return replace(
            self,
            positions=self.positions[index],
            velocities=cut(self.velocities),
            energies=cut(self.energies),
            forces=cut(self.forces),
            cells=cut(self.cells),
            dt=None if self.dt is None else self.dt * step,
            info=dict(self.info),
        )

    def split(self) -> list[Trajectory]:
        """One :class:`Trajectory` per molecule (``batch`` ``None`` in each)."""
        if self.batch is None:
            return [self]
        counts = torch.bincount(self.batch, minlength=self.num_graphs).tolist()
        out, start = [], 0
        for b, count in enumerate(counts):
            sl = slice(start, start + count)

            def atoms(x: Tensor | None, sl: slice = sl) -> Tensor | None:
                return None if x is None else x[:, sl]

            energies = self.energies
            if energies is not None:
                energies = energies[:, b] if energies.dim() == 2 else energies
            out.append(
                replace(
                    self,
                    positions=self.positions[:, sl],
                    velocities=atoms(self.velocities),
                    z=self.z[sl],
                    masses=self.masses[sl],
                    batch=None,
                    energies=energies,
                    forces=atoms(self.forces),
                    info=dict(self.info),
                )
            )
            start += count
        return out

    def flatten(self) -> Frame:
        """All ``T`` frames as one batch of ``T * B`` molecules (frame-major order).

        Graph ``t * B + b`` of the result is molecule ``b`` of frame ``t``; this is how
        a conserved quantity is evaluated on every frame in one call.
        """
        t, n = self.positions.shape[:2]
        b = self.num_graphs
        base = self.frame(0).batch_index()
        offsets = torch.arange(t, device=base.device).repeat_interleave(n) * b
        vel = torch.zeros_like(self.positions) if self.velocities is None else self.velocities
        return Frame(
            self.positions.reshape(t * n, 3),
            vel.reshape(t * n, 3),
            self.z.repeat(t),
            self.masses.repeat(t),
            base.repeat(t) + offsets,
        )

    @staticmethod
    def from_frames(frames: Sequence[object], dt: float | None = None) -> Trajectory:
        """Stack frames (:class:`Frame` or PyG ``Data``) that share atoms into a trajectory.

        ``velocities`` is ``None`` when no frame carries any (PyG ``Data`` without
        ``vel``/``velocities``, e.g. MD17 items), rather than zeros, so that quantities and
        losses that need velocities refuse it.

        Raises:
            ValueError: when frames have different atom counts, different ``z``,
                different masses or a different ``batch``, or when some frames carry
                velocities and others do not.
        """
        if isinstance(frames, (Tensor, Trajectory)) or len(frames) == 0:
            raise ValueError("frames: expected a non-empty sequence of Frame objects")
        given = [_given_velocities(f) is not None for f in frames]
        if any(given) and not all(given):
            i = given.index(not given[0])
            raise ValueError(
                f"frames[{i}]: expected velocities as in frames[0], got none"
                if given[0]
                else f"frames[{i}]: carries velocities, but frames[0] does not (all frames "
                "of a trajectory need them, or none)"
            )
        fs = [as_frame(f, f"frames[{i}]") for i, f in enumerate(frames)]
        first = fs[0]
        for i, f in enumerate(fs[1:], start=1):
            if f.num_atoms != first.num_atoms:
                raise ValueError(
                    f"frames[{i}]: expected {first.num_atoms} atoms as in frames[0], "
                    f"got {f.num_atoms} (all frames of a trajectory hold the same atoms)"
                )
            if not torch.equal(f.z, first.z):
                bad = int((f.z != first.z).nonzero()[0, 0])
                raise ValueError(
                    f"frames[{i}]: atomic numbers z differ from frames[0] (first at atom "
                    f"{bad}: {int(f.z[bad])} vs {int(first.z[bad])})"
                )
            if not torch.equal(f.batch_index(), first.batch_index()):
                raise ValueError(f"frames[{i}]: `batch` differs from frames[0]")
            if not torch.equal(f.mass, first.mass):
                raise ValueError(f"frames[{i}]: masses differ from frames[0]")
        return Trajectory(
            torch.stack([f.pos for f in fs]),
            torch.stack([f.vel for f in fs]) if given[0] else None,
            first.z,
            first.mass,
            first.batch,
            dt=dt,
        )

    def to(self, *args: Any, **kwargs: Any) -> Trajectory:
        """Move / cast the floating tensors (integer tensors only change device)."""
        changes: dict[str, Any] = {}
        device = self.positions.to(*args, **kwargs).device
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Tensor):
                if value.is_floating_point():
                    changes[f.name] = value.to(*args, **kwargs)
                else:
                    changes[f.name] = value.to(device)
        return replace(self, **changes)
