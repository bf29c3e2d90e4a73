"""ProceduralShapes: a synthetic point-cloud classification set the library makes itself.

Twelve classes of parametric solids with random proportions; points are sampled
*area-uniformly* on the exact surfaces (no meshing) with exact outward unit normals. It
needs no download and no disk, so demos, tests and benchmarks run anywhere. It is
synthetic: accuracy on it says nothing about real data (use ``ModelNet40`` for that).

Design choices (so that symmetry experiments mean something):

- **Canonical orientation.** Every shape is generated upright and axis-aligned (z up;
  cone, pyramid and capsule along z; a chair's seat horizontal with its back towards -y).
  Rotation augmentation or a test-time rotation is then a deliberate choice.
- **A chiral pair:** ``helix_right`` / ``helix_left`` are mirror images (the left helix is
  the right one with ``x -> -x``, normals included), so they are told apart by models
  invariant under proper rotations only (SO(3), SO(2), C_n) but *not* by models invariant
  under a group with an improper element (a mirror or the inversion, e.g. O(3)). The
  helix starts at a uniformly random azimuth, so its ends give no orientation cue: as a
  finite helix is symmetric under a half-turn about an axis perpendicular to z, even the
  horizontal mirror or the inversion maps the distribution of right helices onto that of
  left ones (aligned shapes included).
- **An orientation pair:** ``cylinder_standing`` (axis z) / ``cylinder_lying`` (axis x)
  share one distribution of elongated proportions and differ only by a rotation about
  y, so a z-rotation-invariant model (SO(2), C_n about z) separates them while an
  SO(3)-invariant one cannot.

Each shape is centred at its centroid and scaled into the unit ball (as PointNet++
normalises ModelNet40), then optional Gaussian ``noise`` (std, in those units) is added
to the positions; normals are left exact.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import Data, InMemoryDataset

from symgraph.checks import check_int, is_finite_real, is_int
from symgraph.data.modelnet40 import save_atomic
from symgraph.data.transforms import fresh_hook, transform_fingerprint

__all__ = [
    "SHAPE_CLASSES",
    "CHIRAL_PAIRS",
    "ORIENTATION_PAIRS",
    "MIRROR_X",
    "ProceduralShapes",
    "sample_shape",
]

SHAPE_CLASSES: tuple[str, ...] = (
    "ellipsoid",
    "box",
    "cylinder_standing",
    "cylinder_lying",
    "cone",
    "torus",
    "pyramid",
    "capsule",
    "prism",
    "chair",
    "helix_right",
    "helix_left",
)
#: Classes that are mirror images of each other (related by ``MIRROR_X``).
CHIRAL_PAIRS: tuple[tuple[str, str], ...] = (("helix_right", "helix_left"),)
#: Classes that differ only by a rotation taking the z axis to a horizontal axis.
ORIENTATION_PAIRS: tuple[tuple[str, str], ...] = (("cylinder_standing", "cylinder_lying"),)
#: The reflection ``x -> -x`` relating the chiral pair.
MIRROR_X = np.diag([-1.0, 1.0, 1.0])
# Rotation by +90 degrees about y: the z axis goes to the x axis (det = +1).
_Z_TO_X = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])
_CACHE_VERSION = 2

Cloud = tuple[np.ndarray, np.ndarray]  # pos [m, 3], normal [m, 3] (float64)
Part = tuple[float, Callable[[int], Cloud]]  # (area, sampler of m points)


# --------------------------------------------------------------------------- primitives
def _empty() -> Cloud:
    return np.zeros((0, 3)), np.zeros((0, 3))


def _mix(parts: Sequence[Part], n: int, rng: np.random.Generator) -> Cloud:
    """Sample ``n`` points on a union of surface parts, each in proportion to its area."""
    areas = np.array([a for a, _ in parts], dtype=np.float64)
    counts = rng.multinomial(n, areas / areas.sum())
    clouds = [sample(int(m)) if m else _empty() for (_, sample), m in zip(parts, counts)]
    pos = np.concatenate([c[0] for c in clouds])
    normal = np.concatenate([c[1] for c in clouds])
    perm = rng.permutation(n)
    return pos[perm], normal[perm]


def _rectangle(
    rng: np.random.Generator, centre: np.ndarray, e1: np.ndarray, e2: np.ndarray, normal: np.ndarray
) -> Part:
    """The rectangle ``centre + s e1 + t e2``, ``s, t in [-1, 1]`` (half-edges ``e1, e2``)."""

    def sample(m: int) -> Cloud:
        st = rng.uniform(-1.0, 1.0, size=(m, 2))
        pos = centre + st[:, :1] * e1 + st[:, 1:] * e2
        return pos, np.broadcast_to(normal, (m, 3)).copy()

    return 4.0 * np.linalg.norm(e1) * np.linalg.norm(e2), sample


def _box(
    rng: np.random.Generator,
    centre: Sequence[float],
    half: Sequence[float],
    skip: Sequence[str] = (),
) -> list[Part]:
    """The six faces of an axis-aligned box (faces named ``"+x"``, ``"-z"``... in ``skip``
    are left out, e.g. where a chair's leg meets the seat)."""
    centre, half = np.asarray(centre, float), np.asarray(half, float)
    eye = np.eye(3)
    parts = []
    for axis in range(3):
        a, b = [i for i in range(3) if i != axis]
        for sign, label in ((1.0, "+"), (-1.0, "-")):
            if label + "xyz"[axis] in skip:
                continue
            parts.append(
                _rectangle(
                    rng,
                    centre + sign * half[axis] * eye[axis],
                    half[a] * eye[a],
                    half[b] * eye[b],
                    sign * eye[axis],
                )
            )
    return parts


def _disk(
    rng: np.random.Generator,
    centre: np.ndarray,
    e1: np.ndarray,
    e2: np.ndarray,
    radius: float,
    normal: np.ndarray,
) -> Part:
    """A disk of ``radius`` in the plane of orthonormal ``e1, e2``."""

    def sample(m: int) -> Cloud:
        rho = radius * np.sqrt(rng.uniform(size=(m, 1)))
        phi = rng.uniform(0.0, 2 * math.pi, size=(m, 1))
        pos = centre + rho * (np.cos(phi) * e1 + np.sin(phi) * e2)
        return pos, np.broadcast_to(normal, (m, 3)).copy()

    return math.pi * radius**2, sample


def _tube_z(rng: np.random.Generator, radius: float, z0: float, z1: float) -> Part:
    """The side of a cylinder about the z axis between heights ``z0 < z1``."""

    def sample(m: int) -> Cloud:
        phi = rng.uniform(0.0, 2 * math.pi, size=m)
        z = rng.uniform(z0, z1, size=m)
        normal = np.stack([np.cos(phi), np.sin(phi), np.zeros(m)], axis=1)
        pos = radius * normal + np.stack([np.zeros(m), np.zeros(m), z], axis=1)
        return pos, normal

    return 2 * math.pi * radius * (z1 - z0), sample


def _hemisphere_z(rng: np.random.Generator, radius: float, z: float, sign: float) -> Part:
    """Half of a sphere centred at ``(0, 0, z)``, bulging towards ``sign * z``."""

    def sample(m: int) -> Cloud:
        u = rng.normal(size=(m, 3))
        u /= np.linalg.norm(u, axis=1, keepdims=True)
        u[:, 2] = sign * np.abs(u[:, 2])
        return radius * u + np.array([0.0, 0.0, z]), u

    return 2 * math.pi * radius**2, sample


def _triangles(rng: np.random.Generator, vertices: np.ndarray, faces: np.ndarray) -> Part:
    """A closed *convex* triangle mesh; normals are oriented away from the centroid."""
    tri = vertices[faces]  # [F, 3 corners, 3]
    cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    area = np.linalg.norm(cross, axis=1) / 2
    normal = cross / (2 * area[:, None])
    outward = np.einsum("fi,fi->f", normal, tri.mean(axis=1) - vertices.mean(axis=0))
    normal *= np.where(outward < 0, -1.0, 1.0)[:, None]

    def sample(m: int) -> Cloud:
        face = rng.choice(len(faces), size=m, p=area / area.sum())
        r1, r2 = np.sqrt(rng.uniform(size=(m, 1))), rng.uniform(size=(m, 1))
        t = tri[face]
        pos = (1 - r1) * t[:, 0] + r1 * (1 - r2) * t[:, 1] + r1 * r2 * t[:, 2]
        return pos, normal[face]

    return float(area.sum()), sample


def _rejection(
    rng: np.random.Generator, n: int, draw: Callable[[int], tuple[np.ndarray, Cloud]]
) -> Cloud:
    """Keep draws with probability ``accept`` (``draw(m) -> (accept [m], (pos, normal))``)."""
    pos, normal, have = [], [], 0
    while have < n:
        m = max(2 * (n - have), 64)
        accept, (p, q) = draw(m)
        keep = rng.uniform(size=m) < accept
        pos.append(p[keep])
        normal.append(q[keep])
        have += int(keep.sum())
    return np.concatenate(pos)[:n], np.concatenate(normal)[:n]


# --------------------------------------------------------------------------- classes
def _ellipsoid(rng: np.random.Generator, n: int) -> Cloud:
    axes = rng.uniform(0.35, 1.0, size=3)

    def draw(m: int) -> tuple[np.ndarray, Cloud]:
        u = rng.normal(size=(m, 3))
        u /= np.linalg.norm(u, axis=1, keepdims=True)
        grad = u / axes  # area element ∝ |A^-1 u| (Nanson's formula), normal ∝ A^-1 u
        size = np.linalg.norm(grad, axis=1)
        return size * axes.min(), (u * axes, grad / size[:, None])

    return _rejection(rng, n, draw)


def _box_shape(rng: np.random.Generator, n: int) -> Cloud:
    return _mix(_box(rng, (0, 0, 0), rng.uniform(0.25, 0.8, size=3)), n, rng)


def _cylinder_z(rng: np.random.Generator, n: int) -> Cloud:
    radius = rng.uniform(0.2, 0.35)
    half = radius * rng.uniform(2.0, 3.5)  # elongated: height / diameter in [2, 3.5]
    ex, ey, ez = np.eye(3)
    parts = [
        _tube_z(rng, radius, -half, half),
        _disk(rng, half * ez, ex, ey, radius, ez),
        _disk(rng, -half * ez, ex, ey, radius, -ez),
    ]
    return _mix(parts, n, rng)


def _cylinder_lying(rng: np.random.Generator, n: int) -> Cloud:
    pos, normal = _cylinder_z(rng, n)
    return pos @ _Z_TO_X.T, normal @ _Z_TO_X.T


def _cone(rng: np.random.Generator, n: int) -> Cloud:
    radius, height = rng.uniform(0.4, 0.8), rng.uniform(0.8, 1.6)
    slant = math.hypot(radius, height)

    def lateral(m: int) -> Cloud:
        t = np.sqrt(rng.uniform(size=m))  # distance from the apex, area-uniform
        phi = rng.uniform(0.0, 2 * math.pi, size=m)
        c, s = np.cos(phi), np.sin(phi)
        pos = np.stack([t * radius * c, t * radius * s, height * (1 - t)], axis=1)
        normal = np.stack([height * c, height * s, np.full(m, radius)], axis=1) / slant
        return pos, normal

    ex, ey, ez = np.eye(3)
    parts = [(math.pi * radius * slant, lateral), _disk(rng, 0 * ez, ex, ey, radius, -ez)]
    return _mix(parts, n, rng)


def _torus(rng: np.random.Generator, n: int) -> Cloud:
    big, small = rng.uniform(0.6, 0.9), rng.uniform(0.15, 0.3)

    def draw(m: int) -> tuple[np.ndarray, Cloud]:
        theta = rng.uniform(0.0, 2 * math.pi, size=m)
        phi = rng.uniform(0.0, 2 * math.pi, size=m)
        normal = np.stack(
            [np.cos(phi) * np.cos(theta), np.cos(phi) * np.sin(theta), np.sin(phi)], axis=1
        )
        ring = np.stack([big * np.cos(theta), big * np.sin(theta), np.zeros(m)], axis=1)
        accept = (big + small * np.cos(phi)) / (big + small)  # area element r (R + r cos phi)
        return accept, (ring + small * normal, normal)

    return _rejection(rng, n, draw)


def _pyramid(rng: np.random.Generator, n: int) -> Cloud:
    a, b, h = rng.uniform(0.4, 0.8), rng.uniform(0.4, 0.8), rng.uniform(0.6, 1.4)
    vertices = np.array([[a, b, 0], [-a, b, 0], [-a, -b, 0], [a, -b, 0], [0, 0, h]], float)
    faces = np.array([[0, 1, 2], [0, 2, 3], [0, 1, 4], [1, 2, 4], [2, 3, 4], [3, 0, 4]])
    return _mix([_triangles(rng, vertices, faces)], n, rng)


def _prism(rng: np.random.Generator, n: int) -> Cloud:
    """A triangular prism lying along x (a 'roof'), apex edge up."""
    length, w, h = rng.uniform(0.5, 1.0), rng.uniform(0.3, 0.6), rng.uniform(0.4, 1.0)
    vertices = np.array(
        [[s * length, y, z] for s in (1.0, -1.0) for y, z in ((-w, 0.0), (w, 0.0), (0.0, h))]
    )
    faces = np.array(
        [[0, 1, 2], [3, 4, 5], [0, 1, 4], [0, 4, 3], [1, 2, 5], [1, 5, 4], [2, 0, 3], [2, 3, 5]]
    )
    return _mix([_triangles(rng, vertices, faces)], n, rng)


def _capsule(rng: np.random.Generator, n: int) -> Cloud:
    radius, half = rng.uniform(0.25, 0.45), rng.uniform(0.3, 0.8)
    parts = [
        _tube_z(rng, radius, -half, half),
        _hemisphere_z(rng, radius, half, 1.0),
        _hemisphere_z(rng, radius, -half, -1.0),
    ]
    return _mix(parts, n, rng)


def _chair(rng: np.random.Generator, n: int) -> Cloud:
    """Seat, four legs and a backrest (boxes); the legs' tops and the backrest's bottom,
    hidden against the seat, are left out (the seat's faces under them are kept, ~3 % of
    the points)."""
    w, d = rng.uniform(0.4, 0.6), rng.uniform(0.4, 0.6)  # seat half-width (x), half-depth (y)
    thick, seat_z = rng.uniform(0.04, 0.08), rng.uniform(0.7, 1.1)
    leg, back_t, back_h = rng.uniform(0.03, 0.06), rng.uniform(0.03, 0.06), rng.uniform(0.6, 1.2)
    parts = _box(rng, (0, 0, seat_z + thick), (w, d, thick))
    for sx in (1, -1):
        for sy in (1, -1):
            centre = (sx * (w - leg), sy * (d - leg), seat_z / 2)
            parts += _box(rng, centre, (leg, leg, seat_z / 2), skip=("+z",))
    back_centre = (0, -d + back_t, seat_z + 2 * thick + back_h / 2)
    parts += _box(rng, back_centre, (w, back_t, back_h / 2), skip=("-z",))
    return _mix(parts, n, rng)


def _helix_right(rng: np.random.Generator, n: int) -> Cloud:
    """A tube of radius ``r`` around the right-handed helix ``(R cos(t+φ), R sin(t+φ), c t)``.

    The phase ``φ`` is uniform in ``[0, 2π)``: the azimuth of the ends is random.
    """
    big, r = rng.uniform(0.5, 0.8), rng.uniform(0.1, 0.16)
    turns, pitch = rng.uniform(1.5, 2.5), rng.uniform(0.5, 0.8)
    phase = rng.uniform(0.0, 2 * math.pi)
    c, t_end = pitch / (2 * math.pi), 2 * math.pi * turns
    speed = math.hypot(big, c)
    kappa = big / speed**2  # curvature of the centre line

    def frame(t: np.ndarray) -> tuple[np.ndarray, ...]:
        cos, sin = np.cos(t + phase), np.sin(t + phase)
        centre = np.stack([big * cos, big * sin, c * t], axis=1)
        tangent = np.stack([-big * sin, big * cos, np.full_like(t, c)], axis=1) / speed
        normal = np.stack([-cos, -sin, np.zeros_like(t)], axis=1)  # towards the axis
        return centre, tangent, normal, np.cross(tangent, normal)

    def draw(m: int) -> tuple[np.ndarray, Cloud]:
        t = rng.uniform(0.0, t_end, size=m)
        u = rng.uniform(0.0, 2 * math.pi, size=(m, 1))
        centre, _, nor, bi = frame(t)
        out = np.cos(u) * nor + np.sin(u) * bi
        accept = (1 - kappa * r * np.cos(u[:, 0])) / (1 + kappa * r)  # area element
        return accept, (centre + r * out, out)

    def cap(t0: float, sign: float) -> Part:
        centre, tangent, nor, bi = (v[0] for v in frame(np.array([t0])))
        return _disk(rng, centre, nor, bi, r, sign * tangent)

    side: Part = (2 * math.pi * r * speed * t_end, lambda m: _rejection(rng, m, draw))
    return _mix([side, cap(0.0, -1.0), cap(t_end, 1.0)], n, rng)


def _helix_left(rng: np.random.Generator, n: int) -> Cloud:
    pos, normal = _helix_right(rng, n)
    return pos @ MIRROR_X, normal @ MIRROR_X


_SAMPLERS: dict[str, Callable[[np.random.Generator, int], Cloud]] = {
    "ellipsoid": _ellipsoid,
    "box": _box_shape,
    "cylinder_standing": _cylinder_z,
    "cylinder_lying": _cylinder_lying,
    "cone": _cone,
    "torus": _torus,
    "pyramid": _pyramid,
    "capsule": _capsule,
    "prism": _prism,
    "chair": _chair,
    "helix_right": _helix_right,
    "helix_left": _helix_left,
}
assert tuple(_SAMPLERS) == SHAPE_CLASSES


def sample_shape(
    name: str,
    num_points: int = 1024,
    rng: np.random.Generator | int = 0,
    noise: float = 0.0,
    normalize: bool = True,
) -> tuple[Tensor, Tensor]:
    """Sample one random solid of class ``name``.

    Args:
        name: one of :data:`SHAPE_CLASSES`.
        num_points: points ``P`` on the surface (area-uniform).
        rng: a ``numpy.random.Generator`` (advanced by the call) or an int seed.
        noise: std of Gaussian noise added to the positions after normalisation.
        normalize: centre at the centroid and scale the farthest point to norm 1.

    Returns:
        ``pos [P, 3]`` and unit outward ``normal [P, 3]`` (float32).
    """
    if name not in _SAMPLERS:
        raise ValueError(f"name: expected one of {list(SHAPE_CLASSES)}, got {name!r}")
    num_points = check_int(num_points, "num_points")
    noise = _check_noise(noise)
    if not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(rng)
    if normalize and num_points < 2:
        raise ValueError(
            f"num_points: expected at least 2 points to normalise (one point has no size), "
            f"got {num_points}; pass normalize=False for a single point"
        )
    pos, normal = _SAMPLERS[name](rng, num_points)
    if normalize:
        pos = pos - pos.mean(axis=0)
        pos = pos / np.linalg.norm(pos, axis=1).max()
    if noise > 0:
        pos = pos + noise * rng.normal(size=pos.shape)
    return torch.from_numpy(pos).float(), torch.from_numpy(normal).float()


def _check_noise(noise: object) -> float:
    """``noise`` as a float, refused unless a finite number ``>= 0``."""
    if not is_finite_real(noise) or noise < 0:
        raise ValueError(f"noise: expected a finite number >= 0, got {noise!r}")
    return float(noise)


def _select_classes(classes: Sequence[str] | None) -> list[str]:
    if classes is None:
        return list(SHAPE_CLASSES)
    if isinstance(classes, str):
        classes = [classes]
    classes = list(classes)
    unknown = [c for c in classes if c not in SHAPE_CLASSES]
    if unknown:
        raise ValueError(
            f"classes: unknown class names {unknown}; valid names are {list(SHAPE_CLASSES)}"
        )
    if not classes or len(set(classes)) != len(classes):
        raise ValueError(f"classes: expected a non-empty list of distinct names, got {classes}")
    return [c for c in SHAPE_CLASSES if c in classes]


class ProceduralShapes(InMemoryDataset):
    """Synthetic point clouds of parametric solids (see the module docstring), made on the fly.

    Shape ``i`` has class ``self.classes[i % len(self.classes)]`` (balanced to within one
    shape) and its own random proportions drawn from ``numpy.random.default_rng([seed, i])``,
    so the set is deterministic under ``seed`` and shape ``i`` does not depend on
    ``num_shapes``. ``y`` indexes ``self.classes``, which keeps the canonical order of
    :data:`SHAPE_CLASSES` whatever order ``classes`` was given in.

    Args:
        num_shapes: number of shapes.
        num_points: points ``P`` per shape.
        classes: a subset of :data:`SHAPE_CLASSES` (default: all 12).
        seed: the seed of the whole set.
        noise: std of Gaussian position noise (shapes are in the unit ball).
        root: optional folder; the generated set is cached in ``<root>/processed``
            (written atomically) and reloaded next time. ``None``: memory only.
        transform: applied on every access (e.g. ``RandomGroupRotation``).
        pre_transform: applied once after generation (part of the cache key).
        force_reload: regenerate even if a cache exists.

    Each item: ``Data(pos [P, 3] float32, normal [P, 3] float32, y [1] long)``.
    """

    def __init__(
        self,
        num_shapes: int,
        num_points: int = 1024,
        classes: Sequence[str] | None = None,
        seed: int = 0,
        noise: float = 0.0,
        root: str | Path | None = None,
        transform: Callable[[Data], Data] | None = None,
        pre_transform: Callable[[Data], Data] | None = None,
        force_reload: bool = False,
    ) -> None:
        num_shapes = check_int(num_shapes, "num_shapes")
        num_points = check_int(num_points, "num_points")
        if num_points < 2:  # clouds are normalised to the unit sphere
            raise ValueError(f"num_points: expected at least 2 points per shape, got {num_points}")
        noise = _check_noise(noise)
        if not is_int(seed) or seed < 0:
            raise ValueError(f"seed: expected a non-negative int, got {seed!r}")
        self.classes = _select_classes(classes)
        self.num_shapes, self.num_points = num_shapes, num_points
        self.seed, self.noise = int(seed), noise
        super().__init__(None, transform)  # no root: PyG's download/process steps are skipped
        self.pre_transform = pre_transform
        self.cache_path = None if root is None else self._cache_file(Path(root))
        if self.cache_path is not None and self.cache_path.exists() and not force_reload:
            self.load(str(self.cache_path))
            return
        self._data, self.slices = self.collate(self._generate())
        if self.cache_path is not None:
            self.cache_path.parent.mkdir(parents=True, exist_ok=True)
            save_atomic((self._data.to_dict(), self.slices, Data), self.cache_path)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def _cache_file(self, root: Path) -> Path:
        key = repr(
            (
                _CACHE_VERSION,
                self.num_shapes,
                self.num_points,
                self.classes,
                self.seed,
                self.noise,
                transform_fingerprint(self.pre_transform),
            )
        )
        digest = hashlib.sha1(key.encode()).hexdigest()[:12]
        return root / "processed" / f"procedural_shapes_{digest}.pt"

    def _generate(self) -> list[Data]:
        data_list, pre_transform = [], fresh_hook(self.pre_transform)
        for i in range(self.num_shapes):
            label = i % len(self.classes)
            rng = np.random.default_rng([self.seed, i])
            pos, normal = sample_shape(self.classes[label], self.num_points, rng, noise=self.noise)
            data = Data(pos=pos, normal=normal, y=torch.tensor([label]))
            if pre_transform is not None:
                data = pre_transform(data)
            data_list.append(data)
        return data_list

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({len(self)}, num_points={self.num_points}, "
            f"classes={len(self.classes)}, seed={self.seed}, noise={self.noise})"
        )
