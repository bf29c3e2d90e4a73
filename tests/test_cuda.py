"""On a CUDA GPU: layers and models there agree with the CPU and stay equivariant.

Skipped without a GPU (CI has none); run on a CUDA machine with ``pytest tests/test_cuda.py``.
The CPU results are the reference: their equivariance and learning are tested elsewhere,
so agreement within float32 round-off carries those properties over to the GPU paths
(cuDNN convolutions, Triton kernels where installed, CUDA scatter).
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch_geometric.data import Batch, Data

from symgraph.graph import radius_graph
from symgraph.groups import O3, C
from symgraph.lattice import Lattice, lattice_graph
from symgraph.nn import ImplicitSteerableConv
from symgraph.testing import equivariance_error

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

REP = "8x0e + 4x1o + 2x2e"


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    difference = (a.detach().cpu() - b.detach().cpu()).abs().max()
    return float(difference / b.detach().abs().max().clamp_min(1e-12))


def _graph(num_nodes: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    pos = 1.6 * torch.randn(num_nodes, 3, generator=gen)
    return pos, radius_graph(pos, 2.0)


def _forward_backward(module, *args) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Output and the gradients of its squared sum w.r.t. the first argument and parameters."""
    leaf = args[0].detach().clone().requires_grad_()
    out = module(leaf, *args[1:])
    params = [p for p in module.parameters() if p.requires_grad]
    grads = torch.autograd.grad(out.square().sum(), [leaf, *params], allow_unused=True)
    return out, [
        g if g is not None else torch.zeros_like(p) for g, p in zip(grads, [leaf, *params])
    ]


@pytest.mark.parametrize("backend", ["auto", "padded", "scatter"])
def test_implicit_conv_on_cuda_matches_cpu(backend):
    torch.manual_seed(0)
    pos, edge_index = _graph(300)
    conv = ImplicitSteerableConv(REP, REP, group=O3(), cutoff=2.0, backend=backend)
    x = torch.randn(pos.shape[0], conv.rep_in.dim)
    out_cpu, grads_cpu = _forward_backward(conv, x, pos, edge_index)
    on_gpu = copy.deepcopy(conv).cuda()
    out_gpu, grads_gpu = _forward_backward(on_gpu, x.cuda(), pos.cuda(), edge_index.cuda())
    assert out_gpu.is_cuda
    assert _relative(out_gpu, out_cpu) < 1e-5
    for gpu, cpu in zip(grads_gpu, grads_cpu):
        assert _relative(gpu, cpu) < 1e-4


def test_implicit_conv_is_equivariant_on_cuda():
    torch.manual_seed(1)
    pos, edge_index = _graph(200, seed=1)
    conv = ImplicitSteerableConv(REP, REP, group=O3(), cutoff=2.0).cuda()
    x = torch.randn(pos.shape[0], conv.rep_in.dim, device="cuda")

    def f(x, pos):
        return conv(x, pos, edge_index.cuda())

    args = [x, pos.cuda()]
    assert equivariance_error(f, O3(), args, [conv.rep_in, "pos"], conv.rep_out) < 1e-5


def test_lattice_fast_path_on_cuda_matches_message_passing():
    torch.manual_seed(2)
    lattice = Lattice((32, 32), radius=1, periodic=True)
    conv = ImplicitSteerableConv("4x0e + 4x1o", "4x0e + 4x1o", group=C(4), r_max=2.0).cuda()
    graph = lattice_graph(lattice, 3, device="cuda")
    x = torch.randn(3 * lattice.num_cells, conv.rep_in.dim, device="cuda")
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):  # else ~3e-4 (TF32)
        fast = conv(x, graph.pos, graph.edge_index, rel=graph.offsets, lattice=lattice)
    slow = conv(x, graph.pos, graph.edge_index, rel=graph.offsets)
    assert fast.is_cuda and _relative(fast, slow) < 1e-5


def _molecules(num: int, atom_dim: int, edge_dim: int) -> Batch:
    """Random molecule-like graphs with one-hot atom and bond features (no rdkit needed)."""
    gen = torch.Generator().manual_seed(3)
    graphs = []
    for i in range(num):
        pos = 1.2 * torch.randn(8 + i, 3, generator=gen)
        edge_index = radius_graph(pos, 2.5)
        x = torch.eye(atom_dim)[torch.randint(0, atom_dim, (pos.shape[0],), generator=gen)]
        edge_type = torch.randint(0, edge_dim, (edge_index.shape[1],), generator=gen)
        graphs.append(
            Data(x=x, pos=pos, edge_index=edge_index, edge_attr=torch.eye(edge_dim)[edge_type])
        )
    return Batch.from_data_list(graphs)


def test_molecule_net_on_cuda_matches_cpu_and_is_invariant():
    from symgraph.models import SteerableMoleculeNet

    torch.manual_seed(4)
    model = SteerableMoleculeNet(hidden="16x0e + 4x1o + 2x2e", num_layers=2)
    batch = _molecules(6, model.atom_dim, model.edge_dim)
    on_gpu = copy.deepcopy(model).cuda()
    out_cpu = model(batch)
    out_cpu.square().sum().backward()
    grads_cpu = [p.grad.clone() for p in model.parameters()]
    batch_gpu = batch.to("cuda")
    out_gpu = on_gpu(batch_gpu)
    out_gpu.square().sum().backward()
    assert _relative(out_gpu, out_cpu) < 1e-5
    for p, cpu in zip(on_gpu.parameters(), grads_cpu):
        assert _relative(p.grad, cpu) < 1e-4
    rotation = O3().sample(1, generator=torch.Generator().manual_seed(5))[0].float().cuda()
    moved = batch_gpu.clone()
    moved.pos = batch_gpu.pos @ rotation.T + 0.3
    with torch.no_grad():
        assert _relative(on_gpu(moved), out_gpu) < 1e-5
