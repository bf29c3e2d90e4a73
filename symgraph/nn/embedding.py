"""Embeddings of a relative position: spherical harmonics of its direction, radial bases,
and a smooth cutoff envelope."""

from __future__ import annotations

import math

import torch
from e3nn import o3
from torch import Tensor, nn

from symgraph.groups import MatrixGroup, Rep

__all__ = ["spherical_harmonics_rep", "direction_embedding", "RadialEmbedding", "cosine_cutoff"]


def spherical_harmonics_rep(lmax: int, group: MatrixGroup) -> Rep:
    """``"1x1o + 1x2e + …"`` up to ``lmax`` (l ≥ 1; the constant l = 0 is left to biases)."""
    if not isinstance(lmax, int) or lmax < 1:
        raise ValueError(f"lmax: expected an int ≥ 1, got {lmax!r}")
    return Rep(" + ".join(f"1x{l}{'e' if l % 2 == 0 else 'o'}" for l in range(1, lmax + 1)), group)


def direction_embedding(rel: Tensor, lmax: int) -> Tensor:
    """Spherical harmonics ``[E, (lmax+1)² - 1]`` (l = 1…lmax, e3nn 'component' norm) of ``rel``.

    Zero vectors give zeros (their direction is undefined); gradients stay finite there.
    """
    norm = rel.norm(dim=-1, keepdim=True)
    unit = rel / norm.clamp_min(torch.finfo(rel.dtype).eps)
    sh = o3.spherical_harmonics(list(range(1, lmax + 1)), unit, normalize=False)
    return sh * (norm > 0)


def cosine_cutoff(distance: Tensor, cutoff: float) -> Tensor:
    """``0.5 (cos(π d / c) + 1)`` for ``d < c``, else 0: smooth, 1 at 0, 0 with zero slope at c."""
    inside = distance < cutoff
    value = 0.5 * (torch.cos(math.pi * distance / cutoff) + 1.0)
    return torch.where(inside, value, torch.zeros_like(value))


class RadialEmbedding(nn.Module):
    """Gaussian radial basis ``[E, num_basis]`` of distances on ``[0, r_max]``.

    Args:
        num_basis: number of Gaussians (evenly spaced centres, width = spacing).
        r_max: the largest distance of interest (the cutoff radius when there is one).
    """

    def __init__(self, num_basis: int = 8, r_max: float = 5.0) -> None:
        super().__init__()
        if not isinstance(num_basis, int) or num_basis < 1:
            raise ValueError(f"num_basis: expected a positive int, got {num_basis!r}")
        if not r_max > 0:
            raise ValueError(f"r_max: expected a positive number, got {r_max!r}")
        self.num_basis, self.r_max = num_basis, float(r_max)
        self.register_buffer("centres", torch.linspace(0.0, r_max, num_basis), persistent=False)
        self.width = r_max / max(num_basis - 1, 1)

    def forward(self, distance: Tensor) -> Tensor:
        """``distance [E] -> [E, num_basis]``."""
        diff = (distance[:, None] - self.centres.to(distance)) / self.width
        return torch.exp(-0.5 * diff * diff)

    def extra_repr(self) -> str:
        return f"num_basis={self.num_basis}, r_max={self.r_max}"
