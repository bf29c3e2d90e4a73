"""Benchmark: the group ablation of SteerablePointNet against a PyG PointNet++ baseline.

Run:  python benchmarks/pointcloud.py --quick        (< 2 min: SO(2), SO(3), few shapes)
      python benchmarks/pointcloud.py                (all 9 groups, 3 seeds, ~20 min)
      python benchmarks/pointcloud.py --root DIR     (ModelNet40 instead of procedural shapes)

Every model is trained on *aligned* shapes (no augmentation) and tested on (a) aligned,
(b) z-rotated (one random element of SO(2) about z per shape) and (c) SO(3)-rotated
shapes. Models: :class:`~symgraph.models.SteerablePointNet` for each group of the paper's
ModelNet40 table (mirror, inversion, SO(2)×inversion, SO(2), O(2) dihedral, O(2) conical,
SO(3), O(3), and the trivial group), and PointNet++ (single-scale grouping) built from
PyG's ``PointNetConv`` with farthest-point sampling and kNN grouping (torch-cluster is not
needed), a standard non-equivariant architecture. All models see the same points and
normals, batches, optimiser and epochs, in one process; training throughput (shapes/s) is
measured in the same run.

Seeds: ``--seeds S`` repeats every model for the seeds ``seed, ..., seed + S - 1``; each
seed draws its own procedural training set (ModelNet40: the same one), initialisation and
batch order. The three test sets are drawn once, from seed ``seed + TEST_SEED_OFFSET``
(never a training seed), and shared by all models and seeds, so differences between
models are paired. Tables give the mean ± sample standard deviation over seeds; confusion
matrices and per-class accuracies pool the seeds. Writes ``pointcloud.md`` (tables),
``pointcloud.json`` (every run) and ``pointcloud_confusion.png`` under ``--out``.

What to expect on the procedural shapes (by construction, see ``symgraph.data.shapes``):
models invariant under an improper element (mirror, inversion, O(2) conical, O(3) …)
cannot tell the chiral helices apart, SO(3)/O(3) models cannot tell the standing from the
lying cylinder, so their ceiling on (a) is 11/12 or 10/12; z-rotation-invariant models
keep their accuracy on (b), where only SO(2) and O(2) dihedral (proper rotations that
keep the z axis) can reach 12/12; only SO(3)/O(3) models keep their accuracy on (c).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import Tensor, nn  # noqa: E402
from torch.utils.data import Dataset  # noqa: E402
from torch_geometric.data import Batch  # noqa: E402
from torch_geometric.loader import DataLoader  # noqa: E402
from torch_geometric.nn import MLP, PointNetConv, global_max_pool  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_line, result_path, write_result  # noqa: E402

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
#: Models whose confusion matrices are plotted (when they were run).
PLOTTED = ("SO2", "O2Conical", "SO3", "O3", BASELINE)
#: The procedural test shapes come from seed ``--seed + TEST_SEED_OFFSET``.
TEST_SEED_OFFSET = 1_000_000


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


def build_data(args: argparse.Namespace) -> tuple[list[Dataset], dict[str, Dataset], list[str]]:
    """``(one training set per seed, {test name: dataset}, classes)``.

    Training shapes are aligned; the tests are rotated per :data:`TESTS`.
    """
    if args.root is not None:
        from symgraph.data import ModelNet40, NormalizeUnitSphere

        common = dict(
            source=args.source,
            num_points=args.num_points,
            processed_dir=args.cache,
            pre_transform=NormalizeUnitSphere(),
        )
        trains = [ModelNet40(args.root, "train", **common)] * len(args.seed_list)
        test = ModelNet40(args.root, "test", **common)
    else:
        from symgraph.data import ProceduralShapes

        trains = [
            ProceduralShapes(args.num_shapes, args.num_points, seed=s) for s in args.seed_list
        ]
        test_seed = args.seed + TEST_SEED_OFFSET
        test = ProceduralShapes(args.num_test_shapes, args.num_points, seed=test_seed)
    tests = {
        name: test if group is None else rotated_copy(test, group, seed=args.seed + i)
        for i, (name, group) in enumerate(TESTS.items())
    }
    return trains, tests, list(trains[0].classes)


def make_model(name: str, num_classes: int, args: argparse.Namespace) -> nn.Module:
    """The baseline or a SteerablePointNet of group ``name``."""
    if name == BASELINE:
        return PointNet2(num_classes, k=args.k)
    return SteerablePointNet(num_classes, name, hidden=args.hidden, k=args.k)


def train_model(
    model: nn.Module, train: Dataset, args: argparse.Namespace, seed: int
) -> dict[str, float]:
    """Adam with a cosine schedule; returns training throughput and the last epoch's loss."""
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    steps = args.epochs * math.ceil(len(train) / args.batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(
        train, batch_size=args.batch_size, shuffle=True, drop_last=True, generator=generator
    )
    model.train()
    seen, elapsed, loss_sum, batches = 0, 0.0, 0.0, 0
    for _ in range(args.epochs):
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
    return {"train_shapes_per_s": seen / elapsed, "final_loss": loss_sum / batches}


@torch.no_grad()
def predict(model: nn.Module, dataset: Dataset, batch_size: int) -> tuple[Tensor, Tensor]:
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


def run_seed(
    name: str,
    seed: int,
    train: Dataset,
    tests: dict[str, Dataset],
    num_classes: int,
    args: argparse.Namespace,
) -> dict:
    """Train model ``name`` from ``seed`` and test it: one entry of a result's ``runs``."""
    torch.manual_seed(seed)
    model = make_model(name, num_classes, args)
    start = time.perf_counter()
    run = {"seed": seed, **train_model(model, train, args, seed)}
    run["accuracy"], run["confusion"] = {}, {}
    for test, dataset in tests.items():
        pred, true = predict(model, dataset, 2 * args.batch_size)
        run["accuracy"][test] = float((pred == true).double().mean())
        run["confusion"][test] = confusion(pred, true, num_classes).tolist()
    run["wall_s"] = time.perf_counter() - start
    print(
        f"    seed {seed}: loss {run['final_loss']:.3f}; "
        + ", ".join(f"{t} {100 * a:.1f}%" for t, a in run["accuracy"].items())
        + f"; {run['train_shapes_per_s']:.1f} train shapes/s; {run['wall_s']:.0f} s",
        flush=True,
    )
    return run


def _mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return statistics.fmean(values), spread


def summarise(name: str, params: int, runs: list[dict]) -> dict:
    """One model's result: its runs, mean/std accuracy over seeds and pooled confusions."""
    result = {"name": name, "params": params, "runs": runs}
    result["accuracy"], result["accuracy_std"], result["confusion"] = {}, {}, {}
    for test in TESTS:
        mean, std = _mean_std([run["accuracy"][test] for run in runs])
        result["accuracy"][test], result["accuracy_std"][test] = mean, std
        pooled = sum(torch.tensor(run["confusion"][test]) for run in runs)
        result["confusion"][test] = pooled.tolist()
    first, last = list(TESTS)[0], list(TESTS)[-1]
    drop = [run["accuracy"][first] - run["accuracy"][last] for run in runs]
    result["drop"], result["drop_std"] = _mean_std(drop)
    result["train_shapes_per_s"] = statistics.fmean(r["train_shapes_per_s"] for r in runs)
    return result


def per_seed_best(results: list[dict], test: str) -> dict[str, int]:
    """For each model, the number of seeds in which it is best on ``test`` (ties count)."""
    wins = {r["name"]: 0 for r in results}
    for i in range(len(results[0]["runs"])):
        best = max(r["runs"][i]["accuracy"][test] for r in results)
        for r in results:
            wins[r["name"]] += r["runs"][i]["accuracy"][test] == best
    return {name: count for name, count in wins.items() if count}


def plot_confusions(results: list[dict], classes: list[str], path: Path) -> None:
    """Row-normalised confusion matrices pooled over seeds: rows = models, columns = tests."""
    shown = [r for r in results if r["name"] in PLOTTED]
    fig, axes = plt.subplots(
        len(shown), len(TESTS), figsize=(4.0 * len(TESTS), 3.8 * len(shown)), squeeze=False
    )
    for row, result in zip(axes, shown):
        for ax, test in zip(row, TESTS):
            matrix = torch.tensor(result["confusion"][test], dtype=torch.float64)
            matrix = matrix / matrix.sum(dim=1, keepdim=True).clamp_min(1)
            ax.imshow(matrix.numpy(), vmin=0, vmax=1, cmap="Blues")
            accuracy = f"{100 * result['accuracy'][test]:.1f}"
            if len(result["runs"]) > 1:
                accuracy += f" ± {100 * result['accuracy_std'][test]:.1f}"
            ax.set_title(f"{result['name']}, {test}: {accuracy}%", fontsize=9)
            ax.set_xticks(range(len(classes)), classes, rotation=90, fontsize=6)
            ax.set_yticks(range(len(classes)), classes, fontsize=6)
            ax.set_xlabel("predicted", fontsize=7)
            ax.set_ylabel("true", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _display_name(name: str) -> str:
    return name if name == BASELINE else f"SteerablePointNet {name}"


def markdown(results: list[dict], classes: list[str], header: list[str]) -> str:
    """The accuracy table, the per-seed winners of (b) and per-class accuracies on (b)."""
    base = next((r for r in results if r["name"] == BASELINE), None)
    several = len(results[0]["runs"]) > 1

    def cell(mean: float, std: float, sign: str = "") -> str:
        text = f"{100 * mean:{sign}.1f}"
        return f"{text} ± {100 * std:.1f}" if several else text

    lines = [*header, ""]
    lines.append(
        "| model | params | (a) aligned | (b) z-rotated | (c) SO(3)-rotated | (a)−(c) | "
        "train shapes/s | vs baseline |"
    )
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        acc = [cell(r["accuracy"][t], r["accuracy_std"][t]) for t in TESTS]
        speed = r["train_shapes_per_s"]
        ratio = f"{speed / base['train_shapes_per_s']:.2f}×" if base else "–"
        lines.append(
            f"| {_display_name(r['name'])} | {r['params']:,} | {' | '.join(acc)} | "
            f"{cell(r['drop'], r['drop_std'], '+')} | {speed:.1f} | {ratio} |"
        )
    test = list(TESTS)[1]
    wins = ", ".join(f"{name} {count}" for name, count in per_seed_best(results, test).items())
    lines += ["", f"Best on (b) {test}, seeds won (ties count for each): {wins}.", ""]
    lines.append(f"Per-class accuracy on (b) {test}, pooled over seeds, %:")
    lines.append("")
    lines.append("| model | " + " | ".join(classes) + " |")
    lines.append("|---|" + "---:|" * len(classes))
    for r in results:
        matrix = torch.tensor(r["confusion"][test], dtype=torch.float64)
        recall = 100 * matrix.diagonal() / matrix.sum(dim=1).clamp_min(1)
        lines.append(f"| {r['name']} | " + " | ".join(f"{v:.0f}" for v in recall) + " |")
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
    parser.add_argument("--seed", type=int, default=0, help="first seed")
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds per model")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out")
    args = parser.parse_args(argv)
    quick = {"num_points": 128, "num_shapes": 192, "num_test_shapes": 96, "epochs": 5, "seeds": 1}
    full = {"num_points": 96, "num_shapes": 480, "num_test_shapes": 600, "epochs": 8, "seeds": 3}
    if args.root is not None:
        full = {**full, "num_points": 1024}
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.seeds < 1:
        parser.error(f"--seeds: expected a positive int, got {args.seeds}")
    args.seed_list = list(range(args.seed, args.seed + args.seeds))
    if args.groups is None:
        args.groups = list(QUICK_GROUPS if args.quick else ABLATION)
    return args


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    start = time.perf_counter()
    trains, tests, classes = build_data(args)
    print(
        f"data: {len(trains[0])} train shapes per seed, {len(classes)} classes, "
        f"{args.num_points} points; seeds {args.seed_list}"
    )
    names = [*args.groups, *([] if args.no_baseline else [BASELINE])]
    results = []
    for name in names:
        params = sum(p.numel() for p in make_model(name, len(classes), args).parameters())
        print(f"{name} ({params:,} parameters):", flush=True)
        runs = [
            run_seed(name, seed, train, tests, len(classes), args)
            for seed, train in zip(args.seed_list, trains)
        ]
        results.append(summarise(name, params, runs))
    wall = time.perf_counter() - start
    data = f"ModelNet40 ({args.root})" if args.root else "ProceduralShapes (12 classes)"
    command = "python benchmarks/pointcloud.py " + " ".join(argv if argv else sys.argv[1:])
    header = [
        f"# Point-cloud group ablation: {data}",
        "",
        f"Command: `{command.strip()}`; wall time {wall / 60:.1f} min; {machine_line()}.",
        f"{len(trains[0])} training shapes per seed (aligned, no augmentation), "
        f"{args.num_points} points, {args.epochs} epochs, batch {args.batch_size}, Adam lr "
        f"{args.lr} (cosine), k={args.k}; SteerablePointNet hidden `{args.hidden}`, 2 stages; "
        f"test sets of {len(tests['aligned'])} shapes shared by all runs. Seeds "
        f"{args.seed_list}; accuracy in %"
        + (", mean ± sample std over seeds." if args.seeds > 1 else "."),
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    table = markdown(results, classes, header)
    write_result(result_path(args.out, "pointcloud", ".md", args.quick), table)
    write_result(result_path(args.out, "pointcloud", ".json", args.quick),
                 json.dumps(results, indent=1))  # fmt: skip
    plot_confusions(results, classes,
                    result_path(args.out, "pointcloud_confusion", ".png", args.quick))  # fmt: skip
    print("\n" + table)
    return results


if __name__ == "__main__":
    main()
