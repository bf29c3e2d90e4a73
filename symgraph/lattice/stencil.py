"""Stencil offsets and their correspondence with dense convolution kernels.

The offsets are listed in **row-major kernel order**: in 2D, ``(dy, dx)`` runs over
``dy = -ry..ry`` (outer) and ``dx = -rx..rx`` (inner), exactly the order of the flattened
last two axes of a ``conv2d`` weight ``[C_out, C_in, 2ry+1, 2rx+1]``; in 3D ``(dz, dy, dx)``
with ``dz`` outermost, the order of a ``conv3d`` weight. So for a square stencil, per-offset
weights ``w [C_out, C_in, K]`` reshape directly into a conv weight, and the kernel index of
offset ``d`` is ``d + radius`` (:func:`kernel_index`).

PyTorch's ``conv2d`` is a cross-correlation: with weight ``w`` and padding ``r``,

    out[y, x] = sum_{dy, dx} w[dy + ry, dx + rx] * in[y + dy, x + dx]

which is the graph sum over edges ``j -> i`` of ``w[k(j - i)] * in[j]`` where the stencil
offset is ``j - i`` (neighbour minus centre) in array index space. Periodic lattices match
``conv2d`` after circular padding, bounded lattices match zero padding (missing neighbours
contribute nothing). A ``"disc"`` stencil is a subset of the square one; its dense kernel
has zeros at the missing offsets (:func:`stencil_to_kernel`).
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import Tensor

from symgraph.caching import tensor_cache
from symgraph.checks import check_tensor, is_int
from symgraph.lattice.spec import Lattice, check_lattice

__all__ = ["stencil_offsets", "kernel_index", "stencil_to_kernel", "kernel_to_stencil"]


def _radii(radius: int | tuple[int, ...], dim: int) -> tuple[int, ...]:
    if dim not in (2, 3):
        raise ValueError(f"dim: expected 2 or 3, got {dim!r}")
    radii = tuple(radius) if isinstance(radius, (tuple, list)) else (radius,) * dim
    if len(radii) != dim:
        raise ValueError(f"radius: expected one value or {dim} values, got {radii!r}")
    if not all(is_int(r) and r >= 0 for r in radii):
        raise ValueError(f"radius: expected non-negative integers (cells), got {radii!r}")
    return tuple(int(r) for r in radii)


def stencil_offsets(radius: int | tuple[int, ...], dim: int = 2, shape: str = "square") -> Tensor:
    """Integer offsets of a stencil, in row-major kernel order.

    Args:
        radius: radius in cells, one integer or one per array axis (``(ry, rx)`` /
            ``(rz, ry, rx)``).
        dim: 2 or 3.
        shape: ``"square"`` (``|d_a| <= r_a`` on every axis) or ``"disc"``
            (``sum_a (d_a / r_a)^2 <= 1``; axes with ``r_a = 0`` only allow ``d_a = 0``).

    Returns:
        ``[K, dim]`` int64 offsets in array-axis order (``(dy, dx)`` / ``(dz, dy, dx)``),
        the centre ``0`` included. ``K = prod(2r + 1)`` for a square stencil.
    """
    radii = _radii(radius, dim)
    if shape not in ("square", "disc"):
        raise ValueError(f"shape: expected 'square' or 'disc', got {shape!r}")
    ranges = [range(-r, r + 1) for r in radii]
    rows = []
    for d in itertools.product(*ranges):
        if shape == "disc":
            # exact rational test: sum_a d_a^2 * prod_{b != a} r_b^2 <= prod_b r_b^2
            nz = [(da, ra) for da, ra in zip(d, radii) if ra > 0]
            total = 1
            for _, ra in nz:
                total *= ra * ra
            acc = 0
            for da, ra in nz:
                acc += da * da * (total // (ra * ra))
            if acc > total:
                continue
        rows.append(d)
    return torch.tensor(rows, dtype=torch.long).reshape(-1, dim)


def kernel_index(offsets: Tensor, radius: int | tuple[int, ...]) -> Tensor:
    """Dense-kernel index of each offset: ``(ky, kx) = (dy + ry, dx + rx)`` (3D alike).

    Args:
        offsets: ``[K, dim]`` integer offsets in array-axis order.
        radius: the stencil radius (one or per axis).

    Returns:
        ``[K, dim]`` int64 indices into the last ``dim`` axes of a conv weight.
    """
    offsets = check_tensor(offsets, "offsets")
    if offsets.dim() != 2 or offsets.shape[1] not in (2, 3):
        raise ValueError(f"offsets: expected shape [K, 2] or [K, 3], got {list(offsets.shape)}")
    if offsets.is_floating_point() and not torch.equal(offsets, offsets.round()):
        raise ValueError("offsets: expected integer offsets (cells), got fractional values")
    radii = torch.tensor(_radii(radius, offsets.shape[1]), dtype=torch.long)
    index = offsets.long() + radii.to(offsets.device)
    if bool((index < 0).any()) or bool((index > 2 * radii.to(offsets.device)).any()):
        raise ValueError(f"offsets: expected |offset| <= radius {tuple(radii.tolist())} per axis")
    return index


def stencil_to_kernel(weight: Tensor, lattice: Lattice) -> Tensor:
    """Scatter per-offset weights into a dense convolution kernel.

    Args:
        weight: ``[..., K]`` with ``K`` the number of stencil offsets of ``lattice`` (in
            :func:`stencil_offsets` order), e.g. ``[C_out, C_in, K]``.
        lattice: gives the radius and stencil shape.

    Returns:
        ``[..., 2ry+1, 2rx+1]`` (or ``[..., 2rz+1, 2ry+1, 2rx+1]``), zero where the stencil
        has no offset (a disc's corners). For ``conv2d``/``conv3d`` as documented above.
    """
    weight = check_tensor(weight, "weight")
    linear = _linear_kernel_index(check_lattice(lattice))
    if weight.dim() < 1 or weight.shape[-1] != linear.shape[0]:
        raise ValueError(
            f"weight: expected last axis of size {linear.shape[0]} (stencil offsets), "
            f"got shape {list(weight.shape)}"
        )
    size = lattice.kernel_size
    flat = weight.new_zeros(*weight.shape[:-1], math.prod(size))
    flat[..., linear.to(weight.device)] = weight
    return flat.reshape(*weight.shape[:-1], *size)


@tensor_cache(maxsize=64)
def _linear_kernel_index(lattice: Lattice) -> Tensor:
    """``[K]`` flat position of each stencil offset in the dense kernel (cached per lattice,
    not to be modified in place)."""
    offsets = stencil_offsets(lattice.radius, lattice.dim, lattice.stencil)
    index = kernel_index(offsets, lattice.radius)
    linear = torch.zeros(offsets.shape[0], dtype=torch.long)
    for a, size in enumerate(lattice.kernel_size):
        linear = linear * size + index[:, a]
    return linear


def kernel_to_stencil(kernel: Tensor, lattice: Lattice) -> Tensor:
    """Inverse of :func:`stencil_to_kernel`: read ``[..., K]`` from a dense kernel."""
    kernel, lattice = check_tensor(kernel, "kernel"), check_lattice(lattice)
    size = lattice.kernel_size
    if kernel.dim() < lattice.dim or tuple(kernel.shape[-lattice.dim :]) != size:
        raise ValueError(
            f"kernel: expected trailing axes {list(size)}, got shape {list(kernel.shape)}"
        )
    offsets = stencil_offsets(lattice.radius, lattice.dim, lattice.stencil)
    index = kernel_index(offsets, lattice.radius).to(kernel.device)
    return kernel[(..., *index.unbind(1))]
