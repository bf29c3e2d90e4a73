"""Benchmark: CNN vs strictly equivariant vs relaxed-equivariant smoke-plume forecasting.

Run:  python benchmarks/relaxed.py            (32x32 plumes, the sizes of the table)
      python benchmarks/relaxed.py --quick    (16x16, a few epochs: a smoke test, < 2 min)

Every model is trained by the ``fluid`` job (``symgraph train fluid``, one run folder each
under ``benchmarks/out/relaxed_runs/``) with the same data, epochs, batch size and learning
rate, on plumes whose rotation symmetry is broken by ``--breaking`` (the buoyancy blends
towards a fixed "up" direction; see :class:`symgraph.data.fluids.PlumeConfig`). Each model
gets its own ``--widths`` entry, chosen so that the parameter counts are comparable
(16-19k). With ``--domain-split half-turn`` the training inflows sit near two axes only
(plumes heading left or down before the breaking) and the ``domain`` inflows are those
turned by 180 degrees. With ``--domain-split three-quarter`` (default) the training inflows
sit near three axes (for ``--breaking 0.5``: plumes rising up-left, up-right, and nearly
force-free ones) and the ``domain`` inflows near the fourth (plumes rising straight up, the
strongest), so a model without a rotation prior meets an unseen flow direction, a strict one
plumes stronger than their rotated training counterparts, and the fixed "up" part of the
force is what the training plumes share (with ``half-turn`` the training set holds one
buoyant direction only, up-left, and "up" cannot be told apart from a prior on it).
Reported: the rollout RMSE over ``--horizon`` frames on the ``future`` (same simulations,
later frames) and ``domain`` test sets, of the best validation checkpoint, mean ± standard
deviation over ``--seeds`` (a seed draws its own simulations, train/validation split and
initialisation), and the validation RMSE (random 10 % of the training windows) on which
``--relaxation-weight`` was picked; then, per seed, each model's RMSE and the paired
differences relaxed − strict and relaxed − CNN (mean ± std over seeds, and in how many seeds
the relaxed model is lower). Then the relaxed model is trained for every level of
``--levels`` (``--plot-seeds`` each) and its learned relaxation -- the sum over layers of
``s²``, the squared strength of the non-equivariant pathway -- is plotted against the amount
of symmetry breaking of the data (``benchmarks/out/relaxation_vs_breaking.png``). Results:
``benchmarks/out/relaxed.json`` (``--quick`` writes ``*_quick`` files instead).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import shutil
import sys
import time
from pathlib import Path

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_line  # noqa: E402

from symgraph.cli import main as symgraph_main  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"
MODELS = ("conv", "equivariant", "relaxed")


def widths(args: argparse.Namespace) -> dict[str, int]:
    """``--width`` of each model (``conv=14,equivariant=12,relaxed=8``)."""
    out = {}
    for item in args.widths.split(","):
        name, _, value = item.partition("=")
        if name not in MODELS:
            raise ValueError(f"--widths: unknown model {name!r} (expected one of {MODELS})")
        out[name] = int(value)
    missing = set(MODELS) - set(out)
    if missing:
        raise ValueError(f"--widths: no width for {sorted(missing)}")
    return out


def job_flags(args: argparse.Namespace, model: str, breaking: float, seed: int) -> list[str]:
    """The flags of one run: data, budget (shared by all models) and the model's width."""
    return [
        "--symmetry-breaking", str(breaking), "--grid", str(args.grid),
        "--simulations", str(args.simulations), "--domain-simulations", str(args.domain),
        "--frames", str(args.frames), "--future-frames", str(args.future),
        "--frames-in", str(args.frames_in), "--horizon", str(args.horizon),
        "--train-horizon", str(args.train_horizon), "--width", str(widths(args)[model]),
        "--domain-split", args.domain_split, "--fields", args.fields,
        "--layers", str(args.layers), "--epochs", str(args.epochs),
        "--batch-size", str(args.batch_size), "--lr", str(args.lr), "--seed", str(seed),
        "--relaxation-weight", str(args.relaxation_weight), "--scheduler", "cosine",
        "--free-input", args.free_input,
        "--data-root", str(OUT / "relaxed_data"), "--no-progress",
    ]  # fmt: skip


def train(model: str, breaking: float, seed: int, args: argparse.Namespace) -> dict:
    """Train one run; its test metrics, parameter count, wall time and learned relaxation.

    ``seed`` seeds the simulations, the train/validation split and the model.
    """
    run = OUT / f"relaxed_runs{args.tag}" / f"{model}_s{breaking:g}_seed{seed}"
    if run.exists():
        shutil.rmtree(run)
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        status = symgraph_main(
            [
                "train",
                "fluid",
                "--model",
                model,
                "--out",
                str(run),
                *job_flags(args, model, breaking, seed),
            ]
        )
    if status != 0:
        raise RuntimeError(f"training {model} at breaking {breaking} failed with status {status}")
    wall = time.perf_counter() - start
    test = json.loads((run / "test.json").read_text())
    metrics = test["metrics"]
    with (run / "metrics.csv").open() as handle:  # the validation RMSE of the best epoch
        epochs = {int(row["epoch"]): row for row in csv.DictReader(handle)}
    val_rmse = float(epochs[int(test["best_epoch"])]["val_rmse"])
    config = json.loads((run / "config.json").read_text())
    state = torch.load(run / "best.pt", map_location="cpu", weights_only=False)["model"]
    strengths = [  # s = ‖V‖_F / sqrt(C_out) of each relaxed layer's free head
        float(v.norm() / v.shape[0] ** 0.5) for k, v in state.items() if k.endswith("head.free")
    ]
    return {
        "model": model,
        "breaking": breaking,
        "seed": seed,
        "val_rmse": val_rmse,
        "future_rmse": metrics["future_rmse"],
        "domain_rmse": metrics["domain_rmse"],
        "horizon_future": [metrics[f"future_rmse_h{k}"] for k in range(1, args.horizon + 1)],
        "horizon_domain": [metrics[f"domain_rmse_h{k}"] for k in range(1, args.horizon + 1)],
        "parameters": config["num_parameters"],
        "relaxation": sum(s * s for s in strengths),
        "strengths": strengths,
        "wall_s": wall,
    }


def summary(rows: list[dict], key: str) -> tuple[float, float]:
    """Mean and standard deviation (over seeds) of ``key``."""
    values = torch.tensor([row[key] for row in rows], dtype=torch.float64)
    std = float(values.std()) if len(values) > 1 else 0.0
    return float(values.mean()), std


def print_paired(runs: dict[tuple, dict], breaking: float, seeds: list[int]) -> None:
    """Per seed future / domain RMSE of each model, and the paired differences of the
    relaxed model against the others: a seed draws the data of all three models, so the
    per-seed difference is free of the data's seed-to-seed spread."""
    print("\n| seed | " + " | ".join(f"{m} future / domain" for m in MODELS) + " |")
    print("|---|" + "---|" * len(MODELS))
    for seed in seeds:
        cells = [
            f"{runs[m, breaking, seed]['future_rmse']:.5f} / "
            f"{runs[m, breaking, seed]['domain_rmse']:.5f}"
            for m in MODELS
        ]
        print(f"| {seed} | " + " | ".join(cells) + " |")
    print("\n| relaxed minus | test set | mean ± std over seeds | relaxed lower in |")
    print("|---|---|---|---|")
    for other in ("equivariant", "conv"):
        for key in ("future_rmse", "domain_rmse"):
            diffs = torch.tensor(
                [runs["relaxed", breaking, s][key] - runs[other, breaking, s][key] for s in seeds],
                dtype=torch.float64,
            )
            std = float(diffs.std()) if len(seeds) > 1 else 0.0
            wins = int((diffs < 0).sum())
            print(
                f"| {other} | {key.split('_')[0]} | {float(diffs.mean()):+.5f} ± {std:.5f} | "
                f"{wins} of {len(seeds)} seeds |"
            )


def plot(levels: dict[float, list[dict]], path: Path) -> None:
    """Learned relaxation ``Σ s²`` (one line per seed) and test RMSE (mean ± std) vs breaking."""
    breaking = sorted(levels)
    figure = Figure(figsize=(8.5, 3.5))
    FigureCanvasAgg(figure)
    left, right = figure.subplots(1, 2)
    for index in range(len(levels[breaking[0]])):
        row = [levels[b][index] for b in breaking]
        left.plot(breaking, [r["relaxation"] for r in row], "o-", label=f"seed {row[0]['seed']}")
    left.set_yscale("log")
    left.set_xlabel("symmetry breaking s of the data")
    left.set_ylabel("learned relaxation  Σ_layers strength²")
    left.set_title("relaxed model: learned relaxation")
    left.legend()
    for key, label in (("future_rmse", "future"), ("domain_rmse", "domain")):
        mean, std = zip(*(summary(levels[b], key) for b in breaking))
        right.errorbar(breaking, mean, yerr=std, fmt="o-", label=label, capsize=3)
    right.set_xlabel("symmetry breaking s of the data")
    right.set_ylabel("rollout RMSE (mean ± std over seeds)")
    right.set_title("relaxed model: test RMSE")
    right.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The benchmark's options (``--quick`` replaces the sizes by a smoke test's)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a smoke test")
    parser.add_argument("--breaking", type=float, default=0.5, help="breaking of the table")
    parser.add_argument("--levels", default="0,0.25,0.5,0.75", help="breaking levels of the plot")
    parser.add_argument("--grid", type=int, default=32)
    parser.add_argument("--simulations", type=int, default=16)
    parser.add_argument("--domain", type=int, default=4)
    parser.add_argument("--frames", type=int, default=50)
    parser.add_argument("--future", type=int, default=15)
    parser.add_argument("--frames-in", type=int, default=3)
    parser.add_argument("--horizon", type=int, default=5)
    parser.add_argument("--train-horizon", type=int, default=1)
    parser.add_argument(
        "--widths",
        default="conv=14,equivariant=12,relaxed=8",
        help="--width of each model, chosen for comparable parameter counts",
    )
    parser.add_argument(
        "--domain-split",
        default="three-quarter",
        choices=("diagonals", "half-turn", "three-quarter"),
        help="where the training and domain inflows sit (see SmokePlumeDataset)",
    )
    parser.add_argument("--fields", default="velocity", choices=("velocity", "velocity+density"))
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument(  # picked on validation RMSE among 0.001, 0.01, 0.1, 1 (seed 0)
        "--relaxation-weight", type=float, default=0.01
    )
    parser.add_argument(
        "--free-input",
        default="position",
        choices=("position", "radial", "constant"),
        help="what the relaxed layers' non-equivariant pathway depends on",
    )
    parser.add_argument("--seeds", default="0,1,2,3,4", help="seeds of the table (mean ± std)")
    parser.add_argument("--plot-seeds", default="0", help="seeds of each plotted level")
    parser.add_argument("--tag", default=None, help="suffix of the output files and run folders")
    args = parser.parse_args(argv)
    if args.tag is None:  # a smoke test never overwrites the results
        args.tag = "_quick" if args.quick else ""
    if args.quick:
        args.grid, args.simulations, args.domain, args.frames, args.future = 16, 2, 2, 24, 8
        args.horizon, args.train_horizon, args.layers, args.epochs = 3, 1, 2, 2
        args.widths = "conv=4,equivariant=4,relaxed=4"
        args.levels, args.seeds, args.plot_seeds = "0,0.6", "0", "0"
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    levels = [float(v) for v in args.levels.split(",")]
    seeds = [int(v) for v in args.seeds.split(",")]
    plot_seeds = [int(v) for v in args.plot_seeds.split(",")]
    OUT.mkdir(parents=True, exist_ok=True)
    print(f"# relaxed equivariance on smoke plumes\n\n{machine_line()}\n")
    print(f"breaking {args.breaking}, {args.grid}x{args.grid} grid, {args.epochs} epochs, "
          f"batch {args.batch_size}, lr {args.lr}, horizon {args.horizon}, "
          f"relaxation weight {args.relaxation_weight}, seeds {seeds}\n")  # fmt: skip
    start = time.perf_counter()
    runs = {(m, args.breaking, seed): train(m, args.breaking, seed, args)
            for m in MODELS for seed in seeds}  # fmt: skip
    print("| model | parameters | val RMSE | future RMSE | domain RMSE | learned Σ s² | wall (s) |")
    print("|---|---|---|---|---|---|---|")
    for model in MODELS:
        rows = [runs[model, args.breaking, seed] for seed in seeds]
        future, domain = summary(rows, "future_rmse"), summary(rows, "domain_rmse")
        val = summary(rows, "val_rmse")
        print(
            f"| {model} | {rows[0]['parameters']} | {val[0]:.5f} ± {val[1]:.5f} | "
            f"{future[0]:.5f} ± {future[1]:.5f} | "
            f"{domain[0]:.5f} ± {domain[1]:.5f} | {summary(rows, 'relaxation')[0]:.3g} | "
            f"{summary(rows, 'wall_s')[0]:.0f} |"
        )
    print_paired(runs, args.breaking, seeds)
    sweep: dict[float, list[dict]] = {}
    for level in levels:
        sweep[level] = [
            runs.get(("relaxed", level, seed)) or train("relaxed", level, seed, args)
            for seed in plot_seeds
        ]
    print("\n| breaking s | learned Σ s² | future RMSE | domain RMSE |")
    print("|---|---|---|---|")
    for level in levels:
        rows = sweep[level]
        relaxation, future = summary(rows, "relaxation"), summary(rows, "future_rmse")
        domain = summary(rows, "domain_rmse")
        print(
            f"| {level:g} | {relaxation[0]:.3g} ± {relaxation[1]:.2g} | "
            f"{future[0]:.5f} ± {future[1]:.5f} | {domain[0]:.5f} ± {domain[1]:.5f} |"
        )
    figure = OUT / f"relaxation_vs_breaking{args.tag}.png"
    plot(sweep, figure)
    result = {
        "args": vars(args),
        "table": list(runs.values()),
        "sweep": {str(k): v for k, v in sweep.items()},
    }
    (OUT / f"relaxed{args.tag}.json").write_text(json.dumps(result, indent=2))
    print(f"\nwall time {time.perf_counter() - start:.0f} s; plot {figure}")


if __name__ == "__main__":
    main()
