"""The implicit convolution, node block by node block.

``out_i = W̃( Σ_{j→i} h(x_ij, e_ij) ⊗ f_j )`` is computed for blocks of consecutive
receivers whose incoming edges are contiguous (edges are sorted by receiver once). Each
block evaluates the kernel features of its edges, contracts them with the source features
(:func:`neighbour_outer_sum`; on CUDA the Triton kernel of :func:`symgraph.ops.fused_outer_sum`,
which gathers the source features itself) and applies ``W̃``; with ``checkpoint=True`` a block keeps
nothing for backward but its inputs and recomputes the rest, so the peak memory is that of
one block plus the node features, whatever the number of edges.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.utils.checkpoint
from torch import Tensor

from symgraph.ops import fused
from symgraph.ops.contraction import EdgeLayout, neighbour_outer_sum

__all__ = ["implicit_convolution", "default_block_edges", "CPU_BLOCK_EDGES", "CUDA_BLOCK_EDGES"]

CPU_BLOCK_EDGES = 8192
"""Edges per block on the CPU: a block's kernel activations stay in cache."""
CUDA_BLOCK_EDGES = 1 << 18
"""Edges per block on a GPU: few blocks, hence few kernel launches and host synchronisations
(one block of this size holds some hundreds of MB of activations)."""

HiddenFn = Callable[[Tensor, Tensor | None, Tensor | None, Tensor | None], Tensor]
"""``(rel [e, 3], edge_attr, node_src, node_dst) -> h [e, A]`` (views allowed)."""


def default_block_edges(device: torch.device) -> int:
    """:data:`CUDA_BLOCK_EDGES` on CUDA devices, else :data:`CPU_BLOCK_EDGES`."""
    return CUDA_BLOCK_EDGES if device.type == "cuda" else CPU_BLOCK_EDGES


def _take(value: Tensor | None, index: Tensor | slice) -> Tensor | None:
    return None if value is None else value[index]


def implicit_convolution(
    hidden_fn: HiddenFn,
    weight: Tensor,
    x: Tensor,
    src: Tensor,
    dst: Tensor,
    rel: Tensor,
    edge_attr: Tensor | None,
    node_src: Tensor | None,
    node_dst: Tensor | None,
    num_nodes: int,
    mean: bool = False,
    backend: str = "auto",
    checkpoint: bool = True,
    block_edges: int | None = None,
    layout: EdgeLayout | None = None,
    edge_weight: Tensor | None = None,
) -> Tensor:
    """Neighbour sum of the implicit kernel applied to ``x``: ``[N, weight.shape[0]]``.

    Args:
        hidden_fn: ``(rel [e, 3], edge_attr, node_src, node_dst) -> h [e, A]``.
        weight: the bilinear head ``W̃ [C_out, A, B]``.
        x: ``[N, B]`` node features.
        src, dst: ``[E]`` sender and receiver of each edge.
        rel: ``[E, 3]`` relative positions ``x_src − x_dst``.
        edge_attr, node_src, node_dst: ``[E, ·]`` per-edge scalar inputs of the kernel or None.
        num_nodes: N.
        mean: divide by the in-degree (nodes without edges stay zero).
        backend: see :func:`neighbour_outer_sum`.
        checkpoint: recompute each block in backward instead of storing its activations.
        block_edges: about how many edges one block holds (None: :func:`default_block_edges`).
        layout: ``EdgeLayout.from_receivers(dst, num_nodes)`` when the caller has it.
        edge_weight: ``[E]`` factor of each edge's message (its hidden features ``h_ij``),
            e.g. an explanation edge mask; None: 1.
    """
    layout = layout or EdgeLayout.from_receivers(dst, num_nodes)
    if layout.order is not None:
        order = layout.order
        src, dst, rel = src[order], dst[order], rel[order]
        edge_attr, node_src, node_dst, edge_weight = (
            _take(v, order) for v in (edge_attr, node_src, node_dst, edge_weight)
        )
    ptr = torch.zeros(num_nodes + 1, dtype=torch.long, device=dst.device)
    ptr[1:] = torch.cumsum(layout.degree, 0)
    block_edges = block_edges or default_block_edges(x.device)
    per_node = max(1, block_edges // max(layout.k_max, 1))
    use_checkpoint = checkpoint and torch.is_grad_enabled()
    starts = ptr.tolist()
    outputs = []
    for node_start in range(0, num_nodes, per_node):
        node_stop = min(node_start + per_node, num_nodes)
        e0, e1 = starts[node_start], starts[node_stop]
        args = (
            x, src[e0:e1], dst[e0:e1] - node_start, rel[e0:e1], _take(edge_attr, slice(e0, e1)),
            _take(node_src, slice(e0, e1)), _take(node_dst, slice(e0, e1)), weight,
            _take(edge_weight, slice(e0, e1)),
        )  # fmt: skip
        fn = _block_function(hidden_fn, node_stop - node_start, mean, backend)
        if use_checkpoint:
            outputs.append(torch.utils.checkpoint.checkpoint(fn, *args, use_reentrant=False))
        else:
            outputs.append(fn(*args))
    if not outputs:
        return x.new_zeros(0, weight.shape[0])
    return outputs[0] if len(outputs) == 1 else torch.cat(outputs)


def _gather_in_kernel(backend: str, layout: EdgeLayout, h: Tensor, x: Tensor) -> bool:
    """Whether the Triton kernel gathers ``x[src]`` itself (no ``[E, B]`` copy in memory):
    when asked for, or on CUDA for irregular graphs when Triton is installed."""
    if backend == "triton":
        return True
    return backend == "auto" and not layout.regular and h.is_cuda and fused.use_triton(h, x)


def _block_function(hidden_fn: HiddenFn, num_block_nodes: int, mean: bool, backend: str):
    def run(x, src, dst, rel, edge_attr, node_src, node_dst, weight, edge_weight):
        if src.numel() == 0:  # zeros still connected to x and weight, as a sum would be
            return x.new_zeros(num_block_nodes, weight.shape[0]) + 0 * (x.sum() + weight.sum())
        h = hidden_fn(rel, edge_attr, node_src, node_dst)
        if edge_weight is not None:
            h = h * edge_weight[:, None]
        layout = EdgeLayout.from_receivers(dst, num_block_nodes)
        if _gather_in_kernel(backend, layout, h, x):
            summed = fused.fused_outer_sum(h, x, src, dst, num_block_nodes, backend="triton")
        else:
            f = x.index_select(0, src)
            summed = neighbour_outer_sum(h, f, dst, num_block_nodes, layout, backend)
        if mean:
            summed = summed / layout.degree.clamp_min(1).to(summed)[:, None, None]
        # contract T [n, A, B] with W̃ [C, A, B] in the order T is laid out in (no copy of T)
        if summed.is_contiguous():
            return summed.reshape(num_block_nodes, -1) @ weight.reshape(weight.shape[0], -1).T
        summed = summed.transpose(1, 2).reshape(num_block_nodes, -1)
        return summed @ weight.transpose(1, 2).reshape(weight.shape[0], -1).T

    return run
