"""QM9 as a PyG ``InMemoryDataset`` in symgraph's molecule layout.

Sources (``source=``):

- ``"qm9pack"``: the full 130,831 molecules from the ``qm9pack`` PyPI package
  (``pip install qm9pack``, or the ``qm9`` extra). Its CSVs are read from the installed
  package folder (the package is never imported: its ``__init__`` needs
  ``pkg_resources``) and their sha256 are checked against :data:`QM9PACK_SHA256`.
- ``"csv"``: local files in the qm9pack CSV format (``.csv`` or gzip ``.csv.gz``) given by
  ``csv_files``, e.g. the samples in ``shared/data/qm9``; optional ``checksums``
  (``{file name: sha256}``) are verified the same way.
- ``"pyg"``: ``torch_geometric.datasets.QM9`` (downloads from the network into
  ``root/pyg``), each molecule converted by :func:`from_pyg_qm9`.

Every molecule becomes the graph of :mod:`symgraph.data.molecules` (bonds perceived from
the DFT geometry, non-bonded pairs within ``cutoff`` Å) plus

- ``y [1, 12]`` float32, the targets :data:`TARGETS` in :data:`UNITS` (PyG's units: energies
  in eV; ``U0, U, H, G`` are *atomization* energies, the total energy minus the atom
  references :data:`ATOM_REFERENCES_HARTREE`, so negative); with ``target=`` only the chosen
  columns are kept (``y [1, len(targets)]``);
- ``idx [1]`` int64, the QM9 molecule number ``N`` of ``dsgdb9nsd_N.xyz`` (1-based, gaps where
  the 3,054 uncharacterized molecules were dropped; unlike PyG's ``idx``, which is the
  0-based position in its dataset);
- ``name`` (``"gdb_N"``, as PyG) and ``smiles`` (the QM9 SMILES string).

Report an MAE in :data:`REPORT_UNITS` by multiplying with :data:`REPORT_FACTOR` (1000 for the
energy targets: eV -> meV).

The processed cache (``root/processed/qm9_<source>_<hash>.pt``, the hash covering every
setting that changes its content, ``pre_transform`` and ``pre_filter`` by
:func:`~symgraph.data.transforms.transform_fingerprint`)
is written to a temporary file in the same folder and moved into place with
``os.replace``: an interrupted run leaves no half-built cache.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import importlib.util
import io
import json
import numbers
import os
import random
import re
import warnings
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch_geometric.data import Data, InMemoryDataset

from symgraph.checks import as_number, is_int, is_real
from symgraph.data.molecules import DEFAULT_CUTOFF, ELEMENTS, from_geometry
from symgraph.data.transforms import fresh_hook, transform_fingerprint
from symgraph.files import atomic_write

__all__ = [
    "TARGETS",
    "UNITS",
    "REPORT_FACTOR",
    "REPORT_UNITS",
    "HARTREE_TO_EV",
    "ATOM_REFERENCES_HARTREE",
    "QM9PACK_FILES",
    "QM9PACK_SHA256",
    "PYG_TARGET_COLUMNS",
    "QM9Record",
    "target_index",
    "atomization_energy",
    "qm9pack_data_dir",
    "sha256_file",
    "read_qm9_csv",
    "record_to_data",
    "from_pyg_qm9",
    "QM9",
]

HARTREE_TO_EV: float = 27.211386245988
"""1 Hartree in eV (CODATA 2018)."""

TARGETS: tuple[str, ...] = (
    "mu", "alpha", "homo", "lumo", "gap", "r2", "zpve", "U0", "U", "H", "G", "Cv",
)  # fmt: skip
"""Names of the 12 columns of ``y``, in PyG's order."""

UNITS: dict[str, str] = {
    "mu": "D",
    "alpha": "bohr^3",
    "homo": "eV",
    "lumo": "eV",
    "gap": "eV",
    "r2": "bohr^2",
    "zpve": "eV",
    "U0": "eV",
    "U": "eV",
    "H": "eV",
    "G": "eV",
    "Cv": "cal/mol/K",
}
"""Unit of each stored target (``U0, U, H, G`` are atomization energies)."""

REPORT_FACTOR: dict[str, float] = {k: 1000.0 if u == "eV" else 1.0 for k, u in UNITS.items()}
"""Multiply an error in :data:`UNITS` by this to get it in :data:`REPORT_UNITS`."""

REPORT_UNITS: dict[str, str] = {k: "meV" if u == "eV" else u for k, u in UNITS.items()}

ATOM_REFERENCES_HARTREE: dict[str, dict[int, float]] = {
    "U0": {1: -0.500273, 6: -37.846772, 7: -54.583861, 8: -75.064579, 9: -99.718730},
    "U": {1: -0.498857, 6: -37.845355, 7: -54.582445, 8: -75.063163, 9: -99.717314},
    "H": {1: -0.497912, 6: -37.844411, 7: -54.581501, 8: -75.062219, 9: -99.716370},
    "G": {1: -0.510927, 6: -37.861317, 7: -54.598897, 8: -75.079532, 9: -99.733544},
}
"""Isolated-atom energies (Hartree, B3LYP/6-31G(2df,p)) by atomic number, per energy."""

QM9PACK_FILES: tuple[str, ...] = ("qm9_part1.csv", "qm9_part2.csv", "qm9_part3.csv")

QM9PACK_SHA256: dict[str, str] = {
    "qm9_part1.csv": "19f0a5d595462d52cd82eef3370f3e9eb55a1f52cb14985657200349568deff3",
    "qm9_part2.csv": "2bca113fdc0b28a13563c80ed9b240e934f3da6c64c64fe74ddb4f0f36036e61",
    "qm9_part3.csv": "9c5efb5733d2af149db8d95d36ff198b4ffed12d9f7b344220a1e5877d5c6a43",
    "qm9_polarizability.csv": "1729ebca7da76850ca1091c050933901c84b90edb30d06f34df1ebd47789d23a",
}
"""sha256 of the files of qm9pack 1.0.3 (``qm9pack/data``)."""

PYG_TARGET_COLUMNS: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6, 12, 13, 14, 15, 11)
"""Columns of PyG's ``QM9.y [1, 19]`` that give :data:`TARGETS` (atomization U0/U/H/G)."""

_FORMAT_VERSION = 1  # bump when the processed layout changes

# qm9pack column -> (target, factor); energies U0/U/H/G get the atom references subtracted
_CSV_TARGETS: tuple[tuple[str, str, float], ...] = (
    ("mu", "Dipole_debye", 1.0),
    ("alpha", "Polarizability_bohr3", 1.0),
    ("homo", "HOMO_au", HARTREE_TO_EV),
    ("lumo", "LUMO_au", HARTREE_TO_EV),
    ("gap", "HOMO_LUMO_gap_au", HARTREE_TO_EV),
    ("r2", "R2_bohr2", 1.0),
    ("zpve", "ZPVE_au", HARTREE_TO_EV),
    ("U0", "InternalEnergy_0K_au", HARTREE_TO_EV),
    ("U", "InternalEnergy_298K_au", HARTREE_TO_EV),
    ("H", "Enthalphy_298K_au", HARTREE_TO_EV),
    ("G", "GibbsFreeEnergy_298K_au", HARTREE_TO_EV),
    ("Cv", "Heatcapacity_Cv_cal_mol_K", 1.0),
)
_COLUMNS: tuple[str, ...] = ("Index", "SMILES", "N_atoms", "Elements", "XYZ_Ang") + tuple(
    column for _, column, _ in _CSV_TARGETS
)
_SYMBOL_TO_Z = {"H": 1, "C": 6, "N": 7, "O": 8, "F": 9}
_SYMBOL = re.compile(r"'([A-Za-z]+)'")


def target_index(name: str | int) -> int:
    """Column of ``y`` holding target ``name`` (one of :data:`TARGETS`, or an index)."""
    if is_int(name):
        name = int(name)
        if 0 <= name < len(TARGETS):
            return name
        raise ValueError(f"target: index {name} out of range [0, {len(TARGETS)})")
    if name in TARGETS:
        return TARGETS.index(name)
    raise ValueError(f"target: unknown QM9 target {name!r}; valid names: {', '.join(TARGETS)}")


def atomization_energy(total_hartree: float, z: Sequence[int], kind: str = "U0") -> float:
    """Atomization energy in eV: ``(E_total - sum_atoms E_ref(z)) * HARTREE_TO_EV``.

    Args:
        total_hartree: total energy of the molecule (Hartree).
        z: ``[N]`` atomic numbers (H, C, N, O, F).
        kind: which reference: ``"U0"``, ``"U"``, ``"H"`` or ``"G"``.
    """
    if kind not in ATOM_REFERENCES_HARTREE:
        raise ValueError(f"kind: expected one of U0, U, H, G, got {kind!r}")
    refs = ATOM_REFERENCES_HARTREE[kind]
    try:
        reference = sum(refs[int(number)] for number in z)
    except KeyError as err:
        raise ValueError(f"z: atomic number {err.args[0]} has no QM9 reference energy") from err
    return (total_hartree - reference) * HARTREE_TO_EV


def qm9pack_data_dir() -> Path:
    """Folder of the installed ``qm9pack`` CSVs (found without importing the package)."""
    spec = importlib.util.find_spec("qm9pack")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "QM9(source='qm9pack') needs the qm9pack package: `pip install qm9pack` "
            "(or symgraph[qm9]); or use source='pyg' (network) or source='csv'"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class QM9Record:
    """One parsed QM9 row: ``z [N]`` int64, ``pos [N, 3]`` float64 Å, ``y [12]`` float64."""

    index: int
    smiles: str
    z: np.ndarray
    pos: np.ndarray
    y: np.ndarray


def _corrupt(path: Path, detail: str) -> ValueError:
    return ValueError(f"QM9 file {str(path)!r}: {detail}; the file looks truncated or corrupt")


def _read_text(path: Path, expected_sha256: str | None) -> str:
    """Whole file as text (gunzipped for ``.gz``), after an optional checksum check."""
    if not path.is_file():
        raise FileNotFoundError(f"QM9 file {str(path)!r} does not exist")
    raw = path.read_bytes()
    if expected_sha256 is not None:
        got = hashlib.sha256(raw).hexdigest()
        if got != expected_sha256.lower():
            raise _corrupt(path, f"sha256 {got} does not match the expected {expected_sha256}")
    if path.name.endswith(".gz"):
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise _corrupt(path, f"gzip data could not be read ({err})") from err
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise _corrupt(path, f"not UTF-8 text ({err})") from err


def _raw_rows(path: Path, expected_sha256: str | None) -> Iterator[tuple[int, tuple[str, ...]]]:
    """``(line, needed columns as strings)`` for every row, checking the row structure."""
    reader = csv.reader(io.StringIO(_read_text(path, expected_sha256), newline=""), strict=True)
    try:
        header = next(reader)
    except (StopIteration, csv.Error) as err:
        raise _corrupt(path, "no header line") from err
    missing = [c for c in _COLUMNS if c not in header]
    if missing:
        raise _corrupt(path, f"expected qm9pack columns, missing {missing}")
    where = [header.index(c) for c in _COLUMNS]
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            raise _corrupt(path, f"line {reader.line_num}: {err}") from err
        if len(row) != len(header):
            raise _corrupt(
                path, f"line {reader.line_num}: expected {len(header)} fields, got {len(row)}"
            )
        yield reader.line_num, tuple(row[i] for i in where)


def _unique_rows(
    files: Sequence[tuple[Path, str | None]],
) -> list[tuple[Path, int, tuple[str, ...]]]:
    """``(path, line, fields)`` of every row of ``files`` (``(path, sha256 or None)``), in
    order; a file without rows, or a molecule (``Index``) listed twice, raises ``ValueError``
    naming the files and lines (overlapping files would repeat molecules across splits)."""
    rows: list[tuple[Path, int, tuple[str, ...]]] = []
    seen: dict[str, tuple[Path, int]] = {}
    for path, sha in files:
        before = len(rows)
        for line, fields in _raw_rows(path, sha):
            index = fields[0].strip()
            if index in seen:
                first, first_line = seen[index]
                raise ValueError(
                    f"QM9 file {str(path)!r}: line {line} repeats molecule Index {index} of "
                    f"{str(first)!r}, line {first_line}; pass files that do not overlap "
                    "(a repeated molecule would sit in several splits)"
                )
            seen[index] = (path, line)
            rows.append((path, line, fields))
        if len(rows) == before:
            raise _corrupt(path, "a header line but no molecule rows")
    return rows


def _parse(path: Path, line: int, fields: tuple[str, ...]) -> QM9Record:
    index, smiles, n_atoms, elements, xyz, *targets = fields
    try:
        n = int(n_atoms)
        symbols = _SYMBOL.findall(elements)
        unknown = sorted(set(symbols) - set(_SYMBOL_TO_Z))
        if unknown:
            raise ValueError(f"elements {unknown} outside {', '.join(ELEMENTS)}")
        z = np.array([_SYMBOL_TO_Z[s] for s in symbols], dtype=np.int64)
        numbers = xyz.replace("[", " ").replace("]", " ").split(",")
        pos = np.array(numbers, dtype=np.float64).reshape(-1, 3)
        if not (len(z) == n and pos.shape == (n, 3)):
            raise ValueError(
                f"N_atoms={n} but {len(z)} elements and {pos.shape[0]} coordinate rows"
            )
        values = np.array(targets, dtype=np.float64)
        if not np.isfinite(values).all() or not np.isfinite(pos).all():
            raise ValueError("non-finite number")
        y = values * np.array([factor for _, _, factor in _CSV_TARGETS])
        for name in ("U0", "U", "H", "G"):
            col = TARGETS.index(name)
            y[col] = atomization_energy(values[col], z, name)
        return QM9Record(int(index), smiles, z, pos, y)
    except ValueError as err:
        raise _corrupt(path, f"line {line}: could not parse the molecule ({err})") from err


def read_qm9_csv(
    path: str | os.PathLike, expected_sha256: str | None = None
) -> Iterator[QM9Record]:
    """Parse a qm9pack-format CSV (or ``.csv.gz``) into :class:`QM9Record`\\ s.

    Targets come converted to :data:`UNITS`. Raises ``ValueError`` naming the file (and
    line) on a checksum mismatch, unreadable gzip data or a malformed row.
    """
    path = Path(path)
    for line, fields in _raw_rows(path, expected_sha256):
        yield _parse(path, line, fields)


def record_to_data(record: QM9Record, cutoff: float | None = DEFAULT_CUTOFF) -> tuple[Data, str]:
    """Graph of one QM9 molecule; returns ``(data, bond perception method)``."""
    data, method = from_geometry(record.z, record.pos, cutoff=cutoff, charge=0)
    data.y = torch.tensor(record.y, dtype=torch.float32).view(1, -1)
    data.idx = torch.tensor([record.index], dtype=torch.long)
    data.name = f"gdb_{record.index}"
    data.smiles = record.smiles
    return data, method


def from_pyg_qm9(data: Data, cutoff: float | None = DEFAULT_CUTOFF) -> tuple[Data, str]:
    """Convert one molecule of ``torch_geometric.datasets.QM9`` to symgraph's layout.

    Uses its ``z``, ``pos`` (Å), ``y [1, 19]`` (columns :data:`PYG_TARGET_COLUMNS`), ``name``
    (``"gdb_N"``) and ``smiles``; PyG's SDF bonds are not used, bonds are perceived from the
    geometry exactly as for the CSV sources.

    Returns:
        ``(data, bond perception method)``.
    """
    y = getattr(data, "y", None)
    if y is None or y.dim() != 2 or y.shape[1] < 16:
        got = None if y is None else list(y.shape)
        raise ValueError(f"from_pyg_qm9: `data.y` expected shape [1, 19] (PyG QM9), got {got}")
    name = getattr(data, "name", None)
    if not (isinstance(name, str) and re.fullmatch(r"gdb_\d+", name)):
        raise ValueError(f"from_pyg_qm9: `data.name` expected 'gdb_<N>', got {name!r}")
    record = QM9Record(
        index=int(name[4:]),
        smiles=str(getattr(data, "smiles", "")),
        z=data.z.detach().cpu().numpy().astype(np.int64),
        pos=data.pos.detach().cpu().numpy().astype(np.float64),
        y=y[0, list(PYG_TARGET_COLUMNS)].detach().cpu().double().numpy(),
    )
    return record_to_data(record, cutoff)


def _target_columns(target: str | int | Sequence[str | int] | None) -> list[int] | None:
    if target is None:
        return None
    if isinstance(target, str | numbers.Integral):
        return [target_index(target)]
    columns = [target_index(t) for t in target]
    if not columns:
        raise ValueError("target: expected a target name, an index or a non-empty list, got []")
    return columns


class QM9(InMemoryDataset):
    """QM9 (130,831 molecules) with perceived bonds, radius edges and the 12 targets.

    Args:
        root: folder of the processed cache (``root/processed``; ``root/pyg`` for ``"pyg"``).
        source: ``"qm9pack"`` (installed package, full set), ``"csv"`` (``csv_files``) or
            ``"pyg"`` (PyG's download).
        target: ``None`` keeps all 12 columns of ``y``; a name of :data:`TARGETS`, a column
            index or a list of them keeps those (``y [1, k]``; see ``target_names``).
        subset: ``None`` for every molecule, or ``M``: the first ``M`` molecules in file
            order (ascending QM9 number), or with ``subset_seed`` a uniform random sample of
            ``M`` (``random.Random(subset_seed).sample``), kept in ascending order. Only the
            chosen molecules are processed.
        cutoff: radius (Å) of the non-bonded edges, ``None`` for bond edges only.
        transform, pre_transform, pre_filter: as in PyG.
        force_reload: rebuild the processed cache.
        csv_files: for ``source="csv"``, qm9pack-format ``.csv``/``.csv.gz`` files read in
            the given order.
        checksums: for ``source="csv"``, optional ``{file name: sha256}`` to verify.
        subset_seed: see ``subset``.
        log: print PyG's processing messages.
    """

    SOURCES = ("qm9pack", "csv", "pyg")

    def __init__(
        self,
        root: str | os.PathLike,
        source: str = "qm9pack",
        target: str | int | Sequence[str | int] | None = None,
        subset: int | None = None,
        cutoff: float | None = DEFAULT_CUTOFF,
        transform: Callable[[Data], Data] | None = None,
        pre_transform: Callable[[Data], Data] | None = None,
        force_reload: bool = False,
        csv_files: Sequence[str | os.PathLike] | None = None,
        checksums: Mapping[str, str] | None = None,
        subset_seed: int | None = None,
        pre_filter: Callable[[Data], bool] | None = None,
        log: bool = True,
    ) -> None:
        if source not in self.SOURCES:
            raise ValueError(f"source: expected one of {self.SOURCES}, got {source!r}")
        if subset is not None and (not is_int(subset) or subset < 1):
            raise ValueError(f"subset: expected None or a positive int, got {subset!r}")
        if cutoff is not None and not (is_real(cutoff) and cutoff > 0):
            raise ValueError(f"cutoff: expected a positive number (Å) or None, got {cutoff!r}")
        self._columns = _target_columns(target)
        self.source = source
        self.subset = as_number(subset)
        if subset_seed is not None and subset is None:
            raise ValueError(
                f"subset_seed: used only to draw subset=M molecules, got subset_seed="
                f"{subset_seed} with subset=None (every molecule, in file order)"
            )
        self.subset_seed = as_number(subset_seed)
        self.cutoff = None if cutoff is None else float(cutoff)
        if checksums is not None and source != "csv":
            raise ValueError(f"checksums: only used with source='csv', got source={source!r}")
        self.checksums = dict(checksums or {})
        self.csv_files = self._check_csv_files(source, csv_files)
        unknown = sorted(set(self.checksums) - {p.name for p in self.csv_files})
        if unknown:
            raise ValueError(f"checksums: {unknown} name none of the csv_files")
        self._cache_name = self._make_cache_name(pre_transform, pre_filter)
        super().__init__(
            str(root), transform, pre_transform, pre_filter, log=log, force_reload=force_reload
        )
        self.load(self.processed_paths[0])
        if self._columns is not None:
            self._data.y = self._data.y[:, self._columns]
        self.target_names = tuple(TARGETS[i] for i in (self._columns or range(len(TARGETS))))

    # -- PyG hooks ------------------------------------------------------------------------

    @property
    def raw_file_names(self) -> list[str]:
        return []  # raw files live in the qm9pack package, in csv_files, or under root/pyg

    @property
    def processed_file_names(self) -> list[str]:
        return [self._cache_name]

    def process(self) -> None:
        data_list, methods = [], {}
        # copies in the state the cache key describes (a seeded transform draws afresh)
        pre_filter, pre_transform = fresh_hook(self.pre_filter), fresh_hook(self.pre_transform)
        for data, method in self._molecules():
            methods[method] = methods.get(method, 0) + 1
            if pre_filter is not None and not pre_filter(data):
                continue
            if pre_transform is not None:
                data = pre_transform(data)
            data_list.append(data)
        if not data_list:
            raise ValueError("QM9: no molecule left to store (check `subset` and `pre_filter`)")
        if methods.get("connectivity"):
            warnings.warn(
                f"QM9: bond orders could not be assigned for {methods['connectivity']} "
                "molecules; their bonds are typed 'single'",
                stacklevel=2,
            )
        self._save_atomic(data_list, Path(self.processed_paths[0]))

    # -- helpers --------------------------------------------------------------------------

    @staticmethod
    def _check_csv_files(source: str, csv_files: Sequence | None) -> tuple[Path, ...]:
        if source != "csv":
            if csv_files is not None:
                raise ValueError(f"csv_files: only used with source='csv', got source={source!r}")
            return ()
        if not csv_files or isinstance(csv_files, str | os.PathLike):
            raise ValueError(
                f"csv_files: source='csv' expects a non-empty list of paths, got {csv_files!r}"
            )
        paths = tuple(Path(p) for p in csv_files)
        for p in paths:
            if not p.is_file():
                raise FileNotFoundError(f"csv_files: {str(p)!r} does not exist")
        return paths

    def _make_cache_name(self, pre_transform: object, pre_filter: object) -> str:
        key: dict[str, object] = {
            "version": _FORMAT_VERSION,
            "source": self.source,
            "cutoff": self.cutoff,
            "subset": self.subset,
            "subset_seed": self.subset_seed if self.subset is not None else None,
        }
        for name, hook in (("pre_transform", pre_transform), ("pre_filter", pre_filter)):
            if hook is not None:  # absent when unused, so default caches keep their names
                key[name] = transform_fingerprint(hook)
        if self.source == "csv":  # content identity, so that edited files are re-read
            key["files"] = [[p.name, self._verified_sha256(p)] for p in self.csv_files]
        elif self.source == "qm9pack":
            key["files"] = [QM9PACK_SHA256[f] for f in QM9PACK_FILES]
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
        return f"qm9_{self.source}_{digest}.pt"

    def _verified_sha256(self, path: Path) -> str:
        """``path``'s sha256, checked against ``checksums`` before any cache is looked up
        (a cache built from a corrupt file must not be reused once its checksum is given)."""
        got = sha256_file(path)
        expected = self.checksums.get(path.name)
        if expected is not None and got != expected.lower():
            raise _corrupt(path, f"sha256 {got} does not match the expected {expected}")
        return got

    def _choose(self, total: int) -> list[int]:
        if self.subset is None:
            return list(range(total))
        if self.subset > total:
            raise ValueError(f"subset: asked for {self.subset} molecules, the source has {total}")
        if self.subset_seed is None:
            return list(range(self.subset))
        return sorted(random.Random(self.subset_seed).sample(range(total), self.subset))

    def _molecules(self) -> Iterator[tuple[Data, str]]:
        if self.source == "pyg":
            from torch_geometric.datasets import QM9 as PygQM9  # network on first use

            pyg = PygQM9(os.path.join(self.root, "pyg"))
            for i in self._choose(len(pyg)):
                yield from_pyg_qm9(pyg[i], self.cutoff)
            return
        if self.source == "qm9pack":
            folder = qm9pack_data_dir()
            files = [(folder / f, QM9PACK_SHA256[f]) for f in QM9PACK_FILES]
        else:
            files = [(p, self.checksums.get(p.name)) for p in self.csv_files]
        rows = _unique_rows(files)
        for i in self._choose(len(rows)):
            yield record_to_data(_parse(*rows[i]), self.cutoff)

    def _save_atomic(self, data_list: list[Data], path: Path) -> None:
        """Collate and write to a temp file in the same folder, then ``os.replace``."""
        data, slices = self.collate(data_list)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path, "wb") as out:  # readable as the umask allows
            torch.save((data.to_dict(), slices, data.__class__), out)

    def __repr__(self) -> str:
        targets = "all" if self._columns is None else ",".join(self.target_names)
        return f"QM9({len(self)}, source={self.source!r}, target={targets}, cutoff={self.cutoff})"
