"""ImplicitSteerableConv: message passing with implicit G-steerable kernels."""

from __future__ import annotations

from collections.abc import Callable

import torch
from e3nn import o3
from torch import Tensor
from torch.utils.hooks import RemovableHandle
from torch.utils.weak import WeakIdKeyDictionary
from torch_geometric.nn import MessagePassing

from symgraph.caching import tensor_cache
from symgraph.checks import (
    check_edge_attr,
    check_edge_index,
    check_features,
    check_parameter_dtype,
    check_positions,
    check_tensor,
    is_int,
)
from symgraph.groups import MatrixGroup, Rep, as_rep
from symgraph.lattice import Lattice, LatticeGraph, cell_positions, lattice_graph
from symgraph.nn.kernel import ImplicitKernel
from symgraph.nn.linear import EquivariantLinear, InvariantBias
from symgraph.ops import EdgeLayout, fused_implicit_convolution, implicit_convolution
from symgraph.ops.contraction import BACKENDS
from symgraph.ops.lattice_conv import (
    lattice_convolution,
    lattice_degree,
    lattice_edge_count,
    lattice_weight,
)

__all__ = ["ImplicitSteerableConv"]

_AGGREGATIONS = ("add", "mean")


#: ``pos`` tensors already found to hold a lattice's cells: ``{(pos._version, lattice)}``
#: (a model calls every layer with the same ``pos``; checking it once saves a pass and, on
#: GPUs, a synchronisation per layer and step).
_CHECKED_POSITIONS: WeakIdKeyDictionary = WeakIdKeyDictionary()


def _check_lattice_positions(pos: Tensor, lattice: Lattice, copies: int) -> None:
    """Raise unless ``pos`` is ``copies`` translated copies of the lattice's cell positions
    (another shape, axis order or spacing with as many edges would give other numbers).
    Checked once per ``pos`` tensor, lattice and in-place version (every call for inference
    tensors, which have no version counter)."""
    if torch.compiler.is_compiling():  # as the other value checks: not while tracing
        return
    remember = not pos.is_inference()
    key = (pos._version, lattice) if remember else None
    if remember and key in _CHECKED_POSITIONS.get(pos, ()):
        return
    cells = cell_positions(lattice, dtype=pos.dtype, device=pos.device)
    grid = pos.reshape(copies, lattice.num_cells, 3)
    offsets = grid - grid[:, :1]
    expected = cells - cells[:1]
    tolerance = 1e-4 * min(lattice.spacing)
    error = float((offsets - expected).abs().max()) if pos.numel() else 0.0
    if not error <= tolerance:
        raise ValueError(
            f"lattice: pos does not hold the cell positions of {lattice} (largest offset "
            f"error {error:.3g}; expected {copies} copies of cell_positions(lattice), each "
            "possibly translated)"
        )
    if remember:
        _CHECKED_POSITIONS.setdefault(pos, set()).add(key)


def _no_propagate_hook(name: str) -> Callable[..., RemovableHandle]:
    """A ``MessagePassing.<name>`` that refuses to register: the layer never calls
    ``propagate`` (nor ``message``, ``aggregate``, ``message_and_aggregate`` or
    ``edge_updater``), so such a hook would silently never run."""

    def register(self: MessagePassing, hook: Callable) -> RemovableHandle:
        raise NotImplementedError(
            f"{name}: {type(self).__name__} contracts per node without calling propagate, "
            "so propagate/message/aggregate hooks would never run; use "
            "register_forward_hook or register_forward_pre_hook on the layer instead (an "
            "explainer that hooks every MessagePassing layer, e.g. AttentionExplainer, "
            "skips it after layer.explain = False)"
        )

    register.__name__ = register.__qualname__ = name
    register.__doc__ = f"Refused (``NotImplementedError``): {name} would never run its hook."
    return register


def _masked_envelope(envelope: Tensor | None, edge_mask: Tensor | None) -> Tensor | None:
    """The per-edge factor ``[E]`` of the hidden features: cutoff envelope times edge mask."""
    if edge_mask is None:
        return envelope
    return edge_mask if envelope is None else envelope * edge_mask


@tensor_cache(maxsize=16)
def _cached_lattice_graph(
    lattice: Lattice, copies: int, self_loops: bool, dtype: torch.dtype, device: torch.device
) -> LatticeGraph:
    """:func:`lattice_graph`, built once per lattice, batch, dtype and device (a layer reads
    it on every forward pass)."""
    return lattice_graph(lattice, copies, self_loops=self_loops, dtype=dtype, device=device)


def _lattice_offsets(
    edge_index: Tensor, lattice: Lattice, copies: int, self_loops: bool, pos: Tensor
) -> Tensor:
    """``[E, 3]`` minimum-image offsets of ``lattice_graph(lattice, copies)``, whose
    ``edge_index [2, E]`` (in its order) ``edge_index`` must be: message passing on a lattice
    reads each edge's offset, which ``pos`` alone does not give on periodic axes."""
    graph = _cached_lattice_graph(lattice, copies, self_loops, pos.dtype, pos.device)
    if not torch.equal(edge_index.long(), graph.edge_index):
        raise ValueError(
            f"edge_index: expected lattice_graph(lattice, {copies}).edge_index in its order "
            "(a lattice layer with attributes, or explained, runs message passing on it), got "
            "other edges; pass rel= without lattice= for any other graph"
        )
    return graph.offsets


class ImplicitSteerableConv(MessagePassing):
    """``out_i = Σ_{j→i} K(x_j − x_i, e_ij, a_j, a_i) f_j  (+ W_self f_i + b)``.

    ``K`` is an :class:`ImplicitKernel`: a G-equivariant MLP of the relative position
    (spherical harmonics of the direction, a radial basis and a smooth cutoff) and of
    invariant edge and node attributes, for any group G of the catalog. The sum is computed
    per node on ``h_ij ⊗ f_j`` products (:func:`symgraph.ops.neighbour_outer_sum`), never
    building a ``C_out × C_in`` matrix per edge. Messages flow ``edge_index[0] →
    edge_index[1]`` (PyG's ``source_to_target``).

    Args:
        irreps_in, irreps_out: input/output representations (irreps string, e3nn Irreps or
            Rep).
        group: G (default O(3)).
        edge_dim: number of scalar edge attributes.
        node_dim: number of scalar node attributes (``node_attr``) fed to the kernel for
            both endpoints.
        hidden, layers, lmax, num_radial: the kernel MLP (see :class:`ImplicitKernel`).
        cutoff: radius where the kernel vanishes smoothly (``None``, the default: no
            envelope, e.g. for k-nearest-neighbour graphs; the radial basis then spans
            ``[0, r_max]``). Set it to the radius of a radius graph, so that messages fade
            out before neighbours leave the graph.
        r_max: radial range when there is no cutoff.
        aggr: ``"add"`` or ``"mean"`` over incoming edges.
        self_interaction: add an equivariant linear map of the node's own features.
        bias: learned bias on the invariant output components only.
        backend: contraction backend (``"auto"``, ``"regular"``, ``"padded"``, ``"scatter"``
            or ``"triton"``; see :func:`symgraph.ops.neighbour_outer_sum`).
        checkpoint: recompute each block of edges during backward instead of storing the
            kernel MLP's activations (peak memory of one block; the forward runs twice).
            On CPU, with the plain kernel and a regular or padded layout, the layer runs
            :func:`symgraph.ops.fused_implicit_convolution` (a hand-written backward that
            recomputes each block once without autograd bookkeeping, or reuses its kept
            intermediates with ``checkpoint=False``); otherwise
            :func:`symgraph.ops.implicit_convolution` (``torch.utils.checkpoint`` per
            block when ``checkpoint``).
        block_edges: about how many edges one block holds; ``None`` chooses by device
            (:func:`symgraph.ops.default_block_edges`: 8192 on CPU, 2^18 on CUDA, where
            fewer, larger blocks launch fewer kernels).

    Shapes:
        ``x [N, rep_in.dim], pos [N, 3], edge_index [2, E], edge_attr [E, edge_dim],
        node_attr [N, node_dim] -> [N, rep_out.dim]``. ``rel [E, 3]`` may replace the
        relative positions (e.g. minimum-image offsets on periodic lattices).

    Lattices. Passing ``lattice=`` says that the graph is the stencil graph of ``B``
    copies of that :class:`~symgraph.lattice.Lattice` (``lattice_graph(lattice, B)``, with
    or without self loops) and ``x`` is in ``field_to_nodes`` order. A layer without edge or
    node attributes then takes the fast path (:mod:`symgraph.ops.lattice_conv`): the kernel
    is evaluated once at the stencil offsets and applied as one dense ``conv2d``/``conv3d``
    (circular padding on periodic axes, zeros on bounded ones), with the self-interaction
    folded into the centre tap -- the same numbers as message passing up to rounding.
    ``rel`` is then ignored (the offsets are the lattice's), and ``pos`` must be the
    lattice's cell positions (:func:`~symgraph.lattice.cell_positions`, each copy possibly
    translated; checked, as is the number of edges). Layers with edge or node attributes
    run message passing instead, with each edge's offset from the lattice (minimum image
    across periodic axes, which ``pos`` alone does not give); ``edge_index`` must then be
    ``lattice_graph(lattice, B).edge_index``, in its order.

    Explanations. PyG's explainers (``torch_geometric.explain``) set an edge mask ``m [E]``
    on every ``MessagePassing`` layer; this layer scales the message ``j → i`` by ``m_ij``
    (after a sigmoid unless the explainer says otherwise), exactly as ``propagate`` would:
    ``out_i = W̃(Σ_j m_ij h_ij ⊗ f_j)`` (``"mean"`` still divides by the in-degree), the
    self-interaction and bias being no messages. The mask rides on the hidden features, so
    every backend computes it; a lattice layer then runs message passing on
    ``lattice_graph(lattice, B)`` (whose ``edge_index``, in its order, it requires).
    As ``propagate`` is never called, registering a propagate, message, aggregate,
    message-and-aggregate or edge-update hook raises ``NotImplementedError``; module
    forward hooks (``register_forward_hook``) work as for any module.
    """

    kernel_class: type[ImplicitKernel] = ImplicitKernel
    """The kernel module built by the constructor (subclasses swap in variants)."""

    def _kernel_options(self) -> dict:
        """Extra keyword arguments for ``kernel_class`` (none for the equivariant kernel)."""
        return {}

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
    ) -> None:
        if aggr not in _AGGREGATIONS:
            raise ValueError(f"aggr: expected one of {_AGGREGATIONS}, got {aggr!r}")
        super().__init__(aggr=aggr, flow="source_to_target")
        if group is None and isinstance(irreps_in, Rep):
            group = irreps_in.group
        self.rep_in = as_rep(irreps_in, group, "irreps_in")
        self.rep_out = as_rep(irreps_out, self.rep_in.group, "irreps_out")
        for name, rep in (("irreps_in", self.rep_in), ("irreps_out", self.rep_out)):
            if rep.dim == 0:
                raise ValueError(
                    f"{name}: expected a non-empty representation, got {rep.short()!r}"
                )
        self.group = self.rep_in.group
        self.kernel = self.kernel_class(
            self.rep_in, self.rep_out, edge_dim=edge_dim, node_dim=node_dim, hidden=hidden,
            layers=layers, lmax=lmax, num_radial=num_radial, cutoff=cutoff, r_max=r_max,
            **self._kernel_options(),
        )  # fmt: skip
        self.self_linear = (
            EquivariantLinear(self.rep_in, self.rep_out, bias=False) if self_interaction else None
        )
        self.bias = InvariantBias(self.rep_out) if bias else None
        if backend not in BACKENDS:
            raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
        self.backend = backend
        self.checkpoint = checkpoint
        if block_edges is not None and (not is_int(block_edges) or block_edges < 1):
            raise ValueError(f"block_edges: expected a positive int or None, got {block_edges!r}")
        self.block_edges = None if block_edges is None else int(block_edges)
        self.reset_parameters()

    @property
    def irreps_in(self) -> o3.Irreps | None:
        return self.rep_in.irreps

    @property
    def irreps_out(self) -> o3.Irreps | None:
        return self.rep_out.irreps

    @property
    def edge_dim(self) -> int:
        return self.kernel.edge_dim

    @property
    def node_attr_dim(self) -> int:
        """Number of scalar node attributes (``node_dim`` of the constructor; PyG's own
        ``MessagePassing.node_dim`` is the node axis of feature tensors)."""
        return self.kernel.node_dim

    def reset_parameters(self) -> None:
        super().reset_parameters()
        self.kernel.reset_parameters()
        if self.self_linear is not None:
            self.self_linear.reset_parameters()
        if self.bias is not None:
            self.bias.reset_parameters()

    def forward(
        self,
        x: Tensor,
        pos: Tensor,
        edge_index: Tensor,
        edge_attr: Tensor | None = None,
        node_attr: Tensor | None = None,
        rel: Tensor | None = None,
        lattice: Lattice | None = None,
    ) -> Tensor:
        """Convolve ``x [N, rep_in.dim]`` over the graph; returns ``[N, rep_out.dim]``.

        ``lattice``: the graph is ``lattice_graph(lattice, B)`` (see the class docstring).
        """
        # dtypes are checked against the kernel's parameters: PyG registers an explainer's
        # (float32) edge mask as a parameter of the layer itself
        pos = check_parameter_dtype(check_positions(pos, "pos"), self.kernel, "pos")
        num_nodes = pos.shape[0]
        x = check_features(x, self.rep_in.dim, "x", num_nodes)
        x = check_parameter_dtype(x, self.kernel, "x")
        if node_attr is not None and not self.node_attr_dim:
            width = node_attr.shape[-1] if isinstance(node_attr, Tensor) else "D"
            raise ValueError(
                f"node_attr: this layer was built with node_dim=0 and would ignore it; build it "
                f"with node_dim={width} to use it, got {type(node_attr).__name__}"
            )
        if lattice is not None:
            copies, self_loops = self._lattice_copies(x, pos, edge_index, lattice)
            if not (self.explain or self.edge_dim or self.node_attr_dim):
                return self._lattice_forward(x, lattice, self_loops)
            # message passing on the lattice graph: each edge's offset across periodic axes
            rel = _lattice_offsets(edge_index, lattice, copies, self_loops, pos)
        edge_index = check_edge_index(edge_index, num_nodes).long()
        num_edges = edge_index.shape[1]
        edge_attr = check_edge_attr(edge_attr, num_edges, self.edge_dim)
        if self.node_attr_dim:
            node_attr = check_features(node_attr, self.node_attr_dim, "node_attr", num_nodes)
        src, dst = edge_index[0], edge_index[1]
        edge_mask = self._explain_edge_mask(num_edges, x)
        if rel is None:
            rel = pos.index_select(0, src) - pos.index_select(0, dst)
        else:
            rel = check_parameter_dtype(check_positions(rel, "rel"), self.kernel, "rel")
            if rel.shape[0] != num_edges:
                raise ValueError(
                    f"rel: expected {num_edges} rows (one per edge), got {rel.shape[0]}"
                )
        node_src = node_attr[src] if self.node_attr_dim else None
        node_dst = node_attr[dst] if self.node_attr_dim else None
        layout = EdgeLayout.from_receivers(dst, num_nodes)
        if self._fused_applies(x, layout):
            weights = self.kernel.assemble(x)
            out = fused_implicit_convolution(
                weights.layers, weights.head, x, src, dst,
                self.kernel.embed_feature_major(rel, edge_attr, node_src, node_dst),
                _masked_envelope(self.kernel.envelope(rel), edge_mask), layout,
                mean=self.aggr == "mean", block_edges=self.block_edges,
                keep_activations=not self.checkpoint, head_groups=self.kernel.head_groups,
                backend=self.backend,
            )  # fmt: skip
        else:
            out = self._generic_convolution(
                x, src, dst, rel, edge_attr, node_src, node_dst, num_nodes, layout, edge_mask
            )
        if self.self_linear is not None:
            out = out + self.self_linear(x)
        return out if self.bias is None else self.bias(out)

    def _fused_applies(self, x: Tensor, layout: EdgeLayout) -> bool:
        """Whether the hand-written-backward path runs: a plain kernel, a CPU tensor outside
        autocast, a bmm layout (regular or padded) and no compiler tracing."""
        return (
            type(self.kernel) is ImplicitKernel
            and x.device.type == "cpu"
            and not torch.is_autocast_enabled("cpu")
            and self.backend in ("auto", "regular", "padded")
            and layout.choose(self.backend) in ("regular", "padded")
            and not torch.compiler.is_compiling()
        )

    def _generic_convolution(
        self, x, src, dst, rel, edge_attr, node_src, node_dst, num_nodes, layout, edge_mask
    ) -> Tensor:
        weights = self.kernel.assemble(x)
        return implicit_convolution(
            self.kernel.hidden_function(x, weights), weights.head, x, src, dst,
            rel, edge_attr, node_src, node_dst, num_nodes, mean=self.aggr == "mean",
            backend=self.backend, checkpoint=self.checkpoint, block_edges=self.block_edges,
            layout=layout, edge_weight=edge_mask,
        )  # fmt: skip

    def _explain_edge_mask(self, num_edges: int, like: Tensor) -> Tensor | None:
        """The explanation edge mask as message weights ``[E]`` in ``like``'s dtype (sigmoid
        applied unless the explainer set ``_apply_sigmoid = False``, as
        ``MessagePassing.explain_message`` does), or None when the layer is not explained."""
        if not self.explain:
            return None
        if "explain_message" in vars(self) or (
            type(self).explain_message is not MessagePassing.explain_message
        ):
            raise NotImplementedError(
                f"explain_message: {type(self).__name__} never materialises messages, so a "
                "replaced explain_message cannot run; expected the default one (an edge mask "
                "scaling each message), got a replacement"
            )
        mask = self._edge_mask
        if mask is None:
            raise ValueError(
                "edge_mask: expected an explanation edge mask on a layer with explain=True "
                "(torch_geometric.explain.algorithm.utils.set_masks), got None"
            )
        if mask.shape != (num_edges,):
            raise ValueError(
                f"edge_mask: expected shape [{num_edges}] (one entry per edge of edge_index; "
                f"this layer adds no self loops), got {list(mask.shape)}"
            )
        return (mask.sigmoid() if self._apply_sigmoid else mask).to(like.dtype)

    @staticmethod
    def _lattice_copies(
        x: Tensor, pos: Tensor, edge_index: Tensor, lattice: Lattice
    ) -> tuple[int, bool]:
        """``(B, self_loops)`` of the lattice graph the inputs claim to be, checked.

        ``edge_index [2, E]`` is never indexed by the fast path, so only its shape is
        checked: ``E`` must be that of ``lattice_graph(lattice, B)`` with or without self
        loops. ``pos [N, 3]`` must be ``B`` (possibly translated) copies of the lattice's
        cell positions.
        """
        if not isinstance(lattice, Lattice):
            raise TypeError(f"lattice: expected a Lattice, got {type(lattice).__name__}")
        edge_index = check_tensor(edge_index, "edge_index")
        if edge_index.dim() != 2 or edge_index.shape[0] != 2:
            raise ValueError(f"edge_index: expected shape [2, E], got {list(edge_index.shape)}")
        num_edges = edge_index.shape[1]
        if x.shape[0] % lattice.num_cells:
            raise ValueError(
                f"lattice: {x.shape[0]} nodes are not a whole number of copies of a "
                f"{list(lattice.shape)} lattice ({lattice.num_cells} cells)"
            )
        copies = x.shape[0] // lattice.num_cells
        counts = {loops: copies * lattice_edge_count(lattice, loops) for loops in (True, False)}
        if num_edges not in counts.values():
            raise ValueError(
                f"edge_index: {num_edges} edges do not form lattice_graph(lattice, {copies}) "
                f"of {lattice} (expected {counts[True]} with self loops, {counts[False]} "
                "without)"
            )
        _check_lattice_positions(pos, lattice, copies)
        return copies, num_edges == counts[True]

    def _lattice_forward(self, x: Tensor, lattice: Lattice, self_loops: bool) -> Tensor:
        """The fast path: the kernel at the stencil offsets as one dense convolution;
        ``x [B * N, rep_in.dim] -> [B * N, rep_out.dim]`` (inputs checked by
        :meth:`_lattice_copies`)."""
        bias = None if self.bias is None else self.bias.vector(x)
        if self.aggr == "mean":
            weight = lattice_weight(
                self.kernel, lattice, self_loops=self_loops, dtype=x.dtype, device=x.device
            )
            degree = lattice_degree(lattice, self_loops=self_loops, dtype=x.dtype, device=x.device)
            out = lattice_convolution(x, weight, lattice, degree=degree)
            if self.self_linear is not None:
                out = out + self.self_linear(x)
            return out if bias is None else out + bias
        # W_self x_i is the centre tap of the kernel
        centre = None if self.self_linear is None else self.self_linear.weight_matrix(x)
        weight = lattice_weight(
            self.kernel, lattice, self_loops=self_loops, centre=centre, dtype=x.dtype,
            device=x.device,
        )  # fmt: skip
        return lattice_convolution(x, weight, lattice, bias=bias)

    register_propagate_forward_pre_hook = _no_propagate_hook("register_propagate_forward_pre_hook")
    register_propagate_forward_hook = _no_propagate_hook("register_propagate_forward_hook")
    register_message_forward_pre_hook = _no_propagate_hook("register_message_forward_pre_hook")
    register_message_forward_hook = _no_propagate_hook("register_message_forward_hook")
    register_aggregate_forward_pre_hook = _no_propagate_hook("register_aggregate_forward_pre_hook")
    register_aggregate_forward_hook = _no_propagate_hook("register_aggregate_forward_hook")
    register_message_and_aggregate_forward_pre_hook = _no_propagate_hook(
        "register_message_and_aggregate_forward_pre_hook"
    )
    register_message_and_aggregate_forward_hook = _no_propagate_hook(
        "register_message_and_aggregate_forward_hook"
    )
    register_edge_update_forward_pre_hook = _no_propagate_hook(
        "register_edge_update_forward_pre_hook"
    )
    register_edge_update_forward_hook = _no_propagate_hook("register_edge_update_forward_hook")

    def __repr__(self) -> str:
        options = "".join(f", {key}={value}" for key, value in self._kernel_options().items())
        return (
            f"{self.__class__.__name__}({self.rep_in.short()} -> {self.rep_out.short()}, "
            f"group={self.group.name}, edge_dim={self.edge_dim}, node_dim={self.node_attr_dim}, "
            f"hidden={self.kernel.rep_hidden.short()}, lmax={self.kernel.lmax}, "
            f"cutoff={self.kernel.cutoff}, aggr={self.aggr}{options})"
        )
