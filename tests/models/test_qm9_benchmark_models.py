"""The torch-only DimeNet++ of ``benchmarks/qm9.py``: its triplets and its invariance."""

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
