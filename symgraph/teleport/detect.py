"""Finding a model's parameter-space symmetries from its structure.

:func:`find_symmetries` walks every registered container of the model (see
:mod:`symgraph.teleport.builtins` for the list searched) and runs the rules named in
``kinds``:

- ``"rescale"`` — chains ``A → pass-through* → B`` where ``A`` has an output side (a linear
  layer, a conv, a norm's affine) and ``B`` an input side: positive per-unit rescaling,
  exact and data-free;
- ``"norm"`` — ``A → pass-through* → normalisation``: the normalisation ignores the scale of
  its input, so ``A``'s output side may be scaled freely (per channel for batch/graph norm,
  globally for layer norm). Exact only for ``eps == 0`` and no running statistics (torch's
  batch norm refuses ``eps = 0``, so behind it the symmetry is approximate only; layer norm
  and PyG's ``GraphNorm`` take ``eps = 0``); with ``approximate=True`` the others are
  returned too, flagged ``exact=False``;
- ``"gated"`` — symgraph's gated equivariant MLP layers: one positive scale per gated copy
  (see :mod:`symgraph.teleport.gated`), exact and data-free;
- ``"linear"`` — ``Linear → L → Linear`` where everything in ``L`` is linear and acts on
  samples only (nothing, ``Dropout(p=0)``, a sum or mean pooling, GIN's neighbour sum;
  see :func:`~symgraph.teleport.register_linear_passthrough`): the data-free GL(d) action
  ``W1 ← g W1, b1 ← g b1, W2 ← W2 g⁻¹``, exact at any batch size (opt-in: its orbit has
  ``d²`` dimensions and no bounded norm);
- ``"gl"`` — ``Linear → [LeakyReLU] → Linear`` (nothing else in between but ``Identity`` or
  ``Dropout(p=0)``): the data-dependent GL(d) action of the paper (opt-in: exact on the
  teleport batch only, and only for small batches).

Parameters that are shared (appear twice in the model) or frozen are never touched: a
symmetry that would change one is dropped (and named in the :class:`NoSymmetryError` when
nothing else is found).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Iterator

from torch import nn

from . import builtins as _builtins  # noqa: F401  (fills the registry)
from . import gated as _gated  # noqa: F401  (registers the "gated" rule)
from .base import NoSymmetryError, ParameterSymmetry, ParamSlice, uncompiled
from .builtins import NORM_SCALE_TYPES, _initialised
from .registry import (
    RuleFn,
    Stage,
    container_stages,
    has_forward_hooks,
    input_slices,
    is_linear_passthrough,
    is_passthrough,
    linear_wrapped,
    output_slices,
    register_rule,
    registered_names,
    registered_rules,
)
from .symmetries import GLSymmetry, LinearGLSymmetry, RescaleSymmetry

__all__ = ["find_symmetries", "DEFAULT_KINDS", "describe_search"]

DEFAULT_KINDS: tuple[str, ...] = ("rescale", "norm", "gated")


def _containers(model: nn.Module) -> Iterator[tuple[str, nn.Module, list[Stage]]]:
    modules = dict(model.named_modules(remove_duplicate=False))
    for name, module in model.named_modules():
        stages = container_stages(module, name)
        if stages:
            _check_stages(name, module, stages, modules)
            yield name, module, stages


def _check_stages(
    name: str, container: nn.Module, stages: list[Stage], modules: dict[str, nn.Module]
) -> None:
    """Raise ``ValueError`` when a stage holding parameters is not the model's module of that
    name (a container declared with wrong names would otherwise find nothing, silently)."""
    wrong = [
        stage
        for stage, module in stages
        if isinstance(module, nn.Module)
        and next(module.parameters(), None) is not None
        and modules.get(stage) is not module
    ]
    if wrong:
        raise ValueError(
            f"register_container: the stages of {type(container).__name__} at "
            f"{name or '<root>'!r} name {wrong}, which are not the model's modules of these "
            f"names (stage names must be full module names, as in model.named_modules(), "
            f"e.g. {list(modules)[1:6]})"
        )


def _all_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """Every parameter under every name, shared and frozen ones included: rules propose,
    :func:`find_symmetries` drops (and reports) what touches those."""
    return dict(model.named_parameters(remove_duplicate=False))


def _positions(model: nn.Module) -> dict[str, int]:
    return {name: i for i, (name, _) in enumerate(model.named_modules())}


def _units(slices: list[ParamSlice], params: dict[str, nn.Parameter]) -> int | None:
    """Common number of units of ``slices``, or ``None`` (missing/mismatched)."""
    counts = set()
    for sl in slices:
        p = params.get(sl.name)
        if p is None:
            return None
        counts.add(sl.num_units(p))
    return counts.pop() if len(counts) == 1 else None


@register_rule("rescale")
def rescale_rule(
    model: nn.Module,
    *,
    max_log_scale: float = 2.0,
    max_imbalance: float | None = 10.0,
    **_: object,
):
    """Positive rescaling between consecutive layers of every registered container."""
    params = _all_parameters(model)
    pos = _positions(model)
    found: dict[tuple, RescaleSymmetry] = {}
    for _cname, _container, stages in _containers(model):
        provider: tuple[str, list[ParamSlice]] | None = None
        for name, module in stages:
            if module is None:
                provider = None
                continue
            if is_passthrough(module):
                continue
            ins = input_slices(module, name)
            if provider is not None and ins:
                up, down = provider[1], ins
                n_up, n_down = _units(up, params), _units(down, params)
                key = tuple(sorted((s.name, s.dim) for s in up + down))
                if n_up is not None and n_up == n_down and key not in found:
                    found[key] = RescaleSymmetry(
                        f"rescale {provider[0]} -> {name}",
                        up,
                        down,
                        n_up,
                        max_log_scale=max_log_scale,
                        max_imbalance=max_imbalance,
                        order=pos.get(provider[0], 0),
                    )
            outs = output_slices(module, name)
            provider = (name, outs) if outs else None
    return list(found.values())


def _norm_scale_kind(module: nn.Module) -> str | None:
    if not isinstance(module, nn.Module) or has_forward_hooks(module, after=False):
        return None
    forward = type(module).forward
    for cls in type(module).__mro__:
        if cls in NORM_SCALE_TYPES and getattr(cls, "forward", None) is forward:
            return NORM_SCALE_TYPES[cls]
    return None


def _norm_is_exact(module: nn.Module) -> bool:
    inner = getattr(module, "module", module)  # PyG BatchNorm wraps torch's
    eps = getattr(inner, "eps", None)
    running = bool(getattr(inner, "track_running_stats", False))
    single = bool(getattr(module, "allow_single_element", False))
    return eps == 0 and not running and not single


@register_rule("norm")
def norm_scale_rule(
    model: nn.Module, *, approximate: bool = False, max_log_scale: float = 2.0, **_: object
):
    """Scale invariance of the layer in front of a normalisation."""
    params = _all_parameters(model)
    pos = _positions(model)
    found: dict[tuple, RescaleSymmetry] = {}
    for _cname, _container, stages in _containers(model):
        provider: tuple[str, list[ParamSlice]] | None = None
        for name, module in stages:
            if module is None:
                provider = None
                continue
            if is_passthrough(module):
                continue
            shape = _norm_scale_kind(module)
            if provider is not None and shape is not None:
                exact = _norm_is_exact(module)
                units = _units(provider[1], params)
                key = tuple(sorted((s.name, s.dim) for s in provider[1]))
                if (exact or approximate) and units is not None and key not in found:
                    found[key] = RescaleSymmetry(
                        f"scale of {provider[0]} before {name}",
                        provider[1],
                        [],
                        units if shape == "channel" else 1,
                        kind="norm",
                        exact=exact,
                        max_log_scale=max_log_scale,
                        order=pos.get(provider[0], 0),
                    )
            outs = output_slices(module, name)
            provider = (name, outs) if outs else None
    return list(found.values())


def _gl_linear(module: object) -> bool:
    """Whether ``module`` is an initialised linear layer (a plain function child of a PyG
    ``Sequential``, or a lazy layer before its first call, is not)."""
    try:
        from torch_geometric.nn import Linear as PygLinear
    except ImportError:  # pragma: no cover
        PygLinear = nn.Linear  # noqa: N806
    if not isinstance(module, nn.Module):
        return False
    if type(module).forward not in (nn.Linear.forward, PygLinear.forward):
        return False
    weight = getattr(module, "weight", None)
    return _initialised(weight) and weight.dim() == 2


def _gl_neutral(module: nn.Module) -> bool:
    if has_forward_hooks(module):
        return False
    if type(module) is nn.Identity:
        return True
    return type(module) is nn.Dropout and module.p == 0


def _pair_held(
    params: dict[str, nn.Parameter], first: str, first_module: nn.Module, second: str
) -> bool:
    """Whether the weights (and bias) of ``first`` and the weight of ``second`` are all
    parameters of the model under these names."""
    names = [f"{first}.weight", f"{second}.weight"]
    if first_module.bias is not None:
        names.append(f"{first}.bias")
    return all(n in params for n in names)


@register_rule("gl")
def gl_rule(model: nn.Module, *, max_norm: float = 0.5, **_: object):
    """The data-dependent GL(d) action on ``Linear → [LeakyReLU] → Linear`` chains."""
    params = _all_parameters(model)
    pos = _positions(model)
    found: dict[tuple[str, str], GLSymmetry] = {}
    for _cname, _container, stages in _containers(model):
        first: tuple[str, nn.Module] | None = None
        slope: float | None = None
        for name, module in stages:
            if module is None:
                first = None
                continue
            if _gl_neutral(module):
                continue
            leaky = type(module) is nn.LeakyReLU and not has_forward_hooks(module)
            if leaky and first is not None and slope is None:
                slope = float(module.negative_slope)
                if slope <= 0:
                    first = None
                continue
            if isinstance(module, nn.Module) and _gl_linear(module):
                if first is not None and not has_forward_hooks(module, after=False):
                    fname, fmod = first
                    if _pair_held(params, fname, fmod, name) and (fname, name) not in found:
                        act = "LeakyReLU" if slope is not None else "identity"
                        found[(fname, name)] = GLSymmetry(
                            f"GL({fmod.weight.shape[0]}) {fname} -> {act} -> {name}",
                            fname,
                            name,
                            int(fmod.weight.shape[0]),
                            has_bias=fmod.bias is not None,
                            negative_slope=slope,
                            max_norm=max_norm,
                            order=pos.get(fname, 0),
                        )
                hooked = has_forward_hooks(module, before=False)
                first, slope = (None if hooked else (name, module)), None
                continue
            first, slope = None, None
    return list(found.values())


def _linear_end(module: nn.Module, prefix: str, last: bool) -> tuple[str, nn.Module] | None:
    """The linear layer at ``module``'s output (``last``) or input end, reached through
    linear operations on samples only (or ``None``; also when hooks on that side of a module
    on the way may replace the value)."""
    if has_forward_hooks(module, before=not last, after=last):
        return None
    if _gl_linear(module):
        return prefix, module
    inner = linear_wrapped(module, prefix, last)
    if inner is not None:
        return _linear_end(inner[1], inner[0], last)
    stages = container_stages(module, prefix)
    for name, child in reversed(stages or []) if last else stages or []:
        if child is None:
            return None
        if not is_linear_passthrough(child):
            return _linear_end(child, name, last)
    return None


@register_rule("linear")
def linear_rule(model: nn.Module, *, max_norm: float = 1.0, **_: object):
    """The data-free GL(d) action on ``Linear → linear ops on samples → Linear`` chains."""
    params = _all_parameters(model)
    pos = _positions(model)
    found: dict[tuple[str, str], LinearGLSymmetry] = {}
    for _cname, _container, stages in _containers(model):
        first: tuple[str, nn.Module] | None = None
        for name, module in stages:
            if module is None:
                first = None
                continue
            if is_linear_passthrough(module):
                continue
            second = _linear_end(module, name, last=False)
            if first is not None and second is not None:
                (fname, fmod), (sname, smod) = first, second
                usable = _pair_held(params, fname, fmod, sname)
                width = int(fmod.weight.shape[0])
                if usable and width == smod.weight.shape[1] and (fname, sname) not in found:
                    found[(fname, sname)] = LinearGLSymmetry(
                        f"GL({width}) {fname} -> linear -> {sname}",
                        fname,
                        sname,
                        width,
                        has_bias=fmod.bias is not None,
                        max_norm=max_norm,
                        order=pos.get(fname, 0),
                    )
            first = _linear_end(module, name, last=True)
    return list(found.values())


def _shared_parameter_names(model: nn.Module) -> set[str]:
    """Every name of every parameter that the model holds more than once (a module used at
    two places, tied weights): an action on one place would change the other."""
    names: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(param), []).append(name)
    return {name for aliases in names.values() if len(aliases) > 1 for name in aliases}


def check_find_options(kinds: Iterable[str] | str, options: dict[str, object]) -> None:
    """Raise ``TypeError`` for option names that none of the rules ``kinds`` declares (a
    misspelt ``max_imbalance`` would otherwise be ignored). A rule taking ``**options`` (any
    name but ``_``, which the built-in rules use to ignore the others' options) takes
    anything."""
    kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)
    table = registered_rules()
    unknown_kinds = [k for k in kinds if k not in table]
    if unknown_kinds:
        raise ValueError(
            f"kinds: expected names among {sorted(table)}, got unknown {unknown_kinds}"
        )
    rules = [table[k] for k in kinds]
    declared = {"approximate"}
    for rule in rules:
        params = list(inspect.signature(rule).parameters.values())[1:]  # after the model
        for param in params:
            if param.kind is param.VAR_KEYWORD and param.name != "_":
                return
            if param.kind in (param.KEYWORD_ONLY, param.POSITIONAL_OR_KEYWORD):
                declared.add(param.name)
    unknown = sorted(set(options) - declared)
    if unknown:
        raise TypeError(
            f"options: the rules {[getattr(r, '__name__', r) for r in rules]} take "
            f"{sorted(declared - {'approximate'})}, got unknown {unknown}"
        )


def describe_search(model: nn.Module, kinds: Iterable[str]) -> str:
    """What :func:`find_symmetries` searched, for error messages."""
    containers = [
        f"{type(m).__name__} at {name or '<root>'!r}" for name, m, _ in _containers(model)
    ]
    tables = registered_names()
    found = ", ".join(containers[:8]) + (" ..." if len(containers) > 8 else "")
    return (
        f"kinds searched: {tuple(kinds)}; containers with a known execution order found in "
        f"the model: {found or 'none'}. Registered containers: "
        f"{', '.join(tables['containers'])}. Layers with an input side: "
        f"{', '.join(tables['layers (input side)'])}. Layers with an output side: "
        f"{', '.join(tables['layers (output side)'])}. Pass-through activations: "
        f"{', '.join(tables['pass-through activations'])}. Linear pass-throughs: "
        f"{', '.join(tables['linear pass-throughs'])}; linear wrappers: "
        f"{', '.join(tables['linear wrappers'])}. Registered rules: "
        f"{', '.join(tables['rules'])}. A symmetry needs a chain layer -> pass-through* -> "
        f"layer inside one such container (e.g. Linear -> ReLU -> Linear in an "
        f"nn.Sequential); activations called functionally in a custom forward are not "
        f"visible, and a module with forward hooks (which may replace its input or "
        f"output) breaks the chain. Declare your own with symgraph.teleport.register_rule / "
        f"register_container / register_channel_map / register_linear_passthrough, or pass "
        f"symmetries=[...] to teleport()."
    )


def find_symmetries(
    model: nn.Module,
    kinds: Iterable[str] | str = DEFAULT_KINDS,
    *,
    approximate: bool = False,
    raise_if_empty: bool = True,
    **options: object,
) -> list[ParameterSymmetry]:
    """The parameter-space symmetries of ``model`` found by the rules ``kinds``.

    Args:
        model: any ``torch.nn.Module`` (a ``torch.compile``d one: the module it wraps, its
            parameter names without ``_orig_mod.``).
        kinds: rule names (default ``("rescale", "norm", "gated")``; add ``"linear"`` for
            the data-free GL(d) action across linear chains, ``"gl"`` for the
            data-dependent one; user rules from :func:`register_rule`).
        approximate: also return symmetries that hold only approximately (normalisations
            with ``eps > 0`` or running statistics); they carry ``exact=False``.
        raise_if_empty: raise :class:`NoSymmetryError` (listing what was searched) when
            nothing is found; otherwise return ``[]``.
        **options: passed to every rule (``max_log_scale``, ``max_imbalance`` for rescalings,
            ``max_norm`` for GL(d): default 0.5 for ``"gl"``, 1.0 for ``"linear"``).

    Returns:
        Symmetries in rule order, then network order.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    model = uncompiled(model)
    kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)
    rules = registered_rules()
    check_find_options(kinds, options)  # names every unknown kind and option
    # shared or frozen parameters are never touched, whichever rule (built-in or a user's)
    # proposed the symmetry
    shared = _shared_parameter_names(model)
    frozen = {name for name, p in _all_parameters(model).items() if not p.requires_grad}
    out: list[ParameterSymmetry] = []
    excluded: list[str] = []
    for kind in kinds:
        for s in _run_rule(kind, rules[kind], model, approximate=approximate, **options):
            reason = _untouchable_reason(s, frozen, shared)
            if reason:
                excluded.append(f"{s.name!r} ({reason})")
            elif s.exact or approximate:
                out.append(s)
    if not out and raise_if_empty:
        dropped = (
            f"Found but excluded, since teleportation never changes frozen or shared "
            f"parameters: {'; '.join(excluded)}. "
            if excluded
            else ""
        )
        raise NoSymmetryError(
            f"model: no parameter-space symmetry found in {type(model).__name__}. "
            + dropped
            + describe_search(model, kinds)
        )
    return out


def _run_rule(kind: str, rule: RuleFn, model: nn.Module, **options: object) -> list:
    """``rule(model, **options)``, checked to be a list of symmetries."""
    got = rule(model, **options)
    if not isinstance(got, list | tuple) or not all(isinstance(s, ParameterSymmetry) for s in got):
        raise TypeError(
            f"rule {kind!r} ({getattr(rule, '__qualname__', rule)}): expected a list of "
            f"ParameterSymmetry objects (empty when nothing is found), got {got!r}"
        )
    return list(got)


def _untouchable_reason(sym: ParameterSymmetry, frozen: set[str], shared: set[str]) -> str:
    """Why ``sym`` may not be used (the frozen and shared parameters it would change), or
    ``""``."""
    reasons = [
        f"{label} {names}"
        for label, held in (("frozen:", frozen), ("shared:", shared))
        if (names := sorted(held.intersection(sym.param_names)))
    ]
    return ", ".join(reasons)
