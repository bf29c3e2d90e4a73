"""Fields on a lattice <-> node features, and how field channels carry representations.

A batched field ``[B, C, H, W]`` (or ``[B, C, D, H, W]``) becomes node features
``[B * H * W, C]`` with node ``b * N + flat`` = cell ``flat`` (row-major) of field ``b``, the
node order of :func:`symgraph.lattice.lattice_graph`. :func:`nodes_to_field` is the exact
inverse (a permutation; no arithmetic).

:class:`FieldLayout` says which channels are scalars and which are vectors, with an e3nn
irreps string read as *channel groups in order*: ``"1x0e + 1x1o"`` is one scalar channel
followed by one vector field. Supported irreps are ``0e`` (scalar), ``0o`` (pseudo-scalar,
e.g. 2D vorticity under in-plane reflections), ``1o`` (vector, e.g. velocity) and ``1e``
(axial vector). On a 2D lattice a vector takes two field channels ``(u, v)`` = its ``x`` and
``y`` components and becomes the 3D node feature ``(u, v, 0)``: the standard representation
of R^3 restricted to the planar groups (rotations about z, reflections in vertical planes),
i.e. an e3nn ``1o`` feature in Cartesian ``(x, y, z)`` order (e3nn >= 0.6 uses that basis).
Back to the grid, the ``z`` component is dropped (projection onto the plane). On a 3D
lattice a vector takes three channels ``(u, v, w)`` = ``(x, y, z)``.

Parity follows the mirror: an in-plane reflection acts as the mirror of R³ that fixes z
(``det = -1``), under which ``0o`` and ``1e`` change sign, as 2D vorticity does. The
catalog's ``D(n)`` lies in SO(3) and flips the plane by a half turn about x (``det = +1``),
under which ``0o`` and ``1e`` transform as ``0e`` and ``1o``: a ``D(n)`` model cannot tell
them apart, and is equivariant to :func:`symgraph.lattice.reflect_field` on ``0e``/``1o``
layouts only. For pseudo-scalars use a group whose flip is that mirror, e.g.
``MatrixGroup(discrete=[C(4) generator, diag(1, -1, 1)])`` (C4v, order 8).
"""

from __future__ import annotations

import torch
from torch import Tensor

from symgraph.caching import tensor_cache
from symgraph.checks import check_finite, check_tensor, is_int
from symgraph.lattice.spec import Lattice, check_lattice

__all__ = [
    "field_to_nodes",
    "nodes_to_field",
    "FieldLayout",
    "vector_field_to_nodes",
    "nodes_to_vector_field",
]


def _describe(t: Tensor) -> str:
    return f"tensor of shape {list(t.shape)} and dtype {t.dtype}"


def field_to_nodes(field: Tensor, lattice: Lattice | None = None) -> Tensor:
    """``[B, C, *spatial] -> [B * prod(spatial), C]`` (2D or 3D spatial axes).

    Args:
        field: a batched floating field ``[B, C, H, W]`` or ``[B, C, D, H, W]``; NaN/inf
            raise ``ValueError``.
        lattice: when given, the spatial axes must equal ``lattice.shape``.
    """
    field = check_tensor(field, "field")
    if field.dim() not in (4, 5):
        raise ValueError(f"field: expected [B, C, H, W] or [B, C, D, H, W], got {_describe(field)}")
    if lattice is not None and tuple(field.shape[2:]) != check_lattice(lattice).shape:
        raise ValueError(
            f"field: expected spatial shape {list(lattice.shape)} (the lattice), "
            f"got {_describe(field)}"
        )
    if not field.is_floating_point():
        raise TypeError(f"field: expected a floating-point tensor, got {_describe(field)}")
    check_finite(field, "field")
    channels = field.shape[1]
    return field.movedim(1, -1).reshape(-1, channels)


def nodes_to_field(x: Tensor, lattice: Lattice, batch_size: int = 1) -> Tensor:
    """``[B * N, C] -> [B, C, *lattice.shape]``, the exact inverse of :func:`field_to_nodes`."""
    x = check_tensor(x, "x")
    if not isinstance(lattice, Lattice):
        raise TypeError(f"lattice: expected a Lattice, got {type(lattice).__name__}")
    if not is_int(batch_size) or batch_size < 1:
        raise ValueError(f"batch_size: expected a positive integer, got {batch_size!r}")
    batch_size = int(batch_size)
    rows = batch_size * lattice.num_cells
    if x.dim() != 2 or x.shape[0] != rows:
        raise ValueError(
            f"x: expected shape [{rows}, C] (batch_size {batch_size} x {lattice.num_cells} "
            f"cells of a {list(lattice.shape)} lattice), got {_describe(x)}"
        )
    check_finite(x, "x")
    return x.reshape(batch_size, *lattice.shape, x.shape[1]).movedim(-1, 1).contiguous()


class FieldLayout:
    """Which field channels are scalars and which are vectors.

    Args:
        spec: e3nn irreps string (or ``Irreps``) of channel groups, e.g.
            ``"1x1o + 1x0e"`` for channels ``(u, v, density)`` of a 2D field.
        dim: spatial dimension of the lattice, 2 or 3.

    Attributes:
        irreps: the node-feature representation as an e3nn irreps string.
        field_channels: channels of the grid field (a vector counts ``dim``).
        node_dim: size of a node feature (a vector counts 3).
        node_columns: ``[field_channels]`` node-feature column of each field channel.
        field_slices: the grid-field channels of each field (channel group), in order:
            ``(slice(0, 2), slice(2, 3))`` for velocity and density ``"1x1o + 1x0e"``.
    """

    def __init__(self, spec: str | object, dim: int = 2) -> None:
        from e3nn import o3

        if dim not in (2, 3):
            raise ValueError(f"dim: expected 2 or 3, got {dim!r}")
        try:
            irreps = o3.Irreps(spec)
        except (ValueError, AssertionError, TypeError) as err:
            raise ValueError(
                f"spec: expected an irreps string like '1x0e + 1x1o', got {spec!r}"
            ) from err
        columns: list[int] = []
        kinds: list[tuple[str, int]] = []  # per channel group: (irrep, first column)
        slices: list[slice] = []  # per channel group: its grid-field channels
        col = 0
        for mul, ir in irreps:
            if ir.l > 1:
                raise ValueError(
                    f"spec: irrep {ir} (l={ir.l}) has no grid-field layout; use scalars "
                    f"(0e, 0o) and vectors (1o, 1e), got {spec!r}"
                )
            for _ in range(mul):
                kinds.append((str(ir), col))
                width = 1 if ir.l == 0 else dim
                slices.append(slice(len(columns), len(columns) + width))
                columns.extend(range(col, col + width))
                col += 1 if ir.l == 0 else 3
        self.spec = str(spec)
        self.dim = dim
        self.irreps = str(irreps)
        self.groups = tuple(kinds)
        self.node_dim = col
        self.field_channels = len(columns)
        self.node_columns = torch.tensor(columns, dtype=torch.long)
        self.field_slices = tuple(slices)

    def __repr__(self) -> str:
        return f"FieldLayout({self.irreps!r}, dim={self.dim})"

    def _check_channels(self, field: Tensor) -> None:
        if field.dim() != self.dim + 2:
            raise ValueError(
                f"field: expected a {self.dim}D field [B, C, {'D, ' if self.dim == 3 else ''}"
                f"H, W], got {_describe(field)}"
            )
        if field.shape[1] != self.field_channels:
            raise ValueError(
                f"field: expected {self.field_channels} channels for layout '{self.irreps}' "
                f"on a {self.dim}D grid (a vector takes {self.dim}), got {field.shape[1]} "
                f"({_describe(field)})"
            )

    def to_nodes(self, field: Tensor, lattice: Lattice | None = None) -> Tensor:
        """``[B, C_field, *spatial] -> [B * N, node_dim]`` (2D vectors padded with ``z = 0``)."""
        field = check_tensor(field, "field")
        self._check_channels(field)
        flat = field_to_nodes(field, lattice)
        out = flat.new_zeros(flat.shape[0], self.node_dim)
        out[:, self.node_columns.to(flat.device)] = flat
        return out

    def to_field(self, x: Tensor, lattice: Lattice, batch_size: int = 1) -> Tensor:
        """``[B * N, node_dim] -> [B, C_field, *lattice.shape]`` (2D: vectors' z dropped)."""
        check_lattice(lattice)
        x = check_tensor(x, "x")
        if lattice.dim != self.dim:
            raise ValueError(f"lattice: expected a {self.dim}D lattice, got shape {lattice.shape}")
        if x.dim() != 2 or x.shape[1] != self.node_dim:
            raise ValueError(
                f"x: expected shape [N, {self.node_dim}] for layout '{self.irreps}', "
                f"got {_describe(x)}"
            )
        return nodes_to_field(x[:, self.node_columns.to(x.device)], lattice, batch_size)

    def rho(self, matrix: Tensor) -> Tensor:
        """``[field_channels, field_channels]`` action of an in-plane/3D orthogonal matrix.

        Args:
            matrix: ``[dim, dim]`` orthogonal matrix acting on ``(x, y)`` (2D, understood as
                ``diag(matrix, 1)`` in R^3) or ``(x, y, z)``.

        Scalars ``0e`` are invariant, ``0o`` pick up ``det``, ``1o`` vectors transform by
        the matrix and ``1e`` axial vectors by ``det * matrix``.
        """
        matrix = check_tensor(matrix, "matrix")
        if matrix.shape != (self.dim, self.dim):
            raise ValueError(
                f"matrix: expected shape [{self.dim}, {self.dim}], got {list(matrix.shape)}"
            )
        det = torch.linalg.det(matrix.to(torch.float64)).round().to(matrix.dtype)
        out = torch.zeros(self.field_channels, self.field_channels, dtype=matrix.dtype)
        c = 0
        for ir, _ in self.groups:
            if ir == "0e":
                out[c, c] = 1
                c += 1
            elif ir == "0o":
                out[c, c] = det
                c += 1
            else:
                out[c : c + self.dim, c : c + self.dim] = matrix if ir == "1o" else det * matrix
                c += self.dim
        return out


@tensor_cache(maxsize=1)
def _vector_layout() -> FieldLayout:
    return FieldLayout("1x1o", dim=2)


def vector_field_to_nodes(field: Tensor, lattice: Lattice | None = None) -> Tensor:
    """2D velocity ``[B, 2, H, W]`` with channels ``(u, v)`` -> ``[B*H*W, 3]`` ``(u, v, 0)``."""
    return _vector_layout().to_nodes(field, lattice)


def nodes_to_vector_field(x: Tensor, lattice: Lattice, batch_size: int = 1) -> Tensor:
    """``[B*N, 3]`` Cartesian vectors -> ``[B, 2, H, W]`` channels ``(u, v)`` (z dropped)."""
    return _vector_layout().to_field(x, lattice, batch_size)
