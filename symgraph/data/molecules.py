"""Molecules as PyG graphs: converters from ase and rdkit, and their shared featurisation.

Every converter returns a :class:`torch_geometric.data.Data` with the same layout:

- ``z [N]`` int64 atomic numbers;
- ``pos [N, 3]`` float32 Cartesian coordinates in Å;
- ``x [N, F]`` float32 atom features, ``F = atom_feature_dim(elements)``
  (:data:`ATOM_FEATURE_DIM` = 13 for the default elements H, C, N, O, F), columns in the
  order of :func:`atom_feature_names`:

  ======================  =====================================================
  columns                 meaning
  ======================  =====================================================
  ``0 .. k-1``            one-hot element over ``elements`` (default H, C, N, O, F)
  ``k``                   atomic number / 9
  ``k+1``                 aromatic (0/1)
  ``k+2, k+3, k+4``       hybridisation one-hot: sp, sp2, sp3 (all 0 otherwise, e.g. H)
  ``k+5``                 number of attached hydrogens / 4 (explicit H atoms + implicit)
  ``k+6``                 formal charge (e)
  ``k+7``                 in a ring (0/1)
  ======================  =====================================================

- ``edge_index [2, E]`` int64, the union of the chemical bonds (both directions) and of
  all pairs closer than ``cutoff`` (Å, strict ``<``; default :data:`DEFAULT_CUTOFF` =
  5.0 Å, the cutoff of SchNet/PaiNN-style QM9 models; ``cutoff=None`` keeps bonds only).
  Edges are sorted by target ``edge_index[1]``, then by source ``edge_index[0]``; no
  self-loops, and both directions of every pair are present.
- ``edge_attr [E, 5]`` float32 one-hot bond type over :data:`BOND_TYPES`
  ``("none", "single", "double", "triple", "aromatic")``: radius pairs that are not bonded
  get ``"none"``.

Bond perception for bare geometries (:func:`from_ase`, :func:`from_geometry`, and the QM9
rows in :mod:`symgraph.data.qm9`) uses rdkit, see :func:`perceive_bonds`:
``DetermineConnectivity`` then ``DetermineBondOrders`` with the given total charge
(neutral by default, as every QM9 molecule; charge-separated Lewis structures such as
zwitterions are allowed). Strained cages (bicyclo[1.1.1]pentanes, oxabicyclo[2.1.1]...) make
rdkit's distance rule bond the bridgeheads, so the bond orders fail; the connectivity is
then retried with a tighter covalent-radius rule ``d < f (r_i + r_j)`` for ``f`` in
:data:`COVALENT_FACTORS`. If every attempt fails the molecule keeps rdkit's connectivity with
single bonds (method ``"connectivity"``, a warning in :func:`from_ase`).

Measured on all 130,831 QM9 molecules: rdkit's rule works for 124,021, the factors 1.2 /
1.15 / 1.1 for 5,122 / 1,687 / 1, none falls back to ``"connectivity"``; the perceived bond
graph equals the one of the QM9 SMILES for all but 2 (#133857, #133859, whose DFT
geometries connect differently), and the Lewis structure (bond orders and formal charges,
ignoring stereo) agrees for all but 223, which have the same heavy-atom graph and differ in
bond orders and formal charges (those inspected: a zwitterion versus a neutral form).
QM9's SMILES are not used for the graph, so a geometry gives the same graph whichever
converter reads it.

An atom outside ``elements`` raises ``ValueError`` naming it; pass e.g.
``elements=("H", "C", "N", "O", "F", "S", "Cl")`` to widen the one-hot (``F`` grows by
one per element added).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from rdkit import Chem, rdBase
from rdkit.Chem import rdDetermineBonds
from rdkit.Geometry import Point3D
from torch import Tensor
from torch_geometric.data import Data

from symgraph.checks import is_int, is_real
from symgraph.graph import radius_graph

__all__ = [
    "ELEMENTS",
    "ATOM_FEATURE_DIM",
    "BOND_TYPES",
    "BOND_FEATURE_DIM",
    "DEFAULT_CUTOFF",
    "COVALENT_FACTORS",
    "atom_feature_dim",
    "atom_feature_names",
    "atom_features",
    "perceive_bonds",
    "mol_to_graph",
    "from_geometry",
    "from_ase",
    "from_rdkit",
]

ELEMENTS: tuple[str, ...] = ("H", "C", "N", "O", "F")
"""Default elements of the one-hot (the QM9 elements)."""

_EXTRA_FEATURES = (
    "atomic_number/9",
    "aromatic",
    "sp",
    "sp2",
    "sp3",
    "num_hs/4",
    "formal_charge",
    "in_ring",
)

ATOM_FEATURE_DIM: int = len(ELEMENTS) + len(_EXTRA_FEATURES)
"""Width of ``x`` for the default elements (13)."""

BOND_TYPES: tuple[str, ...] = ("none", "single", "double", "triple", "aromatic")
"""Columns of ``edge_attr``; ``"none"`` marks radius pairs that are not bonded."""

BOND_FEATURE_DIM: int = len(BOND_TYPES)

DEFAULT_CUTOFF: float = 5.0
"""Default radius (Å) of the non-bonded edges."""

COVALENT_FACTORS: tuple[float, ...] = (1.2, 1.15, 1.1)
"""Tighter connectivity rules ``d < f (r_i + r_j)`` tried when rdkit's own rule fails."""

_BOND_INDEX = {
    Chem.BondType.SINGLE: 1,
    Chem.BondType.DOUBLE: 2,
    Chem.BondType.TRIPLE: 3,
    Chem.BondType.AROMATIC: 4,
}
_AROMATIC = 4
_HYBRIDISATION = {
    Chem.HybridizationType.SP: 0,
    Chem.HybridizationType.SP2: 1,
    Chem.HybridizationType.SP3: 2,
}
_PERIODIC_TABLE = Chem.GetPeriodicTable()


def atom_feature_dim(elements: Sequence[str] = ELEMENTS) -> int:
    """Width ``F`` of ``x`` for the given element one-hot."""
    return len(elements) + len(_EXTRA_FEATURES)


def atom_feature_names(elements: Sequence[str] = ELEMENTS) -> tuple[str, ...]:
    """Names of the ``F`` columns of ``x``, in order."""
    return tuple(f"is_{e}" for e in elements) + _EXTRA_FEATURES


def _check_elements(symbols: Sequence[str], elements: Sequence[str], where: str) -> None:
    allowed = set(elements)
    for i, symbol in enumerate(symbols):
        if symbol not in allowed:
            raise ValueError(
                f"{where}: element {symbol!r} (atom {i}) is not supported; supported elements: "
                f"{', '.join(elements)} (pass elements=(...) to extend the one-hot)"
            )


def atom_features(mol: Chem.Mol, elements: Sequence[str] = ELEMENTS) -> Tensor:
    """Atom features of an rdkit molecule, layout as in the module docstring.

    Aromaticity and hybridisation are read as rdkit knows them (a sanitised molecule has
    both; an unsanitised one gives zeros there).

    Returns:
        ``x [N, atom_feature_dim(elements)]`` float32.
    """
    atoms = _atoms(mol)
    symbols = [atom.GetSymbol() for atom in atoms]
    _check_elements(symbols, elements, "atom_features")
    if mol.NeedsUpdatePropertyCache():  # unsanitised input: compute H counts on a copy
        mol = Chem.Mol(mol)
        mol.UpdatePropertyCache(strict=False)
        atoms = _atoms(mol)
    column = {e: i for i, e in enumerate(elements)}
    k = len(elements)
    rows = [
        (
            column[symbol],
            atom.GetAtomicNum(),
            atom.GetIsAromatic(),
            _HYBRIDISATION.get(atom.GetHybridization(), -1),
            atom.GetTotalNumHs(includeNeighbors=True),
            atom.GetFormalCharge(),
            atom.IsInRing(),
        )
        for symbol, atom in zip(symbols, atoms)
    ]
    n = len(rows)
    table = np.array(rows, dtype=np.int64).reshape(n, 7)
    x = np.zeros((n, atom_feature_dim(elements)), dtype=np.float32)
    every = np.arange(n)
    x[every, table[:, 0]] = 1.0
    x[:, k] = table[:, 1] / 9.0
    x[:, k + 1] = table[:, 2]
    hybrid = table[:, 3] >= 0
    x[every[hybrid], k + 2 + table[hybrid, 3]] = 1.0
    x[:, k + 5] = table[:, 4] / 4.0
    x[:, k + 6] = table[:, 5]
    x[:, k + 7] = table[:, 6]
    return torch.from_numpy(x)


def _atoms(mol: Chem.Mol) -> list[Chem.Atom]:
    """The atoms as a list (much faster than iterating ``mol.GetAtoms()``)."""
    return [mol.GetAtomWithIdx(i) for i in range(mol.GetNumAtoms())]


def _bare_mol(z: Sequence[int], pos: np.ndarray) -> Chem.Mol:
    """Atoms and one conformer, no bonds."""
    mol = Chem.RWMol()
    for number in z:
        atom = Chem.Atom(int(number))
        atom.SetNoImplicit(True)
        mol.AddAtom(atom)
    conf = Chem.Conformer(len(z))
    for i, (a, b, c) in enumerate(pos.tolist()):
        conf.SetAtomPosition(i, Point3D(a, b, c))
    conf.Set3D(True)
    mol.AddConformer(conf, assignId=True)
    return mol.GetMol()


def _covalent_connectivity(mol: Chem.RWMol, pos: np.ndarray, factor: float) -> None:
    radii = np.array([_PERIODIC_TABLE.GetRcovalent(a.GetAtomicNum()) for a in _atoms(mol)])
    dist = np.linalg.norm(pos[:, None, :] - pos[None, :, :], axis=-1)
    bonded = np.triu(dist < factor * (radii[:, None] + radii[None, :]), k=1)
    for i, j in zip(*np.nonzero(bonded)):
        mol.AddBond(int(i), int(j), Chem.BondType.SINGLE)


def _check_charge(charge: object, who: str) -> None:
    if not is_int(charge):
        raise ValueError(f"{who}: `charge` expected an integer total charge, got {charge!r}")


def perceive_bonds(z: Sequence[int], pos: np.ndarray, charge: int = 0) -> tuple[Chem.Mol, str]:
    """Chemical bonds (with orders and formal charges) of a bare geometry, via rdkit.

    Args:
        z: ``[N]`` atomic numbers.
        pos: ``[N, 3]`` positions in Å (float64 recommended).
        charge: total charge of the molecule (0 for QM9).

    Returns:
        ``(mol, method)``: a sanitised rdkit molecule with explicit H atoms and the
        geometry as its conformer, and how its bonds were found: ``"rdkit"`` (rdkit's
        connectivity), ``"covalent-<f>"`` (the tighter rule with factor ``f``) or
        ``"connectivity"`` (all attempts at bond orders failed: rdkit's connectivity,
        single bonds, sanitised as far as possible).
    """
    _check_charge(charge, "perceive_bonds")
    pos = np.asarray(pos, dtype=np.float64)
    if pos.ndim != 2 or pos.shape != (len(z), 3):
        raise ValueError(
            f"perceive_bonds: `pos` expected shape [{len(z)}, 3] (one row per atom of `z`), "
            f"got {list(pos.shape)}"
        )
    bare = _bare_mol(z, pos)
    attempts: list[tuple[str, float | None]] = [("rdkit", None)]
    attempts += [(f"covalent-{f}", f) for f in COVALENT_FACTORS]
    with rdBase.BlockLogs():  # silence rdkit while trying structures that may fail
        for method, factor in attempts:
            mol = Chem.RWMol(bare)
            try:
                if factor is None:
                    rdDetermineBonds.DetermineConnectivity(mol, charge=charge)
                else:
                    _covalent_connectivity(mol, pos, factor)
                rdDetermineBonds.DetermineBondOrders(mol, charge=charge, embedChiral=False)
                Chem.SanitizeMol(mol)
            except Exception:  # rdkit raises assorted types: try the next rule
                continue
            return mol.GetMol(), method
        mol = Chem.RWMol(bare)
        rdDetermineBonds.DetermineConnectivity(mol, charge=charge)
        Chem.SanitizeMol(mol, catchErrors=True)
        mol.UpdatePropertyCache(strict=False)
        Chem.FastFindRings(mol)
    return mol.GetMol(), "connectivity"


def _bond_list(mol: Chem.Mol) -> np.ndarray:
    """``[n_bonds, 3]`` int64 rows ``(i, j, type)`` with ``type`` indexing :data:`BOND_TYPES`."""
    rows = []
    for bond in (mol.GetBondWithIdx(b) for b in range(mol.GetNumBonds())):
        kind = _AROMATIC if bond.GetIsAromatic() else _BOND_INDEX.get(bond.GetBondType())
        if kind is None:
            raise ValueError(
                f"bond {bond.GetIdx()} ({bond.GetBeginAtomIdx()}-{bond.GetEndAtomIdx()}): "
                f"bond type {bond.GetBondType()} is not supported; supported: single, "
                "double, triple, aromatic"
            )
        rows.append((bond.GetBeginAtomIdx(), bond.GetEndAtomIdx(), kind))
    return np.array(rows, dtype=np.int64).reshape(-1, 3)


def _edges(bonds: np.ndarray, pos: Tensor, cutoff: float | None) -> tuple[Tensor, Tensor]:
    """Union of bonds and radius pairs, sorted by (target, source); one-hot bond types.

    Args:
        bonds: ``[n_bonds, 3]`` rows ``(i, j, type)``, one per undirected bond.
        pos: ``[N, 3]`` float32 positions.
        cutoff: radius of the extra pairs, or ``None``.

    Returns:
        ``edge_index [2, E]`` int64 and ``edge_attr [E, 5]`` float32.
    """
    n = pos.shape[0]
    i, j, kind = bonds[:, 0], bonds[:, 1], bonds[:, 2]
    bond_keys = np.concatenate([j * n + i, i * n + j])  # key = target * n + source
    kind = np.concatenate([kind, kind])
    order = np.argsort(bond_keys, kind="stable")
    bond_keys, kind = bond_keys[order], kind[order]
    keys = bond_keys
    if cutoff is not None and n > 1:
        radius = radius_graph(pos, float(cutoff)).numpy()
        keys = np.union1d(bond_keys, radius[1] * n + radius[0])  # sorted, unique
    edge_type = np.zeros(keys.shape[0], dtype=np.int64)
    if bond_keys.size:
        at = np.minimum(np.searchsorted(bond_keys, keys), bond_keys.size - 1)
        hit = bond_keys[at] == keys
        edge_type[hit] = kind[at[hit]]
    edge_index = torch.from_numpy(np.stack([keys % n, keys // n]))
    edge_attr = torch.from_numpy(np.eye(BOND_FEATURE_DIM, dtype=np.float32)[edge_type])
    return edge_index, edge_attr


def _check_cutoff(cutoff: float | None, where: str) -> None:
    if cutoff is not None and not (is_real(cutoff) and 0 < cutoff < math.inf):
        raise ValueError(f"{where}: `cutoff` must be a positive number (Å) or None, got {cutoff!r}")


def mol_to_graph(
    mol: Chem.Mol,
    pos: np.ndarray | Tensor,
    cutoff: float | None = DEFAULT_CUTOFF,
    elements: Sequence[str] = ELEMENTS,
) -> Data:
    """The shared last step: graph of an rdkit molecule (its bonds) placed at ``pos``.

    Args:
        mol: rdkit molecule; its atoms are the nodes, its bonds the typed edges.
        pos: ``[N, 3]`` positions (Å) of ``mol``'s atoms.
        cutoff: radius (Å) of the extra non-bonded edges, or ``None`` for bonds only.
        elements: elements of the one-hot; any other element raises ``ValueError``.

    Returns:
        ``Data(z [N], pos [N, 3], x [N, F], edge_index [2, E], edge_attr [E, 5])``.
    """
    _check_cutoff(cutoff, "mol_to_graph")
    x = atom_features(mol, elements)
    z = torch.tensor([a.GetAtomicNum() for a in _atoms(mol)], dtype=torch.long)
    if isinstance(pos, Tensor):
        pos = pos.detach().cpu().numpy()
    pos = torch.from_numpy(np.asarray(pos, dtype=np.float32))
    if pos.shape != (z.shape[0], 3):  # a reshape would take a transposed [3, N] silently
        raise ValueError(
            f"mol_to_graph: `pos` expected shape [{z.shape[0]}, 3] (one row per atom), got "
            f"{list(pos.shape)}"
        )
    if not np.isfinite(pos.numpy()).all():
        raise ValueError("mol_to_graph: `pos` holds NaN/inf coordinates")
    edge_index, edge_attr = _edges(_bond_list(mol), pos, cutoff)
    return Data(z=z, pos=pos, x=x, edge_index=edge_index, edge_attr=edge_attr)


def _symbols_from_z(z: Sequence[int], where: str) -> list[str]:
    symbols = []
    for i, number in enumerate(z):
        if not 1 <= int(number) <= 118:
            raise ValueError(f"{where}: atomic number {int(number)} (atom {i}) is not an element")
        symbols.append(_PERIODIC_TABLE.GetElementSymbol(int(number)))
    return symbols


def from_geometry(
    z: Sequence[int] | np.ndarray | Tensor,
    pos: np.ndarray | Tensor,
    cutoff: float | None = DEFAULT_CUTOFF,
    charge: int = 0,
    elements: Sequence[str] = ELEMENTS,
) -> tuple[Data, str]:
    """Graph of a bare geometry with bonds perceived by :func:`perceive_bonds`.

    Args:
        z: ``[N]`` atomic numbers.
        pos: ``[N, 3]`` positions in Å.
        cutoff: radius (Å) of the extra non-bonded edges, or ``None`` for bonds only.
        charge: total molecular charge used for bond orders (0 for QM9).
        elements: elements of the one-hot.

    Returns:
        ``(data, method)``: the graph (layout in the module docstring) and the perception
        method (see :func:`perceive_bonds`).
    """
    values = z.tolist() if isinstance(z, Tensor | np.ndarray) else list(z)
    if not all(float(v).is_integer() and not isinstance(v, bool) for v in values):
        raise ValueError(f"from_geometry: `z` expected integer atomic numbers, got {values}")
    z = [int(v) for v in values]
    _check_charge(charge, "from_geometry")
    _check_elements(_symbols_from_z(z, "from_geometry"), elements, "from_geometry")
    _check_cutoff(cutoff, "from_geometry")
    pos64 = np.asarray(pos.detach().cpu() if isinstance(pos, Tensor) else pos, dtype=np.float64)
    if pos64.ndim != 2 or pos64.shape != (len(z), 3):
        raise ValueError(
            f"from_geometry: `pos` expected shape [{len(z)}, 3], got {list(pos64.shape)}"
        )
    if not np.isfinite(pos64).all():
        raise ValueError("from_geometry: `pos` holds NaN/inf coordinates")
    mol, method = perceive_bonds(z, pos64, charge=charge)
    return mol_to_graph(mol, pos64, cutoff=cutoff, elements=elements), method


def from_ase(
    atoms: object,
    cutoff: float | None = DEFAULT_CUTOFF,
    charge: int = 0,
    elements: Sequence[str] = ELEMENTS,
) -> Data:
    """Graph of an ``ase.Atoms`` molecule (bonds perceived from the geometry).

    Args:
        atoms: a non-periodic ``ase.Atoms`` (positions in Å).
        cutoff: radius (Å) of the extra non-bonded edges, or ``None`` for bonds only.
        charge: total molecular charge (0 for neutral molecules such as QM9's).
        elements: elements of the one-hot.

    Returns:
        ``Data(z [N], pos [N, 3], x [N, F], edge_index [2, E], edge_attr [E, 5])``.
        Warns when bond orders could not be assigned (single bonds kept).
    """
    if not (hasattr(atoms, "get_atomic_numbers") and hasattr(atoms, "get_positions")):
        raise TypeError(f"from_ase: `atoms` expected an ase.Atoms, got {type(atoms).__name__}")
    pbc = getattr(atoms, "pbc", None)
    if pbc is not None and bool(np.any(pbc)):
        raise ValueError(
            f"from_ase: `atoms` expected a non-periodic molecule, got pbc={list(map(bool, pbc))}"
        )
    z = atoms.get_atomic_numbers()
    _check_elements(_symbols_from_z(z, "from_ase"), elements, "from_ase")
    data, method = from_geometry(z, atoms.get_positions(), cutoff, charge, elements)
    if method == "connectivity":
        warnings.warn(
            f"from_ase: rdkit could not assign bond orders for {atoms.get_chemical_formula()} "
            f"(charge={charge}); all bonds typed 'single'",
            stacklevel=2,
        )
    return data


def from_rdkit(
    mol: Chem.Mol,
    conf_id: int = -1,
    cutoff: float | None = DEFAULT_CUTOFF,
    elements: Sequence[str] = ELEMENTS,
) -> Data:
    """Graph of an rdkit molecule with a 3D conformer, using the molecule's own bonds.

    The nodes are the molecule's atoms as given (call ``Chem.AddHs(mol, addCoords=True)``
    first to include hydrogens). Aromaticity and hybridisation come from rdkit, so pass a
    sanitised molecule.

    Args:
        mol: ``rdkit.Chem.Mol`` with at least one 3D conformer.
        conf_id: conformer id (``-1``: the default conformer).
        cutoff: radius (Å) of the extra non-bonded edges, or ``None`` for bonds only.
        elements: elements of the one-hot.

    Returns:
        ``Data(z [N], pos [N, 3], x [N, F], edge_index [2, E], edge_attr [E, 5])``.
    """
    if not isinstance(mol, Chem.Mol):
        raise TypeError(f"from_rdkit: `mol` expected an rdkit.Chem.Mol, got {type(mol).__name__}")
    if mol.GetNumConformers() == 0:
        raise ValueError(
            "from_rdkit: `mol` expected a 3D conformer, got none (embed one, e.g. "
            "AllChem.EmbedMolecule(Chem.AddHs(mol)))"
        )
    try:
        conf = mol.GetConformer(conf_id)
    except ValueError as err:
        raise ValueError(f"from_rdkit: `conf_id` {conf_id} is not a conformer of `mol`") from err
    if not conf.Is3D():
        raise ValueError(f"from_rdkit: conformer {conf_id} of `mol` is 2D, expected 3D")
    _check_elements([a.GetSymbol() for a in _atoms(mol)], elements, "from_rdkit")
    return mol_to_graph(mol, conf.GetPositions(), cutoff=cutoff, elements=elements)
