"""Assembling dense equivariant weights from their free parameters in three tensor ops.

An equivariant weight is a sum over small bases, ``W = Σ_p Σ_k w_{p,k} B_{p,k}`` placed in
blocks of a dense matrix (or 3-tensor). Doing that block by block costs two to four small
ops per block pair and as many backward nodes, which dominates a layer's fixed cost when a
representation has many blocks (subgroups such as C4 split ``1o`` into several blocks).
:class:`SparseAssembly` precomputes, once, every nonzero entry of every basis as a triple
``(dense position, parameter index, value)``, so that assembly is

    W.flat = zeros.index_add(position, θ[parameter] · value)

with ``θ`` all parameters flattened: a gather, a product and a scatter, whatever the
number of blocks, with the same cheap ops in backward. Flattening and concatenating the
parameters happens inside one autograd function (:class:`_Assemble`): recorded op by op,
it would add three autograd nodes per parameter tensor, which on small weights (a kernel
evaluated at a lattice's stencil offsets) cost more than the assembly itself.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from symgraph.nn.exact_buffers import ExactBufferModule

__all__ = ["JointAssembly", "SparseAssembly", "block_entries"]


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


class _Assemble(torch.autograd.Function):
    """``(position, parameter, value, numel, *tensors) -> flat [numel]`` with
    ``flat[position] += θ[parameter] · value`` and ``θ`` the tensors flattened and
    concatenated; one autograd node. The backward is made of differentiable ops (the
    transposed gather and scatter), so higher derivatives work."""

    @staticmethod
    def forward(
        ctx: Any, position: Tensor, parameter: Tensor, value: Tensor, numel: int, *tensors: Tensor
    ) -> Tensor:
        theta = torch.cat([t.reshape(-1) for t in tensors])
        ctx.save_for_backward(position, parameter, value)
        ctx.shapes = [t.shape for t in tensors]
        contributions = theta.index_select(0, parameter).mul_(value)
        return theta.new_zeros(numel).index_add_(0, position, contributions)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        position, parameter, value = ctx.saved_tensors
        sizes = [shape.numel() for shape in ctx.shapes]
        contributions = grad.index_select(0, position) * value
        grad_theta = grad.new_zeros(sum(sizes)).index_add(0, parameter, contributions)
        grads = [
            g.view(shape) if needed else None
            for g, shape, needed in zip(
                grad_theta.split(sizes), ctx.shapes, ctx.needs_input_grad[4:], strict=True
            )
        ]
        return (None, None, None, None, *grads)


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
        self.num_parameters = int(sum(sizes))
        starts = torch.tensor([0, *sizes[:-1]], dtype=torch.long).cumsum(0).tolist()
        positions = [e[0] for e in entries] or [torch.zeros(0, dtype=torch.long)]
        parameters = [e[1] + s for e, s in zip(entries, starts)] or [positions[0]]
        values = [e[2] for e in entries] or [torch.zeros(0, dtype=torch.float64)]
        self.register_buffer("position", torch.cat(positions), persistent=False)
        self.register_buffer("parameter", torch.cat(parameters), persistent=False)
        self.register_exact_buffer("value", torch.cat(values))

    @property
    def exact_value(self) -> Tensor:
        """The basis values of the nonzero entries, in float64 (``[nnz]``)."""
        return self._exact_masters["value"]

    def forward(self, parameters: Sequence[nn.Parameter], like: Tensor | None = None) -> Tensor:
        """The dense tensor ``[*shape]`` (dtype/device of the parameters, else of ``like``)."""
        if not parameters:
            reference = like if like is not None else self.value
            return reference.new_zeros(self.shape)
        value = self.value.to(parameters[0])
        numel = math.prod(self.shape)
        flat = _Assemble.apply(self.position, self.parameter, value, numel, *parameters)
        return flat.view(self.shape)

    def extra_repr(self) -> str:
        return f"shape={list(self.shape)}, nonzeros={self.position.numel()}"


class JointAssembly(ExactBufferModule):
    """Several :class:`SparseAssembly` evaluated as one: one gather, product and scatter
    (and one autograd node) for all of them, e.g. every weight and bias of a kernel MLP.

    The assemblies' nonzero entries are concatenated once, at construction; the parameters
    are read at every call, so the modules keep owning them (``state_dict`` unchanged).

    Args:
        assemblies: the assemblies, in the order :meth:`forward` takes their parameters
            and returns their tensors.
    """

    def __init__(self, assemblies: Sequence[SparseAssembly]) -> None:
        super().__init__()
        self.shapes = [a.shape for a in assemblies]
        self.sizes = [math.prod(shape) for shape in self.shapes]
        out_starts = torch.tensor([0, *self.sizes[:-1]], dtype=torch.long).cumsum(0).tolist()
        counts = [a.num_parameters for a in assemblies]
        in_starts = torch.tensor([0, *counts[:-1]], dtype=torch.long).cumsum(0).tolist()
        position = [a.position + start for a, start in zip(assemblies, out_starts)]
        parameter = [a.parameter + start for a, start in zip(assemblies, in_starts)]
        value = [a.exact_value for a in assemblies]
        self.register_buffer("position", torch.cat(position), persistent=False)
        self.register_buffer("parameter", torch.cat(parameter), persistent=False)
        self.register_exact_buffer("value", torch.cat(value))

    def forward(self, parameters: Sequence[Sequence[Tensor]], like: Tensor) -> list[Tensor]:
        """The dense tensors, one per assembly (dtype/device of the parameters, else of
        ``like``); ``parameters[i]`` are the parameter tensors of assembly ``i``."""
        tensors = [t for group in parameters for t in group]
        if not tensors:
            return [like.new_zeros(shape) for shape in self.shapes]
        value = self.value.to(tensors[0])
        total = sum(self.sizes)
        flat = _Assemble.apply(self.position, self.parameter, value, total, *tensors)
        return [chunk.view(shape) for chunk, shape in zip(flat.split(self.sizes), self.shapes)]

    def extra_repr(self) -> str:
        return f"assemblies={len(self.shapes)}, nonzeros={self.position.numel()}"
