"""ModelNet40 point clouds with normals, from either of the two common distributions.

``source="resampled"`` reads the PointNet++ ``modelnet40_normal_resampled`` folder
(10,000 surface points with unit normals per CAD model, text files ``x,y,z,nx,ny,nz``;
split lists ``modelnet40_train.txt`` / ``modelnet40_test.txt``; class names in
``modelnet40_shape_names.txt``). It is not downloaded automatically: see
:data:`RESAMPLED_URL` and :meth:`ModelNet40.download`.

``source="off"`` reads the original OFF meshes in PyG's ``ModelNet`` layout
(``<root>/raw/<class>/<split>/<class>_NNNN.off``, downloaded from :data:`OFF_URL` when
absent) and samples ``num_points`` surface points with face normals using
``torch_geometric.transforms.SamplePoints(include_normals=True)``, seeded per shape.
ModelNet meshes are not consistently oriented, so these normals may point inwards.

Each item is ``Data(pos [P, 3] float32, normal [P, 3] float32, y [1] long)`` with ``y``
the index of the class in ``dataset.classes``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
import warnings
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import Data, InMemoryDataset
from torch_geometric.transforms import SamplePoints

from symgraph.checks import as_number, is_int
from symgraph.data.download import fetch_into
from symgraph.data.transforms import fresh_hook, transform_fingerprint
from symgraph.files import atomic_write

__all__ = [
    "MODELNET40_CLASSES",
    "RESAMPLED_URL",
    "OFF_URL",
    "ModelNet40",
    "read_off",
    "read_resampled_file",
    "save_atomic",
]

#: The PointNet++ authors' distribution of ``modelnet40_normal_resampled.zip`` (1.6 GB).
#: The host is often offline; other copies of the same zip circulate.
RESAMPLED_URL = "https://shapenet.cs.stanford.edu/media/modelnet40_normal_resampled.zip"
#: The Princeton OFF meshes, as used by ``torch_geometric.datasets.ModelNet(name="40")``.
OFF_URL = "http://modelnet.cs.princeton.edu/ModelNet40.zip"

#: The 40 class names; the index is the label (same order as
#: ``modelnet40_shape_names.txt`` and as PyG's sorted folder names).
MODELNET40_CLASSES: tuple[str, ...] = (
    "airplane", "bathtub", "bed", "bench", "bookshelf", "bottle", "bowl", "car", "chair",
    "cone", "cup", "curtain", "desk", "door", "dresser", "flower_pot", "glass_box", "guitar",
    "keyboard", "lamp", "laptop", "mantel", "monitor", "night_stand", "person", "piano",
    "plant", "radio", "range_hood", "sink", "sofa", "stairs", "stool", "table", "tent",
    "toilet", "tv_stand", "vase", "wardrobe", "xbox",
)  # fmt: skip

_SPLITS = ("train", "test")
_SOURCES = ("resampled", "off")
_NAMES_FILE = "modelnet40_shape_names.txt"
_CACHE_VERSION = 1


def save_atomic(obj: Any, path: str | os.PathLike) -> None:
    """Write ``obj`` to ``path`` via a temporary file in the same folder and ``os.replace``.

    ``.json`` paths are written as JSON, anything else with ``torch.save``. A reader
    never sees a half-written file, and an interrupted write leaves no file behind.
    """
    path = Path(path)
    with atomic_write(path, "wb") as f:  # readable as the umask allows, fsynced, renamed
        if path.suffix == ".json":
            f.write(json.dumps(obj, indent=1).encode())
        else:
            torch.save(obj, f)


# --------------------------------------------------------------------------- readers
def read_resampled_file(
    path: str | os.PathLike, num_points: int | None = None
) -> tuple[Tensor, Tensor, int]:
    """Read one ``modelnet40_normal_resampled`` shape file (``x,y,z,nx,ny,nz`` per line).

    The points in these files are in random order, so the first ``num_points`` lines are a
    uniform subsample (what PointNet++'s loader does). Normals are re-normalised to unit
    length: the official files contain a few placeholder normals ``(1, 1, 1)`` (norm
    ``sqrt(3)``); all-zero normals would stay zero.

    Returns:
        ``pos [P, 3]`` and ``normal [P, 3]`` (float32), and how many normals were more than
        1% away from unit length before re-normalisation.
    """
    path = Path(path)
    with open(path) as f:
        rows = (ln for ln in f if ln.strip())  # blank lines do not count as points
        lines = list(rows) if num_points is None else list(itertools.islice(rows, num_points))
    try:
        arr = np.loadtxt(lines, delimiter=",", dtype=np.float64, ndmin=2)
    except ValueError as err:
        raise ValueError(
            f"{path}: expected lines of 6 comma-separated numbers 'x,y,z,nx,ny,nz', got "
            f"unparsable content ({err})"
        ) from err
    if arr.shape[0] == 0 or arr.shape[1] != 6:
        raise ValueError(
            f"{path}: expected lines of 6 comma-separated numbers 'x,y,z,nx,ny,nz', got an "
            f"array of shape {list(arr.shape)}"
        )
    if num_points is not None and arr.shape[0] < num_points:
        raise ValueError(
            f"{path}: expected at least num_points={num_points} points, got {arr.shape[0]}; "
            "pass a smaller num_points, or num_points=None to keep every point"
        )
    finite = np.isfinite(arr).all(axis=1)
    if not finite.all():
        rows = (np.flatnonzero(~finite)[:5] + 1).tolist()
        raise ValueError(
            f"{path}: expected finite numbers, got NaN/inf on {int((~finite).sum())} lines "
            f"(first lines {rows})"
        )
    norm = np.linalg.norm(arr[:, 3:], axis=1)
    bad_normals = int((np.abs(norm - 1) > 1e-2).sum())
    normal = torch.nn.functional.normalize(torch.from_numpy(arr[:, 3:]), dim=1)
    return torch.from_numpy(arr[:, :3]).float(), normal.float(), bad_normals


def read_off(path: str | os.PathLike) -> Data:
    """Read an OFF mesh into ``Data(pos [V, 3] float32, face [3, F] long)``.

    Handles ``#`` comments, blank lines, the header fused with the counts (``OFF490 518 0``,
    as in some ModelNet files), extra per-vertex / per-face values (colours) and polygons
    with more than three corners (fan-triangulated).
    """
    path = Path(path)
    lines = [ln.split("#", 1)[0].strip() for ln in path.read_text().splitlines()]
    lines = [ln for ln in lines if ln]
    if not lines or not lines[0].startswith("OFF"):
        got = repr(lines[0][:20]) if lines else "an empty file"
        raise ValueError(f"{path}: expected an OFF file starting with 'OFF', got {got}")
    fused = lines[0][3:].split()
    if fused:
        counts, body = fused, lines[1:]
    else:
        counts, body = (lines[1].split() if len(lines) > 1 else []), lines[2:]
    try:
        num_vertices, num_faces = int(counts[0]), int(counts[1])
    except (IndexError, ValueError) as err:
        raise ValueError(
            f"{path}: expected a counts line 'num_vertices num_faces num_edges', got {counts}"
        ) from err
    if len(body) < num_vertices + num_faces:
        raise ValueError(
            f"{path}: expected {num_vertices} vertex and {num_faces} face lines, got "
            f"{len(body)} lines (truncated file?)"
        )
    try:
        pos = np.array([ln.split()[:3] for ln in body[:num_vertices]], dtype=np.float64)
        triangles = []
        for ln in body[num_vertices : num_vertices + num_faces]:
            tokens = ln.split()
            k = int(tokens[0])
            corners = [int(t) for t in tokens[1 : 1 + k]]
            if k < 3 or len(corners) != k:
                raise ValueError(f"face line {ln!r} needs >= 3 corner indices")
            triangles += [(corners[0], corners[j], corners[j + 1]) for j in range(1, k - 1)]
    except (ValueError, IndexError) as err:
        raise ValueError(f"{path}: malformed OFF vertex or face line ({err})") from err
    if pos.shape != (num_vertices, 3):
        raise ValueError(f"{path}: expected {num_vertices} vertices with 3 coordinates")
    face = torch.tensor(triangles, dtype=torch.long).reshape(-1, 3).T.contiguous()
    if face.numel() and (int(face.min()) < 0 or int(face.max()) >= num_vertices):
        raise ValueError(
            f"{path}: expected face indices in [0, {num_vertices}), got values in "
            f"[{int(face.min())}, {int(face.max())}]"
        )
    return Data(pos=torch.from_numpy(pos).float(), face=face)


def _sample_mesh(mesh: Data, num_points: int, seed: int, path: Path) -> tuple[Tensor, Tensor]:
    """Area-uniform surface points and face normals of a mesh (PyG ``SamplePoints``)."""
    if not bool(torch.isfinite(mesh.pos).all()):
        raise ValueError(f"{path}: expected finite vertex coordinates, got NaN/inf")
    if mesh.face.shape[1] == 0:
        raise ValueError(f"{path}: expected at least one face, got none (a point set?)")
    p = mesh.pos.double()
    area = torch.linalg.cross(p[mesh.face[1]] - p[mesh.face[0]], p[mesh.face[2]] - p[mesh.face[0]])
    if not bool(area.norm(dim=1).sum() > 0):
        raise ValueError(f"{path}: expected faces of positive area, got only degenerate faces")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        out = SamplePoints(num_points, remove_faces=True, include_normals=True)(mesh.clone())
    return out.pos.float(), out.normal.float()


def _resampled_help(raw_dir: Path) -> str:
    return (
        "ModelNet40(source='resampled') reads the PointNet++ 'modelnet40_normal_resampled' "
        "folder, which is not downloaded automatically: get modelnet40_normal_resampled.zip "
        f"(1.6 GB, distributed by the PointNet++ authors) from {RESAMPLED_URL} (often "
        "offline; copies of the same zip circulate, check them against filelist.txt), unzip "
        "it and pass the folder (or its parent) as `root`. Expected in "
        f"{raw_dir}: {_NAMES_FILE}, modelnet40_train.txt, modelnet40_test.txt and "
        "<class>/<class>_NNNN.txt. Alternatively use source='off' (PyG's OFF meshes, "
        "downloaded automatically)."
    )


# --------------------------------------------------------------------------- dataset
class ModelNet40(InMemoryDataset):
    """ModelNet40 point clouds with normals as a PyG ``InMemoryDataset``.

    Args:
        root: for ``"resampled"``, the ``modelnet40_normal_resampled`` folder or its
            parent; for ``"off"``, PyG's ``ModelNet`` root (``<root>/raw/<class>/...``; the
            extracted ``ModelNet40`` folder or its parent also works).
        split: ``"train"`` or ``"test"``.
        source: ``"resampled"`` or ``"off"``.
        num_points: points ``P`` per shape: the first ``P`` of each resampled file
            (``None``: all of them; a file with fewer raises ``ValueError``), or the number
            sampled on each OFF mesh.
        classes: restrict to these class names (``y`` then indexes this subset, kept in
            the official class order); unknown names raise ``ValueError`` listing the
            valid ones.
        transform: applied on every access.
        pre_transform: applied once before caching (part of the cache key).
        force_reload: re-read the raw files even if a cache exists.
        allow_missing: shapes named in the split list but absent on disk raise
            ``FileNotFoundError`` by default; with ``True`` they are skipped and a
            warning gives their count (``self.num_missing``).
        split_dir: folder holding ``modelnet40_<split>.txt`` (default: the data folder).
        processed_dir: where caches go (default ``<root>/processed``); each configuration
            gets its own sub-folder, its files are written atomically.
        seed: base seed of the per-shape surface sampling for ``"off"``.
        pre_filter: PyG's ``pre_filter`` (keep a shape when it returns ``True``).

    Attributes:
        classes: class names; ``y`` indexes this list.
        shape_ids: the shape name of every item (``"airplane_0627"``), in item order, also of
            a subset (``ds[idx]``) or a shuffled copy.
        num_missing: listed shapes skipped because absent on disk.
        num_fixed_normals: resampled normals more than 1% off unit length (re-normalised).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        source: str = "resampled",
        num_points: int | None = 1024,
        classes: Sequence[str] | None = None,
        transform: Callable[[Data], Data] | None = None,
        pre_transform: Callable[[Data], Data] | None = None,
        force_reload: bool = False,
        *,
        allow_missing: bool = False,
        split_dir: str | os.PathLike | None = None,
        processed_dir: str | os.PathLike | None = None,
        seed: int = 0,
        pre_filter: Callable[[Data], bool] | None = None,
    ) -> None:
        if split not in _SPLITS:
            raise ValueError(f"split: expected one of {list(_SPLITS)}, got {split!r}")
        if source not in _SOURCES:
            raise ValueError(f"source: expected one of {list(_SOURCES)}, got {source!r}")
        if num_points is not None or source == "off":
            if not is_int(num_points) or num_points < 1:
                allowed = "a positive int" + (" or None" if source == "resampled" else "")
                raise ValueError(f"num_points: expected {allowed}, got {num_points!r}")
        root = Path(root).expanduser().resolve()  # PyG joins raw file names onto raw_dir
        self.split, self.source, self.num_points = split, source, as_number(num_points)
        self.allow_missing, self.seed = allow_missing, as_number(seed)
        self._raw = self._find_raw_dir(root)
        self.names = self._read_names()
        self.classes = self._select_classes(classes)
        self.split_file: Path | None = None
        if source == "resampled":
            if not self._raw.is_dir():
                raise FileNotFoundError(
                    f"root: data folder {self._raw} does not exist. {_resampled_help(self._raw)}"
                )
            folder = self._raw if split_dir is None else Path(split_dir).expanduser().resolve()
            self.split_file = folder / f"modelnet40_{split}.txt"
            if not self.split_file.is_file():
                raise FileNotFoundError(
                    f"split file {self.split_file} not found (split={split!r}); pass "
                    f"split_dir=<folder with modelnet40_{split}.txt>. " + _resampled_help(self._raw)
                )
        # Set before PyG's __init__, which reads processed_dir (and the cache key).
        self.pre_transform, self.pre_filter = pre_transform, pre_filter
        self._proc_root = Path(processed_dir).expanduser() if processed_dir else root / "processed"
        self._processed = self._processed_folder()
        super().__init__(str(root), transform, pre_transform, pre_filter, force_reload=force_reload)
        self.load(self.processed_paths[1])
        meta = json.loads(Path(self.processed_paths[0]).read_text())
        self._all_shape_ids: list[str] = meta["shape_ids"]
        self.num_missing: int = meta["num_missing"]
        self.num_fixed_normals: int = meta["num_fixed_normals"]
        if self.num_missing:
            warnings.warn(
                f"ModelNet40: {self.num_missing} of {meta['num_listed']} shapes listed in "
                f"{self.split_file} are missing under {self._raw} and were skipped "
                "(allow_missing=True)",
                stacklevel=2,
            )

    # ----------------------------------------------------------------- layout
    def _find_raw_dir(self, root: Path) -> Path:
        def has_classes(folder: Path) -> bool:
            return any((folder / c).is_dir() for c in MODELNET40_CLASSES)

        if self.source == "resampled":
            if (root / _NAMES_FILE).is_file() or has_classes(root):
                return root
            return root / "modelnet40_normal_resampled"
        for candidate in (root / "raw", root / "ModelNet40", root):
            if candidate.is_dir() and has_classes(candidate):
                return candidate
        return root / "raw"

    def _read_names(self) -> list[str]:
        names_file = self._raw / _NAMES_FILE
        if self.source == "resampled" and names_file.is_file():
            names = names_file.read_text().split()
            if not names:
                raise ValueError(f"{names_file}: expected one class name per line, got none")
            return names
        return list(MODELNET40_CLASSES)

    def _select_classes(self, classes: Sequence[str] | None) -> list[str]:
        if classes is None:
            return list(self.names)
        if isinstance(classes, str):
            classes = [classes]
        classes = list(classes)
        unknown = [c for c in classes if c not in self.names]
        if unknown:
            raise ValueError(
                f"classes: unknown class names {unknown}; valid names are {self.names}"
            )
        if not classes or len(set(classes)) != len(classes):
            raise ValueError(f"classes: expected a non-empty list of distinct names, got {classes}")
        return [c for c in self.names if c in classes]

    def _cache_key(self) -> str:
        parts: list[Any] = [
            _CACHE_VERSION,
            self.source,
            self.split,
            self.num_points,
            self.classes,
            self.allow_missing,
            str(self._raw.resolve()),
            transform_fingerprint(self.pre_transform),
            transform_fingerprint(self.pre_filter),
        ]
        if self.split_file is not None:
            content = hashlib.sha1(self.split_file.read_bytes()).hexdigest()
            parts += [str(self.split_file.resolve()), content]
        else:
            parts.append(self.seed)
        # the shape files found, with size and time: a file added, restored or replaced
        # (e.g. the full 10,000-point files) makes a new cache
        for path in self._shape_files():
            stat = path.stat()
            parts.append((path.name, stat.st_size, stat.st_mtime_ns))
        return hashlib.sha1(repr(parts).encode()).hexdigest()[:12]

    def _processed_folder(self) -> Path:
        """The cache folder of this configuration and of the shape files now on disk."""
        return self._proc_root / f"{self.source}_{self.split}_{self._cache_key()}"

    def _shape_files(self) -> list[Path]:
        """The shape files :meth:`process` would read (no warnings)."""
        if self.source == "resampled":
            return [path for _, _, path in self._resampled_items()[0]]
        return [
            path
            for cls in self.classes
            for path in sorted((self._raw / cls / self.split).glob(f"{cls}_*.off"))
        ]

    @property
    def raw_dir(self) -> str:
        return str(self._raw)

    @property
    def processed_dir(self) -> str:
        return str(self._processed)

    @property
    def raw_file_names(self) -> list[str]:
        if self.split_file is not None:
            return [str(self.split_file)]
        present = [c for c in MODELNET40_CLASSES if (self._raw / c).is_dir()]
        return present or list(self.classes)

    @property
    def processed_file_names(self) -> list[str]:
        return ["meta.json", "data.pt"]

    @property
    def shape_ids(self) -> list[str]:
        """The shape name of every item, in item order (follows indexing and shuffling)."""
        return [self._all_shape_ids[i] for i in self.indices()]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    # ----------------------------------------------------------------- download
    def download(self) -> None:
        """``"off"``: fetch PyG's ModelNet40 OFF zip into ``raw_dir``. ``"resampled"``: the
        set is not fetched automatically; raises ``FileNotFoundError`` explaining where to
        get it (:data:`RESAMPLED_URL`)."""
        if self.source == "resampled":
            raise FileNotFoundError(_resampled_help(self._raw))
        parent = self._raw.parent
        fetch_into(OFF_URL, parent)  # complete or not at all
        if self._raw.is_dir() and not any(self._raw.iterdir()):
            self._raw.rmdir()
        os.replace(parent / "ModelNet40", self._raw)
        shutil.rmtree(parent / "__MACOSX", ignore_errors=True)
        # the cache key counts the shape files, which were absent when it was made: without
        # this the next run would find other files, miss this cache and sample every mesh again
        self._processed = self._processed_folder()

    # ----------------------------------------------------------------- process
    def _resampled_items(self) -> tuple[list[tuple[str, int, Path]], int, int]:
        """``(shape_id, label, file)`` of the listed shapes, plus listed and missing counts."""
        assert self.split_file is not None
        items, missing, listed = [], [], 0
        for lineno, line in enumerate(self.split_file.read_text().splitlines(), start=1):
            shape_id = Path(line.strip()).name.removesuffix(".txt")
            if not shape_id:
                continue
            cls = shape_id.rsplit("_", 1)[0]
            if cls not in self.names:
                raise ValueError(
                    f"{self.split_file}, line {lineno}: expected '<class>_NNNN' with a class "
                    f"from {_NAMES_FILE}, got {line.strip()!r}"
                )
            if cls not in self.classes:
                continue
            listed += 1
            path = self._raw / cls / f"{shape_id}.txt"
            if path.is_file():
                items.append((shape_id, self.classes.index(cls), path))
            else:
                missing.append(shape_id)
        if missing and not self.allow_missing:
            raise FileNotFoundError(
                f"ModelNet40: {len(missing)} of {listed} shapes listed in {self.split_file} are "
                f"missing under {self._raw} (first: {missing[:5]}); pass allow_missing=True to "
                "skip them"
            )
        return items, listed, len(missing)

    def _off_items(self) -> tuple[list[tuple[str, int, Path]], int, int]:
        items, absent = [], []
        for label, cls in enumerate(self.classes):
            folder = self._raw / cls / self.split
            if not folder.is_dir():
                absent.append(cls)
                continue
            for path in sorted(folder.glob(f"{cls}_*.off")):
                items.append((path.stem, label, path))
        if absent:
            warnings.warn(
                f"ModelNet40: no folder <class>/{self.split} under {self._raw} for "
                f"{len(absent)} classes ({absent[:5]}...); they have no shapes",
                stacklevel=3,
            )
        return items, len(items), 0

    def process(self) -> None:
        if self.source == "resampled":
            items, listed, num_missing = self._resampled_items()
        else:
            items, listed, num_missing = self._off_items()
        data_list, shape_ids, fixed = [], [], 0
        pre_filter, pre_transform = fresh_hook(self.pre_filter), fresh_hook(self.pre_transform)
        for shape_id, label, path in items:
            if self.source == "resampled":
                pos, normal, bad = read_resampled_file(path, self.num_points)
                fixed += bad
            else:
                seed = (self.seed * 1_000_003 + zlib.crc32(shape_id.encode())) % (2**63)
                pos, normal = _sample_mesh(read_off(path), self.num_points, seed, path)
            data = Data(pos=pos, normal=normal, y=torch.tensor([label], dtype=torch.long))
            if pre_filter is not None and not pre_filter(data):
                continue
            if pre_transform is not None:
                data = pre_transform(data)
            data_list.append(data)
            shape_ids.append(shape_id)
        if not data_list:
            raise ValueError(
                f"ModelNet40: no {self.split} shapes of classes {self.classes[:5]}"
                f"{'...' if len(self.classes) > 5 else ''} found under {self._raw}"
            )
        meta = {
            "classes": self.classes,
            "shape_ids": shape_ids,
            "num_listed": listed,
            "num_missing": num_missing,
            "num_fixed_normals": fixed,
        }
        save_atomic(meta, self.processed_paths[0])
        data, slices = self.collate(data_list)
        save_atomic((data.to_dict(), slices, data.__class__), self.processed_paths[1])

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({len(self)}, split={self.split!r}, source={self.source!r}, "
            f"classes={len(self.classes)})"
        )
