"""`Lattice`: the description of a regular 2D or 3D grid seen as a graph.

Axis conventions (used by every function of :mod:`symgraph.lattice`):

- ``shape`` lists the array axes of a field: ``(H, W)`` in 2D, ``(D, H, W)`` in 3D, so a
  batched field is ``[B, C, H, W]`` / ``[B, C, D, H, W]`` (PyTorch's ``conv2d``/``conv3d``
  layout). Array axes map to Cartesian axes as ``W -> x``, ``H -> y``, ``D -> z``: the row
  index grows with ``y`` and the column index with ``x``.
- ``spacing``, ``radius`` and ``periodic`` are given per array axis in the same order as
  ``shape`` (``(dy, dx)`` / ``(dz, dy, dx)``), or as one value for every axis.
- Positions and offsets are Cartesian ``(x, y, z)`` vectors in physical units
  (``cells * spacing``); a 2D lattice lies in the plane ``z = 0`` so that planar groups
  (rotations about z, reflections in vertical planes) act on it.

Stencils. ``stencil="square"`` (default) keeps every integer offset ``d`` with
``|d_a| <= radius_a`` on each axis (the full ``(2r+1)^dim`` block of a convolution kernel);
``stencil="disc"`` keeps those with ``sum_a (d_a / radius_a)^2 <= 1`` (``|d|_2 <= r`` for one
radius). Radii are in cells.

Validity rules (each raises ``ValueError`` with the argument named):

- a periodic axis needs ``2 * radius + 1 <= size`` (otherwise two offsets reach the same
  neighbour across the wrap and the minimum-image offset is ambiguous);
- a bounded (non-periodic) axis needs ``radius < size``;
- a *non-square* stencil -- per-axis radii that are not all equal, e.g. ``radius=(1, 2)`` --
  is only accepted when every axis is periodic. On bounded lattices the stencil is
  truncated at the edges (cells near an edge have fewer neighbours, matching a zero-padded
  convolution), and the library only supports that truncation for square/cubic stencils.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from symgraph.checks import is_int, is_real

__all__ = ["Lattice", "check_lattice"]

_STENCILS = ("square", "disc")


def _per_axis(value: object, dim: int, name: str) -> tuple:
    if isinstance(value, (tuple, list)):
        if len(value) != dim:
            raise ValueError(
                f"{name}: expected one value or {dim} values (one per axis of shape), "
                f"got {len(value)} values {tuple(value)!r}"
            )
        return tuple(value)
    return (value,) * dim


@dataclass(frozen=True)
class Lattice:
    """A regular grid with a neighbour stencil.

    Args:
        shape: ``(H, W)`` or ``(D, H, W)``, positive integers.
        spacing: cell size, one positive number or one per axis (array order).
        radius: stencil radius in cells, one non-negative integer or one per axis.
        periodic: wrap around, one bool or one per axis.
        stencil: ``"square"`` (``|d|_inf <= r``) or ``"disc"`` (``|d|_2 <= r``).

    After construction every per-axis field is a tuple of length ``dim``.
    """

    shape: tuple[int, ...]
    spacing: float | tuple[float, ...] = 1.0
    radius: int | tuple[int, ...] = 1
    periodic: bool | tuple[bool, ...] = True
    stencil: str = "square"

    def __post_init__(self) -> None:
        shape = self.shape
        if not isinstance(shape, (tuple, list)) or len(shape) not in (2, 3):
            raise ValueError(f"shape: expected (H, W) or (D, H, W), got {shape!r}")
        if not all(is_int(n) and n > 0 for n in shape):
            raise ValueError(f"shape: expected positive integers, got {tuple(shape)!r}")
        dim = len(shape)
        spacing = _per_axis(self.spacing, dim, "spacing")
        if not all(is_real(s) for s in spacing):
            raise ValueError(f"spacing: expected positive finite numbers, got {self.spacing!r}")
        spacing = tuple(float(s) for s in spacing)
        if not all(math.isfinite(s) and s > 0 for s in spacing):
            raise ValueError(f"spacing: expected positive finite numbers, got {spacing!r}")
        radius = _per_axis(self.radius, dim, "radius")
        if not all(is_int(r) and r >= 0 for r in radius):
            raise ValueError(f"radius: expected non-negative integers (cells), got {radius!r}")
        periodic = _per_axis(self.periodic, dim, "periodic")
        if not all(isinstance(p, bool) for p in periodic):
            raise ValueError(f"periodic: expected bools, got {periodic!r}")
        if self.stencil not in _STENCILS:
            raise ValueError(f"stencil: expected one of {_STENCILS}, got {self.stencil!r}")
        object.__setattr__(self, "shape", tuple(int(n) for n in shape))
        object.__setattr__(self, "spacing", spacing)
        object.__setattr__(self, "radius", tuple(int(r) for r in radius))
        object.__setattr__(self, "periodic", tuple(periodic))
        self._validate_stencil()

    def _validate_stencil(self) -> None:
        names = ("D", "H", "W")[-self.dim :]
        if len(set(self.radius)) > 1 and not all(self.periodic):
            bounded = [names[a] for a in range(self.dim) if not self.periodic[a]]
            raise ValueError(
                f"radius: non-square stencil {self.radius!r} on a lattice with bounded "
                f"(non-periodic) axes {bounded}; per-axis radii are only supported when "
                "every axis is periodic -- use one radius, or periodic=True"
            )
        for a in range(self.dim):
            n, r = self.shape[a], self.radius[a]
            if self.periodic[a] and 2 * r + 1 > n:
                raise ValueError(
                    f"radius: stencil radius {r} on periodic axis {names[a]} of size {n} "
                    f"wraps onto itself; expected 2 * radius + 1 <= {n}"
                )
            if not self.periodic[a] and r >= n:
                raise ValueError(
                    f"radius: stencil radius {r} on bounded axis {names[a]} of size {n} "
                    f"reaches past both edges; expected radius < {n}"
                )

    @property
    def dim(self) -> int:
        """Number of spatial axes, 2 or 3."""
        return len(self.shape)

    @property
    def num_cells(self) -> int:
        """Number of cells (nodes per graph), ``prod(shape)``."""
        return math.prod(self.shape)

    @property
    def is_square_stencil(self) -> bool:
        """True when every axis has the same radius."""
        return len(set(self.radius)) == 1

    @property
    def kernel_size(self) -> tuple[int, ...]:
        """Size of the dense convolution kernel holding the stencil, ``2 * radius + 1``."""
        return tuple(2 * r + 1 for r in self.radius)

    @property
    def extent(self) -> tuple[float, ...]:
        """Physical size of the domain per array axis, ``shape * spacing``."""
        return tuple(n * s for n, s in zip(self.shape, self.spacing))


def check_lattice(lattice: object, name: str = "lattice") -> Lattice:
    """``lattice`` if it is a :class:`Lattice`, else a ``TypeError`` naming ``name``."""
    if not isinstance(lattice, Lattice):
        raise TypeError(f"{name}: expected a Lattice, got {type(lattice).__name__}")
    return lattice
