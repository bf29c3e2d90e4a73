"""``benchmarks/pointcloud.py``: seeds, pooled results and outputs (tiny sizes, no timings)."""

from __future__ import annotations

import json

import pytest
import torch


@pytest.fixture(scope="module")
def bench(load_script):
    return load_script("benchmarks/pointcloud.py")


def test_two_seeds_write_mean_std_tables_and_plot(bench, tmp_path):
    argv = ["--quick", "--seeds", "2", "--num-shapes", "24", "--num-test-shapes", "12"]
    argv += ["--epochs", "1", "--groups", "SO2", "--out", str(tmp_path)]
    results = bench.main(argv)
    assert [r["name"] for r in results] == ["SO2", bench.BASELINE]
    for result in results:
        assert [run["seed"] for run in result["runs"]] == [0, 1]
        for test in bench.TESTS:
            accuracies = [run["accuracy"][test] for run in result["runs"]]
            assert result["accuracy"][test] == pytest.approx(sum(accuracies) / 2)
            assert result["accuracy_std"][test] == pytest.approx(
                torch.tensor(accuracies).std().item()
            )
            assert sum(map(sum, result["confusion"][test])) == 2 * 12  # pooled over seeds
    saved = json.loads((tmp_path / "pointcloud_quick.json").read_text())
    assert saved[0]["runs"][1]["accuracy"] == results[0]["runs"][1]["accuracy"]
    table = (tmp_path / "pointcloud_quick.md").read_text()
    assert "Seeds [0, 1]" in table and " ± " in table
    assert "| SO2 | " in table and "helix_left" in table  # per-class accuracies on (b)
    assert (tmp_path / "pointcloud_confusion_quick.png").stat().st_size > 0


def test_quick_defaults_to_one_seed_and_full_to_three(bench):
    quick = bench.parse_args(["--quick"])
    assert quick.seed_list == [0] and quick.groups == list(bench.QUICK_GROUPS)
    full = bench.parse_args(["--seed", "5"])
    assert full.seed_list == [5, 6, 7] and full.groups == list(bench.ABLATION)
    with pytest.raises(SystemExit):
        bench.parse_args(["--seeds", "0"])


def test_test_shapes_are_not_training_shapes(bench):
    args = bench.parse_args(["--quick", "--seeds", "2", "--num-shapes", "12"])
    args.num_test_shapes = 12
    trains, tests, classes = bench.build_data(args)
    assert len(trains) == 2 and len(classes) == 12

    def positions(dataset):
        return torch.stack([data.pos for data in dataset])

    test_pos = positions(tests["aligned"])
    for train in trains:
        assert not torch.isclose(positions(train), test_pos).all(dim=(1, 2)).any()
    assert not torch.isclose(positions(trains[0]), positions(trains[1])).all(dim=(1, 2)).any()


def test_per_seed_best_counts_ties_for_each_model(bench):
    def result(name, accuracies):
        runs = [{"accuracy": {"z-rotated": a}} for a in accuracies]
        return {"name": name, "runs": runs}

    results = [result("SO2", [0.9, 0.8, 0.7]), result("O2Conical", [0.9, 0.85, 0.6])]
    assert bench.per_seed_best(results, "z-rotated") == {"SO2": 2, "O2Conical": 2}
