"""Models, inputs and invariance checks shared by the teleportation tests (float64)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn
from torch.func import functional_call

from symgraph.teleport import ParameterSymmetry, TeleportContext


def random_graph(num_nodes: int = 12, num_edges: int = 40, features: int = 4, seed: int = 0):
    """``x [N, features]`` float64 and ``edge_index [2, E]`` without self loops."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(num_nodes, features, generator=gen, dtype=torch.float64)
    src = torch.randint(0, num_nodes, (num_edges,), generator=gen)
    dst = (src + torch.randint(1, num_nodes, (num_edges,), generator=gen)) % num_nodes
    return x, torch.stack([src, dst])


def capture_context(model: nn.Module, args: tuple, syms: list[ParameterSymmetry]):
    """Inputs of the modules the data-dependent symmetries need, on ``args``."""
    names = {m for s in syms for m in s.input_modules}
    modules = dict(model.named_modules())
    seen: dict[str, Tensor] = {}
    handles = [
        modules[n].register_forward_hook(lambda m, a, o, n=n: seen.__setitem__(n, a[0].detach()))
        for n in names
    ]
    with torch.no_grad():
        model(*args)
    for h in handles:
        h.remove()
    return TeleportContext(inputs=seen)


def random_element(sym: ParameterSymmetry, like: Tensor, scale: float, gen: torch.Generator):
    """A random group element near the identity, inside the symmetry's bounds."""
    theta = sym.identity(like)
    theta = theta + scale * torch.randn(theta.shape, generator=gen, dtype=theta.dtype)
    return sym.project(theta)


def assert_invariant(
    model: nn.Module,
    args: tuple,
    syms: list[ParameterSymmetry],
    *,
    scale: float = 0.8,
    seed: int = 0,
    rtol: float = 1e-10,
) -> None:
    """Each symmetry alone, then all of them composed, leave ``model(*args)`` unchanged."""
    gen = torch.Generator().manual_seed(seed)
    params = {n: p.detach() for n, p in model.named_parameters()}
    like = next(iter(params.values()))
    context = capture_context(model, args, syms)
    states = [s.prepare(params, context) for s in syms]
    with torch.random.fork_rng():
        torch.manual_seed(1)
        ref = model(*args).detach()
    scale_ref = ref.abs().max().clamp_min(1e-300)
    thetas = [random_element(s, like, scale, gen) for s in syms]
    combos = [[i] for i in range(len(syms))] + [list(range(len(syms)))]
    for combo in combos:
        new = dict(params)
        for i in sorted(combo, key=lambda i: -syms[i].order):
            new = syms[i].act(new, thetas[i], states[i])
        changed = [n for n in new if not torch.equal(new[n], params[n])]
        assert changed, f"{[syms[i].name for i in combo]} did not change any parameter"
        with torch.random.fork_rng():
            torch.manual_seed(1)
            out = functional_call(model, new, args)
        err = float((out - ref).abs().max() / scale_ref)
        assert err < rtol, f"{[syms[i].name for i in combo]}: relative output change {err:.3g}"


@pytest.fixture
def graph() -> Callable[..., tuple[Tensor, Tensor]]:
    return random_graph


@pytest.fixture
def check_invariant() -> Callable[..., None]:
    return assert_invariant


def _recording_backward(loss_fn: Callable, passes: list) -> Callable:
    """``loss_fn`` that appends to ``passes`` whenever a backward pass goes through it."""

    def loss(model, batch):
        value = loss_fn(model, batch)
        if value.requires_grad:
            value.register_hook(lambda grad: passes.append(1))
        return value

    return loss


@pytest.fixture
def recording_backward() -> Callable[[Callable, list], Callable]:
    return _recording_backward
