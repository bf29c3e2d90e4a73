"""Lattice -> graph: one node per cell, edges from each cell's stencil neighbours.

Node order: node ``b * N + flat`` is cell ``flat`` (row-major over ``shape``) of batch
element ``b``, ``N = prod(shape)`` -- the order of :func:`symgraph.lattice.field_to_nodes`.

Edge order: ``edge_index[0]`` is the neighbour (source), ``edge_index[1]`` the centre
(target), messages flow neighbour -> centre (PyG's ``source_to_target``). Edges are sorted
by centre, and within a centre by stencil offset in :func:`stencil_offsets` order.

Boundaries. On a periodic axis neighbours wrap around, so every centre has the same
in-degree ``K`` (the number of stencil offsets; ``K - 1`` without self-loops) and ``E = B * N
* K``. On a bounded axis, offsets that leave the grid are dropped: cells within ``radius``
of an edge have fewer neighbours (a corner cell of a radius-1 square stencil has 4 of 9,
self included), exactly the cells a zero-padded convolution would read as zeros.

Offsets. ``offsets[e]`` is the relative position neighbour minus centre in Cartesian
``(x, y, z)`` physical units, i.e. the stencil offset times the spacing. Across a periodic
wrap this is the *minimum-image* offset, which is **not** ``pos[j] - pos[i]``: give layers
``offsets`` rather than recomputing it from ``pos``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from symgraph.checks import check_float_dtype, is_int
from symgraph.lattice.spec import Lattice, check_lattice
from symgraph.lattice.stencil import stencil_offsets

__all__ = ["LatticeGraph", "lattice_graph", "grid_to_graph", "cell_positions", "cell_index"]


class LatticeGraph(NamedTuple):
    """Everything :func:`lattice_graph` builds.

    Attributes:
        pos: ``[B * N, 3]`` cell centres (Cartesian, physical units; ``z = 0`` in 2D).
        edge_index: ``[2, E]`` int64, ``edge_index[1]`` the centre, sorted by centre.
        offsets: ``[E, 3]`` minimum-image relative positions neighbour - centre.
        stencil_index: ``[E]`` int64, row of :func:`stencil_offsets` each edge came from.
        batch: ``[B * N]`` int64 graph index of each node.
    """

    pos: Tensor
    edge_index: Tensor
    offsets: Tensor
    stencil_index: Tensor
    batch: Tensor


def _check_batch_size(batch_size: object) -> int:
    if not is_int(batch_size) or batch_size < 1:
        raise ValueError(f"batch_size: expected a positive integer, got {batch_size!r}")
    return int(batch_size)


def _to_xyz(array_order: Tensor) -> Tensor:
    """``[..., dim]`` array-axis order ``(y, x)``/``(z, y, x)`` -> ``[..., 3]`` ``(x, y, z)``."""
    xyz = array_order.flip(-1)
    if xyz.shape[-1] == 2:
        xyz = torch.cat([xyz, torch.zeros_like(xyz[..., :1])], dim=-1)
    return xyz


def cell_index(lattice: Lattice, device: torch.device | str | None = None) -> Tensor:
    """``[N, dim]`` int64 array index of every cell, row-major (node order)."""
    lattice = check_lattice(lattice)
    axes = [torch.arange(n, device=device) for n in lattice.shape]
    grids = torch.meshgrid(*axes, indexing="ij")
    return torch.stack([g.reshape(-1) for g in grids], dim=1)


def cell_positions(
    lattice: Lattice,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """``[N, 3]`` cell centres, centred on the domain: ``(index - (n - 1) / 2) * spacing``,
    of ``dtype`` (default: torch's default dtype).

    The origin is the centre of the grid, so rotations about z by multiples of 90 degrees
    (square grids) and reflections ``x -> -x``, ``y -> -y`` permute the nodes.
    """
    dtype = torch.get_default_dtype() if dtype is None else dtype
    check_float_dtype(dtype)
    index = cell_index(lattice, device).to(torch.float64)
    centre = torch.tensor([(n - 1) / 2 for n in lattice.shape], dtype=torch.float64)
    spacing = torch.tensor(lattice.spacing, dtype=torch.float64)
    pos = (index - centre.to(index.device)) * spacing.to(index.device)
    return _to_xyz(pos).to(dtype)


def lattice_graph(
    lattice: Lattice,
    batch_size: int = 1,
    *,
    self_loops: bool = True,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> LatticeGraph:
    """Build the stencil graph of ``batch_size`` copies of ``lattice``.

    Args:
        lattice: grid, stencil and boundaries.
        batch_size: number of copies (a batch of fields ``[B, C, ...]``).
        self_loops: keep the zero offset (each cell is its own neighbour), as the centre
            tap of a convolution kernel.
        dtype, device: of ``pos`` and ``offsets`` (default: torch's default dtype).

    Returns:
        a :class:`LatticeGraph`; see the module docstring for orders and boundaries.
    """
    if not isinstance(lattice, Lattice):
        raise TypeError(f"lattice: expected a Lattice, got {type(lattice).__name__}")
    batch_size = _check_batch_size(batch_size)
    dtype = torch.get_default_dtype() if dtype is None else dtype
    stencil = stencil_offsets(lattice.radius, lattice.dim, lattice.stencil).to(device)
    if not self_loops:
        stencil_ids = torch.nonzero(stencil.abs().sum(1) > 0).squeeze(1)
    else:
        stencil_ids = torch.arange(stencil.shape[0], device=device)
    stencil = stencil[stencil_ids]
    n_cells, k = lattice.num_cells, stencil.shape[0]

    centre = cell_index(lattice, device)  # [N, dim]
    neighbour = centre[:, None, :] + stencil[None, :, :]  # [N, K, dim]
    shape = torch.tensor(lattice.shape, device=device)
    periodic = torch.tensor(lattice.periodic, device=device)
    inside = ((neighbour >= 0) & (neighbour < shape)) | periodic
    valid = inside.all(dim=-1)  # [N, K]
    neighbour = torch.where(periodic, neighbour % shape, neighbour)
    flat = torch.zeros(n_cells, k, dtype=torch.long, device=device)
    for a in range(lattice.dim):
        flat = flat * lattice.shape[a] + neighbour[..., a]

    src = flat[valid]  # row-major over (centre, offset): sorted by centre
    dst = torch.arange(n_cells, device=device)[:, None].expand(n_cells, k)[valid]
    which = stencil_ids[None, :].expand(n_cells, k)[valid]
    spacing = torch.tensor(lattice.spacing, dtype=torch.float64, device=device)
    rel = _to_xyz(stencil.to(torch.float64) * spacing).to(dtype)  # [K, 3]

    shift = (torch.arange(batch_size, device=device) * n_cells)[:, None]
    edge_index = torch.stack(
        [(src[None, :] + shift).reshape(-1), (dst[None, :] + shift).reshape(-1)]
    )
    local = torch.searchsorted(stencil_ids, which)
    offsets = rel[local].repeat(batch_size, 1)
    pos = cell_positions(lattice, dtype, device).repeat(batch_size, 1)
    batch = torch.arange(batch_size, device=device).repeat_interleave(n_cells)
    return LatticeGraph(pos, edge_index, offsets, which.repeat(batch_size), batch)


def grid_to_graph(
    lattice: Lattice,
    batch_size: int = 1,
    *,
    self_loops: bool = True,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """``(pos [B*N, 3], edge_index [2, E], offsets [E, 3])`` of :func:`lattice_graph`."""
    graph = lattice_graph(lattice, batch_size, self_loops=self_loops, dtype=dtype, device=device)
    return graph.pos, graph.edge_index, graph.offsets
