"""QM9 dataset: units, atomization energies, subsets, targets, integrity and atomic cache."""

from __future__ import annotations

import csv
import gzip
import importlib.util
import os
import shutil
from pathlib import Path

import pytest
import torch
from torch_geometric.data import Data

import symgraph.data.qm9 as qm9_module
from symgraph.data.molecules import ATOM_FEATURE_DIM, BOND_FEATURE_DIM
from symgraph.data.qm9 import (
    ATOM_REFERENCES_HARTREE,
    HARTREE_TO_EV,
    PYG_TARGET_COLUMNS,
    QM9,
    QM9PACK_FILES,
    QM9PACK_SHA256,
    REPORT_FACTOR,
    REPORT_UNITS,
    TARGETS,
    UNITS,
    atomization_energy,
    from_pyg_qm9,
    read_qm9_csv,
    sha256_file,
    target_index,
)

FIRST200 = "qm9pack_first200.csv"


@pytest.fixture(scope="module")
def first200_csv(shared_data) -> Path:
    return shared_data / "qm9" / FIRST200


@pytest.fixture(scope="module")
def dataset(first200_csv, tmp_path_factory) -> QM9:
    root = tmp_path_factory.mktemp("qm9")
    return QM9(root, source="csv", csv_files=[first200_csv], log=False)


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _cache_files(root: Path) -> list[str]:
    folder = root / "processed"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def test_targets_units_and_report_factors():
    assert len(TARGETS) == 12 and set(UNITS) == set(TARGETS)
    assert target_index("U0") == 7 and target_index("Cv") == 11 and target_index(3) == 3
    with pytest.raises(ValueError, match=r"'U_0'.*mu, alpha, homo"):
        target_index("U_0")
    with pytest.raises(ValueError, match="out of range"):
        target_index(12)
    for name in ("homo", "lumo", "gap", "zpve", "U0", "U", "H", "G"):
        assert UNITS[name] == "eV" and REPORT_FACTOR[name] == 1000.0
        assert REPORT_UNITS[name] == "meV"
    assert UNITS["mu"] == "D" and REPORT_FACTOR["mu"] == 1.0 and UNITS["Cv"] == "cal/mol/K"


def test_atomization_energy_formula():
    # methane, U0 = -40.47893 Ha (README row 1): C + 4 H references
    expected = (-40.47893 - (-37.846772 + 4 * -0.500273)) * 27.211386245988
    assert atomization_energy(-40.47893, [6, 1, 1, 1, 1]) == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(-17.1724, abs=1e-3)
    assert ATOM_REFERENCES_HARTREE["G"][9] == -99.733544
    with pytest.raises(ValueError, match="reference"):
        atomization_energy(-1.0, [16])
    with pytest.raises(ValueError, match="kind"):
        atomization_energy(-1.0, [1], kind="Cv")


def test_dataset_layout_and_counts(dataset, first200_csv):
    rows = _csv_rows(first200_csv)
    assert len(dataset) == len(rows) == 200
    assert dataset.target_names == TARGETS
    natoms = torch.tensor([int(r["N_atoms"]) for r in rows])
    assert int(dataset._data.z.shape[0]) == int(natoms.sum())
    for i in (0, 57, 199):
        data = dataset[i]
        assert data.z.shape[0] == natoms[i]
        assert data.x.shape == (natoms[i], ATOM_FEATURE_DIM)
        assert data.edge_attr.shape[1] == BOND_FEATURE_DIM
        assert data.y.shape == (1, 12) and data.y.dtype == torch.float32
        assert int(data.idx) == int(rows[i]["Index"]) and data.name == f"gdb_{rows[i]['Index']}"
        assert data.smiles == rows[i]["SMILES"]
        assert bool((data.edge_index[1][1:] >= data.edge_index[1][:-1]).all())
    assert set(dataset._data.z.unique().tolist()) <= {1, 6, 7, 8, 9}


def test_dataset_units(dataset, first200_csv):
    rows = _csv_rows(first200_csv)
    for i in (0, 1, 120):
        row, y = rows[i], dataset[i].y[0].double()
        z = dataset[i].z.tolist()
        assert y[0] == pytest.approx(float(row["Dipole_debye"]), abs=1e-5)
        assert y[1] == pytest.approx(float(row["Polarizability_bohr3"]), rel=1e-6)
        assert y[2] == pytest.approx(float(row["HOMO_au"]) * HARTREE_TO_EV, rel=1e-6)
        assert y[4] == pytest.approx(float(row["HOMO_LUMO_gap_au"]) * HARTREE_TO_EV, rel=1e-6)
        assert y[5] == pytest.approx(float(row["R2_bohr2"]), rel=1e-6)
        assert y[6] == pytest.approx(float(row["ZPVE_au"]) * HARTREE_TO_EV, rel=1e-6)
        for col, kind in ((7, "U0"), (8, "U"), (9, "H"), (10, "G")):
            column = {
                "U0": "InternalEnergy_0K_au",
                "U": "InternalEnergy_298K_au",
                "H": "Enthalphy_298K_au",
                "G": "GibbsFreeEnergy_298K_au",
            }[kind]
            want = atomization_energy(float(row[column]), z, kind)
            assert y[col] == pytest.approx(want, abs=2e-5)
        assert y[11] == pytest.approx(float(row["Heatcapacity_Cv_cal_mol_K"]), rel=1e-6)
    # methane: HOMO -0.3877 Ha, U0 atomization -17.17 eV
    assert dataset[0].y[0, 2] == pytest.approx(-0.3877 * 27.211386245988, rel=1e-6)
    assert dataset[0].y[0, 7] == pytest.approx(-17.1724, abs=1e-3)


def test_schnetpack_db_energies_agree(dataset, shared_data):
    db = pytest.importorskip("ase.db").connect(str(shared_data / "qm9" / "schnetpack_test_qm9.db"))
    for i, row in enumerate(db.select()):
        y, z = dataset[i].y[0].double(), row.numbers.tolist()
        assert dataset[i].z.tolist() == z
        assert y[7] == pytest.approx(atomization_energy(row.data["energy_U0"][0], z), abs=2e-5)
        assert y[3] == pytest.approx(row.data["lumo"][0] * HARTREE_TO_EV, rel=1e-6)


def test_cache_is_reused(dataset, first200_csv, monkeypatch):
    def fail(self):
        raise AssertionError("processed again instead of loading the cache")

    monkeypatch.setattr(QM9, "process", fail)
    again = QM9(dataset.root, source="csv", csv_files=[first200_csv], log=False)
    assert torch.equal(again._data.edge_index, dataset._data.edge_index)


class DropHydrogenCount:
    """A pre_transform with a stable repr: keeps the first 3 atoms' features only."""

    def __call__(self, data):
        data.x = data.x.clone()
        data.x[3:] = 0
        return data

    def __repr__(self) -> str:
        return "DropHydrogenCount()"


def test_pre_transform_gets_its_own_cache(first200_csv, tmp_path):
    plain = QM9(tmp_path, source="csv", csv_files=[first200_csv], subset=5, log=False)
    changed = QM9(
        tmp_path, source="csv", csv_files=[first200_csv], subset=5, log=False,
        pre_transform=DropHydrogenCount(),
    )  # fmt: skip
    assert plain.processed_paths != changed.processed_paths
    assert not torch.equal(plain._data.x, changed._data.x)
    assert bool((changed[2].x[3:] == 0).all())


def test_transforms_whose_repr_hides_an_argument_get_their_own_cache(first200_csv, tmp_path):
    """PyG's ``Distance(cat=True)`` and ``Distance(cat=False)`` print alike."""
    from torch_geometric.transforms import Distance

    appended, replaced = Distance(cat=True), Distance(cat=False)
    assert repr(appended) == repr(replaced)
    options = dict(source="csv", csv_files=[first200_csv], subset=5, log=False)
    first = QM9(tmp_path, pre_transform=appended, **options)
    second = QM9(tmp_path, pre_transform=replaced, **options)
    assert first.processed_paths != second.processed_paths
    assert second._data.edge_attr.shape[1] == 1 < first._data.edge_attr.shape[1]


def test_a_used_seeded_pre_transform_processes_what_a_fresh_one_does(first200_csv, tmp_path):
    """The same cache key must mean the same molecules: a seeded pre_transform that already
    drew (e.g. for another subset) processes from its seed, like a fresh one."""
    from symgraph.data.transforms import RandomGroupRotation
    from symgraph.groups import SO3

    options = dict(source="csv", csv_files=[first200_csv], subset=5, log=False)
    shared = RandomGroupRotation(SO3(), keys="pos", seed=0)
    QM9(tmp_path / "a", pre_transform=shared, **{**options, "subset": 3})
    used = QM9(tmp_path / "b", pre_transform=shared, **options)
    fresh = QM9(
        tmp_path / "c", pre_transform=RandomGroupRotation(SO3(), keys="pos", seed=0), **options
    )
    assert Path(used.processed_paths[0]).name == Path(fresh.processed_paths[0]).name
    torch.testing.assert_close(used._data.pos, fresh._data.pos, rtol=0, atol=0)


def _scaled_targets(factor: float):
    """A fresh lambda (another object, another address) on every call."""
    return lambda data: Data(**{**data.to_dict(), "y": data.y * factor})


def test_lambda_pre_transforms_are_keyed_by_their_code_not_their_address(first200_csv, tmp_path):
    """Lambdas do not pickle and their repr holds an address: the cache key hashes their code
    and closure, so the same lambda reuses the cache, in this process and in another one
    (other string hashing), and another closure value gets its own."""
    import subprocess
    import sys

    options = dict(source="csv", csv_files=[first200_csv], subset=5, log=False)
    first = QM9(tmp_path, pre_transform=_scaled_targets(2.0), **options)
    again = QM9(tmp_path, pre_transform=_scaled_targets(2.0), **options)
    other = QM9(tmp_path, pre_transform=_scaled_targets(3.0), **options)
    assert first.processed_paths == again.processed_paths != other.processed_paths
    assert len(list(Path(first.processed_dir).glob("qm9_*.pt"))) == 2
    code = (
        "from symgraph.data.transforms import transform_fingerprint\n"
        "k = 2.0\nprint(transform_fingerprint(lambda d: d * k))\n"
    )
    keys = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout  # fmt: skip
        for seed in ("1", "2")
    }
    assert len(keys) == 1 and "function __main__.<lambda>:" in keys.pop()


def test_the_cache_is_readable_as_the_umask_allows(first200_csv, tmp_path):
    """Processed caches are shared: not owner-only like a fresh temporary file."""
    import os
    import stat

    data = QM9(tmp_path, source="csv", csv_files=[first200_csv], subset=3, log=False)
    mask = os.umask(0)
    os.umask(mask)
    for path in data.processed_paths:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~mask, path


def test_target_selection(dataset, first200_csv):
    gap = QM9(dataset.root, source="csv", csv_files=[first200_csv], target="gap", log=False)
    assert gap[5].y.shape == (1, 1) and gap.target_names == ("gap",)
    assert torch.equal(gap[5].y[:, 0], dataset[5].y[:, 4])
    two = QM9(dataset.root, source="csv", csv_files=[first200_csv], target=["U0", 0], log=False)
    assert torch.equal(two[7].y, dataset[7].y[:, [7, 0]])
    with pytest.raises(ValueError, match="valid names"):
        QM9(dataset.root, source="csv", csv_files=[first200_csv], target="energy", log=False)


def test_subsets(first200_csv, tmp_path):
    first = QM9(tmp_path, source="csv", csv_files=[first200_csv], subset=10, log=False)
    assert first._data.idx.tolist() == list(range(1, 11))
    seeded = QM9(
        tmp_path, source="csv", csv_files=[first200_csv], subset=10, subset_seed=1, log=False
    )
    idx = seeded._data.idx.tolist()
    assert idx == sorted(idx) and len(set(idx)) == 10 and idx != list(range(1, 11))
    assert first.processed_file_names != seeded.processed_file_names
    with pytest.raises(ValueError, match="has 200"):
        QM9(tmp_path, source="csv", csv_files=[first200_csv], subset=500, log=False)
    with pytest.raises(ValueError, match="subset"):
        QM9(tmp_path, source="csv", csv_files=[first200_csv], subset=0, log=False)
    with pytest.raises(ValueError, match="subset_seed: used only to draw subset=M"):
        QM9(tmp_path, source="csv", csv_files=[first200_csv], subset_seed=1, log=False)


def test_truncated_csv_is_detected(first200_csv, tmp_path):
    text = first200_csv.read_bytes()
    bad = tmp_path / "truncated.csv"
    bad.write_bytes(text[: len(text) * 2 // 3])
    with pytest.raises(ValueError, match=r"truncated\.csv.*truncated or corrupt"):
        QM9(tmp_path / "root", source="csv", csv_files=[bad], log=False)
    assert _cache_files(tmp_path / "root") == []


def test_truncated_gzip_is_detected(first200_csv, tmp_path):
    packed = gzip.compress(first200_csv.read_bytes())
    good, bad = tmp_path / "good.csv.gz", tmp_path / "bad.csv.gz"
    good.write_bytes(packed)
    bad.write_bytes(packed[: len(packed) // 2])
    assert len(QM9(tmp_path / "a", source="csv", csv_files=[good], subset=3, log=False)) == 3
    with pytest.raises(ValueError, match=r"bad\.csv\.gz.*gzip"):
        QM9(tmp_path / "b", source="csv", csv_files=[bad], log=False)


def test_bad_value_is_detected(first200_csv, tmp_path):
    lines = first200_csv.read_text().splitlines(keepends=True)
    lines[3] = lines[3].replace("[[", "[[x", 1)  # a corrupt coordinate in molecule #3
    bad = tmp_path / "bad.csv"
    bad.write_text("".join(lines))
    with pytest.raises(ValueError, match=r"bad\.csv.*line 4"):
        QM9(tmp_path / "root", source="csv", csv_files=[bad], subset=5, log=False)


def test_checksum_mismatch(first200_csv, tmp_path):
    good = {FIRST200: sha256_file(first200_csv)}
    QM9(tmp_path, source="csv", csv_files=[first200_csv], subset=2, checksums=good, log=False)
    with pytest.raises(ValueError, match=r"qm9pack_first200\.csv.*sha256"):
        QM9(
            tmp_path,
            source="csv",
            csv_files=[first200_csv],
            subset=3,
            checksums={FIRST200: "0" * 64},
            log=False,
        )


def test_checksums_are_checked_before_a_cache_is_reused(first200_csv, tmp_path):
    """A cache built from a truncated file without checksums is not reused once the
    official checksum is given: the file is refused."""
    lines = first200_csv.read_bytes().splitlines(keepends=True)
    truncated = tmp_path / FIRST200
    truncated.write_bytes(b"".join(lines[: len(lines) // 2]))
    root = tmp_path / "root"
    assert len(QM9(root, source="csv", csv_files=[truncated], log=False)) < 200
    with pytest.raises(ValueError, match=r"qm9pack_first200\.csv.*sha256 .* does not match"):
        QM9(
            root,
            source="csv",
            csv_files=[truncated],
            checksums={FIRST200: sha256_file(first200_csv)},
            log=False,
        )


def test_qm9pack_source_verifies_checksums(first200_csv, tmp_path, monkeypatch):
    fake = tmp_path / "qm9pack_data"
    fake.mkdir()
    for name in QM9PACK_FILES:
        shutil.copy(first200_csv, fake / name)  # right format, wrong content
    monkeypatch.setattr(qm9_module, "qm9pack_data_dir", lambda: fake)
    with pytest.raises(ValueError, match=r"qm9_part1\.csv.*sha256"):
        QM9(tmp_path / "root", source="qm9pack", subset=5, log=False)
    assert not any(name.endswith(".pt") for name in _cache_files(tmp_path / "root"))


@pytest.mark.skipif(importlib.util.find_spec("qm9pack") is None, reason="qm9pack not installed")
def test_installed_qm9pack_checksums():
    folder = qm9_module.qm9pack_data_dir()
    for name in QM9PACK_FILES:
        assert sha256_file(folder / name) == QM9PACK_SHA256[name], name


def test_failure_mid_processing_leaves_no_cache(first200_csv, tmp_path, monkeypatch):
    real, calls = qm9_module.record_to_data, []

    def flaky(record, cutoff):
        calls.append(record.index)
        if len(calls) == 7:
            raise RuntimeError("simulated crash")
        return real(record, cutoff)

    monkeypatch.setattr(qm9_module, "record_to_data", flaky)
    with pytest.raises(RuntimeError, match="simulated crash"):
        QM9(tmp_path, source="csv", csv_files=[first200_csv], subset=20, log=False)
    assert _cache_files(tmp_path) == []


def test_failure_while_writing_leaves_no_cache(first200_csv, tmp_path, monkeypatch):
    def half_write(obj, handle, *args, **kwargs):
        handle.write(b"partial bytes")
        raise OSError("disk full")

    monkeypatch.setattr(qm9_module.torch, "save", half_write)
    with pytest.raises(OSError, match="disk full"):
        QM9(tmp_path, source="csv", csv_files=[first200_csv], subset=4, log=False)
    assert _cache_files(tmp_path) == []
    monkeypatch.undo()
    assert len(QM9(tmp_path, source="csv", csv_files=[first200_csv], subset=4, log=False)) == 4


def test_from_pyg_qm9_conversion(dataset):
    ours = dataset[3]  # acetylene, QM9 #4
    y19 = torch.zeros(1, 19)
    y19[0, list(PYG_TARGET_COLUMNS)] = ours.y[0]
    pyg = Data(z=ours.z, pos=ours.pos.double(), y=y19, name="gdb_4", smiles=ours.smiles, idx=3)
    data, method = from_pyg_qm9(pyg)
    assert method == "rdkit" and int(data.idx) == 4 and data.name == "gdb_4"
    for key in ("z", "x", "edge_index", "edge_attr", "y"):
        assert torch.equal(data[key], ours[key]), key
    with pytest.raises(ValueError, match="name"):
        from_pyg_qm9(Data(z=ours.z, pos=ours.pos, y=y19, name="mol4"))
    with pytest.raises(ValueError, match=r"y.*\[1, 19\]"):
        from_pyg_qm9(Data(z=ours.z, pos=ours.pos, y=ours.y, name="gdb_4"))


def test_argument_errors(first200_csv, tmp_path):
    with pytest.raises(ValueError, match="source"):
        QM9(tmp_path, source="sdf")
    with pytest.raises(ValueError, match="csv_files"):
        QM9(tmp_path, source="csv")
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        QM9(tmp_path, source="csv", csv_files=[tmp_path / "missing.csv"])
    with pytest.raises(ValueError, match="csv_files"):
        QM9(tmp_path, source="qm9pack", csv_files=[first200_csv])
    with pytest.raises(ValueError, match="cutoff"):
        QM9(tmp_path, source="csv", csv_files=[first200_csv], cutoff=0)
    with pytest.raises(ValueError, match="checksums"):
        QM9(tmp_path, source="csv", csv_files=[first200_csv], checksums={"other.csv": "0"})
    with pytest.raises(ValueError, match="checksums"):
        QM9(tmp_path, source="qm9pack", checksums={"qm9_part1.csv": "0"})


def test_bond_only_graph(first200_csv, tmp_path):
    ds = QM9(tmp_path, source="csv", csv_files=[first200_csv], subset=30, cutoff=None, log=False)
    assert int(ds._data.edge_attr[:, 0].sum()) == 0  # no "no bond" edges


@pytest.mark.slow
def test_subset12k(shared_data, tmp_path):
    files = sorted((shared_data / "qm9").glob("qm9pack_subset12k_part*.csv.gz"))
    ds = QM9(tmp_path, source="csv", csv_files=files, log=False)
    assert len(ds) == 12_000 and ds._data.z.shape[0] == 216_740
    idx = ds._data.idx
    assert bool((idx[1:] > idx[:-1]).all())
    assert list(read_qm9_csv(files[0]))[0].index == int(idx[0])


@pytest.mark.skipif(importlib.util.find_spec("qm9pack") is None, reason="qm9pack not installed")
def test_qm9pack_hardest_cage_keeps_smiles_bonds(tmp_path):
    """QM9 #133831 needs the tightest covalent rule; its bonds then match its SMILES."""
    from rdkit import Chem

    lines = (qm9_module.qm9pack_data_dir() / "qm9_part3.csv").read_text().splitlines(True)
    row = next(x for x in reversed(lines) if x.startswith('"dsgdb9nsd_133831.xyz"'))
    (tmp_path / "one.csv").write_text(lines[0] + row)
    (record,) = read_qm9_csv(tmp_path / "one.csv")
    data, method = qm9_module.record_to_data(record, cutoff=None)
    assert method == "covalent-1.1"
    bonds = Chem.AddHs(Chem.MolFromSmiles(record.smiles)).GetNumBonds()
    assert data.edge_index.shape[1] == 2 * bonds


def test_from_pyg_qm9_keeps_the_atomization_columns(dataset):
    """PyG's ``y [1, 19]`` holds total U0/U/H/G in columns 7-10 and the atomization ones in
    12-15 (PyG's documented table): the stored targets are the atomization energies."""
    ours = dataset[3]  # acetylene, QM9 #4
    z = ours.z.tolist()
    y19 = torch.zeros(1, 19)
    y19[0, :7] = ours.y[0, :7]  # mu, alpha, homo, lumo, gap, r2, zpve
    y19[0, 11] = ours.y[0, 11]  # Cv
    for k, kind in enumerate(("U0", "U", "H", "G")):
        atoms = sum(ATOM_REFERENCES_HARTREE[kind][number] for number in z) * HARTREE_TO_EV
        y19[0, 7 + k] = ours.y[0, 7 + k] + atoms  # total energy (eV)
        y19[0, 12 + k] = ours.y[0, 7 + k]  # atomization energy (eV)
    y19[0, 16:] = torch.tensor([1.0, 2.0, 3.0])  # rotational constants A, B, C (GHz)
    pyg = Data(z=ours.z, pos=ours.pos.double(), y=y19, name="gdb_4", smiles=ours.smiles)
    data, _ = from_pyg_qm9(pyg)
    torch.testing.assert_close(data.y, ours.y)


def test_negative_target_index_is_refused():
    """Target indices run over [0, 12) only: -1 is not an alias of the last column."""
    with pytest.raises(ValueError, match="out of range"):
        target_index(-1)


def test_integer_target_and_empty_target_list(dataset, first200_csv):
    """``target=4`` keeps the gap column like ``target="gap"``; ``target=[]`` is refused."""
    gap = QM9(dataset.root, source="csv", csv_files=[first200_csv], target=4, log=False)
    assert gap.target_names == ("gap",) and gap[5].y.shape == (1, 1)
    assert torch.equal(gap[5].y[:, 0], dataset[5].y[:, 4])
    with pytest.raises(ValueError, match="non-empty"):
        QM9(dataset.root, source="csv", csv_files=[first200_csv], target=[], log=False)


def test_cutoff_gets_its_own_cache(first200_csv, tmp_path):
    """A bond-only set built in the same root does not reuse the radius-graph cache."""
    options = dict(source="csv", csv_files=[first200_csv], subset=5, log=False)
    radius = QM9(tmp_path, **options)
    bonds = QM9(tmp_path, cutoff=None, **options)
    assert radius.processed_paths != bonds.processed_paths
    assert int(bonds._data.edge_attr[:, 0].sum()) == 0 < int(radius._data.edge_attr[:, 0].sum())


def test_subset_may_take_every_molecule(first200_csv, tmp_path):
    """``subset=M`` with ``M`` equal to the number of molecules keeps them all."""
    lines = first200_csv.read_text().splitlines(keepends=True)
    four = tmp_path / "four.csv"
    four.write_text("".join(lines[:5]))  # header + QM9 #1..#4
    ds = QM9(tmp_path / "root", source="csv", csv_files=[four], subset=4, log=False)
    assert ds._data.idx.tolist() == [1, 2, 3, 4]


def _rewrite_row(source: Path, target: Path, row: int, **changes: str) -> None:
    """Copy the CSV's header and first 4 rows to ``target``, changing fields of ``row``."""
    with open(source, newline="") as handle:
        reader = csv.DictReader(handle)
        rows = [next(reader) for _ in range(4)]
        fields = reader.fieldnames
    rows[row].update(changes)
    with open(target, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def test_atom_count_mismatch_and_nan_coordinates_are_detected(first200_csv, tmp_path):
    """A row whose ``N_atoms`` disagrees with its atoms, or with a NaN coordinate, is refused
    with its file and line."""
    rows = _csv_rows(first200_csv)
    bad = tmp_path / "bad.csv"
    _rewrite_row(first200_csv, bad, 2, N_atoms=str(int(rows[2]["N_atoms"]) + 1))
    with pytest.raises(ValueError, match=r"bad\.csv.*line 4.*N_atoms"):
        list(read_qm9_csv(bad))
    xyz = rows[1]["XYZ_Ang"]
    _rewrite_row(first200_csv, bad, 1, XYZ_Ang="[[nan" + xyz[xyz.index(",") :])
    with pytest.raises(ValueError, match=r"bad\.csv.*line 3.*non-finite"):
        list(read_qm9_csv(bad))


def test_checksums_are_case_insensitive(first200_csv, tmp_path):
    """A sha256 written in upper-case hex (as some tools print it) is accepted."""
    upper = sha256_file(first200_csv).upper()
    assert len(list(read_qm9_csv(first200_csv, expected_sha256=upper))) == 200
    options = dict(source="csv", csv_files=[first200_csv], subset=2, log=False)
    assert len(QM9(tmp_path, checksums={FIRST200: upper}, **options)) == 2


def test_overlapping_files_and_repeated_molecules_are_refused(first200_csv, shared_data, tmp_path):
    """The first-200 sample and the 12k sample share 11 molecules: read together they would
    repeat them (one copy in train, one in test); a header-only file names the file."""
    subset12k = shared_data / "qm9" / "qm9pack_subset12k_part1.csv.gz"
    with pytest.raises(ValueError, match=r"part1\.csv\.gz.*repeats molecule Index 2 of .*first200"):
        QM9(tmp_path / "a", source="csv", csv_files=[first200_csv, subset12k], subset=3, log=False)
    with pytest.raises(
        ValueError, match=r"line 2 repeats molecule Index 1 of .*first200\.csv', line 2"
    ):
        QM9(tmp_path / "b", source="csv", csv_files=[first200_csv, first200_csv], log=False)
    header = tmp_path / "header.csv"
    header.write_text(first200_csv.read_text().splitlines(keepends=True)[0])
    with pytest.raises(ValueError, match=r"header\.csv.*a header line but no molecule rows"):
        QM9(tmp_path / "c", source="csv", csv_files=[header], log=False)
