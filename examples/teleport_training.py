"""Symmetry teleportation in a plain PyG training loop.

A GIN regresses a graph-level target on random geometric graphs. Every ``K`` steps the
``Teleport`` hook moves the weights along the model's positive-rescaling symmetries (found
automatically: ReLU between linear layers, between GIN convolutions, and across the sum
pooling into the head) to a point with the same loss and a steeper gradient, then training
goes on. The optimizer's moments are transported with the weights. The model is a PyG
``Sequential`` with the pooling as a child module, so detection sees the whole chain;
``--kinds rescale,linear`` adds the data-free GL(32) of the readout (the last GIN layer →
sum pooling → the head's first layer has no nonlinearity in it). ``--objective
min_grad_norm`` moves to the point of smallest gradient norm instead (each unit's incoming and
outgoing gradients balanced; it changes how SGD scales its steps, see benchmarks/RESULTS.md),
and with ``--gradient optimizer`` takes that gradient from Adam's running mean instead of a
backward pass on the batch.

    OMP_NUM_THREADS=1 python examples/teleport_training.py           # ~1 min
    OMP_NUM_THREADS=1 python examples/teleport_training.py --quick   # a few seconds
    OMP_NUM_THREADS=1 python examples/teleport_training.py --quick --kinds rescale,linear
    OMP_NUM_THREADS=1 python examples/teleport_training.py --quick --objective min_grad_norm
    OMP_NUM_THREADS=1 python examples/teleport_training.py --quick --objective min_grad_norm \
        --gradient optimizer
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from symgraph.teleport import Teleport, find_symmetries  # noqa: E402
from symgraph.teleport.hook import GRADIENT_SOURCES  # noqa: E402
from symgraph.train.teleport_callback import CALLBACK_OBJECTIVES  # noqa: E402


def make_graphs(n: int, seed: int = 0) -> list:
    """Random geometric graphs; target: a smooth function of atom types and degrees."""
    from torch_geometric.data import Data

    gen = torch.Generator().manual_seed(seed)
    graphs = []
    for _ in range(n):
        m = int(torch.randint(6, 16, (1,), generator=gen))
        pos = torch.rand(m, 3, generator=gen) * 3
        dist = torch.cdist(pos, pos)
        src, dst = ((dist < 1.2) & (dist > 0)).nonzero(as_tuple=True)
        kinds = torch.randint(0, 4, (m,), generator=gen)
        x = nn.functional.one_hot(kinds, 4).float()
        y = (x[:, 0] - 0.5 * x[:, 1]).sum() + 0.2 * len(src) / m
        graphs.append(Data(x=x, edge_index=torch.stack([src, dst]), y=y.reshape(1)))
    return graphs


def make_model(hidden: int = 32) -> nn.Module:
    """PyG ``GIN`` → sum pooling → MLP head, ``model(x, edge_index, batch) -> [num_graphs, 1]``."""
    from torch_geometric.nn import Sequential
    from torch_geometric.nn.aggr import SumAggregation
    from torch_geometric.nn.models import GIN

    return Sequential(
        "x, edge_index, batch",
        [
            (GIN(4, hidden, num_layers=3), "x, edge_index -> x"),
            (SumAggregation(), "x, batch -> x"),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, 1),
        ],
    )


def loss_fn(model: nn.Module, batch) -> torch.Tensor:
    """``loss_fn(model, batch)``: the signature teleportation needs."""
    prediction = model(batch.x, batch.edge_index, batch.batch).squeeze(-1)
    return (prediction - batch.y).pow(2).mean()


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description="teleportation in a PyG training loop")
    parser.add_argument("--quick", action="store_true", help="tiny run (seconds)")
    parser.add_argument("--teleport", default=None, help="e.g. every:20 (quick: every:3)")
    parser.add_argument(
        "--kinds", default="rescale,norm,gated", help="symmetry rules, e.g. rescale,linear"
    )
    parser.add_argument(
        "--objective",
        default="grad_norm",
        choices=CALLBACK_OBJECTIVES,
        help="the point of the orbit to move to (default: the steepest, as in the paper)",
    )
    parser.add_argument(
        "--gradient",
        default="batch",
        choices=GRADIENT_SOURCES,
        help="with --objective min_grad_norm: the batch's gradient or the optimizer's mean",
    )
    args = parser.parse_args(argv)
    if args.gradient != "batch" and args.objective != "min_grad_norm":
        parser.error("--gradient optimizer needs --objective min_grad_norm")
    from torch_geometric.loader import DataLoader

    torch.manual_seed(0)
    graphs = make_graphs(120 if args.quick else 1000)
    loader = DataLoader(graphs, batch_size=32, shuffle=True)
    model = make_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    kinds = tuple(k.strip() for k in args.kinds.split(",") if k.strip())

    print("symmetries found:")
    symmetries = find_symmetries(model, kinds)
    for sym in symmetries:
        coordinates = sym.identity(torch.zeros(1)).numel()
        print(f"  {sym.name} ({sym.kind}, {coordinates} group coordinates)")

    schedule = args.teleport or ("every:3" if args.quick else "every:20")
    # steepest point: a few small steps (the GL(d) orbit has d² coordinates, each moved by
    # about lr); the other targets are searched to their optimum
    lr = 0.003 if "linear" in kinds else 0.03
    steps = 3 if args.objective == "grad_norm" else 20
    tp = Teleport(
        schedule,
        loss_fn,
        steps=steps,
        lr=lr,
        symmetries=symmetries,
        objective=args.objective,
        gradient=args.gradient,
    )
    step, losses = 0, []
    for epoch in range(2 if args.quick else 10):
        for batch in loader:
            result = tp(model, batch, optimizer, step=step)  # teleport first, when due
            if result is not None:
                print(
                    f"step {step}: teleport {'accepted' if result.accepted else 'refused'}, "
                    f"|grad|^2 {result.grad_norm_sq_before:.3g} -> "
                    f"{result.grad_norm_sq_after:.3g}, loss {result.loss_before:.4f} -> "
                    f"{result.loss_after:.4f} ({result.seconds * 1e3:.0f} ms)"
                )
            optimizer.zero_grad()
            loss = loss_fn(model, batch)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            step += 1
        print(f"epoch {epoch}: mean loss {sum(losses[-len(loader) :]) / len(loader):.4f}")
    return {
        "symmetries": [sym.name for sym in symmetries],
        "losses": losses,
        "teleports": len(tp.history),
        "grad_norm_sq": [(r.grad_norm_sq_before, r.grad_norm_sq_after) for _, r in tp.history],
        "accepted": sum(r.accepted for _, r in tp.history),
        "teleport_seconds": tp.seconds,
    }


if __name__ == "__main__":
    main()
