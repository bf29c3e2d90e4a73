"""Compact matrix groups G ≤ O(3) given by generators.

A group is described by *discrete generators* (orthogonal 3×3 matrices) and *Lie-algebra
generators* (skew-symmetric 3×3 matrices). The Lie generators span the Lie algebra of the
identity component ``G0`` (the trivial group, rotations about one axis, or SO(3)); the
discrete generators add the other components. Everything the library needs follows from
this description: constraint equations for equivariant maps (one per generator), Haar
sampling (``G0`` sampled uniformly times a uniform coset representative) and, for finite
groups, the list of elements.

A finite group given by generators accurate only to ``atol`` (float32, a few decimals) is
*snapped* onto the exact group nearest them: its elements are averaged over the group
(Kazhdan's averaging, each step squaring the error) and conjugated back onto the given
generators until products of generators and elements land on elements to float64
rounding. Inexact generators generate a dense subgroup of rotations in exact arithmetic,
whose constraints would silently remove equivariant maps; the snapped group has the exact
group's maps, and everything downstream (``rho``, the basis, ``sample``, equality) sees an
exact group.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from symgraph.checks import as_number, is_int, is_real

__all__ = ["MatrixGroup", "check_elements"]

_MAX_COMPONENTS = 10_000
#: Products of generators closer than this (Frobenius norm), or than their drift when that
#: is larger, are the same group element.
_SAME_ELEMENT = 1e-6
#: Two products of ``w`` generators accurate to ``atol`` (largest entry; 3 atol in the
#: Frobenius norm) lie within ``_DRIFT * w * atol`` of each other when they are one element.
_DRIFT = 6
#: Rounding of one float64 product of orthogonal 3×3 matrices, generously (largest entry);
#: an element ``w`` products deep is exact when it is off by at most ``w`` of these.
_ROUNDING = 16 * torch.finfo(torch.float64).eps
#: Averaging steps allowed to snap a nearly closed finite group onto an exact one (each
#: squares the error: 1e-7, 1e-14, rounding).
_SNAP_STEPS = 8
#: Conjugations moving a finite group's generators less than this (relative) commute with it.
_NULL_DIRECTION = 1e-8
#: Orthogonality errors up to this look like rounding (float32, a few decimals) ...
_ROUNDED = 1e-4
#: ... and the error message says what to do about them.
_ROUNDED_HINT = (
    "; a rounded orthogonal matrix (float32 rounds to ~1e-7)? Give the generators in float64, "
    "or pass atol= their accuracy (e.g. atol=1e-6 for float32): a finite group is then "
    "snapped onto the exact group"
)


def check_elements(g: object, name: str = "g") -> Tensor:
    """``g`` must be a floating tensor of group elements ``[B, 3, 3]``."""
    if not isinstance(g, Tensor):
        raise TypeError(f"{name}: expected a tensor of group elements [B, 3, 3], got {type(g)}")
    if g.dim() != 3 or g.shape[1:] != (3, 3):
        raise ValueError(f"{name}: expected group elements of shape [B, 3, 3], got {list(g.shape)}")
    if not g.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got dtype {g.dtype}")
    return g


def _as_matrices(mats: Sequence | Tensor, name: str) -> Tensor:
    if isinstance(mats, Tensor) and mats.dim() == 2:
        mats = mats[None]
    out = torch.as_tensor(
        [torch.as_tensor(m, dtype=torch.float64).tolist() for m in mats]
        if not isinstance(mats, Tensor)
        else mats.tolist(),
        dtype=torch.float64,
    )
    if out.numel() == 0:
        return torch.zeros(0, 3, 3, dtype=torch.float64)
    if out.dim() != 3 or out.shape[1:] != (3, 3):
        raise ValueError(f"{name}: expected a list of 3x3 matrices, got shape {list(out.shape)}")
    return out


def _rotation_about(axis: Tensor, angle: Tensor) -> Tensor:
    """Rodrigues' formula: rotations ``[B, 3, 3]`` by ``angle [B]`` about unit ``axis [3]``."""
    k = torch.zeros(3, 3, dtype=axis.dtype)
    k[0, 1], k[0, 2], k[1, 2] = -axis[2], axis[1], -axis[0]
    k = k - k.T
    s, c = torch.sin(angle)[:, None, None], torch.cos(angle)[:, None, None]
    eye = torch.eye(3, dtype=axis.dtype)
    return eye + s * k + (1 - c) * (k @ k)


def _distances(a: Tensor, b: Tensor) -> Tensor:
    """Exact pairwise Euclidean distances (not cdist's matrix-product form, whose rounding
    would blur the small distances told apart here)."""
    return torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist")


def _haar_so3(n: int, generator: torch.Generator | None) -> Tensor:
    q = torch.randn(n, 4, generator=generator, dtype=torch.float64)
    q = q / q.norm(dim=1, keepdim=True)
    w, x, y, z = q.unbind(1)
    rows = [
        1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
        2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
        2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y),
    ]  # fmt: skip
    return torch.stack(rows, dim=1).reshape(n, 3, 3)


class _Closure(NamedTuple):
    """A finite group's elements, found breadth first from its ``k`` generators.

    ``elements [n, 3, 3]`` (identity first); ``starts``: where each breadth-first level
    (word length) begins; ``table [k, n]``: the index of ``generators[s] @ elements[j]``.
    """

    elements: Tensor
    starts: list[int]
    table: Tensor


def _match(products: Tensor, elements: Tensor, same: float) -> tuple[Tensor, Tensor]:
    """Where ``products [P, 9]`` lie among ``elements [n, 9]`` followed by the new products.

    Returns ``index [P]`` and ``fresh [m]``, the positions of the new elements: products
    farther than ``same`` from every element and from every earlier new product (of near
    products, the first is kept).
    """
    distance, index = _distances(products, elements).min(1)
    new = (distance > same).nonzero().squeeze(1)
    if len(new) <= 1:
        index[new] = len(elements)
        return index, new
    near = _distances(products[new], products[new]) <= same  # diagonal: True
    first = near.int().argmax(1)  # the earliest new product near each (itself at worst)
    kept = first == torch.arange(len(new))
    index[new] = len(elements) - 1 + torch.cumsum(kept, 0)[first]
    return index, new[kept]


def _finite_closure(generators: Tensor, atol: float) -> _Closure:
    """Every product of ``generators [k, 3, 3]``, breadth first (element-major), identity
    first. Products of ``w`` generators closer than ``_SAME_ELEMENT`` or their drift
    ``_DRIFT * w * atol`` (Frobenius) are one element, so generators given to ``atol`` (a
    decimal expansion, float32) close on the true group rather than on rounding noise;
    distinct elements of the groups allowed (at most ``_MAX_COMPONENTS``) lie at least
    ~1e-3 apart."""
    k = len(generators)
    elements = torch.eye(3, dtype=torch.float64).reshape(1, 9)
    rows, starts = [torch.zeros(0, k, dtype=torch.int64)], [0, 1]
    while starts[-1] > starts[-2] and k:
        frontier = elements[starts[-2] :].reshape(-1, 3, 3)
        products = (generators[None] @ frontier[:, None]).reshape(-1, 9)  # [F * k, 9]
        same = max(_SAME_ELEMENT, _DRIFT * atol * (len(starts) - 1))  # words of this length
        index, fresh = _match(products, elements, same)
        rows.append(index.reshape(-1, k))
        elements = torch.cat([elements, products[fresh]])
        starts.append(len(elements))
        if len(elements) > _MAX_COMPONENTS:
            raise ValueError(
                f"discrete: the generators produce more than {_MAX_COMPONENTS} elements; "
                "expected generators of a finite group (an irrational rotation angle?)"
            )
    return _Closure(elements.reshape(-1, 3, 3), starts, torch.cat(rows).T)


def _rebuild(generators: Tensor, closure: _Closure) -> Tensor:
    """The elements ``[n, 3, 3]`` that ``generators [k, 3, 3]`` give along the closure's
    words: element ``i`` is ``generators[s] @ elements[j]`` for the first ``(j, s)``
    (element-major, as the closure found it) with ``table[s, j] = i``."""
    k, n = closure.table.shape
    position = torch.arange(k * n).reshape(n, k).T  # [k, n]: where the closure met each product
    first = torch.full((n,), k * n).scatter_reduce(
        0, closure.table.flatten(), position.flatten(), "amin"
    )
    parent, letter = first // k, first % k
    elements = torch.empty_like(closure.elements)
    elements[0] = torch.eye(3, dtype=torch.float64)
    for start, stop in zip(closure.starts[1:-1], closure.starts[2:]):
        elements[start:stop] = generators[letter[start:stop]] @ elements[parent[start:stop]]
    return elements


def _defect(generators: Tensor, elements: Tensor, table: Tensor) -> float:
    """How far ``generators [k, 3, 3]`` and ``elements [n, 3, 3]`` are from an exact group:
    the largest entry of ``generators[s] @ elements[j] - elements[table[s, j]]`` and of
    ``g^T g - I`` over the generators."""
    products = generators[:, None] @ elements[None]  # [k, n, 3, 3]
    eye = torch.eye(3, dtype=torch.float64)
    return max(
        float((products - elements[table]).abs().max()),
        float((generators.transpose(1, 2) @ generators - eye).abs().max()),
    )


def _polar(m: Tensor) -> Tensor:
    """The orthogonal polar factor ``U Vᵀ`` of each of ``m [k, 3, 3]`` (the nearest
    orthogonal matrix)."""
    u, _, vh = torch.linalg.svd(m)
    return u @ vh


def _nearest_conjugate(generators: Tensor, target: Tensor) -> Tensor:
    """``Q generators Qᵀ [k, 3, 3]`` for the rotation ``Q`` that brings them nearest to
    ``target [k, 3, 3]`` (least squares): one Gauss–Newton step, ``Q = exp(X)`` with
    ``[X, generators] ≈ target - generators``. The exact groups near an exact finite group
    are its conjugates (finite groups are rigid), so this picks the one nearest ``target``;
    directions that commute with the group (its centraliser) are left alone."""
    # [3, 3, 3]: the generators of rotations about x, y and z
    basis = torch.tensor(
        [[[0, 0, 0], [0, 0, -1], [0, 1, 0]], [[0, 0, 1], [0, 0, 0], [-1, 0, 0]],
         [[0, -1, 0], [1, 0, 0], [0, 0, 0]]], dtype=torch.float64,
    )  # fmt: skip
    jacobian = (basis[:, None] @ generators - generators @ basis[:, None]).reshape(3, -1).T
    x = torch.linalg.pinv(jacobian, rtol=_NULL_DIRECTION) @ (target - generators).reshape(-1)
    q = torch.linalg.matrix_exp(torch.einsum("a,aij->ij", x, basis))
    return q @ generators @ q.T


def _snap(generators: Tensor, closure: _Closure, atol: float) -> tuple[Tensor, Tensor]:
    """Generators ``[k, 3, 3]`` and elements ``[n, 3, 3]`` of the exact group nearest the
    closure of ``generators``: each generator ``s`` is replaced by the orthogonal polar
    factor of Kazhdan's average ``n⁻¹ Σ_j E[s·j] E[j]⁻¹`` (exact for an exact group; it
    squares the error of a nearly exact one), the result conjugated onto the given
    generators, and the elements are rebuilt along the words, until the group is exact to
    float64 rounding. An exact group comes back unchanged."""
    tolerance = _ROUNDING * len(closure.starts)  # rounding adds up along the longest words
    given, elements, table = generators, closure.elements, closure.table
    defect, steps = _defect(generators, elements, table), 0
    while defect > tolerance:
        if steps == _SNAP_STEPS:
            raise ValueError(
                f"discrete: expected generators of a finite group accurate to atol={atol:g}; "
                f"their {len(elements)} products do not close on a group (still off by "
                f"{defect:.2e} after {steps} averaging steps); give more accurate generators "
                "or a smaller atol"
            )
        average = (elements[table] @ torch.linalg.inv(elements)[None]).mean(1)  # [k, 3, 3]
        generators = _nearest_conjugate(_polar(average), given)
        elements = _rebuild(generators, closure)
        defect, steps = _defect(generators, elements, table), steps + 1
    return generators, elements


class MatrixGroup:
    """A compact subgroup of O(3), generated by discrete and Lie-algebra generators.

    Args:
        discrete: orthogonal 3×3 matrices generating the discrete part (list or ``[k, 3, 3]``).
        lie: skew-symmetric 3×3 matrices spanning the Lie algebra of the identity component.
        name: a readable name for ``repr``.
        atol: how accurate the generators are (largest entry of ``g^T g - I``, ``A + A^T``);
            e.g. ``1e-6`` for float32 generators. A finite group's generators are then
            snapped onto an exact group within about ``atol`` of them: ``discrete_generators``
            and ``elements()`` are the snapped ones (an exact group's stay as given).

    Raises:
        ValueError: a generator is not 3×3, not orthogonal (discrete) or not skew (lie); the
            Lie generators do not span a subalgebra of so(3) (dimension 0, 1 or 3); a
            discrete generator does not normalise the identity component (the group it would
            generate is not the closed group described); or finite-group generators do not
            close on a group to within ``atol``.
    """

    def __init__(
        self,
        discrete: Sequence | Tensor = (),
        lie: Sequence | Tensor = (),
        name: str | None = None,
        atol: float = 1e-9,
    ) -> None:
        if not is_real(atol) or not 0 < atol < math.inf:
            raise ValueError(
                "atol: expected a positive number (how accurate the generators are, e.g. 1e-6 "
                f"for float32), got {atol!r}"
            )
        atol = as_number(atol)
        self.discrete_generators = _as_matrices(discrete, "discrete")
        self.lie_generators = _as_matrices(lie, "lie")
        eye = torch.eye(3, dtype=torch.float64)
        for i, g in enumerate(self.discrete_generators):
            err = float((g.T @ g - eye).abs().max())
            if not err <= atol:  # NaN included
                raise ValueError(
                    f"discrete[{i}]: expected an orthogonal matrix (g^T g = I to atol={atol:g}), "
                    f"got an error of {err:.2e}" + (_ROUNDED_HINT if err <= _ROUNDED else "")
                )
        for i, a in enumerate(self.lie_generators):
            err = float((a + a.T).abs().max())
            if not err <= atol or not bool(torch.isfinite(a).all()):
                raise ValueError(
                    f"lie[{i}]: expected a skew-symmetric matrix (A^T = -A), "
                    f"got an error of {err:.2e}"
                )
        self.name = name or "MatrixGroup"
        self._atol = atol
        self.lie_dim = self._lie_dimension()
        self._axis = self._lie_axis() if self.lie_dim == 1 else None
        self._check_normalises()
        if self.is_finite:
            self.discrete_generators, self._components = self._exact_finite_group()
        else:
            self._components = self._coset_representatives()

    # ----------------------------------------------------------------- structure
    def _lie_dimension(self) -> int:
        if len(self.lie_generators) == 0:
            return 0
        norms = self.lie_generators.reshape(-1, 9).norm(dim=1)
        if not bool((norms > 0).all()):
            zero = int((norms > 0).logical_not().nonzero()[0])
            raise ValueError(f"lie[{zero}]: expected a non-zero skew-symmetric matrix, got zeros")
        # relative to the generators' size: tiny generators span as much as large ones
        rank = int(torch.linalg.matrix_rank(self.lie_generators.reshape(-1, 9) / norms.max(),
                                            tol=1e-8))  # fmt: skip
        if rank == 2:
            raise ValueError(
                "lie: expected generators spanning a Lie subalgebra of so(3) "
                "(dimension 0, 1 or 3), "
                "got a 2-dimensional span (two independent rotation axes generate all of SO(3))"
            )
        return rank

    def _lie_axis(self) -> Tensor:
        a = self.lie_generators[int(self.lie_generators.reshape(-1, 9).norm(dim=1).argmax())]
        axis = torch.stack([a[2, 1], a[0, 2], a[1, 0]])
        return axis / axis.norm()

    def _check_normalises(self) -> None:
        if self.lie_dim != 1:
            return
        for i, g in enumerate(self.discrete_generators):
            image = g @ self._axis
            if (
                float(torch.minimum((image - self._axis).norm(), (image + self._axis).norm()))
                > 1e-8
            ):
                raise ValueError(
                    f"discrete[{i}]: expected a matrix mapping the rotation axis "
                    f"{self._axis.tolist()} to ±itself (so the group stays closed), got one that "
                    "moves it; add Lie generators instead if the group is meant to be larger"
                )

    def _component_key(self, g: Tensor) -> tuple:
        """The component of G/G0 holding ``g`` (continuous groups: a few discrete signs)."""
        det = int(torch.sign(torch.linalg.det(g)))
        if self.lie_dim == 3:
            return (det,)
        return (det, int(torch.sign(self._axis @ (g @ self._axis))))

    def _coset_representatives(self) -> Tensor:
        """Elements of the closure of the discrete generators, one per component of G/G0
        (continuous groups; a finite group's are its elements)."""
        eye = torch.eye(3, dtype=torch.float64)
        found = {self._component_key(eye): eye}
        frontier = [eye]
        while frontier:
            new = []
            for h in frontier:
                for s in self.discrete_generators:
                    g = s @ h
                    key = self._component_key(g)
                    if key not in found:
                        found[key] = g
                        new.append(g)
            if len(found) > _MAX_COMPONENTS:
                raise ValueError(
                    f"discrete: the generators produce more than {_MAX_COMPONENTS} elements; "
                    "expected generators of a finite group (an irrational rotation angle?)"
                )
            frontier = new
        return torch.stack(list(found.values()))

    def _exact_finite_group(self) -> tuple[Tensor, Tensor]:
        """Generators ``[k, 3, 3]`` and elements ``[order, 3, 3]`` of the finite group, snapped
        onto an exact group when the generators are accurate only to ``atol`` (an exact
        group's come back as computed)."""
        generators = self.discrete_generators
        closure = _finite_closure(generators, self._atol)
        if not len(generators):
            return generators, closure.elements
        return _snap(generators, closure, self._atol)

    # ----------------------------------------------------------------- public API
    @property
    def is_finite(self) -> bool:
        """True when the group has finitely many elements (no Lie generators)."""
        return self.lie_dim == 0

    @property
    def order(self) -> int | float:
        """Number of elements (``math.inf`` for continuous groups)."""
        return len(self._components) if self.is_finite else math.inf

    @property
    def num_components(self) -> int:
        """Number of connected components ``|G / G0|``."""
        return len(self._components)

    def elements(self, dtype: torch.dtype = torch.float64) -> Tensor:
        """All elements ``[order, 3, 3]`` of a finite group (identity first)."""
        if not self.is_finite:
            raise ValueError(f"elements(): {self!r} is continuous; use sample(n) instead")
        return self._components.to(dtype)

    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        stratified: bool = False,
    ) -> Tensor:
        """``n`` Haar-random elements ``[n, 3, 3]`` (uniform over the elements when finite),
        of ``dtype`` (default: torch's default dtype), computed in float64.

        With ``stratified``, element ``i`` is uniform on the ``i mod num_components``-th
        coset of the identity component instead of on the whole group, so ``n >=
        num_components`` samples try every component (for O(3), rotations and improper
        rotations alternate; for a finite group, the elements in turn)."""
        if not is_int(n) or n < 0:
            raise ValueError(f"sample: `n` must be a non-negative int, got {n!r}")
        n = int(n)
        if stratified:
            pick = torch.arange(n) % len(self._components)
        else:
            pick = torch.randint(len(self._components), (n,), generator=generator)
        coset = self._components[pick]
        if self.lie_dim == 3:
            g0 = _haar_so3(n, generator)
        elif self.lie_dim == 1:
            angle = 2 * math.pi * torch.rand(n, generator=generator, dtype=torch.float64)
            g0 = _rotation_about(self._axis, angle)
        else:
            g0 = torch.eye(3, dtype=torch.float64).expand(n, 3, 3)
        dtype = torch.get_default_dtype() if dtype is None else dtype
        return (g0 @ coset).to(dtype=dtype, device=device)

    def identity(self, dtype: torch.dtype = torch.float64) -> Tensor:
        """The identity ``[3, 3]``."""
        return torch.eye(3, dtype=dtype)

    @property
    def key(self) -> tuple:
        """A hashable description used for equality and caching."""
        disc = tuple(torch.round(self.discrete_generators * 1e8).to(torch.int64).flatten().tolist())
        lie = tuple(torch.round(self.lie_generators * 1e8).to(torch.int64).flatten().tolist())
        return (self.name, disc, lie)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MatrixGroup) and self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)

    def __repr__(self) -> str:
        if self.is_finite:
            return f"{self.name} (finite, order {self.order})"
        kind = {1: "rotations about an axis", 3: "all rotations"}[self.lie_dim]
        return f"{self.name} (continuous: {kind}, {self.num_components} component(s))"
