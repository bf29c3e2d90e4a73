"""Equivariant bilinear maps ``rep_a × rep_b -> rep_out`` (tensor products restricted to G)."""

from __future__ import annotations

import math

import torch
from e3nn import o3
from torch import Tensor, nn

from symgraph.checks import check_parameter_dtype
from symgraph.groups import MatrixGroup, Rep, as_rep, bilinear_basis
from symgraph.nn.assembly import SparseAssembly, block_entries

__all__ = ["EquivariantBilinear"]


class EquivariantBilinear(nn.Module):
    """``y_c = Σ_ab W[c, a, b] x_a z_b`` with ``W ∈ Hom_G(rep_a ⊗ rep_b, rep_out)``.

    The weight tensor is assembled from the per-triple bases of :func:`bilinear_basis` (for
    SO(3)/O(3) these are the Clebsch–Gordan paths, for subgroups there are more).

    Args:
        rep_a, rep_b: the two input representations.
        rep_out: the output representation.
        group: the group when representations are given as strings.

    Shapes:
        ``a [..., rep_a.dim], b [..., rep_b.dim] -> [..., rep_out.dim]``.
    """

    def __init__(
        self,
        rep_a: Rep | str | o3.Irreps,
        rep_b: Rep | str | o3.Irreps,
        rep_out: Rep | str | o3.Irreps,
        group: MatrixGroup | str | None = None,
    ) -> None:
        super().__init__()
        if group is None and isinstance(rep_a, Rep):
            group = rep_a.group
        self.rep_a = as_rep(rep_a, group, "rep_a")
        self.rep_b = as_rep(rep_b, self.rep_a.group, "rep_b")
        self.rep_out = as_rep(rep_out, self.rep_a.group, "rep_out")
        self.basis = bilinear_basis(self.rep_a, self.rep_b, self.rep_out)
        self.weights = nn.ParameterList()
        self._fan_in = [0] * len(self.rep_out.blocks)
        dim_a, dim_b = self.rep_a.dim, self.rep_b.dim
        entries = []
        for t in self.basis.triples:
            n, d_out = t.basis.shape[:2]
            shape = (t.mul_out, t.mul_a, t.mul_b, n)
            self.weights.append(nn.Parameter(torch.empty(shape)))
            self._fan_in[t.index_out] += t.mul_a * t.mul_b * n
            entries.append(
                block_entries(
                    t.basis * math.sqrt(d_out),
                    offsets=(t.slice_out.start, t.slice_a.start, t.slice_b.start),
                    muls=shape[:3],
                    strides=(dim_a * dim_b, dim_b, 1),
                )
            )
        self.assembly = SparseAssembly(
            (self.rep_out.dim, dim_a, dim_b), entries, [w.numel() for w in self.weights]
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Weights ``N(0, 1/fan_in)`` per output block."""
        for triple, weight in zip(self.basis.triples, self.weights):
            nn.init.normal_(weight, std=1.0 / math.sqrt(max(self._fan_in[triple.index_out], 1)))

    def weight_tensor(self, like: Tensor | None = None) -> Tensor:
        """The bilinear form ``[rep_out.dim, rep_a.dim, rep_b.dim]`` (dtype/device of the
        weights, or of ``like`` when there are none)."""
        return self.assembly(list(self.weights), like)

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        """``a [..., rep_a.dim], b [..., rep_b.dim] -> [..., rep_out.dim]``."""
        check_parameter_dtype(self.rep_a.check_features(a, "a"), self, "a")
        check_parameter_dtype(self.rep_b.check_features(b, "b"), self, "b")
        try:
            torch.broadcast_shapes(a.shape[:-1], b.shape[:-1])
        except RuntimeError:
            raise ValueError(
                f"b: expected leading dimensions that broadcast with a's {list(a.shape[:-1])}, "
                f"got {list(b.shape[:-1])}"
            ) from None
        w = self.weight_tensor(like=a)
        return torch.einsum("cab,...a,...b->...c", w, a, b)

    def extra_repr(self) -> str:
        return (
            f"{self.rep_a.short()} ⊗ {self.rep_b.short()} -> {self.rep_out.short()}, "
            f"group={self.rep_a.group.name}, weights={self.basis.dim}"
        )
