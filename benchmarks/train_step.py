"""Benchmark: one QM9 training step of SteerableMoleculeNet, with its head dense and
block-sparse, against PyG's SchNet, in one process.

Run:  python benchmarks/train_step.py                       (the shared 12k QM9 sample)
      python benchmarks/train_step.py --default-allocator   (glibc's default allocator)
      python benchmarks/train_step.py --models SteerableMoleculeNet [--default-allocator]
      python benchmarks/train_step.py --csv PATH...         (other qm9pack CSVs)
      python benchmarks/train_step.py --adam                (the optimiser step alone)

A step is forward, backward and an Adam update on a batch of real molecules (default 32, as
in ``benchmarks/qm9.py``). The contenders run the same batches in interleaved rounds; the
table gives the median time per step, the ratio to SchNet (median of per-round ratios), the
process's minor page faults per step (one pass after a warm-up, before the timed rounds) and
the peak memory of one round. How often glibc's default allocator faults depends on what the
process allocated before (its mmap threshold grows with the blocks it has freed), so the
fault count of a fresh training process can be much higher than here. By default the run
calls :func:`symgraph.allocator.retain_freed_memory` first, as ``symgraph train`` and
``benchmarks/qm9.py`` do.

``--adam`` times only the optimiser step on the parameters of SteerableMoleculeNet at two
sizes (random gradients, no data): torch's fused Adam, which the ``Trainer`` uses, against
its ``foreach`` implementation and its per-tensor loop (torch's default on the CPU).
"""

from __future__ import annotations

import argparse
import itertools
import resource
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_line, measure_interleaved, paired_ratio  # noqa: E402
from qm9 import SchNetAdapter  # noqa: E402

from symgraph.allocator import retain_freed_memory  # noqa: E402
from symgraph.data.qm9 import QM9, target_index  # noqa: E402
from symgraph.models import SteerableMoleculeNet  # noqa: E402
from symgraph.train.jobs import positive_int  # noqa: E402

SHARED_CSV = Path(__file__).resolve().parents[2] / "shared/data/qm9/qm9pack_subset12k_part1.csv.gz"


def dense_head(model: SteerableMoleculeNet) -> SteerableMoleculeNet:
    """The model with every layer's head applied as one dense product (no head groups)."""
    for conv in model.convs:
        conv.kernel._head_groups = None  # the cached value of ``kernel.head_groups``
    return model


def draw_batches(dataset, batch_size: int, steps: int) -> list:
    """``steps`` random batches of ``dataset``, drawn as training epochs draw them (their
    sizes vary from step to step, and so do the blocks the allocator hands out): the epoch
    is reshuffled and drawn again while fewer than ``steps`` batches are out."""
    from torch_geometric.loader import DataLoader

    if len(dataset) == 0:
        raise ValueError("dataset: expected at least one molecule, got none")
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True)
    batches: list = []
    while len(batches) < steps:
        batches.extend(itertools.islice(loader, steps - len(batches)))
    return batches


def step_function(model, batches, index):
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, fused=True)

    def run() -> None:
        for batch in batches:
            loss = (model(batch).reshape(-1) - batch.y[:, index]).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    return run


#: The contenders of a training step, in the table's order (``--models`` picks among them).
MODEL_NAMES = (
    "SteerableMoleculeNet, dense head",
    "SteerableMoleculeNet",
    "SteerableMoleculeNet, full last layer",
    "SchNet (PyG)",
)

#: Adam implementations compared by ``--adam``: keyword arguments of ``torch.optim.Adam``.
ADAM_VARIANTS = {
    "fused": {"fused": True},
    "foreach": {"foreach": True},
    "per-tensor loop": {"foreach": False},
}

#: Model sizes of ``--adam``: the library default and the QM9 short-budget settings.
ADAM_MODELS = {
    "default": {},
    "short-budget (32x0e + 8x1o, lmax 1)": {"hidden": "32x0e + 8x1o", "lmax": 1},
}


def adam_optimizers(model: torch.nn.Module) -> dict[str, torch.optim.Adam]:
    """One Adam per variant, each on its own copy of the model's parameters, all with the
    same fixed random gradients."""
    optimizers = {}
    for name, options in ADAM_VARIANTS.items():
        gen = torch.Generator().manual_seed(0)
        params = [p.detach().clone().requires_grad_(True) for p in model.parameters()]
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen, dtype=p.dtype)
        optimizers[name] = torch.optim.Adam(params, lr=1e-4, **options)
    return optimizers


def adam_step_functions(model: torch.nn.Module, steps: int) -> dict:
    """Per Adam variant, a run of ``steps`` optimiser steps (:func:`adam_optimizers`)."""

    def steps_of(optimizer: torch.optim.Adam):
        def run() -> None:
            for _ in range(steps):
                optimizer.step()

        return run

    return {name: steps_of(opt) for name, opt in adam_optimizers(model).items()}


def adam_table(steps: int, rounds: int) -> dict[str, dict]:
    """``--adam``: ms per optimiser step of each variant, and the loop's time over fused's."""
    lines = ["| model | parameter tensors | "
             + " | ".join(f"{v} ms" for v in ADAM_VARIANTS) + " | loop / fused |",
             "|---|---|" + "---|" * len(ADAM_VARIANTS) + "---|"]  # fmt: skip
    out = {}
    for label, options in ADAM_MODELS.items():
        torch.manual_seed(0)
        model = SteerableMoleculeNet(readout="mean", **options)
        fns = adam_step_functions(model, steps)
        results = measure_interleaved(fns, repeats=rounds, warmup=1)
        ratio = paired_ratio(results["per-tensor loop"]["times"], results["fused"]["times"])
        times = " | ".join(f"{results[v]['time_s'] / steps * 1e3:.2f}" for v in ADAM_VARIANTS)
        count = sum(1 for _ in model.parameters())
        lines.append(f"| {label} | {count} | {times} | {ratio:.1f}× |")
        out[label] = results
    print(f"machine: {machine_line()}")
    print(f"{steps} optimiser steps per round, {rounds} rounds")
    print("\n".join(lines))
    return out


def faults_per_step(fn, steps: int) -> float:
    start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    fn()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start) / steps


def main(argv: list[str] | None = None) -> dict[str, dict]:
    parser = argparse.ArgumentParser(description="QM9 training step: ours vs SchNet")
    parser.add_argument("--csv", nargs="*", default=None, help="qm9pack CSVs (default: shared)")
    parser.add_argument("--root", default="data/qm9-step")
    parser.add_argument(
        "--qm9pack-subset", type=int, default=0,
        help="molecules of full QM9 from qm9pack instead of CSVs (as benchmarks/qm9.py loads)",
    )  # fmt: skip
    parser.add_argument("--batch-size", type=positive_int, default=32)
    parser.add_argument(
        "--steps", type=positive_int, default=20, help="steps per contender per round"
    )
    parser.add_argument("--rounds", type=positive_int, default=5)
    parser.add_argument("--default-allocator", action="store_true")
    parser.add_argument(
        "--models", nargs="*", default=None,
        help="only these contenders (names as in the table); one alone shows the allocator's "
        "effect on a process that trains a single model",
    )  # fmt: skip
    parser.add_argument("--adam", action="store_true", help="time the optimiser step alone")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.models or ()) - set(MODEL_NAMES))
    if unknown:
        parser.error(f"--models: expected names among {list(MODEL_NAMES)}, got {unknown}")
    if args.adam:
        return adam_table(steps=10 * args.steps, rounds=args.rounds)
    if not args.default_allocator:
        retain_freed_memory()
    if args.qm9pack_subset:
        dataset = QM9(args.root, source="qm9pack", subset=args.qm9pack_subset, subset_seed=0)
    else:
        csv = [Path(p) for p in args.csv] if args.csv else [SHARED_CSV]
        dataset = QM9(args.root, source="csv", csv_files=csv)
    torch.manual_seed(0)
    # random batches of the first 2,000 molecules: exactly --steps of them, which the
    # per-step figures divide by (a loader of fewer batches is drawn again)
    batches = draw_batches(dataset[:2000], args.batch_size, args.steps)
    index = target_index("homo")
    models = {
        "SteerableMoleculeNet, dense head": dense_head(SteerableMoleculeNet(readout="mean")),
        "SteerableMoleculeNet": SteerableMoleculeNet(readout="mean"),
        "SteerableMoleculeNet, full last layer": SteerableMoleculeNet(
            readout="mean", last_layer="full"
        ),
        "SchNet (PyG)": SchNetAdapter("mean"),
    }
    if args.models is not None:
        models = {name: model for name, model in models.items() if name in args.models}
    fns = {name: step_function(model, batches, index) for name, model in models.items()}
    for fn in fns.values():
        fn()  # warm up: lazily built buffers, the allocator's first growth
    faults = {name: faults_per_step(fn, args.steps) for name, fn in fns.items()}
    results = measure_interleaved(fns, repeats=args.rounds, warmup=0)
    allocator = "glibc default" if args.default_allocator else "retain_freed_memory()"
    print(f"machine: {machine_line()}")
    print(f"batch {args.batch_size}, {args.steps} steps per round, {args.rounds} rounds, "
          f"allocator: {allocator}")  # fmt: skip
    lines = ["| model | ms per step | × SchNet | page faults per step | peak MiB |",
             "|---|---|---|---|---|"]  # fmt: skip
    reference = results.get("SchNet (PyG)", {}).get("times")
    for name in fns:
        result = results[name]
        result["faults"] = faults[name]
        ratio = "" if reference is None else f"{paired_ratio(result['times'], reference):.2f}"
        lines.append(
            f"| {name} | {result['time_s'] / args.steps * 1e3:.1f} | {ratio} | "
            f"{result['faults']:.0f} | {result['peak_mib']:.0f} |"
        )
    print("\n".join(lines))
    return results


if __name__ == "__main__":
    main()
