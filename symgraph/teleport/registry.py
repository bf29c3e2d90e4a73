"""Registries that tell symmetry detection how a model is built.

Detection never guesses how data flows through arbitrary ``forward`` code. It trusts these
tables, filled for PyTorch and PyG in :mod:`symgraph.teleport.builtins`, and open to users:

- **channel maps** (:func:`register_channel_map`): for a module type, the parameter slices
  that absorb a per-channel scale of its *input* (divided by ``s``: the columns of a
  ``Linear``) and the slices that produce a per-channel scale of its *output* (multiplied
  by ``s``: the rows and bias of a ``Linear``, the affine weight and bias of a norm);
- **pass-throughs** (:func:`register_passthrough`): modules that commute with a positive
  per-channel scale, ``m(s ⊙ x) = s ⊙ m(x)`` for ``s > 0`` (ReLU, LeakyReLU, PReLU,
  Dropout, Identity);
- **linear pass-throughs** (:func:`register_linear_passthrough`): modules that are linear
  and act on samples only, ``m(X gᵀ) = m(X) gᵀ`` for every invertible ``g`` on the channels
  (Identity, ``Dropout(p=0)``, PyG's sum and mean aggregations), and **linear wrappers**
  (:func:`register_linear_wrapper`): modules whose input or output end is an inner module
  reached through such operations only (``GINConv`` with a sum or mean aggregation, through
  its ``nn``); the data-free GL(d) rule ``"linear"`` uses these two;
- **containers** (:func:`register_container`): modules whose execution order is known, as
  a list of *stages* ``(name, module)``; a stage ``(name, None)`` is a break in the chain
  (the value is used elsewhere too);
- **rules** (:func:`register_rule`): named functions ``rule(model, **options) -> list of
  symmetries``, the unit :func:`~symgraph.teleport.find_symmetries` runs (``kinds``).

A table entry for a class applies to its subclasses only if they do not override
``forward`` (a changed ``forward`` may break the assumed data flow). Forward hooks change the
data flow too: a module whose forward pre-hooks may replace its input absorbs no input scale
(nor do the modules on the way to its input-side parameters), one whose forward hooks may
replace its output provides no output scale, and a hooked module passes nothing through.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from torch import nn

from .base import ParameterSymmetry, ParamSlice

__all__ = [
    "Stage",
    "register_channel_map",
    "register_passthrough",
    "register_linear_passthrough",
    "register_linear_wrapper",
    "register_container",
    "register_rule",
    "input_slices",
    "output_slices",
    "is_passthrough",
    "is_linear_passthrough",
    "has_forward_hooks",
    "linear_wrapped",
    "container_stages",
    "registered_rules",
    "registered_names",
]

Stage = tuple[str, "nn.Module | None"]
SliceFn = Callable[[nn.Module, str], "list[ParamSlice] | None"]
StageFn = Callable[[nn.Module, str], "list[Stage] | None"]
RuleFn = Callable[..., "list[ParameterSymmetry]"]
WrapperFn = Callable[[nn.Module, str, bool], "Stage | None"]

_INPUTS: dict[type, SliceFn] = {}
_OUTPUTS: dict[type, SliceFn] = {}
_PASSTHROUGH: dict[type, Callable[[nn.Module], bool]] = {}
_LINEAR_PASSTHROUGH: dict[type, Callable[[nn.Module], bool]] = {}
_LINEAR_WRAPPERS: dict[type, WrapperFn] = {}
_CONTAINERS: dict[type, StageFn] = {}
_RULES: dict[str, RuleFn] = {}

T = TypeVar("T")


def _check_type(module_type: object, name: str = "module_type") -> type:
    if not (isinstance(module_type, type) and issubclass(module_type, nn.Module)):
        raise TypeError(f"{name}: expected a subclass of torch.nn.Module, got {module_type!r}")
    return module_type


def register_channel_map(
    module_type: type, *, inputs: SliceFn | None = None, outputs: SliceFn | None = None
) -> None:
    """Declare how ``module_type`` absorbs an input scale and produces an output scale.

    ``inputs(module, prefix)`` returns the slices divided by ``s`` when the module's input
    channels are scaled by ``s`` (``None``: not possible for this instance);
    ``outputs(module, prefix)`` the slices multiplied by ``s`` to scale its output channels.
    ``prefix`` is the module's name in the model; slice names are full parameter names.
    """
    _check_type(module_type)
    if inputs is None and outputs is None:
        raise ValueError("inputs/outputs: expected at least one of the two functions, got none")
    if inputs is not None:
        _INPUTS[module_type] = inputs
    if outputs is not None:
        _OUTPUTS[module_type] = outputs


def register_passthrough(
    module_type: type, predicate: Callable[[nn.Module], bool] | None = None
) -> None:
    """Declare that ``module_type`` commutes with positive per-channel scales.

    ``predicate(module)`` may restrict it to some instances (default: all).
    """
    _check_type(module_type)
    _PASSTHROUGH[module_type] = predicate or (lambda module: True)


def register_linear_passthrough(
    module_type: type, predicate: Callable[[nn.Module], bool] | None = None
) -> None:
    """Declare that ``module_type`` is linear and acts on samples only.

    That is ``m(X gᵀ) = m(X) gᵀ`` for every invertible ``g`` acting on the channels
    (``X [..., channels]``): the module may sum, average or select samples, but never mixes
    or rescales channels differently. ``predicate(module)`` may restrict it to some
    instances (default: all).
    """
    _check_type(module_type)
    _LINEAR_PASSTHROUGH[module_type] = predicate or (lambda module: True)


def register_linear_wrapper(module_type: type, inner: WrapperFn) -> None:
    """Declare where a linear chain continues inside ``module_type``.

    ``inner(module, prefix, last)`` returns the stage ``(name, submodule)`` that holds the
    module's output end (``last=True``) or input end (``last=False``), when everything
    between that submodule and the module's boundary is a linear operation on samples only;
    ``None`` when there is no such stage (e.g. a max aggregation).
    """
    _check_type(module_type)
    if not callable(inner):
        raise TypeError(f"inner: expected a callable (module, prefix, last), got {inner!r}")
    _LINEAR_WRAPPERS[module_type] = inner


def register_container(module_type: type, stages: StageFn) -> None:
    """Declare the execution order of ``module_type``: ``stages(module, prefix)``."""
    _check_type(module_type)
    _CONTAINERS[module_type] = stages


def register_rule(kind: str, rule: RuleFn | None = None):
    """Register ``rule(model, **options) -> list[ParameterSymmetry]`` under ``kind``.

    Usable as a decorator: ``@register_rule("my_kind")``. ``kind`` names the rule in
    ``find_symmetries(model, kinds=(...))``; registering an existing kind replaces it.
    """
    if not isinstance(kind, str) or not kind:
        raise TypeError(f"kind: expected a non-empty string, got {kind!r}")

    def decorate(fn: RuleFn) -> RuleFn:
        if not callable(fn):
            raise TypeError(f"rule: expected a callable, got {fn!r}")
        _RULES[kind] = fn
        return fn

    return decorate(rule) if rule is not None else decorate


def _lookup(table: dict[type, T], module: object) -> T | None:
    if not isinstance(module, nn.Module):  # e.g. a plain function in PyG's Sequential
        return None
    forward = type(module).forward
    for cls in type(module).__mro__:
        if cls in table and getattr(cls, "forward", None) is forward:
            return table[cls]
    return None


def has_forward_hooks(module: object, *, before: bool = True, after: bool = True) -> bool:
    """Whether ``module`` has forward pre-hooks (``before``: they may replace its input) or
    forward hooks (``after``: they may replace its output), which detection cannot see
    through (e.g. an activation clipped by a hook is not positively homogeneous)."""
    if not isinstance(module, nn.Module):
        return False
    return bool((before and module._forward_pre_hooks) or (after and module._forward_hooks))


def _hooked_inside(module: nn.Module, prefix: str, slices: list[ParamSlice]) -> bool:
    """Whether a submodule of ``module`` on the way to a parameter of ``slices`` has forward
    hooks (e.g. a hook on a ``GCNConv``'s inner ``lin``)."""
    for sl in slices:
        if prefix and not sl.name.startswith(f"{prefix}."):
            continue
        rel = sl.name[len(prefix) + 1 :] if prefix else sl.name
        sub: object = module
        for part in rel.split(".")[:-1]:
            sub = getattr(sub, "_modules", {}).get(part)
            if has_forward_hooks(sub):
                return True
    return False


def is_passthrough(module: nn.Module) -> bool:
    """Whether ``module`` commutes with positive per-channel scales (never with hooks)."""
    predicate = _lookup(_PASSTHROUGH, module)
    return bool(predicate is not None and not has_forward_hooks(module) and predicate(module))


def is_linear_passthrough(module: nn.Module) -> bool:
    """Whether ``module`` is linear and acts on samples only (commutes with every ``g``;
    never with hooks)."""
    predicate = _lookup(_LINEAR_PASSTHROUGH, module)
    return bool(predicate is not None and not has_forward_hooks(module) and predicate(module))


def linear_wrapped(module: nn.Module, prefix: str, last: bool) -> Stage | None:
    """The inner stage holding ``module``'s output (``last``) or input end, or ``None``
    (also when hooks on that side of ``module`` may replace the value)."""
    fn = _lookup(_LINEAR_WRAPPERS, module)
    if fn is None or has_forward_hooks(module, before=not last, after=last):
        return None
    return fn(module, prefix, last)


def container_stages(module: nn.Module, prefix: str) -> list[Stage] | None:
    """The stages of a registered container, or ``None`` if ``module`` is not one."""
    fn = _lookup(_CONTAINERS, module)
    return fn(module, prefix) if fn is not None else None


def _edge_stage(stages: list[Stage], last: bool) -> Stage | None:
    order = reversed(stages) if last else iter(stages)
    for name, module in order:
        if module is None:
            return None
        if not is_passthrough(module):
            return name, module
    return None


def input_slices(module: nn.Module, prefix: str) -> list[ParamSlice] | None:
    """Slices that absorb a positive scale of ``module``'s input channels (or ``None``)."""
    if has_forward_hooks(module, after=False):
        return None
    fn = _lookup(_INPUTS, module)
    if fn is not None:
        got = fn(module, prefix)
        return None if got and _hooked_inside(module, prefix, got) else got
    stages = container_stages(module, prefix)
    if stages:
        edge = _edge_stage(stages, last=False)
        if edge is not None:
            return input_slices(edge[1], edge[0])
    return None


def output_slices(module: nn.Module, prefix: str) -> list[ParamSlice] | None:
    """Slices that scale ``module``'s output channels by a positive factor (or ``None``)."""
    if has_forward_hooks(module, before=False):
        return None
    fn = _lookup(_OUTPUTS, module)
    if fn is not None:
        got = fn(module, prefix)
        return None if got and _hooked_inside(module, prefix, got) else got
    stages = container_stages(module, prefix)
    if stages:
        edge = _edge_stage(stages, last=True)
        if edge is not None:
            return output_slices(edge[1], edge[0])
    return None


def registered_rules() -> dict[str, RuleFn]:
    """The registered rules by kind (a copy)."""
    return dict(_RULES)


def registered_names() -> dict[str, list[str]]:
    """Class names in each table, for messages: what detection searched."""

    def names(table: dict[type, object]) -> list[str]:
        def label(cls: type) -> str:
            top = cls.__module__.split(".")[0]
            prefix = {"torch": "torch.nn.", "torch_geometric": "torch_geometric.nn."}
            return prefix.get(top, f"{cls.__module__}.") + cls.__qualname__

        return sorted({label(cls) for cls in table})

    return {
        "containers": names(_CONTAINERS),
        "layers (input side)": names(_INPUTS),
        "layers (output side)": names(_OUTPUTS),
        "pass-through activations": names(_PASSTHROUGH),
        "linear pass-throughs": names(_LINEAR_PASSTHROUGH),
        "linear wrappers": names(_LINEAR_WRAPPERS),
        "rules": sorted(_RULES),
    }
