"""Molecule converters: layout, bond types, radius edges, from_ase == from_rdkit, errors."""

from __future__ import annotations

import ase
import numpy as np
import pytest
import torch
from rdkit import Chem
from rdkit.Chem import AllChem

from symgraph.data.molecules import (
    ATOM_FEATURE_DIM,
    BOND_FEATURE_DIM,
    BOND_TYPES,
    DEFAULT_CUTOFF,
    atom_feature_dim,
    atom_feature_names,
    from_ase,
    from_geometry,
    from_rdkit,
    perceive_bonds,
)
from symgraph.data.qm9 import read_qm9_csv

NAMES = atom_feature_names()
COL = {name: i for i, name in enumerate(NAMES)}
SINGLE, DOUBLE, TRIPLE, AROMATIC = (BOND_TYPES.index(t) for t in BOND_TYPES[1:])


@pytest.fixture(scope="module")
def first200(shared_data):
    """QM9 #1..#200 parsed from the shared sample, keyed by QM9 number."""
    return {r.index: r for r in read_qm9_csv(shared_data / "qm9" / "qm9pack_first200.csv")}


def _embedded(smiles: str, seed: int = 7) -> Chem.Mol:
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    assert AllChem.EmbedMolecule(mol, randomSeed=seed) == 0
    AllChem.MMFFOptimizeMolecule(mol)
    return mol


def _as_atoms(mol: Chem.Mol) -> ase.Atoms:
    z = [a.GetAtomicNum() for a in mol.GetAtoms()]
    return ase.Atoms(numbers=z, positions=mol.GetConformer().GetPositions())


def _bond_type(data, i: int, j: int) -> int:
    hit = (data.edge_index[0] == i) & (data.edge_index[1] == j)
    assert int(hit.sum()) == 1, f"edge {i}->{j} missing"
    return int(data.edge_attr[hit].argmax())


def _check_layout(data) -> None:
    n, e = data.z.shape[0], data.edge_index.shape[1]
    assert data.z.dtype == torch.long and data.edge_index.dtype == torch.long
    assert data.pos.dtype == torch.float32 and data.pos.shape == (n, 3)
    assert data.x.dtype == torch.float32 and data.x.shape[0] == n
    assert data.edge_attr.dtype == torch.float32 and data.edge_attr.shape == (e, BOND_FEATURE_DIM)
    assert torch.equal(data.edge_attr.sum(1), torch.ones(e))  # one-hot
    src, dst = data.edge_index
    assert bool((src != dst).all())  # no self-loops
    key = dst * n + src
    assert bool((key[1:] > key[:-1]).all())  # sorted by target, then source; no duplicates
    rev = src * n + dst  # the reverse of every edge is present with the same type
    order = torch.searchsorted(key, rev)
    assert torch.equal(key[order], rev)
    assert torch.equal(data.edge_attr[order], data.edge_attr)


def test_constants():
    assert ATOM_FEATURE_DIM == 13 == len(NAMES) == atom_feature_dim()
    assert NAMES[:5] == ("is_H", "is_C", "is_N", "is_O", "is_F")
    assert BOND_TYPES == ("none", "single", "double", "triple", "aromatic")
    assert BOND_FEATURE_DIM == 5 and DEFAULT_CUTOFF == 5.0


def test_methane_qm9_1(first200):
    rec = first200[1]
    data, method = from_geometry(rec.z, rec.pos)
    _check_layout(data)
    assert method == "rdkit"
    assert data.z.tolist() == [6, 1, 1, 1, 1]
    assert data.edge_index.shape[1] == 20  # all 5 * 4 ordered pairs lie within 5 Å
    for h in range(1, 5):
        assert _bond_type(data, 0, h) == SINGLE and _bond_type(data, h, 0) == SINGLE
    assert _bond_type(data, 1, 2) == 0  # H...H: radius edge, no bond
    carbon = data.x[0]
    assert carbon[COL["is_C"]] == 1 and carbon[COL["sp3"]] == 1
    assert carbon[COL["num_hs/4"]] == 1.0 and carbon[COL["atomic_number/9"]] == pytest.approx(6 / 9)
    assert data.x[1, COL["is_H"]] == 1 and data.x[1, COL["sp3"]] == 0


@pytest.mark.parametrize("index, atoms", [(4, (0, 1)), (5, (0, 1))])  # acetylene, HCN
def test_triple_bonds(first200, index, atoms):
    rec = first200[index]
    data, _ = from_geometry(rec.z, rec.pos)
    assert _bond_type(data, *atoms) == TRIPLE
    assert data.x[atoms[0], COL["sp"]] == 1


def test_double_bond_formaldehyde(first200):
    rec = first200[6]  # C=O
    data, _ = from_geometry(rec.z, rec.pos)
    assert rec.z.tolist()[:2] == [6, 8]
    assert _bond_type(data, 0, 1) == DOUBLE and data.x[1, COL["sp2"]] == 1


def test_benzene_aromatic_from_rdkit():
    data = from_rdkit(_embedded("c1ccccc1"))
    _check_layout(data)
    carbons = torch.nonzero(data.z == 6).flatten().tolist()
    aromatic = data.edge_attr[:, AROMATIC].bool()
    assert int(aromatic.sum()) == 12  # 6 ring bonds, both directions
    assert set(data.edge_index[:, aromatic].flatten().tolist()) == set(carbons)
    assert bool((data.x[carbons, COL["aromatic"]] == 1).all())
    assert bool((data.x[carbons, COL["in_ring"]] == 1).all())
    assert int((data.edge_attr[:, SINGLE] == 1).sum()) == 12  # the C-H bonds


@pytest.mark.parametrize("smiles", ["c1ccccc1", "CC#N", "OCC(=O)N", "c1ccncc1C=O"])
def test_from_ase_equals_from_rdkit(smiles):
    mol = _embedded(smiles)
    a, b = from_rdkit(mol), from_ase(_as_atoms(mol))
    for key in ("z", "pos", "x", "edge_index", "edge_attr"):
        assert torch.equal(a[key], b[key]), key


def test_radius_edges_match_brute_force(first200):
    rec = first200[150]
    for cutoff in (2.0, 3.5, DEFAULT_CUTOFF):
        data, _ = from_geometry(rec.z, rec.pos, cutoff=cutoff)
        pos = data.pos.double()
        dist = torch.cdist(pos, pos)
        src, dst = data.edge_index
        nonbonded = data.edge_attr[:, 0] == 1
        assert bool((dist[src[nonbonded], dst[nonbonded]] < cutoff).all())
        close = (dist < cutoff) & ~torch.eye(len(pos), dtype=torch.bool)
        assert int(close.sum()) <= data.edge_index.shape[1]
        assert bool(close[dst, src].sum() == close.sum())  # every close pair is an edge


def test_cutoff_none_keeps_bonds_only(first200):
    rec = first200[60]
    data, _ = from_geometry(rec.z, rec.pos, cutoff=None)
    mol, _ = perceive_bonds(rec.z, rec.pos)
    assert data.edge_index.shape[1] == 2 * mol.GetNumBonds()
    assert int(data.edge_attr[:, 0].sum()) == 0
    with pytest.raises(ValueError, match="cutoff"):
        from_geometry(rec.z, rec.pos, cutoff=-1.0)


def test_strained_cage_keeps_true_bonds(first200):
    rec = first200[105]  # C1C2CC1C2, bicyclo[1.1.1]pentane: bridgeheads 1.87 Å apart
    data, method = from_geometry(rec.z, rec.pos, cutoff=None)
    assert method.startswith("covalent-")
    ref = Chem.AddHs(Chem.MolFromSmiles(rec.smiles))
    assert data.edge_index.shape[1] == 2 * ref.GetNumBonds()
    assert int(data.edge_attr[:, SINGLE].sum()) == data.edge_index.shape[1]


def test_zwitterion_gets_formal_charges():
    mol = Chem.AddHs(Chem.MolFromSmiles("[NH3+]CC(=O)[O-]"))  # glycine zwitterion
    assert AllChem.EmbedMolecule(mol, randomSeed=3) == 0
    data = from_ase(_as_atoms(mol), charge=0)
    charges = data.x[:, COL["formal_charge"]]
    assert charges.sum() == 0
    assert charges[data.z == 7].tolist() == [1.0]
    assert sorted(charges[data.z == 8].tolist()) == [-1.0, 0.0]


def test_unknown_element_error_and_extension():
    h2s = ase.Atoms("SH2", positions=[[0, 0, 0], [0.96, 0.93, 0], [-0.96, 0.93, 0]])
    with pytest.raises(ValueError, match=r"'S'.*H, C, N, O, F"):
        from_ase(h2s)
    elements = ("H", "C", "N", "O", "F", "S")
    data = from_ase(h2s, elements=elements)
    assert data.x.shape == (3, atom_feature_dim(elements)) == (3, 14)
    assert data.x[0, 5] == 1  # the S column
    assert _bond_type(data, 0, 1) == SINGLE
    mol = _embedded("CS")
    with pytest.raises(ValueError, match="'S'"):
        from_rdkit(mol)


def test_input_errors():
    with pytest.raises(ValueError, match="conformer"):
        from_rdkit(Chem.MolFromSmiles("CCO"))
    with pytest.raises(TypeError, match="ase.Atoms"):
        from_ase(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="non-periodic"):
        from_ase(ase.Atoms("H2", positions=[[0, 0, 0], [0.74, 0, 0]], cell=[5] * 3, pbc=True))
    with pytest.raises(ValueError, match=r"pos.*\[2, 3\]"):
        from_geometry([1, 1], np.zeros((3, 3)))
    with pytest.raises(ValueError, match="NaN"):
        from_geometry([1, 1], np.array([[0.0, 0, 0], [np.nan, 0, 0]]))


def test_schnetpack_db_geometries_match_csv(shared_data, first200):
    """The 20 molecules of schnetpack's ase db give the same graphs as the CSV rows."""
    db = pytest.importorskip("ase.db").connect(str(shared_data / "qm9" / "schnetpack_test_qm9.db"))
    for number, row in enumerate(db.select(), start=1):
        rec = first200[number]
        a = from_ase(row.toatoms())
        b, _ = from_geometry(rec.z, rec.pos)
        for key in ("z", "x", "edge_index", "edge_attr"):
            assert torch.equal(a[key], b[key]), (number, key)
        assert torch.allclose(a.pos, b.pos, atol=1e-6)


def test_impossible_valence_falls_back_to_single_bonds():
    d = 1.09  # CH5: a carbon with five hydrogens, no Lewis structure exists
    h = [[d, 0, 0], [-d / 2, d * 0.866, 0], [-d / 2, -d * 0.866, 0], [0, 0, d], [0, 0, -d]]
    atoms = ase.Atoms("CH5", positions=[[0, 0, 0], *h])
    with pytest.warns(UserWarning, match="could not assign bond orders"):
        data = from_ase(atoms)
    _check_layout(data)
    bonded = data.edge_attr[:, 0] == 0
    assert int(bonded.sum()) == 10 and bool((data.edge_attr[bonded, SINGLE] == 1).all())


def test_zero_cutoff_is_refused(first200):
    """A radius of 0 Å would silently give a bond-only graph: it must be positive."""
    rec = first200[1]
    with pytest.raises(ValueError, match="cutoff"):
        from_geometry(rec.z, rec.pos, cutoff=0.0)


def test_loosest_covalent_rule_that_works_is_used(first200):
    """Bicyclo[1.1.1]pentane: its bridgeheads are farther apart than 1.2 (r_C + r_C), its
    C-C bonds closer, so the first (loosest) tighter rule, 1.2, already gives the bonds."""
    rec = first200[105]
    r_c = Chem.GetPeriodicTable().GetRcovalent(6)
    carbons = rec.pos[rec.z == 6]
    dist = np.linalg.norm(carbons[:, None] - carbons[None], axis=-1)
    pairs = np.sort(dist[np.triu_indices(5, 1)])  # 6 C-C bonds, the bridgeheads, 3 more
    assert pairs[5] < 1.2 * 2 * r_c < pairs[6] < 1.9
    _, method = perceive_bonds(rec.z, rec.pos)
    assert method == "covalent-1.2"


def test_charged_molecule_gets_its_bond_orders():
    """Methylammonium with charge=1: the Lewis structure exists (N+), no fallback warning."""
    import warnings

    mol = Chem.AddHs(Chem.MolFromSmiles("C[NH3+]"))
    assert AllChem.EmbedMolecule(mol, randomSeed=1) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data = from_ase(_as_atoms(mol), charge=1)
    charges = data.x[:, COL["formal_charge"]]
    assert charges[data.z == 7].tolist() == [1.0] and float(charges.sum()) == 1.0


def test_partially_periodic_atoms_are_refused():
    """A slab (periodic along x only) is not a molecule either."""
    h2 = ase.Atoms("H2", positions=[[0, 0, 0], [0.74, 0, 0]], cell=[5] * 3)
    h2.pbc = [True, False, False]
    with pytest.raises(ValueError, match="non-periodic"):
        from_ase(h2)


def test_2d_conformer_is_refused():
    """A 2D depiction has no real geometry: from_rdkit asks for a 3D conformer."""
    mol = Chem.MolFromSmiles("CCO")
    AllChem.Compute2DCoords(mol)
    with pytest.raises(ValueError, match="2D, expected 3D"):
        from_rdkit(mol)


def test_mol_to_graph_refuses_transposed_positions():
    """``[3, N]`` positions hold 3N numbers, as many as ``[N, 3]``: a reshape would have
    scrambled the coordinates without a word."""
    from symgraph.data.molecules import mol_to_graph

    mol = Chem.AddHs(Chem.MolFromSmiles("C"))
    AllChem.EmbedMolecule(mol, randomSeed=0)
    pos = mol.GetConformer().GetPositions()
    with pytest.raises(ValueError, match=r"`pos` expected shape \[5, 3\] .* got \[3, 5\]"):
        mol_to_graph(mol, pos.T)
    np.testing.assert_allclose(mol_to_graph(mol, pos).pos.numpy(), pos, atol=1e-6)
