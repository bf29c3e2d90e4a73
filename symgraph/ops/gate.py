"""The gated nonlinearity as one autograd function over contiguous row segments.

A gate input ``x`` holds, along its feature axis, the values of ``rep`` followed by one
invariant gate per gated copy. Its rows fall into segments:

- ``"silu"``: scalars and regular blocks, ``y = v · sigmoid(v)``;
- ``"tanh"``: pseudo-scalars, ``y = tanh(v)``;
- ``"gated"``: ``mul`` copies of a ``d``-dimensional block, each scaled by ``sigmoid`` of
  its gate: ``y[u, :] = v[u, :] · sigmoid(gate[u])`` (a broadcast, no gather).

:class:`GateFunction` evaluates one ``sigmoid`` over the whole input, writes each segment
of the output in place and, in backward, each segment of the gradient in place: no index
gathers, no scatter-adds, no zero-filled slice gradients. Double backward (needed by
teleportation's ``‖∇L‖²``) recomputes the reference formula with autograd.

Its few operations per segment are what a large input wants; on a small one (a kernel
evaluated at a lattice's handful of stencil offsets) their fixed cost dominates, and
:func:`gate_gathered` does the same with a constant number of operations: one gather of
the sigmoids and one product. :func:`gate` picks between the two by size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from symgraph.caching import compile_aware_cache, tensor_cache
from symgraph.checks import is_int


@dataclass(frozen=True)
class GateSegment:
    """Rows ``[start, start + mul·dim)`` of the values; gated segments read their ``mul``
    gates from rows ``[gate_start, gate_start + mul)`` of the input."""

    kind: str  # "silu", "tanh" or "gated"
    start: int
    mul: int
    dim: int
    gate_start: int = -1

    @property
    def length(self) -> int:
        return self.mul * self.dim


def gate_forward_reference(x: Tensor, axis: int, segments: tuple[GateSegment, ...]) -> Tensor:
    """The gate written with plain differentiable ops (used for double backward)."""
    sig = torch.sigmoid(x)
    parts = []
    for seg in segments:
        v = x.narrow(axis, seg.start, seg.length)
        if seg.kind == "silu":
            parts.append(v * sig.narrow(axis, seg.start, seg.length))
        elif seg.kind == "tanh":
            parts.append(torch.tanh(v))
        else:
            gates = sig.narrow(axis, seg.gate_start, seg.mul).unsqueeze(axis + 1)
            parts.append((v.unflatten(axis, (seg.mul, seg.dim)) * gates).flatten(axis, axis + 1))
    return torch.cat(parts, dim=axis)


@compile_aware_cache(maxsize=256)
def _split_sizes(segments: tuple[GateSegment, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Row counts that split a gate's input (each segment's values, then the gates of each
    gated segment) and its output (each segment's values): one ``split`` call per tensor
    instead of several views per segment."""
    values = tuple(seg.length for seg in segments)
    gated = [seg for seg in segments if seg.kind == "gated"]
    starts = [sum(values) + sum(seg.mul for seg in gated[:i]) for i in range(len(gated))]
    if [seg.gate_start for seg in gated] != starts:
        raise ValueError("segments: gates must follow the values, in the order of the segments")
    return values + tuple(seg.mul for seg in gated), values


def _copies(t: Tensor, axis: int, seg: GateSegment) -> Tensor:
    """``[.., mul·dim, ..] -> [.., mul, dim, ..]`` (a view)."""
    shape = list(t.shape)
    shape[axis : axis + 1] = [seg.mul, seg.dim]
    return t.view(shape)


def gate_values(
    x: Tensor,
    act: Tensor,
    axis: int,
    segments: tuple[GateSegment, ...],
    width: int | None = None,
    out: Tensor | None = None,
) -> Tensor:
    """The gate's output from its input ``x`` and ``act`` (:func:`gate_activations`), without
    autograd: ``[.., D_in, ..] -> [.., D, ..]``, or ``[.., width, ..]`` with zeros after
    ``D`` when a larger ``width`` is given (written into ``out`` when given); ``axis`` ≥ 0."""
    in_sizes, out_sizes = _split_sizes(segments)
    num_values = sum(out_sizes)
    shape = list(x.shape)
    shape[axis] = max(width or 0, num_values)
    out = x.new_empty(shape) if out is None else out
    if shape[axis] > num_values:
        out.narrow(axis, num_values, shape[axis] - num_values).zero_()
        outs = torch.split_with_sizes(out.narrow(axis, 0, num_values), out_sizes, axis)
    else:
        outs = torch.split_with_sizes(out, out_sizes, axis)
    xs = torch.split_with_sizes(x, in_sizes, axis)
    acts = torch.split_with_sizes(act, in_sizes, axis)
    gate = len(segments)
    for i, seg in enumerate(segments):
        if seg.kind == "silu":
            torch.mul(xs[i], acts[i], out=outs[i])
        elif seg.kind == "tanh":
            outs[i].copy_(acts[i])
        else:
            gates = acts[gate].unsqueeze(axis + 1)
            torch.mul(_copies(xs[i], axis, seg), gates, out=_copies(outs[i], axis, seg))
            gate += 1
    return out


def gate_activations(
    x: Tensor, segments: tuple[GateSegment, ...], axis: int, out: Tensor | None = None
) -> Tensor:
    """What the gate reads and saves: ``sigmoid`` on the SiLU rows and on the gates,
    ``tanh`` on the pseudo-scalar rows (written into ``out`` when given). The rows of gated
    values are left unset: nothing reads them, and skipping their transcendental function
    saves most of the work on features with many non-scalar channels."""
    act = torch.empty_like(x) if out is None else out
    in_sizes, out_sizes = _split_sizes(segments)
    xs = torch.split_with_sizes(x, in_sizes, axis)
    acts = torch.split_with_sizes(act, in_sizes, axis)
    for i, seg in enumerate(segments):
        if seg.kind == "silu":
            torch.sigmoid(xs[i], out=acts[i])
        elif seg.kind == "tanh":
            torch.tanh(xs[i], out=acts[i])
    num_values = sum(out_sizes)
    num_gates = x.shape[axis] - num_values
    if num_gates:
        torch.sigmoid(
            x.narrow(axis, num_values, num_gates), out=act.narrow(axis, num_values, num_gates)
        )
    return act


def gate_input_grad(
    grad: Tensor,
    x: Tensor,
    act: Tensor,
    axis: int,
    segments: tuple[GateSegment, ...],
    out: Tensor | None = None,
) -> Tensor:
    """The gradient of the gate at ``x`` (with ``act`` from :func:`gate_activations`) for
    the output gradient ``grad``; no autograd (written into ``out`` when given)."""
    grad = grad.contiguous()
    grad_x = torch.empty_like(x) if out is None else out
    in_sizes, out_sizes = _split_sizes(segments)
    gs = torch.split_with_sizes(grad, out_sizes, axis)
    xs, acts, targets = (torch.split_with_sizes(t, in_sizes, axis) for t in (x, act, grad_x))
    gate = len(segments)
    for i, seg in enumerate(segments):
        g, v, target = gs[i], xs[i], targets[i]
        if seg.kind == "silu":  # d/dv v·σ(v) = σ (1 + v (1 − σ))
            s = acts[i]
            factor = torch.sub(1, s).mul_(v).add_(1).mul_(s)
            torch.mul(g, factor, out=target)
        elif seg.kind == "tanh":
            t = acts[i]
            torch.mul(g, torch.mul(t, t).neg_().add_(1), out=target)
        else:
            s = acts[gate]
            g3 = _copies(g, axis, seg)
            grad_gate = (g3 * _copies(v, axis, seg)).sum(axis + 1)
            torch.mul(g3, s.unsqueeze(axis + 1), out=_copies(target, axis, seg))
            grad_gate.mul_(s).mul_(torch.sub(1, s))
            targets[gate].copy_(grad_gate)
            gate += 1
    return grad_x


class GateFunction(torch.autograd.Function):
    """``y = gate(x)`` along feature axis ``axis``: ``[.., D_in, ..] -> [.., D, ..]``."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, axis: int, segments: tuple[GateSegment, ...]) -> Tensor:
        act = gate_activations(x, segments, axis)
        ctx.save_for_backward(x, act)
        ctx.axis, ctx.segments = axis, segments
        return gate_values(x, act, axis, segments)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        x, act = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: differentiate the reference formula
            y = gate_forward_reference(x, ctx.axis, ctx.segments)
            (grad_x,) = torch.autograd.grad(y, x, grad, create_graph=True)
            return grad_x, None, None
        return gate_input_grad(grad, x, act, ctx.axis, ctx.segments), None, None


#: Inputs with at most this many elements are gated by :func:`gate_gathered`.
SMALL_GATE_ELEMENTS = 4096


@tensor_cache(maxsize=256)
def _gather_plan(
    segments: tuple[GateSegment, ...], device: torch.device
) -> tuple[Tensor, Tensor | None]:
    """``(source [D], tanh_rows [D] or None)``: per output row, the input row whose sigmoid
    scales it (its own for SiLU rows, its gate for gated rows), and which rows take ``tanh``."""
    source, tanh_rows = [], []
    for seg in segments:
        for row in range(seg.length):
            gated = seg.kind == "gated"
            source.append(seg.gate_start + row // seg.dim if gated else seg.start + row)
            tanh_rows.append(seg.kind == "tanh")
    mask = torch.tensor(tanh_rows, device=device) if any(tanh_rows) else None
    return torch.tensor(source, dtype=torch.long, device=device), mask


def gate_gathered(x: Tensor, axis: int, segments: tuple[GateSegment, ...]) -> Tensor:
    """The gate as ``y = v · sigmoid(x)[source]`` (``tanh(v)`` on pseudo-scalar rows), with
    autograd (double backward included): ``[.., D_in, ..] -> [.., D, ..]``, ``axis`` ≥ 0.

    A constant number of operations whatever the number of segments, at the price of
    sigmoids of every row and one gather: the cheaper form for small inputs."""
    source, tanh_rows = _gather_plan(segments, x.device)
    values = x.narrow(axis, 0, source.numel())
    y = values * torch.sigmoid(x).index_select(axis, source)
    if tanh_rows is None:
        return y
    shape = [1] * x.dim()
    shape[axis] = -1
    return torch.where(tanh_rows.view(shape), torch.tanh(values), y)


def gate(x: Tensor, axis: int, segments: tuple[GateSegment, ...]) -> Tensor:
    """The gate along ``axis`` (≥ 0): :func:`gate_gathered` for inputs of at most
    :data:`SMALL_GATE_ELEMENTS` elements and while ``torch.compile`` traces (the compiler
    fuses its elementwise operations itself, and torch 2.4 cannot trace the ``out=``
    writes of :class:`GateFunction`), :class:`GateFunction` otherwise (same values).

    ``x.shape[axis]`` must be the segments' values and gates, as :class:`Gate` lays them out.
    """
    if not is_int(axis) or not 0 <= axis < x.dim():
        raise ValueError(f"axis: expected an int in [0, {x.dim()}) for x of {x.dim()} axes, "
                         f"got {axis!r}")  # fmt: skip
    axis = int(axis)
    width = sum(_split_sizes(segments)[0])
    if x.shape[axis] != width:
        raise ValueError(
            f"x: expected {width} rows along axis {axis} (the segments' values and gates), "
            f"got shape {list(x.shape)}"
        )
    if x.numel() <= SMALL_GATE_ELEMENTS or torch.compiler.is_compiling():
        return gate_gathered(x, axis, segments)
    return GateFunction.apply(x, axis, segments)
