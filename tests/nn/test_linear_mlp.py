"""EquivariantLinear and EquivariantMLP: equivariance for every group, learning, bad input."""

from __future__ import annotations

import pytest
import torch
from e3nn.util.test import assert_equivariant
from hypothesis import given, settings
from hypothesis import strategies as st

import symgraph as sg
from symgraph.groups import GROUPS, Rep, group_from_name
from symgraph.nn import EquivariantLinear, EquivariantMLP
from symgraph.testing import equivariance_error

CATALOG = list(GROUPS) + ["C5", "D4"]
REP_IN = "3x0e + 2x1o + 1e + 2e + 0o"
REP_OUT = "2x0e + 1o + 2x1e + 2o + 3o"
HIDDEN = "8x0e + 2x0o + 4x1o + 4x1e + 2x2e + 2x2o"

irrep_strategy = st.builds(
    lambda m, l, p: f"{m}x{l}{p}",
    st.integers(min_value=1, max_value=3),
    st.integers(min_value=0, max_value=3),
    st.sampled_from("eo"),
)
rep_strategy = st.lists(irrep_strategy, min_size=1, max_size=4).map(" + ".join)


@pytest.mark.parametrize("name", CATALOG)
@pytest.mark.parametrize("dtype,bound", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_linear_equivariance(name, dtype, bound):
    group = group_from_name(name)
    layer = EquivariantLinear(REP_IN, REP_OUT, group=group).to(dtype)
    with torch.no_grad():
        for bias in layer.bias.biases:
            bias.normal_()
    x = torch.randn(16, layer.rep_in.dim, dtype=dtype)
    assert equivariance_error(layer, group, [x], [layer.rep_in], layer.rep_out) < bound


@pytest.mark.parametrize("name", CATALOG)
@pytest.mark.parametrize("nonlinearity", ["gate", "norm"])
@pytest.mark.parametrize("dtype,bound", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_mlp_equivariance(name, nonlinearity, dtype, bound):
    group = group_from_name(name)
    mlp = EquivariantMLP(
        REP_IN, REP_OUT, hidden=HIDDEN, group=group, nonlinearity=nonlinearity, bilinear=True
    )
    mlp = mlp.to(dtype)
    x = torch.randn(16, mlp.rep_in.dim, dtype=dtype)
    assert equivariance_error(mlp, group, [x], [mlp.rep_in], mlp.rep_out) < bound


@settings(max_examples=15, deadline=None)
@given(text_in=rep_strategy, text_out=rep_strategy, name=st.sampled_from(CATALOG))
def test_random_representations_float64(text_in, text_out, name):
    group = group_from_name(name)
    mlp = EquivariantMLP(text_in, text_out, hidden=HIDDEN, group=group, layers=1).double()
    x = torch.randn(4, mlp.rep_in.dim, dtype=torch.float64)
    assert equivariance_error(mlp, group, [x], [mlp.rep_in], mlp.rep_out, num_elements=3) < 1e-10


@pytest.mark.parametrize("name", ["C4", "D3", "Octahedral"])
def test_regular_representation_mlp(name):
    group = group_from_name(name)
    reg = Rep.regular(group)
    rep_in, rep_out = 2 * reg + Rep("1o", group), reg + Rep("0e + 1o", group)
    mlp = EquivariantMLP(rep_in, rep_out, hidden=4 * reg + Rep("2x1o", group)).double()
    x = torch.randn(8, rep_in.dim, dtype=torch.float64)
    assert equivariance_error(mlp, group, [x], [rep_in], rep_out) < 1e-10


def test_e3nn_assert_equivariant_on_o3_mlp(float64_default):
    """In float64 (e3nn draws its inputs and rotations in the default dtype), to 1e-10."""
    mlp = EquivariantMLP("4x0e + 2x1o + 1e", "2x0e + 1o + 2e", hidden=HIDDEN, bilinear=True)
    assert_equivariant(
        mlp.double(), irreps_in=[mlp.irreps_in], irreps_out=[mlp.irreps_out], tolerance=1e-10
    )


def test_bias_only_on_invariant_components():
    so3 = EquivariantLinear("2x0e", "0e + 1o", group=sg.groups.SO3())
    so2 = EquivariantLinear("2x0e", "0e + 1o", group=sg.groups.SO2())
    for layer in (so3, so2):
        with torch.no_grad():
            for weight in layer.weights:
                weight.zero_()
            for bias in layer.bias.biases:
                bias.fill_(1.0)
    assert torch.equal(so3(torch.zeros(1, 2))[0], torch.tensor([1.0, 0.0, 0.0, 0.0]))
    # under rotations about z the z component of a vector is invariant: a bias is allowed there
    assert torch.equal(so2(torch.zeros(1, 2))[0], torch.tensor([1.0, 0.0, 0.0, 1.0]))
    assert EquivariantLinear("0e", "1o").bias.dim == 0


def test_double_keeps_exact_bases():
    mlp = EquivariantMLP("2x0e + 1o", "1o + 2e")  # built in float32
    mlp = mlp.double()
    x = torch.randn(5, mlp.rep_in.dim, dtype=torch.float64)
    assert equivariance_error(mlp, sg.groups.O3(), [x], [mlp.rep_in], mlp.rep_out) < 1e-12


def _fit(mlp, x, target, steps):
    opt = torch.optim.Adam(mlp.parameters(), lr=1e-2)
    first = None
    for _ in range(steps):
        loss = (mlp(x) - target).pow(2).mean()
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return first, loss.item()


def test_gated_mlp_learns_an_equivariant_target():
    """f(s, v) = tanh(s) v + s² v: scalar-dependent scaling of a vector; loss falls 100x."""
    mlp = EquivariantMLP("0e + 1o", "1o", hidden="16x0e + 8x1o", layers=2)
    x = torch.randn(512, 4)
    s, v = x[:, :1], x[:, 1:]
    first, last = _fit(mlp, x, torch.tanh(s) * v + s**2 * v, 800)
    assert last < first / 100


def test_bilinear_mlp_learns_a_norm_dependent_target():
    """f(v) = |v|² v + 0.5 v needs |v|, which only the bilinear term can build; loss falls 100x."""
    mlp = EquivariantMLP("1o", "1o", hidden="16x0e + 8x1o", layers=2, bilinear=True)
    x = torch.randn(512, 3)
    first, last = _fit(mlp, x, (x * x).sum(-1, keepdim=True) * x + 0.5 * x, 800)
    assert last < first / 100


@pytest.mark.parametrize("nonlinearity", ["gate", "norm"])
def test_reset_parameters_resets_every_parameter(nonlinearity):
    """Every parameter (norm biases included) is reset, the same way for the same seed."""
    torch.manual_seed(0)
    mlp = EquivariantMLP("2x0e + 1x1o", "1x0e + 1x1o", "4x0e + 2x1o", nonlinearity=nonlinearity)
    torch.manual_seed(1)
    mlp.reset_parameters()
    reset_once = {k: v.clone() for k, v in mlp.state_dict().items()}
    with torch.no_grad():
        for p in mlp.parameters():
            p.fill_(3.0)
    torch.manual_seed(1)
    mlp.reset_parameters()
    for name, value in mlp.state_dict().items():
        assert torch.equal(value, reset_once[name]), name
        assert not torch.all(value == 3.0), name


def test_bad_input_messages():
    layer = EquivariantLinear("2x1o", "0e")
    with pytest.raises(ValueError, match="last dimension 6"):
        layer(torch.zeros(3, 5))
    with pytest.raises(ValueError, match="irreps string"):
        EquivariantLinear("2x1z", "0e")
    with pytest.raises(ValueError, match="representation of SO3"):
        EquivariantLinear(Rep("1o", sg.groups.SO3()), Rep("1o", sg.groups.SO2()))
    with pytest.raises(ValueError, match="nonlinearity"):
        EquivariantMLP("1o", "1o", nonlinearity="relu")


def test_irreps_attributes_and_repr():
    layer = EquivariantLinear("2x0e + 1o", "1o", group=sg.groups.SO2())
    assert str(layer.irreps_in) == "2x0e+1x1o"
    assert "SO2" in repr(layer) and "2x0e + 1x1o -> 1x1o" in repr(layer)
    assert EquivariantLinear(Rep.regular(sg.groups.C(3)), "0e").irreps_in is None


def test_default_initialisation_gives_unit_variance_with_multi_dimensional_bases():
    """Under SO(2) each ``1o -> 1o`` pair has a 3-dimensional basis; the fan-in counts every
    basis element, so unit-variance inputs still give outputs of about unit variance."""
    layer = EquivariantLinear("32x1o", "32x1o", group=sg.groups.SO2(), bias=False).double()
    assert layer.basis.pairs[0].basis.shape[0] == 3
    x = torch.randn(4000, layer.rep_in.dim, dtype=torch.float64)
    second_moment = layer(x).square().mean().item()
    assert 0.6 < second_moment < 1.6  # 3x larger if the fan-in ignored the basis size


def test_norm_activation_is_smooth_at_zero():
    """``|v| = sqrt(|v|² + eps)``: finite gradients at a zero vector."""
    act = sg.nn.NormActivation(Rep("1x0e + 2x1o", sg.groups.O3())).double()
    x = torch.zeros(2, act.rep.dim, dtype=torch.float64, requires_grad=True)
    act(x).sum().backward()
    assert bool(torch.isfinite(x.grad).all())
    slope = torch.sigmoid(torch.tensor(act.eps, dtype=torch.float64).sqrt())  # d(v·σ(|v|))/dv
    torch.testing.assert_close(x.grad[:, 1:], slope.expand(2, 6), rtol=0, atol=1e-15)


def test_norm_activation_gives_each_copy_its_own_bias():
    """Copy ``u`` of the gated blocks is scaled by ``sigmoid(|v_u| + b_u)`` with its own ``b_u``."""
    rep = Rep("1x0e + 2x1o + 1x2e", sg.groups.O3())
    act = sg.nn.NormActivation(rep, eps=0.0).double()
    with torch.no_grad():
        act.bias.copy_(torch.tensor([-1.0, 0.5, 2.0]))
    x = torch.randn(4, rep.dim, dtype=torch.float64)
    copies = [x[:, 1:4], x[:, 4:7], x[:, 7:12]]
    expected = [torch.nn.functional.silu(x[:, :1])]
    for v, b in zip(copies, act.bias.detach(), strict=True):
        expected.append(v * torch.sigmoid(v.norm(dim=-1, keepdim=True) + b))
    torch.testing.assert_close(act(x), torch.cat(expected, dim=-1), rtol=0, atol=1e-14)


# --------------------------------------------------------------------------- equivariance_error


def _constant_shift(c: torch.Tensor):
    """``v -> v + c``: equivariant only for elements that fix ``c``."""
    return lambda v: v + c


def test_equivariance_error_is_the_max_relative_error_over_all_finite_elements():
    """``f(v) = v + c`` at ``v = 0`` errs by ``|(I - g) c| / |c|`` at ``g``: all elements of
    a finite group are used, and the worst one is reported whatever the scale of ``c``."""
    from symgraph.testing import equivariance_error_per_element

    group = group_from_name("C4")
    c = 1000.0 * torch.tensor([[3.0, 1.0, 2.0]], dtype=torch.float64)
    v = torch.zeros(1, 3, dtype=torch.float64)
    want = torch.stack([(c - c @ g.T).norm() / c.norm() for g in group.elements()])
    assert float(want.max()) > 1.0
    args = (_constant_shift(c), group, [v], ["vector"], "vector")
    elements, errors = equivariance_error_per_element(*args)
    assert torch.equal(elements, group.elements())
    torch.testing.assert_close(errors, want, rtol=1e-12, atol=1e-12)
    assert equivariance_error(*args) == pytest.approx(float(want.max()), rel=1e-12)


def test_equivariance_error_of_a_vanishing_output_is_absolute_per_entry():
    """An output of norm below ``1e-3 sqrt(numel)`` is judged against that floor."""
    group = group_from_name("C4")
    c = 1e-6 * torch.tensor([3.0, 1.0, 2.0], dtype=torch.float64)
    v = torch.zeros(4, 3, dtype=torch.float64)  # 12 output entries
    floor = 1e-3 * 12**0.5
    want = max(float(2 * (c - c @ g.T).norm() / floor) for g in group.elements())
    got = equivariance_error(_constant_shift(c), group, [v], ["vector"], "vector")
    assert got == pytest.approx(want, rel=1e-12)


def test_equivariance_error_translates_positions_but_not_vectors():
    """Lengths of ``"vector"`` arguments are invariant; of ``"pos"`` ones they are not
    (those are also translated). One spec per argument is required."""
    group = sg.groups.SO3()
    gen = torch.Generator().manual_seed(0)
    v = torch.randn(5, 3, generator=gen, dtype=torch.float64)

    def lengths(u):
        return u.norm(dim=1)

    assert equivariance_error(lengths, group, [v], ["vector"], None, generator=gen) < 1e-12
    assert equivariance_error(lengths, group, [v], ["pos"], None, generator=gen) > 0.1
    with pytest.raises(ValueError, match="arg_specs: expected one spec per argument"):
        equivariance_error(lengths, group, [v], ["vector", None], None)


def test_bilinear_layer_adds_the_bilinear_term_to_the_linear_map():
    """A bilinear hidden layer computes ``act(W x + B(P x, P x))``: both terms, summed."""
    torch.manual_seed(0)
    mlp = EquivariantMLP("2x0e + 1o", "1o", hidden="4x0e + 2x1o", layers=1, bilinear=True)
    mlp = mlp.double()
    layer = mlp.net[0]
    x = torch.randn(5, 5, dtype=torch.float64)
    p = layer.project(x)
    expected = layer.activation(layer.linear(x) + layer.bilinear(p, p))
    torch.testing.assert_close(layer(x), expected, rtol=1e-10, atol=1e-10)
    assert (layer.bilinear(p, p).abs().max() > 1e-3) and (layer.linear(x).abs().max() > 1e-3)


def test_bilinear_projection_keeps_at_most_four_copies_of_each_irrep():
    """The projection ``P x`` of a bilinear layer keeps ``min(m, 4)`` copies of each irrep."""
    mlp = EquivariantMLP("1o", "1o", hidden="8x0e + 2x1o + 4x2e", layers=1, bilinear=True)
    small = mlp.net[0].project.rep_out
    assert [m for m, _ in small.blocks] == [4, 2, 4]
    assert small.dim == 4 * 1 + 2 * 3 + 4 * 5


@pytest.mark.parametrize("bias", [True, False])
def test_bias_flag_reaches_every_linear_map(bias):
    """``bias`` gives every linear map (projection and output included) a bias, or none."""
    mlp = EquivariantMLP("2x0e + 1o", "0e + 1o", hidden="4x0e + 2x1o", bilinear=True, bias=bias)
    linears = [m for m in mlp.modules() if isinstance(m, EquivariantLinear)]
    assert len(linears) == 2 * 2 + 1  # linear and projection per hidden layer, then the output
    assert all((m.bias is not None) == bias for m in linears)


def test_zero_hidden_layers_is_a_single_linear_map():
    """``layers=0`` is allowed and gives exactly one equivariant linear map."""
    mlp = EquivariantMLP("2x0e + 1o", "0e + 1o", layers=0).double()
    assert len(mlp.net) == 1 and mlp.last_linear is mlp.net[0]
    x = torch.randn(3, 5, dtype=torch.float64)
    torch.testing.assert_close(mlp(x), mlp.last_linear(x), rtol=1e-10, atol=1e-10)


def test_reset_parameters_resets_the_bilinear_projection():
    """With ``bilinear=True`` the projection and bilinear weights are reset too."""
    mlp = EquivariantMLP("2x0e + 1x1o", "1x0e + 1x1o", "4x0e + 2x1o", bilinear=True)
    with torch.no_grad():
        for p in mlp.parameters():
            p.fill_(3.0)
    mlp.reset_parameters()
    for name, value in mlp.named_parameters():
        if value.numel():
            assert not torch.all(value == 3.0), name


def test_invariant_bias_checks_its_rep_and_input_width():
    from symgraph.nn import InvariantBias

    with pytest.raises(TypeError, match="rep: expected a symgraph Rep"):
        InvariantBias("2x0e + 1o")
    bias = InvariantBias(Rep("2x0e + 1o", "SO2"))
    with pytest.raises(ValueError, match=r"x: expected last dimension 5 .*got \[3, 4\]"):
        bias(torch.zeros(3, 4))
    assert bias(torch.zeros(3, 5)).shape == (3, 5)


@pytest.mark.parametrize("eps", [-1.0, float("nan"), float("inf"), True, "1e-8"])
def test_norm_activation_refuses_a_negative_eps(eps):
    """``sqrt(|v|² + eps)`` is NaN for copies shorter than ``sqrt(-eps)`` when eps < 0."""
    from symgraph.nn import NormActivation

    with pytest.raises(ValueError, match="eps: expected a finite number >= 0"):
        NormActivation(Rep("0e + 1o", "O3"), eps=eps)


def test_lmax_beyond_e3nn_spherical_harmonics_is_refused_by_name():
    from symgraph.nn import ImplicitSteerableConv

    with pytest.raises(ValueError, match="lmax: expected at most 12 .*got 13"):
        ImplicitSteerableConv("2x0e", "1o", lmax=13)


def test_invariant_bias_names_a_scalar_or_an_input_that_is_no_tensor():
    from symgraph.nn import InvariantBias

    bias = InvariantBias(Rep("2x0e + 1o", "SO2"))
    with pytest.raises(ValueError, match=r"x: expected last dimension 5 .*got \[\]"):
        bias(torch.tensor(1.0))
    with pytest.raises(TypeError, match=r"x: expected a tensor \[\.\.\., 5\], got list"):
        bias([0.0] * 5)


def test_invariant_bias_refuses_input_of_another_dtype_than_its_parameters():
    """float32 input to a float64 bias came back float64 (promoted silently); every other
    layer refuses it, naming the dtypes."""
    from symgraph.nn import InvariantBias

    bias = InvariantBias(Rep("2x0e + 1o", "SO2")).double()
    with pytest.raises(TypeError, match=r"x: expected dtype torch.float64 .*got torch.float32"):
        bias(torch.zeros(3, 5))
    assert bias(torch.zeros(3, 5, dtype=torch.float64)).dtype == torch.float64
    no_invariants = InvariantBias(Rep("1o", "SO3"))  # no parameters: any dtype passes through
    assert no_invariants(torch.zeros(2, 3, dtype=torch.float16)).dtype == torch.float16
