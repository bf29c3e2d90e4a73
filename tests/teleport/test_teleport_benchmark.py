"""``benchmarks/teleport.py`` runs and writes its table and plots (no timing assertions)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def bench(load_script):
    return load_script("benchmarks/teleport.py")


def test_small_job_writes_table_and_plot(bench, tmp_path):
    (result,) = bench.main(["--quick", "--jobs", "booth", "--seeds", "1", "--out", str(tmp_path)])
    base, tele = result.runs[0]
    assert len(base.loss) == len(tele.loss)
    assert tele.teleports == 1 and tele.refused == 0
    assert (tmp_path / "teleport_booth_quick.png").stat().st_size > 0
    assert "| booth | 1 |" in (tmp_path / "teleport_quick.md").read_text()


def test_toy_jobs_alternate_the_run_order_and_keep_the_pairs(bench, monkeypatch):
    """Each seed's baseline runs first at even positions and second at odd ones; the
    result still pairs (baseline, teleport) per seed."""
    labels = []
    train = bench.train

    def recording_train(*args):
        labels.append(args[5])
        return train(*args)

    monkeypatch.setattr(bench, "train", recording_train)
    result = bench.run_test_function("booth", [0, 1], quick=True)
    assert labels == ["GD", "GD + teleport", "GD + teleport", "GD"]
    for base, tele in result.runs:
        assert base.teleports == 0 and tele.teleports == 1
    labels.clear()
    result = bench.run_mlp([0, 1], quick=True)
    assert labels == ["SGD", "SGD + teleport", "SGD + teleport", "SGD"]
    for base, tele in result.runs:
        assert base.teleports == 0 and tele.teleports == 1


def test_paper_mlp_job_teleports_with_gl(bench):
    result = bench.run_mlp([0], quick=True)
    base, tele = result.runs[0]
    assert tele.teleports == 1 and tele.refused == 0
    assert len(base.loss) == len(tele.loss) == 150


def test_gnn_job_on_synthetic_graphs(bench):
    graphs = bench.synthetic_graphs(60)
    (result,) = bench.run_gnn(
        graphs, [0], "synthetic", epochs=1, optimizer="adam", schedule="every:2", batch_size=16
    )
    base, tele = result.runs[0]
    assert tele.teleports >= 1 and tele.refused == 0
    assert base.test_error is not None and tele.test_error is not None
    assert len(base.eval_loss) == len(tele.eval_loss) == 1
    assert result.job == "gnn-gin-adam-paper"
    assert bench.summarize(result)[0].startswith("| gnn-gin-adam-paper | 1 |")


def test_gnn_balance_variant_from_the_command_line(bench, tmp_path):
    (result,) = bench.main(
        ["--quick", "--jobs", "gnn", "--gnn-data", "synthetic", "--gnn-optimizers", "sgd",
         "--gnn-variants", "balance", "--gnn-epochs", "1", "--gnn-schedule", "every:2",
         "--out", str(tmp_path)]
    )  # fmt: skip
    base, tele = result.runs[0]
    assert result.job == "gnn-gin-sgd-balance"
    assert tele.teleports >= 1 and tele.refused == 0
    assert "objective=min_norm" in result.notes
    with pytest.raises(SystemExit):
        bench.main(["--jobs", "gnn", "--gnn-variants", "sideways", "--out", str(tmp_path)])


def test_readout_symmetry_is_exact_and_what_detection_finds(bench):
    """The hand-declared GL(64) of the GIN job = the chain found in the Sequential form."""
    import torch
    import torch_geometric.nn as pyg_nn
    from torch.func import functional_call
    from torch_geometric.data import Batch

    from symgraph.teleport import find_symmetries

    torch.manual_seed(0)
    model = bench.GINRegressor(5).double()
    graphs = Batch.from_data_list(bench.synthetic_graphs(5))
    graphs.x = graphs.x.double()
    sym = bench.readout_symmetry()
    params = {n: p.detach() for n, p in model.named_parameters()}
    theta = sym.project(torch.randn(64, 64, dtype=torch.float64))
    moved = sym.act(params, theta)
    assert not torch.equal(moved["head.0.weight"], params["head.0.weight"])
    ref = model(graphs).detach()
    err = (functional_call(model, moved, (graphs,)) - ref).abs().max() / ref.abs().max()
    assert float(err) < 1e-10

    sequential = pyg_nn.Sequential(
        "x, edge_index, batch",
        [
            (model.gnn, "x, edge_index -> x"),
            (pyg_nn.aggr.SumAggregation(), "x, batch -> x"),
            *model.head,
        ],
    )
    (found,) = find_symmetries(sequential, kinds="linear")
    assert (found.first, found.second, found.hidden) == (
        "module_0.convs.2.nn.lins.1",
        "module_2",
        sym.hidden,
    )


def test_readout_variant_runs(bench):
    (result,) = bench.run_gnn(
        bench.synthetic_graphs(60), [0], "synthetic", epochs=1, optimizer="adam",
        schedule="every:2", batch_size=16, variants=["readout-balance"],
    )  # fmt: skip
    base, tele = result.runs[0]
    assert result.job == "gnn-gin-adam-readout-balance"
    assert tele.teleports >= 1 and tele.refused == 0
    assert "GL(64) gnn.convs.2.nn.lins.1 -> add pool -> head.0" in result.notes
    assert "1 symmetry (linear, 4096 group coordinates)" in result.notes


def test_flat_variant_teleports_on_its_own_batch(bench):
    (result,) = bench.run_gnn(
        bench.synthetic_graphs(60), [0], "synthetic", epochs=2, optimizer="sgd",
        schedule="every:2", batch_size=16, variants=["flat"],
    )  # fmt: skip
    base, tele = result.runs[0]
    assert result.job == "gnn-gin-sgd-flat"
    assert tele.teleports == 2 and tele.refused == 0  # steps 2 and 4 of 2 epochs x 3 batches
    assert "teleport every:2 on 48 random training graphs, objective=min_grad_norm" in (
        result.notes
    )
    assert "teleport_graphs" not in result.notes


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_flat_running_variant_takes_the_optimizers_mean(bench, optimizer):
    (result,) = bench.run_gnn(
        bench.synthetic_graphs(60), [0], "synthetic", epochs=2, optimizer=optimizer,
        schedule="every:2", batch_size=16, variants=["flat-running"],
    )  # fmt: skip
    base, tele = result.runs[0]
    assert tele.teleports == 2 and tele.refused == 0
    assert "teleport every:2 on the current minibatch, objective=min_grad_norm" in result.notes
    assert "gradient=optimizer" in result.notes


def test_gnn_seeds_start_where_asked(bench, tmp_path):
    argv = ["--quick", "--jobs", "gnn", "--gnn-data", "synthetic", "--gnn-optimizers", "sgd",
            "--gnn-variants", "balance", "--gnn-epochs", "1", "--out", str(tmp_path)]  # fmt: skip
    (first,) = bench.main(argv)
    (later,) = bench.main([*argv, "--gnn-first-seed", "7"])
    assert "seeds 0)" in first.notes and "seeds 7)" in later.notes
    assert first.runs[0][0].eval_loss != later.runs[0][0].eval_loss
    with pytest.raises(SystemExit):
        bench.main([*argv, "--gnn-first-seed", "-1"])


def test_learning_rates_compared_from_the_command_line(bench, tmp_path):
    results = bench.main(
        ["--quick", "--jobs", "gnn", "--gnn-data", "synthetic", "--gnn-optimizers", "sgd",
         "--gnn-variants", "balance", "--gnn-epochs", "2", "--gnn-schedule", "every:2",
         "--gnn-lr", "0.001,0.01", "--out", str(tmp_path)]
    )  # fmt: skip
    assert [r.job for r in results] == ["gnn-gin-sgd-balance-lr0.001", "gnn-gin-sgd-balance-lr0.01"]
    assert "(lr 0.01," in results[1].notes
    finals = [r.runs[0][0].eval_loss[-1] for r in results]
    assert finals[0] != finals[1]  # the rate reached the optimizer
    table = (tmp_path / "teleport_quick.md").read_text()
    assert "By learning rate, against the first rate's baseline:" in table
    assert "| gnn sgd | 0.001 | baseline | 1 | 1.00× (1/1 reached) |" in table
    assert "| gnn sgd | 0.001 | balance | 1 |" in table
    assert "| gnn sgd | 0.01 | baseline | 1 |" in table
    assert "| gnn sgd | 0.01 | balance | 1 |" in table
    for bad in ("0", "-1", "fast", "0.1,"):
        with pytest.raises(SystemExit):
            bench.main(["--jobs", "gnn", "--gnn-lr", bad, "--out", str(tmp_path)])


def test_full_batch_on_the_first_graphs_from_the_command_line(bench, tmp_path):
    (result,) = bench.main(
        ["--quick", "--jobs", "gnn", "--gnn-data", "synthetic", "--gnn-optimizers", "adam",
         "--gnn-molecules", "50", "--gnn-batch-size", "0", "--gnn-epochs", "4",
         "--gnn-schedule", "every:2", "--out", str(tmp_path)]
    )  # fmt: skip
    base, tele = result.runs[0]
    assert "first 50 graphs" in result.notes and "batch full, 40" in result.notes
    assert len(base.loss) == 4  # one step per epoch: 40 training graphs in one batch
    assert tele.teleports == 1 and tele.refused == 0  # every:2 over steps 0-3: step 2
    per_seed = bench.seed_step_ratios(result)
    assert (
        f"- {result.job}: step speed-up per seed {per_seed}"
        in (tmp_path / "teleport_quick.md").read_text()
    )
    assert per_seed == "—" or float(per_seed) > 0
    for bad in (["--gnn-batch-size", "-1"], ["--gnn-molecules", "3"]):
        with pytest.raises(SystemExit):
            bench.main(["--jobs", "gnn", *bad, "--out", str(tmp_path)])


@pytest.mark.slow
def test_quick_benchmark_end_to_end(bench, tmp_path, shared_data):
    results = bench.main(["--quick", "--out", str(tmp_path)])
    assert {r.job for r in results} >= {"booth", "rosenbrock", "mlp", "gnn-gin-sgd-paper"}
    assert len(list(tmp_path.glob("teleport_*.png"))) == len(results)


def test_steerable_job_on_real_qm9_molecules(bench, shared_data, tmp_path):
    from symgraph.data.qm9 import QM9

    csv = shared_data / "qm9" / "qm9pack_first200.csv"
    molecules = QM9(tmp_path, source="csv", csv_files=[csv], target="gap", cutoff=None, log=False)
    (result,) = bench.run_gnn(
        molecules[:60], [0], "QM9", epochs=1, optimizer="adam", schedule="every:2",
        batch_size=16, model="steerable",
    )  # fmt: skip
    base, tele = result.runs[0]
    assert result.job == "gnn-steerable-adam-paper"
    assert tele.teleports >= 1 and tele.refused == 0
    assert "3 symmetries (gated, 18 group coordinates)" in result.notes
    assert tele.test_error is not None and base.test_error is not None
