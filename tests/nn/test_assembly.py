"""SparseAssembly builds exactly the blockwise sums of basis elements it replaces."""

from __future__ import annotations

import math

import pytest
import torch

from symgraph.groups import O3, SO2, C, D, Icosahedral, Rep
from symgraph.nn import EquivariantBilinear, EquivariantLinear
from symgraph.nn.assembly import JointAssembly

GROUPS = [O3(), SO2(), C(4), D(3), Icosahedral()]


def _reference_linear(layer: EquivariantLinear) -> torch.Tensor:
    out = torch.zeros(layer.rep_out.dim, layer.rep_in.dim, dtype=torch.float64)
    for pair, weight in zip(layer.basis.pairs, layer.weights):
        basis = pair.basis * math.sqrt(pair.basis.shape[1])
        block = torch.einsum("umk,kab->uamb", weight.double(), basis)
        out[pair.slice_out, pair.slice_in] = block.reshape(
            pair.slice_out.stop - pair.slice_out.start, -1
        )
    return out


def _reference_bilinear(layer: EquivariantBilinear) -> torch.Tensor:
    out = torch.zeros(layer.rep_out.dim, layer.rep_a.dim, layer.rep_b.dim, dtype=torch.float64)
    for t, weight in zip(layer.basis.triples, layer.weights):
        basis = t.basis * math.sqrt(t.basis.shape[1])
        block = torch.einsum("uvwk,kcab->ucvawb", weight.double(), basis)
        shape = [s.stop - s.start for s in (t.slice_out, t.slice_a, t.slice_b)]
        out[t.slice_out, t.slice_a, t.slice_b] = block.reshape(shape)
    return out


@pytest.mark.parametrize("group", GROUPS, ids=lambda g: g.name)
def test_linear_assembly_matches_blockwise_sum(group):
    torch.manual_seed(0)
    layer = EquivariantLinear(
        Rep("3x0e + 2x1o + 1x2e", group), Rep("2x0e + 2x1o + 2x2e + 1x1e", group)
    ).double()
    torch.testing.assert_close(layer.weight_matrix(), _reference_linear(layer), atol=1e-14, rtol=0)


@pytest.mark.parametrize("group", GROUPS, ids=lambda g: g.name)
def test_bilinear_assembly_matches_blockwise_sum(group):
    torch.manual_seed(0)
    layer = EquivariantBilinear(
        Rep("2x0e + 1x1o + 1x2e", group), Rep("2x0e + 2x1o", group), Rep("1x0e + 2x1o", group)
    ).double()
    torch.testing.assert_close(
        layer.weight_tensor(), _reference_bilinear(layer), atol=1e-14, rtol=0
    )


def test_assembly_gradient_reaches_every_weight():
    layer = EquivariantLinear(Rep("2x0e + 2x1o", C(4)), Rep("2x0e + 2x1o", C(4)))
    layer.weight_matrix().square().sum().backward()
    assert all(w.grad is not None and w.grad.abs().sum() > 0 for w in layer.weights)


def test_assembly_without_weights_gives_zeros_like():
    layer = EquivariantLinear(Rep("2x0e", O3()), Rep("1x1o", O3()))
    like = torch.zeros(1, dtype=torch.float64)
    matrix = layer.weight_matrix(like)
    assert matrix.shape == (3, 2) and matrix.dtype == torch.float64 and not matrix.any()


def test_assembly_first_and_second_derivatives_and_frozen_weights():
    layer = EquivariantBilinear(
        Rep("1x0e + 1x1o", C(4)), Rep("1x0e + 1x1o", C(4)), Rep("1x0e + 1x1o", C(4))
    ).double()
    weights = list(layer.weights)

    def assemble(*tensors):
        return layer.assembly(list(tensors)).square()  # square: a nonzero second derivative

    assert torch.autograd.gradcheck(assemble, weights)
    assert torch.autograd.gradgradcheck(assemble, weights)
    weights[0].requires_grad_(False)
    layer.weight_tensor().sum().backward()
    assert weights[0].grad is None and all(w.grad is not None for w in weights[1:])


def test_joint_assembly_matches_the_separate_assemblies():
    torch.manual_seed(0)
    group = C(4)
    linear = EquivariantLinear(Rep("2x0e + 1x1o", group), Rep("1x0e + 2x1o", group)).double()
    bilinear = EquivariantBilinear(
        Rep("1x0e + 1x1o", group), Rep("2x0e", group), Rep("1x1o", group)
    ).double()
    with torch.no_grad():
        for bias in linear.bias.biases:
            bias.normal_()
    modules = [
        (linear.assembly, list(linear.weights)),
        (linear.bias.assembly, list(linear.bias.biases)),
        (bilinear.assembly, list(bilinear.weights)),
    ]
    joint = JointAssembly([assembly for assembly, _ in modules]).double()
    together = joint([params for _, params in modules], like=torch.zeros(1, dtype=torch.float64))
    separate = [assembly(params) for assembly, params in modules]
    params = [p for _, group_params in modules for p in group_params]
    probes = [torch.randn_like(t) for t in separate]
    grads = [
        torch.autograd.grad(sum((t * w).sum() for t, w in zip(ts, probes)), params)
        for ts in (together, separate)
    ]
    for a, b in zip(together, separate, strict=True):
        assert torch.equal(a, b)
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-15)


def test_bilinear_init_std_is_one_over_root_fan_in_of_the_output_block():
    """``N(0, 1/fan_in)`` with fan_in summed over every triple feeding the output block:
    ``16·16·1 + 4·4·1 = 272`` for ``(16x0e + 4x1o)⊗(16x0e + 4x1o) -> 4x0e`` under O(3)."""
    torch.manual_seed(0)
    rep = Rep("16x0e + 4x1o", O3())
    layer = EquivariantBilinear(rep, rep, Rep("4x0e", O3()))
    assert sorted(w.numel() for w in layer.weights) == [64, 1024]
    weights = torch.cat([w.detach().reshape(-1) for w in layer.weights])
    assert float(weights.std()) == pytest.approx(1 / math.sqrt(272), rel=0.1)
