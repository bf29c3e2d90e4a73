"""``SteerableDynamics``: a G-equivariant next-frame predictor with steerable convolutions.

The interface and the integrator-shaped update of
:class:`~symgraph.models.dynamics.EquivariantDynamics`,

    (pos [N, 3], vel [N, 3], z [N], batch [N]) -> (next_pos [N, 3], next_vel [N, 3])

    v' = v + s · a_i                      (a_i: learned 1o "acceleration")
    r' = r + dt · (v + v') / 2 + s · dt · c_i   (c_i: learned 1o correction)

but the message passing is made of :class:`~symgraph.nn.ImplicitSteerableConv` layers of
any catalog group G ≤ O(3) (O(3) by default). Each atom starts with the features
``embed(z) ⊕ |v/s|² (0e) ⊕ v/s (1o)`` (both velocity terms softly bounded, as
EquivariantDynamics bounds its invariants); every layer is a steerable convolution over the
radius graph (kernels of the relative positions ``r_j − r_i`` and of learned species
embeddings of both atoms), a gated nonlinearity and a residual connection; an
:class:`~symgraph.nn.EquivariantLinear` reads ``(a_i, c_i)`` as ``2x1o`` from the last
layer's features. Only relative positions enter, so the update is translation invariant;
rotations and reflections of G act on ``pos`` and ``vel`` alike. The readout starts at
1/100 of its default initialisation, so an untrained model moves atoms in nearly straight
lines.
"""

from __future__ import annotations

import torch
from e3nn import o3
from torch import Tensor, nn

from symgraph.checks import (
    check_batch,
    check_int,
    check_parameter_dtype,
    check_positions,
)
from symgraph.graph import order_by_in_degree, radius_graph
from symgraph.groups import MatrixGroup, Rep, as_group, as_rep
from symgraph.models.dynamics import _soft_bound, check_step_settings
from symgraph.nn import EquivariantLinear, Gate, ImplicitSteerableConv, gate_rep

__all__ = ["SteerableDynamics"]

#: The readout's initial weights are its default ones times this (learned terms near zero).
READOUT_SCALE = 0.01


def _soft_bound_vector(v: Tensor, bound: float = 10.0) -> Tensor:
    """``v / sqrt(1 + |v|² / bound²)``: ``v`` for small vectors, length below ``bound``
    (a function of the norm only, so it commutes with every orthogonal map)."""
    return v / torch.sqrt(1.0 + (v * v).sum(-1, keepdim=True) / bound**2)


def _count(irreps: o3.Irreps, l: int, p: int) -> int:
    return sum(mul for mul, ir in irreps if ir.l == l and ir.p == p)


class SteerableDynamics(nn.Module):
    """Predict the next frame ``(pos, vel)`` of molecules, G-equivariantly, with
    implicit steerable convolutions (see the module docstring for the update).

    Args:
        group: G ≤ O(3), a catalog name (``"O3"``, ``"SO3"``, ``"SO2"``, ``"D4"`` …) or a
            :class:`~symgraph.groups.MatrixGroup`.
        hidden: node irreps between layers (restricted to G); needs at least one ``0e``
            and one ``1o`` copy. The ``0e`` count is also the width of the atom embedding.
        num_layers: convolution layers.
        dt: time between input and predicted frame (fs).
        cutoff: neighbour cutoff in Å, where the kernels vanish smoothly; ``None``
            (default) uses all pairs of each molecule and no envelope (the kernels'
            radial basis then spans ``[0, r_max]``).
        max_z: largest atomic number embedded.
        velocity_scale: typical speed ``s`` in Å/fs (velocity features are divided by it,
            learned terms multiplied by it).
        species_dim: width of the learned species embedding both atoms of an edge feed to
            the kernels (0: kernels of the geometry only).
        kernel_hidden, lmax, num_radial, r_max: the kernel MLP (see
            :class:`~symgraph.nn.ImplicitKernel`).

    Shapes: ``pos [N, 3]``, ``vel [N, 3]``, ``z [N]`` (integers), ``batch [N]`` (sorted)
    or ``None`` -> ``(next_pos [N, 3], next_vel [N, 3])``.
    """

    def __init__(
        self,
        group: str | MatrixGroup = "O3",
        hidden: str | o3.Irreps = "16x0e + 8x1o",
        num_layers: int = 2,
        dt: float = 1.0,
        cutoff: float | None = None,
        max_z: int = 100,
        velocity_scale: float = 0.01,
        species_dim: int = 8,
        kernel_hidden: str | None = None,
        lmax: int = 2,
        num_radial: int = 8,
        r_max: float = 5.0,
    ) -> None:
        super().__init__()
        group = as_group(group)
        self.dt, self.cutoff, self.velocity_scale = check_step_settings(dt, cutoff, velocity_scale)
        num_layers = check_int(num_layers, "num_layers")
        max_z = check_int(max_z, "max_z", least=0)
        species_dim = check_int(species_dim, "species_dim", least=0)
        self.group = group
        self.rep_hidden = as_rep(hidden, group, "hidden")
        irreps = self.rep_hidden.irreps
        scalars, vectors = _count(irreps, 0, 1), _count(irreps, 1, -1)
        if not scalars or not vectors:
            raise ValueError(
                "hidden: expected irreps with at least one 0e (atom embedding) and one 1o "
                f"(velocity, outputs) copy, e.g. '16x0e + 8x1o', got {str(irreps)!r}"
            )
        self.max_z, self.species_dim = max_z, species_dim
        self.embed = nn.Embedding(max_z + 1, scalars)
        self.species = nn.Embedding(max_z + 1, species_dim) if species_dim else None
        self.rep_in = Rep(f"{scalars + 1}x0e + 1x1o", group)
        self.lift = EquivariantLinear(self.rep_in, self.rep_hidden)
        self.convs = nn.ModuleList(
            ImplicitSteerableConv(
                self.rep_hidden,
                gate_rep(self.rep_hidden),
                node_dim=species_dim,
                hidden=kernel_hidden,
                lmax=lmax,
                num_radial=num_radial,
                cutoff=cutoff,
                r_max=r_max,
                checkpoint=False,
            )  # fmt: skip
            for _ in range(num_layers)
        )
        self.gates = nn.ModuleList(Gate(self.rep_hidden) for _ in range(num_layers))
        self.readout = EquivariantLinear(self.rep_hidden, Rep("2x1o", group), bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Default initialisation of every layer; the readout scaled by
        :data:`READOUT_SCALE`, so that the learned terms start near zero."""
        self.embed.reset_parameters()
        if self.species is not None:
            self.species.reset_parameters()
        self.lift.reset_parameters()
        for conv in self.convs:
            conv.reset_parameters()
        self.readout.reset_parameters()
        with torch.no_grad():
            for weight in self.readout.weights:
                weight.mul_(READOUT_SCALE)

    def _check_inputs(
        self, pos: Tensor, vel: Tensor, z: Tensor, batch: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        """The inputs checked (shapes, dtypes, atomic numbers), ``z`` as int64."""
        pos = check_parameter_dtype(check_positions(pos, "pos"), self, "pos")
        vel = check_parameter_dtype(check_positions(vel, "vel"), self, "vel")
        if vel.shape != pos.shape:
            raise ValueError(
                f"vel: expected shape {list(pos.shape)} (as pos), got {list(vel.shape)}"
            )
        if not isinstance(z, Tensor) or z.shape != (pos.shape[0],) or z.is_floating_point():
            shape = list(z.shape) if isinstance(z, Tensor) else type(z).__name__
            dtype = f" of dtype {z.dtype}" if isinstance(z, Tensor) else ""
            raise ValueError(
                f"z: expected integer atomic numbers [{pos.shape[0]}], got {shape}{dtype}"
            )
        if z.numel() and (int(z.min()) < 0 or int(z.max()) > self.max_z):
            raise ValueError(
                f"z: expected atomic numbers in [0, {self.max_z}], got values from "
                f"{int(z.min())} to {int(z.max())}"
            )
        return pos, vel, z.long(), check_batch(batch, pos.shape[0])

    def forward(
        self, pos: Tensor, vel: Tensor, z: Tensor, batch: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """``(pos [N, 3], vel [N, 3], z [N], batch [N] | None) -> (next_pos, next_vel)``."""
        pos, vel, z, batch = self._check_inputs(pos, vel, z, batch)
        s = self.velocity_scale
        edge_index = radius_graph(pos.detach(), self.cutoff or float("inf"), batch)
        # renumbered once, the layers skip their own sorting of the edges by receiver
        order = order_by_in_degree(edge_index, pos.shape[0])
        vel_s = vel[order.nodes] / s
        speed2 = _soft_bound((vel_s * vel_s).sum(-1, keepdim=True))
        zo = z[order.nodes]
        x = torch.cat([self.embed(zo), speed2, _soft_bound_vector(vel_s)], dim=-1)
        attr = None if self.species is None else self.species(zo)
        pos_o = pos[order.nodes]
        h = self.lift(x)
        for conv, gate in zip(self.convs, self.gates):
            h = h + gate(conv(h, pos_o, order.edge_index, node_attr=attr))
        accel, corr = self.readout(h)[order.rank].reshape(-1, 2, 3).unbind(1)
        vel_next = vel + s * accel
        pos_next = pos + self.dt * 0.5 * (vel + vel_next) + s * self.dt * corr
        return pos_next, vel_next

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(group={self.group.name}, "
            f"hidden={self.rep_hidden.short()}, layers={len(self.convs)}, dt={self.dt}, "
            f"cutoff={self.cutoff}, velocity_scale={self.velocity_scale}, "
            f"species_dim={self.species_dim})"
        )
