"""SteerableMoleculeNet: implicit-kernel message passing for molecular properties (QM9)."""

from __future__ import annotations

import torch
from e3nn import o3
from torch import Tensor, nn
from torch_geometric.data import Batch, Data

from symgraph.checks import (
    as_number,
    check_batch,
    check_edge_attr,
    check_edge_index,
    check_features,
    check_int,
    check_parameter_dtype,
    check_positions,
    is_int,
)
from symgraph.data.molecules import ATOM_FEATURE_DIM, BOND_FEATURE_DIM
from symgraph.graph import order_by_in_degree
from symgraph.groups import MatrixGroup, Rep, as_group, block_hom_basis
from symgraph.nn import (
    EquivariantLinear,
    Gate,
    ImplicitSteerableConv,
    InvariantReadout,
    gate_rep,
)
from symgraph.nn.linear import invariant_subspace
from symgraph.ops import segment_reduce

__all__ = ["SteerableMoleculeNet"]

_READOUTS = ("sum", "mean")
_LAST_LAYERS = ("readout", "full")


def _read_blocks(rep: Rep, dipole: bool) -> list[int]:
    """Indices of the blocks of ``rep`` that the readout reads: those with a G-invariant
    component, and with ``dipole`` also those with a nonzero equivariant map to ``1o``."""
    read = {index for index, _ in invariant_subspace(rep)}
    if dipole:
        vector = Rep("1x1o", rep.group).blocks[0][1]
        for index, (_, block) in enumerate(rep.blocks):
            if block_hom_basis(rep.group, block, vector).shape[0]:
                read.add(index)
    return sorted(read)


def _graph_count(data: Data | Batch, batch: Tensor) -> int:
    """Graphs in ``data``: a ``Batch``'s ``num_graphs`` (which counts graphs without atoms,
    wherever they are), else ``batch.max() + 1``, else one (a ``Data`` is one molecule)."""
    counted = int(batch.max()) + 1 if batch.numel() else 0
    declared = getattr(data, "num_graphs", None)
    if isinstance(declared, int):
        if declared < counted:
            raise ValueError(
                f"data.num_graphs: expected at least batch.max() + 1 = {counted}, got {declared}"
            )
        return declared
    return counted if getattr(data, "batch", None) is not None else 1


class SteerableMoleculeNet(nn.Module):
    """Molecular property predictor built from :class:`ImplicitSteerableConv` layers.

    Atoms start as invariant features (``x``, the atom one-hot and chemistry flags); each
    interaction layer is an implicit-kernel convolution over the molecule's graph (bonds and
    radius pairs) whose kernel sees the relative position, the bond-type one-hot
    (``edge_attr``, when ``use_edge_attr``) and both atoms' features (when
    ``use_node_attr``), followed by a gated nonlinearity and a residual connection. Scalar
    targets come from a per-atom MLP on the invariant components, pooled per molecule
    (``"sum"`` for extensive targets such as energies, ``"mean"`` for intensive ones such as
    HOMO); with ``dipole=True`` the model predicts the dipole vector
    ``μ = Σ_i q_i (r_i − r̄) + Σ_i v_i`` from per-atom charges ``q_i`` (invariant) and vectors
    ``v_i`` (a ``1o`` readout), which is equivariant.

    The last layer computes only the blocks of ``hidden`` that the readout reads
    (``rep_read``: those with an invariant component, and with ``dipole`` those that map to
    ``1o``; under O(3), ``32x0e + 8x1o + 4x2e`` reads ``32x0e``), as the other blocks' outputs
    and gates would never reach the prediction. ``last_layer="full"`` keeps every block
    (equivariant atom features for other heads, and the architecture of runs before this
    choice existed).

    Args:
        group: G (name or MatrixGroup; default O(3)).
        hidden: node representation between layers.
        num_layers: interaction layers.
        cutoff: kernel cutoff radius (Å); edges beyond it contribute nothing and are dropped
            before the layers (a graph built with a larger radius costs no extra work).
        atom_dim: width of ``data.x``.
        edge_dim: width of ``data.edge_attr``.
        use_edge_attr, use_node_attr: feed bond types / atom features to the kernels.
        num_targets: scalar outputs per molecule (a positive int; unused with ``dipole``).
        readout: ``"sum"`` or ``"mean"`` over atoms.
        dipole: predict the dipole vector ``[B, 3]`` instead of scalars.
        kernel_hidden, lmax, num_radial: the kernel MLP (see :class:`ImplicitKernel`).
        last_layer: ``"readout"`` (the last layer outputs ``rep_read``) or ``"full"``
            (it outputs ``hidden``).

    Shapes:
        ``forward(data) -> [num_graphs, num_targets]`` (``[num_graphs, 3]`` with dipole).
    """

    def __init__(
        self,
        group: str | MatrixGroup = "O3",
        hidden: str | o3.Irreps = "32x0e + 8x1o + 4x2e",
        num_layers: int = 3,
        cutoff: float = 5.0,
        atom_dim: int = ATOM_FEATURE_DIM,
        edge_dim: int = BOND_FEATURE_DIM,
        use_edge_attr: bool = True,
        use_node_attr: bool = True,
        num_targets: int = 1,
        readout: str = "sum",
        dipole: bool = False,
        kernel_hidden: str | None = None,
        lmax: int = 2,
        num_radial: int = 8,
        last_layer: str = "readout",
    ) -> None:
        super().__init__()
        if readout not in _READOUTS:
            raise ValueError(f"readout: expected one of {_READOUTS}, got {readout!r}")
        if last_layer not in _LAST_LAYERS:
            raise ValueError(f"last_layer: expected one of {_LAST_LAYERS}, got {last_layer!r}")
        if not is_int(num_layers) or num_layers < 1:
            raise ValueError(f"num_layers: expected a positive int, got {num_layers!r}")
        num_layers = int(num_layers)
        num_targets = check_int(num_targets, "num_targets")
        atom_dim = check_int(atom_dim, "atom_dim")
        self.group = as_group(group)
        self.rep_hidden = Rep(hidden, self.group)
        self.use_edge_attr, self.use_node_attr = use_edge_attr, use_node_attr
        self.atom_dim, self.edge_dim = as_number(atom_dim), as_number(edge_dim)
        self.cutoff = as_number(cutoff)
        self.readout, self.dipole, self.num_targets = readout, dipole, num_targets
        self.last_layer = last_layer
        read_blocks = (
            _read_blocks(self.rep_hidden, dipole)
            if last_layer == "readout"
            else range(len(self.rep_hidden.blocks))
        )
        self.rep_read = Rep(
            group=self.group, blocks=[self.rep_hidden.blocks[i] for i in read_blocks]
        )
        slices = self.rep_hidden.slices()
        columns = [i for b in read_blocks for i in range(slices[b].start, slices[b].stop)]
        # the columns of hidden that the last layer's residual keeps (None: all of them)
        self.register_buffer(
            "_read_columns",
            None if len(columns) == self.rep_hidden.dim else torch.tensor(columns),
            persistent=False,
        )
        self.embed = EquivariantLinear(Rep(f"{atom_dim}x0e", self.group), self.rep_hidden)
        self.convs = nn.ModuleList()
        self.gates = nn.ModuleList()
        for index in range(num_layers):
            rep_out = self.rep_read if index == num_layers - 1 else self.rep_hidden
            self.convs.append(
                ImplicitSteerableConv(
                    self.rep_hidden,
                    gate_rep(rep_out),
                    edge_dim=edge_dim if use_edge_attr else 0,
                    node_dim=atom_dim if use_node_attr else 0,
                    hidden=kernel_hidden,
                    lmax=lmax,
                    num_radial=num_radial,
                    cutoff=cutoff,
                    checkpoint=False,
                )  # fmt: skip
            )
            self.gates.append(Gate(rep_out))
        self.invariants = InvariantReadout(self.rep_read)
        width = self.invariants.num_invariants
        outputs = 1 if dipole else num_targets
        self.head = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, outputs))
        self.vector_head = (
            EquivariantLinear(self.rep_read, Rep("1x1o", self.group), bias=False)
            if dipole
            else None
        )

    def reset_parameters(self) -> None:
        self.embed.reset_parameters()
        for conv in self.convs:
            conv.reset_parameters()
        for layer in self.head:
            if hasattr(layer, "reset_parameters"):
                layer.reset_parameters()
        if self.vector_head is not None:
            self.vector_head.reset_parameters()

    def node_features(self, data: Data | Batch) -> Tensor:
        """Equivariant atom features ``[N, rep_read.dim]`` after the interaction layers
        (``rep_read`` is ``hidden`` with ``last_layer="full"``)."""
        x, pos, edge_index = data.x, data.pos, data.edge_index
        if x is None:
            raise ValueError(f"data.x: expected atom features [N, {self.atom_dim}], got None")
        pos = check_positions(pos, "data.pos")
        x = check_features(x, self.atom_dim, "data.x", num_nodes=pos.shape[0])
        x, pos = (check_parameter_dtype(t, self, n) for t, n in ((x, "data.x"), (pos, "data.pos")))
        edge_attr = data.edge_attr if self.use_edge_attr else None
        node_attr = x if self.use_node_attr else None
        edge_index, edge_attr = self._edges_within_cutoff(pos, edge_index, edge_attr)
        # renumbered once, the layers skip their own sorting of the edges by receiver
        order = order_by_in_degree(edge_index, pos.shape[0])
        x, pos = x[order.nodes], pos[order.nodes]
        edge_attr = None if edge_attr is None else edge_attr[order.edges]
        node_attr = None if node_attr is None else x
        h = self.embed(x)
        last = len(self.convs) - 1
        for index, (conv, gate) in enumerate(zip(self.convs, self.gates)):
            update = gate(conv(h, pos, order.edge_index, edge_attr, node_attr))
            if index == last and self._read_columns is not None:
                h = h[:, self._read_columns]
            h = h + update
        return h[order.rank]

    def _edges_within_cutoff(
        self, pos: Tensor, edge_index: Tensor, edge_attr: Tensor | None
    ) -> tuple[Tensor, Tensor | None]:
        """The edges shorter than the kernels' cutoff (and their attributes): the envelope
        is exactly zero, value and slope, on the others, so dropping them changes nothing
        but the work when the graph was built with a larger radius (``pos`` already
        checked by :meth:`node_features`)."""
        edge_index = check_edge_index(edge_index, pos.shape[0], "data.edge_index").long()
        width = self.edge_dim if self.use_edge_attr else 0
        edge_attr = check_edge_attr(edge_attr, edge_index.shape[1], width, "data.edge_attr")
        length = (pos[edge_index[0]] - pos[edge_index[1]]).norm(dim=-1)
        keep = length < self.cutoff
        if bool(keep.all()):
            return edge_index, edge_attr
        return edge_index[:, keep], None if edge_attr is None else edge_attr[keep]

    def forward(self, data: Data | Batch) -> Tensor:
        h = self.node_features(data)
        batch = getattr(data, "batch", None)
        batch = (
            check_batch(batch, h.shape[0], "data.batch", require_sorted=False)
            if batch is not None
            else h.new_zeros(h.shape[0], dtype=torch.long)
        )
        num_graphs = _graph_count(data, batch)
        atom_out = self.head(h @ self.invariants.projection.T)
        if not self.dipole:
            return segment_reduce(atom_out, batch, num_graphs, self.readout)
        centre = segment_reduce(data.pos, batch, num_graphs, "mean")[batch]
        per_atom = atom_out * (data.pos - centre) + self.vector_head(h)
        return segment_reduce(per_atom, batch, num_graphs, "sum")

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(group={self.group.name}, hidden={self.rep_hidden.short()}, "
            f"read={self.rep_read.short()}, layers={len(self.convs)}, cutoff={self.cutoff}, "
            f"edge_attr={self.use_edge_attr}, node_attr={self.use_node_attr}, "
            f"readout={self.readout}, num_targets={self.num_targets}, dipole={self.dipole})"
        )
