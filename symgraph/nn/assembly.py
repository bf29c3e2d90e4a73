"""Assembling dense equivariant weights from their free parameters in three tensor ops.

An equivariant weight is a sum over small bases, ``W = Σ_p Σ_k w_{p,k} B_{p,k}`` placed in
blocks of a dense matrix (or 3-tensor). Doing that block by block costs two to four small
ops per block pair and as many backward nodes, which dominates a layer's fixed cost when a
representation has many blocks (subgroups such as C4 split ``1o`` into several blocks).
:class:`SparseAssembly` precomputes, once, every nonzero entry of every basis as a triple
``(dense position, parameter index, value)``, so that assembly is

    W.flat = zeros.index_add(position, θ[parameter] · value)

with ``θ`` all parameters flattened: a gather, a product and a scatter, whatever the
number of blocks, with the same cheap ops in backward.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from symgraph.nn.exact_buffers import ExactBufferModule

__all__ = ["SparseAssembly", "block_entries"]


def block_entries(
    basis: Tensor, offsets: Sequence[int], muls: Sequence[int], strides: Sequence[int]
) -> tuple[Tensor, Tensor, Tensor]:
    """The nonzero entries of one block of an equivariant tensor.

    The block is ``Σ_k w[u_0, …, u_r, k] · basis[k, i_0, …, i_r]`` placed at dense index
    ``(offsets[a] + u_a · d_a + i_a)_a`` with ``d_a = basis.shape[1 + a]``, for a parameter
    ``w`` of shape ``[*muls, n]`` stored contiguously.

    Args:
        basis: ``[n, d_0, …, d_r]`` basis of the block.
        offsets: first dense index of the block along each axis.
        muls: multiplicity of the block along each axis.
        strides: strides of the dense tensor (in elements).

    Returns:
        ``(position [nnz], parameter [nnz], value [nnz])``: flat dense position, flat index
        into ``w``, and basis value of every nonzero entry.
    """
    n, dims = basis.shape[0], basis.shape[1:]
    nonzero = basis != 0
    k, *inner = nonzero.nonzero(as_tuple=True)
    value = basis[nonzero]
    grids = torch.meshgrid(*[torch.arange(m) for m in muls], indexing="ij")
    copies = [g.reshape(-1, 1) for g in grids]  # [num_copies, 1] each
    position = torch.zeros(1, 1, dtype=torch.long)
    parameter = k[None, :]
    weight_stride = n  # w is [*muls, n], row-major
    for axis in reversed(range(len(muls))):
        index = offsets[axis] + copies[axis] * dims[axis] + inner[axis][None, :]
        position = position + index * strides[axis]
        parameter = parameter + copies[axis] * weight_stride
        weight_stride *= muls[axis]
    return (
        position.reshape(-1),
        parameter.reshape(-1),
        value[None, :].expand(position.shape[0], -1).reshape(-1),
    )


class SparseAssembly(ExactBufferModule):
    """``θ (flattened parameters) -> dense tensor`` through precomputed nonzero entries.

    Args:
        shape: shape of the dense tensor.
        entries: per parameter tensor, in order, ``(position, parameter, value)`` from
            :func:`block_entries` (parameter indices local to that tensor).
        sizes: number of elements of each parameter tensor.
    """

    def __init__(
        self,
        shape: Sequence[int],
        entries: Sequence[tuple[Tensor, Tensor, Tensor]],
        sizes: Sequence[int],
    ) -> None:
        super().__init__()
        self.shape = tuple(int(s) for s in shape)
        starts = torch.tensor([0, *sizes[:-1]], dtype=torch.long).cumsum(0).tolist()
        positions = [e[0] for e in entries] or [torch.zeros(0, dtype=torch.long)]
        parameters = [e[1] + s for e, s in zip(entries, starts)] or [positions[0]]
        values = [e[2] for e in entries] or [torch.zeros(0, dtype=torch.float64)]
        self.register_buffer("position", torch.cat(positions), persistent=False)
        self.register_buffer("parameter", torch.cat(parameters), persistent=False)
        self.register_exact_buffer("value", torch.cat(values))

    def forward(self, parameters: Sequence[nn.Parameter], like: Tensor | None = None) -> Tensor:
        """The dense tensor ``[*shape]`` (dtype/device of the parameters, else of ``like``)."""
        if not parameters:
            reference = like if like is not None else self.value
            return reference.new_zeros(self.shape)
        theta = torch.cat([p.reshape(-1) for p in parameters])
        contributions = theta.index_select(0, self.parameter) * self.value.to(theta)
        flat = theta.new_zeros(math.prod(self.shape)).index_add(0, self.position, contributions)
        return flat.view(self.shape)

    def extra_repr(self) -> str:
        return f"shape={list(self.shape)}, nonzeros={self.position.numel()}"
