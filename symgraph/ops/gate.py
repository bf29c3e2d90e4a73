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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor


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


def gate_values(
    x: Tensor,
    act: Tensor,
    axis: int,
    segments: tuple[GateSegment, ...],
    width: int | None = None,
    out: Tensor | None = None,
) -> Tensor:
    """The gate's output from its input ``x`` and ``act = sigmoid(x)`` (``tanh`` on the
    pseudo-scalar rows), without autograd: ``[.., D_in, ..] -> [.., D, ..]``, or
    ``[.., width, ..]`` with zeros after ``D`` when a larger ``width`` is given (written
    into ``out`` when given)."""
    shape = list(x.shape)
    num_values = sum(seg.length for seg in segments)
    shape[axis] = max(width or 0, num_values)
    out = x.new_empty(shape) if out is None else out
    if shape[axis] > num_values:
        out.narrow(axis, num_values, shape[axis] - num_values).zero_()
    for seg in segments:
        target = out.narrow(axis, seg.start, seg.length)
        if seg.kind == "silu":
            v = x.narrow(axis, seg.start, seg.length)
            torch.mul(v, act.narrow(axis, seg.start, seg.length), out=target)
        elif seg.kind == "tanh":
            target.copy_(act.narrow(axis, seg.start, seg.length))
        else:
            v = x.narrow(axis, seg.start, seg.length).unflatten(axis, (seg.mul, seg.dim))
            gates = act.narrow(axis, seg.gate_start, seg.mul).unsqueeze(axis + 1)
            torch.mul(v, gates, out=target.unflatten(axis, (seg.mul, seg.dim)))
    return out


def gate_activations(
    x: Tensor, segments: tuple[GateSegment, ...], axis: int, out: Tensor | None = None
) -> Tensor:
    """What the gate reads and saves: ``sigmoid`` on the SiLU rows and on the gates,
    ``tanh`` on the pseudo-scalar rows (written into ``out`` when given). The rows of gated
    values are left unset: nothing reads them, and skipping their transcendental function
    saves most of the work on features with many non-scalar channels."""
    act = torch.empty_like(x) if out is None else out
    for seg in segments:
        if seg.kind == "gated":
            continue
        function = torch.sigmoid if seg.kind == "silu" else torch.tanh
        function(x.narrow(axis, seg.start, seg.length), out=act.narrow(axis, seg.start, seg.length))
    num_values = sum(seg.length for seg in segments)
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
    for seg in segments:
        g = grad.narrow(axis, seg.start, seg.length)
        v = x.narrow(axis, seg.start, seg.length)
        target = grad_x.narrow(axis, seg.start, seg.length)
        if seg.kind == "silu":  # d/dv v·σ(v) = σ (1 + v (1 − σ))
            s = act.narrow(axis, seg.start, seg.length)
            factor = torch.sub(1, s).mul_(v).add_(1).mul_(s)
            torch.mul(g, factor, out=target)
        elif seg.kind == "tanh":
            t = act.narrow(axis, seg.start, seg.length)
            torch.mul(g, torch.mul(t, t).neg_().add_(1), out=target)
        else:
            s = act.narrow(axis, seg.gate_start, seg.mul)
            g3 = g.unflatten(axis, (seg.mul, seg.dim))
            torch.mul(g3, s.unsqueeze(axis + 1), out=target.unflatten(axis, (seg.mul, seg.dim)))
            grad_gate = (g3 * v.unflatten(axis, (seg.mul, seg.dim))).sum(axis + 1)
            grad_gate.mul_(s).mul_(torch.sub(1, s))
            grad_x.narrow(axis, seg.gate_start, seg.mul).copy_(grad_gate)
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
