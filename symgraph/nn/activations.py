"""Equivariant nonlinearities: gated, norm-based and pointwise (regular representations).

Which rule applies to a block of a representation:

- ``0e`` (invariant scalars): SiLU;
- ``0o`` (pseudo-scalars, sign of ``det g``): tanh, an odd function;
- regular representations of a finite group: SiLU pointwise (permutations commute with it);
- everything else (``l ≥ 1`` irreps, tensor products): each copy is multiplied by an
  invariant factor — ``sigmoid(gate)`` for :class:`Gate`, ``sigmoid(|x| + b)`` for
  :class:`NormActivation`. Both commute with the orthogonal action of G.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from symgraph.checks import as_number, check_parameter_dtype, is_real
from symgraph.groups import IrrepBlock, RegularBlock, Rep
from symgraph.nn.linear import check_rep
from symgraph.ops.gate import GateSegment, gate

__all__ = ["Gate", "NormActivation", "gated_blocks", "gate_rep"]


def gated_blocks(rep: Rep) -> list[int]:
    """Indices of the blocks of ``rep`` that need an invariant multiplier (not scalars/regular)."""
    out = []
    for index, (_, block) in enumerate(rep.blocks):
        scalar = isinstance(block, IrrepBlock) and block.l == 0
        if not scalar and not isinstance(block, RegularBlock):
            out.append(index)
    return out


def gate_rep(rep: Rep) -> Rep:
    """``rep ⊕ k·0e``: the input a :class:`Gate` needs to produce ``rep`` (one gate per copy)."""
    num_gates = sum(rep.blocks[i][0] for i in gated_blocks(rep))
    return rep + Rep(f"{num_gates}x0e", rep.group) if num_gates else rep


def gate_segments(rep: Rep) -> tuple[GateSegment, ...]:
    """The row segments of a :class:`Gate` on ``rep`` (adjacent SiLU rows merged)."""
    gated_set = set(gated_blocks(rep))
    segments: list[GateSegment] = []
    start, gate_start = 0, rep.dim
    for index, (mul, block) in enumerate(rep.blocks):
        if index in gated_set:
            segments.append(GateSegment("gated", start, mul, block.dim, gate_start))
            gate_start += mul
        else:
            pseudo = isinstance(block, IrrepBlock) and block.l == 0 and block.parity == -1
            kind = "tanh" if pseudo else "silu"
            last = segments[-1] if segments else None
            if last is not None and last.kind == kind == "silu":
                segments[-1] = GateSegment(kind, last.start, 1, last.length + mul * block.dim)
            else:
                segments.append(GateSegment(kind, start, 1, mul * block.dim))
        start += mul * block.dim
    return tuple(segments)


def _scalar_activation(block: IrrepBlock | RegularBlock, x: Tensor) -> Tensor:
    if isinstance(block, IrrepBlock) and block.parity == -1:
        return torch.tanh(x)
    return F.silu(x)


class Gate(nn.Module):
    """Gated nonlinearity: ``gate_rep(rep) -> rep``.

    Scalars and regular blocks go through their pointwise activation; every copy of another
    block is scaled by ``sigmoid`` of its own invariant gate, taken from the trailing
    ``0e`` channels of the input. Pseudo-scalars (``0o``) use ``tanh``. One ``sigmoid`` over
    the input, then one broadcast product per segment of rows
    (:class:`~symgraph.ops.gate.GateFunction`; a single gather and product on small
    inputs, :func:`~symgraph.ops.gate.gate`), along whichever axis holds the
    features (``dim=0`` for the feature-major ``[D, E]`` layout of
    :class:`~symgraph.nn.ImplicitKernel`).

    Shapes:
        ``x [..., gate_rep(rep).dim] -> [..., rep.dim]`` (or ``[gate_rep(rep).dim, ...] ->
        [rep.dim, ...]`` with ``dim=0``).
    """

    def __init__(self, rep: Rep) -> None:
        super().__init__()
        self.rep = check_rep(rep)
        self.rep_in = gate_rep(rep)
        self.segments = gate_segments(rep)
        self.num_gates = sum(seg.mul for seg in self.segments if seg.kind == "gated")

    def forward(self, x: Tensor, dim: int = -1) -> Tensor:
        """Gate ``x`` with features along ``dim`` (-1: ``[..., D_in]``; 0: ``[D_in, ...]``)."""
        if dim not in (0, -1, x.dim() - 1):
            raise ValueError(f"dim: expected 0 or -1, got {dim!r}")
        if x.dim() == 0 or x.shape[dim] != self.rep_in.dim:
            raise ValueError(
                f"x: expected {self.rep_in.dim} features along dim {dim} "
                f"({self.rep_in.short()}), got shape {list(x.shape)}"
            )
        return gate(x, dim % x.dim(), self.segments)

    def extra_repr(self) -> str:
        return f"{self.rep_in.short()} -> {self.rep.short()}"


class NormActivation(nn.Module):
    """Norm nonlinearity: each non-scalar copy ``v`` becomes ``v · sigmoid(|v| + b)``.

    ``|v|`` is computed as ``sqrt(|v|² + eps)`` so the map is smooth at 0 (``eps > 0``;
    ``eps = 0`` takes the exact norm). One learned bias ``b`` per copy. Scalars and regular
    blocks use the pointwise activations.

    Shapes:
        ``x [..., rep.dim] -> [..., rep.dim]``.
    """

    def __init__(self, rep: Rep, eps: float = 1e-8) -> None:
        super().__init__()
        if not is_real(eps) or not 0 <= eps < math.inf:
            raise ValueError(f"eps: expected a finite number >= 0, got {eps!r}")
        self.rep = self.rep_in = check_rep(rep)
        self.eps = as_number(eps)
        self._gated = set(gated_blocks(rep))
        num = sum(rep.blocks[i][0] for i in self._gated)
        self.bias = nn.Parameter(torch.zeros(num))

    def reset_parameters(self) -> None:
        """Biases ``b = 0``."""
        nn.init.zeros_(self.bias)

    def forward(self, x: Tensor) -> Tensor:
        check_parameter_dtype(self.rep.check_features(x, "x"), self, "x")
        outputs, used = [], 0
        for index, ((mul, block), where) in enumerate(zip(self.rep.blocks, self.rep.slices())):
            part = x[..., where]
            if index in self._gated:
                part = part.reshape(*part.shape[:-1], mul, block.dim)
                norm = torch.sqrt((part * part).sum(-1) + self.eps)
                scale = torch.sigmoid(norm + self.bias[used : used + mul])
                used += mul
                outputs.append((part * scale[..., None]).reshape(*part.shape[:-2], mul * block.dim))
            else:
                outputs.append(_scalar_activation(block, part))
        return torch.cat(outputs, dim=-1) if outputs else x

    def extra_repr(self) -> str:
        return self.rep.short()
