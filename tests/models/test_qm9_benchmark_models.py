"""The QM9 benchmarks' own parts: DimeNet++'s torch-only triplets and invariance, the budget
schedule, and the training-step benchmark's dense and block-sparse models."""

from __future__ import annotations

import pytest
import torch
from torch_geometric.data import Batch, Data


@pytest.fixture(scope="module")
def bench(load_script):
    return load_script("benchmarks/qm9.py")


def test_triplets_are_every_path_k_j_i_with_k_not_i(bench):
    gen = torch.Generator().manual_seed(0)
    num_nodes = 9
    edges = {(int(a), int(b)) for a, b in torch.randint(0, num_nodes, (40, 2), generator=gen)}
    edge_index = torch.tensor(sorted((a, b) for a, b in edges if a != b)).T
    i, j, idx_i, idx_j, idx_k, idx_kj, idx_ji = bench.triplets(edge_index, num_nodes)
    assert torch.equal(i, edge_index[1]) and torch.equal(j, edge_index[0])
    found = {(int(a), int(b)) for a, b in zip(idx_kj, idx_ji)}
    src, dst = edge_index.tolist()
    expected = {
        (kj, ji)
        for ji in range(len(src))
        for kj in range(len(src))
        if dst[kj] == src[ji] and src[kj] != dst[ji]
    }
    assert found == expected and len(found) == len(idx_kj)
    assert torch.equal(idx_i, edge_index[1, idx_ji]) and torch.equal(idx_j, edge_index[0, idx_ji])
    assert torch.equal(idx_k, edge_index[0, idx_kj])


@pytest.mark.slow  # PyG builds DimeNet++'s spherical basis with sympy: ~45 s here
def test_dimenet_adapter_is_invariant_and_trains(bench):
    torch.manual_seed(0)
    molecules = [Data(z=torch.randint(1, 9, (n,)), pos=torch.randn(n, 3) * 1.2) for n in (5, 7)]
    batch = Batch.from_data_list(molecules)
    model = bench.DimeNetAdapter("sum").double()
    batch.pos = batch.pos.double()
    out = model(batch)
    q, _ = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64))
    rotated = batch.clone()
    rotated.pos = batch.pos @ q.T + 0.7
    assert out.shape == (2, 1)
    torch.testing.assert_close(model(rotated), out, atol=1e-10, rtol=1e-8)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_budget_learning_rate_is_constant_or_a_cosine_in_wall_clock(bench):
    assert bench.budget_lr(2e-3, 100.0, 240.0, "constant") == 2e-3
    assert bench.budget_lr(2e-3, 0.0, 240.0, "cosine") == pytest.approx(2e-3)
    assert bench.budget_lr(2e-3, 120.0, 240.0, "cosine") == pytest.approx(1e-3)
    assert bench.budget_lr(2e-3, 180.0, 240.0, "cosine") == pytest.approx(1e-3 * (1 - 0.5**0.5))
    assert bench.budget_lr(2e-3, 300.0, 240.0, "cosine") == pytest.approx(0.0, abs=1e-12)


def test_train_step_benchmark_runs_dense_and_block_sparse_heads_alike(
    load_script, shared_data, tmp_path
):
    """The step benchmark's two versions of our model compute the same thing, and its run
    reports every contender."""
    from symgraph.data.qm9 import QM9
    from symgraph.models import SteerableMoleculeNet

    step = load_script("benchmarks/train_step.py")
    csv = shared_data / "qm9" / "qm9pack_first200.csv"
    batch = Batch.from_data_list(list(QM9(tmp_path / "q", source="csv", csv_files=[csv])[:8]))
    sparse = SteerableMoleculeNet()
    dense = step.dense_head(SteerableMoleculeNet())
    dense.load_state_dict(sparse.state_dict())
    assert all(conv.kernel.head_groups is None for conv in dense.convs)
    assert all(conv.kernel.head_groups is not None for conv in sparse.convs)
    torch.testing.assert_close(dense(batch), sparse(batch), rtol=1e-5, atol=1e-5)
    results = step.main(
        ["--csv", str(csv), "--root", str(tmp_path / "r"), "--steps", "2", "--rounds", "1"]
    )
    assert set(results) == {"SteerableMoleculeNet, dense head", "SteerableMoleculeNet",
                            "SteerableMoleculeNet, full last layer", "SchNet (PyG)"}  # fmt: skip
    assert all(r["time_s"] > 0 and r["faults"] >= 0 for r in results.values())


def test_adam_variants_of_the_step_benchmark_take_the_same_step(load_script):
    """``train_step.py --adam`` compares implementations that compute the same update, and
    reports each of them for both model sizes."""
    step = load_script("benchmarks/train_step.py")
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    optimizers = step.adam_optimizers(model)
    assert set(optimizers) == set(step.ADAM_VARIANTS)
    finals = []
    for optimizer in optimizers.values():
        for _ in range(3):
            optimizer.step()
        params = optimizer.param_groups[0]["params"]
        finals.append(torch.cat([p.detach().reshape(-1) for p in params]))
    assert not torch.equal(
        finals[0], torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    )
    for other in finals[1:]:
        torch.testing.assert_close(other, finals[0])
    results = step.main(["--adam", "--steps", "1", "--rounds", "1"])
    assert set(results) == set(step.ADAM_MODELS)
    assert all(set(r) == set(step.ADAM_VARIANTS) for r in results.values())


def test_train_step_benchmark_runs_the_steps_it_divides_by(
    load_script, shared_data, tmp_path, monkeypatch
):
    """``--steps`` beyond one epoch of the sample (200 molecules: 4 batches of 64) still runs
    that many steps per round, since the per-step figures divide by it; unknown contenders
    are refused, not skipped."""
    step = load_script("benchmarks/train_step.py")
    csv = shared_data / "qm9" / "qm9pack_first200.csv"
    drawn = []

    def recording(model, batches, index, original=step.step_function):
        drawn.append(len(batches))
        return original(model, batches, index)

    monkeypatch.setattr(step, "step_function", recording)
    flags = ["--csv", str(csv), "--root", str(tmp_path / "r"), "--rounds", "1"]
    results = step.main([*flags, "--steps", "9", "--batch-size", "64", "--models", "SchNet (PyG)"])
    assert drawn == [9] and set(results) == {"SchNet (PyG)"}
    with pytest.raises(SystemExit):
        step.main([*flags, "--models", "SchNet"])
    with pytest.raises(SystemExit):
        step.main([*flags, "--steps", "0"])


def test_qm9_benchmark_runs_side_by_side_keep_their_own_tables(
    bench, shared_data, tmp_path, monkeypatch
):
    """Two runs that differ only in ``--init-seed`` (as the side-by-side commands of
    RESULTS.md) write two tables, each headed by its command; a misspelt model is refused."""
    monkeypatch.setattr(bench, "OUT", tmp_path / "out", raising=False)
    csv = shared_data / "qm9" / "qm9pack_first200.csv"
    flags = ["--csv", str(csv), "--root", str(tmp_path / "r"), "--targets", "homo", "--split",
             "40", "10", "10", "--budget-s", "0.01", "--models", "SchNet (PyG)"]  # fmt: skip
    for seed in ("0", "1"):
        bench.main([*flags, "--init-seed", seed])
    tables = sorted((tmp_path / "out").glob("qm9_homo_*.md"))
    assert len(tables) == 2
    heads = [path.read_text().splitlines()[0] for path in tables]
    assert sorted(head.split("--init-seed ")[1] for head in heads) == ["0`", "1`"]
    assert all("--models 'SchNet (PyG)'" in head for head in heads)
    with pytest.raises(SystemExit):
        bench.main([*flags[:-2], "--models", "SchNet"])


def test_qm9_table_tag_digests_every_option_but_the_data_root(bench):
    """``--root`` only places the processed data: a rerun elsewhere replaces its table; any
    other option (here ``--seed``) names another table."""
    import argparse

    tag = bench.options_tag(argparse.Namespace(root="a", seed=0, quick=True))
    assert bench.options_tag(argparse.Namespace(root="b", seed=0, quick=True)) == tag
    assert bench.options_tag(argparse.Namespace(root="a", seed=1, quick=True)) != tag
    assert bench.options_tag(argparse.Namespace(root="a", seed=0, quick=False)) != tag


def test_train_step_batches_of_an_empty_sample_are_refused(load_script):
    """No molecule gives no batch however often the epoch is drawn again: refused, where the
    drawing loop would never end."""
    step = load_script("benchmarks/train_step.py")
    with pytest.raises(ValueError, match="dataset: expected at least one molecule, got none"):
        step.draw_batches([], batch_size=4, steps=3)
    data = [Data(x=torch.zeros(1, 1)) for _ in range(3)]
    batches = step.draw_batches(data, batch_size=2, steps=5)  # an epoch is 2 batches
    assert [b.num_graphs for b in batches] == [2, 1, 2, 1, 2]
