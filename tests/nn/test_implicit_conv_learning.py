"""A stacked 3-layer ImplicitSteerableConv network learns an equivariant and an invariant target."""

from __future__ import annotations

import torch
from torch import nn

import symgraph as sg
from symgraph.graph import knn_graph


class ThreeLayerNet(nn.Module):
    def __init__(self, irreps_out: str):
        super().__init__()
        hidden = "8x0e + 4x1o"
        self.convs = nn.ModuleList(
            [
                sg.nn.ImplicitSteerableConv("1x0e", hidden, cutoff=3.0, aggr="mean"),
                sg.nn.ImplicitSteerableConv(hidden, hidden, cutoff=3.0, aggr="mean"),
                sg.nn.ImplicitSteerableConv(hidden, irreps_out, cutoff=3.0, aggr="mean"),
            ]
        )
        self.gates = nn.ModuleList([sg.nn.NormActivation(sg.Rep(hidden)) for _ in range(2)])

    def forward(self, pos, edge_index):
        h = torch.ones(pos.shape[0], 1)
        for i, conv in enumerate(self.convs):
            h = conv(h, pos, edge_index)
            if i < 2:
                h = self.gates[i](h)
        return h


def clouds(num=8, points=12, seed=0):
    gen = torch.Generator().manual_seed(seed)
    pos = torch.randn(num, points, 3, generator=gen)
    batch = torch.arange(num).repeat_interleave(points)
    flat = pos.reshape(-1, 3)
    return pos, flat, batch, knn_graph(flat, 6, batch)


def train(model, pos, edge_index, target, steps=100):
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(steps):
        loss = (model(pos, edge_index) - target).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def local_field(flat, edge_index):
    """Σ_j (x_j − x_i) exp(−|x_j − x_i|²) over the neighbours j of i: a vector field."""
    src, dst = edge_index
    rel = flat[src] - flat[dst]
    weight = torch.exp(-rel.pow(2).sum(-1, keepdim=True))
    return torch.zeros_like(flat).index_add_(0, dst, rel * weight)


def test_learns_an_equivariant_vector_field():
    torch.manual_seed(0)
    _, flat, _, edge_index = clouds()
    losses = train(ThreeLayerNet("1x1o"), flat, edge_index, local_field(flat, edge_index))
    assert losses[-1] < 0.2 * losses[0]


def test_learns_an_invariant_target():
    """Target: the norm of the local vector field (an invariant)."""
    torch.manual_seed(0)
    _, flat, _, edge_index = clouds()
    target = local_field(flat, edge_index).norm(dim=-1, keepdim=True)
    losses = train(ThreeLayerNet("1x0e"), flat, edge_index, target - target.mean())
    assert losses[-1] < 0.2 * losses[0]
