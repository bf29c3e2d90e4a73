"""Embeddings of a relative position: spherical harmonics of its direction, radial bases,
and a smooth cutoff envelope."""

from __future__ import annotations

import math

import torch
from e3nn import o3
from torch import Tensor

from symgraph.checks import is_finite_real, is_int
from symgraph.groups import MatrixGroup, Rep
from symgraph.groups.wigner import MAX_DEGREE
from symgraph.nn.exact_buffers import ExactBufferModule

__all__ = [
    "check_lmax",
    "spherical_harmonics_rep",
    "direction_embedding",
    "direction_embedding_rows",
    "RadialEmbedding",
    "cosine_cutoff",
    "edge_length",
]


def check_lmax(lmax: object) -> None:
    """Raise ``ValueError`` naming ``lmax`` unless it is an int in ``[1, MAX_DEGREE]`` (12: the
    highest degree of e3nn's spherical harmonics)."""
    if not is_int(lmax) or lmax < 1:
        raise ValueError(f"lmax: expected an int ≥ 1, got {lmax!r}")
    if lmax > MAX_DEGREE:
        raise ValueError(
            f"lmax: expected at most {MAX_DEGREE} (e3nn's spherical harmonics stop at "
            f"l = {MAX_DEGREE}), got {lmax!r}"
        )


def spherical_harmonics_rep(lmax: int, group: MatrixGroup) -> Rep:
    """``"1x1o + 1x2e + …"`` up to ``lmax`` (l ≥ 1; the constant l = 0 is left to biases)."""
    check_lmax(lmax)
    return Rep(" + ".join(f"1x{l}{'e' if l % 2 == 0 else 'o'}" for l in range(1, lmax + 1)), group)


def edge_length(rel: Tensor) -> Tensor:
    """``|rel|`` per row, ``[E, 3]`` -> ``[E]``, with finite first *and second* derivatives at
    zero vectors (self-loops), where they are 0: ``Tensor.norm``'s second derivative is NaN
    there, which poisons force training (a loss on ``-∂E/∂pos``) on graphs with self-loops."""
    squared = (rel * rel).sum(-1)
    safe = squared.clamp_min(torch.finfo(rel.dtype).tiny).sqrt()
    return torch.where(squared > 0, safe, torch.zeros_like(safe))


def direction_embedding(rel: Tensor, lmax: int) -> Tensor:
    """Spherical harmonics ``[E, (lmax+1)² - 1]`` (l = 1…lmax, e3nn's default 'integral'
    normalisation) of the direction of ``rel``.

    Zero vectors give zeros (their direction is undefined); gradients stay finite there.
    """
    if rel.dim() != 2 or rel.shape[1] != 3:  # shape only: the layers check values once
        raise ValueError(f"rel: expected shape [N, 3], got {list(rel.shape)}")
    check_lmax(lmax)
    norm = edge_length(rel)[:, None]
    unit = rel / norm.clamp_min(torch.finfo(rel.dtype).eps)
    sh = o3.spherical_harmonics(list(range(1, lmax + 1)), unit, normalize=False)
    return sh * (norm > 0)


def direction_embedding_rows(rel: Tensor, distance: Tensor, lmax: int, out: Tensor) -> Tensor:
    """:func:`direction_embedding` written feature-major into ``out [(lmax+1)² - 1, E]``.

    ``distance [E]`` is ``|rel|``. Degrees 1 and 2 are closed-form polynomials of the unit
    vector (a handful of passes over ``E`` values and no temporaries of size ``[E, ·]``);
    higher degrees come from e3nn. Not differentiable (``out=`` writes): for inputs that
    need gradients use :func:`direction_embedding`.
    """
    unit = torch.div(rel.T, distance.clamp_min(torch.finfo(rel.dtype).eps), out=out[:3])
    integral = 1.0 / math.sqrt(4.0 * math.pi)  # e3nn's 'integral' normalisation
    unit.mul_(math.sqrt(3.0))  # √3 (x, y, z)
    if lmax >= 2:
        x, y, z = unit  # √3 times the unit vector: products below carry a factor 3
        c15, c5 = integral * math.sqrt(15.0) / 3.0, integral * math.sqrt(5.0) / 3.0
        torch.mul(x, z, out=out[3]).mul_(c15)
        torch.mul(x, y, out=out[4]).mul_(c15)
        row = torch.mul(y, y, out=out[5]).mul_(2.0)
        row.sub_(x * x).sub_(z * z).mul_(0.5 * c5)  # √5 (y² − (x² + z²)/2)
        torch.mul(y, z, out=out[6]).mul_(c15)
        row = torch.mul(z, z, out=out[7])
        row.sub_(x * x).mul_(0.5 * c15)  # √15/2 (z² − x²)
    unit.mul_(integral)  # Y_1, after Y_2 used it
    if lmax >= 3:
        out[8:].copy_(direction_embedding(rel, lmax)[:, 8:].T)
    return out


def cosine_cutoff(distance: Tensor, cutoff: float) -> Tensor:
    """``0.5 (cos(π d / c) + 1)`` for ``d < c``, else 0: smooth, 1 at 0, 0 with zero slope at c."""
    if not cutoff > 0:
        raise ValueError(f"cutoff: expected a positive distance, got {cutoff!r}")
    inside = distance < cutoff
    value = 0.5 * (torch.cos(math.pi * distance / cutoff) + 1.0)
    return torch.where(inside, value, torch.zeros_like(value))


class RadialEmbedding(ExactBufferModule):
    """Gaussian radial basis ``[E, num_basis]`` of distances on ``[0, r_max]``.

    Args:
        num_basis: number of Gaussians (evenly spaced centres, width = spacing).
        r_max: the largest distance of interest (the cutoff radius when there is one).
    """

    def __init__(self, num_basis: int = 8, r_max: float = 5.0) -> None:
        super().__init__()
        if not is_int(num_basis) or num_basis < 1:
            raise ValueError(f"num_basis: expected a positive int, got {num_basis!r}")
        if not (is_finite_real(r_max) and r_max > 0):
            raise ValueError(f"r_max: expected a finite positive number, got {r_max!r}")
        self.num_basis, self.r_max = int(num_basis), float(r_max)
        centres = torch.linspace(0.0, self.r_max, self.num_basis, dtype=torch.float64)
        self.register_exact_buffer("centres", centres)  # exact across .float()/.double()
        self.width = self.r_max / max(self.num_basis - 1, 1)

    def forward(self, distance: Tensor) -> Tensor:
        """``distance [E] -> [E, num_basis]``."""
        if not isinstance(distance, Tensor) or distance.dim() != 1:
            raise ValueError(
                f"distance: expected a floating tensor [E], got "
                f"{list(distance.shape) if isinstance(distance, Tensor) else type(distance)}"
            )
        if not distance.is_floating_point():
            raise TypeError(f"distance: expected a floating tensor [E], got dtype {distance.dtype}")
        diff = (distance[:, None] - self.exact_buffer_as("centres", distance)) / self.width
        return torch.exp(-0.5 * diff * diff)

    def rows(self, distance: Tensor, out: Tensor) -> Tensor:
        """:meth:`forward` written feature-major into ``out [num_basis, E]`` (in place, not
        differentiable)."""
        torch.sub(distance[None, :], self.exact_buffer_as("centres", distance)[:, None], out=out)
        return out.mul_(math.sqrt(0.5) / self.width).square_().neg_().exp_()

    def extra_repr(self) -> str:
        return f"num_basis={self.num_basis}, r_max={self.r_max}"
