"""The kernel MLP's gated layers, feature-major: ``y -> gate(W y + b)`` on ``[features, E]``.

:func:`hidden_forward` runs the layers either with autograd or, for a hand-written
backward, without it, keeping each layer's input, pre-gate values and activations in
reusable buffers (:class:`Workspace`); :func:`hidden_backward` walks them back once,
accumulating weight gradients in place. The fused convolution of
:mod:`symgraph.ops.kernel_conv` is built on the two.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from symgraph.ops.gate import (
    GateSegment,
    gate,
    gate_activations,
    gate_input_grad,
    gate_values,
)

__all__ = ["KernelLayer", "Workspace", "hidden_forward", "hidden_backward"]


@dataclass(frozen=True)
class KernelLayer:
    """One gated layer of the kernel MLP, assembled: ``y -> gate(W y + b)`` feature-major.

    Attributes:
        weight: ``[D_in, D_prev]`` (``D_in`` = values and gates of the gate's input).
        bias: ``[D_in, 1]`` or None.
        segments: the gate's row segments (:func:`symgraph.nn.activations.gate_segments`).
    """

    weight: Tensor
    bias: Tensor | None
    segments: tuple[GateSegment, ...]


class Workspace:
    """Buffers reused by every block of one call, by name (views of the first elements).

    A block's intermediates are large; allocating them afresh for every block costs page
    faults that take longer than some of the arithmetic. Asking for a name again hands out
    the same memory: that is how a backward overwrites what it no longer needs.
    """

    def __init__(self, like: Tensor) -> None:
        self.like = like
        self.buffers: dict[str, Tensor] = {}
        self.views: dict[str, Tensor] = {}

    def get(self, key: str, *shape: int) -> Tensor:
        view = self.views.get(key)
        if view is not None and view.shape == shape:
            return view
        numel = math.prod(shape)
        buffer = self.buffers.get(key)
        if buffer is None or buffer.numel() < numel:
            buffer = self.buffers[key] = self.like.new_empty(numel)
        view = self.views[key] = buffer[:numel].view(shape)
        return view


Saved = list[tuple[Tensor, Tensor, Tensor]]
"""Per layer ``(input [D_prev, E], pre-gate [D_in, E], activation [D_in, E])``."""


def hidden_forward(
    layers: list[tuple[Tensor, Tensor | None]],
    segments: tuple[tuple[GateSegment, ...], ...],
    embedding: Tensor,
    workspace: Workspace | None,
    last_rows: int | None = None,
) -> tuple[Tensor, Saved]:
    """The layers on ``embedding [D_0, E]``: ``(h [A, E], saved)``.

    With ``workspace`` None this is plain autograd (``saved`` empty); otherwise nothing is
    recorded and ``saved`` holds what :func:`hidden_backward` needs, in workspace buffers.
    ``last_rows``: rows of the last output (``≥ A``; the rows after ``A`` are zero).
    """
    y = embedding
    saved: Saved = []
    num_edges = embedding.shape[1]
    for index, ((weight, bias), segs) in enumerate(zip(layers, segments, strict=True)):
        if workspace is None:
            z = weight @ y if bias is None else torch.addmm(bias, weight, y)
            y = gate(z, 0, segs)
            continue
        z = workspace.get(f"z{index}", weight.shape[0], num_edges)
        if bias is None:
            torch.mm(weight, y, out=z)
        else:
            torch.addmm(bias, weight, y, out=z)
        act = gate_activations(z, segs, 0, out=workspace.get(f"act{index}", *z.shape))
        saved.append((y, z, act))
        rows = sum(seg.length for seg in segs)
        if index == len(layers) - 1 and last_rows is not None:
            rows = last_rows
        y = gate_values(z, act, 0, segs, rows, out=workspace.get(f"y{index}", rows, num_edges))
    return y, saved


def hidden_backward(
    layers: list[tuple[Tensor, Tensor | None]],
    segments: tuple[tuple[GateSegment, ...], ...],
    saved: Saved,
    dy: Tensor,
    grad_params: list[Tensor | None],
    workspace: Workspace,
    input_grad: bool,
) -> Tensor | None:
    """Backward of :func:`hidden_forward` for ``dy [A, E]``: adds the weight and bias
    gradients into ``grad_params`` (``[W_0, b_0, W_1, …]``, None entries skipped) and
    returns the embedding's gradient ``[D_0, E]`` when ``input_grad``."""
    num_edges = dy.shape[1]
    for index in reversed(range(len(layers))):
        weight, bias = layers[index]
        y_prev, z, act = saved[index]
        dz = gate_input_grad(dy, z, act, 0, segments[index], out=workspace.get("dz", *z.shape))
        if grad_params[2 * index] is not None:
            grad_params[2 * index].addmm_(dz, y_prev.T)
        if bias is not None and grad_params[2 * index + 1] is not None:
            grad_params[2 * index + 1].add_(dz.sum(1, keepdim=True))
        if index > 0 or input_grad:
            key = f"dy{index % 2}"  # not the buffer dz was computed from
            dy = torch.mm(weight.T, dz, out=workspace.get(key, weight.shape[1], num_edges))
    return dy if input_grad else None
