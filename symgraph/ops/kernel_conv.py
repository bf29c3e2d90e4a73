"""The implicit convolution as one autograd function with a hand-written backward.

For a plain :class:`~symgraph.nn.ImplicitKernel` (embedding → gated layers → envelope →
bilinear head), :func:`fused_implicit_convolution` runs the layer node block by node block
and keeps nothing for backward but its inputs, like ``checkpoint=True``. Its backward
recomputes each block's MLP and neighbour contraction once, without autograd bookkeeping:
no per-operation graph nodes, no second evaluation of the head, weight gradients
accumulated in place, and one ``index_add_`` per block for the source features. Double
backward (``create_graph=True``: teleportation, force training) differentiates the same
computation written with autograd operations.

Blocks use the ``"regular"`` or ``"padded"`` layout of :mod:`symgraph.ops.contraction`
(batched matmuls over ``[n, k, ·]`` slots). Given the head's nonzero blocks
(``head_groups``, :mod:`symgraph.ops.sparse_head`), the head is applied block by block,
forward and backward, instead of as one dense ``[n, A·B] @ [A·B, C]`` product.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from symgraph.ops.contraction import EdgeLayout
from symgraph.ops.gate import GateSegment
from symgraph.ops.implicit_conv import default_block_edges
from symgraph.ops.kernel_mlp import KernelLayer, Workspace, hidden_backward, hidden_forward
from symgraph.ops.sparse_head import (
    HeadGroup,
    gathered_sums,
    group_weights,
    grouped_head,
    scatter_group_grads,
    uncovered_blocks,
)

__all__ = ["fused_implicit_convolution"]


@dataclass(frozen=True)
class _Block:
    """Receivers ``[node_start, node_stop)`` and their edges ``[edge_start, edge_stop)``."""

    node_start: int
    node_stop: int
    edge_start: int
    edge_stop: int
    k: int  # slots per receiver (largest in-degree of the block)
    slot: Tensor | None  # [e] padded slot of each edge, None when every receiver has k edges
    degree: Tensor  # [n]
    senders: Tensor  # [n·k] sender of each slot; empty slots read the zero row N


@dataclass(frozen=True)
class _Plan:
    blocks: tuple[_Block, ...]
    segments: tuple[tuple[GateSegment, ...], ...]
    num_nodes: int
    mean: bool
    keep: bool  # keep every block's intermediates for backward instead of recomputing
    groups: tuple[HeadGroup, ...] | None  # the head's nonzero blocks (None: dense head)

    def layers(self, params: tuple[Tensor | None, ...]) -> list[tuple[Tensor, Tensor | None]]:
        return [(params[2 * i], params[2 * i + 1]) for i in range(len(self.segments))]


def fused_implicit_convolution(
    layers: list[KernelLayer],
    head: Tensor,
    x: Tensor,
    src: Tensor,
    dst: Tensor,
    embedding: Tensor,
    envelope: Tensor | None,
    layout: EdgeLayout,
    mean: bool = False,
    block_edges: int | None = None,
    keep_activations: bool = False,
    head_groups: tuple[HeadGroup, ...] | None = None,
    backend: str = "auto",
) -> Tensor:
    """``out_i = W̃( Σ_{j→i} h(e_ij) ⊗ x_j )`` for a plain implicit kernel: ``[N, C]``.

    Args:
        layers: the kernel MLP's gated layers, assembled.
        head: the bilinear head ``W̃ [C, A, B]``.
        x: ``[N, B]`` node features.
        src, dst: ``[E]`` sender and receiver of each edge.
        embedding: ``[D_0, E]`` the MLP's input per edge (radial basis, attributes, Y_l),
            feature-major (:meth:`~symgraph.nn.ImplicitKernel.embed_feature_major`).
        envelope: ``[E]`` cutoff envelope multiplying the hidden features, or None.
        layout: ``EdgeLayout.from_receivers(dst, N)``; its choice for ``backend`` must be
            ``"regular"`` or ``"padded"``.
        mean: divide by the in-degree (nodes without edges stay zero).
        block_edges: about how many edges one block holds (None:
            :func:`~symgraph.ops.implicit_conv.default_block_edges`).
        keep_activations: keep every block's intermediates for backward (faster backward,
            memory growing with the number of edges) instead of recomputing them (peak
            memory of one block).
        head_groups: the head's nonzero blocks (:func:`~symgraph.ops.sparse_head.head_groups`
            of its basis): the head is then applied block-sparsely. None: dense.
        backend: the caller's contraction backend (``"auto"``, ``"regular"`` or
            ``"padded"``; ``"padded"`` is honoured on graphs that ``"auto"`` would scatter).
    """
    chosen = layout.choose(backend)
    if chosen not in ("regular", "padded"):
        raise ValueError(f"layout: the fused path needs a regular or padded layout, got {chosen}")
    relabel = None
    if not layout.regular and not _ascending(layout.degree):
        # receivers by in-degree: blocks of similar degree pad little
        node_order = torch.argsort(layout.degree, stable=True)
        relabel = torch.empty_like(node_order)
        relabel[node_order] = torch.arange(layout.num_nodes, device=node_order.device)
        dst = relabel[dst]
        layout = EdgeLayout.from_receivers(dst, layout.num_nodes)
    if layout.order is not None:
        order = layout.order
        src, dst, embedding = src[order], dst[order], embedding[:, order]
        envelope = None if envelope is None else envelope[order]
    plan = _Plan(
        blocks=_blocks(src, dst, layout, block_edges or default_block_edges(x.device)),
        segments=tuple(layer.segments for layer in layers),
        num_nodes=layout.num_nodes,
        mean=mean,
        keep=keep_activations,
        groups=head_groups,
    )
    params = [t for layer in layers for t in (layer.weight, layer.bias)]
    out = _KernelConvFunction.apply(plan, embedding, envelope, x, head, *params)
    return out if relabel is None else out[relabel]


def _ascending(degree: Tensor) -> bool:
    """Whether the receivers are already in order of in-degree (as
    :func:`~symgraph.graph.order_by_in_degree` leaves them)."""
    return degree.numel() < 2 or bool((degree[1:] >= degree[:-1]).all())


def _blocks(src: Tensor, dst: Tensor, layout: EdgeLayout, block_edges: int) -> tuple[_Block, ...]:
    """Consecutive receivers, each block holding about ``block_edges`` slots (receivers ×
    its largest in-degree; receivers are sorted by degree unless the graph is regular);
    ``src, dst [E]`` sorted by receiver."""
    degree = layout.degree
    degrees = degree.tolist()
    ptr = [0, *torch.cumsum(degree, 0).tolist()]
    blocks = []
    n0 = 0
    while n0 < layout.num_nodes:
        # slots of [n0, n1) grow with n1 (degrees are sorted or all equal): bisect for the
        # last n1 within the budget, at least one receiver
        stops = range(n0 + 1, layout.num_nodes + 1)
        fits = bisect.bisect_right(
            stops, block_edges, key=lambda stop: (stop - n0) * max(degrees[stop - 1], 1)
        )
        n1 = n0 + max(fits, 1)
        e0, e1 = ptr[n0], ptr[n1]
        block_degree = degree[n0:n1]
        k = max(degrees[n0:n1]) if e1 > e0 else 0
        slot, senders = None, src[e0:e1]
        if e1 > e0 and not bool((block_degree == k).all()):
            local = dst[e0:e1] - n0
            first = torch.cumsum(block_degree, 0) - block_degree  # first edge of each receiver
            rank = torch.arange(e1 - e0, device=dst.device) - first[local]
            slot = local * k + rank
            # empty slots read row N of the node features, a row of zeros
            senders = src.new_full(((n1 - n0) * k,), layout.num_nodes).index_copy_(0, slot, senders)
        blocks.append(_Block(n0, n1, e0, e1, k, slot, block_degree, senders))
        n0 = n1
    return tuple(blocks)


def _slot_features(x_aligned: Tensor, block: _Block, out: Tensor | None = None) -> Tensor:
    """The senders' features in the receivers' slots, ``[n, k, B']``, zero in empty slots:
    one gather of ``x_aligned [N + 1, B']`` (:func:`_aligned_features`, whose last row is
    zero) by :attr:`_Block.senders` (written into ``out [n·k, B']`` when given)."""
    n = block.node_stop - block.node_start
    if out is None:
        gathered = x_aligned.index_select(0, block.senders)
    else:
        gathered = torch.index_select(x_aligned, 0, block.senders, out=out)
    return gathered.view(n, block.k, x_aligned.shape[1])


def _receiver_major(h: Tensor, block: _Block, out: Tensor | None = None) -> Tensor:
    """Feature-major ``h [A', e]`` as ``[n, A', k]`` matrices, one per receiver: a strided
    view (no copy) when every receiver has k edges, else via zero-padded slots (written into
    ``out [A', n·k]`` when given)."""
    n = block.node_stop - block.node_start
    if block.slot is not None:
        slots = h.new_zeros(h.shape[0], n * block.k) if out is None else out.zero_()
        if out is None:
            h = slots.index_copy(1, block.slot, h)
        else:
            h = slots.index_copy_(1, block.slot, h)
    return h.view(h.shape[0], n, block.k).permute(1, 0, 2)


def _aligned(width: int) -> int:
    """``width`` rounded up to a multiple of 8: CPU batched matmuls over ``[n, k, ·]`` run
    about 1.5x faster on aligned widths (zero columns cost less than misalignment)."""
    return -(-width // 8) * 8


def _head_matrix(head: Tensor) -> Tensor:
    """``W̃ [C, A, B] -> [A'·B', C']`` matching the ``[n, A', B']`` layout of the node sums
    (``A'``, ``B'``, ``C'``: the aligned widths, with zeros for the padding)."""
    num_c, num_a, num_b = head.shape
    pad_a, pad_b = _aligned(num_a) - num_a, _aligned(num_b) - num_b
    matrix = F.pad(head.permute(1, 2, 0), (0, _aligned(num_c) - num_c, 0, pad_b, 0, pad_a))
    return matrix.reshape(-1, matrix.shape[-1])


def _aligned_features(x: Tensor) -> Tensor:
    """``x [N, B] -> [N + 1, B']``: zero columns up to the aligned width and a row of zeros
    (row N, which the empty slots of padded blocks read)."""
    return F.pad(x, (0, _aligned(x.shape[1]) - x.shape[1], 0, 1))


def _block_sums(
    plan: _Plan,
    block: _Block,
    layers: list[tuple[Tensor, Tensor | None]],
    embedding: Tensor,
    envelope: Tensor | None,
    x_aligned: Tensor,
    workspace: Workspace | None,
):
    """One block's node sums before the head: ``(h_pre, saved layers, H [n, A', k],
    fp [n, k, B'], S [n, A', B'])`` with ``S = H fp`` (see :func:`hidden_forward`; autograd when
    ``workspace`` is None). The MLP's output stays feature-major ``[A', e]``; ``H`` is one
    copy of it receiver by receiver (a view of it with autograd)."""
    e0, e1 = block.edge_start, block.edge_stop
    n, k = block.node_stop - block.node_start, block.k
    rows = _aligned(sum(seg.length for seg in plan.segments[-1]))  # A': zero rows after A
    h_pre, saved = hidden_forward(layers, plan.segments, embedding[:, e0:e1], workspace, rows)
    if workspace is None:
        h = h_pre if envelope is None else h_pre * envelope[e0:e1]
        hr = _receiver_major(F.pad(h, (0, 0, 0, _aligned(h.shape[0]) - h.shape[0])), block)
        fp = _slot_features(x_aligned, block)
        return h_pre, saved, hr, fp, torch.bmm(hr, fp)
    h = h_pre
    if envelope is not None:
        h = torch.mul(h_pre, envelope[e0:e1], out=workspace.get("h", *h_pre.shape))
    width_a, width_b = h.shape[0], x_aligned.shape[1]
    hr = _receiver_major(h, block, workspace.get("hs", width_a, n * k))
    # a contiguous copy: the batched products with H (here and in backward) run faster on it
    hr = workspace.get("hr", n, width_a, k).copy_(hr)
    fp = _slot_features(x_aligned, block, workspace.get("fp", n * k, width_b))
    summed = torch.bmm(hr, fp, out=workspace.get("s", n, width_a, width_b))
    return h_pre, saved, hr, fp, summed


def _forward_all(
    plan, layers, embedding, envelope, x, head, differentiable: bool, kept: list | None = None
) -> Tensor:
    """The layer's output ``[N, C]``; with ``kept``, appends each block's
    :func:`_block_sums` (None for blocks without edges) for the backward."""
    sparse = plan.groups is not None and not differentiable
    weights = group_weights(head, plan.groups) if sparse else None
    head_matrix = None if sparse else _head_matrix(head)
    x_aligned = _aligned_features(x)
    workspace = None if differentiable else Workspace(x)
    outputs = []
    for block in plan.blocks:
        if block.edge_stop == block.edge_start:
            n = block.node_stop - block.node_start
            outputs.append(x.new_zeros(n, head.shape[0]))
            if kept is not None:
                kept.append(None)
            continue
        if kept is not None:
            workspace = Workspace(x)  # buffers of its own: they outlive the block
        sums = _block_sums(plan, block, layers, embedding, envelope, x_aligned, workspace)
        if kept is not None:
            kept.append(sums)
        summed = sums[-1]
        if weights is not None:
            scratch = workspace.get("g", summed.shape[0] * max(g.size for g in plan.groups))
            out = grouped_head(summed, plan.groups, weights, head.shape[0], scratch)
        else:
            out = (summed.reshape(summed.shape[0], -1) @ head_matrix)[:, : head.shape[0]]
        if plan.mean:
            out = out / block.degree.clamp_min(1).to(out)[:, None]
        outputs.append(out)
    if not outputs:
        return x.new_zeros(0, head.shape[0])
    return outputs[0] if len(outputs) == 1 else torch.cat(outputs)


class _KernelConvFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, plan: _Plan, embedding, envelope, x, head, *params) -> Tensor:
        ctx.plan = plan
        ctx.save_for_backward(embedding, envelope, x, head, *params)
        ctx.kept = [] if plan.keep else None
        layers = plan.layers(params)
        return _forward_all(plan, layers, embedding, envelope, x, head, False, ctx.kept)

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor):
        plan: _Plan = ctx.plan
        embedding, envelope, x, head, *params = ctx.saved_tensors
        needs = ctx.needs_input_grad[1:]
        if torch.is_grad_enabled():  # create_graph=True
            return (None, *_differentiable_backward(plan, needs, grad_out, ctx.saved_tensors))
        layers = plan.layers(tuple(params))
        x_aligned = _aligned_features(x)
        num_c, num_a, num_b = head.shape
        if plan.groups is None:
            head_t = _head_matrix(head)[:, :num_c].T.contiguous()  # [C, A'·B']
            grad_head_t = torch.zeros_like(head_t)
        else:
            weights = group_weights(head, plan.groups)
            grad_weights = [[torch.zeros_like(w) for w in ws] for ws in weights]
        grad_x = torch.zeros_like(x_aligned) if needs[2] else None
        grad_emb = torch.zeros_like(embedding) if needs[0] else None
        grad_env = torch.zeros_like(envelope) if envelope is not None and needs[1] else None
        grad_params = [None if p is None else torch.zeros_like(p) for p in params]
        workspace = Workspace(x)
        for number, block in enumerate(plan.blocks):
            e0, e1 = block.edge_start, block.edge_stop
            if e1 == e0:
                continue
            n = block.node_stop - block.node_start
            dout = grad_out[block.node_start : block.node_stop]
            if plan.mean:
                dout = dout / block.degree.clamp_min(1).to(dout)[:, None]
            if ctx.kept is not None:
                h_pre, saved, hr, fp, summed = ctx.kept[number]
            else:
                h_pre, saved, hr, fp, summed = _block_sums(
                    plan, block, layers, embedding, envelope, x_aligned, workspace
                )
            if plan.groups is None:
                grad_head_t.addmm_(dout.T, summed.reshape(n, -1))
                # from here on, the recomputed S (not a kept one) may be overwritten
                d_summed = workspace.get("s", *summed.shape)  # [n, A', B']
                torch.mm(dout, head_t, out=d_summed.view(n, -1))
            else:
                d_summed = _grouped_backward(
                    plan.groups, weights, grad_weights, summed, dout, workspace
                )
            if grad_x is not None:
                df = torch.bmm(hr.transpose(1, 2), d_summed, out=workspace.get("df", *fp.shape))
                # empty slots (df = 0 there: hr is zero) add into the zero row N
                grad_x.index_add_(0, block.senders, df.view(n * block.k, -1))
            # dL/dH [n, A', k], computed transposed (fp as stored is the left operand: faster)
            dh_t = workspace.get("dh", n, block.k, hr.shape[1])
            torch.bmm(fp, d_summed.transpose(1, 2), out=dh_t)
            dy = workspace.get("dy", num_a, e1 - e0)  # [A, e]
            if block.slot is None:
                dy.view(num_a, n, block.k).copy_(dh_t[:, :, :num_a].permute(2, 0, 1))
            else:
                slots = workspace.get("hs", num_a, n, block.k)
                slots.copy_(dh_t[:, :, :num_a].permute(2, 0, 1))
                torch.index_select(slots.view(num_a, -1), 1, block.slot, out=dy)
            if envelope is not None:
                if grad_env is not None:
                    grad_env[e0:e1] = (dy * h_pre[:num_a]).sum(0)
                dy.mul_(envelope[e0:e1])
            dy = hidden_backward(
                layers, plan.segments, saved, dy, grad_params, workspace, grad_emb is not None
            )
            if grad_emb is not None:
                grad_emb[:, e0:e1] = dy
        if not needs[3]:
            grad_head = None
        elif plan.groups is None:
            grad_head = grad_head_t.reshape(num_c, _aligned(num_a), _aligned(num_b))
            grad_head = grad_head[:, :num_a, :num_b]
        else:
            grad_head = scatter_group_grads(grad_weights, plan.groups, tuple(head.shape), head)
        grad_x = None if grad_x is None else grad_x[: x.shape[0], : x.shape[1]]
        grad_params = [g if need else None for g, need in zip(grad_params, needs[4:], strict=True)]
        return None, grad_emb, grad_env, grad_x, grad_head, *grad_params


def _grouped_backward(
    groups: tuple[HeadGroup, ...],
    weights: list[list[Tensor]],
    grad_weights: list[list[Tensor]],
    summed: Tensor,
    dout: Tensor,
    workspace: Workspace,
) -> Tensor:
    """One block's backward through the block-sparse head: adds ``S_g^T dout[:, span]`` into
    ``grad_weights`` and returns ``dL/dS [n, A', B']`` (zero outside the groups; in the
    workspace's ``"s"`` buffer, which may hold the recomputed ``summed``: it is read first)."""
    n = summed.shape[0]
    scratch = workspace.get("g", n * max(g.size for g in groups))
    for group, grads in zip(groups, grad_weights, strict=True):
        rows = gathered_sums(summed, group, scratch[: n * group.size].view(n, group.size))
        rows_t = rows.T
        for span, grad in zip(group.spans, grads, strict=True):
            grad.addmm_(rows_t, dout[:, span])
    d_summed = workspace.get("s", *summed.shape)
    for a, b in uncovered_blocks(groups, summed.shape[1], summed.shape[2]):
        d_summed[:, a, b] = 0  # the groups below write every other entry
    for group, matrices in zip(groups, weights, strict=True):
        d_rows = scratch[: n * group.size].view(n, group.size)
        for number, (span, matrix) in enumerate(zip(group.spans, matrices, strict=True)):
            if number == 0:
                torch.mm(dout[:, span], matrix.T, out=d_rows)
            else:
                d_rows.addmm_(dout[:, span], matrix.T)
        d_summed[:, group.a, group.b] = d_rows.view(n, group.a.stop - group.a.start, -1)
    return d_summed


def _differentiable_backward(plan: _Plan, needs, grad_out: Tensor, saved: tuple) -> list:
    """Gradients as differentiable functions of the inputs (for ``create_graph=True``)."""
    embedding, envelope, x, head, *params = saved
    out = _forward_all(plan, plan.layers(tuple(params)), embedding, envelope, x, head, True)
    inputs = [t for t, need in zip(saved, needs, strict=True) if need]
    grads = iter(torch.autograd.grad(out, inputs, grad_out, create_graph=True, allow_unused=True))
    return [next(grads) if need else None for need in needs]
