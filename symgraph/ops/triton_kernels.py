"""Triton kernels of the ``ops`` layer (CUDA; on CPU tensors only under ``TRITON_INTERPRET=1``).

Three kernels, all over edges grouped by segment in CSR form (``ptr [N + 1]``: the rows of
segment ``i`` are ``ptr[i]:ptr[i + 1]``), none of them with atomics, so every result is
bitwise reproducible:

- :func:`outer_sum`: ``T[i] = Σ_{e ∈ seg(i)} h[e] ⊗ x[src[e]]`` (``[N, A, B]``); one program
  per (receiver, ``A`` block, ``B`` block) gathers the rows of ``x``, accumulates the outer
  products in registers (``tl.dot`` over edge chunks, float32 accumulation; float16 and
  bfloat16 inputs are upcast, which tf32 multiplies exactly) and writes ``T[i]`` once: the
  per-edge products never reach memory;
- :func:`edge_contract`: ``out[e, o] = Σ_k G[dst[e], o, k] y[idx[e], k]`` (or over the
  middle axis of ``G``): both halves of the backward of :func:`outer_sum`;
- :func:`segment_reduce`: sum / mean / max of the rows of each segment (max also returns
  the row that won, for the backward).

Importing this module needs Triton; :mod:`symgraph.ops.fused` imports it lazily.
``TRITON_INTERPRET`` is read by ``triton.jit`` at decoration, and ``torch_geometric`` imports
Triton, so the interpreter must be chosen in the environment before Python starts.
Block sizes are autotuned on CUDA (keyed by the feature sizes); the interpreter cannot
benchmark, so it runs the first configuration of each list.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import triton
import triton.language as tl
from torch import Tensor
from triton.runtime.interpreter import InterpretedFunction

__all__ = ["INTERPRET", "REDUCE_CODES", "edge_contract", "outer_sum", "segment_reduce"]

REDUCE_CODES = {"sum": 0, "mean": 1, "max": 2}


@triton.jit
def _outer_sum_kernel(
    h_ptr, x_ptr, src_ptr, ptr_ptr, out_ptr, num_a, num_b,
    HAS_SRC: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_E: tl.constexpr, BLOCK_A: tl.constexpr, BLOCK_B: tl.constexpr,
):  # fmt: skip
    node = tl.program_id(0).to(tl.int64)
    offs_a = tl.program_id(1) * BLOCK_A + tl.arange(0, BLOCK_A)
    offs_b = tl.program_id(2) * BLOCK_B + tl.arange(0, BLOCK_B)
    mask_a = offs_a < num_a
    mask_b = offs_b < num_b
    start = tl.load(ptr_ptr + node)
    stop = tl.load(ptr_ptr + node + 1)
    acc = tl.zeros((BLOCK_A, BLOCK_B), dtype=tl.float32)
    for e0 in range(start, stop, BLOCK_E):
        edges = e0 + tl.arange(0, BLOCK_E)
        mask_e = edges < stop
        if HAS_SRC:
            rows = tl.load(src_ptr + edges, mask=mask_e, other=0)
        else:
            rows = edges
        h = tl.load(
            h_ptr + edges[:, None] * num_a + offs_a[None, :],
            mask=mask_e[:, None] & mask_a[None, :],
            other=0.0,
        ).to(tl.float32)
        x = tl.load(
            x_ptr + rows[:, None] * num_b + offs_b[None, :],
            mask=mask_e[:, None] & mask_b[None, :],
            other=0.0,
        ).to(tl.float32)
        acc = tl.dot(tl.trans(h), x, acc, input_precision=PRECISION)
    out = out_ptr + node * num_a * num_b + offs_a[:, None] * num_b + offs_b[None, :]
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=mask_a[:, None] & mask_b[None, :])


@triton.jit
def _edge_contract_kernel(
    g_ptr, dst_ptr, y_ptr, idx_ptr, out_ptr, num_edges, num_o, num_k, stride_o, stride_k,
    HAS_IDX: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    edges = tl.program_id(0).to(tl.int64) * BLOCK_E + tl.arange(0, BLOCK_E)
    offs_o = tl.program_id(1) * BLOCK_O + tl.arange(0, BLOCK_O)
    mask_e = edges < num_edges
    mask_o = offs_o < num_o
    nodes = tl.load(dst_ptr + edges, mask=mask_e, other=0)
    if HAS_IDX:
        rows = tl.load(idx_ptr + edges, mask=mask_e, other=0)
    else:
        rows = edges
    g_rows = g_ptr + nodes * num_o * num_k
    acc = tl.zeros((BLOCK_E, BLOCK_O), dtype=tl.float32)
    for k0 in range(0, num_k, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask_k = offs_k < num_k
        y = tl.load(
            y_ptr + rows[:, None] * num_k + offs_k[None, :],
            mask=mask_e[:, None] & mask_k[None, :],
            other=0.0,
        ).to(tl.float32)
        g = tl.load(
            g_rows[:, None, None]
            + offs_o[None, :, None] * stride_o
            + offs_k[None, None, :] * stride_k,
            mask=mask_e[:, None, None] & mask_o[None, :, None] & mask_k[None, None, :],
            other=0.0,
        ).to(tl.float32)
        acc += tl.sum(g * y[:, None, :], axis=2)
    out = out_ptr + edges[:, None] * num_o + offs_o[None, :]
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=mask_e[:, None] & mask_o[None, :])


@triton.jit
def _segment_reduce_kernel(
    x_ptr, idx_ptr, ptr_ptr, out_ptr, arg_ptr, num_f,
    HAS_IDX: tl.constexpr, REDUCE: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_F: tl.constexpr,
):  # fmt: skip
    seg = tl.program_id(0).to(tl.int64)
    offs_f = tl.program_id(1) * BLOCK_F + tl.arange(0, BLOCK_F)
    mask_f = offs_f < num_f
    start = tl.load(ptr_ptr + seg)
    stop = tl.load(ptr_ptr + seg + 1)
    if REDUCE == 2:
        acc = tl.full((BLOCK_F,), float("-inf"), dtype=tl.float32)
    else:
        acc = tl.zeros((BLOCK_F,), dtype=tl.float32)
    arg = tl.full((BLOCK_F,), -1, dtype=tl.int64)
    seen_nan = tl.zeros((BLOCK_F,), dtype=tl.int1)
    for e0 in range(start, stop, BLOCK_E):
        pos = e0 + tl.arange(0, BLOCK_E)
        mask_e = pos < stop
        if HAS_IDX:
            rows = tl.load(idx_ptr + pos, mask=mask_e, other=0)
        else:
            rows = pos
        mask = mask_e[:, None] & mask_f[None, :]
        vals = tl.load(x_ptr + rows[:, None] * num_f + offs_f[None, :], mask=mask, other=0.0)
        vals = vals.to(tl.float32)
        if REDUCE == 2:  # NaN wins, as in torch: the first NaN row becomes the arg
            nan = mask & (vals != vals)
            vals = tl.where(mask & ~nan, vals, float("-inf"))
            chunk_max = tl.max(vals, axis=0)
            big = tl.full((BLOCK_E, BLOCK_F), 1 << 62, dtype=tl.int64)
            hits = mask & ~nan & (vals == chunk_max[None, :])
            chunk_arg = tl.min(tl.where(hits, rows[:, None], big), axis=0)
            nan_arg = tl.min(tl.where(nan, rows[:, None], big), axis=0)
            better = (chunk_max > acc) | ((arg < 0) & (chunk_arg < (1 << 62)))
            better = better & ~seen_nan
            acc = tl.where(better, chunk_max, acc)
            arg = tl.where(better, chunk_arg, arg)
            first_nan = ~seen_nan & (nan_arg < (1 << 62))
            arg = tl.where(first_nan, nan_arg, arg)
            seen_nan = seen_nan | first_nan
        else:
            acc += tl.sum(vals, axis=0)
    if REDUCE == 1:
        acc = acc / tl.maximum(stop - start, 1).to(tl.float32)
    if REDUCE == 2:
        acc = tl.where(arg >= 0, acc, 0.0)
        acc = tl.where(seen_nan, float("nan"), acc)
        tl.store(arg_ptr + seg * num_f + offs_f, arg, mask=mask_f)
    tl.store(out_ptr + seg * num_f + offs_f, acc.to(out_ptr.dtype.element_ty), mask=mask_f)


INTERPRET = isinstance(_outer_sum_kernel, InterpretedFunction)
"""Whether these kernels were built for Triton's CPU interpreter."""
if INTERPRET != isinstance(tl.sum, InterpretedFunction):
    raise ImportError(
        "TRITON_INTERPRET changed after Triton was first imported (torch_geometric imports it): "
        "set it in the environment before starting Python"
    )

_OUTER_CONFIGS = [
    triton.Config({"BLOCK_E": 16, "BLOCK_A": 32, "BLOCK_B": 32}, num_warps=4),
    triton.Config({"BLOCK_E": 32, "BLOCK_A": 32, "BLOCK_B": 32}, num_warps=4),
    triton.Config({"BLOCK_E": 32, "BLOCK_A": 64, "BLOCK_B": 64}, num_warps=4),
    triton.Config({"BLOCK_E": 64, "BLOCK_A": 64, "BLOCK_B": 64}, num_warps=8),
    triton.Config({"BLOCK_E": 16, "BLOCK_A": 16, "BLOCK_B": 16}, num_warps=2),
]
_CONTRACT_CONFIGS = [
    triton.Config({"BLOCK_E": 32, "BLOCK_O": 32, "BLOCK_K": 16}, num_warps=4),
    triton.Config({"BLOCK_E": 64, "BLOCK_O": 16, "BLOCK_K": 16}, num_warps=4),
    triton.Config({"BLOCK_E": 16, "BLOCK_O": 64, "BLOCK_K": 16}, num_warps=4),
    triton.Config({"BLOCK_E": 32, "BLOCK_O": 32, "BLOCK_K": 32}, num_warps=8),
]
_SEGMENT_CONFIGS = [
    triton.Config({"BLOCK_E": 32, "BLOCK_F": 64}, num_warps=4),
    triton.Config({"BLOCK_E": 64, "BLOCK_F": 128}, num_warps=4),
    triton.Config({"BLOCK_E": 16, "BLOCK_F": 256}, num_warps=4),
    triton.Config({"BLOCK_E": 32, "BLOCK_F": 32}, num_warps=2),
]


def _launcher(kernel, configs: list, key: list[str]) -> Callable:
    """``launch(grid_fn, *args, **kwargs)``: autotuned on CUDA, first config when interpreted."""
    if INTERPRET:

        def launch(grid_fn, *args, **kwargs):
            meta = configs[0].kwargs
            kernel[grid_fn(meta)](*args, **kwargs, **meta)

        return launch
    tuned = triton.autotune(configs=configs, key=key)(kernel)

    def launch(grid_fn, *args, **kwargs):
        tuned[grid_fn](*args, **kwargs)

    return launch


_launch_outer = _launcher(_outer_sum_kernel, _OUTER_CONFIGS, ["num_a", "num_b"])
_launch_contract = _launcher(_edge_contract_kernel, _CONTRACT_CONFIGS, ["num_o", "num_k"])
_launch_segment = _launcher(_segment_reduce_kernel, _SEGMENT_CONFIGS, ["num_f", "REDUCE"])


def _check_device(*tensors: Tensor) -> None:
    if not INTERPRET and any(not t.is_cuda for t in tensors):
        raise RuntimeError(
            "the Triton kernels need CUDA tensors (or TRITON_INTERPRET=1 set before "
            "symgraph.ops.triton_kernels is first imported); got a CPU tensor"
        )


def _precision(dtype: torch.dtype) -> str:
    """``tl.dot`` precision: float16/bfloat16 inputs (upcast) are exact in tf32."""
    if dtype != torch.float32 or torch.backends.cuda.matmul.allow_tf32:
        return "tf32"
    return "ieee"


def outer_sum(h: Tensor, x: Tensor, src: Tensor | None, ptr: Tensor) -> Tensor:
    """``T [N, A, B]``, ``T[i] = Σ_{e=ptr[i]}^{ptr[i+1]-1} h[e] ⊗ x[src[e]]``.

    Args (contiguous, same floating dtype, validated by the caller):
        h: ``[E, A]``; x: ``[M, B]`` (``[E, B]`` when ``src`` is None: ``x[e]`` is used);
        src: ``[E]`` int64 rows of ``x`` or None; ptr: ``[N + 1]`` int64 CSR offsets.
    """
    _check_device(h, x, ptr)
    num_nodes, num_a, num_b = ptr.shape[0] - 1, h.shape[1], x.shape[1]
    out = h.new_empty(num_nodes, num_a, num_b)
    if out.numel() == 0:
        return out

    def grid(meta):
        return num_nodes, triton.cdiv(num_a, meta["BLOCK_A"]), triton.cdiv(num_b, meta["BLOCK_B"])

    _launch_outer(
        grid, h, x, ptr if src is None else src, ptr, out, num_a, num_b,
        HAS_SRC=src is not None, PRECISION=_precision(h.dtype),
    )  # fmt: skip
    return out


def edge_contract(g: Tensor, dst: Tensor, y: Tensor, idx: Tensor | None, last: bool) -> Tensor:
    """Per-edge contraction with the receiver's matrix ``g [N, A, B]``.

    ``last=True``: ``out[e, a] = Σ_b g[dst[e], a, b] y[idx[e], b]`` (``[E, A]``);
    ``last=False``: ``out[e, b] = Σ_a g[dst[e], a, b] y[idx[e], a]`` (``[E, B]``).
    ``idx=None`` reads ``y[e]``. Inputs contiguous, int64 indices.
    """
    _check_device(g, dst, y)
    num_edges = dst.shape[0]
    num_a, num_b = g.shape[1], g.shape[2]
    num_o, num_k, stride_o, stride_k = (
        (num_a, num_b, num_b, 1) if last else (num_b, num_a, 1, num_b)
    )
    out = g.new_empty(num_edges, num_o)
    if out.numel() == 0:
        return out.zero_()

    def grid(meta):
        return triton.cdiv(num_edges, meta["BLOCK_E"]), triton.cdiv(num_o, meta["BLOCK_O"])

    _launch_contract(
        grid, g, dst, y, dst if idx is None else idx, out, num_edges, num_o, num_k,
        stride_o, stride_k, HAS_IDX=idx is not None,
    )  # fmt: skip
    return out


def segment_reduce(
    x: Tensor, ptr: Tensor, idx: Tensor | None, reduce: str
) -> tuple[Tensor, Tensor | None]:
    """``out [S, F]``: ``reduce`` over rows ``x[idx[ptr[s]:ptr[s+1]]]`` of each segment ``s``.

    ``idx=None`` reads rows ``ptr[s]:ptr[s+1]`` of ``x``. Empty segments give 0. For
    ``"max"`` also returns ``arg [S, F]`` (int64): the row of ``x`` that won (first among
    equal values, ``-1`` for an empty segment); otherwise ``None``.
    """
    _check_device(x, ptr)
    num_segments, num_f = ptr.shape[0] - 1, x.shape[1]
    code = REDUCE_CODES[reduce]
    out = x.new_empty(num_segments, num_f)
    arg = torch.empty(num_segments, num_f, dtype=torch.long, device=x.device) if code == 2 else None
    if out.numel() == 0:
        return out, arg

    def grid(meta):
        return num_segments, triton.cdiv(num_f, meta["BLOCK_F"])

    _launch_segment(
        grid, x, ptr if idx is None else idx, ptr, out, out if arg is None else arg, num_f,
        HAS_IDX=idx is not None, REDUCE=code,
    )  # fmt: skip
    return out, arg
