"""Learned symmetry-breaking inputs: relaxing an equivariant network by a few global features.

:class:`SymmetryBreakingInput` appends the same learned vector ``b`` of a representation
``rep`` to the features of every node: ``x [N, C] -> [x, b] [N, C + rep.dim]``. A network
``f`` made of G-equivariant layers that takes ``[x, b]`` is equivariant *jointly*,
``f(ρ(g) x, ρ_b(g) b) = ρ_out(g) f(x, b)``, so with ``b`` fixed it is equivariant exactly
for the group elements that fix ``b``: for a vector (``"1x1o"``) in the plane of a planar
group, only the identity (and, in a dihedral group, the flip whose axis is ``b``'s line) --
a single learned global direction, such as gravity, is all that breaks the symmetry.

This is the smallest relaxation of an equivariant network (``rep.dim`` parameters, however
many layers read ``b``) and the opposite end from the relaxed kernels of
:mod:`symgraph.nn.relaxed_implicit`, whose non-equivariant pathways may depend on the
offset and mix channels freely in every layer: the data can only teach the network *which
direction* is special, not new position-dependent filters.

``b`` starts at 0 (the network is then exactly equivariant) and is a relaxed layer in the
sense of :mod:`symgraph.nn.relaxed_utils`: ``relaxation_penalty() = ‖b − P b‖²`` with ``P``
the orthogonal projector onto the G-invariant vectors of ``rep`` (components of ``b``
that every group element fixes -- e.g. the ``z`` component of a vector under rotations
about ``z`` -- break nothing and cost nothing).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from symgraph.checks import check_parameter_dtype, check_tensor
from symgraph.groups import MatrixGroup, Rep
from symgraph.groups.rep import as_rep
from symgraph.nn.exact_buffers import ExactBufferModule
from symgraph.nn.relaxed_steerable import symmetry_breaking_basis

__all__ = ["SymmetryBreakingInput"]


class SymmetryBreakingInput(ExactBufferModule):
    """Appends a learned constant vector ``b`` of ``rep`` to every node's features.

    Args:
        rep: the representation of ``b`` (an irreps string with ``group``, or a Rep), e.g.
            ``"1x1o"`` for one global direction.
        group: the group of ``rep`` when it is a string.

    Shapes:
        ``x [N, C] -> [N, C + rep.dim]`` (``b`` in the last ``rep.dim`` columns).
    """

    def __init__(self, rep: Rep | str, group: MatrixGroup | str | None = None) -> None:
        super().__init__()
        self.rep = as_rep(rep, group, "rep")
        if self.rep.dim == 0:
            raise ValueError(f"rep: expected a non-empty representation, got {self.rep!r}")
        basis = symmetry_breaking_basis(self.rep)
        if basis.shape[0] == 0:
            raise ValueError(
                f"rep: every vector of '{self.rep.irreps}' is invariant under "
                f"{self.rep.group.name}, so an input of it can never break the symmetry (the "
                "network would stay exactly equivariant); expected a representation with "
                "non-invariant components, e.g. '1x1o'"
            )
        self.value = nn.Parameter(torch.zeros(self.rep.dim))
        # U [m, rep.dim]: orthonormal rows spanning the non-invariant part (float64 master)
        self.register_exact_buffer("breaking_basis", basis)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """``b = 0``: the network that reads ``b`` is exactly equivariant."""
        nn.init.zeros_(self.value)

    def forward(self, x: Tensor) -> Tensor:
        x = check_tensor(x, "x")
        if x.dim() != 2:
            raise ValueError(f"x: expected node features [N, C], got shape {list(x.shape)}")
        if not x.is_floating_point():
            raise TypeError(f"x: expected floating-point node features, got dtype {x.dtype}")
        check_parameter_dtype(x, self, "x")
        value = self.value.to(dtype=x.dtype)  # autocast: the features' precision
        return torch.cat([x, value.expand(x.shape[0], -1)], dim=-1)

    def breaking_part(self) -> Tensor:
        """``b − P b`` ``[rep.dim]``: the part of ``b`` that some group element moves."""
        basis = self.exact_buffer_as("breaking_basis", self.value)
        return basis.T @ (basis @ self.value)

    @property
    def strength(self) -> Tensor:
        """``‖b − P b‖``: how far ``b`` is from an invariant vector (0 at initialisation)."""
        return self.breaking_part().norm()

    def relaxation_penalty(self) -> Tensor:
        """``‖b − P b‖² = ‖U b‖²``: zero exactly when ``b`` breaks no symmetry."""
        return (self.exact_buffer_as("breaking_basis", self.value) @ self.value).square().sum()

    def relaxation_parameters(self) -> list[nn.Parameter]:
        """``[b]`` (freeze it at 0 for the strictly equivariant network)."""
        return [self.value]

    def extra_repr(self) -> str:
        return f"rep={self.rep.short()}, group={self.rep.group.name}"
