"""Relaxed steerable convolution on graphs (Wang, Walters, Yu, ICML 2022), for any catalog G.

A steerable kernel ``K(r) ∈ Hom(ρ_in, ρ_out)`` of the relative position ``r = x_j − x_i``
is written in a G-steerable basis,

    K(r) = Σ_k c_k(r) B_k(r),    B_k(r) = B̃_k(Y(r̂), ·),

where ``Y = (Y_0, …, Y_lmax)`` are the spherical harmonics of the direction (an
``"1x0e + 1x1o + 1x2e + …"`` feature) and ``B̃_k`` runs over the equivariant bilinear maps
``Y ⊗ ρ_in → ρ_out`` of :func:`symgraph.groups.bilinear_basis` (per block triple: the
Clebsch–Gordan paths of G; for subgroups of O(3) there are more than for O(3)). Then
``B_k(g r) = ρ_out(g) B_k(r) ρ_in(g)^{-1}``, and ``K`` is equivariant whenever the
coefficients are G-invariant functions of ``r``.

The coefficients have two pathways:

    c_k(r) = Σ_n R_n(|r|) θ_{n,k}  +  Σ_{n,m} R_n(|r|) Ỹ_m(r̂) φ_{n,m,k}

with ``R`` a Gaussian radial basis (an invariant) and ``Ỹ = U Y`` the components of ``Y``
*orthogonal to the G-invariant ones* (``U`` an orthonormal basis of that complement, so
``Ỹ`` averages to zero over every G-orbit of directions and cannot imitate the invariant
pathway). ``θ`` is the equivariant kernel; ``φ`` (``relaxed_coefficients``) makes the
coefficients vary with the position itself — the relaxation ``w_l(y)`` of the paper on a
continuous domain. ``φ`` starts at zero, so the layer starts exactly equivariant, and
:meth:`RelaxedSteerableConv.relaxation_penalty` is ``‖φ‖²``, the squared norm of the
non-equivariant part. (The paper penalises differences of ``w`` between neighbouring
stencil positions; on graphs there is no stencil, and ``‖φ‖²`` vanishes exactly on the
strictly equivariant layers.)

The relaxed implicit kernel (an :class:`~symgraph.nn.ImplicitKernel` plus a
non-equivariant pathway) is not part of this module.

Cost: the layer evaluates every edge's coefficients of every basis path (``[E, basis.dim]``,
``basis.dim`` in the thousands for ``16x0e + 8x1o + 4x2e``) and its messages one edge at a
time. On large or dense graphs :class:`~symgraph.nn.RelaxedImplicitSteerableConv`, which
contracts through :mod:`symgraph.ops` and never builds per-edge kernels, is far cheaper
(D4, ``16x0e + 8x1o + 4x2e``, 2,000 nodes, 114,570 edges, forward and backward on one CPU
core: about 18 s against 0.4 s).
"""

from __future__ import annotations

import math

import torch
from e3nn import o3
from torch import Tensor, nn

from symgraph.checks import check_features, check_parameter_dtype
from symgraph.groups import MatrixGroup, Rep, as_rep, bilinear_basis
from symgraph.nn.embedding import (
    RadialEmbedding,
    cosine_cutoff,
    direction_embedding,
    edge_length,
    spherical_harmonics_rep,
)
from symgraph.nn.exact_buffers import ExactBufferModule
from symgraph.nn.kernel import check_radial_settings
from symgraph.nn.linear import EquivariantLinear, InvariantBias, check_rep, invariant_subspace
from symgraph.nn.relaxed_utils import check_graph, relative_positions

__all__ = ["RelaxedSteerableConv", "symmetry_breaking_basis"]

_AGGREGATIONS = ("add", "mean")


def symmetry_breaking_basis(rep: Rep) -> Tensor:
    """Orthonormal rows ``[m, rep.dim]`` (float64) spanning the complement of the
    G-invariant vectors of ``rep``: ``U v`` keeps exactly the non-invariant part of ``v``."""
    check_rep(rep)
    projector = torch.zeros(rep.dim, rep.dim, dtype=torch.float64)
    slices = rep.slices()
    for block_index, vectors in invariant_subspace(rep):
        mul, block = rep.blocks[block_index]
        start = slices[block_index].start
        for copy in range(mul):
            where = slice(start + copy * block.dim, start + (copy + 1) * block.dim)
            projector[where, where] += vectors.T @ vectors
    values, vectors = torch.linalg.eigh(torch.eye(rep.dim, dtype=torch.float64) - projector)
    return vectors[:, values > 0.5].T.contiguous()


class RelaxedSteerableConv(ExactBufferModule):
    """Relaxed steerable convolution ``out_i = Σ_{j→i} K(x_j − x_i) f_j (+ W f_i + b)``.

    Args:
        rep_in, rep_out: input/output representations (Rep, e3nn Irreps or irreps string).
        group: G, any catalog group, finite or continuous (when the representations are
            strings; default O(3)).
        lmax: highest spherical-harmonic degree of the kernel basis and of the relaxation.
        num_radial: size of the Gaussian radial basis.
        r_max: range of the radial basis when there is no cutoff.
        cutoff: radius where kernels vanish smoothly (``None``: no envelope).
        aggr: ``"add"`` or ``"mean"`` over incoming edges.
        self_interaction: add an equivariant linear map of the node's own features.
        bias: learned bias on the invariant output components.

    Attributes:
        coefficients: ``[num_radial, basis.dim]`` equivariant coefficients ``θ``.
        relaxed_coefficients: ``[num_radial * m, basis.dim]`` symmetry-breaking
            coefficients ``φ`` (zero at initialisation), ``m`` the number of non-invariant
            spherical-harmonic components under G.

    Shapes:
        ``x [N, rep_in.dim], pos [N, 3], edge_index [2, E], offsets [E, 3] (optional)
        -> [N, rep_out.dim]``.
    """

    def __init__(
        self,
        rep_in: Rep | str | o3.Irreps,
        rep_out: Rep | str | o3.Irreps,
        group: MatrixGroup | str | None = None,
        lmax: int = 2,
        num_radial: int = 8,
        r_max: float = 5.0,
        cutoff: float | None = None,
        aggr: str = "add",
        self_interaction: bool = True,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if aggr not in _AGGREGATIONS:
            raise ValueError(f"aggr: expected one of {_AGGREGATIONS}, got {aggr!r}")
        check_radial_settings(lmax, num_radial, cutoff, r_max)
        if group is None and isinstance(rep_in, Rep):
            group = rep_in.group
        self.rep_in = as_rep(rep_in, group, "rep_in")
        self.group = self.rep_in.group
        self.rep_out = as_rep(rep_out, self.group, "rep_out")
        self.rep_sh = Rep("1x0e", self.group) + spherical_harmonics_rep(lmax, self.group)
        self.lmax, self.cutoff, self.aggr = lmax, cutoff, aggr
        self.radial = RadialEmbedding(num_radial, cutoff if cutoff is not None else r_max)

        self.basis = bilinear_basis(self.rep_sh, self.rep_in, self.rep_out)
        self._fan_in = [0] * len(self.rep_out.blocks)
        for index, triple in enumerate(self.basis.triples):
            n, d_out = triple.basis.shape[:2]
            self.register_exact_buffer(f"_basis_{index}", triple.basis * math.sqrt(d_out))
            self._fan_in[triple.index_out] += triple.mul_b * n
        breaking = symmetry_breaking_basis(self.rep_sh)
        self.register_exact_buffer("_breaking", breaking)
        self.num_breaking = breaking.shape[0]

        self.coefficients = nn.Parameter(torch.empty(num_radial, self.basis.dim))
        self.relaxed_coefficients = nn.Parameter(
            torch.empty(num_radial * self.num_breaking, self.basis.dim)
        )
        self.self_linear = (
            EquivariantLinear(self.rep_in, self.rep_out, bias=False) if self_interaction else None
        )
        self.bias = InvariantBias(self.rep_out) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """``θ ~ N(0, 1/fan_in)`` per output block, ``φ = 0`` (exactly equivariant)."""
        start = 0
        with torch.no_grad():
            for triple in self.basis.triples:
                std = 1.0 / math.sqrt(max(self._fan_in[triple.index_out], 1))
                self.coefficients[:, start : start + triple.num].normal_(std=std)
                start += triple.num
        nn.init.zeros_(self.relaxed_coefficients)
        if self.self_linear is not None:
            self.self_linear.reset_parameters()
        if self.bias is not None:
            self.bias.reset_parameters()

    # ------------------------------------------------------------------ relaxation
    def relaxation_penalty(self) -> Tensor:
        """``‖φ‖²``: zero exactly when the symmetry-breaking pathway is off."""
        return self.relaxed_coefficients.pow(2).sum()

    def relaxation_parameters(self) -> list[nn.Parameter]:
        """The symmetry-breaking coefficients ``φ`` (freeze them for the strict layer)."""
        return [self.relaxed_coefficients]

    # ------------------------------------------------------------------ forward
    def edge_coefficients(self, rel: Tensor) -> tuple[Tensor, Tensor]:
        """``(c [E, basis.dim], Y [E, rep_sh.dim])``: per-edge coefficients and harmonics."""
        radial = self.radial(edge_length(rel))
        if self.cutoff is not None:
            radial = radial * cosine_cutoff(edge_length(rel), self.cutoff)[:, None]
        harmonics = torch.cat(
            [torch.ones_like(rel[:, :1]), direction_embedding(rel, self.lmax)], dim=-1
        )
        coefficients = radial @ self.coefficients
        if self.num_breaking:
            breaking = harmonics @ self._breaking.T  # [E, m]
            features = (radial[:, :, None] * breaking[:, None, :]).flatten(1)
            coefficients = coefficients + features @ self.relaxed_coefficients
        return coefficients, harmonics

    def messages(self, rel: Tensor, f: Tensor) -> Tensor:
        """``K(rel_e) f_e`` per edge: ``rel [E, 3], f [E, rep_in.dim] -> [E, rep_out.dim]``."""
        coefficients, harmonics = self.edge_coefficients(rel)
        num_edges = rel.shape[0]
        per_block: list[Tensor | None] = [None] * len(self.rep_out.blocks)
        # one split (its backward concatenates once; slices would each zero-fill [E, dim])
        per_triple = coefficients.split([t.num for t in self.basis.triples], dim=1)
        for index, (t, c) in enumerate(zip(self.basis.triples, per_triple)):
            basis = getattr(self, f"_basis_{index}")  # [n, d_out, d_sh, d_in]
            c = c.unflatten(1, (t.mul_out, t.mul_b, -1))
            fb = f[:, t.slice_b].unflatten(1, (t.mul_b, -1))
            paths = torch.einsum("kcab,ea,evb->evkc", basis, harmonics[:, t.slice_a], fb)
            out = torch.einsum("euvk,evkc->euc", c, paths).flatten(1)
            current = per_block[t.index_out]
            per_block[t.index_out] = out if current is None else current + out
        parts = [
            f.new_zeros(num_edges, mul * block.dim) if part is None else part
            for part, (mul, block) in zip(per_block, self.rep_out.blocks)
        ]
        return torch.cat(parts, dim=-1) if parts else f.new_zeros(num_edges, 0)

    def forward(
        self, x: Tensor, pos: Tensor, edge_index: Tensor, offsets: Tensor | None = None
    ) -> Tensor:
        """Convolve ``x [N, rep_in.dim]``; returns ``[N, rep_out.dim]``.

        ``offsets [E, 3]`` replaces ``pos[src] − pos[dst]`` (e.g. minimum-image offsets of a
        periodic lattice); ``pos`` then only fixes the number of nodes.
        """
        pos, edge_index = check_graph(pos, edge_index)
        num_nodes = pos.shape[0]
        x = check_parameter_dtype(check_features(x, self.rep_in.dim, "x", num_nodes), self, "x")
        # like the implicit conv, positions in another dtype than the weights are refused
        # (a float64 pos would otherwise be rounded silently to float32)
        rel = relative_positions(pos, edge_index, offsets)
        rel = check_parameter_dtype(rel, self, "pos" if offsets is None else "offsets").to(x)
        src, dst = edge_index[0], edge_index[1]
        messages = self.messages(rel, x[src])
        out = x.new_zeros(num_nodes, self.rep_out.dim).index_add(0, dst, messages)
        if self.aggr == "mean":
            degree = torch.bincount(dst, minlength=num_nodes).clamp_min(1)
            out = out / degree.to(out)[:, None]
        if self.self_linear is not None:
            out = out + self.self_linear(x)
        return out if self.bias is None else self.bias(out)

    def extra_repr(self) -> str:
        return (
            f"{self.rep_in.short()} -> {self.rep_out.short()}, group={self.group.name}, "
            f"lmax={self.lmax}, paths={self.basis.dim}, breaking={self.num_breaking}, "
            f"cutoff={self.cutoff}, aggr={self.aggr}"
        )
