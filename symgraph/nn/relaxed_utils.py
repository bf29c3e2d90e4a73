"""Shared pieces of the relaxed (approximately equivariant) layers.

A *relaxed layer* is any module with two methods:

- ``relaxation_penalty() -> Tensor``: a non-negative scalar, zero exactly when the layer's
  weights are those of a strictly equivariant layer;
- ``relaxation_parameters() -> list[nn.Parameter]``: the parameters that may break the
  symmetry (freeze them at their initial values for the strictly equivariant baseline).

:func:`relaxation_penalty` sums the penalties of every relaxed submodule of a model, so a
training loop adds ``weight * relaxation_penalty(model)`` to its loss;
:func:`relaxation_report` lists them by submodule name for logs. The equivariance error of
the trained model per group element is :func:`symgraph.testing.equivariance_error_per_element`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from symgraph.checks import check_edge_index, check_finite, check_positions, check_tensor

__all__ = [
    "relaxed_modules",
    "relaxation_penalty",
    "relaxation_report",
    "set_relaxation_trainable",
    "relative_positions",
    "check_graph",
]


def _is_relaxed(module: nn.Module) -> bool:
    return callable(getattr(module, "relaxation_penalty", None)) and callable(
        getattr(module, "relaxation_parameters", None)
    )


def relaxed_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(qualified name, module)`` of every relaxed submodule (``""`` for ``model`` itself)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    return [(name, module) for name, module in model.named_modules() if _is_relaxed(module)]


def relaxation_penalty(model: nn.Module) -> Tensor:
    """Sum of ``relaxation_penalty()`` over the relaxed submodules (differentiable scalar).

    A model without relaxed layers gives a zero tensor, so the term can always be added.
    """
    penalties = [module.relaxation_penalty() for _, module in relaxed_modules(model)]
    if not penalties:
        reference = next(model.parameters(), None)
        return torch.zeros((), dtype=None if reference is None else reference.dtype)
    return torch.stack(penalties).sum()


def relaxation_report(model: nn.Module) -> dict[str, float]:
    """``{submodule name: penalty}`` for every relaxed submodule (``"<model>"`` for the root)."""
    with torch.no_grad():
        return {
            name or "<model>": float(module.relaxation_penalty())
            for name, module in relaxed_modules(model)
        }


def set_relaxation_trainable(model: nn.Module, trainable: bool) -> None:
    """Freeze (``False``) or unfreeze the relaxation parameters of every relaxed submodule.

    Frozen at their initial values, relaxed layers stay strictly equivariant while their
    other weights train: the strict baseline of the same architecture.
    """
    for _, module in relaxed_modules(model):
        for parameter in module.relaxation_parameters():
            parameter.requires_grad_(bool(trainable))


def relative_positions(pos: Tensor, edge_index: Tensor, offsets: Tensor | None) -> Tensor:
    """Relative position of each edge's source seen from its target: ``[E, 3]``.

    ``rel_e = pos[edge_index[0, e]] - pos[edge_index[1, e]]`` (neighbour ``j`` minus centre
    ``i``, messages flowing ``j -> i``), or ``offsets`` when given: explicit per-edge
    vectors with the same sign, e.g. the minimum-image offsets of a periodic lattice.

    Args:
        pos: ``[N, 3]`` node positions (checked; ``edge_index`` must already be checked).
        edge_index: ``[2, E]`` int64.
        offsets: ``None`` or a finite floating tensor ``[E, 3]`` (kept in its dtype).
    """
    if offsets is None:
        return pos[edge_index[0]] - pos[edge_index[1]]
    offsets = check_tensor(offsets, "offsets")
    num_edges = edge_index.shape[1]
    if offsets.shape != (num_edges, 3):
        raise ValueError(
            f"offsets: expected shape [{num_edges}, 3] (one relative position x_j - x_i per "
            f"edge of edge_index), got shape {list(offsets.shape)}"
        )
    if not offsets.is_floating_point():
        raise TypeError(f"offsets: expected a floating-point tensor, got dtype {offsets.dtype}")
    return check_finite(offsets, "offsets").to(pos.device)


def check_graph(pos: Tensor, edge_index: Tensor) -> tuple[Tensor, Tensor]:
    """Check ``pos [N, 3]`` and ``edge_index [2, E]``; return them (``edge_index`` as int64)."""
    pos = check_positions(pos, "pos")
    return pos, check_edge_index(edge_index, pos.shape[0]).long()
