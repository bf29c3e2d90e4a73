"""SteerablePointNet: invariance for every catalog group, pooling, learning, bad input, the
``modelnet40`` job and the example."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch_geometric.data import Batch, Data
from torch_geometric.loader import DataLoader

from symgraph.data import ProceduralShapes
from symgraph.groups import GROUPS, group_from_name
from symgraph.models import SteerablePointNet
from symgraph.models.pooling import farthest_point_sampling, knn_bipartite
from symgraph.testing import equivariance_error

SMALL = dict(hidden="4x0e + 2x1o + 1x2e", k=5, ratio=0.5, mlp_hidden=16)


def clouds(num: int = 2, points: int = 20, dtype=torch.float64, seed: int = 0):
    """Random clouds in general position (distance ties have probability zero)."""
    gen = torch.Generator().manual_seed(seed)
    pos = torch.randn(num * points, 3, generator=gen, dtype=dtype)
    normal = F.normalize(torch.randn(num * points, 3, generator=gen, dtype=dtype), dim=1)
    return pos, normal, torch.arange(num).repeat_interleave(points)


def small_model(group, **kwargs) -> SteerablePointNet:
    torch.manual_seed(0)
    return SteerablePointNet(3, group, **{**SMALL, **kwargs}).double().eval()


# --------------------------------------------------------------------------- symmetry
@pytest.mark.parametrize("name", [*GROUPS, "C3", "D4"])
def test_logits_invariant_under_every_catalog_group(name: str) -> None:
    group = group_from_name(name)
    model = small_model(group)
    pos, normal, batch = clouds()
    gen = torch.Generator().manual_seed(1)
    err = equivariance_error(
        lambda p, n: model.classify(p, n, batch), group, [pos, normal], ["pos", "vector"], None,
        num_elements=4, generator=gen,
    )  # fmt: skip
    assert err < 1e-10, f"{name}: relative invariance error {err:.2e}"


def test_model_of_a_small_group_sees_larger_rotations() -> None:
    """The invariance test is not vacuous: a trivial-group model is not SO(3)-invariant."""
    model = small_model("Trivial")
    pos, normal, batch = clouds()
    gen = torch.Generator().manual_seed(2)
    err = equivariance_error(
        lambda p, n: model.classify(p, n, batch), group_from_name("SO3"), [pos, normal],
        ["pos", "vector"], None, num_elements=2, generator=gen,
    )  # fmt: skip
    assert err > 1e-3


def test_translation_and_scale_invariance() -> None:
    model = small_model("O3", use_normals=False)
    pos, _, batch = clouds()
    ref = model.classify(pos, None, batch)
    moved = model.classify(3.7 * pos + torch.tensor([1.0, -2.0, 5.0], dtype=pos.dtype), None, batch)
    assert (moved - ref).abs().max() < 1e-10 * ref.abs().max()


def test_forward_takes_a_pyg_batch_and_training_mode_is_invariant_too() -> None:
    model = small_model("SO3").train()
    pos, normal, batch = clouds(num=3)
    data = Batch.from_data_list(
        [Data(pos=pos[batch == i], normal=normal[batch == i]) for i in range(3)]
    )
    g = group_from_name("SO3").sample(1, dtype=torch.float64)[0]
    out = model(data)
    assert out.shape == (3, 3)
    assert torch.allclose(model.classify(pos @ g.T, normal @ g.T, batch), out, atol=1e-10)


# --------------------------------------------------------------------------- pooling
def test_farthest_point_sampling() -> None:
    pos, _, batch = clouds(num=2, points=10)
    index, new_batch = farthest_point_sampling(pos, 0.35, batch)
    assert new_batch.tolist() == [0] * 4 + [1] * 4  # ceil(0.35 * 10) = 4 per cloud
    first = pos[:10] - pos[:10].mean(0)
    assert int(index[0]) == int(first.norm(dim=1).argmax())  # starts farthest from centroid
    chosen = pos[index[:2]]
    rest = torch.cdist(pos[:10], chosen).min(dim=1).values
    assert int(index[2]) == int(rest.argmax())  # then farthest from the chosen set
    g = group_from_name("O3").sample(1, dtype=torch.float64)[0]
    moved, _ = farthest_point_sampling(pos @ g.T + 1.0, 0.35, batch)
    assert moved.tolist() == index.tolist()
    assert len(farthest_point_sampling(pos[:10], 0.3)[0]) == 3  # ceil(0.3 · 10) = 3


def test_farthest_point_sampling_with_duplicates_picks_distinct_points() -> None:
    pos = torch.tensor([[0.0, 0, 0], [1, 0, 0], [1, 0, 0], [1, 0, 0]])
    index, _ = farthest_point_sampling(pos, 1.0)
    assert sorted(index.tolist()) == [0, 1, 2, 3]


def test_knn_bipartite_matches_brute_force() -> None:
    pos, _, batch = clouds(num=2, points=12)
    index, new_batch = farthest_point_sampling(pos, 0.25, batch)
    src, dst = knn_bipartite(pos, pos[index], 4, batch, new_batch)
    assert dst.tolist() == torch.arange(6).repeat_interleave(4).tolist()
    for target in range(6):
        cloud = batch == new_batch[target]
        dist = (pos - pos[index[target]]).norm(dim=1).masked_fill(~cloud, math.inf)
        expected = set(dist.topk(4, largest=False).indices.tolist())
        assert set(src[dst == target].tolist()) == expected
        assert int(index[target]) in expected  # a sampled point finds itself


def test_knn_bipartite_is_exact_far_from_the_origin() -> None:
    """Clouds 1000 units from the origin in float32 (cdist's matrix-product form is off by
    ~0.1 there): every target still finds the nearest sources."""
    pos, _, batch = clouds(num=2, points=40, dtype=torch.float64, seed=3)
    pos = (pos * 0.05 + 1000.0).float()
    targets = torch.arange(0, 80, 3)
    src, dst = knn_bipartite(pos, pos[targets], 3, batch, batch[targets])
    exact = pos.double()
    for t, point in enumerate(targets.tolist()):
        dist = (exact - exact[point]).norm(dim=1).masked_fill(batch != batch[point], math.inf)
        assert set(src[dst == t].tolist()) == set(dist.topk(3, largest=False).indices.tolist())


def test_farthest_point_sampling_count_is_robust_to_rounding() -> None:
    """``0.28 * 25`` is ``7.000000000000001`` in floating point: still ``ceil(7) = 7`` points
    (the ``0.3 * 10`` case above is exactly 3.0, so does not exercise this)."""
    assert 0.28 * 25 > 7  # the rounding this guards against
    pos, _, batch = clouds(num=2, points=25)
    index, new_batch = farthest_point_sampling(pos, 0.28, batch)
    assert len(index) == 14 and torch.bincount(new_batch).tolist() == [7, 7]


def test_knn_bipartite_with_a_cloud_smaller_than_k() -> None:
    """A cloud with fewer than ``k`` sources gives its targets all of them; the targets of a
    larger cloud in the same batch still get ``k`` neighbours."""
    pos, _, _ = clouds(num=1, points=11)
    batch = torch.tensor([0] * 3 + [1] * 8)
    targets = torch.tensor([0, 5, 9])
    src, dst = knn_bipartite(pos, pos[targets], 5, batch, batch[targets])
    assert torch.bincount(dst).tolist() == [3, 5, 5]
    assert set(src[dst == 0].tolist()) == {0, 1, 2}
    for t in (1, 2):
        point = int(targets[t])
        dist = (pos - pos[point]).norm(dim=1).masked_fill(batch != batch[point], math.inf)
        assert set(src[dst == t].tolist()) == set(dist.topk(5, largest=False).indices.tolist())


def test_knn_bipartite_after_sampling_a_batch_with_an_empty_cloud() -> None:
    """Cloud 1 of ``batch`` has no points (a gap, e.g. from filtering a batch): it needs no
    sources, as it has no targets, and the other clouds match their separate graphs."""
    pos, _, _ = clouds(num=1, points=12)
    batch = torch.tensor([0] * 6 + [2] * 6)
    index, new_batch = farthest_point_sampling(pos, 0.5, batch)
    assert new_batch.tolist() == [0, 0, 0, 2, 2, 2]
    src, dst = knn_bipartite(pos, pos[index], 2, batch, new_batch)
    for t, point in enumerate(index.tolist()):
        dist = (pos - pos[point]).norm(dim=1).masked_fill(batch != batch[point], math.inf)
        assert set(src[dst == t].tolist()) == set(dist.topk(2, largest=False).indices.tolist())
    with pytest.raises(ValueError, match="every cloud with target points needs source"):
        knn_bipartite(pos[:6], pos[index], 2, batch[:6], new_batch)
    # the gap in the sources: cloud 1 has targets (one, fewer than cloud 2's) and no source
    with pytest.raises(ValueError, match="every cloud with target points needs source"):
        knn_bipartite(pos, pos[:4], 1, batch, torch.tensor([0, 1, 2, 2]))


# --------------------------------------------------------------------------- tta
def test_test_time_augmentation_averages_over_the_group() -> None:
    model = small_model("Trivial", tta=3, tta_group="C4")
    pos, normal, batch = clouds()
    elements = group_from_name("C4").elements()
    expected = sum(model._logits(pos @ g.T, normal @ g.T, batch) for g in elements) / 4
    assert torch.allclose(model.classify(pos, normal, batch), expected, atol=1e-12)
    model.train()  # no augmentation while training
    assert torch.allclose(model.classify(pos, normal, batch), model._logits(pos, normal, batch))
    invariant = small_model("SO3", tta=3)  # the model's own group: logits unchanged
    plain = small_model("SO3")
    assert torch.allclose(
        invariant.classify(pos, normal, batch), plain.classify(pos, normal, batch)
    )


# --------------------------------------------------------------------------- learning
def test_short_training_run_learns_procedural_shapes() -> None:
    classes = ["ellipsoid", "box", "torus", "cone"]
    train = ProceduralShapes(48, num_points=48, classes=classes, seed=0)
    test = ProceduralShapes(32, num_points=48, classes=classes, seed=1)
    torch.manual_seed(0)
    model = SteerablePointNet(4, "SO3", hidden="8x0e + 4x1o + 2x2e", k=8, mlp_hidden=32)
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    losses = []
    for _ in range(6):
        for batch in DataLoader(train, batch_size=8, shuffle=True):
            loss = F.cross_entropy(model(batch), batch.y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        batch = next(iter(DataLoader(test, batch_size=32)))
        accuracy = (model(batch).argmax(1) == batch.y).double().mean().item()
    assert sum(losses[-6:]) < 0.7 * sum(losses[:6])
    assert accuracy > 0.5, f"accuracy {accuracy:.2f} (chance 0.25)"


# --------------------------------------------------------------------------- bad input
def test_bad_inputs_give_clear_errors() -> None:
    model = small_model("SO3")
    pos, normal, batch = clouds(num=2, points=20)
    with pytest.raises(ValueError, match=r"k=5\) needs at least k \+ 1 = 6 points.*with 5 points"):
        model.classify(pos[:25], normal[:25], batch[:25])
    bad = pos.clone()
    bad[3, 1] = float("nan")
    with pytest.raises(ValueError, match="pos: expected finite"):
        model.classify(bad, normal, batch)
    bad = normal.clone()
    bad[0, 0] = float("inf")
    with pytest.raises(ValueError, match="normal: expected finite"):
        model.classify(pos, bad, batch)
    with pytest.raises(ValueError, match="use_normals=True"):
        model(Data(pos=pos[:20]))
    with pytest.raises(ValueError, match="normal: expected shape"):
        model.classify(pos, normal[:, :2], batch)
    with pytest.raises(TypeError, match="Data/Batch"):
        model(pos)
    with pytest.raises(ValueError, match="unknown group name 'SO4'"):
        SteerablePointNet(3, "SO4")
    with pytest.raises(ValueError, match="tta_group: unknown group name 'SO4'"):
        SteerablePointNet(3, "SO3", tta_group="SO4")
    with pytest.raises(ValueError, match="hidden: expected one representation per stage"):
        SteerablePointNet(3, "SO3", hidden=["4x0e"], stages=2)
    with pytest.raises(ValueError, match="ratio"):
        SteerablePointNet(3, "SO3", ratio=0.0)


def test_duplicate_points_are_handled() -> None:
    """Duplicates give zero-length edges (documented): finite logits, still invariant."""
    model = small_model("SO3")
    pos, normal, _ = clouds(num=1, points=12)
    pos, normal = torch.cat([pos, pos[:6]]), torch.cat([normal, normal[:6]])
    out = model.classify(pos, normal)
    g = group_from_name("SO3").sample(1, dtype=torch.float64)[0]
    assert torch.isfinite(out).all()
    assert torch.allclose(model.classify(pos @ g.T, normal @ g.T), out, atol=1e-10)
    same = torch.zeros(10, 3, dtype=torch.float64)  # a cloud of one repeated point
    assert torch.isfinite(model.classify(same, normal[:10])).all()


# --------------------------------------------------------------------------- job
JOB = [
    "train", "modelnet40", "--num-shapes", "24", "--num-test-shapes", "8", "--num-points",
    "24", "--k", "4", "--hidden", "4x0e + 2x1o", "--batch-size", "8", "--no-progress",
    "--classes", "box", "torus",
]  # fmt: skip


def test_modelnet40_job_writes_a_run_folder(tmp_path: Path, capsys) -> None:
    from symgraph.cli import main

    out = tmp_path / "run"
    argv = [*JOB, "--epochs", "1", "--test-rotation", "SO3", "--out", str(out)]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert 0.0 <= result["metrics"]["accuracy"] <= 1.0
    for name in ("config.json", "split.json", "checkpoint.pt", "best.pt", "metrics.csv"):
        assert (out / name).is_file(), name
    assert (
        main([*JOB, "--epochs", "2", "--test-rotation", "SO3", "--out", str(out), "--resume"]) == 0
    )
    assert len((out / "metrics.csv").read_text().splitlines()) == 3  # header + 2 epochs
    capsys.readouterr()
    assert main(["evaluate", str(out)]) == 0  # rebuilds the same rotated test set
    evaluated = json.loads(capsys.readouterr().out)["metrics"]["accuracy"]
    assert evaluated == pytest.approx(
        json.loads((out / "test.json").read_text())["metrics"]["accuracy"]
    )


def test_modelnet40_job_on_the_real_sample(shared_data: Path, tmp_path: Path, capsys) -> None:
    from symgraph.cli import main

    root = shared_data / "modelnet40"
    if not (root / "modelnet40_normal_resampled").is_dir():
        pytest.skip("ModelNet40 sample not found")
    argv = [
        "train", "modelnet40", "--dataset", "modelnet40", "--root", str(root), "--cache",
        str(tmp_path / "cache"), "--num-points", "24", "--k", "4", "--hidden", "4x0e + 2x1o",
        "--epochs", "1", "--subset", "16", "--no-progress", "--out", str(tmp_path / "run"),
    ]  # fmt: skip
    assert main(argv) == 0
    assert 0.0 <= json.loads(capsys.readouterr().out)["metrics"]["accuracy"] <= 1.0


def test_modelnet40_job_bad_data_arguments(tmp_path: Path, capsys) -> None:
    from symgraph.cli import main

    assert main([*JOB, "unicorn", "--out", str(tmp_path / "a")]) == 2  # a usage error
    assert "unknown class names ['unicorn']" in capsys.readouterr().err
    empty = tmp_path / "modelnet"
    (empty / "modelnet40_normal_resampled").mkdir(parents=True)
    argv = ["train", "modelnet40", "--dataset", "modelnet40", "--root", str(empty)]
    assert main([*argv, "--out", str(tmp_path / "b")]) == 2  # missing split file: usage error
    assert "modelnet40_train.txt not found" in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--group", "--tta-group", "--train-rotation", "--test-rotation"])
def test_modelnet40_job_names_the_group_flag_it_refuses(
    tmp_path: Path, capsys, monkeypatch, flag: str
) -> None:
    """An unknown group name is refused naming its flag (all four said ``group:``), before
    any data is read (a bad rotation group was found after reading ModelNet40)."""
    from symgraph.cli import main
    from symgraph.train import job_modelnet40

    def no_data(args):
        raise AssertionError("the datasets were built before the group flags were checked")

    monkeypatch.setattr(job_modelnet40, "build_pointcloud_datasets", no_data)
    assert main([*JOB, flag, "Z9", "--out", str(tmp_path / "run")]) == 2
    assert f"modelnet40: {flag}: unknown group name 'Z9'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def modelnet40_spec(*flags: str):
    """The modelnet40 job's JobSpec for the tiny procedural ``JOB`` and ``flags``."""
    from symgraph.cli import build_parser
    from symgraph.train.jobs import get_job, load_jobs

    args = build_parser(load_jobs()).parse_args([*JOB, *flags])
    return get_job("modelnet40")(args)


def test_modelnet40_job_builds_what_the_flags_say() -> None:
    """--val-fraction holds out that share of the 24 shapes, the 8 test shapes are none of
    them, and --dropout / --no-normals reach the model."""
    spec = modelnet40_spec("--val-fraction", "0.25", "--dropout", "0.3", "--no-normals")
    split = spec.split_indices()
    assert (len(split["train"]), len(split["val"]), len(spec.test)) == (18, 6, 8)
    pool = [*spec.train, *spec.val]
    for shape in spec.test:
        assert not any(torch.equal(shape.pos, other.pos) for other in pool)
    assert spec.model.use_normals is False
    (dropout,) = [m for m in spec.model.head if isinstance(m, torch.nn.Dropout)]
    assert dropout.p == 0.3


@pytest.mark.parametrize("fraction", ["0", "1"])
def test_modelnet40_job_refuses_an_empty_part(tmp_path: Path, capsys, fraction: str) -> None:
    """--val-fraction 0 or 1 would leave validation or training empty: a usage error."""
    from symgraph.cli import main

    assert main([*JOB, "--val-fraction", fraction, "--out", str(tmp_path / "run")]) == 2
    expected = f"--val-fraction: expected a number in (0, 1), got {float(fraction)}"
    assert expected in capsys.readouterr().err


# --------------------------------------------------------------------------- example
def test_example_runs_in_quick_mode(tmp_path: Path, load_script) -> None:
    module = load_script("examples/pointcloud_classification.py")
    accuracy = module.main(["--quick", "--out", str(tmp_path)])
    assert set(accuracy) == {"aligned", "SO(3)-rotated"}
    # the SO(3) model is invariant: rotating the 12 test shapes changes at most a borderline one
    assert accuracy["SO(3)-rotated"] == pytest.approx(accuracy["aligned"], abs=1 / 12 + 1e-9)


def test_relative_positions_are_divided_by_their_clouds_mean_edge_length() -> None:
    """``_scaled_rel``: each edge vector over the mean edge length of its own cloud."""
    from symgraph.models.pointnet import _scaled_rel

    rel = torch.tensor([[1.0, 0, 0], [0, 3.0, 0], [0, 0, 4.0], [0, -4.0, 0]], dtype=torch.float64)
    cloud = torch.tensor([0, 0, 1, 1])
    expected = rel / torch.tensor([[2.0], [2.0], [4.0], [4.0]], dtype=torch.float64)
    torch.testing.assert_close(_scaled_rel(rel, cloud, 2), expected, rtol=1e-12, atol=0)


def test_convolutions_within_a_stage_are_residual() -> None:
    """The kNN conv after pooling adds its input: switching the residual off removes ``x``."""
    model = small_model("SO3")
    block = model.convs[0]
    assert block.residual and not model.embed.residual and not model.pools[0].residual
    pos, _, _ = clouds(num=1, points=12)
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(12, model.reps[1].dim, generator=gen, dtype=torch.float64)
    cloud, radial = torch.zeros(12, dtype=torch.long), pos.norm(dim=1, keepdim=True)
    with_input = model._conv(block, x, pos, radial, cloud, 1)
    block.residual = False
    torch.testing.assert_close(
        with_input - model._conv(block, x, pos, radial, cloud, 1), x, rtol=1e-12, atol=1e-12
    )


def test_a_training_batch_of_one_cloud_uses_the_running_statistics() -> None:
    """A single cloud in training mode (no batch variance): logits as in eval mode, and the
    running statistics of the head's batch norm are left as they are."""
    model = small_model("SO3")
    pos, normal, _ = clouds(num=1, points=20)
    expected = model.classify(pos, normal)
    norm = model.head[0]
    mean, var = norm.running_mean.clone(), norm.running_var.clone()
    model.train()
    torch.testing.assert_close(model.classify(pos, normal), expected, rtol=1e-12, atol=1e-12)
    assert torch.equal(norm.running_mean, mean) and torch.equal(norm.running_var, var)


def test_ratio_one_keeps_every_point() -> None:
    """``ratio=1`` (documented range ``(0, 1]``) is accepted: pooling keeps all the points,
    and the logits stay invariant."""
    model = small_model("SO3", ratio=1.0)
    pos, normal, batch = clouds(num=2, points=10)
    out = model.classify(pos, normal, batch)
    g = group_from_name("SO3").sample(1, dtype=torch.float64)[0]
    assert out.shape == (2, 3)
    assert torch.allclose(model.classify(pos @ g.T, normal @ g.T, batch), out, atol=1e-10)
    index, _ = farthest_point_sampling(pos, model.ratio, batch)
    assert sorted(index.tolist()) == list(range(20))


def test_centroid_offsets_are_in_units_of_the_clouds_rms_radius() -> None:
    """``(p - c) / s`` with ``c`` the centroid and ``s`` the RMS radius of each cloud."""
    pos = torch.tensor(
        [[1.0, 5, 0], [-1, 5, 0], [2, 0, 1], [2, 2, 1], [2, 4, 1], [2, 6, 1]], dtype=torch.float64
    )
    cloud = torch.tensor([0, 0, 1, 1, 1, 1])
    # cloud 0: offsets ±1 along x, radius 1; cloud 1: ±1, ±3 along y, radius sqrt(5)
    y = torch.tensor([-3.0, -1, 1, 3], dtype=torch.float64) / 5**0.5
    expected = torch.zeros(6, 3, dtype=torch.float64)
    expected[0, 0], expected[1, 0], expected[2:, 1] = 1.0, -1.0, y
    out = SteerablePointNet._centroid_offsets(pos, cloud, 2)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


def test_logits_do_not_depend_on_the_order_of_the_points() -> None:
    """A cloud is a set: permuting its points (and normals) leaves the logits unchanged."""
    model = small_model("SO3", stages=3, hidden="4x0e + 2x1o + 1x2e", ratio=0.5)
    pos, normal, batch = clouds(num=2, points=24)
    gen = torch.Generator().manual_seed(5)
    perm = torch.cat([torch.randperm(24, generator=gen), 24 + torch.randperm(24, generator=gen)])
    out = model.classify(pos, normal, batch)
    moved = model.classify(pos[perm], normal[perm], batch)
    assert (moved - out).abs().max() < 1e-10 * out.abs().max()
