"""The fused Triton kernels against float64 torch references, on a GPU or in Triton's interpreter.

Tests marked ``triton`` run the kernels themselves, on the tensors' device: a CUDA GPU when
one is present, else the CPU through Triton's interpreter, for which ``TRITON_INTERPRET=1``
must be in the environment before Triton is first imported (``torch_geometric`` imports
it), as ``make test-triton`` does; they are skipped without Triton, or with neither a GPU
nor the interpreter. The unmarked tests check dispatch and input validation, which need
neither Triton nor a GPU.
"""

from __future__ import annotations

import os
import warnings

import pytest
import torch

from symgraph.ops import fused
from symgraph.ops.contraction import neighbour_outer_sum

# relative tolerance (to the largest reference entry) per compute dtype
TOLERANCE = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}
DTYPES = list(TOLERANCE)


@pytest.fixture(scope="module")
def device() -> str:
    """Where the kernels run: ``"cpu"`` in Triton's interpreter, else ``"cuda"``."""
    if not fused.triton_available():
        pytest.skip("Triton is not installed")
    from symgraph.ops import triton_kernels

    if os.environ.get("TRITON_INTERPRET") == "1":
        assert triton_kernels.INTERPRET
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    pytest.skip("needs a CUDA GPU or TRITON_INTERPRET=1 in the environment (make test-triton)")


def _graph(seed: int, device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """Unsorted ``(src, dst, num_nodes, num_senders)``: empty receivers and one hub node."""
    gen = torch.Generator().manual_seed(seed)
    num_nodes = int(torch.randint(6, 16, (1,), generator=gen))
    num_senders = int(torch.randint(4, 20, (1,), generator=gen))
    num_edges = int(torch.randint(10, 60, (1,), generator=gen))
    dst = torch.randint(0, num_nodes, (num_edges,), generator=gen)
    dst[dst % 3 == 1] = 0  # receivers 1, 4, 7, … have no edges
    hub = torch.full((150 + 7 * seed,), num_nodes - 1)  # one node of very high degree
    dst = torch.cat([dst, hub])
    src = torch.randint(0, num_senders, (dst.shape[0],), generator=gen)
    perm = torch.randperm(dst.shape[0], generator=gen)
    return src[perm].to(device), dst[perm].to(device), num_nodes, num_senders


def _rel_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    error = (value.detach().double() - reference.detach()).abs().max()
    return float(error / reference.detach().abs().max().clamp_min(1e-12))


@pytest.mark.triton
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fused_outer_sum_matches_float64(device, dtype, seed):
    src, dst, num_nodes, num_senders = _graph(seed, device)
    gen = torch.Generator().manual_seed(100 + seed)
    num_a, num_b = (5, 7) if seed < 2 else (37, 19)  # 37 > one A block of the kernel
    h = torch.randn(dst.shape[0], num_a, generator=gen).to(device, dtype)
    x = torch.randn(num_senders, num_b, generator=gen).to(device, dtype)
    grad = torch.randn(num_nodes, num_a, num_b, generator=gen).to(device, dtype)

    h64, x64 = h.double().requires_grad_(), x.double().requires_grad_()
    ref = neighbour_outer_sum(h64, x64[src], dst, num_nodes, backend="scatter")
    ref_h, ref_x = torch.autograd.grad(ref, (h64, x64), grad.double())

    for deterministic in (True, False):
        h_, x_ = h.clone().requires_grad_(), x.clone().requires_grad_()
        out = fused.fused_outer_sum(
            h_, x_, src, dst, num_nodes, backend="triton", deterministic=deterministic
        )
        assert out.dtype == dtype and out.shape == ref.shape
        grad_h, grad_x = torch.autograd.grad(out, (h_, x_), grad)
        assert _rel_error(out, ref) < TOLERANCE[dtype]
        assert _rel_error(grad_h, ref_h) < TOLERANCE[dtype]
        assert _rel_error(grad_x, ref_x) < TOLERANCE[dtype]
        empty = torch.bincount(dst, minlength=num_nodes) == 0
        assert empty.any() and (out[empty] == 0).all()


@pytest.mark.triton
def test_deterministic_backward_is_bitwise_reproducible(device):
    src, dst, num_nodes, num_senders = _graph(3, device)
    h = torch.randn(dst.shape[0], 6, device=device, requires_grad=True)
    x = torch.randn(num_senders, 9, device=device, requires_grad=True)
    grads = []
    for _ in range(2):
        out = fused.fused_outer_sum(h, x, src, dst, num_nodes, backend="triton", deterministic=True)
        grads.append(torch.autograd.grad(out.square().sum(), (h, x)))
    assert all(torch.equal(a, b) for a, b in zip(*grads))


@pytest.mark.triton
def test_neighbour_outer_sum_triton_backend(device):
    src, dst, num_nodes, num_senders = _graph(4, device)
    h = torch.randn(dst.shape[0], 8, dtype=torch.float64, device=device)
    f = torch.randn(dst.shape[0], 11, dtype=torch.float64, device=device)
    ref = neighbour_outer_sum(h, f, dst, num_nodes, backend="scatter")
    h32 = h.float().requires_grad_()
    out = neighbour_outer_sum(h32, f.float(), dst, num_nodes, backend="triton")
    assert _rel_error(out, ref) < TOLERANCE[torch.float32]
    (grad_h,) = torch.autograd.grad(out.sum(), h32)
    ref_h = f.sum(1, keepdim=True).expand_as(h)  # d/dh_ea Σ_b h_ea f_eb
    assert _rel_error(grad_h, ref_h) < TOLERANCE[torch.float32]


@pytest.mark.triton
@pytest.mark.parametrize("reduce", fused.REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_segment_reduce_matches_float64(device, reduce, dtype):
    gen = torch.Generator().manual_seed(7)
    num_segments, num_f = 9, 70  # 70 > one feature block of the kernel
    index = torch.randint(0, num_segments - 1, (40,), generator=gen)
    index[index == 2] = 3  # segments 2 and 8 are empty
    index = torch.cat([index, torch.full((120,), 5)])[torch.randperm(160, generator=gen)]
    x = torch.randn(index.shape[0], num_f, generator=gen)
    if reduce == "max":  # distinct integers per column (exact in bfloat16): no ties
        x = torch.stack([torch.randperm(x.shape[0], generator=gen) for _ in range(num_f)], 1)
        x = x - x.shape[0] // 2
    x, index = x.to(device, dtype), index.to(device)
    grad = torch.randn(num_segments, num_f, generator=gen).to(device, dtype)

    x64 = x.double().requires_grad_()
    ref = fused.segment_reduce(x64, index, num_segments, reduce, backend="torch")
    (ref_x,) = torch.autograd.grad(ref, x64, grad.double())
    x_ = x.clone().requires_grad_()
    out = fused.segment_reduce(x_, index, num_segments, reduce, backend="triton")
    (grad_x,) = torch.autograd.grad(out, x_, grad)
    assert out.dtype == dtype
    assert _rel_error(out, ref) < TOLERANCE[dtype]
    assert _rel_error(grad_x, ref_x) < TOLERANCE[dtype]
    assert (out[[2, 8]] == 0).all()


@pytest.mark.triton
def test_segment_max_propagates_nan_as_torch_does(device):
    """A NaN in a segment makes that column's maximum NaN (torch's ``amax``), also when the
    NaN row comes before or after a larger value, or in a later chunk of the kernel's loop;
    its gradient goes to the segment's first NaN row."""
    num_f = 3
    index = torch.tensor([0] * 5 + [1] * 70 + [2] * 4)  # 70 rows: more than one chunk
    x = torch.arange(index.shape[0] * num_f, dtype=torch.float32).reshape(-1, num_f)
    x[1, 0] = float("nan")  # segment 0, before its maximum
    x[60, 1] = x[66, 1] = float("nan")  # segment 1, in a later chunk; two NaN rows
    x[77, 2] = float("nan")  # segment 2
    x_, index = x.to(device).requires_grad_(), index.to(device)
    out = fused.segment_reduce(x_, index, 3, "max", backend="triton")
    ref = fused.segment_reduce(x.to(device), index, 3, "max", backend="torch")
    assert torch.equal(out.isnan(), ref.isnan())
    assert torch.equal(out[~out.isnan()], ref[~ref.isnan()])
    assert out.isnan().sum() == 3
    (grad,) = torch.autograd.grad(out.sum(), x_)
    assert grad[1, 0] == grad[60, 1] == grad[77, 2] == 1
    assert grad[66, 1] == 0 and grad[4, 0] == 0 and grad.sum() == 3 * num_f


@pytest.mark.triton
def test_index_input_is_sorted_or_converted(device):
    src, dst, num_nodes, num_senders = _graph(5, device)
    h = torch.randn(dst.shape[0], 4, device=device)
    x = torch.randn(num_senders, 3, device=device)
    ref = neighbour_outer_sum(h.double(), x.double()[src], dst, num_nodes, backend="scatter")
    strided_src = torch.stack([src, src], 1)[:, 0]  # non-contiguous
    assert not strided_src.is_contiguous()
    for s, d in ((strided_src, dst), (src.int(), dst.int())):
        out = fused.fused_outer_sum(h, x, s, d, num_nodes, backend="triton")
        assert _rel_error(out, ref) < TOLERANCE[torch.float32]


def test_bad_indices_are_rejected():
    h, x = torch.randn(5, 3), torch.randn(4, 2)
    dst = torch.tensor([0, 0, 1, 2, 2])
    with pytest.raises(TypeError, match="src"):
        fused.fused_outer_sum(h, x, torch.zeros(5), dst, 3, backend="torch")
    with pytest.raises(TypeError, match="dst"):
        fused.fused_outer_sum(h, x, torch.zeros(5, dtype=torch.long), dst.bool(), 3)
    with pytest.raises(ValueError, match=r"src: entries must lie in \[0, 4\)"):
        fused.fused_outer_sum(h, x, torch.tensor([0, 1, 2, 3, 4]), dst, 3)
    with pytest.raises(ValueError, match="src: expected shape"):
        fused.fused_outer_sum(h, x, torch.tensor([0, 1]), dst, 3)
    with pytest.raises(ValueError, match="non-decreasing"):
        fused.outer_sum_csr(h, h, torch.tensor([0, 3, 2, 5]))
    with pytest.raises(ValueError, match="ptr: expected CSR offsets"):
        fused.outer_sum_csr(h, h, torch.tensor([0, 2, 4]))
    with pytest.raises(ValueError, match="reduce"):
        fused.segment_reduce(x, torch.zeros(4, dtype=torch.long), 1, "min")


def test_cpu_dispatch_never_selects_triton():
    h, f = torch.randn(6, 3), torch.randn(6, 2)
    dst = torch.tensor([2, 0, 0, 1, 2, 2])  # irregular and unsorted
    assert not fused.use_triton(h, f)
    out = neighbour_outer_sum(h, f, dst, 4)
    assert torch.equal(out, neighbour_outer_sum(h, f, dst, 4, backend="padded"))
    src = torch.tensor([0, 1, 2, 3, 4, 5])
    assert torch.equal(fused.fused_outer_sum(h, f, src, dst, 4), out)


class _CudaStandIn:
    """Quacks like a CUDA float tensor for :func:`fused.use_triton` (no GPU needed)."""

    is_cuda = True
    dtype = torch.float32

    def is_floating_point(self) -> bool:
        return True


def test_cuda_without_triton_warns_once(monkeypatch):
    monkeypatch.setattr(fused, "triton_available", lambda: False)
    fused._warn_no_triton.cache_clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert not fused.use_triton(_CudaStandIn())
        assert not fused.use_triton(_CudaStandIn())
    assert len([w for w in caught if "Triton is not installed" in str(w.message)]) == 1
    fused._warn_no_triton.cache_clear()


def test_auto_dispatch_needs_every_tensor_on_cuda_in_a_kernel_dtype(monkeypatch):
    monkeypatch.setattr(fused, "triton_available", lambda: True)
    assert fused.use_triton(_CudaStandIn(), _CudaStandIn())
    assert not fused.use_triton(_CudaStandIn(), torch.zeros(3))  # one tensor on the CPU
    wide = _CudaStandIn()
    wide.dtype = torch.float64  # the kernels compute in float32
    assert not fused.use_triton(_CudaStandIn(), wide)


def test_out_of_range_and_mismatched_inputs_are_named():
    h, x = torch.randn(5, 3), torch.randn(4, 2)
    dst = torch.tensor([0, 0, 1, 2, 2])
    with pytest.raises(ValueError, match=r"src: entries must lie in \[0, 4\), got \[-1, 3\]"):
        fused.fused_outer_sum(h, x, torch.tensor([0, -1, 2, 3, 1]), dst, 3)
    with pytest.raises(ValueError, match="x: expected 5 rows, got 4"):
        fused.outer_sum_csr(h, x, torch.tensor([0, 2, 3, 5]))  # per-edge x: one row per edge
    with pytest.raises(ValueError, match=r"index: entries must lie in \[0, 2\), got \[0, 2\]"):
        fused.segment_reduce(x, torch.tensor([0, 1, 2, 1]), 2, backend="torch")


@pytest.mark.triton
def test_implicit_conv_with_triton_backend_matches_torch_path(device, monkeypatch):
    """The layer with the kernel gathering ``x[src]`` itself: same outputs and gradients."""
    from symgraph.nn import ImplicitSteerableConv

    gathered = []
    original = fused.outer_sum_csr

    def spy(h, x, ptr, src=None, deterministic=None):
        gathered.append(src is not None)
        return original(h, x, ptr, src, deterministic)

    monkeypatch.setattr(fused, "outer_sum_csr", spy)

    src, dst, num_nodes, _ = _graph(5, device)
    torch.manual_seed(0)
    pos = torch.randn(num_nodes, 3, device=device)
    keep = src < num_nodes
    edge_index = torch.stack([src[keep], dst[keep]])
    conv = ImplicitSteerableConv("4x0e + 2x1o", "3x0e + 2x1o", backend="scatter").to(device)
    x = torch.randn(num_nodes, conv.rep_in.dim, device=device, requires_grad=True)
    reference = conv(x, pos, edge_index)
    reference.square().sum().backward()
    grads = [x.grad.clone()] + [p.grad.clone() for p in conv.parameters()]
    conv.zero_grad()
    x.grad = None
    conv.backend = "triton"
    out = conv(x, pos, edge_index)
    out.square().sum().backward()
    assert gathered and all(gathered)  # every block ran the kernel with the gather fused in
    scale = reference.abs().max()
    assert (out - reference).abs().max() <= TOLERANCE[torch.float32] * scale
    for before, after in zip(grads, [x.grad] + [p.grad for p in conv.parameters()]):
        assert (after - before).abs().max() <= 1e-4 * before.abs().max().clamp_min(1e-6)
