"""``benchmarks/relaxed.py``'s paired comparison of the relaxed model against the others."""

from __future__ import annotations

import json

import pytest


def test_paired_differences_and_win_counts(load_script, capsys):
    bench = load_script("benchmarks/relaxed.py")
    rmse = {  # (future, domain) per model and seed
        "conv": [(3.0, 6.0), (3.0, 6.0)],
        "equivariant": [(2.0, 5.0), (1.0, 4.0)],
        "relaxed": [(1.5, 4.0), (1.5, 5.0)],
    }
    runs = {
        (model, 0.5, seed): {"future_rmse": future, "domain_rmse": domain}
        for model, rows in rmse.items()
        for seed, (future, domain) in enumerate(rows)
    }
    bench.print_paired(runs, 0.5, [0, 1])
    lines = capsys.readouterr().out.splitlines()
    assert "| 0 | 3.00000 / 6.00000 | 2.00000 / 5.00000 | 1.50000 / 4.00000 |" in lines
    # medians of two values are their means; the exact Wilcoxon test of two differences
    # gives p = 1 for one of each sign and p = 0.5 when both have the same sign
    assert ("| equivariant | future | +0.00000 ± 0.70711 (+0.00000) | 1 of 2 seeds | 1.000 | "
            "+0.00 (1.000) |") in lines  # fmt: skip
    assert ("| equivariant | domain | +0.00000 ± 1.41421 (+0.00000) | 1 of 2 seeds | 1.000 | "
            "+0.00 (1.000) |") in lines  # fmt: skip
    assert "| conv | future | -1.50000 ± 0.00000 (-1.50000) | 2 of 2 seeds | 0.500 | — |" in lines
    # t = -1.5 / (0.70711 / sqrt 2) = -3, two-sided p with 1 degree of freedom = 0.2048
    assert ("| conv | domain | -1.50000 ± 0.70711 (-1.50000) | 2 of 2 seeds | 0.500 | "
            "-3.00 (0.205) |") in lines  # fmt: skip


def _result(breaking: float, seeds: list[int], sweep_seeds: list[int]) -> dict:
    def row(model, level, seed):
        return {"model": model, "breaking": level, "seed": seed, "future_rmse": 1.0 + seed,
                "domain_rmse": 2.0 + seed, "val_rmse": 0.5, "parameters": 10,
                "relaxation": 0.1 * seed, "wall_s": 1.0}  # fmt: skip

    return {
        "args": {"breaking": breaking},
        "table": [row(m, breaking, s) for m in ("conv", "equivariant", "relaxed") for s in seeds],
        "sweep": {
            str(level): [row("relaxed", level, s) for s in sweep_seeds] for level in (0, 0.5)
        },
    }


def test_merge_joins_seeds_of_separate_runs(load_script, tmp_path):
    bench = load_script("benchmarks/relaxed.py")
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    first.write_text(json.dumps(_result(0.5, [0, 1], [0])))
    second.write_text(json.dumps(_result(0.5, [2], [2])))
    runs, sweep, breaking = bench.merge([first, second])
    assert breaking == 0.5 and len(runs) == 9
    assert {seed for _, _, seed in runs} == {0, 1, 2}
    assert [row["seed"] for row in sweep[0.0]] == [0, 2]

    second.write_text(json.dumps(_result(0.5, [1], [1])))
    with pytest.raises(ValueError, match="repeats the run"):
        bench.merge([first, second])
    second.write_text(json.dumps(_result(0.25, [2], [2])))
    with pytest.raises(ValueError, match="was run with other settings .*: breaking 0.25 vs 0.5"):
        bench.merge([first, second])
    other = _result(0.5, [2], [2])
    other["args"]["grad_clip"] = 1.0  # pooled runs must share every setting but the seeds
    second.write_text(json.dumps(other))
    with pytest.raises(ValueError, match="grad_clip 1.0 vs None"):
        bench.merge([first, second])
    other["args"] = {**_result(0.5, [2], [2])["args"], "seeds": [2], "tag": "_b"}
    second.write_text(json.dumps(other))
    assert len(bench.merge([first, second])[0]) == 9


def test_sweep_table_pairs_relaxed_with_strict_per_level(load_script, capsys):
    bench = load_script("benchmarks/relaxed.py")
    rows = [
        {"model": model, "seed": seed, "future_rmse": future, "domain_rmse": domain,
         "relaxation": 0.5 if model == "relaxed" else 0.0}
        for model, seed, future, domain in [
            ("conv", 0, 3.0, 6.0), ("conv", 1, 3.0, 6.0),
            ("equivariant", 0, 2.0, 5.0), ("equivariant", 1, 1.0, 4.0),
            ("relaxed", 1, 1.5, 3.0), ("relaxed", 0, 1.0, 6.0),
        ]
    ]  # fmt: skip
    bench.print_sweep({0.5: rows})
    line = capsys.readouterr().out.splitlines()[-1]
    cells = [cell.strip() for cell in line.strip("|").split("|")]
    assert cells[:3] == ["0.5", "2", "0.5 ± 0"]
    assert cells[5] == "1.25000 ± 0.35355 / 4.50000 ± 2.12132"  # relaxed, seeds 0 and 1
    # relaxed − equivariant: future (-1.0, +0.5) -> -0.25, lower in 1 of 2; domain (+1, -1)
    assert cells[6] == "-0.25000 (1/2) / +0.00000 (1/2)"


def test_finished_runs_are_kept_and_reused_after_an_interruption(load_script, tmp_path):
    bench = load_script("benchmarks/relaxed.py")
    trained = []

    def fake_train(model, breaking, seed, args):
        trained.append((model, breaking, seed))
        return {"model": model, "breaking": breaking, "seed": seed, "future_rmse": 1.0}

    bench.train = fake_train
    path = tmp_path / "relaxed_x.partial.json"
    args = bench.parse_args(["--tag", "_x"])
    first = bench.Finished(path, args)
    first.get("conv", 0.5, 0)
    first.get("relaxed", 0.5, 0)
    assert trained == [("conv", 0.5, 0), ("relaxed", 0.5, 0)] and path.exists()

    again = bench.Finished(path, bench.parse_args(["--tag", "_x", "--seeds", "7"]))
    assert again.get("relaxed", 0.5, 0)["future_rmse"] == 1.0  # read back, not retrained
    again.get("conv", 0.5, 1)
    assert trained[-1] == ("conv", 0.5, 1) and len(trained) == 3

    other = bench.Finished(path, bench.parse_args(["--tag", "_x", "--epochs", "5"]))
    other.get("conv", 0.5, 0)  # other options: nothing reused
    assert trained[-1] == ("conv", 0.5, 0) and len(trained) == 4


def test_runs_of_one_model_are_reported_and_plotted(load_script, tmp_path, capsys):
    bench = load_script("benchmarks/relaxed.py")
    bench.OUT = tmp_path
    result = _result(0.5, [0, 1], [0, 1])
    result["table"] = [row for row in result["table"] if row["model"] == "relaxed"]
    for row in result["table"]:  # as --fields velocity+density runs hold them
        row["per_field"] = {"future_rmse_velocity": 1.0}
    path = tmp_path / "relaxed_only.json"
    path.write_text(json.dumps(result))
    runs, sweep, breaking = bench.merge([path])
    bench.report(runs, sweep, breaking, [0, 1], "_only")
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("| relaxed | 10 |") for line in lines)
    assert not any(line.startswith(("| conv |", "| equivariant |")) for line in lines)
    assert not any(line.startswith("| relaxed minus |") for line in lines)
    assert "| relaxed | 1.00000 ± 0.00000 |" in lines  # the per-field table
    assert (tmp_path / "relaxation_vs_breaking_only.png").stat().st_size > 0

    assert bench.parse_args(["--models", "relaxed,conv"]).models == ("conv", "relaxed")
    assert bench.parse_args([]).models == bench.MODELS
    with pytest.raises(SystemExit):
        bench.parse_args(["--models", "cnn"])


def test_gradient_clipping_reaches_every_model(load_script):
    bench = load_script("benchmarks/relaxed.py")
    clipped = bench.parse_args(["--grad-clip", "1.0"])
    for model in bench.MODELS:
        flags = bench.job_flags(clipped, model, 0.5, 0)
        assert flags[flags.index("--grad-clip") + 1] == "1.0"
    assert "--grad-clip" not in bench.job_flags(bench.parse_args([]), "relaxed", 0.5, 0)


def test_only_the_relaxed_model_gets_the_relaxed_settings(load_script):
    """The fluid job refuses relaxed-only settings for the strict models."""
    bench = load_script("benchmarks/relaxed.py")
    args = bench.parse_args([])
    assert "--relaxation-weight" in bench.job_flags(args, "relaxed", 0.5, 0)
    for model in set(bench.MODELS) - {"relaxed"}:
        flags = bench.job_flags(args, model, 0.5, 0)
        assert not {"--relaxation-weight", "--free-input", "--breaking"} & set(flags)


def test_per_field_table_only_when_every_run_has_per_field_rmse(load_script, capsys):
    """``--fields velocity+density`` runs print each field's RMSE per model; velocity-only
    runs (no per-field metrics) and rows saved before the metrics existed print none."""
    bench = load_script("benchmarks/relaxed.py")

    def row(model, velocity, density):
        fields = {"future_rmse_velocity": velocity, "future_rmse_density": density}
        return {"model": model, "per_field": fields}

    bench.print_per_field(
        [[row("conv", 1.0, 10.0), row("conv", 3.0, 30.0)], [row("relaxed", 2.0, 5.0)]]
    )
    lines = capsys.readouterr().out.splitlines()
    assert "| model | future_rmse_density | future_rmse_velocity |" in lines
    assert "| conv | 20.00000 ± 14.14214 | 2.00000 ± 1.41421 |" in lines
    assert "| relaxed | 5.00000 ± 0.00000 | 2.00000 ± 0.00000 |" in lines
    bench.print_per_field([[{"model": "conv", "per_field": {}}]])
    bench.print_per_field([[row("conv", 1.0, 2.0), {"model": "conv"}]])
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("free_input", ["position", "constant"])
def test_learned_strengths_are_the_layers_own(load_script, tmp_path, free_input):
    """The benchmark reads each relaxed layer's strength from the rebuilt model: ‖V‖/√C_out
    for ``position``; for ``constant`` (invariant free features) only the part of ``V``
    outside the equivariant maps, so less than ‖V‖/√C_out."""
    import torch

    from symgraph.cli import main as symgraph_main

    bench = load_script("benchmarks/relaxed.py")
    run = tmp_path / "run"
    flags = ["--grid", "8", "--simulations", "1", "--domain-simulations", "1", "--frames", "10",
             "--future-frames", "3", "--frames-in", "1", "--horizon", "1", "--width", "4",
             "--layers", "2", "--epochs", "1", "--lr", "0.05", "--no-progress",
             "--data-root", str(tmp_path / "data"), "--free-input", free_input]  # fmt: skip
    assert symgraph_main(["train", "fluid", "--model", "relaxed", "--out", str(run), *flags]) == 0
    strengths = bench.learned_strengths(run)
    state = torch.load(run / "best.pt", map_location="cpu", weights_only=False)["model"]
    whole = [
        float(v.norm() / v.shape[0] ** 0.5) for k, v in state.items() if k.endswith("head.free")
    ]
    assert len(strengths) == len(whole) == 2 and min(whole) > 0
    if free_input == "position":
        assert strengths == pytest.approx(whole, rel=1e-6)
    else:
        assert all(0 < s < w for s, w in zip(strengths, whole))


def test_the_scale_frames_reach_every_run_and_its_recorded_options(load_script):
    """The job's --scale-frames is passed on (default past: the normalisation of the recorded
    results, whatever the job's default), and recorded with the options of the runs."""
    bench = load_script("benchmarks/relaxed.py")
    for argv, expected in (([], "past"), (["--scale-frames", "train"], "train")):
        args = bench.parse_args(argv)
        assert args.scale_frames == expected
        for model in bench.MODELS:
            flags = bench.job_flags(args, model, 0.5, 0)
            assert flags[flags.index("--scale-frames") + 1] == expected


@pytest.mark.parametrize("model", ["relaxed", "conv"])
def test_train_keeps_each_fields_rmse_and_the_relaxed_layers_strengths(
    load_script, tmp_path, monkeypatch, model
):
    """A run's row holds both fields' own RMSEs, and for the relaxed model the strengths its
    layers report (their squares summed: the relaxation); a strict model has none."""
    from pathlib import Path

    bench = load_script("benchmarks/relaxed.py")
    monkeypatch.setattr(bench, "OUT", tmp_path, raising=False)
    metrics = {"future_rmse": 1.0, "domain_rmse": 2.0, "future_rmse_h1": 1.0,
               "domain_rmse_h1": 2.0, "future_rmse_velocity": 0.5, "future_rmse_density": 3.0,
               "domain_rmse_velocity": 0.7, "domain_rmse_density": 4.0}  # fmt: skip

    def fake_main(argv):
        run = Path(argv[argv.index("--out") + 1])
        run.mkdir(parents=True)
        (run / "test.json").write_text(json.dumps({"metrics": metrics, "best_epoch": 1}))
        (run / "metrics.csv").write_text("epoch,val_rmse\n1,0.25\n")
        (run / "config.json").write_text(json.dumps({"num_parameters": 10}))
        return 0

    monkeypatch.setattr(bench, "symgraph_main", fake_main)
    monkeypatch.setattr(bench, "learned_strengths", lambda run: [0.5, 2.0])
    args = bench.parse_args(["--quick", "--fields", "velocity+density"])
    args.horizon = 1  # the metrics above
    row = bench.train(model, 0.5, 0, args)
    assert row["per_field"] == {k: v for k, v in metrics.items() if k.endswith(("y", "d"))}
    assert row["val_rmse"] == 0.25
    if model == "relaxed":
        assert row["strengths"] == [0.5, 2.0] and row["relaxation"] == pytest.approx(4.25)
    else:
        assert row["strengths"] == [] and row["relaxation"] == 0


def test_learned_strengths_read_the_learned_breaking_input(load_script, tmp_path):
    """``--relaxation input``: no free head, one strength, that of the learned input."""
    from symgraph.cli import main as symgraph_main

    bench = load_script("benchmarks/relaxed.py")
    run = tmp_path / "run"
    flags = ["--grid", "8", "--simulations", "1", "--domain-simulations", "1", "--frames", "10",
             "--future-frames", "3", "--frames-in", "1", "--horizon", "1", "--width", "4",
             "--layers", "2", "--epochs", "1", "--lr", "0.05", "--no-progress",
             "--data-root", str(tmp_path / "data"), "--relaxation", "input"]  # fmt: skip
    assert symgraph_main(["train", "fluid", "--model", "relaxed", "--out", str(run), *flags]) == 0
    assert len(bench.learned_strengths(run)) == 1
