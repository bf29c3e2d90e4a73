"""Equivariant linear maps between representations of a group G ≤ O(3)."""

from __future__ import annotations

import math

import torch
from e3nn import o3
from torch import Tensor, nn

from symgraph.checks import check_parameter_dtype
from symgraph.groups import MatrixGroup, Rep, as_rep, block_hom_basis, equivariant_basis
from symgraph.nn.assembly import SparseAssembly, block_entries

__all__ = ["EquivariantLinear", "InvariantBias", "invariant_subspace"]


def invariant_subspace(rep: Rep) -> list[tuple[int, Tensor]]:
    """Per block of ``rep``: ``(block index, basis [n, d])`` of its G-invariant vectors (n > 0)."""
    check_rep(rep)
    trivial = Rep("0e", rep.group).blocks[0][1]
    out = []
    for index, (_, block) in enumerate(rep.blocks):
        basis = block_hom_basis(rep.group, trivial, block)  # [n, d, 1]
        if basis.shape[0]:
            out.append((index, basis[..., 0]))
    return out


def check_rep(rep: object, name: str = "rep") -> Rep:
    """``rep`` must be a :class:`~symgraph.groups.Rep` (it carries the group)."""
    if not isinstance(rep, Rep):
        raise TypeError(
            f"{name}: expected a symgraph Rep (it names the group), got "
            f"{type(rep).__name__} {rep!r}; build one with Rep({rep!r}, group)"
        )
    return rep


class InvariantBias(nn.Module):
    """Adds a learned G-invariant vector of ``rep``: only invariant components get a bias.

    The vector is assembled from the per-block parameters by one :class:`SparseAssembly`
    (a gather, a product and a scatter, whatever the number of blocks).

    Shapes:
        ``x [..., rep.dim] -> [..., rep.dim]``.
    """

    def __init__(self, rep: Rep) -> None:
        super().__init__()
        self.rep = check_rep(rep)
        self.biases = nn.ParameterList()
        self.block_indices: list[int] = []  # the block of rep that each bias belongs to
        slices = rep.slices()
        entries = []
        for block_index, vectors in invariant_subspace(rep):
            mul = rep.blocks[block_index][0]
            self.biases.append(nn.Parameter(torch.zeros(mul, len(vectors))))
            self.block_indices.append(block_index)
            entries.append(
                block_entries(vectors, (slices[block_index].start,), muls=(mul,), strides=(1,))
            )
        self.assembly = SparseAssembly((rep.dim,), entries, [b.numel() for b in self.biases])
        self.dim = sum(b.numel() for b in self.biases)

    def reset_parameters(self) -> None:
        for bias in self.biases:
            nn.init.zeros_(bias)

    def vector(self, like: Tensor) -> Tensor:
        """The bias ``[rep.dim]`` (dtype/device of the parameters, or of ``like`` when there
        are none)."""
        return self.assembly(list(self.biases), like)

    def forward(self, x: Tensor) -> Tensor:
        """``x [..., rep.dim] -> [..., rep.dim]``."""
        if not isinstance(x, Tensor):
            raise TypeError(f"x: expected a tensor [..., {self.rep.dim}], got {type(x).__name__}")
        if x.dim() == 0 or x.shape[-1] != self.rep.dim:
            raise ValueError(
                f"x: expected last dimension {self.rep.dim} (= dim of {self.rep.short()}), "
                f"got {list(x.shape)}"
            )
        check_parameter_dtype(x, self, "x")  # x + bias would promote float32 x silently
        return x + self.vector(x) if self.dim else x

    def extra_repr(self) -> str:
        return f"{self.rep.short()}, invariant parameters={self.dim}"


class EquivariantLinear(nn.Module):
    """``y = W x + b`` with ``W ∈ Hom_G(rep_in, rep_out)`` and ``b`` G-invariant.

    The weight is ``Σ_k w_k B_k`` over the block-pair basis of :func:`equivariant_basis`
    (each small basis scaled by ``sqrt(d_out)`` so that unit-variance inputs give roughly
    unit-variance outputs with the default initialisation); the bias lives only on the
    invariant components of the output (``0e`` and, for subgroups, e.g. the z component of
    ``1o`` under SO(2)).

    Args:
        rep_in: input representation (Rep, e3nn Irreps or irreps string).
        rep_out: output representation.
        group: the group, when the representations are given as strings (default O(3)).
        bias: learn an invariant bias.

    Shapes:
        ``x [..., rep_in.dim] -> [..., rep_out.dim]``.
    """

    def __init__(
        self,
        rep_in: Rep | str | o3.Irreps,
        rep_out: Rep | str | o3.Irreps,
        group: MatrixGroup | str | None = None,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if group is None and isinstance(rep_in, Rep):
            group = rep_in.group
        self.rep_in = as_rep(rep_in, group, "rep_in")
        self.rep_out = as_rep(rep_out, self.rep_in.group, "rep_out")
        self.basis = equivariant_basis(self.rep_in, self.rep_out)
        self.weights = nn.ParameterList()
        self._fan_in = [0] * len(self.rep_out.blocks)
        entries = []
        for pair in self.basis.pairs:
            d_out = pair.basis.shape[1]
            shape = (pair.mul_out, pair.mul_in, pair.basis.shape[0])
            self.weights.append(nn.Parameter(torch.empty(shape)))
            self._fan_in[pair.index_out] += pair.mul_in * pair.basis.shape[0]
            entries.append(
                block_entries(
                    pair.basis * math.sqrt(d_out),
                    offsets=(pair.slice_out.start, pair.slice_in.start),
                    muls=shape[:2],
                    strides=(self.rep_in.dim, 1),
                )
            )
        self.assembly = SparseAssembly(
            (self.rep_out.dim, self.rep_in.dim), entries, [w.numel() for w in self.weights]
        )
        self.bias = InvariantBias(self.rep_out) if bias else None
        self.reset_parameters()

    @property
    def irreps_in(self) -> o3.Irreps | None:
        return self.rep_in.irreps

    @property
    def irreps_out(self) -> o3.Irreps | None:
        return self.rep_out.irreps

    def reset_parameters(self) -> None:
        """Weights ``N(0, 1/fan_in)`` per output block, biases zero."""
        for pair, weight in zip(self.basis.pairs, self.weights):
            fan_in = max(self._fan_in[pair.index_out], 1)
            nn.init.normal_(weight, std=1.0 / math.sqrt(fan_in))
        if self.bias is not None:
            self.bias.reset_parameters()

    def weight_matrix(self, like: Tensor | None = None) -> Tensor:
        """The dense equivariant matrix ``[rep_out.dim, rep_in.dim]`` (dtype/device of the
        weights, or of ``like`` when there are none)."""
        return self.assembly(list(self.weights), like)

    def forward(self, x: Tensor) -> Tensor:
        """``x [..., rep_in.dim] -> [..., rep_out.dim]``."""
        check_parameter_dtype(self.rep_in.check_features(x, "x"), self, "x")
        y = x @ self.weight_matrix(like=x).T
        return y if self.bias is None else self.bias(y)

    def extra_repr(self) -> str:
        return (
            f"{self.rep_in.short()} -> {self.rep_out.short()}, group={self.rep_in.group.name}, "
            f"weights={self.basis.dim}, bias={self.bias is not None and self.bias.dim > 0}"
        )
