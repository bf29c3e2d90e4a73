"""``EquivariantDynamics``: an E(3)-equivariant next-frame predictor for molecules.

An EGNN-style message-passing model (Satorras, Hoogeboom, Welling 2021): invariant node
and edge features exchange messages, and vectors are only ever built as invariant-weighted
sums of relative positions ``r_i − r_j`` and velocities ``v_i``, so the map

    (pos [N, 3], vel [N, 3], z [N], batch [N]) -> (next_pos [N, 3], next_vel [N, 3])

commutes with every rotation, reflection and translation (velocities rotate, do not
translate). The update is integrator-shaped::

    v' = v + s · Σ_layers a_i          (a_i: learned equivariant "acceleration")
    r' = r + dt · (v + v') / 2 + s · dt · Σ_layers c_i   (c_i: learned correction)

with ``s`` a typical speed; the learned terms start near zero, so an untrained model
moves atoms in straight lines. :class:`~symgraph.models.SteerableDynamics`
(:mod:`symgraph.models.steerable_dynamics`) has the same interface and update with
implicit steerable convolutions of any group G ≤ O(3); this model stays as the E(3)
baseline (plain MLPs on invariants, cheaper per step).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from symgraph.checks import (
    as_number,
    check_batch,
    check_int,
    check_parameter_dtype,
    check_positions,
    is_int,
    is_real,
)
from symgraph.graph import radius_graph

__all__ = ["EquivariantDynamics"]


def check_step_settings(
    dt: object, cutoff: object, velocity_scale: object
) -> tuple[float, float | None, float]:
    """``(dt, cutoff, velocity_scale)`` of a dynamics model as Python numbers, each refused
    (named) unless positive (``dt`` and ``velocity_scale`` finite; ``cutoff`` may be None)."""
    if not is_real(dt) or not 0 < dt < math.inf:
        raise ValueError(f"dt: expected a positive finite time step in fs, got {dt!r}")
    if cutoff is not None and (not is_real(cutoff) or not cutoff > 0):
        raise ValueError(f"cutoff: expected a positive distance in Å or None, got {cutoff!r}")
    if not is_real(velocity_scale) or not 0 < velocity_scale < math.inf:
        raise ValueError(
            f"velocity_scale: expected a positive typical speed in Å/fs, got {velocity_scale!r}"
        )
    return float(dt), as_number(cutoff), float(velocity_scale)


def _mlp(dims: list[int], last_scale: float = 1.0) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(dims[:-1], dims[1:]):
        layers += [nn.Linear(a, b), nn.SiLU()]
    seq = nn.Sequential(*layers[:-1])
    with torch.no_grad():
        seq[-1].weight.mul_(last_scale)
        seq[-1].bias.mul_(last_scale)
    return seq


def _soft_bound(x: Tensor, bound: float = 10.0) -> Tensor:
    """Smoothly limit an invariant feature to ``(-bound, bound)`` (keeps rollouts stable)."""
    return x / torch.sqrt(1.0 + (x / bound) ** 2)


class _Layer(nn.Module):
    def __init__(self, hidden: int, edge_dim: int) -> None:
        super().__init__()
        self.message = _mlp([2 * hidden + edge_dim, hidden, hidden])
        self.update = _mlp([2 * hidden, hidden, hidden])
        self.accel = _mlp([hidden, hidden, 1], last_scale=0.01)
        self.correct = _mlp([hidden, hidden, 1], last_scale=0.01)
        self.damp = _mlp([hidden, hidden, 1], last_scale=0.01)

    def forward(
        self,
        h: Tensor,
        vel_s: Tensor,
        edge_index: Tensor,
        edge_attr: Tensor,
        unit: Tensor,
        env: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor]:
        j, i = edge_index
        m = self.message(torch.cat([h[i], h[j], edge_attr], dim=-1)) * env[:, None]
        agg = h.new_zeros(h.shape).index_add(0, i, m)
        h = h + self.update(torch.cat([h, agg], dim=-1))
        # the envelope weighs the edge terms too: accel(0), correct(0) are not 0 (biases),
        # so without it a neighbour's term would jump to 0 as it crosses the cutoff
        weight = unit * env[:, None]
        accel = h.new_zeros(vel_s.shape).index_add(0, i, weight * self.accel(m))
        accel = accel + vel_s * self.damp(h)
        corr = h.new_zeros(vel_s.shape).index_add(0, i, weight * self.correct(m))
        return h, accel, corr


class EquivariantDynamics(nn.Module):
    """Predict the next frame ``(pos, vel)`` of molecules, E(3)-equivariantly.

    Args:
        hidden: width of the invariant node features.
        num_layers: message-passing layers.
        dt: time between input and predicted frame (fs).
        cutoff: neighbour cutoff in Å; ``None`` (default) uses all pairs of each molecule.
        num_rbf: Gaussian radial basis functions of the distances.
        max_z: largest atomic number embedded.
        velocity_scale: typical speed ``s`` in Å/fs (velocity features are divided by it).

    Shapes: ``pos [N, 3]``, ``vel [N, 3]``, ``z [N]``, ``batch [N]`` or ``None`` ->
    ``(next_pos [N, 3], next_vel [N, 3])``.
    """

    def __init__(
        self,
        hidden: int = 64,
        num_layers: int = 3,
        dt: float = 1.0,
        cutoff: float | None = None,
        num_rbf: int = 16,
        max_z: int = 100,
        velocity_scale: float = 0.01,
    ) -> None:
        super().__init__()
        self.dt, self.cutoff, self.velocity_scale = check_step_settings(dt, cutoff, velocity_scale)
        num_layers = check_int(num_layers, "num_layers")
        num_rbf = check_int(num_rbf, "num_rbf")
        self.max_z = max_z = check_int(max_z, "max_z", least=0)
        if not is_int(hidden) or hidden < 1:
            raise ValueError(f"hidden: expected a positive width, got {hidden!r}")
        hidden = int(hidden)
        top = cutoff if cutoff is not None else 5.0
        self.register_buffer("centres", torch.linspace(0.0, top, num_rbf), persistent=False)
        self.width = top / max(num_rbf - 1, 1)
        self.embed = nn.Embedding(max_z + 1, hidden)
        self.speed = nn.Linear(1, hidden)
        self.layers = nn.ModuleList(_Layer(hidden, num_rbf + 2) for _ in range(num_layers))

    def forward(
        self, pos: Tensor, vel: Tensor, z: Tensor, batch: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        pos = check_parameter_dtype(check_positions(pos, "pos"), self, "pos")
        vel = check_parameter_dtype(check_positions(vel, "vel"), self, "vel")
        if vel.shape != pos.shape:
            raise ValueError(
                f"vel: expected shape {list(pos.shape)} (as pos), got {list(vel.shape)}"
            )
        if z.shape != (pos.shape[0],) or z.is_floating_point():
            raise ValueError(
                f"z: expected integer atomic numbers [{pos.shape[0]}], got {list(z.shape)} "
                f"of dtype {z.dtype}"
            )
        if z.numel() and (int(z.min()) < 0 or int(z.max()) > self.max_z):
            raise ValueError(
                f"z: expected atomic numbers in [0, {self.max_z}], got values from "
                f"{int(z.min())} to {int(z.max())}"
            )
        batch = check_batch(batch, pos.shape[0])
        s = self.velocity_scale
        edge_index = radius_graph(pos.detach(), self.cutoff or float("inf"), batch)
        j, i = edge_index
        rel = pos[i] - pos[j]  # points from neighbour j to centre i
        dist = torch.sqrt((rel * rel).sum(-1) + 1e-12)
        unit = rel / dist[:, None]
        vel_s = vel / s
        rbf = torch.exp(-(((dist[:, None] - self.centres.to(pos.dtype)) / self.width) ** 2))
        vv = _soft_bound((vel_s[i] * vel_s[j]).sum(-1, keepdim=True))
        rv = _soft_bound((unit * (vel_s[i] - vel_s[j])).sum(-1, keepdim=True))
        edge_attr = torch.cat([rbf, vv, rv], dim=-1)
        if self.cutoff is None:
            env = torch.ones_like(dist)
        else:
            env = 0.5 * (torch.cos(math.pi * dist / self.cutoff) + 1.0) * (dist < self.cutoff)
        speed2 = _soft_bound((vel_s * vel_s).sum(-1, keepdim=True))
        h = self.embed(z.long()) + self.speed(speed2)
        accel = torch.zeros_like(pos)
        corr = torch.zeros_like(pos)
        for layer in self.layers:
            h, a, c = layer(h, vel_s, edge_index, edge_attr, unit, env)
            accel = accel + a
            corr = corr + c
        vel_next = vel + s * accel
        pos_next = pos + self.dt * 0.5 * (vel + vel_next) + s * self.dt * corr
        return pos_next, vel_next
