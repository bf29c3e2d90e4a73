"""neighbour_outer_sum and the fused entry points: inputs checked by name, no silent
precision loss, and outputs that stay connected to autograd on graphs without edges."""

from __future__ import annotations

import pytest
import torch

import symgraph as sg
from symgraph.nn import ImplicitSteerableConv
from symgraph.ops import contraction, fused, neighbour_outer_sum


def reference(h: torch.Tensor, f: torch.Tensor, dst: torch.Tensor, n: int) -> torch.Tensor:
    per_edge = h[:, :, None] * f[:, None, :]
    return per_edge.new_zeros(n, h.shape[1], f.shape[1]).index_add(0, dst, per_edge)


@pytest.mark.parametrize("h_dtype, f_dtype", [(torch.float64, torch.float32),
                                              (torch.float32, torch.float64)])  # fmt: skip
def test_mixed_dtypes_are_promoted_on_every_backend(h_dtype, f_dtype):
    h = torch.randn(5, 3, dtype=h_dtype)
    f = torch.randn(5, 2, dtype=f_dtype)
    dst = torch.tensor([0, 0, 1, 2, 2])
    want = reference(h.double(), f.double(), dst, 3)
    for backend in ("auto", "padded", "scatter"):
        out = neighbour_outer_sum(h, f, dst, 3, backend=backend)
        assert out.dtype == torch.float64
        torch.testing.assert_close(out, want)


def test_scatter_backend_sums_every_chunk(monkeypatch):
    """Edges are summed in chunks of ``_CHUNK_ELEMENTS // (A·B)``: none may be left out."""
    monkeypatch.setattr(contraction, "_CHUNK_ELEMENTS", 3 * 2 * 3)  # chunks of 3 edges
    gen = torch.Generator().manual_seed(0)
    h = torch.randn(10, 3, generator=gen, dtype=torch.float64)
    f = torch.randn(10, 2, generator=gen, dtype=torch.float64)
    dst = torch.tensor([0, 1, 1, 2, 0, 3, 3, 1, 2, 0])
    out = neighbour_outer_sum(h, f, dst, 4, backend="scatter")
    torch.testing.assert_close(out, reference(h, f, dst, 4), rtol=0, atol=1e-14)


@pytest.mark.parametrize(
    "h, f, dst, backend, error, message",
    [
        (torch.randn(3, 2), torch.randn(3, 2), torch.tensor([0, -1, 1]), "auto", ValueError,
         r"dst: expected entries in \[0, 3\), got \[-1, 1\]"),
        (torch.randn(3, 2), torch.randn(3, 2), torch.tensor([0, 3, 1]), "auto", ValueError,
         r"dst: expected entries in \[0, 3\), got \[0, 3\]"),
        (torch.randn(3, 2), torch.randn(3, 2), torch.zeros(3), "auto", TypeError,
         "dst: expected an integer index tensor"),
        (torch.randn(3, 2), torch.randn(4, 2), torch.zeros(3, dtype=torch.long), "auto",
         ValueError, "f: expected 3 rows"),
        (torch.randn(3), torch.randn(3, 2), torch.zeros(3, dtype=torch.long), "auto",
         ValueError, r"h: expected a floating tensor \[E, ·\]"),
        (torch.randn(0, 2), torch.randn(0, 2), torch.zeros(0, dtype=torch.long), "bogus",
         ValueError, "backend: expected one of"),
    ],
)  # fmt: skip
def test_bad_inputs_are_named(h, f, dst, backend, error, message):
    with pytest.raises(error, match=message):
        neighbour_outer_sum(h, f, dst, 3, backend=backend)


def test_explicit_triton_refuses_float64(monkeypatch):
    """The kernels accumulate in float32: a float64 request would lose precision silently."""
    monkeypatch.setattr(fused, "triton_available", lambda: True)
    h, x = torch.randn(4, 3, dtype=torch.float64), torch.randn(3, 2, dtype=torch.float64)
    src, dst = torch.tensor([0, 1, 2, 0]), torch.tensor([0, 0, 1, 2])
    with pytest.raises(ValueError, match="backend: 'triton' computes in float32.*float64"):
        fused.fused_outer_sum(h, x, src, dst, 3, backend="triton")
    with pytest.raises(ValueError, match="backend: 'triton' computes in float32.*float64"):
        neighbour_outer_sum(h, x[src], dst, 3, backend="triton")
    with pytest.raises(ValueError, match="backend: 'triton' computes in float32.*float64"):
        fused.segment_reduce(x, torch.tensor([0, 0, 1]), 2, "sum", backend="triton")


def test_explicit_triton_without_triton_is_named(monkeypatch):
    monkeypatch.setattr(fused, "triton_available", lambda: False)
    with pytest.raises(RuntimeError, match="backend: 'triton' requested but Triton is not"):
        neighbour_outer_sum(torch.randn(2, 2), torch.randn(2, 2), torch.tensor([0, 1]), 2,
                            backend="triton")  # fmt: skip


@pytest.mark.parametrize("backend", ["auto", "padded", "scatter"])
def test_no_edges_gives_zeros_connected_to_the_inputs(backend):
    h = torch.randn(0, 3, requires_grad=True)
    f = torch.randn(0, 2, requires_grad=True)
    out = neighbour_outer_sum(h, f, torch.zeros(0, dtype=torch.long), 4, backend=backend)
    assert out.shape == (4, 3, 2) and not out.any() and out.requires_grad
    out.sum().backward()
    conv = ImplicitSteerableConv("2x0e + 1x1o", "2x0e + 1x1o", group=sg.groups.O3(),
                                 self_interaction=False, bias=False, backend=backend)  # fmt: skip
    x = torch.randn(3, conv.rep_in.dim, requires_grad=True)
    conv(x, torch.randn(3, 3), torch.zeros(2, 0, dtype=torch.long)).square().sum().backward()
    assert x.grad is not None and not x.grad.any()


@pytest.mark.parametrize(
    "reduce, expected", [("max", [[-1.0], [2.0], [0.0]]), ("mean", [[-2.0], [2.0], [0.0]])]
)
def test_torch_segment_reduce_of_negative_rows_and_an_empty_segment(reduce, expected):
    """The torch path (the CPU default): a maximum of negative rows stays negative, and an
    empty segment gives 0 (no NaN from a division by its zero count)."""
    x = torch.tensor([[-3.0], [-1.0], [2.0]])
    out = fused.segment_reduce(x, torch.tensor([0, 0, 1]), 3, reduce, backend="torch")
    assert torch.equal(out, torch.tensor(expected))
