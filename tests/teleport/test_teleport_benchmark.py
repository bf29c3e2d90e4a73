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
    assert (tmp_path / "teleport_booth.png").stat().st_size > 0
    assert "| booth | 1 |" in (tmp_path / "teleport.md").read_text()


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
    assert "3 symmetries (gated, 18 scale units)" in result.notes
    assert tele.test_error is not None and base.test_error is not None
