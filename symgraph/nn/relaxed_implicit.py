"""Relaxed implicit kernels: an equivariant kernel MLP plus a learned non-equivariant pathway.

The kernel of :class:`RelaxedImplicitKernel` is

    K(x, e) = K_G(x, e) + K_free(x, e),    K_free(x, e) = V(u(x, e), ·)

with ``K_G`` the G-equivariant :class:`~symgraph.nn.ImplicitKernel` and ``K_free`` built
from a plain MLP of the *raw* relative position ``x`` (its Cartesian components, not only
invariants), its length and the scalar attributes, so it can depend on directions in a way
no group element explains. The MLP's features ``u(x, e) ∈ (−1, 1)^H`` (tanh, times the same
cutoff envelope) meet the input features through an unconstrained bilinear head ``V
[C_out, H, C_in]``. As ``u`` is bounded, the size of ``V`` sets how far the layer is from
equivariance: its *strength* is ``s = ‖V_⊥‖_F / sqrt(C_out)`` (about the output scale of the
free pathway relative to an equivariant head of unit scale), with ``V_⊥`` the part of ``V``
that can break the symmetry: all of ``V`` for ``free_input="position"``; for ``"radial"`` and
``"constant"``, whose features ``u`` are invariant, ``V`` minus its projection onto the
equivariant maps (each ``V[:, h, :]`` projected onto ``Hom_G(ρ_in, ρ_out)``), since
``u_h(|x|) V[:, h, :]`` with an equivariant ``V[:, h, :]`` is an equivariant kernel -- the
free pathway then only adds to ``K_G`` and costs nothing.

``V`` starts at 0 -- the layer is then exactly equivariant and ``relaxation_penalty() =
s²`` is exactly 0 -- and, being a linear parameter, gets the gradient of the symmetry-breaking
part of the data from the first step (as ``φ`` of :class:`~symgraph.nn.RelaxedSteerableConv`);
the penalty decides how far it may grow.

What the free MLP sees (``free_input``) sets the capacity of the relaxation:

- ``"position"`` (default): the raw relative position, as above -- any function of the
  offset, the most flexible;
- ``"radial"``: only the radial basis of ``|x|`` (and the attributes), so ``K_free`` is the
  same for all offsets of one length: the kernel is isotropic in space and breaks the
  symmetry only through the channel mixing ``V`` (e.g. "scalar times a fixed direction");
- ``"constant"``: ``u ≡ 1`` (times the envelope), ``H = 1``: ``K_free(x) = V [C_out, 1, C_in]``
  for every edge, a single non-equivariant channel-mixing matrix per layer -- a global,
  position-independent relaxation with no MLP at all (closest in spirit to the few relaxed
  weights per group element of the paper's relaxed convolutions).

Both pathways share the contraction of
:mod:`symgraph.ops` -- the hidden features are concatenated, ``[h, u]``, and so are the
heads, ``[W̃, V]`` -- so the message-passing path never builds per-edge matrices and the
lattice fast path evaluates ``K`` once at the stencil offsets, as for the strict layer.
"""

from __future__ import annotations

import math

import torch
from e3nn import o3
from torch import Tensor, nn

from symgraph.checks import is_int
from symgraph.groups import MatrixGroup, Rep, equivariant_basis
from symgraph.nn.bilinear import EquivariantBilinear
from symgraph.nn.conv import ImplicitSteerableConv
from symgraph.nn.embedding import cosine_cutoff, edge_length
from symgraph.nn.exact_buffers import ExactBufferModule
from symgraph.nn.kernel import HiddenFunction, ImplicitKernel, KernelWeights

__all__ = ["RelaxedImplicitKernel", "RelaxedImplicitSteerableConv", "FREE_INPUTS"]

#: what the free MLP of :class:`RelaxedImplicitKernel` may depend on (see the module docs).
FREE_INPUTS = ("position", "radial", "constant")


class _RelaxedHead(ExactBufferModule):
    """The heads of both pathways side by side: ``[C_out, A + H, C_in]``.

    With ``invariant_features`` (the free features ``u`` are G-invariant), the components
    of ``V`` in ``Hom_G(ρ_in, ρ_out)`` are equivariant and left out of :meth:`breaking_part`.
    """

    def __init__(
        self, equivariant: EquivariantBilinear, free_hidden: int, invariant_features: bool
    ) -> None:
        super().__init__()
        self.equivariant = equivariant
        dim_out, dim_in = equivariant.rep_out.dim, equivariant.rep_b.dim
        self.free = nn.Parameter(torch.zeros(dim_out, free_hidden, dim_in))
        # per block pair of Hom_G(ρ_in, ρ_out): (slice_out, slice_in, mul_out, mul_in) and
        # its orthonormal basis [n, d_out, d_in] (exact buffer _hom_<index>)
        self._hom_pairs: list[tuple[slice, slice, int, int]] = []
        if invariant_features:
            hom = equivariant_basis(equivariant.rep_b, equivariant.rep_out)
            for index, pair in enumerate(hom.pairs):
                self.register_exact_buffer(f"_hom_{index}", pair.basis)
                self._hom_pairs.append((pair.slice_out, pair.slice_in, pair.mul_out, pair.mul_in))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Equivariant head as usual, free head ``V = 0`` (exactly equivariant)."""
        self.equivariant.reset_parameters()
        nn.init.zeros_(self.free)

    def breaking_part(self) -> Tensor:
        """``V_⊥ [C_out, H, C_in]``: ``V`` less its equivariant components (those in
        ``Hom_G(ρ_in, ρ_out)`` per hidden channel) when the free features are invariant,
        else ``V`` itself. Exactly 0 when ``V`` is."""
        free = self.free
        if not self._hom_pairs:
            return free
        hidden = free.shape[1]
        equivariant = torch.zeros_like(free)
        for index, (s_out, s_in, mul_out, mul_in) in enumerate(self._hom_pairs):
            basis = self.exact_buffer_as(f"_hom_{index}", free)  # [n, d_out, d_in]
            block = free[s_out, :, s_in].reshape(
                mul_out, basis.shape[1], hidden, mul_in, basis.shape[2]
            )
            coefficients = torch.einsum("kab,uahvb->uhvk", basis, block)
            projected = torch.einsum("uhvk,kab->uahvb", coefficients, basis)
            equivariant[s_out, :, s_in] = projected.reshape(-1, hidden, mul_in * basis.shape[2])
        return free - equivariant

    def strength(self) -> Tensor:
        """``s = ‖V_⊥‖_F / sqrt(C_out)``: the size of the symmetry-breaking part of the free
        head per output channel."""
        return self.breaking_part().norm() / math.sqrt(self.free.shape[0])

    def weight_tensor(self, like: Tensor | None = None) -> Tensor:
        """``[W̃, V]`` concatenated along the hidden axis: ``[C_out, A + H, C_in]``."""
        return self.extend(self.equivariant.weight_tensor(like=like))

    def extend(self, equivariant: Tensor) -> Tensor:
        """``[W̃, V]`` from an assembled ``W̃ [C_out, A, C_in]``."""
        return torch.cat([equivariant, self.free.to(equivariant)], dim=1)


class RelaxedImplicitKernel(ImplicitKernel):
    """``K_G(x, e) + K_free(x, e)``: an :class:`ImplicitKernel` with a learned relaxation
    (its strength ``s = ‖V_⊥‖_F / √C_out`` is measured from the symmetry-breaking part
    ``V_⊥`` of ``K_free``'s head ``V``: all of ``V``, or for ``free_input="radial"`` and
    ``"constant"`` the part outside ``Hom_G(ρ_in, ρ_out)``; see the module docs).

    Args:
        rep_in, rep_out, group, edge_dim, node_dim, hidden, layers, lmax, num_radial, cutoff,
            r_max: the equivariant kernel (see :class:`ImplicitKernel`).
        free_hidden: width ``H`` of the non-equivariant MLP and of its features ``u``
            (``free_input="constant"``: unused, ``H = 1``).
        free_layers: number of hidden (linear + SiLU) layers of that MLP, at least 1
            (unused for ``"constant"``).
        free_input: what the free features depend on, one of :data:`FREE_INPUTS`:
            ``"position"`` (raw offset, lengths and attributes), ``"radial"`` (lengths and
            attributes only: isotropic in space) or ``"constant"`` (nothing: ``u ≡ 1``).

    Attributes:
        head: both heads (``head.equivariant`` is ``W̃``, ``head.free`` is ``V``).
        free_body: the non-equivariant MLP ``[3 + num_radial + edge_dim + 2 node_dim] -> H``
            (without the 3 position components for ``"radial"``; ``None`` for ``"constant"``).

    Shapes:
        ``hidden_features(rel [E, 3], edge_attr, node_src, node_dst) -> [E, ρ_h.dim + H]``;
        ``forward(...) -> [E, ρ_out.dim, ρ_in.dim]``.
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
        free_hidden: int = 8,
        free_layers: int = 2,
        free_input: str = "position",
    ) -> None:
        super().__init__(
            rep_in, rep_out, group, edge_dim, node_dim, hidden, layers, lmax, num_radial,
            cutoff, r_max,
        )  # fmt: skip
        if not is_int(free_hidden) or free_hidden < 1:
            raise ValueError(f"free_hidden: expected a positive int, got {free_hidden!r}")
        if not is_int(free_layers) or free_layers < 1:
            raise ValueError(f"free_layers: expected an int ≥ 1, got {free_layers!r}")
        free_hidden, free_layers = int(free_hidden), int(free_layers)
        if free_input not in FREE_INPUTS:
            raise ValueError(f"free_input: expected one of {FREE_INPUTS}, got {free_input!r}")
        self.free_input = free_input
        self.free_body: nn.Sequential | None = None
        if free_input == "constant":
            free_hidden = 1
        else:
            width = num_radial + edge_dim + 2 * node_dim + (3 if free_input == "position" else 0)
            body: list[nn.Module] = []
            for _ in range(free_layers):
                body += [nn.Linear(width, free_hidden), nn.SiLU()]
                width = free_hidden
            body[-1] = nn.Tanh()
            self.free_body = nn.Sequential(*body)
        self.head = _RelaxedHead(
            self.head, free_hidden, invariant_features=free_input != "position"
        )

    def reset_parameters(self) -> None:
        super().reset_parameters()
        for layer in self.free_body or ():
            if isinstance(layer, nn.Linear):
                layer.reset_parameters()

    # ------------------------------------------------------------------ relaxation
    @property
    def strength(self) -> Tensor:
        """The relaxation strength ``s = ‖V_⊥‖_F / sqrt(C_out)`` (0 at initialisation)."""
        return self.head.strength()

    def relaxation_penalty(self) -> Tensor:
        """``s² = ‖V_⊥‖²_F / C_out``: zero when the non-equivariant pathway is off (exactly
        at ``V = 0``; for ``"radial"`` and ``"constant"`` also, up to rounding, whenever
        every ``V[:, h, :]`` is an equivariant map, which leaves the layer equivariant)."""
        return self.head.breaking_part().square().sum() / self.head.free.shape[0]

    def relaxation_parameters(self) -> list[nn.Parameter]:
        """The free head ``V`` and the free MLP (freeze them for the strict layer)."""
        body = [] if self.free_body is None else list(self.free_body.parameters())
        return [self.head.free, *body]

    # ------------------------------------------------------------------ features
    def free_features(
        self,
        rel: Tensor,
        edge_attr: Tensor | None = None,
        node_src: Tensor | None = None,
        node_dst: Tensor | None = None,
    ) -> Tensor:
        """``u_ij ∈ (−1, 1)^H`` times the envelope: ``[E, H]`` (``[E, 1]`` of ones for
        ``free_input="constant"``; of the raw relative position for ``"position"``)."""
        distance = edge_length(rel)
        if self.free_body is None:
            u = torch.ones_like(distance)[:, None]
        else:
            parts = [rel] if self.free_input == "position" else []
            parts.append(self.radial(distance))
            parts += [a.to(rel) for a in self.scalar_attributes(edge_attr, node_src, node_dst)]
            u = self.free_body(torch.cat(parts, dim=-1))
        if self.cutoff is not None:
            u = u * cosine_cutoff(distance, self.cutoff)[:, None]
        return u

    @property
    def equivariant_head(self) -> EquivariantBilinear:
        return self.head.equivariant

    def _head_tensor(self, equivariant: Tensor) -> Tensor:
        return self.head.extend(equivariant)

    @property
    def head_groups(self) -> None:
        """None: the free head ``V`` is dense."""
        return None

    def hidden_function(self, like: Tensor, weights: KernelWeights | None = None) -> HiddenFunction:
        """``[h, u]``: equivariant and free hidden features, ``[E, ρ_h.dim + H]``."""
        equivariant = super().hidden_function(like, weights)

        def hidden(
            rel: Tensor,
            edge_attr: Tensor | None = None,
            node_src: Tensor | None = None,
            node_dst: Tensor | None = None,
        ) -> Tensor:
            h = equivariant(rel, edge_attr, node_src, node_dst)
            u = self.free_features(rel, edge_attr, node_src, node_dst)
            return torch.cat([h, u], dim=-1)

        return hidden

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, free_hidden={self.head.free.shape[1]}, "
            f"free_input={self.free_input}"
        )


class RelaxedImplicitSteerableConv(ImplicitSteerableConv):
    """:class:`ImplicitSteerableConv` whose kernel is a :class:`RelaxedImplicitKernel`.

    Exactly equivariant at initialisation (strength 0); training may switch the
    non-equivariant pathway on where the data break the symmetry, at the cost of the
    penalty ``s²`` that ``symgraph.nn.relaxation_penalty(model)`` collects from the kernel
    (the relaxed module is ``conv.kernel``, so that the penalty is counted once; freeze it
    with ``set_relaxation_trainable`` for the strict layer).
    Everything else -- arguments, shapes, the lattice fast path -- is that of
    :class:`ImplicitSteerableConv`; ``free_hidden`` and ``free_layers`` size the free MLP,
    ``free_input`` says what it sees (see :class:`RelaxedImplicitKernel`).
    """

    def __init__(
        self,
        irreps_in: Rep | str | o3.Irreps,
        irreps_out: Rep | str | o3.Irreps,
        group: MatrixGroup | str | None = None,
        edge_dim: int = 0,
        node_dim: int = 0,
        hidden: Rep | str | o3.Irreps | None = None,
        layers: int = 2,
        lmax: int = 2,
        num_radial: int = 8,
        cutoff: float | None = None,
        r_max: float = 5.0,
        aggr: str = "add",
        self_interaction: bool = True,
        bias: bool = True,
        backend: str = "auto",
        checkpoint: bool = True,
        block_edges: int | None = None,
        free_hidden: int = 8,
        free_layers: int = 2,
        free_input: str = "position",
    ) -> None:
        self._free_options = {
            "free_hidden": free_hidden,
            "free_layers": free_layers,
            "free_input": free_input,
        }
        super().__init__(
            irreps_in, irreps_out, group, edge_dim, node_dim, hidden, layers, lmax, num_radial,
            cutoff, r_max, aggr, self_interaction, bias, backend, checkpoint, block_edges,
        )  # fmt: skip

    kernel_class = RelaxedImplicitKernel

    def _kernel_options(self) -> dict:
        return self._free_options

    @property
    def strength(self) -> Tensor:
        """The kernel's relaxation strength ``s``."""
        return self.kernel.strength
