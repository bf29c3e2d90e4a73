"""Swap one convolution of an existing PyG model for ImplicitSteerableConv.

Run:  python examples/plug_into_pyg.py [--quick]

The "user's model" is a plain PyG stack (GCNConv, global pooling, a DataLoader) trained
to predict each molecule's radius of gyration on the 93 H/C/N/O/F molecules of more than
one atom in ase's G2 collection (162 real molecules, shipped with ase). Its second GCNConv
is replaced by an O(3) ImplicitSteerableConv that sees relative positions and bond types;
nothing else changes.
"""

from __future__ import annotations

import argparse

import torch
from ase.collections import g2
from torch import nn
from torch_geometric.loader import DataLoader
from torch_geometric.nn import GCNConv, global_mean_pool

import symgraph as sg
from symgraph.data import BOND_FEATURE_DIM, from_ase


def radius_of_gyration(pos: torch.Tensor) -> torch.Tensor:
    return (pos - pos.mean(0)).pow(2).sum(-1).mean().sqrt().reshape(1)


def g2_graphs() -> list:
    graphs = []
    for atoms in g2:
        if set(atoms.get_chemical_symbols()) <= {"H", "C", "N", "O", "F"} and len(atoms) > 1:
            data = from_ase(atoms)
            data.y = radius_of_gyration(data.pos)
            graphs.append(data)
    return graphs


class UserModel(nn.Module):
    """A typical PyG model; ``steerable=True`` swaps its second convolution."""

    def __init__(self, in_channels: int, hidden: int = 32, steerable: bool = False) -> None:
        super().__init__()
        self.steerable = steerable
        self.conv1 = GCNConv(in_channels, hidden)
        if steerable:  # the one line that changes: invariant in, invariant out, O(3) kernel
            self.conv2 = sg.nn.ImplicitSteerableConv(
                f"{hidden}x0e", f"{hidden}x0e", edge_dim=BOND_FEATURE_DIM, cutoff=5.0, aggr="mean"
            )
        else:
            self.conv2 = GCNConv(hidden, hidden)
        self.head = nn.Linear(hidden, 1)

    def forward(self, data) -> torch.Tensor:
        h = torch.relu(self.conv1(data.x, data.edge_index))
        if self.steerable:
            h = torch.relu(self.conv2(h, data.pos, data.edge_index, data.edge_attr))
        else:
            h = torch.relu(self.conv2(h, data.edge_index))
        return self.head(global_mean_pool(h, data.batch)).squeeze(-1)


def train(model: nn.Module, loader: DataLoader, epochs: int) -> list[float]:
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(epochs):
        total, count = 0.0, 0
        for batch in loader:
            loss = (model(batch) - batch.y).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            total, count = total + loss.item() * batch.num_graphs, count + batch.num_graphs
        losses.append(total / count)
    return losses


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two epochs")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    graphs = g2_graphs()
    loader = DataLoader(graphs, batch_size=16, shuffle=True)
    epochs = 2 if args.quick else 30
    results = {}
    for steerable in (False, True):
        model = UserModel(graphs[0].num_node_features, steerable=steerable)
        losses = train(model, loader, epochs)
        name = "with ImplicitSteerableConv" if steerable else "plain GCN"
        results[name] = losses
        print(f"{name:<28} train MSE: first epoch {losses[0]:.4f}, last epoch {losses[-1]:.4f}")
    return results


if __name__ == "__main__":
    main()
