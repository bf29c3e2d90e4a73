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


def test_the_module_is_left_in_its_own_dtype():
    """Each dtype runs on a copy: the module keeps its dtype and its parameters."""
    linear = sg.nn.EquivariantLinear("2x0e + 1o", "0e + 1o")
    before = {k: v.clone() for k, v in linear.state_dict().items()}
    errors = equivariance_error_by_dtype(
        linear, sg.groups.SO3(), [torch.randn(6, 5)], [linear.rep_in], linear.rep_out,
        dtypes=["float64"],
    )  # fmt: skip
    assert list(errors) == ["float64"] and errors["float64"] < 1e-12
    for name, value in linear.state_dict().items():
        assert value.dtype == torch.float32 and torch.equal(value, before[name]), name


def test_num_elements_sets_how_many_group_elements_are_tried():
    """``num_elements`` reaches :func:`equivariance_error`: three more elements, three more
    forward passes per dtype."""

    class Counted(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = sg.nn.EquivariantLinear("2x0e + 1o", "0e + 1o")

        def forward(self, x):
            calls.append(x.dtype)
            return self.linear(x)

    module, x = Counted(), torch.randn(6, 5)
    counts = []
    for num_elements in (2, 5):
        calls = []
        equivariance_error_by_dtype(
            module, sg.groups.SO3(), [x], [module.linear.rep_in], module.linear.rep_out,
            dtypes=["float64", "float32"], num_elements=num_elements,
        )  # fmt: skip
        counts.append(len(calls))
    assert counts[1] - counts[0] == 2 * 3
