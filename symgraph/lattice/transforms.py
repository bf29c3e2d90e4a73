"""The planar symmetries of a square grid acting on fields: rotations by 90 degrees about z
and reflections, moving both the cells and the channels (vectors rotate with the grid).

With the conventions of :mod:`symgraph.lattice` (column -> x, row -> y, origin at the grid
centre) the transformed field is ``(g . f)(p) = rho(g) f(g^-1 p)``: node values follow the
permutation of cell centres by ``g`` and channels transform by ``FieldLayout.rho``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from symgraph.checks import check_tensor, is_int
from symgraph.lattice.fields import FieldLayout

__all__ = ["rotation_matrix_90", "rotate_field", "reflect_field"]


def rotation_matrix_90(k: int, dim: int = 2, dtype: torch.dtype = torch.float32) -> Tensor:
    """``[dim, dim]`` rotation by ``k * 90`` degrees counter-clockwise about z (x -> y).

    Args:
        k: number of quarter turns (an int; any sign).
        dim: 2 (the ``(x, y)`` plane) or 3 (``z`` fixed).
        dtype: of the matrix.
    """
    if not is_int(k):
        raise TypeError(f"k: expected an int number of quarter turns, got {k!r}")
    if not is_int(dim) or dim not in (2, 3):
        raise ValueError(f"dim: expected 2 or 3, got {dim!r}")
    k = int(k) % 4
    c, s = ((1, 0), (0, 1), (-1, 0), (0, -1))[k]
    m = torch.eye(dim, dtype=dtype)
    m[0, 0], m[0, 1], m[1, 0], m[1, 1] = c, -s, s, c
    return m


def _layout(layout: str | FieldLayout | None, field: Tensor) -> FieldLayout | None:
    if layout is None or isinstance(layout, FieldLayout):
        return layout
    return FieldLayout(layout, dim=field.dim() - 2)


def _apply_channels(field: Tensor, layout: FieldLayout | None, matrix: Tensor) -> Tensor:
    if layout is None:
        return field
    if field.shape[1] != layout.field_channels:
        raise ValueError(
            f"field: expected {layout.field_channels} channels for layout '{layout.irreps}', "
            f"got shape {list(field.shape)}"
        )
    rho = layout.rho(matrix).to(field.dtype).to(field.device)
    return torch.einsum("oc,bc...->bo...", rho, field)


def _check_field(field: object) -> Tensor:
    field = check_tensor(field, "field")
    if field.dim() not in (4, 5):
        raise ValueError(
            f"field: expected [B, C, H, W] or [B, C, D, H, W], got shape {list(field.shape)}"
        )
    return field


def rotate_field(field: Tensor, k: int = 1, layout: str | FieldLayout | None = None) -> Tensor:
    """Rotate a field by ``k * 90`` degrees counter-clockwise about z.

    Args:
        field: ``[B, C, H, W]`` or ``[B, C, D, H, W]`` (``H == W`` when ``k`` is odd).
        k: number of quarter turns (x axis towards y axis).
        layout: channel layout; ``None`` treats every channel as a scalar.

    Returns:
        the rotated field, same shape.
    """
    field = _check_field(field)
    if not is_int(k):
        raise TypeError(f"k: expected an int number of quarter turns, got {k!r}")
    k = int(k)
    if k % 2 and field.shape[-1] != field.shape[-2]:
        raise ValueError(f"field: a quarter turn needs H == W, got shape {list(field.shape)}")
    layout = _layout(layout, field)
    # (g.f)[i, j] = f[g^-1 (i, j)]; with row -> y and column -> x, a turn from x towards y
    # is torch.rot90 from the last (x) axis towards the second to last (y) axis.
    moved = torch.rot90(field, k, dims=(-1, -2))
    matrix = rotation_matrix_90(k, field.dim() - 2, torch.float64)
    return _apply_channels(moved, layout, matrix)


def reflect_field(
    field: Tensor, axis: str = "x", layout: str | FieldLayout | None = None
) -> Tensor:
    """Reflect a field in the plane ``axis = 0`` (``"x"``: x -> -x, ``"y"``: y -> -y).

    The reflection is a mirror (``det = -1``): ``0o`` and ``1e`` channels change sign. The
    catalog's ``D(n)`` realises the flip as a half turn (``det = +1``) instead, so its
    models match this on ``0e``/``1o`` channels only (see :mod:`symgraph.lattice.fields`).

    Args:
        field: ``[B, C, H, W]`` or ``[B, C, D, H, W]``.
        axis: ``"x"`` or ``"y"`` (``"z"`` also for 3D fields).
        layout: channel layout; ``None`` treats every channel as a scalar.
    """
    field = _check_field(field)
    dim = field.dim() - 2
    axes = {"x": 0, "y": 1, "z": 2}
    if axis not in axes or axes[axis] >= dim:
        raise ValueError(f"axis: expected one of {list(axes)[:dim]}, got {axis!r}")
    layout = _layout(layout, field)
    moved = field.flip(-1 - axes[axis])
    matrix = torch.eye(dim, dtype=torch.float64)
    matrix[axes[axis], axes[axis]] = -1
    return _apply_channels(moved, layout, matrix)
