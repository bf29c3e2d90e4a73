"""Testing tools: the equivariance error of any module under random group elements.

Example:
    >>> err = equivariance_error(mlp, G, [x], [rep_in], rep_out)
    >>> err = equivariance_error(conv, G, [x, pos, edge_index], [rep_in, "pos", None], rep_out)
    >>> err = equivariance_error(model, G, [batch], [{"pos": "pos"}], None)  # a PyG Batch
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor
from torch_geometric.data.data import BaseData

from symgraph.checks import is_int
from symgraph.groups import MatrixGroup, Rep

__all__ = ["equivariance_error", "transform", "equivariance_error_per_element"]

Spec = Rep | str | Mapping[str, "Spec"] | None
"""How an argument transforms: a Rep (``x -> x ρ(g)^T``), ``"pos"`` (rotated and, when the
module is translation-equivariant, translated), ``"vector"`` (rotated, never translated),
``None`` (left untouched: ``edge_index``, ``batch``, invariant attributes …), or, for a
PyG ``Data``/``Batch`` (models such as ``SteerableMoleculeNet`` take one), a dict of specs
by attribute (``{"pos": "pos", "x": rep}``; the other attributes are left untouched)."""


def transform(value, spec: Spec, g: Tensor, shift: Tensor | None) -> object:
    """Apply one element ``g [3, 3]`` (and translation ``shift [3]``) to ``value`` per ``spec``."""
    if spec is None:
        return value
    if isinstance(value, BaseData):
        if not isinstance(spec, Mapping):
            raise ValueError(
                f"spec: a {type(value).__name__} argument needs a dict of specs by attribute "
                f"(e.g. {{'pos': 'pos'}}), got {spec!r}"
            )
        moved = copy.copy(value)
        for key, attr_spec in spec.items():
            if key not in value:
                raise ValueError(f"spec: {type(value).__name__} has no attribute {key!r}")
            moved[key] = transform(value[key], attr_spec, g, shift)
        return moved
    if isinstance(spec, Mapping):
        raise ValueError(
            f"spec: a dict of specs is for a PyG Data argument, got a {type(value).__name__}"
        )
    g = g.to(value)
    if isinstance(spec, Rep):
        return value @ spec.rho(g[None])[0].T
    if spec in ("pos", "vector"):
        out = value @ g.T
        if spec == "pos" and shift is not None:
            out = out + shift.to(value)
        return out
    raise ValueError(f"spec: expected a Rep, 'pos', 'vector' or None, got {spec!r}")


def _elements(group: MatrixGroup, num: int, generator: torch.Generator | None) -> Tensor:
    """All elements ``[order, 3, 3]`` of a finite group; else ``max(num, num_components)``
    Haar samples ``[M, 3, 3]`` cycling through the components (``stratified``), so that
    every component is tried: left to chance, the samples of O(3) may all be rotations, and
    a layer wrong under reflections would pass."""
    if group.is_finite:
        return group.elements()
    count = max(num, group.num_components)
    return group.sample(count, generator=generator, dtype=torch.float64, stratified=True)


def equivariance_error_per_element(
    module: Callable,
    group: MatrixGroup,
    args: Sequence,
    arg_specs: Sequence[Spec],
    out_spec: Spec,
    num_elements: int = 8,
    translate: bool = True,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Relative errors ``‖f(g·args) − g·f(args)‖ / ‖f(args)‖`` for each element used.

    Returns:
        ``(elements [M, 3, 3], errors [M])``; all elements for finite groups, else
        ``max(num_elements, group.num_components)`` Haar samples cycling through the
        components (O(3): rotations and improper rotations alternate).
    """
    if len(args) != len(arg_specs):
        raise ValueError(
            f"arg_specs: expected one spec per argument ({len(args)}), got {len(arg_specs)}"
        )
    if not is_int(num_elements) or num_elements < 1:  # 0 would leave no error to report
        raise ValueError(f"num_elements: expected a positive int, got {num_elements!r}")
    with torch.no_grad():
        reference = module(*args)
        if reference.numel() == 0:  # an error of 0/0: nothing would be tested
            raise ValueError(
                f"args: the module's output has no entries (shape {list(reference.shape)}), "
                f"so there is nothing to compare; give inputs with at least one node and "
                f"an output representation of positive dimension"
            )
        # outputs that vanish identically (e.g. no equivariant map exists) are compared
        # absolutely, at the scale 1e-3 per entry, instead of dividing noise by noise
        scale = reference.norm().clamp_min(1e-3 * reference.numel() ** 0.5)
        elements = _elements(group, num_elements, generator)
        errors = []
        for g in elements:
            shift = torch.randn(3, generator=generator, dtype=torch.float64) if translate else None
            moved = [transform(a, s, g, shift) for a, s in zip(args, arg_specs)]
            expected = transform(reference, out_spec, g, shift)
            errors.append((module(*moved) - expected).norm() / scale)
    return elements, torch.stack(errors)


def equivariance_error(
    module: Callable,
    group: MatrixGroup,
    args: Sequence,
    arg_specs: Sequence[Spec],
    out_spec: Spec,
    num_elements: int = 8,
    translate: bool = True,
    generator: torch.Generator | None = None,
) -> float:
    """Max relative equivariance error of ``module`` over group elements.

    Args:
        module: any callable ``module(*args) -> Tensor``.
        group: the group whose elements are tried (all of them when finite).
        args: the inputs.
        arg_specs: per argument, how it transforms (see :data:`Spec`).
        out_spec: how the output transforms: a Rep, ``"pos"``/``"vector"``, or ``None``
            (invariant output).
        num_elements: Haar samples for continuous groups (a positive int; at least one
            per connected component is used, e.g. a rotation and a reflection for O(3)).
        translate: also translate ``"pos"`` arguments by a random vector.

    Returns:
        ``max_g ‖f(ρ_in(g)x) − ρ_out(g)f(x)‖ / ‖f(x)‖`` (the denominator floored at
        ``1e-3 · sqrt(numel)`` so that an identically vanishing output is judged absolutely).
    """
    _, errors = equivariance_error_per_element(
        module, group, args, arg_specs, out_spec, num_elements, translate, generator
    )
    return float(errors.max())
