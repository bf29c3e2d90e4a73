"""A learned conserved quantity ``g_φ``: an E(3)-invariant GNN embedding of a frame.

``NeuralConservedQuantity`` maps a :class:`~symgraph.noether.frames.Frame` to
``[B, out_dim]`` invariants (plus, optionally, ``vector_dim`` E(3)-equivariant vectors,
flattened to ``[B, 3 * vector_dim]`` after the invariants). It is built from invariant
inputs only, so its invariance is exact:

- node features: a species embedding of ``z`` and the scaled speed ``|v_i|² / s²``;
- edge features (``j -> i`` within ``cutoff``): Gaussian radial basis of ``|r_ij|``, the
  velocity products ``v_i·v_j / s²`` and ``r_ij·(v_j − v_i) / (|r_ij| s)``, times a smooth
  cosine envelope that vanishes at the cutoff (so the embedding is continuous when atoms
  cross it);
- message passing ``h_i += MLP([h_i, Σ_j MLP([h_i, h_j, e_ij]) · env_ij])``, then a sum
  over atoms and an MLP readout.

Any invariant backbone can replace the built-in layers (``backbone=``), e.g. a steerable
convolution whose outputs are scalars.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from symgraph.checks import check_parameter_dtype, is_int
from symgraph.graph import radius_graph
from symgraph.noether.frames import Frame
from symgraph.noether.quantities import ConservedQuantity, centre_of_mass, segment_sum

__all__ = ["NeuralConservedQuantity", "InvariantMessagePassing", "invariant_edge_features"]


def _mlp(dims: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(dims[:-1], dims[1:]):
        layers += [nn.Linear(a, b), nn.SiLU()]
    return nn.Sequential(*layers[:-1])


def invariant_edge_features(
    frame: Frame,
    edge_index: Tensor,
    centres: Tensor,
    width: float,
    cutoff: float | None,
    velocity_scale: float,
    use_velocities: bool = True,
) -> tuple[Tensor, Tensor]:
    """E(3)-invariant features of the edges ``j -> i`` of a frame.

    Returns:
        ``(edge_attr [E, len(centres) + 2], envelope [E])``; the last two columns are the
        velocity products (zero when ``use_velocities`` is False).
    """
    j, i = edge_index
    rel = frame.pos[j] - frame.pos[i]
    dist = torch.sqrt((rel * rel).sum(-1) + 1e-12)
    rbf = torch.exp(-(((dist[:, None] - centres) / width) ** 2))
    if cutoff is None:
        env = torch.ones_like(dist)
    else:
        env = 0.5 * (torch.cos(math.pi * dist / cutoff) + 1.0) * (dist < cutoff)
    s = velocity_scale
    if use_velocities:
        vv = (frame.vel[i] * frame.vel[j]).sum(-1) / s**2
        rv = (rel * (frame.vel[j] - frame.vel[i])).sum(-1) / (dist * s)
    else:
        vv = rv = torch.zeros_like(dist)
    return torch.cat([rbf, vv[:, None], rv[:, None]], dim=-1), env


class InvariantMessagePassing(nn.Module):
    """One invariant layer: ``h_i += MLP([h_i, Σ_j MLP([h_i, h_j, e_ij]) · env_ij])``.

    Shapes: ``h [N, hidden]``, ``edge_index [2, E]`` (``j -> i``), ``edge_attr [E, F]``,
    ``envelope [E]`` -> ``[N, hidden]``.
    """

    def __init__(self, hidden: int, edge_dim: int) -> None:
        super().__init__()
        self.message = _mlp([2 * hidden + edge_dim, hidden, hidden])
        self.update = _mlp([2 * hidden, hidden, hidden])

    def forward(self, h: Tensor, edge_index: Tensor, edge_attr: Tensor, envelope: Tensor) -> Tensor:
        j, i = edge_index
        m = self.message(torch.cat([h[i], h[j], edge_attr], dim=-1)) * envelope[:, None]
        agg = h.new_zeros(h.shape).index_add(0, i, m)
        return h + self.update(torch.cat([h, agg], dim=-1))


class NeuralConservedQuantity(ConservedQuantity):
    """Learned conserved quantity ``g_φ(frame) -> [B, out_dim + 3 * vector_dim]``.

    Args:
        out_dim: number of invariant outputs ``k``.
        hidden: width of node features.
        num_layers: message-passing layers of the built-in backbone.
        num_rbf: Gaussian radial basis functions of the distance.
        cutoff: neighbour cutoff in Å (``None``: all pairs of each molecule, no envelope).
        max_z: largest atomic number embedded.
        use_velocities: include velocity invariants (the state is ``(r, v)``); ``False``
            gives a function of the positions only.
        velocity_scale: typical speed ``s`` (Å/fs) used to make velocity features O(1).
        vector_dim: number of equivariant vector outputs
            ``Σ_i a_c(h_i)(r_i − c) + b_c(h_i) v_i / s`` appended (flattened) to the invariants.
        backbone: optional invariant module called as
            ``backbone(x [N, hidden], pos [N, 3], edge_index [2, E], edge_attr [E, F])
            -> [N, backbone_dim]`` replacing the built-in layers; its outputs must be
            E(3)-invariant for ``g`` to be.
        backbone_dim: output width of ``backbone`` (default ``hidden``).
    """

    def __init__(
        self,
        out_dim: int = 8,
        hidden: int = 64,
        num_layers: int = 2,
        num_rbf: int = 16,
        cutoff: float | None = 5.0,
        max_z: int = 100,
        use_velocities: bool = True,
        velocity_scale: float = 0.01,
        vector_dim: int = 0,
        backbone: nn.Module | None = None,
        backbone_dim: int | None = None,
    ) -> None:
        super().__init__()
        for name, value, least in (
            ("out_dim", out_dim, 0), ("vector_dim", vector_dim, 0), ("hidden", hidden, 1),
            ("num_layers", num_layers, 0), ("max_z", max_z, 0),
        ):  # fmt: skip
            if not is_int(value) or value < least:
                raise ValueError(f"{name}: expected an integer >= {least}, got {value!r}")
        if out_dim < 1 and vector_dim < 1:
            raise ValueError(f"out_dim: expected >= 1 outputs, got {out_dim} (and no vectors)")
        if cutoff is not None and not cutoff > 0:
            raise ValueError(f"cutoff: expected a positive distance in Å or None, got {cutoff!r}")
        if not 0 < velocity_scale < math.inf:
            raise ValueError(
                f"velocity_scale: expected a positive typical speed in Å/fs, got {velocity_scale!r}"
            )
        if num_rbf < 1:
            raise ValueError(f"num_rbf: expected at least 1 radial basis function, got {num_rbf}")
        self.out_dim, self.vector_dim = int(out_dim), int(vector_dim)
        hidden, num_layers = int(hidden), int(num_layers)
        self.dim = self.out_dim + 3 * self.vector_dim
        self.cutoff = None if cutoff is None else float(cutoff)
        self.use_velocities = self.uses_velocities = bool(use_velocities)
        self.velocity_scale = float(velocity_scale)
        self.max_z = int(max_z)
        top = cutoff if cutoff is not None else 6.0
        self.register_buffer("centres", torch.linspace(0.0, top, num_rbf), persistent=False)
        self.width = top / max(num_rbf - 1, 1)
        edge_dim = num_rbf + 2
        self.embed = nn.Embedding(max_z + 1, hidden)
        self.speed = nn.Linear(1, hidden)
        self.backbone = backbone
        if backbone is None:
            self.layers = nn.ModuleList(
                InvariantMessagePassing(hidden, edge_dim) for _ in range(num_layers)
            )
            width = hidden
        else:
            self.layers = nn.ModuleList()
            width = backbone_dim or hidden
        self.readout = _mlp([width, hidden, max(self.out_dim, 1)])
        if self.vector_dim:
            self.vector_weights = _mlp([width, hidden, 2 * self.vector_dim])

    def node_features(self, frame: Frame) -> Tensor:
        """Invariant node features after message passing ``[N, width]``."""
        check_parameter_dtype(frame.pos, self, "pos")
        z = frame.z
        if z.numel() and (int(z.min()) < 0 or int(z.max()) > self.max_z):
            raise ValueError(
                f"z: expected atomic numbers in [0, {self.max_z}], got values in "
                f"[{int(z.min())}, {int(z.max())}]"
            )
        edge_index = radius_graph(
            frame.pos.detach(), self.cutoff or float("inf"), frame.batch, loop=False
        )
        edge_attr, env = invariant_edge_features(
            frame,
            edge_index,
            self.centres.to(frame.pos.dtype),
            self.width,
            self.cutoff,
            self.velocity_scale,
            self.use_velocities,
        )
        speed2 = (frame.vel * frame.vel).sum(-1, keepdim=True) / self.velocity_scale**2
        if not self.use_velocities:
            speed2 = torch.zeros_like(speed2)
        h = self.embed(z) + self.speed(speed2)
        if self.backbone is not None:
            return self.backbone(h, frame.pos, edge_index, edge_attr * env[:, None])
        for layer in self.layers:
            h = layer(h, edge_index, edge_attr, env)
        return h

    def forward(self, frame: Frame) -> Tensor:
        h = self.node_features(frame)
        batch, b = frame.batch_index(), frame.num_graphs
        outs = []
        if self.out_dim:
            outs.append(segment_sum(self.readout(h), batch, b))
        if self.vector_dim:
            w = self.vector_weights(h)  # [N, 2V]
            a, c = w[:, : self.vector_dim], w[:, self.vector_dim :]
            rel = frame.pos - centre_of_mass(frame)[batch]
            vel = frame.vel / self.velocity_scale
            vec = a[:, :, None] * rel[:, None, :] + c[:, :, None] * vel[:, None, :]
            vec = segment_sum(vec.reshape(-1, 3 * self.vector_dim), batch, b)
            outs.append(vec)
        return torch.cat(outs, dim=-1)
