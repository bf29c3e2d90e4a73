"""Keeping an optimizer's state consistent with teleported parameters.

For a diagonal action ``w ← c ⊙ w`` that leaves the loss invariant for every ``w``,
``∇L(c ⊙ w) = ∇L(w) / c``: a gradient seen before the teleport, written in the new
coordinates, is divided by ``c``. Mode ``"transform"`` transports the moments the same way:

==========================================================  =================
state entry (torch.optim)                                   new value
==========================================================  =================
``exp_avg``, ``momentum_buffer``, ``grad_avg``              ``/ c``
``exp_avg_sq``, ``max_exp_avg_sq``, ``square_avg``, ``sum`` ``/ c²``
RMSprop's ``momentum_buffer`` (sums ``g / √v``)              unchanged
``step`` and other scalars                                   unchanged
any other tensor (e.g. Adafactor's factored moments)         state reset
==========================================================  =================

so Adam's next update ``m̂ / (√v̂ + ε)`` is, up to ``ε``, the same vector it would have
added before the teleport. Seen from the function, that is not the same step: on a unit
scaled by ``c`` it moves the incoming weights ``1/c`` as far and the outgoing ones ``c``
times as far (SGD's: ``1/c²`` and ``c²``), which is how a rescaling can change training.
Parameters changed by a non-diagonal action (GL(d), SO(2) charts) get their state reset.
Mode ``"reset"`` deletes the state of every changed parameter (the optimizer re-initialises
it on its next step: Adam's bias correction restarts, so its first step is about
``lr · sign(grad)``). Mode ``"keep"`` leaves the state untouched.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "update_optimizer_state",
    "plan_optimizer_state",
    "OptimizerStateUpdate",
    "running_gradient",
    "OPTIMIZER_STATE_MODES",
]

OPTIMIZER_STATE_MODES = ("transform", "reset", "keep")
_FIRST_MOMENTS = {"exp_avg", "momentum_buffer", "grad_avg"}
#: State entries holding a running mean (up to scale) of past gradients, in order of use.
_RUNNING_GRADIENT = ("exp_avg", "momentum_buffer", "grad_avg")
_SECOND_MOMENTS = {"exp_avg_sq", "max_exp_avg_sq", "square_avg", "sum"}
#: Scalar state entries that do not scale with the gradient (step counters, NAdam's and
#: ASGD's schedules).
_SCALAR_ENTRIES = {"step", "mu_product", "eta", "mu"}


def update_optimizer_state(
    optimizer: torch.optim.Optimizer,
    params: Mapping[str, torch.nn.Parameter],
    factors: Mapping[str, Tensor | None],
    mode: str = "transform",
) -> dict[str, str]:
    """Update ``optimizer.state`` for the parameters in ``factors``.

    Args:
        optimizer: any ``torch.optim.Optimizer``.
        params: parameter name -> parameter (the objects the optimizer holds).
        factors: parameter name -> broadcastable factor ``c`` of the diagonal action
            (``None``: not diagonal, reset).
        mode: ``"transform"``, ``"reset"`` or ``"keep"`` (see the module docstring).

    Returns:
        parameter name -> what was done (``"transformed"``, ``"reset"``, ``"kept"``,
        ``"no state"``).
    """
    return plan_optimizer_state(optimizer, params, factors, mode).apply()


@dataclass
class OptimizerStateUpdate:
    """An update of ``optimizer.state`` computed but not yet applied.

    The new moments are separate tensors, so until :meth:`apply` the optimizer is
    untouched, and :meth:`apply` only rebinds state entries: a teleport interrupted
    before it leaves the optimizer as it was.
    """

    optimizer: torch.optim.Optimizer
    replaced: list[tuple[Tensor, dict[str, Tensor]]]
    reset: list[Tensor]
    done: dict[str, str]

    def apply(self) -> dict[str, str]:
        """Write the update into ``optimizer.state``; returns what was done by name."""
        for param in self.reset:
            self.optimizer.state.pop(param, None)
        for param, entries in self.replaced:
            self.optimizer.state[param].update(entries)
        return dict(self.done)


def plan_optimizer_state(
    optimizer: torch.optim.Optimizer,
    params: Mapping[str, torch.nn.Parameter],
    factors: Mapping[str, Tensor | None],
    mode: str = "transform",
) -> OptimizerStateUpdate:
    """:func:`update_optimizer_state`'s update, computed without changing the optimizer."""
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer: expected a torch.optim.Optimizer, got {optimizer!r}")
    if mode not in OPTIMIZER_STATE_MODES:
        raise ValueError(f"mode: expected one of {OPTIMIZER_STATE_MODES}, got {mode!r}")
    normalised = _normalised_entries(optimizer)
    update = OptimizerStateUpdate(optimizer, [], [], {})
    for name, factor in factors.items():
        param = params[name]
        state = optimizer.state.get(param)
        if not state:
            update.done[name] = "no state"
            continue
        if mode == "keep":
            update.done[name] = "kept"
            continue
        if mode == "reset" or factor is None or not _transformable(state, param):
            update.reset.append(param)
            update.done[name] = "reset"
            continue
        entries: dict[str, Tensor] = {}
        with torch.no_grad():
            for key, value in state.items():
                if key in normalised or value is None:
                    continue
                if key in _FIRST_MOMENTS:
                    entries[key] = (value / factor).to(value.dtype)
                elif key in _SECOND_MOMENTS:
                    entries[key] = (value / (factor * factor)).to(value.dtype)
        update.replaced.append((param, entries))
        update.done[name] = "transformed"
    return update


def _normalised_entries(optimizer: torch.optim.Optimizer) -> set[str]:
    """State entries that hold already normalised steps (unchanged by a rescaling): the
    momentum of RMSprop sums ``g / (√v + ε)``, which ``g → g / c``, ``v → v / c²`` leaves
    as it was."""
    return {"momentum_buffer"} if isinstance(optimizer, torch.optim.RMSprop) else set()


def _transformable(state: Mapping[str, object], param: Tensor) -> bool:
    """Every tensor entry but the known scalar counters must be a known moment (a factored
    second moment, or Adamax's ``exp_inf``, is not, whatever the parameter's size)."""
    for key, value in state.items():
        if isinstance(value, Tensor) and key not in _SCALAR_ENTRIES:
            if key not in _FIRST_MOMENTS | _SECOND_MOMENTS:
                return False
    return True


def running_gradient(
    optimizer: torch.optim.Optimizer,
    params: Mapping[str, torch.nn.Parameter],
    names: Iterable[str] | None = None,
) -> dict[str, Tensor]:
    """The optimizer's running mean of past gradients, by parameter name.

    Adam's (AdamW's, NAdam's …) ``exp_avg``, SGD's ``momentum_buffer`` (with
    ``momentum > 0``; a weighted sum rather than a mean, which only scales it), RMSprop's
    ``grad_avg`` (``centered=True``; never its momentum, a sum of normalised steps): an
    average over roughly ``1 / (1 − β)`` recent minibatches, at no cost, for
    ``teleport(..., objective="min_grad_norm", gradient=...)`` (with weight decay in the
    optimizer, of the decayed objective's gradient). The tensors are the optimizer's own
    (not copies).

    Args:
        optimizer: any ``torch.optim.Optimizer``.
        params: parameter name -> parameter (the objects the optimizer holds).
        names: the parameters that must have one (default: all of ``params``).

    Raises:
        ValueError: a parameter of ``names`` is not held by the optimizer, or has no such
            state (before the optimizer's first step, or an optimizer that keeps none, such
            as SGD without momentum).
    """
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer: expected a torch.optim.Optimizer, got {optimizer!r}")
    keys = [k for k in _RUNNING_GRADIENT if k not in _normalised_entries(optimizer)]
    found: dict[str, Tensor] = {}
    for name, param in params.items():
        state = optimizer.state.get(param) or {}
        for key in keys:
            if isinstance(state.get(key), Tensor):
                found[name] = state[key]
                break
    wanted = list(params if names is None else names)
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    outside = [n for n in wanted if n in params and id(params[n]) not in held]
    if outside:
        raise ValueError(
            f"optimizer: expected to hold the parameters the symmetries change, got none of "
            f"{outside[:5]} in its param_groups"
        )
    missing = [n for n in wanted if n not in found]
    if missing:
        raise ValueError(
            f"optimizer: expected a running mean of the gradient (exp_avg, momentum_buffer or "
            f"grad_avg in its state) for {missing[:5]}, got none; {type(optimizer).__name__} "
            f"keeps one only after its first step, and not at all without momentum"
        )
    return found
