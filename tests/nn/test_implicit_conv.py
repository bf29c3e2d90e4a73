"""ImplicitSteerableConv: equivariance for every group, learning, gradients, compile, bad input."""

from __future__ import annotations

import warnings

import pytest
import torch
from e3nn.util.test import assert_equivariant
from torch_geometric.data import Batch, Data

import symgraph as sg
from symgraph.graph import knn_graph, radius_graph
from symgraph.groups import GROUPS, group_from_name
from symgraph.nn import ImplicitKernel, ImplicitSteerableConv
from symgraph.testing import equivariance_error

CATALOG = list(GROUPS) + ["C3", "D4"]
IN, OUT = "3x0e + 2x1o + 1x2e", "2x0e + 2x1o + 1x1e + 0o"


def random_graph(num_nodes=24, edge_dim=3, node_dim=2, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    pos = torch.randn(num_nodes, 3, generator=gen, dtype=dtype)
    edge_index = radius_graph(pos, 2.0)
    edge_attr = torch.randn(edge_index.shape[1], edge_dim, generator=gen, dtype=dtype)
    node_attr = torch.randn(num_nodes, node_dim, generator=gen, dtype=dtype)
    return pos, edge_index, edge_attr, node_attr


def make_conv(group, **kwargs):
    conv = ImplicitSteerableConv(IN, OUT, group=group, edge_dim=3, node_dim=2, cutoff=2.0, **kwargs)
    with torch.no_grad():
        for bias in conv.bias.biases:
            bias.normal_()
    return conv


@pytest.mark.parametrize("name", CATALOG)
@pytest.mark.parametrize("dtype,bound", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_equivariance_every_group(name, dtype, bound):
    group = group_from_name(name)
    conv = make_conv(group).to(dtype)
    pos, edge_index, edge_attr, node_attr = random_graph(dtype=dtype)
    x = torch.randn(pos.shape[0], conv.rep_in.dim, dtype=dtype)

    def f(x, pos):
        return conv(x, pos, edge_index, edge_attr, node_attr)

    err = equivariance_error(f, group, [x, pos], [conv.rep_in, "pos"], conv.rep_out, num_elements=4)
    assert err < bound


def test_equivariance_on_batched_graphs():
    group = sg.groups.SO2()
    conv = make_conv(group).double()
    graphs = []
    for seed in range(3):
        pos, edge_index, edge_attr, node_attr = random_graph(10 + 3 * seed, seed=seed)
        x = torch.randn(pos.shape[0], conv.rep_in.dim, dtype=torch.float64)
        graphs.append(Data(x=x, pos=pos, edge_index=edge_index, edge_attr=edge_attr, a=node_attr))
    batch = Batch.from_data_list(graphs)

    def f(x, pos):
        return conv(x, pos, batch.edge_index, batch.edge_attr, batch.a)

    assert (
        equivariance_error(f, group, [batch.x, batch.pos], [conv.rep_in, "pos"], conv.rep_out)
        < 1e-10
    )
    # each graph of the batch is convolved on its own
    single = conv(
        graphs[1].x, graphs[1].pos, graphs[1].edge_index, graphs[1].edge_attr, graphs[1].a
    )
    out = f(batch.x, batch.pos)
    assert torch.allclose(out[batch.batch == 1], single, atol=1e-12)


def test_e3nn_assert_equivariant_o3(float64_default):
    """In float64 (e3nn draws its rotations in the default dtype), to the project's 1e-10."""
    conv = ImplicitSteerableConv("4x0e + 2x1o", "2x0e + 1x1o + 1x2e", cutoff=2.0).double()
    pos, edge_index, _, _ = random_graph(16, dtype=torch.float64)

    def f(x, pos):
        return conv(x, pos, edge_index)

    assert_equivariant(
        f,
        irreps_in=[conv.irreps_in, "cartesian_points"],
        irreps_out=[conv.irreps_out],
        args_in=[torch.randn(16, conv.rep_in.dim), pos],
        tolerance=1e-10,
    )


@pytest.mark.parametrize("backend", ["padded", "scatter"])
def test_backends_and_block_sizes_agree(backend):
    conv = make_conv(sg.groups.O3(), backend="auto").double()
    pos, edge_index, edge_attr, node_attr = random_graph(40)
    perm = torch.randperm(edge_index.shape[1])  # unsorted edges
    edge_index, edge_attr = edge_index[:, perm], edge_attr[perm]
    x = torch.randn(40, conv.rep_in.dim, dtype=torch.float64)
    reference = conv(x, pos, edge_index, edge_attr, node_attr)
    conv.backend = backend
    assert torch.allclose(conv(x, pos, edge_index, edge_attr, node_attr), reference, atol=1e-12)
    knn = knn_graph(pos, 6)
    conv.backend = "regular"
    regular = conv(x, pos, knn, torch.zeros(knn.shape[1], 3, dtype=torch.float64), node_attr)
    conv.backend = backend
    other = conv(x, pos, knn, torch.zeros(knn.shape[1], 3, dtype=torch.float64), node_attr)
    assert torch.allclose(regular, other, atol=1e-12)


def test_never_builds_per_edge_kernels_but_matches_them():
    """The node-wise contraction equals the explicit Σ_j K_ij f_j with materialised kernels."""
    conv = make_conv(sg.groups.Octahedral(), self_interaction=False).double()
    conv.bias = None
    pos, edge_index, edge_attr, node_attr = random_graph(20)
    x = torch.randn(20, conv.rep_in.dim, dtype=torch.float64)
    src, dst = edge_index
    kernels = conv.kernel(pos[src] - pos[dst], edge_attr, node_attr[src], node_attr[dst])
    explicit = torch.zeros(20, conv.rep_out.dim, dtype=torch.float64)
    explicit.index_add_(0, dst, (kernels @ x[src, :, None])[..., 0])
    assert torch.allclose(conv(x, pos, edge_index, edge_attr, node_attr), explicit, atol=1e-12)


def test_kernel_is_steerable_and_vanishes_at_cutoff():
    group = sg.groups.D(6)
    kernel = ImplicitKernel("2x0e + 1o", "1o + 2e", group=group, edge_dim=2, cutoff=1.5).double()
    rel = torch.randn(7, 3, dtype=torch.float64)
    attr = torch.randn(7, 2, dtype=torch.float64)
    g = group.elements()[5]
    rho_in, rho_out = kernel.rep_in.rho(g[None])[0], kernel.rep_out.rho(g[None])[0]
    rotated = kernel(rel @ g.T, attr)
    expected = rho_out @ kernel(rel, attr) @ rho_in.T
    assert torch.allclose(rotated, expected, atol=1e-12)
    far = torch.tensor([[1.5, 0.0, 0.0], [0.0, 2.0, 0.0]], dtype=torch.float64)
    assert kernel(far, torch.zeros(2, 2, dtype=torch.float64)).abs().max().item() == 0.0


@pytest.mark.parametrize("lmax", [1, 2, 3])
def test_feature_major_embedding_matches_the_differentiable_one(lmax):
    """The in-place rows (closed-form Y_1, Y_2) equal ``embed(...).T``, zero vectors included;
    with inputs that need gradients the differentiable path is taken."""
    kernel = ImplicitKernel("2x0e + 1o", "1o", edge_dim=2, node_dim=3, lmax=lmax).double()
    rel = torch.randn(50, 3, dtype=torch.float64) * 2
    rel[7] = 0.0
    attrs = [torch.randn(50, width, dtype=torch.float64) for width in (2, 3, 3)]
    expected = kernel.embed(rel, *attrs).T
    fast = kernel.embed_feature_major(rel, *attrs)
    assert fast.is_contiguous() and fast.shape == expected.shape
    assert (fast - expected).abs().max().item() < 1e-13
    assert fast[-((lmax + 1) ** 2 - 1) :, 7].abs().max().item() == 0.0
    rel.requires_grad_(True)
    differentiable = kernel.embed_feature_major(rel, *attrs)
    assert differentiable.requires_grad
    assert torch.allclose(differentiable, expected, atol=1e-13)


def test_gradients_reach_every_parameter():
    conv = make_conv(sg.groups.SO3())
    pos, edge_index, edge_attr, node_attr = random_graph(dtype=torch.float32)
    x = torch.randn(pos.shape[0], conv.rep_in.dim)
    conv(x, pos, edge_index, edge_attr, node_attr).square().sum().backward()
    for name, parameter in conv.named_parameters():
        assert parameter.grad is not None and bool(parameter.grad.abs().sum() > 0), name


def test_no_edges_and_isolated_nodes_give_self_interaction_and_bias():
    conv = make_conv(sg.groups.O3())
    pos = torch.randn(5, 3)
    x = torch.randn(5, conv.rep_in.dim)
    empty = torch.zeros(2, 0, dtype=torch.long)
    expected = conv.bias(conv.self_linear(x))
    out = conv(x, pos, empty, torch.zeros(0, 3), torch.zeros(5, 2))
    assert torch.allclose(out, expected) and bool(torch.isfinite(out).all())
    edge_index = torch.tensor([[0], [1]])  # node 4 has no neighbour
    conv_mean = make_conv(sg.groups.O3(), aggr="mean")
    out = conv_mean(x, pos, edge_index, torch.zeros(1, 3), torch.zeros(5, 2))
    assert torch.allclose(out[4], conv_mean.bias(conv_mean.self_linear(x))[4])


def _compiled_matches_eager(backend: str) -> None:
    torch._dynamo.reset()
    conv = make_conv(sg.groups.SO2(), checkpoint=False)
    pos, edge_index, edge_attr, node_attr = random_graph(dtype=torch.float32)
    x = torch.randn(pos.shape[0], conv.rep_in.dim)
    eager = conv(x, pos, edge_index, edge_attr, node_attr)
    compiled = torch.compile(conv, backend=backend)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = compiled(x, pos, edge_index, edge_attr, node_attr)
    assert torch.allclose(out, eager, atol=1e-5)
    # our caches are not traced through (dynamo would skip them and warn)
    assert not [w for w in caught if "lru_cache" in str(w.message)]


def test_torch_compile_matches_eager():
    """Dynamo capture and AOT autograd (the inductor code generation is the slow test)."""
    _compiled_matches_eager("aot_eager")


@pytest.mark.slow
def test_torch_compile_inductor_matches_eager():
    _compiled_matches_eager("inductor")


def test_bad_input_names_the_argument():
    conv = make_conv(sg.groups.O3())
    pos, edge_index, edge_attr, node_attr = random_graph(8, dtype=torch.float32)
    x = torch.randn(8, conv.rep_in.dim)
    with pytest.raises(ValueError, match=r"pos: expected shape \[N, 3\]"):
        conv(x, pos[:, :2], edge_index, edge_attr, node_attr)
    with pytest.raises(ValueError, match=r"x: expected shape \[N, 14\]"):
        conv(x[:, :5], pos, edge_index, edge_attr, node_attr)
    with pytest.raises(ValueError, match=r"edge_index: expected node indices in \[0, 8\)"):
        conv(x, pos, edge_index + 8, edge_attr, node_attr)
    with pytest.raises(TypeError, match="edge_index: expected an int64"):
        conv(x, pos, edge_index.float(), edge_attr, node_attr)
    with pytest.raises(ValueError, match=r"edge_index: expected shape \[2, E\]"):
        conv(x, pos, edge_index[:1], edge_attr, node_attr)
    with pytest.raises(ValueError, match="edge_attr: expected shape"):
        conv(x, pos, edge_index, edge_attr[:, :2], node_attr)
    bad = pos.clone()
    bad[3, 1] = float("nan")
    with pytest.raises(ValueError, match="pos: expected finite values"):
        conv(x, bad, edge_index, edge_attr, node_attr)
    with pytest.raises(ValueError, match="aggr"):
        ImplicitSteerableConv("0e", "0e", aggr="max")


def test_node_attributes_for_a_layer_built_without_them_are_refused():
    """A layer built with ``node_dim=0`` would ignore ``node_attr``: it says so instead."""
    conv = ImplicitSteerableConv("1x0e + 1x1o", "1x0e", group=sg.groups.SO3())
    pos, edge_index, _, node_attr = random_graph(6, dtype=torch.float32)
    x = torch.randn(6, conv.rep_in.dim)
    with pytest.raises(ValueError, match="node_attr: this layer was built with node_dim=0"):
        conv(x, pos, edge_index, node_attr=node_attr)
    assert conv(x, pos, edge_index).shape == (6, 1)


def test_repr_is_informative():
    text = repr(make_conv(sg.groups.SO2()))
    assert "ImplicitSteerableConv" in text and "group=SO2" in text and "edge_dim=3" in text


@pytest.mark.parametrize("num_graphs", [3.0, "3", True])
def test_readout_names_num_graphs_when_it_is_no_int(num_graphs):
    """A float ``num_graphs`` was refused under another name (``num_segments``), a string
    with a bare ``TypeError`` from a comparison, and ``True`` was taken as 1."""
    readout = sg.nn.InvariantReadout(sg.Rep("2x0e + 1x1o", group_from_name("O3")))
    x, batch = torch.randn(4, 5), torch.tensor([0, 0, 1, 1])
    one_graph = torch.zeros(4, dtype=torch.long)  # where True would pass as 1
    message = f"num_graphs: expected an int or None, got {num_graphs!r}"
    with pytest.raises(ValueError, match=message):
        readout(x, one_graph if num_graphs is True else batch, num_graphs)
    assert readout(x, batch, 3).shape == (3, 2)


@pytest.mark.parametrize("name", ["SO2", "O3", "D4", "Octahedral"])
def test_readout_and_layer_norm_are_equivariant(name):
    group = group_from_name(name)
    rep = sg.Rep("3x0e + 2x1o + 1x2e + 0o", group)
    norm = sg.nn.EquivariantLayerNorm(rep).double()
    readout = sg.nn.InvariantReadout(rep, reduce="mean").double()
    x = torch.randn(12, rep.dim, dtype=torch.float64)
    batch = torch.tensor([0] * 5 + [1] * 7)
    assert equivariance_error(norm, group, [x], [rep], rep) < 1e-10
    pooled = readout(x, batch)
    assert pooled.shape == (2, readout.num_invariants)
    assert equivariance_error(lambda x: readout(x, batch), group, [x], [rep], None) < 1e-10
    expected_invariants = {"SO2": 3 + 2 + 1 + 1, "O3": 3, "D4": 3 + 1 + 1, "Octahedral": 3 + 1}
    assert readout.num_invariants == expected_invariants[name]


def test_layer_norm_values_per_block_type():
    """Layer norm by hand: ``0e`` centred and scaled over its copies, ``0o`` and regular
    blocks by their RMS over all channels, vectors by the RMS over copies of ``|v|²``."""
    group = group_from_name("C4")
    rep = sg.Rep("2x0e + 3x1o + 2x0o", group) + sg.Rep.regular(group, 2)
    norm = sg.nn.EquivariantLayerNorm(rep, eps=1e-6).double()
    torch.manual_seed(0)
    with torch.no_grad():
        for scale in norm.scales:
            scale.uniform_(0.5, 2.0)
        norm.shifts[0].copy_(torch.tensor([0.3, -0.7], dtype=torch.float64))
    x = torch.randn(5, rep.dim, dtype=torch.float64)
    s = [scale.detach() for scale in norm.scales]
    scalars = x[:, 0:2] - x[:, 0:2].mean(-1, keepdim=True)
    scalars = scalars / (scalars.square().mean(-1, keepdim=True) + 1e-6).sqrt()
    vectors = x[:, 2:11].reshape(5, 3, 3)
    vectors = vectors / (vectors.square().sum(-1).mean(-1) + 1e-6).sqrt()[:, None, None]
    odd = x[:, 11:13] / (x[:, 11:13].square().mean(-1, keepdim=True) + 1e-6).sqrt()
    regular = x[:, 13:21] / (x[:, 13:21].square().mean(-1, keepdim=True) + 1e-6).sqrt()
    expected = torch.cat(
        [
            scalars * s[0] + torch.tensor([0.3, -0.7], dtype=torch.float64),
            (vectors * s[1][:, None]).reshape(5, 9),
            odd * s[2],
            (regular.reshape(5, 2, 4) * s[3][:, None]).reshape(5, 8),
        ],
        dim=-1,
    )
    assert rep.dim == 21
    assert torch.allclose(norm(x), expected, atol=1e-10)


@pytest.mark.parametrize("backend", ["auto", "scatter"])
def test_block_size_does_not_change_the_result(backend):
    pos, edge_index, edge_attr, node_attr = random_graph(40)
    conv = make_conv(sg.groups.O3(), backend=backend).double()
    x = torch.randn(pos.shape[0], conv.rep_in.dim, dtype=torch.float64)
    default = conv(x, pos, edge_index, edge_attr, node_attr)
    conv.block_edges = 16  # many blocks of a few receivers each
    assert torch.allclose(conv(x, pos, edge_index, edge_attr, node_attr), default, atol=1e-12)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_bad_block_edges_is_rejected(bad):
    with pytest.raises(ValueError, match="block_edges: expected a positive int or None"):
        ImplicitSteerableConv(IN, OUT, block_edges=bad)


def test_padded_backend_on_a_graph_too_uneven_to_pad_matches_scatter():
    """One hub with 40 in-edges among 60 nodes: "auto" would scatter; the fused CPU path
    honours the requested "padded" (it used to resolve "auto" itself and refuse)."""
    torch.manual_seed(0)
    n = 60
    src = list(range(1, 41)) + list(range(n))
    dst = [0] * 40 + [(i + 1) % n for i in range(n)]
    edge_index = torch.tensor([src, dst])
    x, pos = torch.randn(n, 5), torch.randn(n, 3)
    conv = ImplicitSteerableConv("2x0e + 1x1o", "2x0e + 1x1o", backend="padded")
    padded = conv(x, pos, edge_index)
    conv.backend = "scatter"
    torch.testing.assert_close(padded, conv(x, pos, edge_index), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cutoff", [None, 2.5])
def test_second_derivatives_stay_finite_with_self_loops(cutoff):
    """Force training and Hessians differentiate ∂E/∂pos again: at a self-loop (rel = 0)
    every edge length and direction term needs finite first and second derivatives
    (``Tensor.norm``'s second derivative is NaN at 0)."""
    torch.manual_seed(0)
    conv = ImplicitSteerableConv("2x0e + 1x1o", "1x0e + 1x1o", group=sg.groups.O3(), cutoff=cutoff)
    conv = conv.double()
    pos = torch.randn(3, 3, dtype=torch.float64, requires_grad=True)
    x = torch.randn(3, conv.rep_in.dim, dtype=torch.float64)
    edge_index = torch.tensor([[0, 1, 2], [1, 1, 1]])  # 1 -> 1 is a self-loop
    (force,) = torch.autograd.grad(conv(x, pos, edge_index).square().sum(), pos,
                                   create_graph=True)  # fmt: skip
    force.square().sum().backward()
    assert torch.isfinite(force).all() and torch.isfinite(pos.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in conv.parameters() if p.grad is not None)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in conv.parameters())


def test_feature_major_embedding_keeps_gradients_of_attributes():
    """Attributes that need gradients (positions that do not) take the differentiable path."""
    kernel = ImplicitKernel("2x0e + 1o", "1o", edge_dim=2, node_dim=1).double()
    rel = torch.randn(6, 3, dtype=torch.float64)
    attrs = [torch.randn(6, w, dtype=torch.float64, requires_grad=True) for w in (2, 1, 1)]
    weights = torch.randn(kernel.rep_embedding.dim, 6, dtype=torch.float64)
    fast = kernel.embed_feature_major(rel, *attrs)
    assert fast.requires_grad
    got = torch.autograd.grad((fast * weights).sum(), attrs)
    want = torch.autograd.grad((kernel.embed(rel, *attrs).T * weights).sum(), attrs)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=0, atol=1e-14)


def test_cutoff_must_be_positive_and_sets_the_radial_range():
    """``cutoff=0`` is refused by name; with a cutoff, ``r_max`` plays no part."""
    with pytest.raises(ValueError, match="cutoff: expected a positive number"):
        ImplicitKernel("0e", "0e", cutoff=0.0)
    rel = torch.randn(9, 3, dtype=torch.float64)
    outputs = []
    for r_max in (5.0, 20.0):
        torch.manual_seed(1)
        kernel = ImplicitKernel("0e + 1o", "1o", cutoff=1.5, r_max=r_max).double()
        assert kernel.radial.r_max == 1.5
        outputs.append(kernel(rel))
    torch.testing.assert_close(outputs[0], outputs[1], rtol=0, atol=0)


@pytest.mark.parametrize("setting", [dict(cutoff=float("inf")), dict(r_max=float("inf"))])
def test_infinite_cutoff_or_radial_range_is_refused(setting):
    """An infinite ``cutoff`` (read as "no cutoff") or ``r_max`` was accepted and spread the
    radial basis' centres to infinity: every edge's message, hence the output, was NaN."""
    name = next(iter(setting))
    with pytest.raises(ValueError, match=f"{name}: expected a finite distance .* got inf"):
        ImplicitSteerableConv("0e", "0e", **setting)
    with pytest.raises(ValueError, match="r_max: expected a finite positive number, got inf"):
        sg.nn.RadialEmbedding(4, float("inf"))


def test_embedding_puts_sender_attributes_before_receiver_attributes():
    """The MLP input: radial basis, edge attributes, sender's, then receiver's node attributes."""
    kernel = ImplicitKernel("0e", "0e", edge_dim=2, node_dim=3, num_radial=4).double()
    rel = torch.randn(5, 3, dtype=torch.float64)
    edge_attr, src, dst = (torch.randn(5, w, dtype=torch.float64) for w in (2, 3, 3))
    for embedding in (kernel.embed(rel, edge_attr, src, dst),
                      kernel.embed_feature_major(rel, edge_attr, src, dst).T):  # fmt: skip
        assert torch.equal(embedding[:, 4:6], edge_attr)
        assert torch.equal(embedding[:, 6:9], src)
        assert torch.equal(embedding[:, 9:12], dst)


def test_node_attributes_of_the_wrong_shape_are_named():
    kernel = ImplicitKernel("0e", "0e", node_dim=2).double()
    rel = torch.randn(4, 3, dtype=torch.float64)
    good = torch.randn(4, 2, dtype=torch.float64)
    for bad in (torch.randn(4, 3, dtype=torch.float64), torch.randn(5, 2, dtype=torch.float64)):
        with pytest.raises(ValueError, match=r"node_dst: expected shape \[4, 2\]"):
            kernel(rel, None, good, bad)


def test_edge_length_is_exact_with_zero_derivatives_at_self_loops():
    """``edge_length`` is ``|rel|``, exactly 0 for zero vectors, with finite first and second
    derivatives there (0) and the usual ones elsewhere."""
    from symgraph.nn.embedding import edge_length

    rel = torch.tensor([[3.0, 4.0, 0.0], [0.0, 0.0, 0.0], [1.0, -2.0, 2.0]], dtype=torch.float64)
    rel.requires_grad_(True)
    length = edge_length(rel)
    assert torch.equal(length.detach(), torch.tensor([5.0, 0.0, 3.0], dtype=torch.float64))
    (grad,) = torch.autograd.grad(length.sum(), rel, create_graph=True)
    expected = rel.detach() / torch.tensor([[5.0], [1.0], [3.0]], dtype=torch.float64)
    assert torch.allclose(grad, expected, atol=1e-12)
    (second,) = torch.autograd.grad(grad.square().sum(), rel)
    assert torch.isfinite(second).all() and torch.equal(second[1], torch.zeros(3).double())


def test_radial_embedding_is_gaussians_one_spacing_wide_and_rows_match():
    """Centres ``linspace(0, r_max, n)``, width the spacing ``r_max / (n - 1)``; the
    feature-major ``rows`` equal the transposed ``forward``."""
    radial = sg.nn.RadialEmbedding(num_basis=5, r_max=2.0)
    distance = torch.tensor([0.0, 0.3, 1.25, 2.0, 3.1], dtype=torch.float64)
    centres = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0], dtype=torch.float64)
    expected = torch.exp(-0.5 * ((distance[:, None] - centres) / 0.5) ** 2)
    assert torch.allclose(radial(distance), expected, atol=1e-12)
    rows = radial.rows(distance, torch.empty(5, 5, dtype=torch.float64))
    assert torch.allclose(rows, expected.T, atol=1e-12)
