"""The gated nonlinearity: the segment-wise autograd function and the gathered form."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

import symgraph as sg
from symgraph.nn.activations import Gate
from symgraph.ops import gate as gate_ops
from symgraph.ops.gate import GateFunction, gate_activations, gate_gathered, gate_values

REP = "3x0e + 2x0o + 4x1o + 1x2e + 1x0e"


def expected_gate(x: torch.Tensor) -> torch.Tensor:
    """``REP`` gated by hand along the last axis: SiLU, tanh, then gated copies."""
    values, gates = x[..., :23], torch.sigmoid(x[..., 23:])
    parts = [
        F.silu(values[..., 0:3]),
        torch.tanh(values[..., 3:5]),
        (values[..., 5:17].unflatten(-1, (4, 3)) * gates[..., 0:4, None]).flatten(-2),
        values[..., 17:22] * gates[..., 4:5],
        F.silu(values[..., 22:23]),
    ]
    return torch.cat(parts, dim=-1)


@pytest.fixture(params=["segments", "gathered"])
def gate(request, monkeypatch) -> Gate:
    """The gate module, forced onto one implementation through the size threshold."""
    threshold = 0 if request.param == "segments" else 10**9
    monkeypatch.setattr(gate_ops, "SMALL_GATE_ELEMENTS", threshold)
    return Gate(sg.groups.Rep(REP, sg.groups.O3()))


@pytest.mark.parametrize("axis", [0, 1])
def test_the_two_implementations_agree_and_the_size_picks_one(axis):
    module = Gate(sg.groups.Rep(REP, sg.groups.O3()))
    shape = [5, 5]
    shape[axis] = module.rep_in.dim
    x = torch.randn(*shape, dtype=torch.float64)
    segmentwise = GateFunction.apply(x, axis, module.segments)
    gathered = gate_gathered(x, axis, module.segments)
    torch.testing.assert_close(gathered, segmentwise, rtol=0, atol=1e-15)
    grad_fn = gate_ops.gate(x.requires_grad_(), axis, module.segments).grad_fn
    assert "GateFunction" not in type(grad_fn).__name__
    big = torch.randn(2000, module.rep_in.dim, requires_grad=True)
    assert "GateFunction" in type(gate_ops.gate(big, 1, module.segments).grad_fn).__name__


def test_traced_gates_take_the_gathered_form_at_any_size(monkeypatch):
    """While torch.compile traces, large inputs are gathered too: torch 2.4's tracer
    refuses the ``out=`` writes of :class:`GateFunction` on inputs that require grad."""
    module = Gate(sg.groups.Rep(REP, sg.groups.O3()))
    big = torch.randn(2000, module.rep_in.dim, dtype=torch.float64, requires_grad=True)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    y = gate_ops.gate(big, 1, module.segments)
    assert "GateFunction" not in type(y.grad_fn).__name__
    torch.testing.assert_close(y, expected_gate(big), rtol=0, atol=1e-15)


def test_matches_the_hand_written_gate_on_both_axes(gate):
    x = torch.randn(7, gate.rep_in.dim, dtype=torch.float64)
    assert gate.rep_in.dim == 28 and gate.num_gates == 5
    torch.testing.assert_close(gate(x), expected_gate(x), rtol=0, atol=1e-15)
    feature_major = gate(x.T.contiguous(), dim=0)
    torch.testing.assert_close(feature_major.T, expected_gate(x), rtol=0, atol=1e-15)


@pytest.mark.parametrize("dim", [0, -1])
def test_first_and_second_derivatives(gate, dim):
    shape = (gate.rep_in.dim, 4) if dim == 0 else (3, gate.rep_in.dim)
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: gate(t, dim=dim), (x,))
    assert torch.autograd.gradgradcheck(lambda t: gate(t, dim=dim), (x,))


def test_values_into_a_wider_buffer_are_zero_padded(gate):
    x = torch.randn(gate.rep_in.dim, 6, dtype=torch.float64)
    act = gate_activations(x, gate.segments, 0)
    buffer = torch.full((32, 6), 7.0, dtype=x.dtype)
    padded = gate_values(x, act, 0, gate.segments, width=32, out=buffer)
    torch.testing.assert_close(padded[:23], gate(x, dim=0), rtol=0, atol=1e-15)
    assert padded[23:].abs().max().item() == 0.0


def test_wrong_width_names_x(gate):
    with pytest.raises(ValueError, match="x: expected 28 features"):
        gate(torch.randn(4, 27))


def test_first_derivative_with_create_graph_matches_the_plain_one(gate):
    """Double backward differentiates a first derivative equal to the one without a graph."""
    x = torch.randn(3, gate.rep_in.dim, dtype=torch.float64, requires_grad=True)
    grad_out = torch.randn(3, gate.rep.dim, dtype=torch.float64)
    (plain,) = torch.autograd.grad(gate(x), x, grad_out)
    (graph,) = torch.autograd.grad(gate(x), x, grad_out, create_graph=True)
    assert graph.requires_grad
    torch.testing.assert_close(graph, plain, rtol=0, atol=1e-15)
