"""The space of equivariant linear maps Hom_G(ρ_in, ρ_out), solved block by block.

For one pair of blocks ``(a, b)`` the maps ``W: a -> b`` with ``ρ_b(h) W = W ρ_a(h)`` for
every discrete generator ``h`` and ``dρ_b(A) W = W dρ_a(A)`` for every Lie generator ``A``
form the nullspace of a stacked constraint matrix (the method of Finzi, Welling and
Wilson, 2021). When a finite group permutes the coordinates of both blocks (regular
representations, their products, ``0e``), the maps are spanned by the indicators of the
orbits of index pairs, read off directly; when it permutes those of one block only, a map
is determined by one row (or column) per orbit of that block's coordinates, any vector
that the orbit's stabiliser fixes. Another large block of a finite group is instead the
image of the group average ``|G|⁻¹ Σ_g ρ_b(g) W ρ_a(g)⁻¹``, far cheaper than an SVD of
``(d_a d_b)²`` entries. Each span is solved once per distinct ``(G, a, b)`` and cached.
A map between direct sums is a choice of ``[mul_b, mul_a, n_ab]`` coefficients for every
block pair, so even large representations cost only a few small solves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from symgraph.caching import outside_inference_mode
from symgraph.groups.matrix_group import MatrixGroup
from symgraph.groups.rep import Block, ProductBlock, Rep

__all__ = [
    "block_hom_basis", "equivariant_basis", "EquivariantBasis", "BlockPair", "clear_cache",
    "bilinear_basis", "BilinearBasis", "BlockTriple",
]  # fmt: skip

_NULL_TOL = 1e-8
_AVERAGING_MIN_UNKNOWNS = 256  # smaller blocks keep the constraint SVD
_AVERAGING_OVERSAMPLE = 8  # Gaussian matrices averaged beyond the rank n


def _solve(group: MatrixGroup, block_in: Block, block_out: Block) -> Tensor:
    if group.is_finite:
        basis = _solve_by_orbits(group, block_in, block_out)
        if basis is not None:
            return basis
    if _averaging_is_cheaper(group, block_in.dim, block_out.dim):
        basis = _solve_by_averaging(group, block_in, block_out)
        if basis is not None:
            return _canonical(basis)
    return _solve_by_constraints(group, block_in, block_out)


def _averaging_is_cheaper(group: MatrixGroup, d_in: int, d_out: int) -> bool:
    """Whether averaging over a finite group's elements beats the SVD of the generator
    constraints: ``~|G| n D (d_in + d_out)`` against ``~k D³`` flops for ``D = d_in d_out``
    unknowns, ``n <= D`` solutions and ``k`` generators. Small blocks keep the SVD."""
    if not group.is_finite or d_in * d_out < _AVERAGING_MIN_UNKNOWNS:
        return False
    unknowns = d_in * d_out
    solutions = min(d_in, d_out) + _AVERAGING_OVERSAMPLE  # a guess at n + 8 before the characters
    averaging = group.order * solutions * unknowns * (d_in + d_out)
    constraints = max(1, len(group.discrete_generators)) * unknowns**3
    return averaging < constraints


def _solve_by_averaging(group: MatrixGroup, block_in: Block, block_out: Block) -> Tensor | None:
    """Rows ``[n, d_out, d_in]`` spanning Hom_G(block_in, block_out) of a finite group, by
    the group average ``P(W) = |G|⁻¹ Σ_g ρ_out(g) W ρ_in(g)⁻¹``, the projection onto the
    equivariant maps. Its rank ``n = |G|⁻¹ Σ_g χ_out(g) χ_in(g⁻¹)`` comes from the
    characters; ``n + 8`` Gaussian matrices are averaged and their span's leading ``n``
    directions kept. ``None`` when the characters or the spectrum do not give a clean
    rank, or the result fails the generators' constraints (the caller then solves those)."""
    elements = group.elements()
    r_in, r_out = block_in.rho(elements), block_out.rho(elements)
    r_in_inverse = torch.linalg.inv(r_in)
    characters = torch.einsum("gii->g", r_out) * torch.einsum("gii->g", r_in_inverse)
    expected = float(characters.sum()) / len(elements)
    n = round(expected)
    if abs(expected - n) > 1e-6:
        return None
    d_out, d_in = block_out.dim, block_in.dim
    if n == 0:
        return torch.zeros(0, d_out, d_in, dtype=torch.float64)
    if n == d_out * d_in:  # every map is equivariant (the trivial group, or one acting so)
        return torch.eye(n, dtype=torch.float64).reshape(n, d_out, d_in)
    draws = torch.Generator().manual_seed(0)
    samples = torch.randn(
        n + _AVERAGING_OVERSAMPLE, d_out, d_in, generator=draws, dtype=torch.float64
    )
    average = torch.zeros_like(samples)
    for rho_out, rho_in_inverse in zip(r_out, r_in_inverse):
        average += rho_out @ samples @ rho_in_inverse
    _, s, vh = torch.linalg.svd(average.reshape(len(samples), -1), full_matrices=False)
    if not float(s[n - 1]) > 1e3 * float(s[n]) + _NULL_TOL * float(s[0]):
        return None
    basis = vh[:n].reshape(n, d_out, d_in)
    generators = group.discrete_generators
    if len(generators):
        r_in, r_out = block_in.rho(generators)[:, None], block_out.rho(generators)[:, None]
        if not float((r_out @ basis - basis @ r_in).abs().max()) < _NULL_TOL:
            return None
    return basis


def _permutations(rho: Tensor) -> Tensor | None:
    """``[|G|, d]`` images ``ρ(g) e_j = e_{images[g, j]}`` of ``rho [|G|, d, d]``, or ``None``
    when some ``ρ(g)`` is not a permutation matrix (regular blocks, their products and ``0e``
    are)."""
    ones = rho == 1
    if not bool((ones | (rho == 0)).all()):
        return None
    if not (bool((ones.sum(1) == 1).all()) and bool((ones.sum(2) == 1).all())):
        return None
    return ones.to(torch.uint8).argmax(dim=1)  # the row of column j's one


def _solve_by_orbits(group: MatrixGroup, block_in: Block, block_out: Block) -> Tensor | None:
    """The canonical basis (:func:`_canonical`) of Hom_G(block_in, block_out) when G acts
    on at least one block by permutation matrices, else ``None``.

    When both blocks are permuted, ``W`` is equivariant exactly when it is constant on each
    orbit of the index pairs ``(i, j) -> (π_out(g) i, π_in(g) j)``, so the normalised orbit
    indicators span the maps. Their supports are disjoint; in the order of their first
    entries they are already the reduced row echelon form and its Gram–Schmidt basis, i.e.
    the basis the other solvers reach through averaging and a reduced row echelon form (75 s
    and 4 GB for ``regular ⊗ regular -> regular`` of the octahedral group, against 0.2 s
    here), found from ``|G| d_in d_out`` integers. When only one block is permuted,
    :func:`_solve_by_row_orbits` or :func:`_solve_by_column_orbits` solve one small
    stabiliser problem per orbit of its coordinates."""
    elements = group.elements()
    rho_in, rho_out = block_in.rho(elements), block_out.rho(elements)
    images_in, images_out = _permutations(rho_in), _permutations(rho_out)
    if images_in is None and images_out is None:
        return None
    if images_in is not None and images_out is not None:
        return _solve_by_pair_orbits(images_in, images_out)
    if images_in is None:
        basis = _solve_by_row_orbits(images_out, rho_in)
    else:
        basis = _solve_by_column_orbits(images_in, rho_out)
    # as in _gram_schmidt: rounding of ρ (its identity included) is no entry of the basis
    basis[basis.abs() < 1e-14] = 0.0
    return basis


def _solve_by_pair_orbits(images_in: Tensor, images_out: Tensor) -> Tensor:
    """The normalised indicators ``[n, d_out, d_in]`` of the orbits of index pairs, when G
    permutes both blocks (``images_in [|G|, d_in]``, ``images_out [|G|, d_out]``)."""
    d_out, d_in = images_out.shape[1], images_in.shape[1]
    pairs = images_out[:, :, None] * d_in + images_in[:, None, :]  # [|G|, d_out, d_in]
    # the orbit of a pair is its images under every element: name it by its smallest
    first = pairs.reshape(len(pairs), -1).amin(dim=0)
    orbits, orbit_of = torch.unique(first, sorted=True, return_inverse=True)
    size = torch.bincount(orbit_of, minlength=len(orbits)).to(torch.float64)
    basis = torch.zeros(len(orbits), d_out * d_in, dtype=torch.float64)
    columns = torch.arange(d_out * d_in)
    basis[orbit_of, columns] = size.rsqrt()[orbit_of]
    return basis.reshape(-1, d_out, d_in)


def _orbits(images: Tensor) -> list[tuple[Tensor, Tensor, Tensor]]:
    """The orbits of the points ``0..d-1`` permuted by ``images [|G|, d]``
    (``g·j = images[g, j]``), each as ``(points [m], cosets [m], stabiliser [|G|/m])``:
    its points in increasing order (the first, ``x0``, names the orbit), for each point
    ``x`` the index of the first element with ``g·x0 = x`` (the identity for ``x0``: the
    elements start with it), and the indices of the elements fixing ``x0``. In increasing
    order of ``x0``."""
    count = len(images)
    elements = torch.arange(count)
    orbits = []
    for x0 in torch.unique(images.amin(dim=0)).tolist():  # an orbit's smallest point
        targets = images[:, x0]
        points = torch.unique(targets)  # sorted
        first = torch.full((images.shape[1],), count).scatter_reduce(
            0, targets, elements, reduce="amin"
        )
        orbits.append((points, first[points], elements[targets == x0]))
    return orbits


def _fixed_space(rho: Tensor) -> Tensor:
    """Orthonormal rows ``[k, d]`` spanning the vectors that every ``ρ(h)`` of
    ``rho [|H|, d, d]`` fixes, ``H`` a subgroup acting orthogonally: the image of the
    orthogonal projector ``|H|⁻¹ Σ_h ρ(h)`` (symmetric: ``ρ(h)ᵀ = ρ(h⁻¹)``), the
    eigenvectors of its eigenvalues 1."""
    projector = rho.mean(dim=0)
    values, vectors = torch.linalg.eigh((projector + projector.T) / 2)  # ascending
    ones = values > 0.5
    if not float(torch.where(ones, values - 1, values).abs().max()) < 1e-6:
        raise ValueError(
            "a stabiliser's average has eigenvalues other than 0 and 1 "
            f"({values.tolist()}): its representation is not orthogonal"
        )
    return vectors[:, ones].T


def _solve_by_row_orbits(images_out: Tensor, rho_in: Tensor) -> Tensor:
    """The canonical basis ``[n, d_out, d_in]`` of the maps ``W`` with
    ``W ρ_in(g) = P(g) W``, where ``P(g) e_x = e_{images_out[g, x]}`` permutes the output
    coordinates and ``rho_in [|G|, d_in, d_in]`` is orthogonal.

    Row ``x`` of ``P(g) W`` is row ``g⁻¹·x`` of ``W``, so ``W_{g·x} = W_x ρ_in(g)ᵀ``: the rows
    of one orbit follow from its first, ``W_{x0}``, which the stabiliser of ``x0`` must fix,
    and any such row extends to the orbit. The rows of distinct orbits are independent. In
    row-major order ``W_{x0}`` comes first in its orbit and the extension ``w -> W`` is
    ``√m`` times an isometry (``ρ_in`` orthogonal, ``m`` points), so the orbit's canonical
    basis is the extension of the canonical basis of the fixed rows, over ``√m``; the
    orbits' bases in the order of their ``x0`` are the canonical basis of the whole span."""
    d_out, d_in = images_out.shape[1], rho_in.shape[1]
    bases = []
    for points, cosets, stabiliser in _orbits(images_out):
        rows = _canonical(_fixed_space(rho_in[stabiliser]))  # [k, d_in]
        if len(rows):
            basis = torch.zeros(len(rows), d_out, d_in, dtype=torch.float64)
            extended = torch.einsum("ka,xba->kxb", rows, rho_in[cosets])  # W_x = W_{x0} ρ(g)ᵀ
            basis[:, points] = extended / math.sqrt(len(points))
            bases.append(basis)
    return torch.cat(bases) if bases else torch.zeros(0, d_out, d_in, dtype=torch.float64)


def _solve_by_column_orbits(images_in: Tensor, rho_out: Tensor) -> Tensor:
    """The canonical basis ``[n, d_out, d_in]`` of the maps ``W`` with
    ``W P(g) = ρ_out(g) W``, where ``P(g) e_x = e_{images_in[g, x]}`` permutes the input
    coordinates and ``rho_out [|G|, d_out, d_out]`` is orthogonal.

    Column ``g·x`` of ``W`` is ``ρ_out(g)`` times column ``x``: the columns of one orbit
    follow from its first, ``c``, which the stabiliser of ``x0`` must fix, through the
    extension ``c -> W``, ``√m`` times an isometry. An orbit's columns interleave with other
    orbits' in row-major order, so its pivots are found on its own columns (on the
    shortest prefix that holds them all). With ``C [k, k]`` the pivot columns of the fixed
    vectors' extensions, the reduced row echelon rows are the extensions of ``C⁻¹ c``, and
    Gram–Schmidt of those, extended, over ``√m``, is the orbit's canonical basis. The
    supports are disjoint: the rows of all orbits, sorted by their pivots' places in ``W``,
    are the canonical basis of the whole span."""
    d_out, d_in = rho_out.shape[1], images_in.shape[1]
    bases, pivots = [], []
    for points, cosets, stabiliser in _orbits(images_in):
        fixed = _fixed_space(rho_out[stabiliser])  # [k, d_out]
        if len(fixed):
            m = len(points)
            columns = torch.einsum("ka,xba->kbx", fixed, rho_out[cosets]).reshape(len(fixed), -1)
            pivot = _pivot_columns(columns)  # of the [k, d_out * m] rows, (i, x) row-major
            first = torch.linalg.solve(columns[:, pivot], fixed)  # C⁻¹ c: the echelon's x0
            rows = _gram_schmidt(first)
            basis = torch.zeros(len(fixed), d_out, d_in, dtype=torch.float64)
            basis[:, :, points] = torch.einsum("ka,xba->kbx", rows, rho_out[cosets]) / math.sqrt(m)
            bases.append(basis)
            pivots.append(pivot // m * d_in + points[pivot % m])  # the pivot's place in W
    if not bases:
        return torch.zeros(0, d_out, d_in, dtype=torch.float64)
    return torch.cat(bases)[torch.argsort(torch.cat(pivots))]


def _pivot_columns(rows: Tensor) -> Tensor:
    """The columns ``[n]`` of the leading 1s of the reduced row echelon form of
    ``rows [n, D]`` (full row rank), i.e. the first ``n`` independent columns: found on the
    shortest prefix of doubling width that holds ``n`` of them, which spares the elimination
    of the ``D`` columns."""
    width = rows.shape[0]
    while True:
        _, pivots = _reduced_row_echelon(rows[:, :width])
        if len(pivots) == rows.shape[0] or width >= rows.shape[1]:
            return pivots
        width *= 2


def _solve_by_constraints(group: MatrixGroup, block_in: Block, block_out: Block) -> Tensor:
    d_in, d_out = block_in.dim, block_out.dim
    eye_in = torch.eye(d_in, dtype=torch.float64)
    eye_out = torch.eye(d_out, dtype=torch.float64)
    rows = []
    if len(group.discrete_generators):
        r_in = block_in.rho(group.discrete_generators)
        r_out = block_out.rho(group.discrete_generators)
        rows.append(_commutator_rows(r_in, r_out, eye_in, eye_out))
    if len(group.lie_generators):  # unit generators: the same algebra, constraints of size 1
        lie = group.lie_generators
        lie = lie / lie.reshape(len(lie), -1).norm(dim=1)[:, None, None]
        r_in = block_in.drho(lie)
        r_out = block_out.drho(lie)
        rows.append(_commutator_rows(r_in, r_out, eye_in, eye_out))
    if not rows:  # trivial group: every matrix
        return torch.eye(d_out * d_in, dtype=torch.float64).reshape(-1, d_out, d_in)
    constraints = torch.cat(rows)
    basis = _null_space(constraints).reshape(-1, d_out, d_in)
    return _canonical(basis)


def _null_space(constraints: Tensor) -> Tensor:
    """Orthonormal rows spanning ``{w : C w = 0}`` for ``C [rows >= columns, D]``.

    An SVD of ``C``; should LAPACK's divide-and-conquer SVD not converge (it can fail on
    large constraint systems, e.g. a regular representation of the icosahedral group in a
    bilinear map), the SVD of the square ``R`` of ``C = QR`` (same singular values and right
    vectors), and failing that the eigenvectors ``v`` of ``RᵀR``, whose singular values are
    ``‖R v‖``.
    """
    try:
        _, s, vh = torch.linalg.svd(constraints, full_matrices=False)  # rows >= columns
    except torch.linalg.LinAlgError:
        r = torch.linalg.qr(constraints, mode="r")[1]
        try:
            _, s, vh = torch.linalg.svd(r)
        except torch.linalg.LinAlgError:
            _, vectors = torch.linalg.eigh(r.T @ r)
            # ‖R v‖, not √λ: the square root of an eigenvalue's rounding (~1e-16 λ_max)
            # is ~1e-8 σ_max, which would count null vectors as part of the rank
            s, order = (r @ vectors).norm(dim=0).sort(descending=True)
            vh = vectors[:, order].T
    rank = int((s > _NULL_TOL * max(1.0, float(s.max()) if s.numel() else 1.0)).sum())
    return vh[rank:]


def _commutator_rows(r_in: Tensor, r_out: Tensor, eye_in: Tensor, eye_out: Tensor) -> Tensor:
    """Rows of ``vec(ρ_out W - W ρ_in) = 0`` for row-major ``vec(W)``, ``W [d_out, d_in]``."""
    left = torch.einsum("kab,cd->kacbd", r_out, eye_in)
    right = torch.einsum("ab,kdc->kacbd", eye_out, r_in)
    k, d_out, d_in = r_out.shape[0], eye_out.shape[0], eye_in.shape[0]
    return (left - right).reshape(k * d_out * d_in, d_out * d_in)


def _reduced_row_echelon(rows: Tensor, tol: float = _NULL_TOL) -> tuple[Tensor, Tensor]:
    """The reduced row echelon form of ``rows [n, D]`` (full row rank): the one basis of
    their span with a leading 1 in each row, in increasing columns, and zeros above and
    below it. It depends only on the span, not on which basis came in. Returns it
    ``[n, D]`` and the columns ``[n]`` of its leading 1s."""
    r = rows.clone()
    n, row = r.shape[0], 0
    pivots = []
    for col in range(r.shape[1]):
        if row == n:
            break
        pivot = row + int(r[row:, col].abs().argmax())
        if not float(r[pivot, col].abs()) > tol:
            continue
        if pivot != row:
            r[[row, pivot]] = r[[pivot, row]]
        r[row] = r[row] / r[row, col]
        factors = r[:, col].clone()
        factors[row] = 0.0
        r -= factors[:, None] * r[row]
        pivots.append(col)
        row += 1
    return r[:row], torch.tensor(pivots, dtype=torch.long)


def _gram_schmidt(rows: Tensor) -> Tensor:
    """Gram–Schmidt of ``rows [n, D]`` (linearly independent) in their order: QR with a
    positive diagonal, entries below 1e-14 set to zero. ``[n, D]`` orthonormal rows."""
    q, r = torch.linalg.qr(rows.T)  # [D, n] orthonormal columns, in the rows' order
    q = q * torch.sign(torch.diagonal(r))  # R's diagonal positive: Gram–Schmidt's own signs
    q[q.abs() < 1e-14] = 0.0
    return q.T


def _canonical(basis: Tensor) -> Tensor:
    """The orthonormal basis of the span of ``basis [n, ...]`` (each element flattened, e.g.
    ``[n, d_out, d_in]``) that depends only on the span: Gram–Schmidt (QR, positive
    diagonal) of its reduced row echelon form. An SVD's null vectors are any rotation of
    each other, and that rotation moves with rounding (another BLAS, another machine); the
    layers store only coefficients on this basis, so a saved model must find the same basis
    when it is loaded."""
    if basis.shape[0] == 0:
        return basis
    echelon, _ = _reduced_row_echelon(basis.reshape(basis.shape[0], -1))
    return _gram_schmidt(echelon).reshape(-1, *basis.shape[1:]).contiguous()


def block_hom_basis(group: MatrixGroup, block_in: Block, block_out: Block) -> Tensor:
    """Orthonormal basis ``[n, d_out, d_in]`` (float64) of Hom_G(block_in, block_out), cached.

    Cache keys use each block's ``key``; blocks with equal keys share one solve.
    """
    key = (group.key, block_in.key, block_out.key)
    if key not in _CACHE:
        _CACHE[key] = outside_inference_mode(_solve)(group, block_in, block_out)
    return _CACHE[key].clone()  # the cached solve stays as it is whatever callers do


_CACHE: dict[tuple, Tensor] = {}


def clear_cache() -> None:
    """Forget every cached solve (for cold-start benchmarks)."""
    _CACHE.clear()


@dataclass(frozen=True)
class BlockPair:
    """One block pair of a map ``rep_in -> rep_out``: which slices and which small basis."""

    index_in: int
    index_out: int
    mul_in: int
    mul_out: int
    slice_in: slice
    slice_out: slice
    basis: Tensor  # [n, d_out, d_in] orthonormal, float64

    @property
    def num(self) -> int:
        """Number of free coefficients: ``mul_out * mul_in * n``."""
        return self.mul_out * self.mul_in * self.basis.shape[0]


class EquivariantBasis:
    """Hom_G(rep_in, rep_out) as a list of :class:`BlockPair` s.

    ``dim`` is the dimension of the space; ``to_dense()`` materialises the orthonormal basis
    ``[dim, rep_out.dim, rep_in.dim]``; ``matrix(w)`` maps coefficients ``[dim]`` to the map
    ``[rep_out.dim, rep_in.dim]`` without materialising the dense basis.
    """

    def __init__(self, rep_in: Rep, rep_out: Rep) -> None:
        if rep_in.group != rep_out.group:
            raise ValueError(
                "equivariant_basis: rep_in and rep_out must belong to the same group, got "
                f"{rep_in.group.name} and {rep_out.group.name}"
            )
        self.rep_in, self.rep_out = rep_in, rep_out
        group = rep_in.group
        pairs = []
        for j, ((mul_in, b_in), s_in) in enumerate(zip(rep_in.blocks, rep_in.slices())):
            for i, ((mul_out, b_out), s_out) in enumerate(zip(rep_out.blocks, rep_out.slices())):
                basis = block_hom_basis(group, b_in, b_out)
                if basis.shape[0]:
                    pairs.append(BlockPair(j, i, mul_in, mul_out, s_in, s_out, basis))
        self.pairs: tuple[BlockPair, ...] = tuple(pairs)
        self.dim = sum(p.num for p in self.pairs)

    def matrix(self, weights: Tensor) -> Tensor:
        """The map ``[rep_out.dim, rep_in.dim]`` with coefficients ``weights [dim]``."""
        if not isinstance(weights, Tensor) or not weights.is_floating_point():
            got = weights.dtype if isinstance(weights, Tensor) else type(weights).__name__
            raise TypeError(f"weights: expected a floating-point tensor [{self.dim}], got {got}")
        if weights.shape != (self.dim,):
            raise ValueError(f"weights: expected shape [{self.dim}], got {list(weights.shape)}")
        out = weights.new_zeros(self.rep_out.dim, self.rep_in.dim)
        start = 0
        for p in self.pairs:
            w = weights[start : start + p.num].reshape(p.mul_out, p.mul_in, -1)
            start += p.num
            block = torch.einsum("umk,kab->uamb", w, p.basis.to(weights))
            out[p.slice_out, p.slice_in] = block.reshape(p.slice_out.stop - p.slice_out.start, -1)
        return out

    def to_dense(self) -> Tensor:
        """The orthonormal basis ``[dim, rep_out.dim, rep_in.dim]`` (float64)."""
        eye = torch.eye(self.dim, dtype=torch.float64)
        return (
            torch.stack([self.matrix(e) for e in eye])
            if self.dim
            else eye.new_zeros(0, self.rep_out.dim, self.rep_in.dim)
        )

    def __repr__(self) -> str:
        return f"EquivariantBasis({self.rep_in.short()} -> {self.rep_out.short()}, dim={self.dim})"


def equivariant_basis(rep_in: Rep, rep_out: Rep) -> EquivariantBasis:
    """Hom_G(rep_in, rep_out): an orthonormal basis, solved per block pair and cached.

    Args:
        rep_in: input representation.
        rep_out: output representation of the same group.

    Returns:
        An :class:`EquivariantBasis`; ``.dim`` is the dimension of the space and
        ``.to_dense()`` the basis ``[dim, rep_out.dim, rep_in.dim]``.
    """
    if not isinstance(rep_in, Rep) or not isinstance(rep_out, Rep):
        raise TypeError(
            f"equivariant_basis: expected two Reps, got {type(rep_in).__name__} and "
            f"{type(rep_out).__name__}"
        )
    return EquivariantBasis(rep_in, rep_out)


@dataclass(frozen=True)
class BlockTriple:
    """One block triple of a bilinear map ``rep_a ⊗ rep_b -> rep_out``."""

    index_a: int
    index_b: int
    index_out: int
    mul_a: int
    mul_b: int
    mul_out: int
    slice_a: slice
    slice_b: slice
    slice_out: slice
    basis: Tensor  # [n, d_out, d_a, d_b] orthonormal, float64

    @property
    def num(self) -> int:
        return self.mul_out * self.mul_a * self.mul_b * self.basis.shape[0]


class BilinearBasis:
    """Hom_G(rep_a ⊗ rep_b, rep_out), solved per block triple (the Clebsch–Gordan paths of G).

    Holds the per-triple bases in ``triples``; :meth:`symgraph.nn.EquivariantBilinear.weight_tensor`
    assembles the bilinear form ``[out.dim, a.dim, b.dim]`` from coefficients.
    """

    def __init__(self, rep_a: Rep, rep_b: Rep, rep_out: Rep) -> None:
        for name, rep in (("rep_a", rep_a), ("rep_b", rep_b), ("rep_out", rep_out)):
            if not isinstance(rep, Rep):
                raise TypeError(
                    f"{name}: expected a Rep (e.g. sg.Rep('1o', group)), got {type(rep).__name__}"
                )
        if not rep_a.group == rep_b.group == rep_out.group:
            raise ValueError(
                "bilinear_basis: all representations must belong to the same group, got "
                f"{rep_a.group.name}, {rep_b.group.name} and {rep_out.group.name}"
            )
        self.rep_a, self.rep_b, self.rep_out = rep_a, rep_b, rep_out
        group = rep_a.group
        triples = []
        for ia, ((mul_a, block_a), s_a) in enumerate(zip(rep_a.blocks, rep_a.slices())):
            for ib, ((mul_b, block_b), s_b) in enumerate(zip(rep_b.blocks, rep_b.slices())):
                product = ProductBlock(
                    Rep(group=group, blocks=[(1, block_a)]), Rep(group=group, blocks=[(1, block_b)])
                )
                for io, ((mul_o, block_o), s_o) in enumerate(zip(rep_out.blocks, rep_out.slices())):
                    basis = block_hom_basis(group, product, block_o)
                    if basis.shape[0]:
                        basis = basis.reshape(-1, block_o.dim, block_a.dim, block_b.dim)
                        triples.append(
                            BlockTriple(ia, ib, io, mul_a, mul_b, mul_o, s_a, s_b, s_o, basis)
                        )
        self.triples: tuple[BlockTriple, ...] = tuple(triples)
        self.dim = sum(t.num for t in self.triples)

    def __repr__(self) -> str:
        return (
            f"BilinearBasis({self.rep_a.short()} ⊗ {self.rep_b.short()} -> "
            f"{self.rep_out.short()}, dim={self.dim})"
        )


def bilinear_basis(rep_a: Rep, rep_b: Rep, rep_out: Rep) -> BilinearBasis:
    """Equivariant bilinear maps ``rep_a × rep_b -> rep_out``, solved per block triple, cached."""
    return BilinearBasis(rep_a, rep_b, rep_out)
