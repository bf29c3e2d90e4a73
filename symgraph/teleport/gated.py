"""Scale symmetry of symgraph's gated blocks (rule ``"gated"``).

In an :class:`~symgraph.nn.mlp.EquivariantMLPLayer` with a :class:`~symgraph.nn.Gate`, each
copy ``u`` of a gated block (``l ≥ 1`` irreps) leaves the layer as ``sigmoid(gate_u) · v_u``:
linear in ``v_u`` and with a gate that does not depend on ``v_u``. So scaling the rows of
``v_u`` in the layer's :class:`~symgraph.nn.EquivariantLinear` (its weights for pairs into
that block, and the block's invariant bias, if any) by ``s_u > 0`` and the columns of the
next layer that read copy ``u`` by ``1/s_u`` is an exact, data-free symmetry; one unit per
gated copy. Layers with a bilinear term (its output would need scaling too) or a norm
nonlinearity (``sigmoid(|v| + b)`` sees the scale) are skipped.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import ParamSlice
from .registry import container_stages, has_forward_hooks, register_rule
from .symmetries import RescaleSymmetry

__all__ = ["gated_rule"]


def _gated_layer(module: object) -> bool:
    try:
        from symgraph.nn.activations import Gate
        from symgraph.nn.mlp import EquivariantMLPLayer
    except ImportError:  # pragma: no cover - symgraph.nn missing
        return False
    return (
        isinstance(module, EquivariantMLPLayer)
        and type(module).forward is EquivariantMLPLayer.forward
        and isinstance(module.activation, Gate)
        and module.bilinear is None
    )


def _hooked_within(module: nn.Module) -> bool:
    """Whether a submodule of ``module`` (not itself) has forward hooks."""
    return any(has_forward_hooks(m) for m in module.modules() if m is not module)


def _readers(module: nn.Module, name: str) -> list[tuple[str, nn.Module]]:
    """The equivariant linear maps that read ``module``'s input, with their names (none
    when a forward pre-hook of ``module``, or a hook inside it, may change that input)."""
    if has_forward_hooks(module, after=False) or _hooked_within(module):
        return []
    from symgraph.nn.linear import EquivariantLinear
    from symgraph.nn.mlp import EquivariantMLPLayer

    if isinstance(module, EquivariantLinear) and type(module).forward is EquivariantLinear.forward:
        return [(name, module)]
    if isinstance(module, EquivariantMLPLayer) and type(module).forward is (
        EquivariantMLPLayer.forward
    ):
        out = [(f"{name}.linear", module.linear)]
        if module.project is not None:
            out.append((f"{name}.project", module.project))
        return out
    return []


def _same_blocks(a: object, b: object) -> bool:
    return [(m, str(blk)) for m, blk in a.blocks] == [(m, str(blk)) for m, blk in b.blocks]


def _units(layer: nn.Module) -> dict[int, torch.Tensor]:
    """Block index -> unit ids of its copies (one unit per gated copy)."""
    from symgraph.nn.activations import gated_blocks

    units, offset = {}, 0
    for block in gated_blocks(layer.rep_out):
        mul = layer.rep_out.blocks[block][0]
        units[block] = torch.arange(offset, offset + mul)
        offset += mul
    return units


@register_rule("gated")
def gated_rule(
    model: nn.Module,
    *,
    max_log_scale: float = 2.0,
    max_imbalance: float | None = 10.0,
    **_: object,
):
    """Per-copy rescaling through the gates of consecutive equivariant MLP layers."""
    try:
        import symgraph.nn  # noqa: F401
    except ImportError:  # pragma: no cover
        return []
    params = dict(model.named_parameters())
    positions = {name: i for i, (name, _) in enumerate(model.named_modules())}
    found = []
    for cname, module in model.named_modules():
        stages = container_stages(module, cname) or []
        for (name_a, a), (name_b, b) in zip(stages, stages[1:]):
            if a is None or b is None or not _gated_layer(a):
                continue
            if has_forward_hooks(a, before=False) or _hooked_within(a):
                continue  # a hook may change the gated output
            readers = [(n, m) for n, m in _readers(b, name_b) if _same_blocks(m.rep_in, a.rep_out)]
            units = _units(a)
            if not readers or not units:
                continue
            size = sum(len(u) for u in units.values())
            up = [
                ParamSlice(f"{name_a}.linear.weights.{k}", 0, units[pair.index_out])
                for k, pair in enumerate(a.linear.basis.pairs)
                if pair.index_out in units
            ]
            if a.linear.bias is not None:
                up += [
                    ParamSlice(f"{name_a}.linear.bias.biases.{j}", 0, units[block])
                    for j, block in enumerate(a.linear.bias.block_indices)
                    if block in units
                ]
            down = [
                ParamSlice(f"{n}.weights.{k}", 1, units[pair.index_in])
                for n, m in readers
                for k, pair in enumerate(m.basis.pairs)
                if pair.index_in in units
            ]
            if not up or not down:
                continue
            if not all(s.name in params and params[s.name].requires_grad for s in up + down):
                continue
            found.append(
                RescaleSymmetry(
                    f"gated copies {name_a} -> {name_b}",
                    up,
                    down,
                    size,
                    kind="gated",
                    max_log_scale=max_log_scale,
                    max_imbalance=max_imbalance,
                    order=positions.get(name_a, 0),
                )
            )
    return found
