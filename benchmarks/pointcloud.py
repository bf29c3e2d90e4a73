"""Benchmark: the group ablation of SteerablePointNet against a PyG PointNet++ baseline.

Run:  python benchmarks/pointcloud.py --quick        (< 2 min: SO(2), SO(3), few shapes)
      python benchmarks/pointcloud.py                (all 9 groups of the paper's table)
      python benchmarks/pointcloud.py --root DIR     (ModelNet40 instead of procedural shapes)

Every model is trained on *aligned* shapes (no augmentation) and tested on (a) aligned,
(b) z-rotated (one random element of SO(2) about z per shape) and (c) SO(3)-rotated
shapes. Models: :class:`~symgraph.models.SteerablePointNet` for each group of the paper's
ModelNet40 table (mirror, inversion, SO(2)×inversion, SO(2), O(2) dihedral, O(2) conical,
SO(3), O(3), and the trivial group), and PointNet++ (single-scale grouping) built from
PyG's ``PointNetConv`` with farthest-point sampling and kNN grouping (torch-cluster is not
needed), a standard non-equivariant architecture. All models see the same points and
normals, batches, optimiser and epochs, in one process; training throughput (shapes/s) is
measured in the same run. Writes ``pointcloud.md`` (accuracy table), ``pointcloud.json``
and ``pointcloud_confusion.png`` under ``--out``.

What to expect on the procedural shapes (by construction, see ``symgraph.data.shapes``):
models invariant under an improper element (mirror, inversion, O(3) …) cannot tell the
chiral helices apart, SO(3)/O(3) models cannot tell the standing from the lying cylinder,
so their ceiling on (a) is 11/12 or 10/12; z-rotation-invariant models keep all 12 classes
on (b); only SO(3)/O(3) models keep their accuracy on (c).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import Tensor, nn  # noqa: E402
from torch_geometric.data import Batch  # noqa: E402
from torch_geometric.loader import DataLoader  # noqa: E402
from torch_geometric.nn import MLP, PointNetConv, global_max_pool  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_line  # noqa: E402

from symgraph.models import SteerablePointNet  # noqa: E402
from symgraph.models.pooling import farthest_point_sampling, knn_bipartite  # noqa: E402
from symgraph.train.job_modelnet40 import rotated_copy  # noqa: E402

#: The groups of the paper's ModelNet40 table, in its order, plus the trivial group.
ABLATION = (
    "Mirror", "Inversion", "SO2Inversion", "SO2", "O2Dihedral", "O2Conical", "SO3", "O3",
    "Trivial",
)  # fmt: skip
QUICK_GROUPS = ("SO2", "SO3")
TESTS = {"aligned": None, "z-rotated": "SO2", "SO(3)-rotated": "SO3"}
BASELINE = "PointNet++ (PyG)"


class PointNet2(nn.Module):
    """PointNet++ SSG classifier from PyG's ``PointNetConv`` (max aggregation).

    Two set-abstraction levels (FPS ``ratios``, ``k`` nearest neighbours of each sampled
    point, a shared MLP on ``[x_j, pos_j - pos_i]``), a global abstraction on
    ``[x, pos]`` with max pooling, and an MLP head. Inputs: positions and normals.

    Shapes: ``forward(batch) -> [B, num_classes]``.
    """

    def __init__(self, num_classes: int, k: int = 16, ratios: tuple[float, float] = (0.5, 0.25)):
        super().__init__()
        self.k, self.ratios = k, ratios
        self.sa1 = PointNetConv(MLP([3 + 3, 32, 32, 64]), add_self_loops=False)
        self.sa2 = PointNetConv(MLP([64 + 3, 64, 64, 128]), add_self_loops=False)
        self.sa3 = MLP([128 + 3, 128, 256])
        self.head = MLP([256, 128, num_classes], dropout=0.5, norm=None)

    def _abstraction(
        self, conv: PointNetConv, ratio: float, x: Tensor, pos: Tensor, batch: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        index, sampled_batch = farthest_point_sampling(pos, ratio, batch)
        edge_index = knn_bipartite(pos, pos[index], self.k, batch, sampled_batch)
        out = conv((x, None), (pos, pos[index]), edge_index)
        return out, pos[index], sampled_batch

    def forward(self, data: Batch) -> Tensor:
        x, pos, batch = data.normal, data.pos, data.batch
        for conv, ratio in ((self.sa1, self.ratios[0]), (self.sa2, self.ratios[1])):
            x, pos, batch = self._abstraction(conv, ratio, x, pos, batch)
        x = global_max_pool(self.sa3(torch.cat([x, pos], dim=1)), batch)
        return self.head(x)


def build_data(args: argparse.Namespace):
    """``(train, {test name: dataset}, classes)``; shapes aligned, tests rotated per TESTS."""
    if args.root is not None:
        from symgraph.data import ModelNet40, NormalizeUnitSphere

        common = dict(
            source=args.source,
            num_points=args.num_points,
            processed_dir=args.cache,
            pre_transform=NormalizeUnitSphere(),
        )
        train = ModelNet40(args.root, "train", **common)
        test = ModelNet40(args.root, "test", **common)
    else:
        from symgraph.data import ProceduralShapes

        train = ProceduralShapes(args.num_shapes, args.num_points, seed=args.seed)
        test = ProceduralShapes(args.num_test_shapes, args.num_points, seed=args.seed + 1)
    tests = {
        name: test if group is None else rotated_copy(test, group, seed=args.seed + i)
        for i, (name, group) in enumerate(TESTS.items())
    }
    return train, tests, list(train.classes)


def train_model(model: nn.Module, train, args: argparse.Namespace) -> dict[str, float]:
    """Adam with a cosine schedule; returns training throughput and the last epoch's loss."""
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    steps = args.epochs * math.ceil(len(train) / args.batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    generator = torch.Generator().manual_seed(args.seed)
    loader = DataLoader(
        train, batch_size=args.batch_size, shuffle=True, drop_last=True, generator=generator
    )
    model.train()
    seen, elapsed, loss_sum = 0, 0.0, 0.0
    for epoch in range(args.epochs):
        loss_sum, batches = 0.0, 0
        for batch in loader:
            start = time.perf_counter()
            loss = F.cross_entropy(model(batch), batch.y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            elapsed += time.perf_counter() - start
            seen += batch.num_graphs
            loss_sum, batches = loss_sum + loss.item(), batches + 1
        print(f"    epoch {epoch + 1}/{args.epochs}: loss {loss_sum / batches:.3f}", flush=True)
    return {"train_shapes_per_s": seen / elapsed, "final_loss": loss_sum / batches}


@torch.no_grad()
def predict(model: nn.Module, dataset, batch_size: int) -> tuple[Tensor, Tensor]:
    """``(predicted [n], true [n])`` labels."""
    model.eval()
    preds, labels = [], []
    for batch in DataLoader(dataset, batch_size=batch_size):
        preds.append(model(batch).argmax(dim=1))
        labels.append(batch.y)
    return torch.cat(preds), torch.cat(labels)


def confusion(pred: Tensor, true: Tensor, num_classes: int) -> Tensor:
    """``[true, predicted]`` counts."""
    return torch.bincount(true * num_classes + pred, minlength=num_classes**2).reshape(
        num_classes, num_classes
    )


def plot_confusions(results: list[dict], classes: list[str], path: Path) -> None:
    """Row-normalised confusion matrices: rows = models, columns = test sets."""
    shown = [r for r in results if r["name"] in ("SO3", "O3", "SO2", BASELINE)]
    fig, axes = plt.subplots(
        len(shown), len(TESTS), figsize=(4.2 * len(TESTS), 4.0 * len(shown)), squeeze=False
    )
    for row, result in zip(axes, shown):
        for ax, test in zip(row, TESTS):
            matrix = torch.tensor(result["confusion"][test], dtype=torch.float64)
            matrix = matrix / matrix.sum(dim=1, keepdim=True).clamp_min(1)
            ax.imshow(matrix, vmin=0, vmax=1, cmap="Blues")
            ax.set_title(f"{result['name']}, {test}: {100 * result['accuracy'][test]:.1f}%")
            ax.set_xticks(range(len(classes)), classes, rotation=90, fontsize=6)
            ax.set_yticks(range(len(classes)), classes, fontsize=6)
            ax.set_xlabel("predicted", fontsize=7)
            ax.set_ylabel("true", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(results: list[dict], header: list[str]) -> str:
    base = next((r for r in results if r["name"] == BASELINE), None)
    lines = [*header, ""]
    lines.append(
        "| model | params | (a) aligned | (b) z-rotated | (c) SO(3)-rotated | (a)−(c) | "
        "train shapes/s | vs baseline |"
    )
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        acc = [100 * r["accuracy"][t] for t in TESTS]
        speed = r["train_shapes_per_s"]
        ratio = f"{speed / base['train_shapes_per_s']:.2f}×" if base else "–"
        name = r["name"] if r["name"] == BASELINE else f"SteerablePointNet {r['name']}"
        lines.append(
            f"| {name} | {r['params']:,} | {acc[0]:.1f} | {acc[1]:.1f} | {acc[2]:.1f} | "
            f"{acc[0] - acc[2]:+.1f} | {speed:.1f} | {ratio} |"
        )
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="< 2 min: SO2 and SO3, few shapes")
    parser.add_argument("--groups", nargs="*", default=None, help="default: the ablation")
    parser.add_argument("--no-baseline", action="store_true", help="skip PointNet++")
    parser.add_argument("--root", default=None, help="ModelNet40 folder (default: procedural)")
    parser.add_argument("--source", default="resampled", choices=["resampled", "off"])
    parser.add_argument("--cache", default=None, help="ModelNet40 processed files folder")
    parser.add_argument("--num-points", type=int, default=None)
    parser.add_argument("--num-shapes", type=int, default=None, help="procedural train shapes")
    parser.add_argument("--num-test-shapes", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--hidden", default="8x0e + 4x1o + 2x2e")
    parser.add_argument("--k", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out")
    args = parser.parse_args(argv)
    quick = {"num_points": 128, "num_shapes": 192, "num_test_shapes": 96, "epochs": 5}
    full = {"num_points": 96, "num_shapes": 360, "num_test_shapes": 240, "epochs": 6}
    if args.root is not None:
        full = {**full, "num_points": 1024}
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.groups is None:
        args.groups = list(QUICK_GROUPS if args.quick else ABLATION)
    return args


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    start = time.perf_counter()
    torch.manual_seed(args.seed)
    train, tests, classes = build_data(args)
    print(f"data: {len(train)} train shapes, {len(classes)} classes, {args.num_points} points")
    models: list[tuple[str, nn.Module]] = [
        (g, SteerablePointNet(len(classes), g, hidden=args.hidden, k=args.k)) for g in args.groups
    ]
    if not args.no_baseline:
        models.append((BASELINE, PointNet2(len(classes), k=args.k)))
    results = []
    for name, model in models:
        torch.manual_seed(args.seed)
        print(f"{name}:", flush=True)
        result = {"name": name, "params": sum(p.numel() for p in model.parameters())}
        result.update(train_model(model, train, args))
        result["accuracy"], result["confusion"] = {}, {}
        for test, dataset in tests.items():
            pred, true = predict(model, dataset, 2 * args.batch_size)
            result["accuracy"][test] = float((pred == true).double().mean())
            result["confusion"][test] = confusion(pred, true, len(classes)).tolist()
        print(
            "    accuracy: "
            + ", ".join(f"{t} {100 * a:.1f}%" for t, a in result["accuracy"].items())
            + f"; {result['train_shapes_per_s']:.1f} train shapes/s",
            flush=True,
        )
        results.append(result)
    wall = time.perf_counter() - start
    data = f"ModelNet40 ({args.root})" if args.root else "ProceduralShapes (12 classes)"
    command = "python benchmarks/pointcloud.py " + " ".join(argv if argv else sys.argv[1:])
    header = [
        f"# Point-cloud group ablation: {data}",
        "",
        f"Command: `{command.strip()}`; wall time {wall / 60:.1f} min; {machine_line()}.",
        f"{len(train)} training shapes (aligned, no augmentation), {args.num_points} points, "
        f"{args.epochs} epochs, batch {args.batch_size}, Adam lr {args.lr} (cosine), "
        f"k={args.k}; SteerablePointNet hidden `{args.hidden}`, 2 stages; test sets of "
        f"{len(tests['aligned'])} shapes. Accuracy in %.",
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    table = markdown(results, header)
    (args.out / "pointcloud.md").write_text(table)
    (args.out / "pointcloud.json").write_text(json.dumps(results, indent=1))
    plot_confusions(results, classes, args.out / "pointcloud_confusion.png")
    print("\n" + table)
    return results


if __name__ == "__main__":
    main()
