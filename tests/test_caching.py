"""Caches filled during ``torch.inference_mode()`` still serve training afterwards.

Each test empties the caches it exercises first, so that the inference-mode call is the
one that fills them (otherwise an earlier test could have filled them and hidden a fault).
"""

from __future__ import annotations

import pytest
import torch

import symgraph as sg
from symgraph.caching import outside_inference_mode, tensor_cache
from symgraph.graph import knn_graph
from symgraph.groups import basis, wigner
from symgraph.lattice import Lattice, fields, lattice_graph, stencil
from symgraph.models import fluids
from symgraph.nn import ImplicitSteerableConv
from symgraph.ops import gate, lattice_conv, lattice_weight


def clear_tensor_caches() -> None:
    for cached in (
        gate._gather_plan, lattice_conv._offsets, lattice_conv._relative_positions,
        lattice_conv._centre_index, stencil._linear_kernel_index, fields._vector_layout,
        fluids._cached_graph, wigner._fit,
    ):  # fmt: skip
        cached.cache_clear()
    basis.clear_cache()


def test_tensor_cache_builds_ordinary_tensors_in_inference_mode():
    @tensor_cache(maxsize=4)
    def ones(n: int) -> torch.Tensor:
        return torch.ones(n)

    with torch.inference_mode():
        cached = ones(3)
        assert not outside_inference_mode(torch.zeros)(2).is_inference()
    assert not cached.is_inference()
    assert ones(3) is cached


def test_tensor_cache_keeps_at_most_maxsize_values():
    """With ``maxsize=2`` a third argument evicts the least recently used value."""
    builds = []

    @tensor_cache(maxsize=2)
    def ones(n: int) -> torch.Tensor:
        builds.append(n)
        return torch.ones(n)

    first = ones(1)
    ones(2)
    assert ones(1) is first and builds == [1, 2]
    ones(3)  # evicts 2, the least recently used
    ones(1)
    ones(2)
    assert builds == [1, 2, 3, 2]


@pytest.mark.parametrize("backend", ["scatter", "auto"])
def test_layer_trains_after_an_inference_mode_pass(backend):
    clear_tensor_caches()
    torch.manual_seed(0)
    conv = ImplicitSteerableConv("3x0e + 1x1o", "2x0e + 1x1o", group=sg.groups.SO3(),
                                 backend=backend)  # fmt: skip
    pos = torch.randn(6, 3)
    edge_index = knn_graph(pos, 2)
    x = torch.randn(6, conv.rep_in.dim)
    with torch.inference_mode():  # a validation pass or predict() first
        conv(x, pos, edge_index)
    conv(x, pos, edge_index).square().sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in conv.parameters())


def test_layer_built_in_inference_mode_trains():
    clear_tensor_caches()
    with torch.inference_mode():
        conv_in_inference = ImplicitSteerableConv("2x0e + 1x1o + 1x2e", "1x0e + 1x1o",
                                                  group=sg.groups.O3())  # fmt: skip
    conv = ImplicitSteerableConv("2x0e + 1x1o + 1x2e", "1x0e + 1x1o", group=sg.groups.O3())
    pos = torch.randn(5, 3)
    x = torch.randn(5, conv.rep_in.dim)
    conv(x, pos, knn_graph(pos, 2)).square().sum().backward()
    assert not any(b.is_inference() for b in conv.buffers())
    del conv_in_inference


def test_lattice_paths_train_after_an_inference_mode_pass():
    clear_tensor_caches()
    lattice = Lattice((6, 6), radius=1)
    c4 = sg.groups.group_from_name("C4")
    conv = ImplicitSteerableConv("2x0e + 2x1o", "1x0e + 1x1o", group=c4, r_max=3.0)
    graph = lattice_graph(lattice, 1)
    x = torch.randn(lattice.num_cells, conv.rep_in.dim)
    with torch.inference_mode():
        conv(x, graph.pos, graph.edge_index, rel=graph.offsets, lattice=lattice)
        lattice_weight(lambda rel: rel[:, :2, None], lattice)
    conv(x, graph.pos, graph.edge_index, rel=graph.offsets, lattice=lattice).sum().backward()
    weight = torch.randn(3, 2, requires_grad=True)
    lattice_weight(lambda rel: (rel @ weight)[:, :, None], lattice).sum().backward()
    assert weight.grad is not None


def test_fluid_model_trains_after_an_inference_mode_rollout():
    clear_tensor_caches()
    model = fluids.build_fluid_model("equivariant", 2, width=4, layers=2)
    frames = torch.randn(1, 2, 2, 8, 8)  # [B, T, (u, v), H, W]
    with torch.inference_mode():
        model(frames)
    model(frames).square().mean().backward()


def test_lattice_positions_made_in_inference_mode_are_checked():
    lattice = Lattice((4, 4), radius=1)
    conv = ImplicitSteerableConv("1x0e", "1x0e", group=sg.groups.group_from_name("C4"))
    with torch.inference_mode():
        graph = lattice_graph(lattice, 1)
        x = torch.randn(lattice.num_cells, 1)
    out = conv(x, graph.pos, graph.edge_index, rel=graph.offsets, lattice=lattice)
    assert out.shape == (lattice.num_cells, 1)
    with pytest.raises(ValueError, match="lattice: pos does not hold the cell positions"):
        conv(x, graph.pos * 2, graph.edge_index, rel=graph.offsets, lattice=lattice)
