"""The built-in ``toy`` job: a tiny synthetic graph regression for demos and tests.

Each graph has 6–15 nodes at uniform random positions in the unit cube, standard normal
node features ``x [N, F]``, and edges between nodes closer than ``radius``. The target is
``y = Σ_i x_i0 + 0.1 · E`` (``E`` directed edges): a sum a GCN with sum pooling can learn.
It needs no data on disk, so the command line, resume, evaluate, DDP and teleportation
(``--teleport``: :class:`ToyGCN` declares its layer order to symmetry detection, which finds
the positive rescaling of the hidden units between its two convolutions) are tested with it.
"""

from __future__ import annotations

import argparse

import torch
from torch import Tensor, nn
from torch_geometric.data import Batch, Data, InMemoryDataset
from torch_geometric.nn import GCNConv, global_add_pool

from symgraph.graph import radius_graph
from symgraph.teleport import register_container
from symgraph.train.jobs import (
    JobSpec,
    arg,
    int_at_least,
    positive_float,
    positive_int,
    register_job,
)
from symgraph.train.split import random_split_indices
from symgraph.train.tasks import RegressionTask

__all__ = ["ToyGraphs", "ToyGCN", "toy"]


class ToyGraphs(InMemoryDataset):
    """``num_graphs`` random geometric graphs with a scalar target each (``y`` of shape [1]).

    Args:
        num_graphs: dataset size.
        num_features: ``F``, node features per node.
        radius: edge cutoff.
        seed: the data depend only on these four arguments.
    """

    def __init__(
        self, num_graphs: int = 256, num_features: int = 4, radius: float = 0.5, seed: int = 0
    ) -> None:
        if num_graphs < 1 or num_features < 1 or not radius > 0:
            raise ValueError(
                "ToyGraphs: need num_graphs >= 1, num_features >= 1, radius > 0; got "
                f"{num_graphs}, {num_features}, {radius}"
            )
        super().__init__(None)
        generator = torch.Generator().manual_seed(seed)
        graphs = []
        for _ in range(num_graphs):
            n = int(torch.randint(6, 16, (1,), generator=generator))
            pos = torch.rand(n, 3, generator=generator)
            x = torch.randn(n, num_features, generator=generator)
            edge_index = radius_graph(pos, radius)
            y = (x[:, 0].sum() + 0.1 * edge_index.shape[1]).reshape(1)
            graphs.append(Data(x=x, pos=pos, edge_index=edge_index, y=y))
        self._data, self.slices = self.collate(graphs)


class ToyGCN(nn.Module):
    """Two GCN layers, sum pooling and a linear read-out: graph batch → ``[G]``."""

    def __init__(self, num_features: int = 4, hidden: int = 32) -> None:
        super().__init__()
        self.conv1 = GCNConv(num_features, hidden)
        self.conv2 = GCNConv(hidden, hidden)
        self.readout = nn.Linear(hidden, 1)
        self.act = nn.ReLU()

    def forward(self, data: Batch) -> Tensor:
        h = self.act(self.conv1(data.x, data.edge_index))
        h = self.act(self.conv2(h, data.edge_index))
        return self.readout(global_add_pool(h, data.batch)).squeeze(-1)


def _toy_gcn_stages(model: ToyGCN, prefix: str) -> list[tuple[str, nn.Module | None]]:
    """Execution order of :class:`ToyGCN` for symmetry detection: conv1 → ReLU → conv2."""
    dot = f"{prefix}." if prefix else ""
    return [(f"{dot}conv1", model.conv1), (f"{dot}act", model.act), (f"{dot}conv2", model.conv2)]


register_container(ToyGCN, _toy_gcn_stages)


@register_job(
    "toy",
    arguments=[
        arg(
            "--num-graphs",
            type=int_at_least(
                10, "at least 10 graphs (an 80/10/10 split of fewer leaves a part empty)"
            ),
            default=256,
            help="dataset size (default 256)",
        ),
        arg("--hidden", type=positive_int, default=32, help="hidden width of the GCN (default 32)"),
        arg("--radius", type=positive_float, default=0.5, help="edge cutoff (default 0.5)"),
    ],
)
def toy(args: argparse.Namespace) -> JobSpec:
    """Synthetic regression on random geometric graphs (no data needed)."""
    dataset = ToyGraphs(args.num_graphs, radius=args.radius, seed=args.seed)
    train, val, test = random_split_indices(len(dataset), [0.8, 0.1, 0.1], seed=args.seed)
    return JobSpec(
        model=ToyGCN(dataset.num_features, args.hidden),
        task=lambda train_set: RegressionTask.from_dataset(train_set, unit_name="a.u."),
        train=dataset[torch.tensor(train, dtype=torch.long)],
        val=dataset[torch.tensor(val, dtype=torch.long)],
        test=dataset[torch.tensor(test, dtype=torch.long)],
        split={"train": train, "val": val, "test": test},
    )
