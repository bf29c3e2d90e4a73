"""The README's `make demo`: train SteerableMoleculeNet on a QM9 subset and compare its test
MAE with the MAE of predicting the training mean.

Run:  python examples/qm9_demo.py [--quick] [--out runs/demo] [extra `symgraph train qm9` flags]

Run again with the same folder, it resumes the run there (finishing it if it was stopped,
else evaluating it again); other settings than the run's are refused (use another --out).

The data come from the `qm9pack` package (the full QM9 as CSV, installed from PyPI by
`make demo`); `--quick` uses 200 molecules (all of a 200-molecule file, else a seeded
sample) of a local qm9pack-format CSV instead (`--csv FILE`) and trains for seconds (the
tests run it that way).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from symgraph.cli import main as symgraph_main
from symgraph.data.qm9 import REPORT_FACTOR, REPORT_UNITS, target_index


def mean_predictor_mae(dataset, split: dict, target: str) -> float:
    """MAE on the test split of predicting the training mean, in reporting units."""
    index = target_index(target)
    y = torch.stack([dataset[i].y[0, index] for i in range(len(dataset))]).double()
    train_mean = y[torch.tensor(split["train"])].mean()
    test = y[torch.tensor(split["test"])]
    return float((test - train_mean).abs().mean()) * REPORT_FACTOR[target]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="seconds-long run on a small CSV")
    parser.add_argument("--csv", default=None, help="qm9pack-format CSV for --quick")
    parser.add_argument("--out", default="runs/demo", help="run folder (default runs/demo)")
    parser.add_argument("--target", default="homo")
    args, extra = parser.parse_known_args(argv)
    if args.csv is not None and not args.quick:
        parser.error("--csv: only --quick reads a CSV (the full demo uses qm9pack)")
    if args.quick:
        if args.csv is None:
            parser.error("--quick needs --csv FILE (e.g. ../shared/data/qm9/qm9pack_first200.csv)")
        data = ["--source", "csv", "--csv", args.csv, "--subset-size", "200"]
        data += ["--root", str(Path(args.out) / "data")]
        schedule = ["--epochs", "2", "--batch-size", "16", "--layers", "1"]
    else:
        data = ["--source", "qm9pack", "--subset-size", "6000", "--root", "data/qm9-demo"]
        schedule = ["--epochs", "6", "--batch-size", "32", "--lr", "5e-3", "--scheduler", "cosine"]
    command = ["train", "qm9", "--target", args.target, "--out", args.out, *data, *schedule]
    if (Path(args.out) / "checkpoint.pt").exists() and "--resume" not in extra:
        command.append("--resume")
    status = symgraph_main([*command, *extra])
    if status:  # the error is printed; never report another run's files
        raise SystemExit(status)

    run = Path(args.out)
    split = json.loads((run / "split.json").read_text())
    test = json.loads((run / "test.json").read_text())
    from symgraph.train.job_qm9 import build_qm9_dataset

    config = json.loads((run / "config.json").read_text())
    dataset = build_qm9_dataset(argparse.Namespace(**config["args"]))
    baseline = mean_predictor_mae(dataset, split, args.target)
    model_mae = test["metrics"]["mae"]
    unit = REPORT_UNITS[args.target]
    print(
        f"\nQM9 {args.target}: test MAE {model_mae:.1f} {unit}  |  "
        f"mean predictor {baseline:.1f} {unit}  |  ratio {model_mae / baseline:.2f}"
    )
    print(f"learning curve: {run / 'curve.png'}   metrics: {run / 'metrics.csv'}")
    return {"mae": model_mae, "baseline": baseline}


if __name__ == "__main__":
    main()
