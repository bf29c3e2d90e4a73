"""Relaxed group convolution on graphs (Wang, Walters, Yu, ICML 2022), for finite G ≤ O(3).

Features are *lifted*: a function on the group per channel. With ``C`` channels a node
feature is ``[C * |G|]`` laid out as ``[C, |G|]`` (channel-major, group index fastest),
which is ``Rep.regular(G, C)``: ``C`` copies of the regular representation, the group
axis following ``group.elements()`` (identity first). G acts by
``(g·f)(k) = f(g^{-1} k)`` on the group axis and rotates the positions.

With ``r_ij = x_j − x_i`` (neighbour ``j`` minus centre ``i``; messages flow
``edge_index[0] → edge_index[1]``) the layer computes, for every output element ``h``,

    group conv:   out_i(h) = Σ_l w_l(h) Σ_{j→i} Σ_{g∈G} K_l(h^{-1} r_ij)[:, :, h^{-1} g] f_j(g)
    lifting:      out_i(h) = Σ_l w_l(h) Σ_{j→i} K_l(h^{-1} r_ij) f_j

with a bank of ``L`` kernels ``K_l: R^3 → R^{C_out × C_in × |G|}`` (``C_out × C_in`` when
lifting) and mixing weights ``w [L, |G|]``. Moving the input by ``a ∈ G`` (positions
``a x``, features ``a·f``) and substituting ``g → a g`` shows ``out'(h) = Σ_l w_l(h) [·](a^{-1} h)``
where equivariance needs ``out(a^{-1} h) = Σ_l w_l(a^{-1} h) [·](a^{-1} h)``: the layer is
exactly equivariant when every ``w_l`` is constant over ``h`` (an ordinary group
convolution with kernel ``Σ_l w_l K_l``), which is how it is initialised. Letting ``w_l(h)``
differ per output element is the relaxation; :meth:`RelaxedGroupConv.relaxation_penalty`
measures how far ``w`` is from constant. (The paper writes the weights on the summed
element, ``Σ_h f(h) Σ_l w_l(h) K_l(g^{-1} h)``; putting them on the output element works
for the lifting layer too, where there is no input element, and matches the authors' code.)

Kernels on graphs must accept any relative position, so the bank is an MLP: shared hidden
features ``φ(r) = MLP(r / length_scale) ⊕ 1`` (times a cosine envelope when ``cutoff`` is
set) and one linear read-out per bank, ``K_l(r) = W_l φ(r)``. Because the read-out is
linear, the layer never builds a kernel per edge: for each output element ``h`` it sums
``φ(h^{-1} r_ij) ⊗ f_j`` over neighbours (:func:`symgraph.ops.neighbour_outer_sum`) and
contracts the result once per node with ``Σ_l w_l(h) W_l`` (the group axis of ``W_l``
permuted by ``g → h^{-1} g``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from symgraph.checks import check_features, check_int, check_parameter_dtype, is_real
from symgraph.groups import MatrixGroup, RegularBlock, Rep, as_group
from symgraph.nn.embedding import cosine_cutoff, edge_length
from symgraph.nn.exact_buffers import ExactBufferModule
from symgraph.nn.relaxed_utils import check_graph, relative_positions
from symgraph.ops import EdgeLayout, neighbour_outer_sum
from symgraph.ops.contraction import BACKENDS

__all__ = ["RelaxedGroupConv", "GroupPooling"]

_AGGREGATIONS = ("add", "mean")
_REDUCTIONS = ("mean", "max")


def _is_positive_finite(value: object) -> bool:
    return is_real(value) and 0 < value < math.inf


def _finite_group(group: object) -> MatrixGroup:
    group = as_group(group)
    if not group.is_finite:
        raise ValueError(
            f"group: expected a finite group (C(n), D(n), Octahedral(), ...), got {group!r}; "
            "use RelaxedSteerableConv for continuous groups"
        )
    return group


class RelaxedGroupConv(ExactBufferModule):
    """Relaxed (lifting) group convolution over a graph for a finite group G ≤ O(3).

    Args:
        in_channels: ``C_in``; inputs are ``C_in`` scalars (``lifting=True``) or ``C_in``
            lifted channels ``[C_in, |G|]``.
        out_channels: ``C_out`` lifted output channels.
        group: a finite :class:`~symgraph.groups.MatrixGroup` (``C(n)``, ``D(n)``, ...).
        num_filter_banks: ``L``, the number of kernels mixed per output group element.
        lifting: the input is scalar (``C_in x 0e``) instead of lifted.
        hidden: width of the kernel MLP.
        kernel_layers: number of hidden layers of the kernel MLP (at least 1).
        length_scale: relative positions are divided by it before the MLP.
        cutoff: radius where kernels vanish smoothly (``None``: no envelope).
        aggr: ``"add"`` or ``"mean"`` over incoming edges.
        bias: a learned bias per output channel, shared over the group axis (invariant).
        backend: contraction backend of :func:`symgraph.ops.neighbour_outer_sum`.

    Attributes:
        rep_in, rep_out: ``Rep(f"{C_in}x0e", G)`` or ``Rep.regular(G, C_in)``, and
            ``Rep.regular(G, C_out)``: how :func:`symgraph.testing.equivariance_error`
            transforms the features.
        mixing_weights: ``[L, |G|]`` parameter ``w_l(h)``, the relaxation.

    Shapes:
        ``x [N, rep_in.dim], pos [N, 3], edge_index [2, E], offsets [E, 3] (optional)
        -> [N, C_out * |G|]``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        group: MatrixGroup | str,
        num_filter_banks: int = 2,
        lifting: bool = False,
        hidden: int = 32,
        kernel_layers: int = 2,
        length_scale: float = 1.0,
        cutoff: float | None = None,
        aggr: str = "add",
        bias: bool = True,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        self.in_channels = check_int(in_channels, "in_channels")
        self.out_channels = check_int(out_channels, "out_channels")
        self.num_filter_banks = check_int(num_filter_banks, "num_filter_banks")
        self.hidden = check_int(hidden, "hidden")
        self.kernel_layers = check_int(kernel_layers, "kernel_layers")
        self.group = group = _finite_group(group)
        if not _is_positive_finite(length_scale):
            raise ValueError(
                f"length_scale: expected a positive finite number, got {length_scale!r}"
            )
        if cutoff is not None and not _is_positive_finite(cutoff):
            raise ValueError(f"cutoff: expected a positive finite number or None, got {cutoff!r}")
        if aggr not in _AGGREGATIONS:
            raise ValueError(f"aggr: expected one of {_AGGREGATIONS}, got {aggr!r}")
        if backend not in BACKENDS:
            raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
        self.lifting, self.length_scale = bool(lifting), float(length_scale)
        self.cutoff = None if cutoff is None else float(cutoff)
        self.aggr, self.backend = aggr, backend
        self.order = int(group.order)
        self.rep_in = (
            Rep(f"{in_channels}x0e", group) if self.lifting else Rep.regular(group, in_channels)
        )
        self.rep_out = Rep.regular(group, out_channels)
        in_order = 1 if self.lifting else self.order

        elements = group.elements()
        self.register_exact_buffer("elements", elements)
        # shift[h, g] = index of h^{-1} g: the group axis of a kernel seen from element h
        shift = RegularBlock(group).element_index(elements.transpose(1, 2)[:, None] @ elements)
        self.register_buffer("shift", shift, persistent=False)

        widths = [3] + [hidden] * kernel_layers
        self.kernel_mlp = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths, widths[1:]))
        self.num_features = hidden + 1  # MLP features and a constant
        self.weight = nn.Parameter(
            torch.empty(num_filter_banks, out_channels, self.num_features, in_channels, in_order)
        )
        self.mixing_weights = nn.Parameter(torch.empty(num_filter_banks, self.order))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Kernel MLP by PyTorch's defaults, banks ``N(0, 1/fan_in)``, ``w = 1/sqrt(L)``
        for every bank and group element (exactly equivariant), bias zero."""
        for layer in self.kernel_mlp:
            layer.reset_parameters()
        fan_in = self.weight[0, 0].numel()
        nn.init.normal_(self.weight, std=1.0 / math.sqrt(fan_in))
        nn.init.constant_(self.mixing_weights, 1.0 / math.sqrt(self.num_filter_banks))
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    # ------------------------------------------------------------------ relaxation
    def relaxation_penalty(self) -> Tensor:
        """``Σ_l Σ_h (w_l(h) − mean_h w_l)²``: zero exactly when the layer is a group conv.

        Computed as ``Σ_l Σ_{g,h} (w_l(g) − w_l(h))² / (2|G|)`` (the same number), which is
        exactly zero in floating point whenever each ``w_l`` is constant.
        """
        w = self.mixing_weights
        return (w[:, :, None] - w[:, None, :]).pow(2).sum() / (2 * self.order)

    def relaxation_parameters(self) -> list[nn.Parameter]:
        """The mixing weights ``w [L, |G|]`` (freeze them for the strict group convolution)."""
        return [self.mixing_weights]

    # ------------------------------------------------------------------ forward
    def kernel_features(self, rel: Tensor) -> Tensor:
        """``φ(r) [..., hidden + 1]`` of relative positions ``rel [..., 3]``."""
        h = rel / self.length_scale
        for layer in self.kernel_mlp:
            h = F.silu(layer(h))
        features = torch.cat([h, torch.ones_like(h[..., :1])], dim=-1)
        if self.cutoff is not None:
            features = features * cosine_cutoff(edge_length(rel), self.cutoff)[..., None]
        return features

    def mixed_weights(self) -> Tensor:
        """``Σ_l w_l(h) W_l`` per output element ``h``, group axis shifted by ``h^{-1}``:
        ``[|G|, C_out, hidden + 1, C_in * |G_in|]``."""
        weight = self.weight
        if not self.lifting:
            weight = weight[..., self.shift]  # [L, O, A, C, h, g] = W_l[..., h^{-1} g]
            mixed = torch.einsum("lh,loachg->hoacg", self.mixing_weights, weight)
        else:
            mixed = torch.einsum("lh,loacg->hoacg", self.mixing_weights, weight)
        return mixed.reshape(self.order, self.out_channels, self.num_features, -1)

    def forward(
        self, x: Tensor, pos: Tensor, edge_index: Tensor, offsets: Tensor | None = None
    ) -> Tensor:
        """Convolve ``x [N, rep_in.dim]``; returns lifted features ``[N, C_out * |G|]``.

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
        layout = EdgeLayout.from_receivers(dst, num_nodes)
        # h^{-1} r for every element h: [|G|, E, 3]
        features = self.kernel_features(torch.einsum("ek,hkm->hem", rel, self.elements.to(x)))
        weights = self.mixed_weights().to(x)
        messages = x[src]
        out = []
        for h in range(self.order):
            summed = neighbour_outer_sum(
                features[h], messages, dst, num_nodes, layout, self.backend
            )  # [N, hidden + 1, C_in * |G_in|]
            out.append(summed.flatten(1) @ weights[h].reshape(self.out_channels, -1).T)
        out = torch.stack(out, dim=-1)  # [N, C_out, |G|]
        if self.aggr == "mean":
            out = out / layout.degree.clamp_min(1).to(out)[:, None, None]
        if self.bias is not None:
            out = out + self.bias[:, None]
        return out.flatten(1)

    def extra_repr(self) -> str:
        kind = "lifting" if self.lifting else "group"
        return (
            f"{self.in_channels} -> {self.out_channels}, group={self.group.name}, {kind}, "
            f"num_filter_banks={self.num_filter_banks}, hidden={self.hidden}, "
            f"kernel_layers={self.kernel_layers}, length_scale={self.length_scale}, "
            f"cutoff={self.cutoff}, aggr={self.aggr}, bias={self.bias is not None}"
        )


class GroupPooling(nn.Module):
    """Pool lifted features over the group axis: ``[..., C * |G|] -> [..., C]`` (invariant).

    Args:
        channels: ``C``, the number of lifted channels (layout ``[C, |G|]``, as
            ``Rep.regular(group, C)``).
        group: the finite group.
        reduce: ``"mean"`` or ``"max"`` over the group axis.
    """

    def __init__(self, channels: int, group: MatrixGroup | str, reduce: str = "mean") -> None:
        super().__init__()
        self.channels = check_int(channels, "channels")
        self.group = group = _finite_group(group)
        if reduce not in _REDUCTIONS:
            raise ValueError(f"reduce: expected one of {_REDUCTIONS}, got {reduce!r}")
        self.reduce = reduce
        self.order = int(group.order)
        self.rep_in = Rep.regular(group, channels)

    def forward(self, x: Tensor) -> Tensor:
        """``x [..., C * |G|] -> [..., C]``."""
        self.rep_in.check_features(x, "x")
        lifted = x.reshape(*x.shape[:-1], self.channels, self.order)
        return lifted.mean(dim=-1) if self.reduce == "mean" else lifted.amax(dim=-1)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, group={self.group.name}, reduce={self.reduce}"
