"""The catalog of named subgroups of O(3) (the names users type).

Axis conventions: planar groups act about the z axis; "flip" is the π rotation about the
x axis, ``diag(1, -1, -1)``; the vertical mirror is ``y -> -y``, ``diag(1, -1, 1)``; the
horizontal mirror is ``z -> -z``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from symgraph.checks import is_int
from symgraph.groups.matrix_group import MatrixGroup

__all__ = [
    "Trivial", "Inversion", "Mirror", "C", "D", "SO2", "O2", "O2Dihedral", "O2Conical",
    "SO2Inversion", "O2Full", "Tetrahedral", "Octahedral", "FullOctahedral", "Icosahedral",
    "SO3", "O3", "GROUPS", "ALIASES", "group_from_name", "as_group",
]  # fmt: skip

_EYE = torch.eye(3, dtype=torch.float64)
_INVERSION = -_EYE
_FLIP_X = torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64))
_MIRROR_Z = torch.diag(torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64))
_MIRROR_Y = torch.diag(torch.tensor([1.0, -1.0, 1.0], dtype=torch.float64))


def _skew(axis: tuple[float, float, float]) -> Tensor:
    x, y, z = axis
    return torch.tensor([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]], dtype=torch.float64)


_LX, _LY, _LZ = _skew((1, 0, 0)), _skew((0, 1, 0)), _skew((0, 0, 1))


def _rotation(axis: tuple[float, float, float], angle: float) -> Tensor:
    a = torch.tensor(axis, dtype=torch.float64)
    k = _skew(tuple((a / a.norm()).tolist()))
    return _EYE + math.sin(angle) * k + (1 - math.cos(angle)) * (k @ k)


def Trivial() -> MatrixGroup:  # noqa: N802 - group names are capitalised like classes
    """The trivial group {I}."""
    return MatrixGroup(name="Trivial")


def Inversion() -> MatrixGroup:  # noqa: N802
    """{I, -I}: point reflection through the origin."""
    return MatrixGroup(discrete=[_INVERSION], name="Inversion")


def Mirror() -> MatrixGroup:  # noqa: N802
    """{I, diag(1, 1, -1)}: the reflection z -> -z."""
    return MatrixGroup(discrete=[_MIRROR_Z], name="Mirror")


def C(n: int) -> MatrixGroup:  # noqa: N802
    """Cyclic group of ``n`` rotations about z."""
    n = _check_order(n, "C")
    return MatrixGroup(discrete=[_rotation((0, 0, 1), 2 * math.pi / n)], name=f"C({n})")


def D(n: int) -> MatrixGroup:  # noqa: N802
    """Dihedral group of order ``2n``: C(n) about z plus the π flip about x."""
    n = _check_order(n, "D")
    return MatrixGroup(discrete=[_rotation((0, 0, 1), 2 * math.pi / n), _FLIP_X], name=f"D({n})")


def SO2() -> MatrixGroup:  # noqa: N802
    """All rotations about the z axis."""
    return MatrixGroup(lie=[_LZ], name="SO2")


def O2Dihedral() -> MatrixGroup:  # noqa: N802
    """SO(2) about z plus the π flip about x (z -> -z on the flipped component)."""
    return MatrixGroup(discrete=[_FLIP_X], lie=[_LZ], name="O2Dihedral")


def O2Conical() -> MatrixGroup:  # noqa: N802
    """SO(2) about z plus a mirror through a vertical plane (y -> -y); z stays fixed."""
    return MatrixGroup(discrete=[_MIRROR_Y], lie=[_LZ], name="O2Conical")


def O2() -> MatrixGroup:  # noqa: N802
    """O(2) of the xy plane with z fixed: :func:`O2Conical` under its usual name (its
    reflections are mirrors of the plane; :func:`O2Dihedral` is the other O(2) in O(3))."""
    return O2Conical()


def SO2Inversion() -> MatrixGroup:  # noqa: N802
    """SO(2) about z times {I, -I}."""
    return MatrixGroup(discrete=[_INVERSION], lie=[_LZ], name="SO2Inversion")


def O2Full() -> MatrixGroup:  # noqa: N802
    """The full cylinder group: O(2) (dihedral) about z times {I, -I}."""
    return MatrixGroup(discrete=[_FLIP_X, _INVERSION], lie=[_LZ], name="O2Full")


def Tetrahedral() -> MatrixGroup:  # noqa: N802
    """The 12 rotations of a regular tetrahedron (vertices at alternate cube corners)."""
    return MatrixGroup(
        discrete=[_rotation((0, 0, 1), math.pi), _rotation((1, 1, 1), 2 * math.pi / 3)],
        name="Tetrahedral",
    )


def Octahedral() -> MatrixGroup:  # noqa: N802
    """The 24 rotations of the axis-aligned cube."""
    return MatrixGroup(
        discrete=[_rotation((0, 0, 1), math.pi / 2), _rotation((1, 0, 0), math.pi / 2)],
        name="Octahedral",
    )


def FullOctahedral() -> MatrixGroup:  # noqa: N802
    """The 48 symmetries of the cube: Octahedral times {I, -I}."""
    return MatrixGroup(
        discrete=[
            _rotation((0, 0, 1), math.pi / 2),
            _rotation((1, 0, 0), math.pi / 2),
            _INVERSION,
        ],
        name="FullOctahedral",
    )


def Icosahedral() -> MatrixGroup:  # noqa: N802
    """The 60 rotations of the icosahedron with vertices at cyclic permutations of (0, ±1, ±φ)."""
    phi = (1 + math.sqrt(5)) / 2
    return MatrixGroup(
        discrete=[
            _rotation((0, 1, phi), 2 * math.pi / 5),
            _rotation((1, 1, 1), 2 * math.pi / 3),
        ],
        name="Icosahedral",
    )


def SO3() -> MatrixGroup:  # noqa: N802
    """All rotations."""
    return MatrixGroup(lie=[_LX, _LY, _LZ], name="SO3")


def O3() -> MatrixGroup:  # noqa: N802
    """All rotations and reflections."""
    return MatrixGroup(discrete=[_INVERSION], lie=[_LX, _LY, _LZ], name="O3")


def _check_order(n: object, name: str) -> int:
    """``n`` as a Python int, refused unless an order in ``[1, _MAX_ROTATION_ORDER]``."""
    if not is_int(n) or n < 1:
        raise ValueError(f"{name}(n): `n` must be a positive int, got {n!r}")
    if n > _MAX_ROTATION_ORDER:
        raise ValueError(
            f"{name}(n): `n` at most {_MAX_ROTATION_ORDER} (a finite group's elements are "
            f"listed; use SO2 for the continuous limit), got {n}"
        )
    return int(n)


#: Largest ``n`` of ``C(n)`` and ``D(n)`` (``D(n)`` has ``2n`` elements, within the limit on
#: a finite group's order).
_MAX_ROTATION_ORDER = 5_000


GROUPS = {
    "Trivial": Trivial, "Inversion": Inversion, "Mirror": Mirror, "SO2": SO2,
    "O2Dihedral": O2Dihedral, "O2Conical": O2Conical, "SO2Inversion": SO2Inversion,
    "O2Full": O2Full, "Tetrahedral": Tetrahedral, "Octahedral": Octahedral,
    "FullOctahedral": FullOctahedral, "Icosahedral": Icosahedral, "SO3": SO3, "O3": O3,
}  # fmt: skip
"""Groups without parameters, by name. ``C(n)`` and ``D(n)`` are spelled ``C4``, ``D6`` …"""

ALIASES = {"O2": O2}
"""Other names :func:`group_from_name` takes, for groups of :data:`GROUPS`."""


def group_from_name(name: str) -> MatrixGroup:
    """``"SO3"``, ``"O2Dihedral"``, ``"O2"``, ``"C4"``, ``"D6"`` … -> the group (every
    group's ``name`` is accepted too: ``"C(4)"``).

    Unknown names raise ``ValueError`` listing the valid ones.
    """
    return _lookup(name, "group")


def _lookup(name: str, argument: str) -> MatrixGroup:
    """:func:`group_from_name`, its errors naming ``argument``."""
    if not isinstance(name, str):
        raise TypeError(f"{argument}: expected a group name (str), got {type(name).__name__}")
    factory = GROUPS.get(name) or ALIASES.get(name)
    if factory is not None:
        return factory()
    order = name[2:-1] if name[1:2] == "(" and name.endswith(")") else name[1:]  # C(4) or C4
    if name[:1] in ("C", "D") and _is_order(order):
        return (C if name[0] == "C" else D)(int(order))
    valid = ", ".join([*GROUPS, *ALIASES, "C<n>", "D<n>"])
    raise ValueError(f"{argument}: unknown group name {name!r}; expected one of {valid}")


def _is_order(text: str) -> bool:
    """Whether ``text`` writes a group order as the catalog names do: ASCII digits, no
    leading zero (``"4"``, not ``"04"`` or ``"0"``)."""
    return text.isascii() and text.isdigit() and not text.startswith("0")


def as_group(group: MatrixGroup | str, name: str = "group") -> MatrixGroup:
    """``group`` as a :class:`MatrixGroup`: a catalog name (``"SO3"``, ``"C4"`` …) is looked up
    with :func:`group_from_name`; an unknown name or anything else but a MatrixGroup is
    refused, naming ``name``."""
    if isinstance(group, str):
        return _lookup(group, name)
    if not isinstance(group, MatrixGroup):
        raise TypeError(
            f"{name}: expected a MatrixGroup or a group name (e.g. 'SO3'), got "
            f"{type(group).__name__}"
        )
    return group
