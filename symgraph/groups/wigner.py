"""Exact real Wigner matrices of O(3) irreps, in e3nn's basis, for any orthogonal matrix.

e3nn builds ``D(R)`` from Euler angles, which loses precision (~1e-8) near its poles, e.g.
for rotations about the y axis that finite groups are full of. Here the spherical
harmonics of e3nn (polynomials, exact to rounding) fix the matrix instead: for fixed
points ``X`` on the sphere, ``Y(R x) = D(R) Y(x)``, so ``D(R)^T = Y(X)^+ Y(X R^T)``. The
result equals e3nn's ``Irrep.D_from_matrix`` (same basis, same parity convention) to
rounding error. The Lie-algebra action follows by differentiating the same identity.
"""

from __future__ import annotations

import torch
from e3nn import o3
from torch import Tensor

from symgraph.caching import tensor_cache

__all__ = ["MAX_DEGREE", "wigner_D", "wigner_dD"]

#: Highest degree ``l`` whose Wigner matrices are available: e3nn's spherical harmonics, which
#: fix them, stop at ``l = 12``.
MAX_DEGREE = 12


def _check_degree(l: int) -> None:
    """Raise ``ValueError`` naming ``l`` when it is above :data:`MAX_DEGREE`."""
    if l > MAX_DEGREE:
        raise ValueError(
            f"l: expected an O(3) irrep of degree l <= {MAX_DEGREE} (Wigner matrices are fitted "
            f"to e3nn's spherical harmonics, which stop at l = {MAX_DEGREE}), got l = {l}"
        )


@tensor_cache(maxsize=None)
def _fit(l: int) -> tuple[Tensor, Tensor, Tensor]:
    """Points ``X [P, 3]``, ``pinv(Y(X)) [2l+1, P]`` and SH Jacobians ``[P, 2l+1, 3]`` (float64)."""
    gen = torch.Generator().manual_seed(1234 + l)
    points = torch.randn(4 * l + 8, 3, generator=gen, dtype=torch.float64)
    points = points / points.norm(dim=1, keepdim=True)
    sh = o3.spherical_harmonics(l, points, normalize=False)
    jac = torch.func.vmap(torch.func.jacrev(lambda p: o3.spherical_harmonics(l, p, False)))(points)
    return points, torch.linalg.pinv(sh), jac


def _det(g: Tensor) -> Tensor:
    """``det(g) [B]`` in ``g``'s dtype, computed in at least float32 (no half-precision LU)."""
    wide = g if g.dtype in (torch.float32, torch.float64) else g.float()
    return torch.linalg.det(wide).to(g.dtype)


def wigner_D(l: int, parity: int, g: Tensor) -> Tensor:
    """Matrices ``[B, 2l+1, 2l+1]`` of the O(3) irrep ``(l, parity)`` at elements ``g [B, 3, 3]``.

    Improper elements act as ``D_l(det(g) g)`` times ``parity``, e3nn's convention.
    """
    _check_degree(l)
    if l == 0:
        det = _det(g)
        value = torch.where(det < 0, torch.full_like(det, float(parity)), torch.ones_like(det))
        return value[:, None, None]
    points, pinv, _ = _fit(l)
    points, pinv = points.to(g), pinv.to(g)
    det = torch.sign(_det(g))
    proper = g * det[:, None, None]
    moved = o3.spherical_harmonics(l, points @ proper.transpose(1, 2), normalize=False)
    d = (pinv @ moved).transpose(1, 2)
    if parity == -1:
        d = d * det[:, None, None]
    return d


def wigner_dD(l: int, a: Tensor) -> Tensor:
    """Lie-algebra action ``[m, 2l+1, 2l+1]`` of skew matrices ``a [m, 3, 3]``.

    ``wigner_dD(l, A) = d/dt wigner_D(l, p, expm(t A))`` at ``t = 0`` (parity plays no part).
    """
    _check_degree(l)
    if l == 0:
        return torch.zeros(a.shape[0], 1, 1, dtype=a.dtype, device=a.device)
    points, pinv, jac = _fit(l)
    points, pinv, jac = points.to(a), pinv.to(a), jac.to(a)
    velocity = torch.einsum("mij,pj->mpi", a, points)  # d/dt of exp(tA) x
    dsh = torch.einsum("pdi,mpi->mpd", jac, velocity)
    return (pinv @ dsh).transpose(1, 2)
