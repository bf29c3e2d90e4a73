"""Invariant readouts over graphs and an equivariant layer norm."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from symgraph.checks import as_number, check_batch, check_parameter_dtype, is_int, is_real
from symgraph.groups import IrrepBlock, Rep
from symgraph.nn.activations import gated_blocks
from symgraph.nn.exact_buffers import ExactBufferModule
from symgraph.nn.linear import check_rep, invariant_subspace
from symgraph.ops.fused import segment_reduce

__all__ = ["InvariantReadout", "EquivariantLayerNorm"]

_REDUCTIONS = ("sum", "mean", "max")


class InvariantReadout(ExactBufferModule):
    """Pool the G-invariant part of node features over each graph.

    The invariant components of ``rep`` (``0e`` copies and, for subgroups, e.g. the z
    component of ``1o`` under SO(2)) are projected out per node and reduced per graph.

    Args:
        rep: the node representation.
        reduce: ``"sum"``, ``"mean"`` or ``"max"`` over the nodes of each graph.

    Shapes:
        ``x [N, rep.dim], batch [N] -> [num_graphs, num_invariants]``.
    """

    def __init__(self, rep: Rep, reduce: str = "sum") -> None:
        super().__init__()
        if reduce not in _REDUCTIONS:
            raise ValueError(f"reduce: expected one of {_REDUCTIONS}, got {reduce!r}")
        self.rep, self.reduce = check_rep(rep), reduce
        rows = []
        slices = rep.slices()
        for block_index, vectors in invariant_subspace(rep):
            mul, block = rep.blocks[block_index]
            start = slices[block_index].start
            for copy in range(mul):
                for vector in vectors:
                    row = torch.zeros(rep.dim, dtype=torch.float64)
                    row[start + copy * block.dim : start + (copy + 1) * block.dim] = vector
                    rows.append(row)
        if not rows:
            raise ValueError(f"rep: {rep!r} has no invariant component to read out")
        self.num_invariants = len(rows)
        self.register_exact_buffer("projection", torch.stack(rows))

    def forward(
        self, x: Tensor, batch: Tensor | None = None, num_graphs: int | None = None
    ) -> Tensor:
        self.rep.check_features(x, "x")
        invariants = x @ self.exact_buffer_as("projection", x).T  # any float dtype (no weights)
        single = batch is None  # one graph, even without nodes
        if batch is None:
            batch = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        batch = check_batch(batch, x.shape[0], "batch", require_sorted=False)
        needed = int(batch.max()) + 1 if batch.numel() else int(single)
        if num_graphs is not None and not is_int(num_graphs):
            raise ValueError(f"num_graphs: expected an int or None, got {num_graphs!r}")
        if num_graphs is not None and num_graphs < needed:
            raise ValueError(
                f"num_graphs: expected at least batch.max() + 1 = {needed}, got {num_graphs}"
            )
        size = num_graphs if num_graphs is not None else needed
        return segment_reduce(invariants, batch, size, self.reduce)

    def extra_repr(self) -> str:
        return f"{self.rep.short()} -> {self.num_invariants} invariants, reduce={self.reduce}"


class EquivariantLayerNorm(nn.Module):
    """Layer norm that commutes with G.

    Scalar blocks (``0e``/``0o``) and regular blocks are normalised like ``nn.LayerNorm``
    over all their channels (mean removed only for ``0e``, which is invariant); every other
    block type is divided by the root-mean-square norm of its copies. Learned scales are
    per copy (invariant), learned shifts only on ``0e``.

    Args:
        rep: the feature representation.
        eps: positive, added to each mean square before its square root.

    Shapes:
        ``x [..., rep.dim] -> [..., rep.dim]``.
    """

    def __init__(self, rep: Rep, eps: float = 1e-6) -> None:
        super().__init__()
        if not is_real(eps) or not eps > 0:
            raise ValueError(f"eps: expected a positive number, got {eps!r}")
        self.rep, self.eps = check_rep(rep), as_number(eps)
        self._gated = set(gated_blocks(rep))
        self.scales = nn.ParameterList([nn.Parameter(torch.ones(m)) for m, _ in rep.blocks])
        self.shifts = nn.ParameterList(
            [
                nn.Parameter(torch.zeros(m))
                for m, b in rep.blocks
                if isinstance(b, IrrepBlock) and b.is_invariant_scalar
            ]
        )

    def reset_parameters(self) -> None:
        for scale in self.scales:
            nn.init.ones_(scale)
        for shift in self.shifts:
            nn.init.zeros_(shift)

    def forward(self, x: Tensor) -> Tensor:
        check_parameter_dtype(self.rep.check_features(x, "x"), self, "x")
        outputs, shift_index = [], 0
        for index, ((mul, block), where) in enumerate(zip(self.rep.blocks, self.rep.slices())):
            part = x[..., where].reshape(*x.shape[:-1], mul, block.dim)
            invariant_scalar = isinstance(block, IrrepBlock) and block.is_invariant_scalar
            if invariant_scalar:
                part = part - part.mean(dim=(-2, -1), keepdim=True)
            if index in self._gated:
                norm2 = part.pow(2).sum(-1).mean(-1, keepdim=True)[..., None]
            else:
                norm2 = part.pow(2).mean(dim=(-2, -1), keepdim=True)
            part = part / torch.sqrt(norm2 + self.eps) * self.scales[index][:, None]
            if invariant_scalar:
                part = part + self.shifts[shift_index][:, None]
                shift_index += 1
            outputs.append(part.reshape(*x.shape[:-1], mul * block.dim))
        return torch.cat(outputs, dim=-1) if outputs else x

    def extra_repr(self) -> str:
        return self.rep.short()
