"""Point-cloud transforms (PyG ``BaseTransform``s) for symmetry experiments.

Every transform takes a ``Data`` with ``pos [P, 3]`` (and optionally ``normal [P, 3]``,
``x [P, C]``) and returns a transformed shallow copy; tensors are replaced, never edited
in place, so the dataset's stored tensors stay untouched.

- :class:`NormalizeUnitSphere` — centre and scale into the unit ball (normals kept unit).
- :class:`SamplePointsFixed` — sub- or up-sample a cloud to exactly ``num_points``.
- :class:`DeduplicatePoints` — drop repeated coordinates.
- :class:`RandomGroupRotation` — apply an element drawn uniformly from a group ``G ≤ O(3)``
  (``group.sample``) to ``pos`` and ``normal``; unlike PyG's ``RandomRotate`` (one axis,
  an angle range) the element is Haar-uniform over whatever group is chosen.
- :class:`KNNGraph`, :class:`RadiusGraph` — neighbour graphs via :mod:`symgraph.graph`
  (no torch-cluster needed), with clear errors for too few points or NaN coordinates.
- :class:`NormalsAsFeatures` / :func:`normals_as_features` — normals as a ``1x1o`` input.

Duplicate points: allowed everywhere. They give zero-length edges in kNN / radius graphs,
which are harmless for the forward pass of the implicit kernels (the radial embedding of
distance 0 is finite, and e3nn's spherical harmonics of degree >= 1 are exactly 0 at the
zero vector, so such an edge carries no direction). Gradients *with respect to positions*
through ``|x_j - x_i|`` are undefined at 0; use :class:`DeduplicatePoints` first when that
matters (or when duplicates would waste kNN slots).
"""

from __future__ import annotations

import hashlib
import inspect
import io
import pickle
import types
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor
from torch_geometric.data import Data
from torch_geometric.transforms import BaseTransform

from symgraph.checks import check_batch, check_finite, is_int, is_real
from symgraph.graph import check_max_num_neighbors, knn_graph, radius_graph

__all__ = [
    "transform_fingerprint",
    "fresh_hook",
    "NORMAL_IRREPS",
    "GroupSampler",
    "NormalizeUnitSphere",
    "SamplePointsFixed",
    "DeduplicatePoints",
    "RandomGroupRotation",
    "KNNGraph",
    "RadiusGraph",
    "NormalsAsFeatures",
    "normals_as_features",
]

#: Irreps of a unit normal used as an input feature. e3nn's ``1o`` basis is Cartesian
#: ``(x, y, z)``, so ``x = normal`` needs no change of basis.
NORMAL_IRREPS = "1x1o"


@runtime_checkable
class GroupSampler(Protocol):
    """Anything with ``sample(n, generator=None, dtype=...) -> Tensor [n, 3, 3]``.

    :class:`symgraph.groups` groups satisfy it; so does any small stand-in.
    """

    def sample(
        self, n: int, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32
    ) -> Tensor: ...


def _get_pos(data: Data, who: str) -> Tensor:
    """``data.pos`` as a finite floating ``[P, 3]`` tensor, or a clear error naming ``who``."""
    pos = getattr(data, "pos", None)
    if pos is None:
        raise ValueError(f"{who}: expected a Data with `pos` [P, 3], got a Data without `pos`")
    if not isinstance(pos, Tensor) or pos.dim() != 2 or pos.shape[1] != 3:
        got = f"shape {list(pos.shape)}" if isinstance(pos, Tensor) else type(pos).__name__
        raise ValueError(f"{who}: expected `pos` of shape [P, 3], got {got}")
    if not pos.is_floating_point():
        raise TypeError(f"{who}: expected a floating-point `pos`, got dtype {pos.dtype}")
    bad = ~torch.isfinite(pos)
    if bool(bad.any()):
        rows = bad.any(dim=1).nonzero().flatten()[:5].tolist()
        raise ValueError(
            f"{who}: expected finite coordinates in `pos`, got {int(bad.any(dim=1).sum())} "
            f"points with NaN/inf (first rows {rows}); remove or impute them first"
        )
    return pos


def _get_vectors(data: Data, key: str, num_points: int, who: str) -> Tensor:
    value = data[key]
    if not isinstance(value, Tensor) or value.shape != (num_points, 3):
        got = f"shape {list(value.shape)}" if isinstance(value, Tensor) else type(value).__name__
        raise ValueError(f"{who}: expected `{key}` of shape [{num_points}, 3], got {got}")
    return check_finite(value, f"{who}: `{key}`")


def _unit(normal: Tensor) -> Tensor:
    """Rows scaled to unit length; all-zero rows stay zero."""
    return torch.nn.functional.normalize(normal, dim=1)


class _SeededDraws:
    """The private ``torch.Generator`` of a seeded random transform, one per process.

    In the main process it is seeded with ``seed``. In a DataLoader worker it is seeded
    with ``seed`` and the worker's own seed (``get_worker_info().seed``, which PyTorch
    draws anew for every worker and epoch from the loader's generator), so workers and
    epochs draw differently (a copy of one generator per worker would repeat worker 0's
    draws in every worker and every epoch) and a seeded loader still repeats a whole run.
    """

    def __init__(self, seed: int | None) -> None:
        if seed is not None and not is_int(seed):
            raise TypeError(f"seed: expected an int or None, got {type(seed).__name__} {seed!r}")
        self.seed = None if seed is None else int(seed)
        self._generator: torch.Generator | None = None
        self._worker_seed: int | None = None

    def __getstate__(self) -> dict[str, int | None]:
        """The seed only, not the draws made so far: a pickled transform (its
        :func:`transform_fingerprint`, the cache key of a ``pre_transform``) must not
        change once the transform has been used; a copy draws anew from the seed."""
        return {"seed": self.seed}

    def __setstate__(self, state: dict[str, int | None]) -> None:
        self.__init__(state["seed"])

    def generator(self) -> torch.Generator | None:
        """The generator to draw from now (``None``: torch's global RNG, unseeded)."""
        if self.seed is None:
            return None
        info = torch.utils.data.get_worker_info()
        worker_seed = None if info is None else int(info.seed)
        if self._generator is None or worker_seed != self._worker_seed:
            mixed = self.seed if worker_seed is None else (self.seed * 1_000_003 + worker_seed)
            self._generator = torch.Generator().manual_seed(mixed % 2**63)
            self._worker_seed = worker_seed
        return self._generator


def _check_one_cloud(data: Data, num_points: int, who: str) -> None:
    """Per-cloud transforms refuse a batch of several clouds (they would mix them)."""
    batch = check_batch(getattr(data, "batch", None), num_points, "data.batch")
    if batch is not None and batch.numel() and int(batch.max()) > 0:
        raise ValueError(
            f"{who}: expected one cloud, got a batch of {int(batch.max()) + 1} clouds "
            "(data.batch); apply it to each cloud, e.g. as a dataset transform"
        )


def _reindex_one_cloud(data: Data, num_points: int) -> None:
    """After sampling or deduplicating one cloud held as a batch: ``batch``/``ptr`` anew."""
    if getattr(data, "batch", None) is not None:
        data.batch = data.batch.new_zeros(num_points)
    if getattr(data, "ptr", None) is not None:
        data.ptr = data.ptr.new_tensor([0, num_points])


def _graph_sizes(data: Data, num_points: int) -> list[int]:
    batch = check_batch(getattr(data, "batch", None), num_points, "data.batch")
    if batch is None:
        return [num_points]
    return [int(c) for c in torch.bincount(batch) if c > 0]


def _drop_edges(data: Data) -> None:
    for key in ("edge_index", "edge_attr", "edge_weight"):
        if key in data:
            del data[key]


class NormalizeUnitSphere(BaseTransform):
    """Centre the cloud and scale it so the farthest point lies on the unit sphere.

    The same normalisation as PointNet++'s ``pc_normalize``: ``pos <- (pos - c) / s`` with
    ``c`` the centroid (``center="mean"``) or the bounding-box centre (``"bbox"``) and
    ``s = max_i |pos_i - c|``. Normals are unaffected by translation and uniform scaling;
    they are re-normalised to unit length (all-zero normals stay zero). A cloud whose
    points all coincide (``s = 0``) is only centred.

    Shapes: ``pos [P, 3] -> [P, 3]``, ``normal [P, 3] -> [P, 3]``.
    """

    def __init__(self, center: str = "mean") -> None:
        if center not in ("mean", "bbox"):
            raise ValueError(f"center: expected 'mean' or 'bbox', got {center!r}")
        self.center = center

    def forward(self, data: Data) -> Data:
        pos = _get_pos(data, "NormalizeUnitSphere")
        if pos.shape[0] == 0:
            raise ValueError("NormalizeUnitSphere: expected at least one point, got 0")
        _check_one_cloud(data, pos.shape[0], "NormalizeUnitSphere")
        if self.center == "mean":
            c = pos.mean(dim=0)
        else:
            c = (pos.amin(dim=0) + pos.amax(dim=0)) / 2
        pos = pos - c
        scale = pos.norm(dim=1).max()
        data.pos = pos / scale if scale > 0 else pos
        if "normal" in data:
            data.normal = _unit(_get_vectors(data, "normal", pos.shape[0], "NormalizeUnitSphere"))
        return data

    def __repr__(self) -> str:
        return f"{type(self).__name__}(center={self.center!r})"


class SamplePointsFixed(BaseTransform):
    """Sub- or up-sample a cloud to exactly ``num_points`` points.

    ``P >= num_points``: a random subset without replacement. ``P < num_points``: every
    point once plus ``num_points - P`` random repeats (duplicates; see the module note).
    The order is random either way. Per-point tensors named in ``keys`` are indexed
    together; graph edges (``edge_index``, ``edge_attr``) are dropped, build graphs after
    sampling.

    Args:
        num_points: the fixed count ``P'``.
        seed: seeds a private ``torch.Generator``: the draws are reproducible, and in
            DataLoader workers they differ per worker and epoch (mixed with the worker's
            seed, reproducible when the loader is seeded); ``None`` uses torch's global RNG.
        keys: per-point attributes ``[P, ...]`` to index along with ``pos`` (a string: one).

    Shapes: ``pos [P, 3] -> [P', 3]``, likewise ``normal`` and ``x``.
    """

    def __init__(
        self,
        num_points: int,
        seed: int | None = None,
        keys: Sequence[str] = ("pos", "normal", "x"),
    ) -> None:
        if not is_int(num_points) or num_points < 1:
            raise ValueError(f"num_points: expected a positive int, got {num_points!r}")
        draws = _SeededDraws(seed)
        self.num_points = int(num_points)
        self.seed = draws.seed
        self.draws = draws
        self.keys = (keys,) if isinstance(keys, str) else tuple(keys)

    def forward(self, data: Data) -> Data:
        pos = _get_pos(data, "SamplePointsFixed")
        p, n = pos.shape[0], self.num_points
        if p == 0:
            raise ValueError("SamplePointsFixed: expected a cloud with at least one point, got 0")
        _check_one_cloud(data, p, "SamplePointsFixed")
        generator = self.draws.generator()
        perm = torch.randperm(p, generator=generator)
        if p >= n:
            index = perm[:n]
        else:
            extra = torch.randint(p, (n - p,), generator=generator)
            index = torch.cat([perm, extra])
            index = index[torch.randperm(n, generator=generator)]
        index = index.to(pos.device)
        for key in self.keys:
            if key in data and isinstance(data[key], Tensor):
                if data[key].shape[0] != p:
                    raise ValueError(
                        f"SamplePointsFixed: expected `{key}` with {p} rows (one per point), "
                        f"got shape {list(data[key].shape)}"
                    )
                data[key] = data[key][index]
        _reindex_one_cloud(data, n)
        _drop_edges(data)
        return data

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.num_points}, seed={self.seed})"


class DeduplicatePoints(BaseTransform):
    """Remove points whose coordinates repeat an earlier point (the first one is kept).

    Args:
        decimals: round coordinates to this many decimals before comparing (``None``:
            exact equality).
        keys: per-point attributes indexed together with ``pos`` (a string: one).

    Shapes: ``pos [P, 3] -> [P_unique, 3]``; graph edges are dropped when a point is removed.
    """

    def __init__(
        self, decimals: int | None = None, keys: Sequence[str] = ("pos", "normal", "x")
    ) -> None:
        if decimals is not None and not is_int(decimals):
            raise ValueError(f"decimals: expected an int or None, got {decimals!r}")
        self.decimals = None if decimals is None else int(decimals)
        self.keys = (keys,) if isinstance(keys, str) else tuple(keys)

    def forward(self, data: Data) -> Data:
        pos = _get_pos(data, "DeduplicatePoints")
        p = pos.shape[0]
        if p == 0:
            return data
        _check_one_cloud(data, p, "DeduplicatePoints")
        key_pos = pos if self.decimals is None else torch.round(pos, decimals=self.decimals)
        _, inverse = torch.unique(key_pos, dim=0, return_inverse=True)
        first = torch.full((int(inverse.max()) + 1,), p, dtype=torch.long, device=pos.device)
        first.scatter_reduce_(0, inverse, torch.arange(p, device=pos.device), reduce="amin")
        index = torch.sort(first).values
        if index.numel() == p:
            return data
        for key in self.keys:
            if key in data and isinstance(data[key], Tensor):
                if data[key].shape[0] != p:
                    raise ValueError(
                        f"DeduplicatePoints: expected `{key}` with {p} rows (one per point), "
                        f"got shape {list(data[key].shape)}"
                    )
                data[key] = data[key][index]
        _reindex_one_cloud(data, index.numel())
        _drop_edges(data)
        return data

    def __repr__(self) -> str:
        return f"{type(self).__name__}(decimals={self.decimals})"


class RandomGroupRotation(BaseTransform):
    """Act on the cloud with an element ``g`` drawn uniformly from a group ``G ≤ O(3)``.

    ``g = group.sample(1, generator, dtype=float64)[0]`` (Haar measure for continuous
    groups, uniform over the elements for finite ones). Every attribute in ``keys`` is a
    set of vectors transformed as ``v <- v g^T`` (row vectors), computed in float64 and
    cast back: positions rotate about the origin (normalise first), and surface normals
    transform the same way under reflections too (an outward normal stays outward).
    Put ``"x"`` in ``keys`` when ``x`` holds the normals as ``1o`` features.

    Args:
        group: any object with ``sample(n, generator=None, dtype=...) -> [n, 3, 3]``
            (a :mod:`symgraph.groups` group).
        keys: attributes ``[P, 3]`` to transform (a string: one); those absent are skipped,
            except ``pos`` which must be present.
        seed: seeds a private ``torch.Generator`` passed to ``group.sample`` (per
            DataLoader worker and epoch as for :class:`SamplePointsFixed`).
        store: also keep the element as ``data.rotation [1, 3, 3]`` (float64), which
            batches to ``[B, 3, 3]``.
    """

    def __init__(
        self,
        group: GroupSampler,
        keys: Sequence[str] = ("pos", "normal"),
        seed: int | None = None,
        store: bool = False,
    ) -> None:
        if not callable(getattr(group, "sample", None)):
            raise TypeError(
                "group: expected an object with a sample(n, generator=None, dtype=...) "
                f"method (a symgraph.groups group), got {type(group).__name__}"
            )
        draws = _SeededDraws(seed)
        self.group = group
        self.keys = (keys,) if isinstance(keys, str) else tuple(keys)
        self.seed = draws.seed
        self.draws = draws
        self.store = store

    def sample_element(self) -> Tensor:
        """One group element ``[3, 3]`` (float64), checked to be orthogonal."""
        g = self.group.sample(1, generator=self.draws.generator(), dtype=torch.float64)
        if not isinstance(g, Tensor) or g.shape != (1, 3, 3):
            got = f"shape {list(g.shape)}" if isinstance(g, Tensor) else type(g).__name__
            raise ValueError(f"group.sample(1): expected a tensor [1, 3, 3], got {got}")
        g = g[0].to(torch.float64)
        err = (g @ g.T - torch.eye(3, dtype=g.dtype, device=g.device)).abs().max()
        if not bool(err < 1e-5):
            raise ValueError(
                "group.sample(1): expected an orthogonal matrix, got "
                f"|g g^T - I| = {float(err):.2e}"
            )
        return g

    def forward(self, data: Data) -> Data:
        pos = _get_pos(data, "RandomGroupRotation")
        g = self.sample_element().to(pos.device)
        for key in self.keys:
            if key not in data:
                continue
            value = _get_vectors(data, key, pos.shape[0], "RandomGroupRotation")
            data[key] = (value.to(torch.float64) @ g.T).to(value.dtype)
        if self.store:
            data.rotation = g[None]
        return data

    def __repr__(self) -> str:
        name = getattr(self.group, "name", type(self.group).__name__)
        return f"{type(self).__name__}({name}, keys={self.keys}, seed={self.seed})"


class KNNGraph(BaseTransform):
    """``edge_index`` of the ``k`` nearest neighbours of every point (:func:`knn_graph`).

    Edges point neighbour -> centre (``edge_index[1]`` is the centre), every centre has
    exactly ``k`` incoming edges. Works on a single cloud or on a batch (``data.batch``).

    Errors: NaN/inf coordinates -> ``ValueError``; a cloud with fewer than ``k + 1``
    points (``k`` with ``loop=True``) -> ``ValueError`` naming ``k`` and the count, unless
    ``clip=True``, in which case such a cloud gets ``P - 1`` neighbours per point (``P``
    with ``loop=True``; the degree is then no longer constant across clouds). Duplicate
    points are allowed (they give zero-length edges).

    Shapes: ``pos [P, 3] -> edge_index [2, P * k]``.
    """

    def __init__(self, k: int, loop: bool = False, clip: bool = False) -> None:
        if not is_int(k) or k < 1:
            raise ValueError(f"k: expected a positive int, got {k!r}")
        self.k, self.loop, self.clip = int(k), loop, clip

    def forward(self, data: Data) -> Data:
        pos = _get_pos(data, "KNNGraph")
        need = self.k if self.loop else self.k + 1
        smallest = min(_graph_sizes(data, pos.shape[0]))
        if smallest < need and not self.clip:
            raise ValueError(
                f"KNNGraph: k={self.k} needs at least {need} points per cloud, got a cloud "
                f"with {smallest} points; lower k, upsample with SamplePointsFixed, or pass "
                "clip=True"
            )
        edge_index = knn_graph(pos, self.k, getattr(data, "batch", None), loop=self.loop)
        _drop_edges(data)  # edge_attr / edge_weight of the old edges must not stay paired
        data.edge_index = edge_index
        return data

    def __repr__(self) -> str:
        return f"{type(self).__name__}(k={self.k}, loop={self.loop}, clip={self.clip})"


class RadiusGraph(BaseTransform):
    """``edge_index`` of all pairs closer than ``r`` (:func:`radius_graph`).

    At most ``max_num_neighbors`` per centre (the nearest; with torch-cluster installed, its
    choice). Isolated points are allowed.
    NaN/inf coordinates -> ``ValueError``. Shapes: ``pos [P, 3] -> edge_index [2, E]``.
    """

    def __init__(self, r: float, loop: bool = False, max_num_neighbors: int | None = 32) -> None:
        if not is_real(r) or not r > 0 or r == float("inf"):
            raise ValueError(f"r: expected a positive finite radius, got {r!r}")
        max_num_neighbors = check_max_num_neighbors(max_num_neighbors)
        self.r, self.loop, self.max_num_neighbors = float(r), loop, max_num_neighbors

    def forward(self, data: Data) -> Data:
        pos = _get_pos(data, "RadiusGraph")
        edge_index = radius_graph(
            pos, self.r, getattr(data, "batch", None), self.loop, self.max_num_neighbors
        )
        _drop_edges(data)  # edge_attr / edge_weight of the old edges must not stay paired
        data.edge_index = edge_index
        return data

    def __repr__(self) -> str:
        return f"{type(self).__name__}(r={self.r}, max_num_neighbors={self.max_num_neighbors})"


def normals_as_features(data: Data, cat: bool = False) -> Data:
    """Set ``data.x = data.normal`` (``[P, 3]``, irreps :data:`NORMAL_IRREPS` = ``"1x1o"``).

    e3nn's ``1o`` basis is Cartesian ``(x, y, z)``, so no change of basis is needed. With
    ``cat=True`` and an existing ``x [P, C]``, ``x = [x, normal]`` (``[P, C + 3]``): the
    representation of ``x`` becomes ``<old irreps> + 1x1o``. Edits ``data`` and returns it.
    """
    if "normal" not in data:
        raise ValueError("normals_as_features: expected a Data with `normal` [P, 3], got none")
    num = data.pos.shape[0] if "pos" in data else data.normal.shape[0]
    normal = _get_vectors(data, "normal", num, "normals_as_features")
    if cat and "x" in data and data.x is not None:
        x = data.x
        if x.dim() != 2 or x.shape[0] != num:
            raise ValueError(
                f"normals_as_features: expected `x` of shape [{num}, C], got {list(x.shape)}"
            )
        data.x = torch.cat([x, normal.to(x.dtype)], dim=1)
    else:
        data.x = normal
    return data


class NormalsAsFeatures(BaseTransform):
    """Transform form of :func:`normals_as_features` (``x = normal``, irreps ``1x1o``)."""

    def __init__(self, cat: bool = False) -> None:
        self.cat = cat

    def forward(self, data: Data) -> Data:
        return normals_as_features(data, cat=self.cat)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(cat={self.cat})"


def transform_fingerprint(hook: Any) -> str:
    """A cache key for a ``pre_transform``/``pre_filter``: its type and a hash of its pickled
    state when it pickles (``repr`` often leaves out arguments, e.g. PyG's
    ``RadiusGraph(2.0, loop=True)`` prints as ``RadiusGraph(r=2.0)``); else the ``repr``.

    Plain functions (lambdas, local and module-level ones, also inside a transform's state,
    e.g. a ``Compose`` list) count by a hash of their code, defaults and closure, the same
    in every process: not by their ``repr``, which holds a memory address, nor by their
    name, which pickle stores in their place, so that editing a function's body makes a new
    cache instead of silently reusing the old one. Values a function reads from its module's
    globals are not part of the key."""
    if inspect.isfunction(hook):
        return _function_key(hook)
    try:
        buffer = io.BytesIO()
        _CodePickler(buffer).dump(hook)
    except Exception:
        return repr(hook)
    kind = type(hook)
    return f"{kind.__module__}.{kind.__qualname__}:{hashlib.sha256(buffer.getvalue()).hexdigest()}"


def fresh_hook(hook: Any) -> Any:
    """``hook`` in the state its :func:`transform_fingerprint` describes, for a dataset to
    process with: a copy through pickle, so a seeded transform draws from its seed again
    instead of on from where earlier calls left it (a ``pre_transform`` shared by a train
    and a test set would otherwise give the second set other points under the same cache
    key than a fresh transform does); ``hook`` itself when it does not pickle."""
    try:
        return pickle.loads(pickle.dumps(hook))
    except Exception:
        return hook


class _CodePickler(pickle.Pickler):
    """A pickler for cache keys: a plain function is written as its :func:`_function_key`
    (what it computes), not as a reference to its name, and a tensor as its dtype, shape
    and a hash of its bytes (torch pickles a storage under its memory address, which
    differs between two equal tensors and between processes)."""

    def reducer_override(self, obj: Any) -> Any:
        if inspect.isfunction(obj):
            return str, (_function_key(obj),)
        if isinstance(obj, torch.Tensor):
            data = obj.detach().cpu().contiguous().reshape(-1).view(torch.uint8)
            digest = hashlib.sha256(data.numpy().tobytes()).hexdigest()
            return str, (f"tensor {obj.dtype} {list(obj.shape)} {digest}",)
        return NotImplemented


def _function_key(function: Any) -> str:
    return f"function {function.__module__}.{function.__qualname__}:{_function_state(function)}"


def _function_state(function: Any) -> str:
    """A hash of what a plain function computes: its code, its defaults and the values it
    closes over (their fingerprints), the same in every process."""
    closure = [cell.cell_contents for cell in function.__closure__ or ()]
    parts = [_code_state(function.__code__)]
    for value in (function.__defaults__, function.__kwdefaults__, *closure):
        parts.append(transform_fingerprint(value))
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def _code_state(code: types.CodeType) -> str:
    """Bytecode, names and constants of ``code`` (nested functions included) as text."""
    consts = []
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            consts.append(_code_state(const))
        elif isinstance(const, frozenset):  # iteration order varies with string hashing
            consts.append(repr(sorted(map(repr, const))))
        else:
            consts.append(repr(const))
    return repr((code.co_code.hex(), code.co_names, code.co_varnames, consts))
