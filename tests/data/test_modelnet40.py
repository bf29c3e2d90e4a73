"""ModelNet40: the real 156-shape sample in ../shared/data, split handling, OFF meshes, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch_geometric.loader import DataLoader

from symgraph.data.modelnet40 import (
    MODELNET40_CLASSES,
    RESAMPLED_URL,
    ModelNet40,
    read_off,
    read_resampled_file,
    save_atomic,
)
from symgraph.data.transforms import NormalizeUnitSphere

# Shapes per class in the sample (files / train / test), from its README.
SAMPLE_COUNTS = {"airplane": (9, 8, 1), "sofa": (12, 12, 0), "vase": (11, 7, 4), "door": (0, 0, 0)}


@pytest.fixture(scope="module")
def mn_root(shared_data: Path) -> Path:
    root = shared_data / "modelnet40"
    if not (root / "modelnet40_normal_resampled").is_dir():
        pytest.skip("ModelNet40 sample not found")
    return root


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("modelnet40_cache")


@pytest.fixture(scope="module")
def train(mn_root: Path, cache: Path) -> ModelNet40:
    return ModelNet40(mn_root, "train", processed_dir=cache)


@pytest.fixture(scope="module")
def test_set(mn_root: Path, cache: Path) -> ModelNet40:
    return ModelNet40(mn_root, "test", processed_dir=cache)


# --------------------------------------------------------------------------- real sample
def test_real_sample_counts_and_classes(train: ModelNet40, test_set: ModelNet40) -> None:
    assert len(train) == 127 and len(test_set) == 29
    assert train.classes == list(MODELNET40_CLASSES) and train.num_classes == 40
    counts_train = torch.bincount(torch.cat([d.y for d in train]), minlength=40)
    counts_test = torch.bincount(torch.cat([d.y for d in test_set]), minlength=40)
    for cls, (total, n_train, n_test) in SAMPLE_COUNTS.items():
        i = MODELNET40_CLASSES.index(cls)
        assert (int(counts_train[i]), int(counts_test[i])) == (n_train, n_test)
        assert n_train + n_test == total
    assert int(counts_train.sum() + counts_test.sum()) == 156
    assert train.shape_ids[0] == "airplane_0126" and int(train[0].y) == 0
    assert set(train.shape_ids).isdisjoint(test_set.shape_ids)


def test_shape_ids_follow_indexing_and_shuffling(train: ModelNet40) -> None:
    """A subset or shuffled copy names its own items, in its order (the class of each name
    is the item's label)."""
    sub = train[[100, 0]]
    assert sub.shape_ids == [train.shape_ids[100], train.shape_ids[0]] and len(train) == 127
    shuffled = train.shuffle()
    assert sorted(shuffled.shape_ids) == sorted(train.shape_ids)
    for ds in (sub, shuffled):
        for shape_id, data in zip(ds.shape_ids, ds):
            assert shape_id.rsplit("_", 1)[0] == train.classes[int(data.y)]


def test_a_relative_root_reads_the_same_sample(
    mn_root: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--root data/modelnet40`` is relative: PyG joins the split file onto raw_dir."""
    monkeypatch.chdir(mn_root.parent)
    relative = ModelNet40(Path(mn_root.name), "test", processed_dir=cache / "relative")
    assert len(relative) == 29 and Path(relative.raw_dir).is_absolute()


def test_a_restored_shape_file_makes_a_new_cache(mn_root: Path, tmp_path: Path) -> None:
    """The cache key covers the shape files found: a file missing at the first load and
    restored later is read at the next load (the old cache is not reused)."""
    import shutil

    sample = mn_root / "modelnet40_normal_resampled"
    copy = tmp_path / "modelnet40_normal_resampled"
    copy.mkdir()
    for name in ("modelnet40_shape_names.txt", "modelnet40_test.txt"):
        shutil.copy(sample / name, copy / name)
    for cls in ("airplane", "vase"):
        shutil.copytree(sample / cls, copy / cls)
    removed = copy / "vase" / "vase_0487.txt"
    kept = removed.read_bytes()
    removed.unlink()
    options = dict(classes=["airplane", "vase"], processed_dir=tmp_path / "cache")
    with pytest.warns(UserWarning, match="1 of 5 shapes"):
        first = ModelNet40(copy, "test", allow_missing=True, **options)
    removed.write_bytes(kept)
    second = ModelNet40(copy, "test", allow_missing=True, **options)
    assert (len(first), first.num_missing) == (4, 1)
    assert (len(second), second.num_missing) == (5, 0)


def test_real_sample_items(train: ModelNet40, mn_root: Path) -> None:
    for i in (0, 50, len(train) - 1):
        data = train[i]
        assert data.pos.shape == (1024, 3) and data.pos.dtype == torch.float32
        assert data.normal.shape == (1024, 3) and data.normal.dtype == torch.float32
        assert data.y.shape == (1,) and data.y.dtype == torch.long
        assert torch.allclose(data.normal.norm(dim=1), torch.ones(1024), atol=1e-4)
        assert data.pos.norm(dim=1).max() < 1.1  # normalised shape coordinates
    # The first points are the first lines of the file (bytes unchanged).
    shape = train.shape_ids[0]
    path = mn_root / "modelnet40_normal_resampled" / shape.rsplit("_", 1)[0] / f"{shape}.txt"
    first = np.loadtxt(path, delimiter=",", max_rows=3, dtype=np.float32)
    assert np.allclose(train[0].pos[:3].numpy(), first[:, :3])


def test_all_points_and_placeholder_normals(mn_root: Path, tmp_path: Path) -> None:
    ds = ModelNet40(mn_root, "train", num_points=None, processed_dir=tmp_path)
    assert ds[0].pos.shape == (2048, 3)
    # The official files hold a few placeholder normals (1, 1, 1); they are made unit.
    assert ds.num_fixed_normals == 4
    normals = torch.cat([d.normal for d in ds])
    assert torch.allclose(normals.norm(dim=1), torch.ones(len(normals)), atol=1e-4)
    with pytest.raises(ValueError, match="num_points=4096"):
        ModelNet40(mn_root, "train", num_points=4096, classes=["cone"], processed_dir=tmp_path)


def test_root_may_be_the_data_folder(mn_root: Path, tmp_path: Path) -> None:
    ds = ModelNet40(
        mn_root / "modelnet40_normal_resampled",
        "train",
        classes=["airplane"],
        processed_dir=tmp_path,
    )
    assert len(ds) == 8 and ds.classes == ["airplane"]


def test_batches_with_dataloader(train: ModelNet40) -> None:
    batch = next(iter(DataLoader(train, batch_size=8)))
    assert batch.pos.shape == (8 * 1024, 3) and batch.y.shape == (8,)


# --------------------------------------------------------------------------- splits
def test_missing_shapes_error_or_skip(mn_root: Path, tmp_path: Path) -> None:
    official = mn_root / "official_split"
    with pytest.raises(FileNotFoundError, match="allow_missing=True"):
        ModelNet40(mn_root, "train", split_dir=official, processed_dir=tmp_path)
    with pytest.warns(UserWarning, match="9716 of 9843 shapes"):
        ds = ModelNet40(
            mn_root, "train", split_dir=official, allow_missing=True, processed_dir=tmp_path
        )
    assert len(ds) == 127 and ds.num_missing == 9716
    with pytest.warns(UserWarning, match="99 of 100 shapes"):
        ds = ModelNet40(
            mn_root,
            "test",
            classes=["airplane"],
            split_dir=official,
            allow_missing=True,
            processed_dir=tmp_path,
        )
    assert ds.shape_ids == ["airplane_0703"]


def test_missing_split_file(mn_root: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="modelnet40_test.txt") as info:
        ModelNet40(mn_root, "test", split_dir=tmp_path, processed_dir=tmp_path)
    assert RESAMPLED_URL in str(info.value)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ModelNet40(tmp_path / "nowhere", processed_dir=tmp_path)


def test_download_explains_where_to_get_the_data(train: ModelNet40) -> None:
    with pytest.raises(FileNotFoundError, match="PointNet\\+\\+") as info:
        train.download()
    assert RESAMPLED_URL in str(info.value)


def test_bad_split_entry(tmp_path: Path) -> None:
    data = _write_layout(tmp_path, {"cone": 1}, train=["cone_0001", "dragon_0001"])
    with pytest.raises(ValueError, match="dragon_0001"):
        ModelNet40(data, "train", num_points=8, processed_dir=tmp_path / "p")


# --------------------------------------------------------------------------- classes
def test_class_subset(mn_root: Path, cache: Path) -> None:
    ds = ModelNet40(mn_root, "train", classes=["vase", "airplane"], processed_dir=cache)
    assert ds.classes == ["airplane", "vase"] and ds.num_classes == 2
    assert torch.bincount(torch.cat([d.y for d in ds])).tolist() == [8, 7]


def test_unknown_class(mn_root: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown class names \\['dragon'\\].*airplane"):
        ModelNet40(mn_root, classes=["airplane", "dragon"], processed_dir=tmp_path)
    with pytest.raises(ValueError, match="distinct"):
        ModelNet40(mn_root, classes=["airplane", "airplane"], processed_dir=tmp_path)
    with pytest.raises(ValueError, match="no train shapes"):  # door is absent from the sample
        ModelNet40(mn_root, classes=["door"], processed_dir=tmp_path)


def test_bad_arguments(mn_root: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="split"):
        ModelNet40(mn_root, "val", processed_dir=tmp_path)
    with pytest.raises(ValueError, match="source"):
        ModelNet40(mn_root, source="ply", processed_dir=tmp_path)
    with pytest.raises(ValueError, match="num_points"):
        ModelNet40(mn_root, num_points=0, processed_dir=tmp_path)


# --------------------------------------------------------------------------- bad files
def _write_layout(folder: Path, shapes: dict[str, int], train: list[str], points: int = 16) -> Path:
    """A tiny resampled layout with ``shapes[cls]`` random shapes per class."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "modelnet40_shape_names.txt").write_text("\n".join(MODELNET40_CLASSES) + "\n")
    for cls, count in shapes.items():
        (folder / cls).mkdir(parents=True, exist_ok=True)
        for k in range(1, count + 1):
            normal = rng.normal(size=(points, 3))
            normal /= np.linalg.norm(normal, axis=1, keepdims=True)
            rows = np.concatenate([rng.uniform(-1, 1, size=(points, 3)), normal], axis=1)
            np.savetxt(folder / cls / f"{cls}_{k:04d}.txt", rows, fmt="%.6f", delimiter=",")
    (folder / "modelnet40_train.txt").write_text("\n".join(train) + "\n")
    return folder


def test_nan_and_malformed_files(tmp_path: Path) -> None:
    data = _write_layout(tmp_path / "d", {"cone": 2}, train=["cone_0001", "cone_0002"])
    bad = data / "cone" / "cone_0002.txt"
    lines = bad.read_text().splitlines()
    lines[3] = "nan,0.1,0.2,0.0,0.0,1.0"
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match="cone_0002.txt.*NaN"):
        ModelNet40(data, "train", num_points=8, processed_dir=tmp_path / "p")
    bad.write_text("0.1,0.2,0.3\n" * 10)
    with pytest.raises(ValueError, match="6 comma-separated"):
        read_resampled_file(bad)
    bad.write_text("0.1,0.2,0.3,0,0,1\n" * 4)
    with pytest.raises(ValueError, match="num_points=8"):
        read_resampled_file(bad, 8)


def test_cache_is_reused_and_atomic(tmp_path: Path) -> None:
    data = _write_layout(tmp_path / "d", {"cone": 3}, train=["cone_0001", "cone_0003"])
    proc = tmp_path / "p"
    ds = ModelNet40(data, "train", num_points=8, processed_dir=proc)
    assert len(ds) == 2 and ds.shape_ids == ["cone_0001", "cone_0003"]
    (folder,) = proc.iterdir()
    assert sorted(p.name for p in folder.iterdir()) == [
        "data.pt",
        "meta.json",
        "pre_filter.pt",
        "pre_transform.pt",
    ]
    stamp = (folder / "data.pt").stat().st_mtime_ns
    again = ModelNet40(data, "train", num_points=8, processed_dir=proc)
    assert (folder / "data.pt").stat().st_mtime_ns == stamp
    assert torch.equal(again[1].pos, ds[1].pos)
    # A different pre_transform is a different cache entry, not a stale hit.
    normed = ModelNet40(
        data, "train", num_points=8, pre_transform=NormalizeUnitSphere(), processed_dir=proc
    )
    assert len(list(proc.iterdir())) == 2
    assert torch.isclose(normed[0].pos.norm(dim=1).max(), torch.tensor(1.0))
    reloaded = ModelNet40(data, "train", num_points=8, processed_dir=proc, force_reload=True)
    assert torch.equal(reloaded[1].pos, ds[1].pos)
    assert not [p for p in proc.rglob("*") if p.name.endswith(".tmp")]


def test_save_atomic_leaves_nothing_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "x.pt"
    with pytest.raises(Exception):  # noqa: B017 - any pickling error
        save_atomic({"f": lambda: 0}, target)
    assert list(tmp_path.iterdir()) == []
    save_atomic({"a": torch.ones(2)}, target)
    assert torch.equal(torch.load(target, weights_only=True)["a"], torch.ones(2))


# --------------------------------------------------------------------------- OFF meshes
TETRA = """OFF
# a regular-ish tetrahedron, faces wound outwards
4 4 6
0 0 0
1 0 0
0 1 0
0 0 1
3 0 2 1
3 0 1 3
3 0 3 2
3 1 2 3
"""
# A unit cube with quad faces and the header fused with the counts (as in some ModelNet
# files), plus trailing colour values on one face line.
CUBE = """OFF8 6 0
0 0 0
1 0 0
1 1 0
0 1 0
0 0 1
1 0 1
1 1 1
0 1 1
4 0 3 2 1
4 4 5 6 7
4 0 1 5 4 255 0 0
4 2 3 7 6
4 1 2 6 5
4 0 4 7 3
"""


def _off_root(tmp_path: Path) -> Path:
    root = tmp_path / "off"
    for cls, text in (("cone", TETRA), ("cup", CUBE)):
        for split in ("train", "test"):
            folder = root / "raw" / cls / split
            folder.mkdir(parents=True)
            (folder / f"{cls}_0001.off").write_text(text)
    return root


def test_read_off(tmp_path: Path) -> None:
    root = _off_root(tmp_path)
    tetra = read_off(root / "raw" / "cone" / "train" / "cone_0001.off")
    assert tetra.pos.shape == (4, 3) and tetra.face.shape == (3, 4)
    cube = read_off(root / "raw" / "cup" / "train" / "cup_0001.off")
    assert cube.pos.shape == (8, 3) and cube.face.shape == (3, 12)  # quads -> 2 triangles
    bad = tmp_path / "bad.off"
    bad.write_text("PLY\n")
    with pytest.raises(ValueError, match="starting with 'OFF'"):
        read_off(bad)
    bad.write_text("OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 7\n")
    with pytest.raises(ValueError, match="face indices"):
        read_off(bad)
    bad.write_text("OFF\n3 1 0\n0 0 0\n1 0 0\n")
    with pytest.raises(ValueError, match="truncated"):
        read_off(bad)


def test_off_source_samples_surface_points(tmp_path: Path) -> None:
    root = _off_root(tmp_path)
    ds = ModelNet40(root, "train", source="off", num_points=256, classes=["cone", "cup"])
    assert (
        len(ds) == 2 and ds.classes == ["cone", "cup"] and ds.shape_ids == ["cone_0001", "cup_0001"]
    )
    tetra, cube = ds[0], ds[1]
    for data in (tetra, cube):
        assert data.pos.shape == (256, 3) and data.normal.shape == (256, 3)
        assert data.pos.dtype == torch.float32 and data.y.shape == (1,)
        assert torch.allclose(data.normal.norm(dim=1), torch.ones(256), atol=1e-5)
        # consistently wound meshes: normals point away from the centre
        assert bool(((data.pos - data.pos.mean(0)) * data.normal).sum(1).gt(-1e-5).all())
    assert [int(tetra.y), int(cube.y)] == [0, 1]
    # tetrahedron points lie in the solid's boundary: x, y, z >= 0 and x + y + z <= 1
    assert bool((tetra.pos > -1e-6).all() and (tetra.pos.sum(1) < 1 + 1e-5).all())
    on_face = (
        cube.pos.isclose(torch.tensor(0.0), atol=1e-5)
        | cube.pos.isclose(torch.tensor(1.0), atol=1e-5)
    ).any(1)
    assert bool(on_face.all())
    # deterministic per shape and seed
    again = ModelNet40(
        root, "train", source="off", num_points=256, classes=["cone", "cup"], force_reload=True
    )
    assert torch.equal(again[1].pos, cube.pos)
    other = ModelNet40(root, "train", source="off", num_points=256, classes=["cone", "cup"], seed=1)
    assert not torch.equal(other[1].pos, cube.pos)


def test_off_missing_classes_and_degenerate_mesh(tmp_path: Path) -> None:
    root = _off_root(tmp_path)
    with pytest.warns(UserWarning, match="38 classes"):
        ds = ModelNet40(root, "test", source="off", num_points=32)
    assert len(ds) == 2 and ds.num_classes == 40
    assert [int(d.y) for d in ds] == [MODELNET40_CLASSES.index(c) for c in ("cone", "cup")]
    flat = root / "raw" / "cone" / "train" / "cone_0002.off"
    flat.write_text("OFF\n3 1 0\n0 0 0\n1 0 0\n2 0 0\n3 0 1 2\n")
    with pytest.raises(ValueError, match="cone_0002.off.*degenerate"):
        ModelNet40(root, "train", source="off", num_points=32, classes=["cone"])


def test_normals_more_than_one_percent_off_are_counted(tmp_path: Path) -> None:
    """A normal 5 % too long is re-normalised and counted; one 0.5 % too long is not counted."""
    path = tmp_path / "shape.txt"
    path.write_text("0,0,0,0,0,1.05\n1,0,0,0,1.005,0\n0,1,0,0.6,0.8,0\n")
    pos, normal, bad = read_resampled_file(path)
    assert bad == 1 and pos.shape == (3, 3)
    assert torch.allclose(normal.norm(dim=1), torch.ones(3))


def test_read_off_refuses_a_face_index_equal_to_the_vertex_count(tmp_path: Path) -> None:
    """Vertex indices are 0-based: with 3 vertices, index 3 is out of range."""
    bad = tmp_path / "bad.off"
    bad.write_text("OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 3\n")
    with pytest.raises(ValueError, match="face indices"):
        read_off(bad)


def test_num_points_gets_its_own_cache(tmp_path: Path) -> None:
    """Two point counts read into the same processed_dir are two caches, not a stale hit."""
    data = _write_layout(tmp_path / "d", {"cone": 1}, train=["cone_0001"])
    eight = ModelNet40(data, "train", num_points=8, processed_dir=tmp_path / "p")
    twelve = ModelNet40(data, "train", num_points=12, processed_dir=tmp_path / "p")
    assert eight[0].pos.shape == (8, 3) and twelve[0].pos.shape == (12, 3)


def test_a_single_missing_shape_is_an_error(tmp_path: Path) -> None:
    """Even one listed shape absent on disk raises unless allow_missing=True."""
    data = _write_layout(tmp_path / "d", {"cone": 1}, train=["cone_0001", "cone_0002"])
    with pytest.raises(FileNotFoundError, match="1 of 2 shapes"):
        ModelNet40(data, "train", num_points=8, processed_dir=tmp_path / "p")


def test_off_sampling_is_seeded_per_shape(tmp_path: Path) -> None:
    """Two copies of the same mesh under different shape names get different samples."""
    root = _off_root(tmp_path)
    folder = root / "raw" / "cone" / "train"
    (folder / "cone_0002.off").write_text(TETRA)
    ds = ModelNet40(root, "train", source="off", num_points=64, classes=["cone"])
    assert ds.shape_ids == ["cone_0001", "cone_0002"]
    assert not torch.equal(ds[0].pos, ds[1].pos)


def test_off_source_needs_a_point_count(tmp_path: Path) -> None:
    """OFF meshes are sampled: num_points=None (all points) only makes sense for files."""
    root = _off_root(tmp_path)
    with pytest.raises(ValueError, match="num_points: expected a positive int, got None"):
        ModelNet40(root, "train", source="off", num_points=None, classes=["cone"])


def test_blank_lines_do_not_count_towards_num_points(tmp_path):
    """The first ``num_points`` points are the first non-blank lines, wherever blanks sit."""
    path = tmp_path / "edited.txt"
    path.write_text("0,0,0,0,0,1\n\n1,0,0,0,0,1\n2,0,0,0,0,1\n")
    pos, normal, _ = read_resampled_file(path, 2)
    assert pos[:, 0].tolist() == [0.0, 1.0] and normal.shape == (2, 3)
    assert read_resampled_file(path)[0].shape == (3, 3)


def test_a_shared_seeded_pre_transform_gives_each_set_what_its_cache_key_says(
    mn_root: Path, tmp_path: Path
) -> None:
    """One seeded SamplePointsFixed as the pre_transform of the train and the test set: the
    test set must get the points a fresh transform gives (its cache key is the same either
    way), not points that depend on the draws the train set used up first, so a machine
    that builds only the test cache gets the same test set."""
    from symgraph.data.transforms import SamplePointsFixed

    shared = SamplePointsFixed(256, seed=0)
    ModelNet40(mn_root, "train", processed_dir=tmp_path / "a", pre_transform=shared)
    after_train = ModelNet40(mn_root, "test", processed_dir=tmp_path / "a", pre_transform=shared)
    alone = ModelNet40(
        mn_root, "test", processed_dir=tmp_path / "b", pre_transform=SamplePointsFixed(256, 0)
    )
    assert Path(after_train.processed_dir).name == Path(alone.processed_dir).name
    torch.testing.assert_close(after_train._data.pos, alone._data.pos, rtol=0, atol=0)
    torch.testing.assert_close(after_train._data.normal, alone._data.normal, rtol=0, atol=0)


def test_the_first_run_after_the_off_download_caches_under_the_files_it_fetched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cache key counts the shape files found. The first run downloads them: its cache
    must be keyed by the fetched files, or the next run misses it and samples every mesh
    again (minutes for the 12,311 ModelNet40 meshes), leaving an orphaned cache behind."""
    import symgraph.data.modelnet40 as modelnet40

    fetched = []

    def fake_fetch(url: str, parent: Path) -> None:
        fetched.append(url)
        for cls in ("cone", "cup"):
            folder = Path(parent) / "ModelNet40" / cls / "train"
            folder.mkdir(parents=True)
            (folder / f"{cls}_0001.off").write_text(TETRA)

    monkeypatch.setattr(modelnet40, "fetch_into", fake_fetch)
    options = dict(source="off", num_points=16, classes=["cone", "cup"])
    first = ModelNet40(tmp_path, "train", **options)
    second = ModelNet40(tmp_path, "train", **options)
    assert fetched == [modelnet40.OFF_URL] and len(second) == 2
    assert second.processed_dir == first.processed_dir
    assert len(list((tmp_path / "processed").iterdir())) == 1
