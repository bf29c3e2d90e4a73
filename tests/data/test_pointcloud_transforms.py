"""Point-cloud transforms: normalisation, fixed sampling, group rotations, graphs, bad input."""

from __future__ import annotations

import math

import pytest
import torch
from e3nn import o3
from torch_geometric.data import Batch, Data
from torch_geometric.loader import DataLoader
from torch_geometric.transforms import Compose

from symgraph.data.shapes import ProceduralShapes
from symgraph.data.transforms import (
    NORMAL_IRREPS,
    DeduplicatePoints,
    KNNGraph,
    NormalizeUnitSphere,
    NormalsAsFeatures,
    RadiusGraph,
    RandomGroupRotation,
    SamplePointsFixed,
    normals_as_features,
    transform_fingerprint,
)
from symgraph.groups.catalog import O3, SO3, C


class ZRotations:
    """Stand-in group: uniform rotations about z."""

    name = "SO2z"

    def sample(self, n, generator=None, dtype=torch.float32):
        angle = 2 * math.pi * torch.rand(n, generator=generator, dtype=torch.float64)
        c, s, z, o = angle.cos(), angle.sin(), torch.zeros(n, dtype=torch.float64), None
        o = torch.ones(n, dtype=torch.float64)
        g = torch.stack([c, -s, z, s, c, z, z, z, o], dim=1).reshape(n, 3, 3)
        return g.to(dtype)


class Orthogonal:
    """Stand-in group: Haar-random elements of O(3) (half of them reflections)."""

    def sample(self, n, generator=None, dtype=torch.float32):
        q, r = torch.linalg.qr(torch.randn(n, 3, 3, generator=generator, dtype=torch.float64))
        return (q * torch.sign(torch.diagonal(r, dim1=1, dim2=2))[:, None, :]).to(dtype)


def _cloud(p: int = 200, seed: int = 0) -> Data:
    g = torch.Generator().manual_seed(seed)
    pos = torch.randn(p, 3, generator=g) * torch.tensor([1.0, 2.0, 0.5]) + 3.0
    normal = torch.nn.functional.normalize(torch.randn(p, 3, generator=g), dim=1)
    return Data(pos=pos, normal=normal, y=torch.tensor([4]))


def _dist(pos: torch.Tensor) -> torch.Tensor:
    return torch.cdist(pos, pos, compute_mode="donot_use_mm_for_euclid_dist")


# --------------------------------------------------------------------------- normalise
def test_normalize_unit_sphere() -> None:
    data = NormalizeUnitSphere()(_cloud())
    assert data.pos.mean(0).abs().max() < 1e-5
    assert torch.isclose(data.pos.norm(dim=1).max(), torch.tensor(1.0))
    assert torch.allclose(data.normal.norm(dim=1), torch.ones(200), atol=1e-6)
    box = NormalizeUnitSphere("bbox")(_cloud())
    assert torch.allclose(box.pos.amax(0) + box.pos.amin(0), torch.zeros(3), atol=1e-5)
    same = NormalizeUnitSphere()(Data(pos=torch.ones(5, 3)))  # all points coincide
    assert torch.equal(same.pos, torch.zeros(5, 3))
    src = _cloud()
    NormalizeUnitSphere()(src)
    assert torch.equal(src.pos, _cloud().pos)  # the input is not modified
    with pytest.raises(ValueError, match="center"):
        NormalizeUnitSphere("median")
    normals = torch.tensor([[2.0, 0, 0], [0, 0, 0], [0, 3, 4]])
    unit = NormalizeUnitSphere()(Data(pos=torch.randn(3, 3), normal=normals)).normal
    assert torch.allclose(unit.norm(dim=1), torch.tensor([1.0, 0.0, 1.0]))  # zero stays zero


# --------------------------------------------------------------------------- sampling
def test_sample_points_fixed_down_and_up() -> None:
    data = _cloud(100)
    data.x = data.pos.sum(1, keepdim=True)
    down = SamplePointsFixed(32, seed=0)(data)
    assert down.pos.shape == (32, 3) and down.normal.shape == (32, 3) and down.x.shape == (32, 1)
    assert torch.allclose(down.x[:, 0], down.pos.sum(1))  # rows move together
    assert len(torch.unique(down.pos, dim=0)) == 32 and torch.equal(down.y, data.y)
    up = SamplePointsFixed(256, seed=0)(_cloud(10))
    assert up.pos.shape == (256, 3)
    assert len(torch.unique(up.pos, dim=0)) == 10  # every original point is kept
    assert len(torch.unique(up.pos[:10], dim=0)) < 10  # repeats are shuffled in, not appended
    again = SamplePointsFixed(32, seed=0)(_cloud(100))
    assert torch.equal(again.pos, down.pos)  # seeded
    one = SamplePointsFixed(4)(Data(pos=torch.zeros(1, 3), y=torch.tensor([2])))
    assert one.pos.shape == (4, 3) and one.y.tolist() == [2]  # y is not a per-point tensor
    with pytest.raises(ValueError, match="at least one point"):
        SamplePointsFixed(4)(Data(pos=torch.zeros(0, 3)))
    with pytest.raises(ValueError, match="num_points"):
        SamplePointsFixed(0)


def test_deduplicate_points() -> None:
    pos = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 0, 0], [0, 1, 0], [1, 0, 0]])
    normal = torch.eye(3)[[0, 1, 2, 0, 1]]
    out = DeduplicatePoints()(Data(pos=pos, normal=normal))
    assert out.pos.tolist() == [[0, 0, 0], [1, 0, 0], [0, 1, 0]]  # first occurrences, in order
    assert torch.equal(out.normal, torch.eye(3)[[0, 1, 0]])
    near = DeduplicatePoints(decimals=3)(Data(pos=torch.tensor([[0.0, 0, 0], [1e-5, 0, 0]])))
    assert near.pos.shape == (1, 3)
    with pytest.raises(ValueError, match=r"DeduplicatePoints: expected `normal` with 5 rows"):
        DeduplicatePoints()(Data(pos=pos, normal=normal[:4]))  # used to be skipped silently


def test_per_point_tensors_must_match_the_cloud() -> None:
    data = Data(pos=torch.randn(6, 3), normal=torch.randn(5, 3))
    with pytest.raises(ValueError, match=r"SamplePointsFixed: expected `normal` with 6 rows"):
        SamplePointsFixed(4, seed=0)(data)


def test_deduplicating_a_cloud_without_repeats_keeps_its_edges() -> None:
    """Edges are dropped only when a point is removed (their indices would be stale)."""
    pos = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0]])
    edge_index = torch.tensor([[0, 1, 2], [1, 2, 0]])
    out = DeduplicatePoints()(Data(pos=pos, edge_index=edge_index, edge_attr=torch.ones(3, 2)))
    assert torch.equal(out.pos, pos) and torch.equal(out.edge_index, edge_index)
    assert torch.equal(out.edge_attr, torch.ones(3, 2))
    repeated = Data(pos=pos[[0, 1, 0, 2]], edge_index=edge_index)
    assert "edge_index" not in DeduplicatePoints()(repeated)


# --------------------------------------------------------------------------- rotations
@pytest.mark.parametrize("group", [ZRotations(), Orthogonal(), SO3(), O3(), C(4)])
def test_group_rotation_is_applied_consistently(group) -> None:
    data = NormalizeUnitSphere()(_cloud())
    out = RandomGroupRotation(group, seed=1, store=True)(data)
    g = out.rotation[0]
    assert out.rotation.shape == (1, 3, 3) and out.rotation.dtype == torch.float64
    assert torch.allclose(out.pos.double(), data.pos.double() @ g.T, atol=1e-6)
    assert torch.allclose(out.normal.double(), data.normal.double() @ g.T, atol=1e-6)
    assert torch.allclose(_dist(out.pos), _dist(data.pos), atol=1e-5)
    assert torch.allclose(out.normal.norm(dim=1), torch.ones(200), atol=1e-5)
    # the geometry between points and normals is kept: (p_j - p_i) . n_i
    rel = (data.pos[None] - data.pos[:, None]) @ data.normal[..., None]
    rel_out = (out.pos[None] - out.pos[:, None]) @ out.normal[..., None]
    assert torch.allclose(rel, rel_out, atol=1e-5)
    assert out.pos.dtype == torch.float32


def test_group_rotation_details() -> None:
    data = _cloud()
    zrot = RandomGroupRotation(ZRotations())(data)
    assert torch.allclose(zrot.pos[:, 2], data.pos[:, 2], atol=1e-6)  # z kept by SO(2) about z
    a = RandomGroupRotation(Orthogonal(), seed=5)(data)
    b = RandomGroupRotation(Orthogonal(), seed=5)(data)
    assert torch.equal(a.pos, b.pos)
    feats = RandomGroupRotation(Orthogonal(), keys=("pos", "normal", "x"), seed=2, store=True)(
        normals_as_features(_cloud())
    )
    assert torch.allclose(feats.x, feats.normal)
    no_normal = RandomGroupRotation(ZRotations())(Data(pos=data.pos))
    assert "normal" not in no_normal
    batch = next(iter(DataLoader([feats, feats], batch_size=2)))
    assert batch.rotation.shape == (2, 3, 3)


def test_group_rotation_bad_groups() -> None:
    with pytest.raises(TypeError, match="sample"):
        RandomGroupRotation(object())

    class Stretch:
        def sample(self, n, generator=None, dtype=torch.float32):
            return 2 * torch.eye(3, dtype=dtype).expand(n, 3, 3)

    class Flat:
        def sample(self, n, generator=None, dtype=torch.float32):
            return torch.eye(3, dtype=dtype)

    class Sheared:
        def sample(self, n, generator=None, dtype=torch.float32):
            return (torch.eye(3) + 1e-3 * torch.ones(3, 3)).to(dtype).expand(n, 3, 3)

    for almost in (Stretch(), Sheared()):
        with pytest.raises(ValueError, match="orthogonal"):
            RandomGroupRotation(almost)(_cloud())
    with pytest.raises(ValueError, match="\\[1, 3, 3\\]"):
        RandomGroupRotation(Flat())(_cloud())
    with pytest.raises(ValueError, match="normal"):
        RandomGroupRotation(ZRotations())(Data(pos=torch.zeros(4, 3), normal=torch.zeros(3, 3)))


# --------------------------------------------------------------------------- features
def test_normals_as_1o_features() -> None:
    data = NormalsAsFeatures()(_cloud())
    assert torch.equal(data.x, data.normal)
    assert NORMAL_IRREPS == "1x1o" and o3.Irreps(NORMAL_IRREPS).dim == 3
    # e3nn's 1o basis is Cartesian (x, y, z): its Wigner matrix is the rotation itself
    g = Orthogonal().sample(1, torch.Generator().manual_seed(0), torch.float64)[0]
    assert torch.allclose(o3.Irreps(NORMAL_IRREPS).D_from_matrix(g), g, atol=1e-6)
    data = _cloud()
    data.x = torch.ones(200, 2)
    both = NormalsAsFeatures(cat=True)(data)
    assert both.x.shape == (200, 5) and torch.equal(both.x[:, 2:], data.normal)
    with pytest.raises(ValueError, match="normal"):
        normals_as_features(Data(pos=torch.zeros(3, 3)))


# --------------------------------------------------------------------------- graphs
def test_knn_graph_degrees_and_batches() -> None:
    data = KNNGraph(8)(_cloud(50))
    assert data.edge_index.shape == (2, 50 * 8)
    assert torch.bincount(data.edge_index[1], minlength=50).tolist() == [8] * 50
    assert not bool((data.edge_index[0] == data.edge_index[1]).any())
    looped = KNNGraph(8, loop=True)(_cloud(8))
    assert looped.edge_index.shape == (2, 64)
    batch = Batch.from_data_list([_cloud(20), _cloud(30, seed=1)])
    out = KNNGraph(5)(batch)
    assert torch.bincount(out.edge_index[1]).tolist() == [5] * 50
    assert bool((batch.batch[out.edge_index[0]] == batch.batch[out.edge_index[1]]).all())


def test_knn_graph_too_few_points() -> None:
    with pytest.raises(ValueError, match="k=16.*16 points"):
        KNNGraph(16)(_cloud(16))
    batch = Batch.from_data_list([_cloud(20), _cloud(4, seed=1)])
    with pytest.raises(ValueError, match="k=5.*4 points"):
        KNNGraph(5)(batch)
    clipped = KNNGraph(16, clip=True)(_cloud(10))
    assert clipped.edge_index.shape == (2, 10 * 9)
    with pytest.raises(ValueError, match="k"):
        KNNGraph(0)


def test_nan_coordinates_rejected() -> None:
    data = _cloud(30)
    data.pos[3, 1] = float("nan")
    for transform in (KNNGraph(4), RadiusGraph(0.5), NormalizeUnitSphere(), SamplePointsFixed(8)):
        with pytest.raises(ValueError, match="NaN"):
            transform(data)
    with pytest.raises(ValueError, match="pos"):
        KNNGraph(4)(Data(x=torch.zeros(5, 3)))


def test_duplicate_points_allowed() -> None:
    pos = torch.cat([torch.randn(20, 3), torch.randn(20, 3)])
    pos[20:25] = pos[:5]  # five duplicated points
    data = KNNGraph(4)(Data(pos=pos))
    length = (pos[data.edge_index[0]] - pos[data.edge_index[1]]).norm(dim=1)
    assert int((length == 0).sum()) == 10  # each duplicate sees its twin at distance 0
    assert torch.bincount(data.edge_index[1]).tolist() == [4] * 40
    assert DeduplicatePoints()(Data(pos=pos)).pos.shape == (35, 3)


def test_radius_graph() -> None:
    data = RadiusGraph(0.8, max_num_neighbors=64)(_cloud(100))
    src, dst = data.edge_index
    assert data.edge_index.shape[1] > 0
    assert bool(((data.pos[src] - data.pos[dst]).norm(dim=1) < 0.8).all())
    dist = torch.cdist(data.pos, data.pos)
    assert data.edge_index.shape[1] == int((dist < 0.8).sum()) - 100
    with pytest.raises(ValueError, match="r"):
        RadiusGraph(0.0)


def test_radius_graph_with_self_loops_and_an_infinite_radius() -> None:
    data = RadiusGraph(0.8, loop=True, max_num_neighbors=100)(_cloud(100))
    src, dst = data.edge_index
    assert int((src == dst).sum()) == 100  # one loop per point
    assert data.edge_index.shape[1] == int((_dist(data.pos) < 0.8).sum())
    for bad in (float("inf"), -1.0):
        with pytest.raises(ValueError, match="r: expected a positive finite radius"):
            RadiusGraph(bad)


# --------------------------------------------------------------------------- pipeline
def test_pipeline_on_procedural_shapes() -> None:
    transform = Compose(
        [
            SamplePointsFixed(256, seed=0),
            NormalizeUnitSphere(),
            RandomGroupRotation(Orthogonal(), seed=0),
            NormalsAsFeatures(),
            KNNGraph(16),
        ]
    )
    ds = ProceduralShapes(8, 300, transform=transform)
    batch = next(iter(DataLoader(ds, batch_size=4)))
    assert batch.pos.shape == (4 * 256, 3) and batch.x.shape == (4 * 256, 3)
    assert batch.edge_index.shape == (2, 4 * 256 * 16)
    assert torch.equal(batch.x, batch.normal) and batch.y.shape == (4,)


class _Clouds(torch.utils.data.Dataset):
    """Eight copies of one cloud, each passed through a seeded random rotation."""

    def __init__(self) -> None:
        self.transform = RandomGroupRotation(SO3(), seed=0, store=True)

    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int) -> Data:
        return self.transform(_cloud(10))


def _rotations(workers: int, epochs: int = 2) -> list[torch.Tensor]:
    loader = DataLoader(_Clouds(), batch_size=1, num_workers=workers,
                        generator=torch.Generator().manual_seed(5))  # fmt: skip
    return [torch.cat([b.rotation for b in loader]) for _ in range(epochs)]


def test_seeded_transforms_draw_anew_per_worker_and_epoch() -> None:
    """A seeded transform copied into DataLoader workers must not repeat one worker's draws
    in the others, nor an epoch's in the next; a seeded loader repeats the whole run."""
    first, second = _rotations(workers=2)
    flat = first.reshape(8, 9)
    assert torch.cdist(flat, flat).add(torch.eye(8)).min() > 1e-3  # 8 distinct rotations
    assert not torch.allclose(first, second)  # epochs differ
    again, _ = _rotations(workers=2)
    torch.testing.assert_close(again, first)  # reproducible with a seeded loader
    serial, serial_next = _rotations(workers=0)
    assert not torch.allclose(serial, serial_next)


def test_graph_transforms_drop_the_old_edge_attributes() -> None:
    data = _cloud(20)
    data.edge_index = torch.tensor([[0, 1], [1, 0]])
    data.edge_attr = torch.ones(2, 5)
    for transform in (KNNGraph(3), RadiusGraph(10.0)):
        out = transform(data.clone())
        assert out.edge_attr is None and out.edge_index.shape[1] > 2


def test_per_cloud_transforms_refuse_a_batch_of_clouds() -> None:
    batch = Batch.from_data_list([_cloud(30, 0), _cloud(20, 1)])
    for transform in (NormalizeUnitSphere(), SamplePointsFixed(16), DeduplicatePoints()):
        with pytest.raises(ValueError, match="expected one cloud, got a batch of 2 clouds"):
            transform(batch.clone())
    one = SamplePointsFixed(16, seed=0)(Batch.from_data_list([_cloud(30)]))
    assert one.batch.tolist() == [0] * 16 and one.ptr.tolist() == [0, 16]
    with pytest.raises(ValueError, match="decimals: expected an int or None, got 2.5"):
        DeduplicatePoints(decimals=2.5)


def test_knn_self_loop_comes_first_among_coinciding_points() -> None:
    from symgraph.graph import knn_graph

    edge_index = knn_graph(torch.zeros(3, 3), 1, loop=True)
    assert edge_index.tolist() == [[0, 1, 2], [0, 1, 2]]
    upsampled = SamplePointsFixed(64, seed=0)(_cloud(10))
    edges = KNNGraph(4, loop=True)(upsampled).edge_index
    loops = edges[0] == edges[1]
    assert int(loops.sum()) == 64 and torch.unique(edges[1][loops]).numel() == 64


def test_a_used_seeded_pre_transform_keeps_its_cache_key(tmp_path) -> None:
    """One seeded pre_transform for a train and a test set: its draws for the first set
    must not change the second set's cache key, or a later run (a fresh transform) misses
    that cache and rebuilds the test set with other points."""
    fresh = transform_fingerprint(SamplePointsFixed(16, seed=0))
    used = SamplePointsFixed(16, seed=0)
    first = used(_cloud(40))
    assert transform_fingerprint(used) == fresh
    assert transform_fingerprint(SamplePointsFixed(16, seed=1)) != fresh
    again = SamplePointsFixed(16, seed=0)(_cloud(40))
    torch.testing.assert_close(again.pos, first.pos)  # a fresh copy draws from the seed
    shared = SamplePointsFixed(8, seed=0)
    sets = [ProceduralShapes(4, 32, seed=s, root=tmp_path, pre_transform=shared) for s in (0, 1)]
    rerun = ProceduralShapes(4, 32, seed=1, root=tmp_path, pre_transform=SamplePointsFixed(8, 0))
    assert rerun.cache_path == sets[1].cache_path
    torch.testing.assert_close(rerun._data.pos, sets[1]._data.pos)


def _keep_first_classes(data: Data) -> Data:
    """A module-level pre_transform (pickle stores it by name only)."""
    return Data(pos=data.pos, normal=data.normal, y=data.y.clamp(max=1))


def test_editing_a_named_pre_transform_makes_a_new_cache(tmp_path) -> None:
    """A module-level function pickles as its name: edited between two runs (here: its code
    swapped in place), the cache key must change, or the old cache is silently reused with
    the old function's result. The same holds for a function inside a Compose."""
    original = _keep_first_classes.__code__
    before = transform_fingerprint(_keep_first_classes)
    in_compose = transform_fingerprint(Compose([_keep_first_classes]))
    first = ProceduralShapes(6, 8, root=tmp_path, pre_transform=_keep_first_classes)
    assert first._data.y.tolist() == [0, 1, 1, 1, 1, 1]
    try:
        _keep_first_classes.__code__ = (lambda data: Data(pos=data.pos, y=data.y + 10)).__code__
        assert transform_fingerprint(_keep_first_classes) != before
        assert transform_fingerprint(Compose([_keep_first_classes])) != in_compose
        edited = ProceduralShapes(6, 8, root=tmp_path, pre_transform=_keep_first_classes)
        assert edited.cache_path != first.cache_path
        assert edited._data.y.tolist() == [10, 11, 12, 13, 14, 15]
    finally:
        _keep_first_classes.__code__ = original
    assert transform_fingerprint(_keep_first_classes) == before  # the same code, the same key
    assert transform_fingerprint(Compose([lambda d: d])) == transform_fingerprint(
        Compose([lambda d: d])
    )  # a lambda inside a transform: by its code, not its address


def test_transforms_holding_tensors_have_one_key_in_every_process():
    """torch pickles a tensor's storage under its memory address: a transform holding a
    group (tensors) got a new cache key for every instance and process, so its cache was
    never reused. The key hashes the tensors' bytes instead."""
    import subprocess
    import sys

    from symgraph.data.transforms import RandomGroupRotation, transform_fingerprint
    from symgraph.groups import O3, SO3

    key = transform_fingerprint(RandomGroupRotation(SO3(), keys="pos", seed=0))
    assert key == transform_fingerprint(RandomGroupRotation(SO3(), keys="pos", seed=0))
    assert key != transform_fingerprint(RandomGroupRotation(O3(), keys="pos", seed=0))
    code = (
        "from symgraph.data.transforms import RandomGroupRotation, transform_fingerprint\n"
        "from symgraph.groups import SO3\n"
        "print(transform_fingerprint(RandomGroupRotation(SO3(), keys='pos', seed=0)))"
    )
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert other.stdout.strip() == key
