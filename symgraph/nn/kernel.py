"""Implicit steerable kernels: a G-equivariant MLP maps a relative position (and invariant
edge/node attributes) to a kernel in Hom_G(ρ_in, ρ_out) (Zhdanov, Hoffmann, Cesa, 2023).

The MLP's body turns ``[radial basis ⊕ edge attrs ⊕ node attrs (scalars), Y_1..Y_lmax(x̂)]``
into hidden equivariant features ``h ∈ ρ_h``, multiplied by a smooth cutoff envelope. Its
last layer is linear, ``W: ρ_h → Hom(ρ_in, ρ_out)``, which is the same thing as an
equivariant bilinear map ``W̃: ρ_h ⊗ ρ_in → ρ_out``. The convolution never builds
``K = W(h)`` per edge: it sums ``h ⊗ f`` over neighbours and applies ``W̃`` per node
(see :mod:`symgraph.ops`). ``ImplicitKernel.forward`` still materialises ``K`` for users
who want to look at it and for the dense lattice path.

Speed. The body runs on many edges with narrow layers, so it is evaluated *feature-major*
(``[features, E]``): every slice of features is then a contiguous block of memory, the
linear maps are single ``addmm`` calls with weights assembled once per forward, all
of them (and the head) by one :class:`~symgraph.nn.assembly.JointAssembly`
(:meth:`ImplicitKernel.assemble`), the gates are one sigmoid and one broadcast
product per row segment (:class:`~symgraph.ops.gate.GateFunction`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from e3nn import o3
from torch import Tensor, nn

from symgraph.checks import (
    as_number,
    check_edge_attr,
    check_parameter_dtype,
    check_positions,
    check_tensor,
    is_int,
    is_real,
)
from symgraph.groups import MatrixGroup, Rep, as_rep
from symgraph.nn.assembly import JointAssembly
from symgraph.nn.bilinear import EquivariantBilinear
from symgraph.nn.embedding import (
    RadialEmbedding,
    check_lmax,
    cosine_cutoff,
    direction_embedding,
    direction_embedding_rows,
    edge_length,
    spherical_harmonics_rep,
)
from symgraph.nn.mlp import EquivariantMLPLayer
from symgraph.ops.kernel_mlp import KernelLayer, hidden_forward
from symgraph.ops.sparse_head import HeadGroup, head_groups

__all__ = [
    "HiddenFunction",
    "ImplicitKernel",
    "KernelWeights",
    "check_radial_settings",
    "default_kernel_hidden",
]

HiddenFunction = Callable[[Tensor, Tensor | None, Tensor | None, Tensor | None], Tensor]
"""``(rel [E, 3], edge_attr, node_src, node_dst) -> h [E, A]``: a kernel's hidden features."""


@dataclass(frozen=True)
class KernelWeights:
    """Everything an :class:`ImplicitKernel` multiplies by, assembled for one forward.

    Attributes:
        layers: the body's gated layers (:class:`~symgraph.ops.kernel_mlp.KernelLayer`).
        head: the head's bilinear form ``[rep_out.dim, A, rep_in.dim]`` (``A`` = hidden
            features, the relaxed kernel's free ones included).
    """

    layers: list[KernelLayer]
    head: Tensor


def _is_positive_number(value: object) -> bool:
    return is_real(value) and value > 0


def check_radial_settings(lmax: int, num_radial: int, cutoff: float | None, r_max: float) -> None:
    """Raise ``ValueError`` naming ``lmax``, ``num_radial``, ``cutoff`` or ``r_max`` when one
    has the wrong type or range (a bool is no int or number here; an infinite ``cutoff`` or
    ``r_max`` would spread the radial basis' centres to infinity and make it NaN)."""
    if not is_int(num_radial) or num_radial < 1:
        raise ValueError(f"num_radial: expected a positive int, got {num_radial!r}")
    check_lmax(lmax)
    if cutoff is not None and not _is_positive_number(cutoff):
        raise ValueError(f"cutoff: expected a positive number or None, got {cutoff!r}")
    if not _is_positive_number(r_max):
        raise ValueError(f"r_max: expected a positive number, got {r_max!r}")
    for name, value in (("cutoff", cutoff), ("r_max", r_max)):
        if value is not None and not math.isfinite(value):
            raise ValueError(
                f"{name}: expected a finite distance (the radial basis spans [0, {name}]; "
                f"cutoff=None means no envelope), got {value!r}"
            )


def default_kernel_hidden(lmax: int, scalars: int = 8, mul: int = 4) -> str:
    """``"8x0e + 4x1o + 2x2e + …"``: the irrep types of the direction embedding.

    Linear maps and gates never create irrep types that their input lacks under O(3), so
    hidden channels of other types (e.g. ``1e``) would stay zero; the types ``Y_l`` carry are
    the ones the kernel basis is made of (radial profiles times spherical harmonics).

    Args:
        lmax: highest degree ``l`` (a non-negative int; 0: scalars only).
        scalars: copies of ``0e`` (a positive int).
        mul: copies of ``1o``; degree ``l`` gets ``max(mul // l, 1)`` (a positive int).
    """
    for name, value, low in (("lmax", lmax, 0), ("scalars", scalars, 1), ("mul", mul, 1)):
        if not is_int(value) or value < low:
            raise ValueError(f"{name}: expected an int >= {low}, got {value!r}")
    parts = [f"{scalars}x0e"]
    for l in range(1, lmax + 1):
        parts.append(f"{max(mul // l, 1)}x{l}{'e' if l % 2 == 0 else 'o'}")
    return " + ".join(parts)


class ImplicitKernel(nn.Module):
    """A G-equivariant MLP producing convolution kernels ``K(x_ij, e_ij) ∈ Hom(ρ_in, ρ_out)``.

    Equivariance: ``K(g x, e) = ρ_out(g) K(x, e) ρ_in(g)^{-1}`` for every g in G, for any
    compact G ≤ O(3) of the catalog; invariant attributes enter as scalars at no cost.

    Args:
        rep_in, rep_out: representations of the convolution's input and output features.
        group: the group (when the representations are strings; default O(3)).
        edge_dim: number of scalar edge attributes (bond-type one-hot, distances …).
        node_dim: number of scalar node attributes of each endpoint (atom types …).
        hidden: the hidden representation ρ_h of the kernel MLP (default:
            :func:`default_kernel_hidden` of ``lmax``).
        layers: number of hidden (linear + gate) layers, at least 1.
        lmax: highest spherical-harmonic degree of the direction embedding (1 to 12).
        num_radial: size of the Gaussian radial basis.
        cutoff: radius where the kernel vanishes smoothly (``None``: no envelope).
        r_max: range of the radial basis when ``cutoff`` is ``None``.

    Shapes:
        ``hidden_features(rel [E, 3], edge_attr [E, edge_dim], node_src [E, node_dim],
        node_dst [E, node_dim]) -> [E, ρ_h.dim]``; ``forward(...) -> [E, ρ_out.dim, ρ_in.dim]``.
    """

    def __init__(
        self,
        rep_in: Rep | str | o3.Irreps,
        rep_out: Rep | str | o3.Irreps,
        group: MatrixGroup | str | None = None,
        edge_dim: int = 0,
        node_dim: int = 0,
        hidden: Rep | str | o3.Irreps | None = None,
        layers: int = 2,
        lmax: int = 2,
        num_radial: int = 8,
        cutoff: float | None = None,
        r_max: float = 5.0,
    ) -> None:
        super().__init__()
        for name, value in (("edge_dim", edge_dim), ("node_dim", node_dim)):
            if not is_int(value) or value < 0:
                raise ValueError(f"{name}: expected a non-negative int, got {value!r}")
        if not is_int(layers) or layers < 1:
            raise ValueError(f"layers: expected an int ≥ 1, got {layers!r}")
        check_radial_settings(lmax, num_radial, cutoff, r_max)
        edge_dim, node_dim, layers, lmax, num_radial = map(
            int, (edge_dim, node_dim, layers, lmax, num_radial)
        )
        cutoff, r_max = None if cutoff is None else as_number(cutoff), as_number(r_max)
        if group is None and isinstance(rep_in, Rep):
            group = rep_in.group
        self.rep_in = as_rep(rep_in, group, "rep_in")
        group = self.rep_in.group
        self.rep_out = as_rep(rep_out, group, "rep_out")
        hidden = default_kernel_hidden(lmax) if hidden is None else hidden
        self.rep_hidden = as_rep(hidden, group, "hidden")
        for name, r in (
            ("rep_in", self.rep_in),
            ("rep_out", self.rep_out),
            ("hidden", self.rep_hidden),
        ):
            if r.dim == 0:
                raise ValueError(f"{name}: expected a non-empty representation, got {r.short()!r}")
        self.edge_dim, self.node_dim, self.lmax, self.cutoff = edge_dim, node_dim, lmax, cutoff
        self.radial = RadialEmbedding(num_radial, cutoff if cutoff is not None else r_max)
        num_scalars = num_radial + edge_dim + 2 * node_dim
        self.rep_embedding = Rep(f"{num_scalars}x0e", group) + spherical_harmonics_rep(lmax, group)
        body, current = [], self.rep_embedding
        for _ in range(layers):
            body.append(EquivariantMLPLayer(current, self.rep_hidden, "gate", True, False))
            current = self.rep_hidden
        self.body = nn.Sequential(*body)
        self.head = EquivariantBilinear(self.rep_hidden, self.rep_in, self.rep_out)
        assemblies = [module.assembly for module, _ in self._body_modules()]
        self.assembly = JointAssembly([*assemblies, self.head.assembly])

    def reset_parameters(self) -> None:
        for layer in self.body:
            layer.reset_parameters()
        self.head.reset_parameters()

    def embed(
        self,
        rel: Tensor,
        edge_attr: Tensor | None = None,
        node_src: Tensor | None = None,
        node_dst: Tensor | None = None,
    ) -> Tensor:
        """The MLP input ``[E, rep_embedding.dim]``: scalars first, then ``Y_1..Y_lmax``."""
        parts = [self.radial(edge_length(rel))]
        parts += [a.to(rel) for a in self.scalar_attributes(edge_attr, node_src, node_dst)]
        parts.append(direction_embedding(rel, self.lmax))
        return torch.cat(parts, dim=-1)

    def scalar_attributes(
        self,
        edge_attr: Tensor | None = None,
        node_src: Tensor | None = None,
        node_dst: Tensor | None = None,
    ) -> list[Tensor]:
        """The scalar attributes the kernel reads, in the order of its input: ``[E, edge_dim]``
        when ``edge_dim``, then ``[E, node_dim]`` of the sender and of the receiver when
        ``node_dim``."""
        attributes = [edge_attr] if self.edge_dim else []
        return attributes + ([node_src, node_dst] if self.node_dim else [])

    def embed_feature_major(
        self,
        rel: Tensor,
        edge_attr: Tensor | None = None,
        node_src: Tensor | None = None,
        node_dst: Tensor | None = None,
    ) -> Tensor:
        """:meth:`embed` transposed, ``[rep_embedding.dim, E]``, the layout the MLP runs in.

        When no input needs a gradient, the rows are written into one contiguous buffer
        (radial basis and spherical harmonics in place, no ``[E, ·]`` temporaries: on many
        edges those cost more in fresh memory than in arithmetic); otherwise it is the
        differentiable ``embed(...).T``.
        """
        inputs = (rel, edge_attr, node_src, node_dst)
        if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in inputs):
            return self.embed(rel, edge_attr, node_src, node_dst).T
        out = rel.new_empty(self.rep_embedding.dim, rel.shape[0])
        distance = rel.norm(dim=-1)
        row = self.radial.num_basis
        self.radial.rows(distance, out[:row])
        for attribute in self.scalar_attributes(edge_attr, node_src, node_dst):
            out[row : row + attribute.shape[1]].copy_(attribute.T)
            row += attribute.shape[1]
        direction_embedding_rows(rel, distance, self.lmax, out[row:])
        return out

    def _body_modules(self) -> list[tuple[nn.Module, list[nn.Parameter]]]:
        """The body's modules with an equivariant weight, with their parameters, in
        assembly order: per layer its linear map, then its bias when that has invariant
        parameters."""
        modules: list[tuple[nn.Module, list[nn.Parameter]]] = []
        for layer in self.body:
            modules.append((layer.linear, list(layer.linear.weights)))
            bias = layer.linear.bias
            if bias is not None and bias.dim:
                modules.append((bias, list(bias.biases)))
        return modules

    @property
    def equivariant_head(self) -> EquivariantBilinear:
        """The head's equivariant bilinear form ``W̃``."""
        return self.head

    def _head_tensor(self, equivariant: Tensor) -> Tensor:
        """The full head ``[rep_out.dim, A, rep_in.dim]`` from the assembled ``W̃``."""
        return equivariant

    @property
    def head_groups(self) -> tuple[HeadGroup, ...] | None:
        """The head's nonzero blocks (:func:`~symgraph.ops.sparse_head.head_groups`), for
        applying it block-sparsely; None when a dense product is cheaper."""
        if not hasattr(self, "_head_groups"):
            support = [(t.slice_out, t.slice_a, t.slice_b) for t in self.head.basis.triples]
            shape = (self.rep_out.dim, self.rep_hidden.dim, self.rep_in.dim)
            self._head_groups = head_groups(support, shape)
        return self._head_groups

    def assemble(self, like: Tensor) -> KernelWeights:
        """Every weight of the kernel, assembled by one joint gather/product/scatter (in the
        dtype/device of the parameters, or of ``like`` when there are none). Call once per
        forward and hand the result to :meth:`hidden_function` and the convolution."""
        groups = [params for _, params in self._body_modules()]
        groups.append(list(self.equivariant_head.weights))
        tensors = iter(self.assembly(groups, like))
        layers = []
        for layer in self.body:
            weight = next(tensors)
            bias = layer.linear.bias
            vector = next(tensors)[:, None] if bias is not None and bias.dim else None
            layers.append(KernelLayer(weight, vector, layer.activation.segments))
        return KernelWeights(layers, self._head_tensor(next(tensors)))

    def hidden_function(self, like: Tensor, weights: KernelWeights | None = None) -> HiddenFunction:
        """The hidden features as a function, with every weight assembled once.

        Call this once per forward and the result for each block of edges: the equivariant
        weight matrices are built here (in the dtype/device of ``like``; or taken from
        ``weights``, see :meth:`assemble`), not per call.
        Returns ``(rel [E, 3], edge_attr, node_src, node_dst) -> h [E, rep_hidden.dim]``
        (edge-major and contiguous: the neighbour contraction is fastest that way).
        """
        layers = (weights or self.assemble(like)).layers
        matrices = [(layer.weight, layer.bias) for layer in layers]
        segments = tuple(layer.segments for layer in layers)

        def hidden(
            rel: Tensor,
            edge_attr: Tensor | None = None,
            node_src: Tensor | None = None,
            node_dst: Tensor | None = None,
        ) -> Tensor:
            embedding = self.embed_feature_major(rel, edge_attr, node_src, node_dst)  # [D, E]
            h, _ = hidden_forward(matrices, segments, embedding, None)
            envelope = self.envelope(rel)
            h = h if envelope is None else h * envelope
            return h.T.contiguous()

        return hidden

    def envelope(self, rel: Tensor) -> Tensor | None:
        """``[E]`` the cutoff envelope of each edge, or None without a cutoff."""
        return None if self.cutoff is None else cosine_cutoff(edge_length(rel), self.cutoff)

    def hidden_features(
        self,
        rel: Tensor,
        edge_attr: Tensor | None = None,
        node_src: Tensor | None = None,
        node_dst: Tensor | None = None,
    ) -> Tensor:
        """``h_ij ∈ ρ_h`` times the cutoff envelope: ``[E, A]`` (``A = rep_hidden.dim``; a
        subclass may append features of its own)."""
        rel, edge_attr = self.check_inputs(rel, edge_attr, node_src, node_dst)
        return self.hidden_function(rel)(rel, edge_attr, node_src, node_dst)

    def check_inputs(
        self,
        rel: Tensor,
        edge_attr: Tensor | None = None,
        node_src: Tensor | None = None,
        node_dst: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """Check the per-edge inputs against the kernel's sizes and parameters' dtype;
        returns ``(rel, edge_attr)`` (``edge_attr [E]`` becomes ``[E, 1]``)."""
        rel = check_parameter_dtype(check_positions(rel, "rel"), self, "rel")
        edges = rel.shape[0]
        edge_attr = check_edge_attr(edge_attr, edges, self.edge_dim)
        for name, value in (("node_src", node_src), ("node_dst", node_dst)):
            if not self.node_dim:
                if value is not None:
                    raise ValueError(
                        f"{name}: this kernel was built with node_dim=0 (no node attributes), "
                        f"got a tensor of shape {list(value.shape)}; build it with node_dim"
                    )
                continue
            value = check_tensor(value, name) if value is not None else None
            if value is None or value.shape != (edges, self.node_dim):
                got = "None" if value is None else f"shape {list(value.shape)}"
                raise ValueError(
                    f"{name}: expected shape [{edges}, {self.node_dim}] (the node attributes "
                    f"of each edge's endpoint, node_dim={self.node_dim}), got {got}"
                )
        return rel, edge_attr

    def forward(
        self,
        rel: Tensor,
        edge_attr: Tensor | None = None,
        node_src: Tensor | None = None,
        node_dst: Tensor | None = None,
    ) -> Tensor:
        """The kernels ``K [E, rep_out.dim, rep_in.dim]`` (materialised: for inspection and
        for the lattice fast path)."""
        rel, edge_attr = self.check_inputs(rel, edge_attr, node_src, node_dst)
        weights = self.assemble(rel)
        h = self.hidden_function(rel, weights)(rel, edge_attr, node_src, node_dst)
        flat = weights.head.transpose(0, 1).reshape(h.shape[1], -1)  # [A, out * in]
        return (h @ flat).reshape(-1, self.rep_out.dim, self.rep_in.dim)

    def extra_repr(self) -> str:
        return (
            f"{self.rep_in.short()} -> {self.rep_out.short()}, group={self.rep_in.group.name}, "
            f"hidden={self.rep_hidden.short()}, lmax={self.lmax}, edge_dim={self.edge_dim}, "
            f"node_dim={self.node_dim}, cutoff={self.cutoff}"
        )
