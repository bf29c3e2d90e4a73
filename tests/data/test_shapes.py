"""ProceduralShapes: determinism, balance, area-uniform sampling, normals, symmetry pairs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from symgraph.data.shapes import (
    CHIRAL_PAIRS,
    MIRROR_X,
    ORIENTATION_PAIRS,
    SHAPE_CLASSES,
    ProceduralShapes,
    sample_shape,
)

CONVEX = (
    "ellipsoid",
    "box",
    "cylinder_standing",
    "cylinder_lying",
    "cone",
    "pyramid",
    "capsule",
    "prism",
)


def test_at_least_eight_classes_and_the_two_pairs() -> None:
    assert len(SHAPE_CLASSES) >= 8 and len(set(SHAPE_CLASSES)) == len(SHAPE_CLASSES)
    for a, b in CHIRAL_PAIRS + ORIENTATION_PAIRS:
        assert a in SHAPE_CLASSES and b in SHAPE_CLASSES


def test_deterministic_under_seed() -> None:
    a, b = ProceduralShapes(24, 128, seed=3), ProceduralShapes(24, 128, seed=3)
    assert all(torch.equal(x.pos, y.pos) and torch.equal(x.normal, y.normal) for x, y in zip(a, b))
    c = ProceduralShapes(24, 128, seed=4)
    assert not torch.equal(a[0].pos, c[0].pos)
    # shape i does not depend on how many shapes were asked for
    short = ProceduralShapes(12, 128, seed=3)
    assert torch.equal(short[7].pos, a[7].pos)
    torch.manual_seed(123)  # the global RNG plays no part
    assert torch.equal(ProceduralShapes(12, 128, seed=3)[5].pos, a[5].pos)


def test_class_balance_and_subset() -> None:
    ds = ProceduralShapes(50, 64)
    counts = torch.bincount(torch.cat([d.y for d in ds]), minlength=len(SHAPE_CLASSES))
    assert int(counts.max() - counts.min()) <= 1 and int(counts.sum()) == 50
    assert ds.num_classes == len(SHAPE_CLASSES) and ds.classes == list(SHAPE_CLASSES)
    sub = ProceduralShapes(10, 64, classes=["torus", "box"])
    assert sub.classes == ["box", "torus"] and sub.num_classes == 2
    assert torch.bincount(torch.cat([d.y for d in sub])).tolist() == [5, 5]
    assert repr(ds[5:8]).startswith("ProceduralShapes(3, num_points=64, classes=")
    assert repr(sub) == "ProceduralShapes(10, num_points=64, classes=2, seed=0, noise=0.0)"


def test_items_normalised_with_unit_normals() -> None:
    ds = ProceduralShapes(len(SHAPE_CLASSES), 512)
    for data in ds:
        assert data.pos.shape == (512, 3) and data.pos.dtype == torch.float32
        assert data.normal.shape == (512, 3) and data.y.dtype == torch.long
        assert torch.allclose(data.normal.norm(dim=1), torch.ones(512), atol=1e-5)
        assert torch.isclose(data.pos.norm(dim=1).max(), torch.tensor(1.0), atol=1e-5)
        assert data.pos.mean(0).abs().max() < 1e-5


@pytest.mark.parametrize("name", SHAPE_CLASSES)
def test_normals_point_outwards(name: str) -> None:
    pos, normal = (t.double() for t in sample_shape(name, 4096, 7))
    # Divergence theorem: mean(p . n) = 3 V / A > 0 for outward normals of a closed surface.
    assert float((pos * normal).sum(1).mean()) > 0.05
    # The normals of a closed surface integrate to zero.
    assert float(normal.mean(0).norm()) < 0.08
    if name in CONVEX:  # every tangent plane has the interior (the centroid) behind it
        assert float((pos * normal).sum(1).min()) > -1e-5


def test_area_uniform_sampling() -> None:
    pos, normal = sample_shape("cylinder_standing", 20000, 11)
    radius = float(pos[:, :2].norm(dim=1).max())
    height = float(pos[:, 2].max() - pos[:, 2].min())
    on_caps = float((normal[:, 2].abs() > 0.99).double().mean())
    assert on_caps == pytest.approx(radius / (radius + height), abs=0.01)  # 2πr² / (2πr² + 2πrh)
    pos, normal = sample_shape("box", 20000, 11)
    extent = pos.amax(0) - pos.amin(0)
    area = torch.stack([extent[1] * extent[2], extent[0] * extent[2], extent[0] * extent[1]])
    frac = (normal.abs() > 0.99).double().mean(0)
    assert torch.allclose(frac, (area / area.sum()).double(), atol=0.015)
    # Ellipsoid: the share of points in the band |u_i| > 1/2 (u on the unit sphere mapped
    # to the surface) equals that band's share of the area, computed by quadrature; naive
    # sampling of u would give 1/2 whatever the axes.
    p = sample_shape("ellipsoid", 20000, 1)[0].double().numpy()
    axes = (p.max(0) - p.min(0)) / 2
    u_pts = (p - (p.max(0) + p.min(0)) / 2) / axes
    th = (np.arange(400) + 0.5) * np.pi / 400
    ph = (np.arange(800) + 0.5) * 2 * np.pi / 800
    th, ph = np.meshgrid(th, ph, indexing="ij")
    u = np.stack([np.sin(th) * np.cos(ph), np.sin(th) * np.sin(ph), np.cos(th)], axis=-1)
    d_th = np.stack([np.cos(th) * np.cos(ph), np.cos(th) * np.sin(ph), -np.sin(th)], -1) * axes
    d_ph = np.stack([-np.sin(th) * np.sin(ph), np.sin(th) * np.cos(ph), 0 * th], -1) * axes
    area = np.linalg.norm(np.cross(d_th, d_ph), axis=-1)
    for i in range(3):
        expected = (area * (np.abs(u[..., i]) > 0.5)).sum() / area.sum()
        assert (np.abs(u_pts[:, i]) > 0.5).mean() == pytest.approx(expected, abs=0.015)
    assert abs(expected - 0.5) > 0.05  # the check is sensitive to the area weighting


def _handedness(pos: torch.Tensor) -> float:
    """Sign of the pitch of a helix about z: azimuth grows (+) or falls (-) with height."""
    p = pos.double().numpy()
    phi, z = np.arctan2(p[:, 1], p[:, 0]), p[:, 2]
    ks = np.concatenate([-np.linspace(2, 30, 281), np.linspace(2, 30, 281)])
    score = [abs(np.exp(1j * (phi - k * z)).mean()) for k in ks]
    return float(np.sign(ks[int(np.argmax(score))]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_chiral_pair_are_mirror_images(seed: int) -> None:
    right, n_right = sample_shape("helix_right", 2048, seed)
    left, n_left = sample_shape("helix_left", 2048, seed)
    mirror = torch.from_numpy(MIRROR_X).float()
    assert torch.allclose(left, right @ mirror, atol=1e-6)
    assert torch.allclose(n_left, n_right @ mirror, atol=1e-6)
    assert _handedness(right) == 1.0 and _handedness(left) == -1.0
    # handedness is invariant under rotations about z (a proper rotation cannot undo it)
    c, s = np.cos(1.1), np.sin(1.1)
    rot = torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float32)
    assert _handedness(left @ rot.T) == -1.0


def test_helix_ends_have_random_azimuth() -> None:
    """No orientation cue: the azimuth of a helix's lowest point is spread around the circle."""
    lowest = [sample_shape("helix_right", 512, seed)[0] for seed in range(48)]
    lowest = [pos[int(pos[:, 2].argmin())].double() for pos in lowest]
    azimuth = torch.stack([torch.atan2(p[1], p[0]) for p in lowest])
    resultant = torch.stack([azimuth.cos().mean(), azimuth.sin().mean()]).norm()
    assert resultant < 0.35  # a fixed phase gives ~1


def test_orientation_pair_differs_by_a_rotation() -> None:
    standing, n_standing = sample_shape("cylinder_standing", 1024, 5)
    lying, n_lying = sample_shape("cylinder_lying", 1024, 5)
    rot = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])  # z -> x
    assert torch.det(rot) == 1.0
    assert torch.allclose(lying, standing @ rot.T, atol=1e-6)
    assert torch.allclose(n_lying, n_standing @ rot.T, atol=1e-6)
    ext_s, ext_l = standing.amax(0) - standing.amin(0), lying.amax(0) - lying.amin(0)
    assert ext_s[2] > 1.5 * ext_s[0] and ext_l[0] > 1.5 * ext_l[2]  # elongated along z / x


def test_noise() -> None:
    clean = ProceduralShapes(4, 256, seed=1)
    noisy = ProceduralShapes(4, 256, seed=1, noise=0.01)
    diff = torch.cat([a.pos - b.pos for a, b in zip(clean, noisy)])
    assert float(diff.std()) == pytest.approx(0.01, rel=0.1)
    assert all(torch.equal(a.normal, b.normal) for a, b in zip(clean, noisy))


def test_cache_in_root(tmp_path: Path) -> None:
    ds = ProceduralShapes(6, 64, root=tmp_path)
    assert ds.cache_path is not None and ds.cache_path.is_file()
    assert [p.name for p in ds.cache_path.parent.iterdir()] == [ds.cache_path.name]
    again = ProceduralShapes(6, 64, root=tmp_path)
    assert all(torch.equal(a.pos, b.pos) for a, b in zip(ds, again))
    assert ProceduralShapes(6, 64, seed=1, root=tmp_path).cache_path != ds.cache_path


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown class names \\['dragon'\\].*torus"):
        ProceduralShapes(4, classes=["torus", "dragon"])
    with pytest.raises(ValueError, match="distinct"):
        ProceduralShapes(4, classes=["torus", "torus"])
    with pytest.raises(ValueError, match="num_shapes"):
        ProceduralShapes(0)
    with pytest.raises(ValueError, match="num_points"):
        ProceduralShapes(2, num_points=-5)
    with pytest.raises(ValueError, match="noise"):
        ProceduralShapes(2, noise=float("nan"))
    with pytest.raises(ValueError, match="seed"):
        ProceduralShapes(2, seed=-1)
    with pytest.raises(ValueError, match="name"):
        sample_shape("dragon")


def test_area_uniform_disks_cones_triangles_and_tori() -> None:
    """Area-uniform shares, from each surface's area element: half of a disk's area lies
    within R / √2 of its centre; half of a cone's lateral area lies within 1 / √2 of the
    slant from the apex; a rectangle made of two triangles has half its area on each side
    of either mid-line; the outer half of a torus holds 1/2 + r / (π R) of its area."""
    pos, normal = (t.double().numpy() for t in sample_shape("cylinder_standing", 20000, 3))
    cap = np.abs(normal[:, 2]) > 0.99
    rho = np.linalg.norm(pos[:, :2], axis=1)
    assert (rho[cap] < rho[~cap].mean() / np.sqrt(2)).mean() == pytest.approx(0.5, abs=0.03)

    pos, normal = (t.double().numpy() for t in sample_shape("cone", 20000, 3))
    base, side = normal[:, 2] < -0.99, normal[:, 2] > 0
    slope = normal[side, 2] / np.linalg.norm(normal[side, :2], axis=1)  # radius / height
    rho = np.linalg.norm(pos[side, :2] - pos[base, :2].mean(0), axis=1)
    t = rho / (rho + slope * (pos[side, 2] - pos[base, 2].mean()))  # distance from apex / slant
    assert (t < 1 / np.sqrt(2)).mean() == pytest.approx(0.5, abs=0.03)

    pos, normal = (t.double().numpy() for t in sample_shape("pyramid", 20000, 3))
    rect = pos[normal[:, 2] < -0.99][:, :2]  # the base rectangle, two triangles
    middle = (rect.max(0) + rect.min(0)) / 2
    assert np.allclose((rect > middle).mean(0), 0.5, atol=0.035)

    pos, normal = (t.double().numpy() for t in sample_shape("torus", 20000, 3))
    rho = np.linalg.norm(pos[:, :2], axis=1)
    big, small = (rho.max() + rho.min()) / 2, (rho.max() - rho.min()) / 2
    outer = float(((normal[:, :2] * pos[:, :2]).sum(1) > 0).mean())
    assert outer == pytest.approx(0.5 + small / (np.pi * big), abs=0.015)
    assert small / (np.pi * big) > 0.04  # the check is sensitive to the area weighting


def test_seeds_give_unrelated_sets() -> None:
    """Shape 1 of seed 0 is not shape 0 of seed 1 (each (seed, index) has its own stream)."""
    a = ProceduralShapes(2, 64, classes=["box"], seed=0)
    b = ProceduralShapes(1, 64, classes=["box"], seed=1)
    assert not torch.equal(a[1].pos, b[0].pos)


def test_noise_gets_its_own_cache(tmp_path: Path) -> None:
    """A noisy set in the same root does not reuse the clean set's cache."""
    clean = ProceduralShapes(4, 64, root=tmp_path)
    noisy = ProceduralShapes(4, 64, noise=0.05, root=tmp_path)
    assert noisy.cache_path != clean.cache_path
    assert not torch.equal(noisy[0].pos, clean[0].pos)


def test_a_used_seeded_pre_transform_generates_what_a_fresh_one_does(tmp_path) -> None:
    """The same cache key must mean the same shapes: a seeded pre_transform used before
    (e.g. for the training set) generates the set from its seed, like a fresh one."""
    from symgraph.data.transforms import SamplePointsFixed

    shared = SamplePointsFixed(8, seed=0)
    ProceduralShapes(4, 32, seed=0, pre_transform=shared)
    used = ProceduralShapes(4, 32, seed=1, root=tmp_path / "a", pre_transform=shared)
    fresh = ProceduralShapes(
        4, 32, seed=1, root=tmp_path / "b", pre_transform=SamplePointsFixed(8, 0)
    )
    assert used.cache_path.name == fresh.cache_path.name
    torch.testing.assert_close(used._data.pos, fresh._data.pos, rtol=0, atol=0)
