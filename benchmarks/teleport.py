"""Symmetry teleportation benchmark: every job with and without teleportation, same seeds.

Jobs (Zhao, Dehmamy, Walters, Yu, NeurIPS 2022, and GNN training on QM9):

- ``booth``, ``rosenbrock``: gradient descent on the test functions, teleporting along the
  SO(2) orbit of ``v = φ(x)`` (``L = ‖v‖²``);
- ``mlp``: the paper's 3-layer leaky-ReLU regression ``‖Y − W3 σ(W2 σ(W1 X))‖²`` (``X [5, 4]``:
  4 samples, so the data-dependent GL(d) action is exact), SGD, one teleport at step 5;
- ``gnn``: a PyG GIN (``torch_geometric.nn.models.GIN`` + add-pool + MLP head) regressing the
  QM9 HOMO-LUMO gap (standardised) on the 12k-molecule subset, teleporting along the
  positive rescalings found by :func:`symgraph.teleport.find_symmetries` with the settings
  of :data:`TELEPORT_SETTINGS` (``--gnn-variants``); the ``readout-*`` settings teleport
  along the data-free GL(64) of the readout instead (:func:`readout_symmetry`);
- ``steerable``: :class:`symgraph.models.SteerableMoleculeNet` (O(3), mean readout) on the
  same data and split, teleporting along what detection finds in it: one positive scale per
  gated copy of the first layer of each convolution's kernel MLP (rule ``"gated"``; the
  rules ``"rescale"``, ``"norm"`` and ``"gl"`` find nothing in it).

For every job: loss against steps and against wall-clock (teleport cost included), the
wall-clock and steps to reach a fixed training loss (the baseline's final loss), and the
final test error (GNN). Writes ``teleport_<job>.png`` and ``teleport.md`` under ``--out``
(default ``benchmarks/out``) and prints the table.

    OMP_NUM_THREADS=1 python benchmarks/teleport.py            # full run (~40 min, estimated)
    OMP_NUM_THREADS=1 python benchmarks/teleport.py --quick    # < 60 s smoke run
    OMP_NUM_THREADS=1 python benchmarks/teleport.py --quick --jobs steerable   # ~20 s
    OMP_NUM_THREADS=1 python benchmarks/teleport.py --jobs gnn --gnn-optimizers sgd \
        --gnn-variants balance --seeds 4 --gnn-seeds 4                         # ~5 min
    OMP_NUM_THREADS=1 python benchmarks/teleport.py --jobs gnn --gnn-optimizers sgd \
        --gnn-lr 0.001,0.005 --gnn-variants paper --seeds 4 --gnn-seeds 4      # ~10 min
    OMP_NUM_THREADS=1 python benchmarks/teleport.py --jobs gnn --gnn-optimizers sgd \
        --gnn-variants flat --seeds 5 --gnn-seeds 5 --gnn-first-seed 10        # ~7 min
    OMP_NUM_THREADS=1 python benchmarks/teleport.py --jobs gnn --gnn-optimizers sgd \
        --gnn-variants flat-running --seeds 4 --gnn-seeds 4 --gnn-first-seed 32  # ~7 min

With several ``--gnn-lr`` values every rate runs with and without teleportation, and a
second table measures every run at every rate against the first rate's baseline: the steps
it needs to reach that baseline's final loss (is a teleport's effect what a larger learning
rate would do, and does it make a larger rate usable?).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
from common import result_path, write_result  # noqa: E402

from symgraph.teleport import (  # noqa: E402
    DEFAULT_KINDS,
    LinearGLSymmetry,
    SO2ChartSymmetry,
    Teleport,
    find_symmetries,
)
from symgraph.train.loader import random_batch  # noqa: E402

QM9_DIR = REPO.parent / "shared" / "data" / "qm9"


@dataclass
class Curve:
    """One training run: per-step loss and cumulative wall-clock (teleports included)."""

    label: str
    loss: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)  # thread CPU time, same points
    eval_steps: list[int] = field(default_factory=list)  # steps at which ``eval_loss`` is taken
    eval_loss: list[float] = field(default_factory=list)  # full training-set loss
    teleport_seconds: float = 0.0
    teleports: int = 0
    refused: int = 0
    test_error: float | None = None

    def tracked(self) -> tuple[list[int], list[float]]:
        """(steps, loss) used for the threshold: eval losses when present, else per-step."""
        if self.eval_loss:
            return self.eval_steps, self.eval_loss
        return list(range(len(self.loss))), self.loss


@dataclass
class JobResult:
    job: str
    runs: list[tuple[Curve, Curve]]  # (baseline, teleport) per seed
    loss_name: str
    error_name: str = ""
    notes: str = ""
    variant: str = ""  # the teleport setting (a key of TELEPORT_SETTINGS) of GNN jobs


# ----------------------------------------------------------------------------- shared loop
def train(
    model: nn.Module,
    loss_fn: Callable[[nn.Module, object], torch.Tensor],
    batches: Callable[[], Sequence[object]],
    optimizer: torch.optim.Optimizer,
    epochs: int,
    label: str,
    teleporter: Teleport | None = None,
    evaluate: Callable[[nn.Module], float] | None = None,
) -> Curve:
    """Plain loop: teleport (if due) then one optimizer step per batch.

    ``batches()`` gives one epoch of batches. ``evaluate(model)`` (full training-set loss)
    runs after each epoch outside the timed region.
    """
    curve = Curve(label)
    elapsed, cpu, step = 0.0, 0.0, 0
    for _ in range(epochs):
        for batch in batches():
            start, cpu_start = time.perf_counter(), time.thread_time()
            if teleporter is not None:
                result = teleporter(model, batch, optimizer, step=step)
                if result is not None:
                    curve.teleports += 1
                    curve.refused += int(not result.accepted)
                    curve.teleport_seconds += result.seconds
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model, batch)
            loss.backward()
            optimizer.step()
            elapsed += time.perf_counter() - start
            cpu += time.thread_time() - cpu_start
            curve.loss.append(float(loss.detach()))
            curve.seconds.append(elapsed)
            curve.cpu_seconds.append(cpu)
            step += 1
        if evaluate is not None:
            curve.eval_steps.append(step - 1)
            curve.eval_loss.append(evaluate(model))
    return curve


def time_to_reach(curve: Curve, threshold: float) -> tuple[int, float, float] | None:
    """First (steps, wall-clock s, CPU s) at which the tracked loss is ≤ ``threshold``."""
    steps, values = curve.tracked()
    for s, v in zip(steps, values):
        if v <= threshold:
            return s + 1, curve.seconds[s], curve.cpu_seconds[s]
    return None


# ----------------------------------------------------------------------------- test functions
class Point(nn.Module):
    """A 2-D point ``x`` as the only parameter (for the test functions)."""

    def __init__(self, x: torch.Tensor) -> None:
        super().__init__()
        self.x = nn.Parameter(x.clone())


def booth(model: Point, _: object = None) -> torch.Tensor:
    x = model.x
    return (x[0] + 2 * x[1] - 7) ** 2 + (2 * x[0] + x[1] - 5) ** 2


def rosenbrock(model: Point, _: object = None) -> torch.Tensor:
    x = model.x
    return 100 * (x[0] ** 2 - x[1]) ** 2 + (x[0] - 1) ** 2


def booth_symmetry() -> SO2ChartSymmetry:
    """``v = (x₁ + 2x₂ − 7, 2x₁ + x₂ − 5)``, ``L = ‖v‖²``."""
    return SO2ChartSymmetry(
        "SO(2) on Booth's v",
        "x",
        lambda x: torch.stack([x[0] + 2 * x[1] - 7, 2 * x[0] + x[1] - 5]),
        lambda v: torch.stack([(-v[0] + 2 * v[1]) / 3 + 1, (2 * v[0] - v[1]) / 3 + 3]),
    )


def rosenbrock_symmetry() -> SO2ChartSymmetry:
    """``v = (10(x₁² − x₂), x₁ − 1)``, ``L = ‖v‖²``; ``x = (v₂ + 1, (v₂ + 1)² − v₁/10)``."""
    return SO2ChartSymmetry(
        "SO(2) on Rosenbrock's v",
        "x",
        lambda x: torch.stack([10 * (x[0] ** 2 - x[1]), x[0] - 1]),
        lambda v: torch.stack([v[1] + 1, (v[1] + 1) ** 2 - v[0] / 10]),
    )


def run_test_function(name: str, seeds: Sequence[int], quick: bool) -> JobResult:
    """GD with and without SO(2) teleportation on Booth or Rosenbrock."""
    if name == "booth":
        loss_fn, sym, lr, steps = booth, booth_symmetry(), 5e-3, 200
        low, high = torch.tensor([-5.0, -5.0]), torch.tensor([5.0, 5.0])
        schedule = "at:0"  # one teleport at the start
    else:
        loss_fn, sym, lr, steps = rosenbrock, rosenbrock_symmetry(), 1e-4, 2000
        low, high = torch.tensor([-2.0, -1.0]), torch.tensor([2.0, 3.0])
        schedule = "every:100"
    if quick:
        steps //= 2
    runs = []
    for position, seed in enumerate(seeds):
        gen = torch.Generator().manual_seed(seed)
        x0 = (low + (high - low) * torch.rand(2, generator=gen)).double()
        curves = {}
        for use in alternating_order(position):
            model = Point(x0)
            tp = Teleport(schedule, loss_fn, steps=5, lr=0.2, symmetries=[sym]) if use else None
            curves[use] = train(
                model,
                loss_fn,
                lambda: [None],
                torch.optim.SGD(model.parameters(), lr=lr),
                steps,
                "GD + teleport" if use else "GD",
                tp,
            )
        runs.append((curves[False], curves[True]))
    return JobResult(name, runs, "loss")


def alternating_order(position: int) -> tuple[bool, bool]:
    """Whether each of a seed's two runs teleports, in the order they run: the baseline goes
    first for even seed positions and second for odd ones, so that a clock that speeds up
    (or slows down) over a job favours neither run."""
    return (False, True) if position % 2 == 0 else (True, False)


# ----------------------------------------------------------------------------- paper MLP
def run_mlp(seeds: Sequence[int], quick: bool) -> JobResult:
    """The paper's regression: dims [4, 5, 6, 7, 8], leaky ReLU 0.1, SGD lr 1e-4."""
    steps = 150 if quick else 300
    runs = []
    for position, seed in enumerate(seeds):
        gen = torch.Generator().manual_seed(seed)
        # the paper's setup: entries uniform in [0, 1), X: 4 samples of dimension 5
        x = torch.rand(4, 5, generator=gen, dtype=torch.float64)
        y = torch.rand(4, 8, generator=gen, dtype=torch.float64)
        weights = [
            torch.rand(o, i, generator=gen, dtype=torch.float64)
            for i, o in ((5, 6), (6, 7), (7, 8))
        ]

        def loss_fn(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
            return 0.5 * (model(batch[0]) - batch[1]).pow(2).sum()

        curves = {}
        for use in alternating_order(position):
            model = nn.Sequential(
                nn.Linear(5, 6, bias=False),
                nn.LeakyReLU(0.1),
                nn.Linear(6, 7, bias=False),
                nn.LeakyReLU(0.1),
                nn.Linear(7, 8, bias=False),
            ).double()
            with torch.no_grad():
                for layer, w in zip(model[::2], weights):
                    layer.weight.copy_(w)
            tp = None
            if use:
                tp = Teleport("at:5", loss_fn, steps=8, lr=0.05, kinds=("gl",))
            curves[use] = train(
                model,
                loss_fn,
                lambda x=x, y=y: [(x, y)],
                torch.optim.SGD(model.parameters(), lr=1e-4),
                steps,
                "SGD + teleport" if use else "SGD",
                tp,
            )
        runs.append((curves[False], curves[True]))
    return JobResult("mlp", runs, "loss")


# ----------------------------------------------------------------------------- GNN on QM9
class GINRegressor(nn.Module):
    """PyG GIN (3 layers) → global add pool → MLP head; one scalar per graph."""

    def __init__(self, in_channels: int, hidden: int = 64, layers: int = 3) -> None:
        super().__init__()
        from torch_geometric.nn.models import GIN

        self.gnn = GIN(in_channels, hidden, layers)
        self.head = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, data) -> torch.Tensor:
        from torch_geometric.nn import global_add_pool

        h = self.gnn(data.x, data.edge_index)
        return self.head(global_add_pool(h, data.batch, size=data.num_graphs)).squeeze(-1)


def readout_symmetry(hidden: int = 64) -> LinearGLSymmetry:
    """The data-free GL(hidden) of :class:`GINRegressor`'s readout chain.

    The last GIN layer ends in a linear layer with no activation after it, the add pool is
    linear on nodes, and the head starts with a linear layer, so ``g`` on the last GIN
    layer's outputs and ``g⁻¹`` on the head's inputs is exact at any batch size. Declared by
    hand because :class:`GINRegressor` pools inside its ``forward``, where detection does not
    look; the same model written as a PyG ``Sequential`` with a ``SumAggregation`` child gets
    it from ``find_symmetries(model, ("linear",))``.
    """
    return LinearGLSymmetry(
        f"GL({hidden}) gnn.convs.2.nn.lins.1 -> add pool -> head.0",
        "gnn.convs.2.nn.lins.1",
        "head.0",
        hidden,
        has_bias=True,
    )


class SteerableGap(nn.Module):
    """:class:`symgraph.models.SteerableMoleculeNet` (O(3), mean readout): ``[num_graphs]``."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        from symgraph.models import SteerableMoleculeNet

        self.net = SteerableMoleculeNet("O3", atom_dim=in_channels, readout="mean")

    def forward(self, data) -> torch.Tensor:
        return self.net(data).squeeze(-1)


#: model name -> (factory ``in_channels -> model``, description for the notes).
GNN_MODELS: dict[str, tuple[Callable[[int], nn.Module], str]] = {
    "gin": (GINRegressor, "PyG GIN(3 layers, 64) + add-pool + MLP head"),
    "steerable": (
        SteerableGap,
        "SteerableMoleculeNet(O3, 32x0e + 8x1o + 4x2e, 3 layers, mean readout)",
    ),
}


def load_qm9(quick: bool, root: Path):
    """QM9 gap regression data from the shared CSVs (``symgraph.data.qm9``)."""
    from symgraph.data.qm9 import QM9

    files = sorted(QM9_DIR.glob("qm9pack_subset12k_part*.csv.gz"))
    if not files:
        raise FileNotFoundError(f"QM9 subset not found under {QM9_DIR}")
    subset = 1500 if quick else None
    dataset = QM9(
        root, source="csv", csv_files=files, target="gap", subset=subset, cutoff=None, log=False
    )
    name = "QM9 12k subset" if not quick else "QM9, first 1500 molecules of the 12k subset"
    return dataset, f"{name}, HOMO-LUMO gap (eV), bond graph, 80/10/10 split"


def synthetic_graphs(n: int, seed: int = 0):
    """Random geometric graphs with a smooth graph-level target (no data files needed)."""
    from torch_geometric.data import Data

    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        m = int(torch.randint(6, 16, (1,), generator=gen))
        pos = torch.rand(m, 3, generator=gen) * 3
        dist = torch.cdist(pos, pos)
        src, dst = ((dist < 1.2) & (dist > 0)).nonzero(as_tuple=True)
        x = torch.nn.functional.one_hot(torch.randint(0, 5, (m,), generator=gen), 5).float()
        y = (x[:, 0] - x[:, 1]).sum() + 0.3 * float(len(src)) / m
        out.append(Data(x=x, edge_index=torch.stack([src, dst]), y=y.reshape(1, 1)))
    return out


# Teleport settings by name: "paper" is Algorithm 1 (maximise ‖∇L‖²) with small steps;
# "descent" maximises the one-step decrease instead; "balance" moves to the point of the
# rescaling orbits with the smallest weight norm (equi-normalisation, no loss gradients).
# "readout-*" do the same along the GIN job's readout GL(64) (steps chosen on seed 100).
# "flat" moves to the point of the rescaling orbits with the smallest ‖∇L‖² (the opposite
# of "paper"), measured on its own batch of 512 random training graphs ("teleport_graphs":
# the hook's batch_fn draws them when a teleport is due, inside the timed region and counted
# in the teleport's time; settings chosen on seeds 100-103). "flat-running" is the same
# search with the optimizer's running mean of past gradients as the gradient (SGD's momentum,
# Adam's exp_avg: no backward pass; the minibatch is only run forward, to check the loss).
TELEPORT_SETTINGS: dict[str, dict] = {
    "paper": dict(objective="grad_norm", steps=3, lr=0.03),
    "descent": dict(objective="descent", steps=5, lr=0.1),
    "balance": dict(objective="min_norm", steps=30, lr=0.05, kinds=("rescale",)),
    "readout-paper": dict(
        objective="grad_norm", steps=3, lr=0.0005, symmetries=[readout_symmetry()]
    ),
    "readout-balance": dict(
        objective="min_norm", steps=30, lr=0.01, symmetries=[readout_symmetry()]
    ),
    "flat": dict(
        objective="min_grad_norm", steps=20, lr=0.05, kinds=("rescale",), teleport_graphs=512
    ),
    "flat-running": dict(
        objective="min_grad_norm", steps=20, lr=0.05, kinds=("rescale",), gradient="optimizer"
    ),
}


#: The settings each optimizer runs by default (``--gnn-variants`` overrides them).
GNN_VARIANTS: dict[str, tuple[str, ...]] = {"sgd": ("paper", "descent"), "adam": ("paper",)}


#: The GNN jobs' default learning rates (``--gnn-lr`` overrides them).
DEFAULT_LR = {"sgd": 0.005, "adam": 1e-3}


def _optimizer(name: str, model: nn.Module, lr: float | None = None) -> torch.optim.Optimizer:
    if name not in DEFAULT_LR:
        raise ValueError(f"optimizer: expected 'sgd' or 'adam', got {name!r}")
    lr = DEFAULT_LR[name] if lr is None else lr
    if name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    return torch.optim.Adam(model.parameters(), lr=lr)


def run_gnn(
    dataset,
    seeds: Sequence[int],
    description: str,
    *,
    epochs: int = 20,
    optimizer: str = "sgd",
    schedule: str = "every:100",
    variants: Sequence[str] | None = None,
    batch_size: int = 64,
    model: str = "gin",
    lr: float | None = None,
) -> list[JobResult]:
    """Train a GNN with and without teleportation (one baseline per seed, shared).

    ``dataset``: graphs with ``x [N, F]``, ``edge_index`` and a scalar ``y`` (``"steerable"``
    also needs ``pos`` and the bond types ``edge_attr``). ``model``: a key of
    :data:`GNN_MODELS`. ``lr``: the optimizer's learning rate (default
    :data:`DEFAULT_LR`). ``batch_size=0``: the whole training split in every step
    (deterministic full-batch training). Returns one :class:`JobResult` per teleport variant.
    """
    from torch_geometric.loader import DataLoader

    if model not in GNN_MODELS:
        raise ValueError(f"model: expected one of {sorted(GNN_MODELS)}, got {model!r}")
    factory, model_notes = GNN_MODELS[model]
    variants = [
        (name, TELEPORT_SETTINGS[name])
        for name in (variants if variants is not None else GNN_VARIANTS[optimizer])
    ]
    n = len(dataset)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(12345)).tolist()
    n_test = max(1, n // 10)
    test_set = [dataset[i] for i in perm[:n_test]]
    train_set = [dataset[i] for i in perm[2 * n_test :]]  # perm[n_test:2n_test]: validation
    ys = torch.cat([d.y.reshape(-1) for d in train_set])
    mean, std = float(ys.mean()), float(ys.std())
    in_channels = int(train_set[0].x.shape[1])
    batch_label = str(batch_size) if batch_size else f"full, {len(train_set)}"
    batch_size = batch_size or len(train_set)

    def loss_fn(model: nn.Module, batch) -> torch.Tensor:
        return (model(batch) - (batch.y.reshape(-1) - mean) / std).pow(2).mean()

    eval_loader = DataLoader(train_set, batch_size=512)
    test_loader = DataLoader(test_set, batch_size=512)

    def evaluate(model: nn.Module) -> float:
        with torch.no_grad():
            total = sum(float(loss_fn(model, b)) * b.num_graphs for b in eval_loader)
        return total / len(train_set)

    def test_mae(model: nn.Module) -> float:
        with torch.no_grad():
            err = sum(
                float((model(b) * std + mean - b.y.reshape(-1)).abs().sum()) for b in test_loader
            )
        return err / len(test_set)

    def one_run(seed: int, label: str, options: dict | None, span: int = epochs) -> Curve:
        torch.manual_seed(seed)
        net = factory(in_channels)
        opt = _optimizer(optimizer, net, lr)
        tp = None
        if options is not None:
            options = dict(options)
            if options.get("objective") == "descent":
                options["descent_lr"] = opt.param_groups[0]["lr"]
            graphs = options.pop("teleport_graphs", None)
            if graphs:
                draws = torch.Generator().manual_seed(seed)
                options["batch_fn"] = lambda step: random_batch(train_set, graphs, draws)
            tp = Teleport(schedule, loss_fn, **options)
        loader_gen = torch.Generator().manual_seed(seed)
        loader = DataLoader(train_set, batch_size=batch_size, shuffle=True, generator=loader_gen)
        curve = train(net, loss_fn, lambda: loader, opt, span, label, tp, evaluate)
        curve.test_error = test_mae(net)
        return curve

    # One untimed epoch first, so that one-off costs (allocator, kernels, the loader) fall on
    # no measured run; then each seed alternates which run goes first: with the baseline
    # always first, runs that do identical work timed 1.04-1.10x apart (the later faster).
    one_run(seeds[0], "warm-up", None, span=1)
    runs: dict[str, list[tuple[Curve, Curve]]] = {name: [] for name, _ in variants}
    for position, seed in enumerate(seeds):
        order: list[tuple[str | None, dict | None]] = [(None, None), *variants]
        curves = {
            name: one_run(seed, optimizer.upper() + ("" if name is None else " + teleport"),
                          options)
            for name, options in (order[::-1] if position % 2 else order)
        }  # fmt: skip
        for name, _ in variants:
            runs[name].append((curves[None], curves[name]))
    results = []
    for name, options in variants:
        syms = options.get("symmetries") or find_symmetries(
            factory(in_channels), options.get("kinds", DEFAULT_KINDS)
        )
        kinds = ", ".join(sorted({s.kind for s in syms}))
        coordinates = sum(s.identity(torch.zeros(1)).numel() for s in syms)
        counted = f"{len(syms)} symmetr{'y' if len(syms) == 1 else 'ies'}"
        graphs = options.get("teleport_graphs")
        on = (
            f"{min(graphs, len(train_set))} random training graphs"
            if graphs
            else "the current minibatch"
        )
        setting = ", ".join(f"{k}={v}" for k, v in options.items() if k != "teleport_graphs")
        rate = DEFAULT_LR.get(optimizer) if lr is None else lr
        notes = (
            f"{description}; {model_notes}, {optimizer} (lr {rate}, batch {batch_label}, {epochs} "
            f"epochs, seeds {', '.join(map(str, seeds))}); {counted} ({kinds}, {coordinates} "
            f"group coordinates); "
            f"teleport {schedule} on {on}, {setting}"
        )
        results.append(
            JobResult(
                f"gnn-{model}-{optimizer}-{name}",
                runs[name],
                "train MSE (standardised)",
                "test MAE (eV)",
                notes,
                variant=name,
            )
        )
    return results


# ----------------------------------------------------------------------------- report
def reach_ratios(reference: Curve, curve: Curve) -> tuple[float, float, float] | None:
    """(steps, wall-clock, CPU-time) ratios of ``reference`` over ``curve`` to reach
    ``reference``'s final loss: ``> 1`` when ``curve`` gets there sooner (``None``: it does
    not get there)."""
    threshold = reference.tracked()[1][-1]
    a, b = time_to_reach(reference, threshold), time_to_reach(curve, threshold)
    if a is None or b is None:
        return None
    return max(a[0], 1) / max(b[0], 1), a[1] / max(b[1], 1e-12), a[2] / max(b[2], 1e-12)


def gmean_text(values: list[float]) -> str:
    """Geometric mean as ``1.23×`` (``not reached`` when empty)."""
    if not values:
        return "not reached"
    return f"{math.exp(sum(math.log(v) for v in values) / len(values)):.2f}×"


def seed_step_ratios(result: JobResult) -> str:
    """Each seed's step speed-up to its baseline's final loss (``—``: not reached)."""
    ratios = [reach_ratios(base, tele) for base, tele in result.runs]
    return ", ".join("—" if r is None else f"{r[0]:.2f}" for r in ratios)


def summarize(result: JobResult) -> list[str]:
    """Markdown rows: one per job, aggregated over seeds."""
    speedups, cpu_speedups, step_ratios, reached, tp_share = [], [], [], 0, []
    base_err, tele_err, final_b, final_t = [], [], [], []
    for base, tele in result.runs:
        ratios = reach_ratios(base, tele)
        if ratios is not None:
            reached += 1
            step_ratios.append(ratios[0])
            speedups.append(ratios[1])
            cpu_speedups.append(ratios[2])
        tp_share.append(tele.teleport_seconds / max(tele.seconds[-1], 1e-12))
        final_b.append(base.tracked()[1][-1])
        final_t.append(tele.tracked()[1][-1])
        if base.test_error is not None:
            base_err.append(base.test_error)
            tele_err.append(tele.test_error)

    def mean(values: list[float], fmt: str = ".3g") -> str:
        return format(sum(values) / len(values), fmt) if values else "—"

    n = len(result.runs)
    err = f"{mean(base_err, '.4f')} / {mean(tele_err, '.4f')}" if base_err else "—"
    return [
        f"| {result.job} | {n} | {gmean_text(speedups)} ({reached}/{n} reached) | "
        f"{gmean_text(cpu_speedups)} | {gmean_text(step_ratios)} | "
        f"{100 * sum(tp_share) / n:.1f}% | {mean(final_b)} / {mean(final_t)} | {err} |"
    ]


TABLE_HEADER = [
    "| job | seeds | wall-clock speed-up to the baseline's final loss | CPU-time speed-up | "
    "step speed-up | teleport share of wall-clock | final loss (base / teleport) | test error "
    "(base / teleport) |",
    "|---|---|---|---|---|---|---|---|",
]


LR_TABLE_HEADER = [
    "| optimizer | learning rate | run | seeds | step speed-up to the first rate's baseline "
    "final loss | final loss | test error |",
    "|---|---|---|---|---|---|---|",
]


def compare_rates(optimizer: str, by_rate: dict[float, list[JobResult]]) -> list[str]:
    """Markdown rows: every run at every learning rate against the first rate's baseline.

    ``by_rate[rate]``: the :class:`JobResult` of each teleport variant at that rate (they
    share their baselines). Per seed, the threshold is the first rate's baseline final
    loss; a run's step speed-up is the steps that baseline took to reach it over the run's
    (geometric mean over the seeds whose run reaches it).
    """
    reference = next(iter(by_rate.values()))[0]
    rows = []
    for rate, results in by_rate.items():
        runs = [("baseline", [base for base, _ in results[0].runs])]
        runs += [(r.variant, [tele for _, tele in r.runs]) for r in results]
        for label, curves in runs:
            got = [
                reach_ratios(ref_base, curve)
                for (ref_base, _), curve in zip(reference.runs, curves)
            ]
            ratios = [r[0] for r in got if r is not None]
            finals = [curve.tracked()[1][-1] for curve in curves]
            errors = [curve.test_error for curve in curves if curve.test_error is not None]
            n = len(curves)
            error = f"{sum(errors) / len(errors):.4f}" if errors else "—"
            rows.append(
                f"| {optimizer} | {rate:g} | {label} | {n} | {gmean_text(ratios)} "
                f"({len(ratios)}/{n} reached) | {sum(finals) / n:.3g} | {error} |"
            )
    return rows


def plot(result: JobResult, path: Path) -> None:
    """Loss against steps and against wall-clock, one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for i, (base, tele) in enumerate(result.runs):
        for curve, color in ((base, "tab:blue"), (tele, "tab:red")):
            steps, values = curve.tracked()
            label = curve.label if i == 0 else None
            xs = [s + 1 for s in steps]
            axes[0].plot(xs, values, color=color, alpha=0.7, label=label)
            axes[1].plot(
                [curve.seconds[s] for s in steps], values, color=color, alpha=0.7, label=label
            )
    for ax, xlabel in zip(axes, ("step", "wall-clock (s, teleports included)")):
        ax.set_xlabel(xlabel)
        ax.set_ylabel(result.loss_name)
        ax.set_yscale("log")
        ax.legend()
    fig.suptitle(f"teleportation: {result.job}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _variant_names(text: str) -> tuple[str, ...]:
    """``--gnn-variants``: comma-separated names of :data:`TELEPORT_SETTINGS`."""
    names = tuple(v.strip() for v in text.split(",") if v.strip())
    unknown = sorted(set(names) - set(TELEPORT_SETTINGS))
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f"expected names among {list(TELEPORT_SETTINGS)}, got {text!r}"
        )
    return names


def _learning_rates(text: str) -> tuple[float, ...]:
    """``--gnn-lr``: comma-separated positive finite numbers."""
    rates = []
    for part in text.split(","):
        try:
            value = float(part)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and value > 0):
            raise argparse.ArgumentTypeError(
                f"expected comma-separated positive numbers, got {text!r}"
            )
        rates.append(value)
    return tuple(rates)


def main(argv: Sequence[str] | None = None) -> list[JobResult]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small run (< 60 s)")
    parser.add_argument("--jobs", default="booth,rosenbrock,mlp,gnn,steerable")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per job")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out")
    parser.add_argument("--gnn-data", choices=("qm9", "synthetic"), default="qm9")
    parser.add_argument("--gnn-optimizers", default="sgd,adam")
    parser.add_argument("--gnn-epochs", type=int, default=None)
    parser.add_argument(
        "--gnn-lr",
        type=_learning_rates,
        default=None,
        help=f"learning rates of the GNN and steerable jobs (default {DEFAULT_LR}); with "
        "several, each runs with and without teleportation and every run is measured "
        "against the first rate's baseline final loss",
    )
    parser.add_argument("--gnn-schedule", default=None, help="default every:100")
    parser.add_argument("--gnn-seeds", type=int, default=2, help="seeds for the GNN jobs")
    parser.add_argument(
        "--gnn-first-seed",
        type=int,
        default=0,
        help="the GNN jobs' seeds start here (fresh seeds for a replication)",
    )
    parser.add_argument(
        "--gnn-batch-size",
        type=int,
        default=64,
        help="graphs per step of the GNN jobs (0: the whole training split, full-batch)",
    )
    parser.add_argument(
        "--gnn-molecules",
        type=int,
        default=None,
        help="use only the first N graphs of the data (split 80/10/10 as usual)",
    )
    parser.add_argument(
        "--gnn-variants",
        type=_variant_names,
        default=None,
        help=f"teleport settings of the GNN jobs, among {', '.join(TELEPORT_SETTINGS)} "
        "(default: paper and descent with SGD, paper with Adam)",
    )
    parser.add_argument(
        "--steerable-optimizers", default="adam", help="optimizers of the steerable job"
    )
    parser.add_argument("--steerable-epochs", type=int, default=None, help="default 5 (--quick: 2)")
    args = parser.parse_args(argv)
    if args.gnn_batch_size < 0:
        parser.error(
            f"--gnn-batch-size: expected 0 (full batch) or more, got {args.gnn_batch_size}"
        )
    if args.gnn_first_seed < 0:
        parser.error(f"--gnn-first-seed: expected 0 or more, got {args.gnn_first_seed}")
    if args.gnn_molecules is not None and args.gnn_molecules < 10:
        parser.error(f"--gnn-molecules: expected at least 10 graphs, got {args.gnn_molecules}")
    torch.set_num_threads(1)
    seeds = list(range(args.seeds or (2 if args.quick else 3)))
    args.out.mkdir(parents=True, exist_ok=True)
    jobs = [j.strip() for j in args.jobs.split(",") if j.strip()]
    results: list[JobResult] = []
    rate_rows: list[str] = []
    for job in jobs:
        start = time.perf_counter()
        if job in ("booth", "rosenbrock"):
            results.append(run_test_function(job, seeds, args.quick))
        elif job == "mlp":
            results.append(run_mlp(seeds, args.quick))
        elif job in ("gnn", "steerable"):
            if args.gnn_data == "qm9":
                dataset, description = load_qm9(args.quick, args.out / "qm9")
            elif job == "steerable":
                raise SystemExit("--gnn-data synthetic: the steerable job needs QM9 (positions)")
            else:
                dataset = synthetic_graphs(300 if args.quick else 2000)
                description = "synthetic random geometric graphs"
            if args.gnn_molecules is not None:
                dataset = dataset[: args.gnn_molecules]
                description += f", first {len(dataset)} graphs"
            if job == "gnn":
                optimizers, epochs = (
                    args.gnn_optimizers,
                    args.gnn_epochs or (3 if args.quick else 20),
                )
            else:
                optimizers = args.steerable_optimizers
                epochs = args.steerable_epochs or (2 if args.quick else 5)
            rates = args.gnn_lr or (None,)
            for opt in optimizers.split(","):
                by_rate: dict[float, list[JobResult]] = {}
                for rate in rates:
                    got = run_gnn(
                        dataset,
                        [
                            args.gnn_first_seed + s
                            for s in range(1 if args.quick else args.gnn_seeds)
                        ],
                        description,
                        epochs=epochs,
                        optimizer=opt.strip(),
                        schedule=args.gnn_schedule or ("every:20" if args.quick else "every:100"),
                        variants=args.gnn_variants
                        or GNN_VARIANTS[opt.strip()][: 1 if args.quick else None],
                        model="gin" if job == "gnn" else "steerable",
                        lr=rate,
                        batch_size=args.gnn_batch_size,
                    )
                    if len(rates) > 1:
                        for result in got:
                            result.job += f"-lr{rate:g}"
                        by_rate[rate] = got
                    results += got
                if by_rate:
                    rate_rows += compare_rates(f"{job} {opt.strip()}", by_rate)
        else:
            raise SystemExit(
                f"--jobs: unknown job {job!r} (booth, rosenbrock, mlp, gnn, steerable)"
            )
        print(f"[{job}] {time.perf_counter() - start:.1f} s", file=sys.stderr)
    lines = list(TABLE_HEADER)
    for result in results:
        lines += summarize(result)
        plot(result, result_path(args.out, f"teleport_{result.job}", ".png", args.quick))
    if rate_rows:
        lines += ["", "By learning rate, against the first rate's baseline:", ""]
        lines += [*LR_TABLE_HEADER, *rate_rows]
    notes = [f"- {r.job}: {r.notes}" for r in results if r.notes]
    notes += [f"- {r.job}: step speed-up per seed {seed_step_ratios(r)}" for r in results]
    command = "OMP_NUM_THREADS=1 python benchmarks/teleport.py " + " ".join(argv or sys.argv[1:])
    text = "\n".join([f"Command: `{command.strip()}`", "", *lines, "", *notes]) + "\n"
    write_result(result_path(args.out, "teleport", ".md", args.quick), text)
    print(text)
    return results


if __name__ == "__main__":
    main()
