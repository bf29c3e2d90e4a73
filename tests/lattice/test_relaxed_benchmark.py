"""``benchmarks/relaxed.py``'s paired comparison of the relaxed model against the others."""

from __future__ import annotations


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
    assert "| equivariant | future | +0.00000 ± 0.70711 | 1 of 2 seeds |" in lines
    assert "| equivariant | domain | +0.00000 ± 1.41421 | 1 of 2 seeds |" in lines
    assert "| conv | future | -1.50000 ± 0.00000 | 2 of 2 seeds |" in lines
    assert "| conv | domain | -1.50000 ± 0.70711 | 2 of 2 seeds |" in lines
