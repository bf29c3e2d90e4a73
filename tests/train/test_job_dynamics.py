"""``symgraph train dynamics``: quick runs, tailored test metrics, evaluate, resume, errors."""

from __future__ import annotations

import json
import math

import pytest
import torch

from symgraph.cli import main
from symgraph.train.job_dynamics import parse_noether, parse_rates

TINY = ["--molecules", "CH3OH", "--trajectories", "3", "--split", "1", "1", "1", "--frames",
        "12", "--horizon", "5", "--hidden", "8", "--batch-size", "8", "--no-progress"]  # fmt: skip


def run(capsys, argv):
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_quick_run_reports_untailored_and_tailored_rollouts(tmp_path, capsys):
    out, cache = tmp_path / "run", tmp_path / "cache"
    args = ["train", "dynamics", *TINY, "--epochs", "1", "--out", str(out), "--data-root",
            str(cache), "--noether", "momentum,angular", "--tailor-steps", "2"]  # fmt: skip
    trained = run(capsys, args)
    metrics = trained["metrics"]
    for name in ("one_step_mse", "rollout_rmse", "energy_drift", "noether_loss"):
        assert math.isfinite(metrics[name]) and math.isfinite(metrics[f"{name}_tailored"])
    assert trained["units"]["rollout_rmse_tailored"] == "Å"
    assert trained["units"]["energy_drift"] == "eV/atom"
    # the line search never raises the inner Noether loss (same quantities, same horizon)
    assert metrics["noether_loss_tailored"] <= metrics["noether_loss"] * (1 + 1e-4) + 1e-12
    assert json.loads((out / "test.json").read_text())["metrics"] == metrics
    split = json.loads((out / "split.json").read_text())
    assert sorted(split["train"] + split["val"] + split["test"]) == [0, 1, 2]
    header = (out / "metrics.csv").read_text().splitlines()[0]
    assert "val_rollout_rmse" in header and "tailored" not in header  # validation: untailored
    evaluated = run(capsys, ["evaluate", str(out)])
    assert evaluated["metrics"] == pytest.approx(metrics, rel=1e-5, abs=1e-9)
    assert "rollout_rmse_tailored" in json.loads((out / "evaluation.json").read_text())["metrics"]


def test_learned_quantity_run_resumes(tmp_path, capsys):
    out, cache = tmp_path / "run", tmp_path / "cache"
    args = ["train", "dynamics", *TINY, "--out", str(out), "--data-root", str(cache),
            "--noether", "learned", "--tailor-steps", "1", "--tailor-lr", "1e-3"]  # fmt: skip
    run(capsys, [*args, "--epochs", "1"])
    first_epoch = (out / "metrics.csv").read_text().splitlines()
    cached = sorted(p.name for p in cache.iterdir())
    assert len(cached) == 3
    config = json.loads((out / "config.json").read_text())
    assert config["model"] == "MetaTailoring" and config["args"]["noether"] == "learned"
    resumed = run(capsys, [*args, "--epochs", "2", "--resume"])
    rows = (out / "metrics.csv").read_text().splitlines()
    assert len(rows) == 3 and rows[:2] == first_epoch  # epoch 1 carried over, not retrained
    assert math.isfinite(resumed["metrics"]["rollout_rmse_tailored"])
    assert sorted(p.name for p in cache.iterdir()) == cached  # read back, not regenerated


def test_md17_file_without_energy_model(tmp_path, capsys, shared_data):
    path = shared_data / "md" / "md17" / "md17_ethanol_dft_first2000.npz"
    common = ["train", "dynamics", "--data", "md17", "--md17-path", str(path), "--frames",
              "40", "--hidden", "8", "--no-progress"]  # fmt: skip
    quick = ["--epochs", "1", "--horizon", "4", "--train-horizon", "2", "--subset", "32"]
    metrics = run(capsys, [*common, *quick, "--out", str(tmp_path / "run")])["metrics"]
    assert math.isfinite(metrics["rollout_rmse"]) and "energy_drift" not in metrics
    assert main([*common, "--noether", "energy", "--out", str(tmp_path / "other")]) == 2
    assert "'energy' needs an energy model" in capsys.readouterr().err


def test_unknown_noether_name_lists_the_valid_ones(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "dynamics", "--noether", "momentum,spin", "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "'spin'" in err and "momentum, angular, energy, learned" in err
    with pytest.raises(ValueError, match="valid names: momentum, angular, energy, learned"):
        parse_noether("momentum,Energy")
    assert parse_noether(" angular,momentum,angular ") == ("angular", "momentum")
    assert parse_rates("1e-3") == 1e-3 and parse_rates("1e-4,1e-2") == (1e-4, 1e-2)
    with pytest.raises(ValueError, match="--tailor-lr"):
        parse_rates("0,1e-3")


def test_tailoring_needs_quantities(tmp_path, capsys):
    assert main(["train", "dynamics", "--tailor-steps", "2", "--out", str(tmp_path)]) == 2
    assert "--tailor-steps: tailoring needs conserved" in capsys.readouterr().err


def test_subset_records_the_trajectories_it_keeps(tmp_path):
    """``split.json`` of the dynamics job lists trajectory ids, not window indices: after
    ``--subset`` it must list the trajectories of the windows kept (it kept the first n
    ids, most of them not trained on)."""
    from symgraph.cli import build_parser
    from symgraph.train.jobs import get_job, load_jobs, take_subset

    six = ["--trajectories", "6", "--split", "4", "1", "1"]
    argv = ["train", "dynamics", *TINY[:2], *six, *TINY[8:], "--out", str(tmp_path)]
    args = build_parser(load_jobs()).parse_args(argv)
    spec = get_job("dynamics")(args)
    assert len(spec.split_indices()["train"]) > 1  # several trajectories before the cut
    cut = take_subset(spec, 3)
    for name in ("train", "val", "test"):
        dataset = getattr(cut, name)
        kept = list(dict.fromkeys(int(dataset[i].trajectory) for i in range(len(dataset))))
        assert cut.split_indices()[name] == kept


def test_negative_noether_weight_is_refused(tmp_path):
    from symgraph.train.job_dynamics import ConservationLoss

    with pytest.raises(SystemExit):
        main(["train", "dynamics", *TINY, "--noether", "momentum", "--noether-weight", "-1",
              "--out", str(tmp_path / "run")])  # fmt: skip
    assert not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match="--noether-weight: expected a finite weight >= 0"):
        ConservationLoss(torch.nn.Identity(), -1.0, 4)
