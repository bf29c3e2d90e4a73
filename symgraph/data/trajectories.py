"""Molecular trajectories: MD17-style loaders, and packing trajectories into batches.

Everything returns a :class:`symgraph.data.frames.Trajectory` (positions Å, velocities
Å/fs, energies eV unless ``energy_unit="native"``, forces eV/Å).

Loaders (no network):

- :func:`load_md17` reads one local file or directory in the layouts below, or finds
  ``molecule``'s MD17 file under a root directory;
- :class:`MD17` is a per-frame dataset that downloads the official MD17 files from
  quantum-machine.org when asked (``download=True``).

======================================  ================================================
layout                                  keys / files
======================================  ================================================
MD17 / sGDML npz (kcal/mol, Å)          ``R [T,N,3]``, ``E [T,1]``, ``F [T,N,3]``, ``z [N]``
revised MD17 npz (kcal/mol, Å)          ``coords``, ``energies``, ``forces``,
                                        ``nuclear_charges``
QM7-X npz, one molecule (eV, Å)         ``atXYZ``, ``ePBE0+MBD``, ``totFOR``, ``atNUM [T,N]``
padded multi-molecule npz (eV, Å)       ``R``, ``E``, ``F``, ``z [T,Nmax]`` zero-padded: use
                                        :func:`load_padded_molecules`
DeePMD "npy system" directory (eV, Å)   ``type.raw``, ``type_map.raw``,
                                        ``set.*/coord.npy``, ``energy.npy``, ``force.npy``,
                                        ``box.npy`` (or a directory of such systems)
======================================  ================================================

:func:`stack_trajectories` packs trajectories of several molecules into one batch. New
trajectories are simulated by :mod:`symgraph.data.md_simulation`.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from symgraph.checks import is_int
from symgraph.data.frames import Trajectory, same_time_step

__all__ = [
    "KCAL_PER_MOL_IN_EV",
    "MD17",
    "finite_difference_velocities",
    "load_deepmd",
    "load_md17",
    "load_padded_molecules",
    "stack_trajectories",
]

#: 1 kcal/mol in eV (ase's constants).
KCAL_PER_MOL_IN_EV = 0.04336410390059322


def _z_of(symbol: str) -> int:
    from ase.data import atomic_numbers

    if symbol not in atomic_numbers:
        raise ValueError(f"type_map.raw: unknown element symbol {symbol!r}")
    return int(atomic_numbers[symbol])


def _tensor(a: np.ndarray, dtype: torch.dtype) -> Tensor:
    return torch.as_tensor(np.asarray(a, dtype=np.float64)).to(dtype)


def _unit_factor(native: str, energy_unit: str) -> tuple[float, str]:
    if energy_unit == "native":
        return 1.0, native
    if energy_unit != "eV":
        raise ValueError(f"energy_unit: expected 'eV' or 'native', got {energy_unit!r}")
    return (KCAL_PER_MOL_IN_EV if native == "kcal/mol" else 1.0), "eV"


@contextmanager
def _reading(path: Path) -> Iterator[None]:
    """Re-raise what numpy raises on an unreadable npz / npy (an empty or truncated file,
    a damaged member) as ``ValueError`` naming ``path``."""
    try:
        yield
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as err:
        if isinstance(err, FileNotFoundError):
            raise
        raise ValueError(
            f"{path}: could not be read as a numpy file ({type(err).__name__}: {err}); "
            "the file looks empty, truncated or corrupt"
        ) from err


def _check_finite(source: str, **arrays: np.ndarray | None) -> None:
    """Refuse NaN/inf in the per-frame ``arrays`` (``[T, ...]``), naming ``source``, the
    array and the first frames holding one."""
    for name, values in arrays.items():
        if values is None or np.size(values) == 0:
            continue
        values = np.asarray(values, dtype=np.float64)
        bad = ~np.isfinite(values.reshape(values.shape[0], -1)).all(axis=1)
        if bad.any():
            frames = np.flatnonzero(bad)
            raise ValueError(
                f"{source}: expected finite {name}, got NaN/inf in {frames.size} frame(s) "
                f"(first {frames[:5].tolist()}); the file looks corrupt"
            )


def _from_arrays(
    z: np.ndarray,
    pos: np.ndarray,
    energy: np.ndarray | None,
    force: np.ndarray | None,
    native_unit: str,
    energy_unit: str,
    dtype: torch.dtype,
    dt: float | None,
    info: dict[str, Any],
    max_frames: int | None,
) -> Trajectory:
    factor, unit = _unit_factor(native_unit, energy_unit)
    sl = slice(None, max_frames)
    source = str(info.get("source", "arrays"))
    pos = np.asarray(pos)[sl]
    energy = None if energy is None else np.asarray(energy)[sl]
    force = None if force is None else np.asarray(force)[sl]
    try:
        _check_finite(source, positions=pos, energies=energy, forces=force)
        if energy is not None and energy.size != len(energy):
            raise ValueError(f"energies: expected one per frame, got shape {list(energy.shape)}")
        energies = None if energy is None else _tensor(energy.reshape(len(energy)), dtype)
        return Trajectory(
            positions=_tensor(pos, dtype),
            z=torch.as_tensor(np.asarray(z, dtype=np.int64)),
            energies=None if energies is None else energies * factor,
            forces=None if force is None else _tensor(force, dtype) * factor,
            dt=dt,
            energy_unit=unit,
            info=info,
        )
    except ValueError as err:
        if str(err).startswith(source):
            raise
        raise ValueError(f"{source}: {err}") from err


def _single_z(z: np.ndarray, path: Path, key: str) -> np.ndarray:
    if z.ndim == 1:
        return z
    if z.ndim == 2 and bool((z == z[:1]).all()) and bool((z[0] > 0).all()):
        return z[0]
    raise ValueError(
        f"{path}: `{key}` has shape {list(z.shape)} with different molecules (or zero "
        f"padding) across frames; a Trajectory holds one set of atoms. Use "
        f"load_padded_molecules({str(path)!r}) to get one trajectory per molecule"
    )


def _load_npz(
    path: Path, energy_unit: str, dtype: torch.dtype, dt: float | None, max_frames: int | None
) -> Trajectory:
    with _reading(path), np.load(path, allow_pickle=False) as data:
        keys = set(data.files)
        info: dict[str, Any] = {"source": str(path)}
        if {"R", "z"} <= keys:
            z = _single_z(data["z"], path, "z")
            if "theory" in keys:
                info["theory"] = str(data["theory"])
            if dt is None and path.name.startswith("md17_"):
                dt = 0.5  # original MD17 trajectories: 0.5 fs between frames
            unit = "eV" if z.ndim == 1 and data["z"].ndim == 2 else "kcal/mol"
            return _from_arrays(
                z,
                data["R"],
                data["E"] if "E" in keys else None,
                data["F"] if "F" in keys else None,
                unit,
                energy_unit,
                dtype,
                dt,
                info,
                max_frames,
            )
        if {"coords", "nuclear_charges"} <= keys:  # revised MD17
            return _from_arrays(
                data["nuclear_charges"],
                data["coords"],
                data.get("energies"),
                data.get("forces"),
                "kcal/mol",
                energy_unit,
                dtype,
                dt,
                info,
                max_frames,
            )
        if {"atXYZ", "atNUM"} <= keys:  # QM7-X
            z = _single_z(data["atNUM"], path, "atNUM")
            energy = next((data[k] for k in ("ePBE0+MBD", "ePBE0", "E") if k in keys), None)
            return _from_arrays(
                z,
                data["atXYZ"],
                energy,
                data.get("totFOR"),
                "eV",
                energy_unit,
                dtype,
                dt,
                info,
                max_frames,
            )
    raise ValueError(
        f"{path}: unknown npz layout with keys {sorted(keys)}; expected MD17/sGDML "
        f"(R, E, F, z), revised MD17 (coords, energies, forces, nuclear_charges) or "
        f"QM7-X (atXYZ, atNUM, ePBE0+MBD, totFOR)"
    )


def load_padded_molecules(
    path: str | os.PathLike, energy_unit: str = "eV", dtype: torch.dtype = torch.float64
) -> list[Trajectory]:
    """One :class:`Trajectory` per run of consecutive frames of the same molecule.

    For npz files whose ``z [T, Nmax]`` is zero-padded (e.g. the QM7-X sample
    ``qm7x_250_small.npz``: ``R``, ``E``, ``F`` in Å / eV); padding atoms are dropped.
    """
    path = Path(path)
    with _reading(path), np.load(path, allow_pickle=False) as data:
        if "z" not in data.files or data["z"].ndim != 2 or "R" not in data.files:
            raise ValueError(
                f"{path}: expected padded arrays z [T, Nmax] and R [T, Nmax, 3], got keys "
                f"{sorted(data.files)}"
            )
        z, pos = data["z"], data["R"]
        energy = data["E"] if "E" in data.files else None
        force = data["F"] if "F" in data.files else None
    out, start = [], 0
    for t in range(1, len(z) + 1):
        if t == len(z) or not np.array_equal(z[t], z[start]):
            keep = z[start] > 0
            out.append(
                _from_arrays(
                    z[start][keep],
                    pos[start:t][:, keep],
                    None if energy is None else energy[start:t],
                    None if force is None else force[start:t][:, keep],
                    "eV",
                    energy_unit,
                    dtype,
                    None,
                    {"source": str(path), "frames": (start, t)},
                    None,
                )
            )
            start = t
    return out


def _deepmd_system(path: Path) -> tuple[Any, ...]:
    types = np.loadtxt(path / "type.raw", dtype=np.int64).reshape(-1)
    type_map_file = path / "type_map.raw"
    if not type_map_file.is_file():
        raise ValueError(f"{path}: DeePMD system without type_map.raw (element symbols)")
    symbols = type_map_file.read_text().split()
    if types.size and not 0 <= types.min() <= types.max() < len(symbols):
        raise ValueError(
            f"{path / 'type.raw'}: expected types in [0, {len(symbols)}) (the {len(symbols)} "
            f"symbols of type_map.raw), got values in [{types.min()}, {types.max()}]"
        )
    z = np.array([_z_of(symbols[t]) for t in types], dtype=np.int64)
    sets = sorted(p for p in path.glob("set.*") if p.is_dir())
    if not sets:
        raise ValueError(f"{path}: DeePMD system without set.*/ directories")
    n = len(z)
    periodic = not (path / "nopbc").exists()  # DeePMD-kit's marker of a non-periodic system
    pos, energy, force, box = [], [], [], []
    for s in sets:
        coord = _deepmd_array(s / "coord.npy", (-1, n, 3))
        t = coord.shape[0]
        pos.append(coord)
        energy.append(_deepmd_array(s / "energy.npy", (t,), optional=True))
        force.append(_deepmd_array(s / "force.npy", (t, n, 3), optional=True))
        # a non-periodic system's box.npy (zeros, as dpdata writes it) is not a cell
        box.append(_deepmd_array(s / "box.npy", (t, 3, 3), optional=True) if periodic else None)
    return z, pos, energy, force, box, periodic


def _deepmd_array(path: Path, shape: tuple[int, ...], optional: bool = False) -> np.ndarray | None:
    """One array of a DeePMD ``set.*`` folder reshaped to ``shape`` (``-1``: the frames),
    checked finite; ``None`` when ``optional`` and absent. Errors name the file."""
    if optional and not path.exists():
        return None
    with _reading(path):
        values = np.load(path, allow_pickle=False)
    try:
        values = values.reshape(shape)
    except ValueError as err:
        frames = "frames" if shape[0] == -1 else f"{shape[0]} frames (as coord.npy)"
        raise ValueError(
            f"{path}: expected {frames} of {int(np.prod(shape[1:]))} values each, got "
            f"{values.size} values (shape {list(values.shape)}); the file looks truncated "
            "or belongs to another system"
        ) from err
    _check_finite(str(path), values=values)
    return values


def load_deepmd(
    path: str | os.PathLike, dtype: torch.dtype = torch.float64, max_frames: int | None = None
) -> Trajectory:
    """A DeePMD "npy system" directory (or a directory of systems with the same atoms).

    Frames of all ``set.*`` folders are concatenated (they are snapshots: ``dt`` is None);
    ``cells`` holds the periodic box rows, ``None`` for systems that DeePMD-kit's ``nopbc``
    file marks as non-periodic (their ``box.npy`` is ignored, as DeePMD-kit does), which
    ``info["pbc"]`` records. Units: Å, eV, eV/Å.

    Raises:
        ValueError: systems of different atoms, or periodic and non-periodic systems
            together.
    """
    path = Path(path)
    systems = (
        [path]
        if (path / "type.raw").is_file()
        else sorted(p for p in path.iterdir() if (p / "type.raw").is_file())
    )
    if not systems:
        raise ValueError(f"{path}: expected a DeePMD system (type.raw, set.*/) or a folder of them")
    z0, pbc0, pos, energy, force, box = None, None, [], [], [], []
    for system in systems:
        z, p, e, f, b, pbc = _deepmd_system(system)
        if z0 is not None and not np.array_equal(z, z0):
            raise ValueError(
                f"{system}: atoms (type.raw) differ from {systems[0]}; load systems separately"
            )
        if pbc0 is not None and pbc != pbc0:
            raise ValueError(
                f"{system}: {'periodic' if pbc else 'non-periodic (nopbc)'}, but {systems[0]} "
                f"is {'periodic' if pbc0 else 'non-periodic (nopbc)'}; load systems separately"
            )
        z0, pbc0 = z, pbc
        pos += p
        energy += e
        force += f
        box += b
    sl = slice(None, max_frames)

    def cat(parts: list[np.ndarray | None]) -> Tensor | None:
        if any(x is None for x in parts):
            return None
        return _tensor(np.concatenate(parts)[sl], dtype)

    return Trajectory(
        positions=cat(pos),
        z=torch.as_tensor(z0),
        energies=cat(energy),
        forces=cat(force),
        cells=cat(box),
        energy_unit="eV",
        info={"source": str(path), "systems": [str(s) for s in systems], "pbc": pbc0},
    )


def _candidate_files(root: Path, molecule: str) -> list[Path]:
    names = [
        MD17.FILES.get(molecule, ""),
        f"md17_{molecule}.npz",
        f"{molecule}.npz",
        f"{molecule}_dft.npz",
        f"rmd17_{molecule}.npz",
    ]
    if molecule in MD17.FILES and MD17.FILES[molecule].endswith(".zip"):
        stem = MD17.FILES[molecule][:-4]
        names = [f"{stem}-train.npz", f"{stem}-test.npz", *names]
    out = []
    for name in filter(None, names):
        for folder in (root, root / molecule, root / molecule / "raw", root / "raw"):
            out.append(folder / name)
    return out


def load_md17(
    path_or_root: str | os.PathLike,
    molecule: str | None = None,
    *,
    energy_unit: str = "eV",
    dtype: torch.dtype = torch.float64,
    dt: float | None = None,
    max_frames: int | None = None,
) -> Trajectory:
    """Load an MD17-style trajectory from a local file or directory (no network).

    Args:
        path_or_root: an ``.npz`` file, a DeePMD system directory, or a root directory that
            holds ``molecule``'s MD17 file (``md17_<molecule>.npz``, the names of
            :attr:`MD17.FILES`, optionally under ``<molecule>/raw/`` as PyG stores them).
        molecule: MD17 molecule name (``"ethanol"``, ``"aspirin"``, ...) when
            ``path_or_root`` is a root directory.
        energy_unit: ``"eV"`` (convert; MD17 stores kcal/mol) or ``"native"``.
        dtype: floating dtype of the returned tensors.
        dt: time between frames in fs (default: 0.5 for original ``md17_*.npz``
            trajectories, otherwise None: frames are samples, not consecutive); given for a
            DeePMD system, it declares its frames consecutive.
        max_frames: keep only the first frames.

    Raises:
        FileNotFoundError: nothing matching was found (the message says how to download).
        ValueError: an unknown file layout, or frames of different molecules.
    """
    if max_frames is not None and (not is_int(max_frames) or max_frames < 1):
        raise ValueError(f"max_frames: expected None or a positive int, got {max_frames!r}")
    max_frames = None if max_frames is None else int(max_frames)
    _unit_factor("kcal/mol", energy_unit)  # refuses an unknown unit for every layout
    path = Path(path_or_root)
    if path.is_file():
        if path.suffix != ".npz":
            raise ValueError(f"path_or_root: expected an .npz file or a directory, got {path}")
        return _load_npz(path, energy_unit, dtype, dt, max_frames)
    if not path.exists():
        raise FileNotFoundError(f"path_or_root: {path} does not exist")
    if (path / "type.raw").is_file() or any(
        (p / "type.raw").is_file() for p in path.iterdir() if p.is_dir()
    ):
        traj = load_deepmd(path, dtype, max_frames)  # eV, its native unit
        return traj if dt is None else replace(traj, dt=dt)
    if molecule is None:
        npz = sorted(path.glob("*.npz"))
        if len(npz) == 1:
            return _load_npz(npz[0], energy_unit, dtype, dt, max_frames)
        raise ValueError(
            f"molecule: {path} is a directory with {len(npz)} npz files; pass molecule=..."
            f" (one of {sorted(MD17.FILES)}) or a file path"
        )
    for candidate in _candidate_files(path, molecule):
        if candidate.is_file():
            return _load_npz(candidate, energy_unit, dtype, dt, max_frames)
    raise FileNotFoundError(
        f"load_md17: no file for molecule {molecule!r} under {path}; download it with "
        f"symgraph.data.trajectories.MD17({str(path)!r}, {molecule!r}, download=True) "
        f"(from {MD17.BASE_URL})"
    )


def finite_difference_velocities(positions: Tensor, dt: float) -> Tensor:
    """Velocities ``[T, N, 3]`` (Å/fs) from consecutive positions ``[T, N, 3]`` (Å).

    Central differences inside, one-sided at both ends (MD17 stores no velocities).
    """
    if not isinstance(positions, Tensor):
        raise TypeError(f"positions: expected a tensor [T, N, 3], got {type(positions).__name__}")
    if positions.dim() != 3 or positions.shape[0] < 2:
        raise ValueError(f"positions: expected [T, N, 3] with T >= 2, got {list(positions.shape)}")
    if not positions.is_floating_point():  # integer steps would be truncated
        positions = positions.to(torch.get_default_dtype())
    if not dt > 0:
        raise ValueError(f"dt: expected a positive time step in fs, got {dt!r}")
    v = torch.empty_like(positions)
    v[1:-1] = (positions[2:] - positions[:-2]) / (2 * dt)
    v[0] = (positions[1] - positions[0]) / dt
    v[-1] = (positions[-1] - positions[-2]) / dt
    return v


class MD17(torch.utils.data.Dataset):
    """The MD17 data sets (Chmiela et al. 2017, 2018), one PyG ``Data`` per frame.

    Reads ``root/<file>`` (or ``root/<molecule>/raw/<file>``) when present; otherwise,
    with ``download=True``, downloads the official file from :attr:`BASE_URL`. Frames are
    PyG ``Data(z, pos, energy, force)`` in Å and eV (eV/Å); :attr:`trajectory` is the whole
    :class:`Trajectory`.

    Args:
        root: directory of the files.
        molecule: a key of :attr:`FILES` (``"ethanol"``, ``"aspirin"``, ...,
            ``"ethanol CCSD(T)"`` for the coupled-cluster sets, which have train and test
            files).
        split: ``"train"`` or ``"test"`` for the CCSD(T) sets; ignored otherwise.
        download: fetch the file when it is missing (network needed).
        dtype: floating dtype.
    """

    BASE_URL = "http://quantum-machine.org/gdml/data/npz"
    FILES = {
        "benzene": "md17_benzene2017.npz",
        "uracil": "md17_uracil.npz",
        "naphthalene": "md17_naphthalene.npz",
        "aspirin": "md17_aspirin.npz",
        "salicylic acid": "md17_salicylic.npz",
        "malonaldehyde": "md17_malonaldehyde.npz",
        "ethanol": "md17_ethanol.npz",
        "toluene": "md17_toluene.npz",
        "paracetamol": "paracetamol_dft.npz",
        "azobenzene": "azobenzene_dft.npz",
        "benzene CCSD(T)": "benzene_ccsd_t.zip",
        "aspirin CCSD": "aspirin_ccsd.zip",
        "malonaldehyde CCSD(T)": "malonaldehyde_ccsd_t.zip",
        "ethanol CCSD(T)": "ethanol_ccsd_t.zip",
        "toluene CCSD(T)": "toluene_ccsd_t.zip",
    }

    def __init__(
        self,
        root: str | os.PathLike,
        molecule: str = "ethanol",
        split: str = "train",
        download: bool = False,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if molecule not in self.FILES:
            raise ValueError(f"molecule: expected one of {sorted(self.FILES)}, got {molecule!r}")
        if split not in ("train", "test"):
            raise ValueError(f"split: expected 'train' or 'test', got {split!r}")
        self.root, self.molecule, self.split = Path(root), molecule, split
        path = self.local_path()
        if path is None:
            if not download:
                raise FileNotFoundError(
                    f"MD17: {self.FILES[molecule]} not found under {self.root}; pass "
                    f"download=True to fetch it from {self.url}"
                )
            self.download()
            path = self.local_path()
            if path is None:  # pragma: no cover - depends on the remote archive
                raise FileNotFoundError(f"MD17: download of {self.url} gave no usable file")
        self.path = path
        self.trajectory = load_md17(path, dtype=dtype)

    @property
    def url(self) -> str:
        return f"{self.BASE_URL}/{self.FILES[self.molecule]}"

    @property
    def file_name(self) -> str:
        name = self.FILES[self.molecule]
        return f"{name[:-4]}-{self.split}.npz" if name.endswith(".zip") else name

    def local_path(self) -> Path | None:
        for folder in (self.root, self.root / self.molecule / "raw", self.root / "raw"):
            if (folder / self.file_name).is_file():
                return folder / self.file_name
        return None

    def download(self) -> None:  # pragma: no cover - needs the network
        from symgraph.data.download import fetch_into

        fetch_into(self.url, self.root)  # complete or not at all

    def __len__(self) -> int:
        return len(self.trajectory)

    def __getitem__(self, index: int) -> Any:
        from torch_geometric.data import Data

        traj = self.trajectory
        data = Data(z=traj.z, pos=traj.positions[index])
        if traj.energies is not None:
            data.energy = traj.energies[index].reshape(1)
        if traj.forces is not None:
            data.force = traj.forces[index]
        return data


def _energies_2d(trajectory: Trajectory) -> Tensor | None:
    """A trajectory's energies as ``[T, B]`` (a single molecule's ``[T]`` gets a column)."""
    energies = trajectory.energies
    return energies[:, None] if energies is not None and energies.dim() == 1 else energies


def stack_trajectories(trajectories: Sequence[Trajectory]) -> Trajectory:
    """Pack trajectories of equal length and time step into one batch of molecules.

    Each trajectory's molecules keep their own index (after those of the trajectories
    before it) in ``batch``. Velocities, energies (``[T, B]``) and forces are kept when
    every trajectory has them and dropped when none has; periodic cells cannot be packed.

    Raises:
        ValueError: different lengths, time steps or energy units, velocities/energies/
            forces in some trajectories only, or a trajectory with periodic cells.
    """
    if not trajectories:
        raise ValueError("trajectories: expected at least one Trajectory")
    first = trajectories[0]
    t = len(first)
    for i, tr in enumerate(trajectories):
        if not isinstance(tr, Trajectory):
            raise TypeError(f"trajectories[{i}]: expected a Trajectory, got {type(tr).__name__}")
        if len(tr) != t:
            raise ValueError(f"trajectories[{i}]: expected {t} frames, got {len(tr)}")
        if not same_time_step(tr.dt, first.dt):
            raise ValueError(
                f"trajectories[{i}]: expected dt={first.dt} as trajectories[0], got {tr.dt}"
            )
        if tr.energy_unit != first.energy_unit:
            raise ValueError(
                f"trajectories[{i}]: expected energy_unit {first.energy_unit!r} as "
                f"trajectories[0], got {tr.energy_unit!r}"
            )
        if tr.cells is not None:
            raise ValueError(
                f"trajectories[{i}]: expected no periodic cells (each system's cell would be "
                "lost in one batch), got cells"
            )

    def packed(name: str, get: Callable[[Trajectory], Tensor | None]) -> Tensor | None:
        """``get`` of every trajectory, side by side along the atoms/molecules axis 1."""
        values = [get(tr) for tr in trajectories]
        have = [v is not None for v in values]
        if not any(have):
            return None
        if not all(have):
            raise ValueError(
                f"trajectories[{have.index(False)}]: expected {name} as in the others, got None"
            )
        return torch.cat(values, dim=1)

    device = first.positions.device
    batches, offset = [], 0
    for tr in trajectories:
        own = tr.batch if tr.batch is not None else torch.zeros(tr.num_atoms, dtype=torch.long)
        batches.append(own.to(device) + offset)
        offset += tr.num_graphs
    return Trajectory(
        positions=torch.cat([tr.positions for tr in trajectories], dim=1),
        velocities=packed("velocities", lambda tr: tr.velocities),
        z=torch.cat([tr.z for tr in trajectories]),
        masses=torch.cat([tr.masses for tr in trajectories]),
        batch=torch.cat(batches),
        energies=packed("energies", _energies_2d),
        forces=packed("forces", lambda tr: tr.forces),
        dt=first.dt,
        energy_unit=first.energy_unit,
    )
