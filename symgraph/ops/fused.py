"""Fused gather–contract–scatter and segment reductions, with autograd and dispatch.

- :func:`fused_outer_sum`: ``T_i = Σ_{e: dst_e = i} h_e ⊗ x_{src_e}`` (``[N, A, B]``), the
  neighbour contraction of the implicit convolution with the gather of ``x`` fused in;
- :func:`segment_reduce`: sum / mean / max of the rows of ``x`` per segment (graph readouts).

``backend="auto"`` runs the Triton kernels of :mod:`symgraph.ops.triton_kernels` when every
tensor is on CUDA, the dtype is float32/float16/bfloat16 and Triton is installed; otherwise
the torch paths (CPU results are those of :func:`neighbour_outer_sum` and ``index_add_`` /
``scatter_reduce``). On CUDA without Triton a one-time warning says so. ``backend="triton"``
forces the kernels (on CPU tensors this needs ``TRITON_INTERPRET=1``: tests only).

Forward passes never use atomics. The backward of :func:`fused_outer_sum` with respect to
``x`` sums per-edge rows into senders: ``deterministic=True`` (the default when
``torch.are_deterministic_algorithms_enabled()``) sorts edges by sender once and reduces
segments; ``deterministic=False`` uses ``index_add_`` (atomics on CUDA, faster, not
bitwise reproducible). Double backward is not supported through the kernels.
"""

from __future__ import annotations

import functools
import importlib.util
import warnings
from types import ModuleType

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from symgraph.checks import is_int
from symgraph.ops.contraction import neighbour_outer_sum

__all__ = ["fused_outer_sum", "outer_sum_csr", "segment_reduce", "triton_available", "use_triton"]

TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
REDUCTIONS = ("sum", "mean", "max")
FUSED_BACKENDS = ("auto", "triton", "torch")


@functools.cache
def triton_available() -> bool:
    """Whether the ``triton`` package is installed (it is not imported here)."""
    return importlib.util.find_spec("triton") is not None


@functools.cache
def _kernels() -> ModuleType:
    from symgraph.ops import triton_kernels

    return triton_kernels


@functools.cache
def _warn_no_triton() -> None:
    warnings.warn(
        "symgraph.ops: CUDA tensors but Triton is not installed; using the torch paths "
        "(pip install 'symgraph[triton]' for the fused kernels)",
        RuntimeWarning,
        stacklevel=3,
    )


def use_triton(*tensors: Tensor) -> bool:
    """Whether ``backend="auto"`` runs the Triton kernels for ``tensors`` (never on CPU)."""
    if not all(t.is_cuda for t in tensors):
        return False
    if not triton_available():
        _warn_no_triton()
        return False
    return all(t.dtype in TRITON_DTYPES for t in tensors if t.is_floating_point())


def check_triton_request(*tensors: Tensor) -> None:
    """Raise unless an explicit ``backend="triton"`` can run on ``tensors``: Triton installed
    and floating inputs of :data:`TRITON_DTYPES` (the kernels accumulate in float32, so a
    float64 input would silently lose precision)."""
    if not triton_available():
        raise RuntimeError("backend: 'triton' requested but Triton is not installed")
    wide = sorted(
        {str(t.dtype) for t in tensors if t.is_floating_point()} - {str(d) for d in TRITON_DTYPES}
    )
    if wide:
        raise ValueError(
            f"backend: 'triton' computes in float32 (inputs of float32, float16 or bfloat16), "
            f"got {', '.join(wide)}; use backend 'torch' or 'auto' (or another contraction "
            "backend), which keep float64"
        )


def _resolve(backend: str, *tensors: Tensor) -> bool:
    if backend not in FUSED_BACKENDS:
        raise ValueError(f"backend: expected one of {FUSED_BACKENDS}, got {backend!r}")
    if backend == "triton":
        check_triton_request(*tensors)
        return True
    return backend == "auto" and use_triton(*tensors)


def _index(name: str, value: Tensor, length: int | None, upper: int | None) -> Tensor:
    """``value`` as a contiguous int64 ``[length]`` with entries in ``[0, upper)``."""
    if not isinstance(value, Tensor):
        raise TypeError(f"{name}: expected an integer tensor, got {type(value).__name__}")
    if value.is_floating_point() or value.is_complex() or value.dtype == torch.bool:
        raise TypeError(f"{name}: expected an integer (int64) index tensor, got {value.dtype}")
    if value.dim() != 1 or (length is not None and value.shape[0] != length):
        expected = f"[{length}]" if length is not None else "a 1-d tensor"
        raise ValueError(f"{name}: expected shape {expected}, got {list(value.shape)}")
    value = value.to(torch.long).contiguous()
    if upper is not None and value.numel():
        low, high = int(value.min()), int(value.max())
        if low < 0 or high >= upper:
            raise ValueError(f"{name}: entries must lie in [0, {upper}), got [{low}, {high}]")
    return value


def _check_ptr(ptr: Tensor, num_rows: int) -> Tensor:
    ptr = _index("ptr", ptr, None, None)
    if ptr.numel() == 0 or int(ptr[0]) != 0 or int(ptr[-1]) != num_rows:
        raise ValueError(
            f"ptr: expected CSR offsets starting at 0 and ending at {num_rows}, "
            f"got {ptr[:1].tolist()}…{ptr[-1:].tolist()}"
        )
    if bool((ptr[1:] < ptr[:-1]).any()):
        raise ValueError("ptr: CSR offsets must be non-decreasing (rows sorted by segment)")
    return ptr


def _features(name: str, value: Tensor, rows: int | None) -> Tensor:
    if not isinstance(value, Tensor) or not value.is_floating_point() or value.dim() != 2:
        shape = list(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise ValueError(f"{name}: expected a 2-d floating tensor, got {shape}")
    if rows is not None and value.shape[0] != rows:
        raise ValueError(f"{name}: expected {rows} rows, got {value.shape[0]}")
    return value.contiguous()


def _csr(index: Tensor, num_segments: int) -> tuple[Tensor, Tensor | None]:
    """``(ptr [S + 1], order)``: CSR offsets of ``index`` and the stable sort (None if sorted)."""
    counts = torch.bincount(index, minlength=num_segments)
    ptr = torch.zeros(num_segments + 1, dtype=torch.long, device=index.device)
    ptr[1:] = torch.cumsum(counts, 0)
    is_sorted = index.numel() < 2 or bool((index[1:] >= index[:-1]).all())
    return ptr, None if is_sorted else torch.argsort(index, stable=True)


def _deterministic(deterministic: bool | None) -> bool:
    if deterministic is None:
        return torch.are_deterministic_algorithms_enabled()
    return deterministic


class _OuterSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, x, src, ptr, deterministic):
        ctx.save_for_backward(h, x, src, ptr)
        ctx.deterministic = deterministic
        return _kernels().outer_sum(h, x, src, ptr)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        h, x, src, ptr = ctx.saved_tensors
        kernels = _kernels()
        grad = grad.contiguous().to(h.dtype)
        degree = ptr[1:] - ptr[:-1]
        nodes = torch.arange(degree.shape[0], device=ptr.device)
        dst = torch.repeat_interleave(nodes, degree, output_size=h.shape[0])
        grad_h = grad_x = None
        if ctx.needs_input_grad[0]:
            grad_h = kernels.edge_contract(grad, dst, x, src, last=True)
        if ctx.needs_input_grad[1]:
            per_edge = kernels.edge_contract(grad, dst, h, None, last=False)
            if src is None:
                grad_x = per_edge
            elif ctx.deterministic:
                sender_ptr, order = _csr(src, x.shape[0])
                grad_x = kernels.segment_reduce(per_edge, sender_ptr, order, "sum")[0]
            else:
                grad_x = x.new_zeros(x.shape).index_add_(0, src, per_edge)
        return grad_h, grad_x, None, None, None


def outer_sum_csr(
    h: Tensor,
    x: Tensor,
    ptr: Tensor,
    src: Tensor | None = None,
    deterministic: bool | None = None,
) -> Tensor:
    """``T [N, A, B]`` over receiver-sorted edges with the Triton kernels (no dispatch).

    Args:
        h: ``[E, A]`` per-edge kernel features, edges sorted by receiver.
        x: ``[M, B]`` sender features (``[E, B]`` per-edge features when ``src`` is None).
        ptr: ``[N + 1]`` CSR offsets: receiver ``i`` owns edges ``ptr[i]:ptr[i+1]``.
        src: ``[E]`` sender of each edge, or None.
        deterministic: see the module docstring.
    """
    h = _features("h", h, None)
    x = _features("x", x, h.shape[0] if src is None else None)
    ptr = _check_ptr(ptr, h.shape[0])
    if src is not None:
        src = _index("src", src, h.shape[0], x.shape[0])
    check_triton_request(h, x)
    dtype = torch.promote_types(h.dtype, x.dtype)
    return _OuterSum.apply(h.to(dtype), x.to(dtype), src, ptr, _deterministic(deterministic))


def fused_outer_sum(
    h: Tensor,
    x: Tensor,
    src: Tensor,
    dst: Tensor,
    num_nodes: int,
    backend: str = "auto",
    deterministic: bool | None = None,
) -> Tensor:
    """``T [N, A, B]`` with ``T_i = Σ_{e: dst_e = i} h_e ⊗ x_{src_e}``.

    Args:
        h: ``[E, A]`` per-edge hidden kernel features.
        x: ``[M, B]`` node features of the senders.
        src, dst: ``[E]`` sender and receiver of each edge (any order: sorted here).
        num_nodes: N, the number of receivers.
        backend: ``"auto"``, ``"triton"`` or ``"torch"`` (see the module docstring).
        deterministic: see the module docstring.
    """
    h = _features("h", h, None)
    x = _features("x", x, None)
    src = _index("src", src, h.shape[0], x.shape[0])
    dst = _index("dst", dst, h.shape[0], num_nodes)
    if not _resolve(backend, h, x):
        return neighbour_outer_sum(h, x[src], dst, num_nodes)
    ptr, order = _csr(dst, num_nodes)
    if order is not None:
        h, src = h[order], src[order]
    return outer_sum_csr(h, x, ptr, src, deterministic)


class _SegmentReduce(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, index, ptr, order, reduce):
        out, arg = _kernels().segment_reduce(x, ptr, order, reduce)
        ctx.save_for_backward(index, ptr, arg)
        ctx.reduce, ctx.x_shape = reduce, x.shape
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        index, ptr, arg = ctx.saved_tensors
        if ctx.reduce == "max":
            grad_x = grad.new_zeros(ctx.x_shape)
            columns = torch.arange(grad.shape[1], device=grad.device).expand_as(arg)
            won = arg >= 0
            grad_x[arg[won], columns[won]] = grad[won]
        else:
            grad_x = grad[index]
            if ctx.reduce == "mean":
                counts = (ptr[1:] - ptr[:-1]).clamp_min(1).to(grad.dtype)
                grad_x = grad_x / counts[index, None]
        return grad_x, None, None, None, None


def _torch_segment_reduce(x: Tensor, index: Tensor, num_segments: int, reduce: str) -> Tensor:
    out = x.new_zeros(num_segments, x.shape[1])
    if reduce == "max":
        expanded = index[:, None].expand_as(x)
        return out.scatter_reduce(0, expanded, x, "amax", include_self=False)
    out = out.index_add(0, index, x)
    if reduce == "mean":
        counts = torch.bincount(index, minlength=num_segments).clamp_min(1).to(x.dtype)
        out = out / counts[:, None]
    return out


def segment_reduce(
    x: Tensor,
    index: Tensor,
    num_segments: int,
    reduce: str = "sum",
    backend: str = "auto",
) -> Tensor:
    """``out [S, F]``: ``reduce`` (``"sum"``, ``"mean"``, ``"max"``) of the rows of each segment.

    Args:
        x: ``[R, F]`` rows (e.g. node features).
        index: ``[R]`` segment of each row (e.g. PyG's ``batch``; any order).
        num_segments: S (an int >= 0). Empty segments give 0.
        reduce: the reduction. For ``"max"`` the Triton path sends the gradient to the first
            row among equal maxima (torch's ``scatter_reduce`` splits it between them); a
            NaN in a segment makes its maximum NaN on both paths, and the Triton path sends
            that entry's gradient to the segment's first NaN row.
        backend: ``"auto"``, ``"triton"`` or ``"torch"``.
    """
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce: expected one of {REDUCTIONS}, got {reduce!r}")
    if not is_int(num_segments) or num_segments < 0:
        raise ValueError(f"num_segments: expected an int >= 0, got {num_segments!r}")
    num_segments = int(num_segments)
    x = _features("x", x, None)
    index = _index("index", index, x.shape[0], num_segments)
    if not _resolve(backend, x):
        return _torch_segment_reduce(x, index, num_segments, reduce)
    ptr, order = _csr(index, num_segments)
    return _SegmentReduce.apply(x, index, ptr, order, reduce)
