"""Benchmark: CNN vs strictly equivariant vs relaxed-equivariant smoke-plume forecasting.

Run:  python benchmarks/relaxed.py            (32x32 plumes, the sizes of the session-6
                                              table; the flags of later tables are in
                                              benchmarks/RESULTS.md)
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
``--relaxation-weight`` was picked (``--relaxation-lr-scale`` and ``--relaxation-warmup``
slow the relaxed model's non-equivariant pathway down; they leave the other models as they
are; ``--kernel-hidden``, ``--free-hidden``, ``--features``, ``--group`` and ``--radius``
shape the models, see ``symgraph train fluid --help``; ``--grad-clip`` clips every model's
gradient norm); then, per seed, each model's RMSE
and the paired differences relaxed − strict and relaxed − CNN (mean ± std over seeds, and in
how many seeds the relaxed model is lower). Then every model is trained for every level of
``--levels`` (``--plot-seeds`` each), and per level the table gives each model's RMSE and
the paired relaxed − strict differences; the relaxed model's learned relaxation -- the sum
over layers of ``s²``, the squared strength of the non-equivariant pathway -- and every
model's domain RMSE are plotted against the amount of symmetry breaking of the data
(``benchmarks/out/relaxation_vs_breaking.png``). Results: ``benchmarks/out/relaxed.json``
(``--quick`` writes ``*_quick`` files instead). Each finished run is also kept in
``relaxed.partial.json`` until the end: started again with the same options, an interrupted
benchmark trains only the runs it is missing.

Seeds can run in separate processes (one core each) and be reported together:

    python benchmarks/relaxed.py --seeds 0,1,2,3,4 --plot-seeds 0,1 --tag _a
    python benchmarks/relaxed.py --seeds 5,6,7,8,9 --plot-seeds 5,6 --tag _b
    python benchmarks/relaxed.py --merge benchmarks/out/relaxed_a.json benchmarks/out/relaxed_b.json

``--merge`` reads the runs of those results files (same settings, distinct seeds) and prints
the tables and the plot over all their seeds, as one run would have. ``--models relaxed``
trains (and reports) that model only, e.g. for a sweep of the learned relaxation alone.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import shutil
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_line  # noqa: E402

from symgraph.cli import main as symgraph_main  # noqa: E402
from symgraph.nn import SymmetryBreakingInput  # noqa: E402

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
    """The flags of one run: data, budget (shared by all models), the model's width, and
    the relaxed model's own settings (which the job refuses for the strict models)."""
    relaxed = [
        "--relaxation-weight", str(args.relaxation_weight),
        "--free-input", args.free_input, "--free-hidden", str(args.free_hidden),
        "--relaxation", args.relaxation, "--breaking", args.breaking_irreps,
        "--relaxation-lr-scale", str(args.relaxation_lr_scale),
        "--relaxation-warmup", str(args.relaxation_warmup),
    ]  # fmt: skip
    return [
        "--symmetry-breaking", str(breaking), "--grid", str(args.grid),
        "--simulations", str(args.simulations), "--domain-simulations", str(args.domain),
        "--frames", str(args.frames), "--future-frames", str(args.future),
        "--frames-in", str(args.frames_in), "--horizon", str(args.horizon),
        "--train-horizon", str(args.train_horizon), "--width", str(widths(args)[model]),
        "--domain-split", args.domain_split, "--fields", args.fields,
        "--field-scale", args.field_scale, "--scale-frames", args.scale_frames,
        "--layers", str(args.layers), "--epochs", str(args.epochs),
        "--batch-size", str(args.batch_size), "--lr", str(args.lr), "--seed", str(seed),
        "--scheduler", "cosine",
        "--val-split", args.val_split,
        "--features", args.features,
        "--group", args.group, "--radius", str(args.radius),
        *(["--kernel-hidden", args.kernel_hidden] if args.kernel_hidden else []),
        *(["--grad-clip", str(args.grad_clip)] if args.grad_clip is not None else []),
        "--data-root", str(OUT / "relaxed_data"), "--no-progress",
        *(relaxed if model == "relaxed" else []),
    ]  # fmt: skip


def learned_strengths(run: Path) -> list[float]:
    """The relaxation strength ``s`` of each relaxed layer of a run's best model, and of its
    learned symmetry-breaking input (``--relaxation input``), as the layers measure them
    (``relaxation_penalty`` is their ``Σ s²``); the job rebuilds the model from the run's
    ``config.json``, reading the cached simulations."""
    from symgraph.nn import RelaxedImplicitKernel
    from symgraph.train.jobs import get_job

    job = get_job("fluid")
    config = json.loads((run / "config.json").read_text())
    model = job(argparse.Namespace(**job.saved_args(config["args"]))).model
    state = torch.load(run / "best.pt", map_location="cpu", weights_only=False)["model"]
    model.load_state_dict(state)
    relaxed = (RelaxedImplicitKernel, SymmetryBreakingInput)
    with torch.no_grad():
        return [float(m.strength) for m in model.modules() if isinstance(m, relaxed)]


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
    strengths = learned_strengths(run) if model == "relaxed" else []
    return {
        "model": model,
        "breaking": breaking,
        "seed": seed,
        "val_rmse": val_rmse,
        "future_rmse": metrics["future_rmse"],
        "domain_rmse": metrics["domain_rmse"],
        "horizon_future": [metrics[f"future_rmse_h{k}"] for k in range(1, args.horizon + 1)],
        "horizon_domain": [metrics[f"domain_rmse_h{k}"] for k in range(1, args.horizon + 1)],
        "per_field": {  # --fields velocity+density: each field's RMSE, in its own units
            key: value
            for key, value in metrics.items()
            if key.endswith(("_rmse_velocity", "_rmse_density"))
        },
        "parameters": config["num_parameters"],
        "relaxation": sum(s * s for s in strengths),
        "strengths": strengths,
        "wall_s": wall,
    }


class Finished:
    """The runs finished so far, kept in ``path`` after each one: an interrupted benchmark
    started again with the same options trains only what is missing."""

    def __init__(self, path: Path, args: argparse.Namespace) -> None:
        self.path, self.args = path, args
        ignored = ("seeds", "plot_seeds", "models")  # they choose runs, not how one trains
        self.options = {k: v for k, v in vars(args).items() if k not in ignored}
        saved = json.loads(path.read_text()) if path.exists() else None
        same = saved is not None and saved["options"] == json.loads(json.dumps(self.options))
        self.rows = saved["rows"] if same else []

    def get(self, model: str, breaking: float, seed: int) -> dict:
        """The run's results, trained now unless an earlier start finished it."""
        for row in self.rows:
            if (row["model"], row["breaking"], row["seed"]) == (model, breaking, seed):
                return row
        row = train(model, breaking, seed, self.args)
        self.rows.append(row)
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps({"options": self.options, "rows": self.rows}))
        temporary.replace(self.path)
        return row


def summary(rows: list[dict], key: str) -> tuple[float, float]:
    """Mean and standard deviation (over seeds) of ``key``."""
    values = torch.tensor([row[key] for row in rows], dtype=torch.float64)
    std = float(values.std()) if len(values) > 1 else 0.0
    return float(values.mean()), std


def print_per_field(rows_by_model: list[list[dict]]) -> None:
    """With ``--fields velocity+density``: each model's future and domain RMSE per field, in
    the field's own units (mean ± std over seeds); nothing for velocity alone."""
    keys = sorted(
        {key for rows in rows_by_model for row in rows for key in row.get("per_field", {})}
    )
    if not keys or not all(
        set(row.get("per_field", {})) == set(keys) for rows in rows_by_model for row in rows
    ):
        return
    print("\n| model | " + " | ".join(keys) + " |")
    print("|---|" + "---|" * len(keys))
    for rows in rows_by_model:
        fields = [row["per_field"] for row in rows]
        cells = ["{:.5f} ± {:.5f}".format(*summary(fields, key)) for key in keys]
        print(f"| {rows[0]['model']} | " + " | ".join(cells) + " |")


def print_paired(
    runs: dict[tuple, dict], breaking: float, seeds: list[int], models: Sequence[str] = MODELS
) -> None:
    """Per seed future / domain RMSE of each of ``models``, and the paired differences of the
    relaxed model against the others: a seed draws the data of all three models, so the
    per-seed difference is free of the data's seed-to-seed spread."""
    print("\n| seed | " + " | ".join(f"{m} future / domain" for m in models) + " |")
    print("|---|" + "---|" * len(models))
    for seed in seeds:
        cells = [
            f"{runs[m, breaking, seed]['future_rmse']:.5f} / "
            f"{runs[m, breaking, seed]['domain_rmse']:.5f}"
            for m in models
        ]
        print(f"| {seed} | " + " | ".join(cells) + " |")
    others = [m for m in ("equivariant", "conv") if m in models and "relaxed" in models]
    if not others:
        return
    print(
        "\n| relaxed minus | test set | mean ± std over seeds (median) | relaxed lower in | "
        "Wilcoxon p | paired t (p) |"
    )
    print("|---|---|---|---|---|---|")
    for other in others:
        for key in ("future_rmse", "domain_rmse"):
            diffs = torch.tensor(
                [runs["relaxed", breaking, s][key] - runs[other, breaking, s][key] for s in seeds],
                dtype=torch.float64,
            )
            std = float(diffs.std()) if len(seeds) > 1 else 0.0
            wins = int((diffs < 0).sum())
            print(
                f"| {other} | {key.split('_')[0]} | {float(diffs.mean()):+.5f} ± {std:.5f} "
                f"({statistics.median(diffs.tolist()):+.5f}) | {wins} of {len(seeds)} seeds | "
                f"{wilcoxon_p(diffs)} | {paired_t(diffs)} |"
            )


def wilcoxon_p(diffs: torch.Tensor) -> str:
    """Two-sided p of the Wilcoxon signed-rank test of the paired differences against 0
    (``—`` with fewer than two non-zero differences)."""
    values = diffs.double().numpy()
    if int((values != 0).sum()) < 2:
        return "—"
    return f"{stats.wilcoxon(values).pvalue:.3f}"


def paired_t(diffs: torch.Tensor) -> str:
    """``t (p)`` of a two-sided one-sample t-test of the paired differences against 0, or
    ``—`` when it is undefined (one seed, or differences without spread)."""
    count = diffs.numel()
    std = float(diffs.std()) if count > 1 else 0.0
    if std == 0.0:
        return "—"
    t = float(diffs.mean()) / (std / count**0.5)
    return f"{t:+.2f} ({2 * stats.t.sf(abs(t), count - 1):.3f})"


def _by_model(rows: list[dict], model: str) -> list[dict]:
    """The rows of one model, ordered by seed."""
    return sorted((row for row in rows if row["model"] == model), key=lambda row: row["seed"])


def print_sweep(sweep: dict[float, list[dict]]) -> None:
    """Per breaking level: each model's test RMSE (mean ± std over the plot seeds), the
    relaxed model's learned relaxation, and the paired relaxed − strict differences."""
    print("\n| breaking s | seeds | learned Σ s² (relaxed) | "
          + " | ".join(f"{m} future / domain" for m in MODELS)
          + " | relaxed − equivariant, future / domain (lower in) |")  # fmt: skip
    print("|---|---|---|" + "---|" * len(MODELS) + "---|")
    for level in sorted(sweep):
        relaxed = _by_model(sweep[level], "relaxed")
        relaxation = summary(relaxed, "relaxation")
        cells = []
        for model in MODELS:
            rows = _by_model(sweep[level], model)
            if not rows:
                cells.append("—")
                continue
            future, domain = summary(rows, "future_rmse"), summary(rows, "domain_rmse")
            cells.append(f"{future[0]:.5f} ± {future[1]:.5f} / {domain[0]:.5f} ± {domain[1]:.5f}")
        strict = {row["seed"]: row for row in _by_model(sweep[level], "equivariant")}
        paired = [row for row in relaxed if row["seed"] in strict]
        versus = "—"
        if paired:
            parts = []
            for key in ("future_rmse", "domain_rmse"):
                diffs = torch.tensor(
                    [row[key] - strict[row["seed"]][key] for row in paired], dtype=torch.float64
                )
                parts.append(f"{float(diffs.mean()):+.5f} ({int((diffs < 0).sum())}/{len(paired)})")
            versus = " / ".join(parts)
        print(
            f"| {level:g} | {len(relaxed)} | {relaxation[0]:.3g} ± {relaxation[1]:.2g} | "
            + " | ".join(cells)
            + f" | {versus} |"
        )


def plot(levels: dict[float, list[dict]], path: Path) -> None:
    """Learned relaxation ``Σ s²`` of the relaxed model (one line per seed) and every
    model's domain test RMSE (mean ± std over seeds) against the breaking of the data."""
    breaking = sorted(levels)
    figure = Figure(figsize=(9, 3.6))
    FigureCanvasAgg(figure)
    left, right = figure.subplots(1, 2)
    per_level = [_by_model(levels[b], "relaxed") for b in breaking]
    for index in range(min(len(rows) for rows in per_level)):
        row = [rows[index] for rows in per_level]
        left.plot(breaking, [r["relaxation"] for r in row], "o-", alpha=0.6,
                  label=f"seed {row[0]['seed']}")  # fmt: skip
    mean = [summary(rows, "relaxation")[0] for rows in per_level]
    left.plot(breaking, mean, "k-", linewidth=2.5, label="mean")
    left.set_yscale("log")
    left.set_xlabel("symmetry breaking s of the data")
    left.set_ylabel("learned relaxation  Σ_layers strength²")
    left.set_title("relaxed model: learned relaxation")
    left.legend(fontsize=6, ncol=2)
    for model in MODELS:
        if any(not _by_model(levels[b], model) for b in breaking):
            continue
        mean, std = zip(*(summary(_by_model(levels[b], model), "domain_rmse") for b in breaking))
        right.errorbar(breaking, mean, yerr=std, fmt="o-", label=model, capsize=3)
    right.set_xlabel("symmetry breaking s of the data")
    right.set_ylabel("domain rollout RMSE (mean ± std)")
    right.set_title("domain test set")
    right.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def _models(text: str) -> tuple[str, ...]:
    """``--models``: a comma-separated subset of :data:`MODELS`, kept in that order."""
    names = {name.strip() for name in text.split(",") if name.strip()}
    if not names or names - set(MODELS):
        raise argparse.ArgumentTypeError(
            f"expected a comma-separated subset of {','.join(MODELS)}, got {text!r}"
        )
    return tuple(m for m in MODELS if m in names)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The benchmark's options (``--quick`` replaces the sizes by a smoke test's)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a smoke test")
    parser.add_argument("--breaking", type=float, default=0.5, help="breaking of the table")
    parser.add_argument(
        "--levels", default="0,0.25,0.5,0.75,1", help="breaking levels of the sweep and plot"
    )
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
    parser.add_argument(
        "--field-scale",
        default="per-field",
        choices=("per-field", "shared"),
        help="the fluid job's --field-scale (shared: the normalisation of the session 11-12 "
        "velocity+density runs)",
    )
    parser.add_argument(
        "--scale-frames",
        default="past",
        choices=("train", "past"),
        help="the fluid job's --scale-frames: the RMS over the training simulations' whole "
        "past (past, the normalisation of the results in RESULTS.md; with --val-split random "
        "the validation windows share frames with training anyway) or over the frames the "
        "training windows read (train)",
    )
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument(
        "--grad-clip", type=float, default=None,
        help="clip every model's global gradient norm to this value (default: no clipping)",
    )  # fmt: skip
    parser.add_argument(  # picked on validation RMSE among 0.001, 0.01, 0.1, 1 (seed 0)
        "--relaxation-weight", type=float, default=0.01
    )
    parser.add_argument(
        "--free-input",
        default="position",
        choices=("position", "radial", "constant"),
        help="what the relaxed layers' non-equivariant pathway depends on",
    )
    parser.add_argument(
        "--val-split", default="random", choices=("random", "time"),
        help="validation windows: random 10 %% or each training simulation's latest 10 %%",
    )  # fmt: skip
    parser.add_argument(
        "--relaxation", default="kernel", choices=("kernel", "input"),
        help="how the relaxed model breaks the symmetry: non-equivariant kernel pathways "
        "or a learned global input of --breaking-irreps",
    )  # fmt: skip
    parser.add_argument(
        "--breaking-irreps", default="1x1o",
        help="irreps of the relaxed model's learned symmetry-breaking input (--relaxation input)",
    )  # fmt: skip
    parser.add_argument(
        "--free-hidden", type=int, default=8,
        help="width of the relaxed layers' non-equivariant features (position, radial)",
    )  # fmt: skip
    parser.add_argument(
        "--features", default="irreps", choices=("irreps", "regular"),
        help="hidden features of the steerable models (gated irreps or regular representations)",
    )  # fmt: skip
    parser.add_argument("--group", default="C4", help="group of the steerable models")
    parser.add_argument("--radius", type=int, default=1, help="stencil radius of every model")
    parser.add_argument(
        "--kernel-hidden", default=None, help="hidden irreps of the steerable kernel MLPs"
    )
    parser.add_argument(
        "--relaxation-lr-scale", type=float, default=1.0,
        help="learning rate of the relaxed layers' non-equivariant pathway, times --lr",
    )  # fmt: skip
    parser.add_argument(
        "--relaxation-warmup", type=int, default=0,
        help="epochs during which the relaxed model's non-equivariant pathway stays frozen",
    )  # fmt: skip
    parser.add_argument(
        "--models", type=_models, default=MODELS,
        help="models to train, comma-separated (default conv,equivariant,relaxed)",
    )  # fmt: skip
    parser.add_argument("--seeds", default="0,1,2,3,4", help="seeds of the table (mean ± std)")
    parser.add_argument("--plot-seeds", default="0", help="seeds of each plotted level")
    parser.add_argument("--tag", default=None, help="suffix of the output files and run folders")
    parser.add_argument(
        "--merge", nargs="+", type=Path, default=None, metavar="JSON",
        help="report the runs of these results files together (trains nothing)",
    )  # fmt: skip
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
    if args.merge:
        runs, sweep, breaking = merge(args.merge)
        seeds = sorted({seed for model, level, seed in runs if level == breaking})
        print(f"# relaxed equivariance on smoke plumes: {len(seeds)} seeds merged from "
              f"{', '.join(str(p) for p in args.merge)}\n")  # fmt: skip
        report(runs, sweep, breaking, seeds, args.tag)
        return
    levels = [float(v) for v in args.levels.split(",")]
    seeds = [int(v) for v in args.seeds.split(",")]
    plot_seeds = [int(v) for v in args.plot_seeds.split(",")]
    OUT.mkdir(parents=True, exist_ok=True)
    print(f"# relaxed equivariance on smoke plumes\n\n{machine_line()}\n")
    print(f"breaking {args.breaking}, {args.grid}x{args.grid} grid, {args.epochs} epochs, "
          f"batch {args.batch_size}, lr {args.lr}, horizon {args.horizon}, "
          f"relaxation weight {args.relaxation_weight}, seeds {seeds}\n")  # fmt: skip
    start = time.perf_counter()
    done = Finished(OUT / f"relaxed{args.tag}.partial.json", args)
    runs = {(m, args.breaking, seed): done.get(m, args.breaking, seed)
            for m in args.models for seed in seeds}  # fmt: skip
    sweep: dict[float, list[dict]] = {}
    for level in levels:
        sweep[level] = [
            runs.get((model, level, seed)) or done.get(model, level, seed)
            for model in args.models
            for seed in plot_seeds
        ]
    report(runs, sweep, args.breaking, seeds, args.tag)
    result = {
        "args": vars(args),
        "table": list(runs.values()),
        "sweep": {str(k): v for k, v in sweep.items()},
    }
    (OUT / f"relaxed{args.tag}.json").write_text(json.dumps(result, indent=2))
    done.path.unlink()
    print(f"\nwall time {time.perf_counter() - start:.0f} s")


#: Arguments that choose which runs a file holds, not how they ran (merged files may differ).
RUN_SELECTION = frozenset({"seeds", "models", "tag", "merge", "plot_seeds", "levels"})


def merge(paths: list[Path]) -> tuple[dict[tuple, dict], dict[float, list[dict]], float]:
    """The runs, sweep and table breaking of several results files of the same settings."""
    runs: dict[tuple, dict] = {}
    sweep: dict[float, dict[tuple[str, int], dict]] = {}
    breaking, first, settings = None, None, None
    for path in paths:
        result = json.loads(Path(path).read_text())
        these = {k: v for k, v in result["args"].items() if k not in RUN_SELECTION}
        if settings is not None and these != settings:
            differ = sorted(k for k in these.keys() | settings.keys()
                            if these.get(k) != settings.get(k))  # fmt: skip
            raise ValueError(
                f"--merge: {path} was run with other settings than {first}: "
                + ", ".join(f"{k} {these.get(k)!r} vs {settings.get(k)!r}" for k in differ)
            )
        first, settings = first or path, these
        breaking = result["args"]["breaking"]
        for row in result["table"]:
            key = (row["model"], row["breaking"], row["seed"])
            if key in runs:
                raise ValueError(f"--merge: {path} repeats the run {key}")
            runs[key] = row
        for level, rows in result["sweep"].items():
            sweep.setdefault(float(level), {}).update(
                {(row["model"], row["seed"]): row for row in rows}
            )
    merged = {level: [rows[key] for key in sorted(rows)] for level, rows in sweep.items()}
    return runs, merged, breaking


def report(
    runs: dict[tuple, dict],
    sweep: dict[float, list[dict]],
    breaking: float,
    seeds: list[int],
    tag: str,
) -> None:
    """Print the table, the paired differences and the sweep; plot the sweep. Models without
    a run for every seed of the table are left out."""
    models = [m for m in MODELS if all((m, breaking, seed) in runs for seed in seeds)]
    print("| model | parameters | val RMSE | future RMSE | domain RMSE | learned Σ s² | wall (s) |")
    print("|---|---|---|---|---|---|---|")
    for model in models:
        rows = [runs[model, breaking, seed] for seed in seeds]
        future, domain = summary(rows, "future_rmse"), summary(rows, "domain_rmse")
        val = summary(rows, "val_rmse")
        print(
            f"| {model} | {rows[0]['parameters']} | {val[0]:.5f} ± {val[1]:.5f} | "
            f"{future[0]:.5f} ± {future[1]:.5f} | "
            f"{domain[0]:.5f} ± {domain[1]:.5f} | {summary(rows, 'relaxation')[0]:.3g} | "
            f"{summary(rows, 'wall_s')[0]:.0f} |"
        )
    print_per_field([[runs[m, breaking, seed] for seed in seeds] for m in models])
    print_paired(runs, breaking, seeds, models)
    print_sweep(sweep)
    if all(_by_model(rows, "relaxed") for rows in sweep.values()):
        figure = OUT / f"relaxation_vs_breaking{tag}.png"
        plot(sweep, figure)
        print(f"\nplot {figure}")


if __name__ == "__main__":
    main()
