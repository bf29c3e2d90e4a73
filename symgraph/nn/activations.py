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

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from symgraph.groups import IrrepBlock, RegularBlock, Rep

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


def _scalar_activation(block: IrrepBlock | RegularBlock, x: Tensor) -> Tensor:
    if isinstance(block, IrrepBlock) and block.parity == -1:
        return torch.tanh(x)
    return F.silu(x)


class Gate(nn.Module):
    """Gated nonlinearity: ``gate_rep(rep) -> rep``.

    Scalars and regular blocks go through their pointwise activation; every copy of another
    block is scaled by ``sigmoid`` of its own invariant gate, taken from the trailing
    ``0e`` channels of the input. Consecutive blocks of the same kind are processed as one
    contiguous run (one SiLU for all leading scalars, one product for all gated blocks).

    Shapes:
        ``x [..., gate_rep(rep).dim] -> [..., rep.dim]``.
    """

    def __init__(self, rep: Rep) -> None:
        super().__init__()
        self.rep = rep
        self.rep_in = gate_rep(rep)
        gated_set = set(gated_blocks(rep))
        runs: list[list] = []  # [kind, start, stop]
        gate_index = []
        used = 0
        for index, ((mul, block), where) in enumerate(zip(rep.blocks, rep.slices())):
            if index in gated_set:
                kind = "gate"
                gate_index += torch.arange(used, used + mul).repeat_interleave(block.dim).tolist()
                used += mul
            elif isinstance(block, IrrepBlock) and block.parity == -1:
                kind = "tanh"
            else:
                kind = "silu"
            if runs and runs[-1][0] == kind and runs[-1][2] == where.start:
                runs[-1][2] = where.stop
            else:
                runs.append([kind, where.start, where.stop])
        self.runs = [tuple(r) for r in runs]
        self.num_gates = used
        self.register_buffer(
            "gate_index", torch.tensor(gate_index, dtype=torch.long), persistent=False
        )

    def forward(self, x: Tensor) -> Tensor:
        self.rep_in.check_features(x, "x")
        gates = torch.sigmoid(x[..., self.rep.dim :]) if self.num_gates else None
        outputs, gate_offset = [], 0
        for kind, start, stop in self.runs:
            values = x[..., start:stop]
            if kind == "silu":
                outputs.append(F.silu(values))
            elif kind == "tanh":
                outputs.append(torch.tanh(values))
            else:
                index = self.gate_index[gate_offset : gate_offset + stop - start]
                gate_offset += stop - start
                outputs.append(values * gates.index_select(-1, index))
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=-1)

    def extra_repr(self) -> str:
        return f"{self.rep_in.short()} -> {self.rep.short()}"


class NormActivation(nn.Module):
    """Norm nonlinearity: each non-scalar copy ``v`` becomes ``v · sigmoid(|v| + b)``.

    ``|v|`` is computed as ``sqrt(|v|² + eps)`` so the map is smooth at 0. One learned bias
    ``b`` per copy. Scalars and regular blocks use the pointwise activations.

    Shapes:
        ``x [..., rep.dim] -> [..., rep.dim]``.
    """

    def __init__(self, rep: Rep, eps: float = 1e-8) -> None:
        super().__init__()
        self.rep = self.rep_in = rep
        self.eps = eps
        self._gated = set(gated_blocks(rep))
        num = sum(rep.blocks[i][0] for i in self._gated)
        self.bias = nn.Parameter(torch.zeros(num))

    def forward(self, x: Tensor) -> Tensor:
        self.rep.check_features(x, "x")
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
