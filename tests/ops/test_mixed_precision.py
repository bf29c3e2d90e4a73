"""Mixed precision: equivariance error of the implicit convolution per compute dtype."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import symgraph as sg
from symgraph.graph import radius_graph
from symgraph.nn import ImplicitSteerableConv
from symgraph.ops.precision import equivariance_error_by_dtype

# autocast runs the kernel MLP and the bilinear head in half precision: errors of a few
# units in the last place of each dtype (bfloat16: 8 mantissa bits, float16: 11)
BOUNDS = {"float64": 1e-12, "float32": 1e-5, "bfloat16": 3e-2, "float16": 5e-3}


class _Conv(nn.Module):
    def __init__(self, conv: ImplicitSteerableConv, edge_index: torch.Tensor) -> None:
        super().__init__()
        self.conv, self.edge_index = conv, edge_index

    def forward(self, x, pos, edge_attr):
        return self.conv(x, pos, self.edge_index, edge_attr)


@pytest.mark.parametrize("group", [sg.groups.SO3(), sg.groups.SO2()], ids=["SO3", "SO2"])
def test_equivariance_error_per_dtype(group):
    conv = ImplicitSteerableConv("3x0e + 2x1o + 1x2e", "2x0e + 2x1o", group, edge_dim=3, cutoff=2.0)
    pos = torch.randn(24, 3)
    edge_index = radius_graph(pos, 2.0)
    edge_attr = torch.randn(edge_index.shape[1], 3)
    x = torch.randn(24, conv.rep_in.dim)
    errors = equivariance_error_by_dtype(
        _Conv(conv, edge_index), group, [x, pos, edge_attr], [conv.rep_in, "pos", None],
        conv.rep_out,
    )  # fmt: skip
    print({name: f"{err:.1e}" for name, err in errors.items()})
    assert errors.keys() == BOUNDS.keys()
    for name, err in errors.items():
        assert err < BOUNDS[name], (name, err)
    assert errors["float64"] < errors["float32"] < min(errors["float16"], errors["bfloat16"])


def test_autocast_output_is_finite_and_close():
    conv = ImplicitSteerableConv("4x0e + 2x1o", "4x0e + 2x1o", sg.groups.SO3(), cutoff=2.0)
    pos = torch.randn(30, 3)
    edge_index = radius_graph(pos, 2.0)
    x = torch.randn(30, conv.rep_in.dim, requires_grad=True)
    reference = conv(x, pos, edge_index)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = conv(x, pos, edge_index)
    out.float().square().sum().backward()
    assert torch.isfinite(x.grad).all()
    scale = reference.abs().max()
    assert (out.float() - reference).abs().max() < 3e-2 * scale


def test_bad_dtype_name():
    with pytest.raises(ValueError, match="dtypes"):
        equivariance_error_by_dtype(nn.Identity(), sg.groups.SO3(), [], [], None, ["int8"])
