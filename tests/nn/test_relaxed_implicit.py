"""RelaxedImplicitKernel / RelaxedImplicitSteerableConv: exact equivariance at initialisation,
broken equivariance once the strength moves, the penalty, freezing, learning, bad input."""

from __future__ import annotations

import pytest
import torch

from symgraph.graph import radius_graph
from symgraph.groups import equivariant_basis, group_from_name
from symgraph.nn import ImplicitSteerableConv
from symgraph.nn.relaxed_implicit import RelaxedImplicitKernel, RelaxedImplicitSteerableConv
from symgraph.nn.relaxed_utils import (
    relaxation_penalty,
    relaxation_report,
    relaxed_modules,
    set_relaxation_trainable,
)
from symgraph.testing import equivariance_error

IN, OUT = "2x0e + 2x1o + 1x2e", "2x0e + 1x1o + 1x0o"
F64 = torch.float64


def cloud(num_nodes: int = 16, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    pos = torch.randn(num_nodes, 3, generator=gen, dtype=F64)
    edge_index = radius_graph(pos, 2.0, loop=True)
    edge_attr = torch.randn(edge_index.shape[1], 2, generator=gen, dtype=F64)
    node_attr = torch.randn(num_nodes, 1, generator=gen, dtype=F64)
    return pos, edge_index, edge_attr, node_attr


def make_conv(group_name: str, free_input: str = "position") -> RelaxedImplicitSteerableConv:
    group = group_from_name(group_name)
    return RelaxedImplicitSteerableConv(
        IN, OUT, group, edge_dim=2, node_dim=1, cutoff=2.0, free_input=free_input
    ).double()


def error(conv, group_name: str) -> float:
    pos, edge_index, edge_attr, node_attr = cloud()
    x = torch.randn(pos.shape[0], conv.rep_in.dim, dtype=F64)

    def f(x, pos):
        return conv(x, pos, edge_index, edge_attr, node_attr)

    group = group_from_name(group_name)
    return equivariance_error(f, group, [x, pos], [conv.rep_in, "pos"], conv.rep_out, 4)


@pytest.mark.parametrize("free_input", ["position", "radial", "constant"])
@pytest.mark.parametrize("group_name", ["C4", "D4", "SO2", "O3"])
def test_exact_at_initialisation_broken_after_perturbing(group_name, free_input):
    conv = make_conv(group_name, free_input)
    assert float(relaxation_penalty(conv).detach()) == 0.0
    assert error(conv, group_name) < 1e-10
    with torch.no_grad():
        conv.kernel.head.free.normal_(std=0.1)
    free = conv.kernel.head.free
    whole = float(free.detach().square().sum()) / free.shape[0]
    penalty = float(relaxation_penalty(conv).detach())
    if free_input == "position":
        assert penalty == pytest.approx(whole)
    else:  # the equivariant components of V (e.g. 0e -> 0e) are not counted
        assert 0 < penalty < whole
    assert float(conv.strength.detach()) == pytest.approx(penalty**0.5)
    assert error(conv, group_name) > 1e-3


def random_equivariant_heads(kernel: RelaxedImplicitKernel) -> torch.Tensor:
    """``V [C_out, H, C_in]`` with every ``V[:, h, :]`` a random map in Hom_G(ρ_in, ρ_out)."""
    hom = equivariant_basis(kernel.rep_in, kernel.rep_out)
    free = kernel.head.free
    maps = [hom.matrix(torch.randn(hom.dim, dtype=free.dtype)) for _ in range(free.shape[1])]
    return torch.stack(maps, dim=1)


@pytest.mark.parametrize("free_input", ["radial", "constant"])
@pytest.mark.parametrize("group_name", ["C4", "D4", "SO2", "O3"])
def test_invariant_free_features_with_an_equivariant_head_cost_nothing(group_name, free_input):
    """With invariant free features ``u``, a free head made of equivariant maps leaves the
    layer equivariant: it is no relaxation, so neither penalty nor strength count it (both
    counted all of ``V``: a strictly equivariant layer reported a symmetry breaking)."""
    torch.manual_seed(0)
    conv = make_conv(group_name, free_input)
    equivariant = random_equivariant_heads(conv.kernel)
    with torch.no_grad():
        conv.kernel.head.free.copy_(equivariant)
    assert float(equivariant.square().sum()) > 1.0
    assert error(conv, group_name) < 1e-10
    assert float(relaxation_penalty(conv).detach()) < 1e-20
    assert float(conv.strength.detach()) < 1e-10
    # a symmetry-breaking part on top is counted alone, whatever the equivariant part
    breaking = torch.randn_like(equivariant)
    with torch.no_grad():
        conv.kernel.head.free.copy_(breaking)
    alone = float(relaxation_penalty(conv).detach())
    with torch.no_grad():
        conv.kernel.head.free.add_(equivariant)
    assert alone > 0.1 and float(relaxation_penalty(conv).detach()) == pytest.approx(alone)
    assert error(conv, group_name) > 1e-3
    # the penalty's gradient only moves V out of the equivariant maps' way
    conv.kernel.head.free.grad = None
    relaxation_penalty(conv).backward()
    grad = conv.kernel.head.free.grad
    assert abs(float((grad * equivariant).sum())) < 1e-10 * float(grad.norm() * equivariant.norm())


def test_initial_layer_computes_the_strict_layer():
    torch.manual_seed(3)
    relaxed = make_conv("SO2")
    strict = ImplicitSteerableConv(IN, OUT, relaxed.group, edge_dim=2, node_dim=1, cutoff=2.0)
    strict = strict.double()
    state = {k: v for k, v in relaxed.state_dict().items() if "free" not in k}
    strict.load_state_dict({k.replace("head.equivariant.", "head."): v for k, v in state.items()})
    pos, edge_index, edge_attr, node_attr = cloud()
    x = torch.randn(pos.shape[0], relaxed.rep_in.dim, dtype=F64)
    out = relaxed(x, pos, edge_index, edge_attr, node_attr)
    assert torch.allclose(out, strict(x, pos, edge_index, edge_attr, node_attr), atol=1e-12)


def test_kernel_materialises_both_pathways():
    kernel = RelaxedImplicitKernel("1x0e + 1x1o", "1x1o", group_from_name("C4")).double()
    rel = torch.randn(5, 3, dtype=F64)
    with torch.no_grad():
        kernel.head.free.normal_()
    h = kernel.hidden_features(rel)
    weight = kernel.head.weight_tensor(like=h)
    assert h.shape == (5, kernel.rep_hidden.dim + 8)
    assert torch.equal(weight[:, kernel.rep_hidden.dim :], kernel.head.free)
    expected = torch.einsum("ea,oai->eoi", h, weight)
    assert torch.allclose(kernel(rel), expected, atol=1e-12)


def test_penalty_report_and_freezing_find_the_kernel():
    model = torch.nn.Sequential(make_conv("C4"), make_conv("C4"))
    assert [name for name, _ in relaxed_modules(model)] == ["0.kernel", "1.kernel"]
    with torch.no_grad():
        model[1].kernel.head.free.fill_(2.0)  # C_out = 6: ‖V‖² / C_out = 4 * H * C_in
    report = relaxation_report(model)
    assert report == {"0.kernel": 0.0, "1.kernel": pytest.approx(4.0 * 8 * model[1].rep_in.dim)}
    set_relaxation_trainable(model, False)
    frozen = [p for conv in model for p in conv.kernel.relaxation_parameters()]
    assert frozen and not any(p.requires_grad for p in frozen)
    assert model[0].kernel.head.equivariant.weights[0].requires_grad


def test_low_capacity_free_pathways():
    """``radial``: the free features depend on the length only; ``constant``: ``u ≡ 1``."""
    group = group_from_name("C4")
    rel = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]], dtype=F64)
    for free_input in ("radial", "constant"):
        kernel = RelaxedImplicitKernel("1x0e", "1x1o", group, free_input=free_input).double()
        with torch.no_grad():
            kernel.head.free.normal_()
        u = kernel.free_features(rel)
        assert torch.equal(u[0], u[1])  # the same for two offsets of the same length
        h = kernel.hidden_features(rel)
        assert torch.equal(h[:, kernel.rep_hidden.dim :], u)
    assert kernel.free_body is None and kernel.head.free.shape == (3, 1, 1)
    assert torch.equal(u, torch.ones(3, 1, dtype=F64))
    assert kernel.relaxation_parameters() == [kernel.head.free]


@pytest.mark.parametrize("free_input", ["position", "radial", "constant"])
def test_strength_learns_a_symmetry_breaking_target(free_input):
    """A target no equivariant layer can fit (a fixed direction) switches the pathway on."""
    torch.manual_seed(0)
    group = group_from_name("C4")
    conv = RelaxedImplicitSteerableConv(
        "1x0e", "1x1o", group, cutoff=2.0, self_interaction=False, free_input=free_input
    )
    pos = torch.randn(24, 3)
    edge_index = radius_graph(pos, 2.0, loop=True)
    x = torch.ones(24, 1)
    target = torch.tensor([[0.0, 1.0, 0.0]]).expand(24, 3)  # "up", the same everywhere
    optimizer = torch.optim.Adam(conv.parameters(), lr=0.03)
    for _ in range(60):
        loss = (conv(x, pos, edge_index) - target).square().mean()
        optimizer.zero_grad()
        (loss + 1e-4 * relaxation_penalty(conv)).backward()
        optimizer.step()
    assert abs(float(conv.strength.detach())) > 0.1
    assert float(loss.detach()) < 0.5 * float(target.square().mean())


def test_bad_arguments():
    group = group_from_name("C4")
    with pytest.raises(ValueError, match="free_hidden: expected a positive int"):
        RelaxedImplicitKernel("1x0e", "1x0e", group, free_hidden=0)
    with pytest.raises(ValueError, match="free_layers: expected an int"):
        RelaxedImplicitSteerableConv("1x0e", "1x0e", group, free_layers=0)
    with pytest.raises(ValueError, match="free_input: expected one of"):
        RelaxedImplicitSteerableConv("1x0e", "1x0e", group, free_input="global")
    conv = RelaxedImplicitSteerableConv("1x0e + 1x1o", "1x0e", group)
    pos = torch.randn(5, 3)
    with pytest.raises(ValueError, match=r"x: expected shape \[N, 4\]"):
        conv(torch.randn(5, 3), pos, radius_graph(pos, 2.0))


def test_free_features_are_bounded_by_the_tanh():
    """``u ∈ (−1, 1)^H`` even far away (no cutoff): the free head alone sets the strength."""
    kernel = RelaxedImplicitKernel("1x0e", "1x1o", group_from_name("C4")).double()
    with torch.no_grad():
        for layer in kernel.free_body:
            if isinstance(layer, torch.nn.Linear):
                layer.weight.normal_(std=3.0)
    rel = 30 * torch.randn(64, 3, dtype=F64)
    u = kernel.free_features(rel)
    assert u.abs().max().item() <= 1.0


def test_reset_switches_the_free_pathway_off():
    conv = make_conv("C4")
    with torch.no_grad():
        conv.kernel.head.free.normal_()
    assert float(conv.strength.detach()) > 0
    conv.reset_parameters()
    assert float(relaxation_penalty(conv).detach()) == 0.0
    assert error(conv, "C4") < 1e-10


def test_freezing_covers_the_free_mlp():
    """The relaxation parameters are the free head and every parameter of the free MLP."""
    conv = make_conv("C4")
    body = list(conv.kernel.free_body.parameters())
    relaxed = conv.kernel.relaxation_parameters()
    assert body and all(any(p is q for q in relaxed) for p in body)
    set_relaxation_trainable(conv, False)
    assert not any(p.requires_grad for p in body)


def test_repr_names_the_free_pathway():
    """Two layers that differ only in their free pathway print differently (``print(model)``
    showed the plain layer's settings alone)."""
    conv = RelaxedImplicitSteerableConv("2x0e", "2x0e", free_input="constant", free_layers=1)
    assert "free_input=constant" in repr(conv) and "free_layers=1" in repr(conv)
    assert "free_" not in repr(ImplicitSteerableConv("2x0e", "2x0e"))
