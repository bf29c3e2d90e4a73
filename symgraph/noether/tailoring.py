"""Tailoring: gradient steps on a model's weights at prediction time, per trajectory
(``per_sample=True``, as in the paper) or shared by a batch (the default).

``tailor`` implements PREDICTSEQUENCE of Algorithm 1 of Noether Networks (Alet et al.,
2021): roll the predictor ``f_θ`` out from ``x_0``, take ``steps`` gradient steps of the
Noether loss of that rollout on a chosen parameter subset, then roll out again with the
tailored weights ``θ(x_0)``. Everything runs through :func:`torch.func.functional_call`
on a dict of parameters, so the model itself is never modified (parameters, buffers and
``.grad`` stay bit-identical) and, with ``create_graph=True``, the predictions are
differentiable with respect to the original θ and to the parameters of ``g``.

States are either plain tensors ``[B, d]`` (``model(x) -> next x``) or
:class:`~symgraph.noether.frames.Frame`\\ s of molecules, for which the model is called as
``model(pos, vel, z, batch) -> (next_pos, next_vel)`` (e.g.
:class:`symgraph.models.dynamics.EquivariantDynamics`). Any other state works with a
custom ``step_fn(call, state) -> next_state``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torch.func import functional_call

from symgraph.checks import as_number, is_int, is_real
from symgraph.noether.frames import Frame, Trajectory
from symgraph.noether.loss import noether_losses

__all__ = [
    "ScaleShift",
    "TailorResult",
    "select_parameters",
    "default_step",
    "rollout",
    "tailor",
]

ParamSpec = None | str | Sequence[str] | Callable[[str, Tensor], bool]
StepFn = Callable[[Callable[..., Any], Any], Any]


class ScaleShift(nn.Module):
    """Elementwise affine ``y = x * weight + bias`` over the last axis (identity at init).

    The per-sample conditional-normalisation layers of the reference implementation: cheap
    parameters to tailor (``tailor(..., params="scale_shift")``) that start as the identity,
    so inserting them does not change a trained model.

    Args:
        num_features: size of the last axis of ``x``.

    Shapes: ``x [..., num_features] -> [..., num_features]``.
    """

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.weight.shape[-1]:
            raise ValueError(
                f"x: expected last axis of size {self.weight.shape[-1]}, got shape {list(x.shape)}"
            )
        return x * self.weight + self.bias


class TailorResult(NamedTuple):
    """What :func:`tailor` returns.

    Attributes:
        predictions: rollout with the tailored weights, frame 0 being ``x0``: a tensor
            ``[T + 1, B, d]`` or a :class:`Trajectory` of ``T + 1`` frames (its ``dt`` the
            model's own, as in :func:`rollout`).
        params: the tailored parameters by name (only the selected ones). With
            ``per_sample=True`` each has a leading axis ``[B, ...]``, one copy per sample.
        inner_losses: Noether loss before each inner step, ``[steps]`` (or ``[B, steps]``
            with ``per_sample=True``); detached.
    """

    predictions: Tensor | Trajectory
    params: dict[str, Tensor]
    inner_losses: Tensor


def select_parameters(model: nn.Module, params: ParamSpec = None) -> dict[str, Tensor]:
    """The parameters of ``model`` to tailor, by name.

    Args:
        params: ``None`` or ``"all"`` (every parameter; frozen ones are tailored too),
            ``"scale_shift"`` (the parameters of :class:`ScaleShift` submodules), a list of
            parameter names, or a predicate ``(name, parameter) -> bool``.

    Raises:
        ValueError: unknown names, or a selection that is empty.
    """
    named = dict(model.named_parameters())
    if params is None or params == "all":
        chosen = dict(named)
    elif params == "scale_shift":
        chosen = {}
        for prefix, module in model.named_modules():
            if isinstance(module, ScaleShift):
                for k, v in module.named_parameters():
                    chosen[f"{prefix}.{k}" if prefix else k] = v
    elif isinstance(params, str):
        raise ValueError(
            f"params: expected None, 'all', 'scale_shift', a list of names or a predicate, "
            f"got the string {params!r}"
        )
    elif callable(params):
        chosen = {k: v for k, v in named.items() if params(k, v)}
    else:
        names = list(params)
        unknown = [k for k in names if k not in named]
        if unknown:
            raise ValueError(
                f"params: unknown parameter names {unknown}; the model has {list(named)[:12]}"
            )
        chosen = {k: named[k] for k in names}
    if not chosen:
        raise ValueError(f"params: the selection {params!r} matches no parameter of the model")
    return chosen


def default_step(call: Callable[..., Any], state: Any) -> Any:
    """One prediction step: ``call(x)`` for tensors, ``call(pos, vel, z, batch)`` for frames."""
    if isinstance(state, Tensor):
        out = call(state)
        if not isinstance(out, Tensor) or out.shape != state.shape:
            got = list(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(
                f"model: expected the next state with the input's shape {list(state.shape)}, "
                f"got {got}"
            )
        return out
    if isinstance(state, Frame):
        out = call(state.pos, state.vel, state.z, state.batch)
        if not (isinstance(out, (tuple, list)) and len(out) == 2):
            raise ValueError(
                "model: expected (next_pos [N, 3], next_vel [N, 3]) from "
                f"model(pos, vel, z, batch), got {type(out).__name__}"
            )
        return state.replace(pos=out[0], vel=out[1])
    raise TypeError(
        f"x0: expected a tensor [B, d] or a Frame (or pass step_fn), got {type(state).__name__}"
    )


def _stack(states: list[Any], dt: float | None = None) -> Tensor | Trajectory:
    """Tensor states as ``[T, ...]``, frames as a :class:`Trajectory` ``dt`` fs apart."""
    if isinstance(states[0], Tensor):
        return torch.stack(states)
    if isinstance(states[0], Frame):
        first = states[0]
        return Trajectory(
            torch.stack([s.pos for s in states]),
            torch.stack([s.vel for s in states]),
            first.z,
            first.mass,
            first.batch,
            dt=dt,
        )
    return states  # type: ignore[return-value]


def _time_step(model: nn.Module, x0: Any, dt: object) -> float | None:
    """The time step a rollout of ``model`` from ``x0`` advances by: ``dt``, else the
    model's own ``dt`` attribute (a positive finite number), else ``None``."""
    own = getattr(model, "dt", None)
    own = float(own) if is_real(own) and 0 < own < math.inf else None
    if dt is None:
        return own
    if not (is_real(dt) and 0 < dt < math.inf):
        raise ValueError(f"dt: expected a positive finite time step in fs, got {dt!r}")
    if not isinstance(x0, Frame):
        raise ValueError(
            f"dt: only a rollout of Frames returns a Trajectory, which carries a time step; "
            f"got x0 of type {type(x0).__name__}"
        )
    if own is not None and float(dt) != own:
        raise ValueError(
            f"dt: the model steps by its own dt = {own:g} fs, got dt={dt!r} (leave dt out)"
        )
    return float(dt)


def _module_state(model: nn.Module, params: dict[str, Tensor]) -> dict[str, Tensor]:
    """Parameters to use plus private copies of the buffers (so none is updated in place)."""
    state = {k: b.clone() for k, b in model.named_buffers()}
    state.update(params)
    return state


def rollout(
    model: nn.Module,
    x0: Any,
    horizon: int,
    params: dict[str, Tensor] | None = None,
    step_fn: StepFn | None = None,
    *,
    dt: float | None = None,
) -> Tensor | Trajectory:
    """Roll ``model`` out for ``horizon`` steps from ``x0``: ``[T + 1, ...]`` or a Trajectory.

    Args:
        model: the one-step predictor (see :func:`default_step`).
        x0: initial state: a tensor ``[B, d]``, a :class:`Frame` (``B`` molecules of ``N``
            atoms) or any state ``step_fn`` takes.
        horizon: prediction steps ``T``.
        params: parameters to substitute (by name) for this call only; the buffers are then
            private copies, so running statistics (BatchNorm) are not updated. Without
            ``params`` the model is called as it is and updates its buffers as usual.
        step_fn: ``step_fn(call, state) -> next_state`` for custom states.
        dt: the time step (fs) of one prediction, which the :class:`Trajectory` of a Frame
            rollout carries as its ``dt``; default: the model's own ``dt`` (that of
            :class:`~symgraph.models.dynamics.EquivariantDynamics` and
            :class:`~symgraph.models.steerable_dynamics.SteerableDynamics`), ``None`` for a
            model without one. A ``dt`` other than the model's is refused.

    Returns:
        ``[T + 1, B, d]`` for tensors, a :class:`Trajectory` of ``T + 1`` frames for Frames
        (``positions [T + 1, N, 3]``), else the list of states; frame 0 is ``x0``.
    """
    if not is_int(horizon) or horizon < 1:
        raise ValueError(f"horizon: expected a positive int, got {horizon!r}")
    dt = _time_step(model, x0, dt)
    step_fn = step_fn or default_step
    if params is None:
        call: Callable[..., Any] = model
    else:
        state = _module_state(model, params)

        def call(*args: Any) -> Any:
            return functional_call(model, state, args)

    states = [x0]
    for _ in range(horizon):
        states.append(step_fn(call, states[-1]))
    return _stack(states, dt)


def _clip(grads: list[Tensor], max_norm: float | None, per_sample: bool = False) -> list[Tensor]:
    """Scale ``grads`` to global norm <= ``max_norm`` (per leading index if ``per_sample``).

    The norm is :func:`torch.linalg.vector_norm`, whose derivative at a zero gradient is 0
    (that of ``sqrt`` of the sum of squares is infinite), so the second-order
    meta-gradient stays finite when an inner gradient vanishes (e.g. the angular momentum
    of a lone atom).
    """
    if max_norm is None:
        return grads
    if per_sample:
        flat = torch.cat([g.reshape(g.shape[0], -1) for g in grads], dim=1)
        norm = torch.linalg.vector_norm(flat, dim=1)  # [B]
        factor = torch.clamp(max_norm / (norm + 1e-12), max=1.0)
        return [g * factor.reshape(-1, *([1] * (g.dim() - 1))) for g in grads]
    norm = torch.linalg.vector_norm(torch.cat([g.reshape(-1) for g in grads]))
    factor = torch.clamp(max_norm / (norm + 1e-12), max=1.0)
    return [g * factor for g in grads]


def tailor(
    model: nn.Module,
    x0: Any,
    g: Callable[[Any], Tensor],
    steps: int = 1,
    lr: float | Tensor | Sequence[float] = 1e-3,
    params: ParamSpec = None,
    *,
    horizon: int,
    loss_horizon: int | None = None,
    create_graph: bool = False,
    per_sample: bool = False,
    step_fn: StepFn | None = None,
    reference: str = "initial",
    reduction: str = "sum",
    loss_fn: Callable[[Callable[[Any], Tensor], Any], Tensor] | None = None,
    max_grad_norm: float | None = None,
    dt: float | None = None,
) -> TailorResult:
    """Tailor ``model`` to ``x0`` with the Noether loss of ``g``, then predict.

    Args:
        model: the predictor ``f_θ`` (never modified).
        x0: initial state: a tensor ``[B, d]`` or a :class:`Frame`.
        g: conserved quantity (see :func:`~symgraph.noether.loss.noether_loss`).
        steps: number of inner gradient steps (0 gives the untailored prediction).
        lr: inner learning rate ``λ_in`` (a float or a scalar tensor, e.g. learned), or a
            sequence of rates for a line search: each inner step tries every rate and keeps,
            per sample when ``per_sample``, the one with the lowest inner loss, "no step"
            included, so tailoring never increases the Noether loss (the choice itself is
            not differentiated).
        params: which parameters to tailor (see :func:`select_parameters`).
        horizon: rollout length ``T`` of the returned predictions.
        loss_horizon: rollout length used by the inner Noether loss (default ``horizon``);
            a shorter one tailors on the near future and predicts further.
        create_graph: keep the graph of the inner gradients, so that the predictions can
            be differentiated (second order) with respect to θ and ``g``'s parameters.
            With ``False`` the inner gradients are constants (first-order meta-gradient).
        per_sample: adapt each sample of the batch separately (as the reference does).
            Tensor states: when only :class:`ScaleShift` parameters are tailored, each
            gets one copy per sample (``[B, C]``, broadcast against hidden features
            ``[B, C]``: one batched pass, as the reference's conditional layers); otherwise
            :func:`torch.func.vmap`. Frames: a loop over molecules. With ``False`` one
            adaptation is shared by the whole batch (its mean loss is minimised).
        step_fn: ``step_fn(call, state) -> next_state`` for custom states.
        reference, reduction: passed to :func:`~symgraph.noether.loss.noether_loss`.
        loss_fn: a custom inner loss ``loss_fn(g, trajectory) -> scalar`` replacing the
            Noether loss (``reference``/``reduction`` are then unused).
        max_grad_norm: clip the inner gradient to this global norm (differentiably; per
            sample when ``per_sample``).
        dt: the time step (fs) of one prediction, carried by the predicted
            :class:`Trajectory` of a Frame (see :func:`rollout`; default: the model's own).

    Returns:
        :class:`TailorResult` ``(predictions, params, inner_losses)``.
    """
    if not is_int(steps) or steps < 0:
        raise ValueError(f"steps: expected a non-negative int, got {steps!r}")
    if steps and torch.is_inference_mode_enabled():
        raise RuntimeError(
            "tailor: the inner steps need gradients, which torch.inference_mode() disables "
            "(and its tensors cannot be saved for backward); call tailor under "
            "torch.no_grad() instead, which it supports"
        )
    if isinstance(lr, Sequence) and len(lr) == 0:
        raise ValueError("lr: expected a step size or a non-empty sequence of them, got []")
    rates = lr if isinstance(lr, Sequence) else [lr]
    for rate in rates:
        if isinstance(rate, Tensor):
            if rate.dim() != 0:
                raise ValueError(f"lr: expected a scalar tensor, got shape {list(rate.shape)}")
            if not rate.requires_grad and not 0 <= float(rate) < math.inf:  # learned: free
                raise ValueError(
                    f"lr: expected a non-negative finite step size (a negative one climbs the "
                    f"loss), got {float(rate)!r}"
                )
            continue
        if not is_real(rate) or not 0 <= rate < math.inf:
            raise ValueError(
                f"lr: expected non-negative finite step sizes (a negative one climbs the "
                f"loss), got {lr!r}"
            )
    if max_grad_norm is not None and not (is_real(max_grad_norm) and 0 < max_grad_norm < math.inf):
        raise ValueError(
            f"max_grad_norm: expected a positive finite number or None, got {max_grad_norm!r}"
        )
    if not is_int(horizon) or horizon < 1:
        raise ValueError(f"horizon: expected a positive int, got {horizon!r}")
    selected = select_parameters(model, params)
    loss_horizon = horizon if loss_horizon is None else loss_horizon
    if not is_int(loss_horizon) or loss_horizon < 1:
        raise ValueError(f"loss_horizon: expected a positive int, got {loss_horizon!r}")
    steps, horizon, loss_horizon = int(steps), int(horizon), int(loss_horizon)
    dt = _time_step(model, x0, dt)
    lr = _plain_rates(lr)
    max_grad_norm = as_number(max_grad_norm)
    if loss_fn is None:

        def per_traj(g_: Callable[[Any], Tensor], trajectory: Any) -> Tensor:
            return noether_losses(g_, trajectory, reference=reference, reduction=reduction)

    else:

        def per_traj(g_: Callable[[Any], Tensor], trajectory: Any) -> Tensor:
            return loss_fn(g_, trajectory).reshape(1)

    kwargs = dict(
        g=g,
        steps=steps,
        lr=lr,
        horizon=horizon,
        loss_horizon=loss_horizon,
        create_graph=create_graph,
        step_fn=step_fn,
        loss_fn=per_traj,
        max_grad_norm=max_grad_norm,
    )
    if not per_sample:
        return _tailor_shared(model, x0, selected, expand=None, dt=dt, **kwargs)
    if isinstance(x0, Tensor):
        if x0.dim() != 2:
            raise ValueError(
                f"x0: per_sample=True expects a batch of states [B, d], got {list(x0.shape)}"
            )
        coupling = _batch_statistics_module(model)
        if coupling is not None:
            raise ValueError(
                f"per_sample=True: {coupling} normalises with batch statistics "
                "(BatchNorm in training mode, or without running statistics), which couple "
                "the samples of a batch, so they cannot be tailored separately; call "
                "model.eval() or use per_sample=False"
            )
        if loss_fn is None and _only_scale_shift(model, selected):
            return _tailor_shared(model, x0, selected, expand=x0.shape[0], dt=dt, **kwargs)
        return _tailor_vmap(model, x0, selected, **kwargs)
    if isinstance(x0, Frame):
        results = [
            _tailor_shared(model, f, selected, expand=None, dt=dt, **kwargs) for f in x0.split()
        ]
        preds = [r.predictions for r in results]
        frames = [Frame.cat([p.frame(t) for p in preds]) for t in range(horizon + 1)]
        return TailorResult(
            _stack(frames, preds[0].dt),
            {k: torch.stack([r.params[k] for r in results]) for k in selected},
            torch.stack([r.inner_losses for r in results]),
        )
    raise TypeError(
        f"x0: per_sample=True needs a tensor [B, d] or a Frame, got {type(x0).__name__}"
    )


def _plain_rates(lr: float | Tensor | Sequence[float]) -> float | Tensor | Sequence[float]:
    """``lr`` (checked) with numpy scalars as Python numbers; tensors, which may be learned,
    stay as they are."""
    if isinstance(lr, Sequence):
        return [as_number(rate) for rate in lr]
    return as_number(lr)


def _step(
    current: dict[str, Tensor],
    names: list[str],
    grads: list[Tensor],
    lr: float | Tensor | Sequence[float],
    loss_now: Tensor,
    per_copy: bool,
    evaluate: Callable[[dict[str, Tensor]], Tensor],
) -> dict[str, Tensor]:
    """One gradient step; with several rates, keep (per sample) the best by inner loss.

    ``loss_now`` is ``[B]`` (per-sample copies) or the losses of the current parameters;
    candidate ``0`` (no step) is always included, so the inner loss never increases.
    """
    if isinstance(lr, (float, int, Tensor)):
        return {k: current[k] - lr * gr for k, gr in zip(names, grads)}
    cands = [{k: current[k] - r * gr for k, gr in zip(names, grads)} for r in lr]
    with torch.no_grad():
        scores = [loss_now]
        for c in cands:
            try:
                scores.append(evaluate(c).detach().reshape(loss_now.shape))
            except ValueError:  # e.g. a model that rejects non-finite positions
                scores.append(torch.full_like(loss_now, float("inf")))
        scores = torch.stack([sc if per_copy else sc.mean().reshape(1) for sc in scores])
        scores = torch.nan_to_num(scores, nan=float("inf"))
        choice = torch.nn.functional.one_hot(scores.argmin(0), len(cands) + 1)  # [B, C]
        choice = choice.T.to(grads[0].dtype)  # [C, B]
    out = {}
    for k in names:
        stacked = torch.stack([current[k]] + [c[k] for c in cands])  # [C, (B,) ...]
        w = choice if per_copy else choice[:, 0]
        w = w.reshape(*w.shape, *([1] * (stacked.dim() - w.dim())))
        out[k] = (torch.nan_to_num(stacked) * w).sum(0)
    return out


def _batch_statistics_module(model: nn.Module) -> str | None:
    """``model.<name>`` of a submodule whose output mixes the samples of a batch, or None."""
    batch_norms = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
    for name, module in model.named_modules():
        if isinstance(module, batch_norms) and (module.training or not module.track_running_stats):
            return f"model.{name}" if name else "model"
    return None


def _only_scale_shift(model: nn.Module, selected: dict[str, Tensor]) -> bool:
    ids = {id(p) for m in model.modules() if isinstance(m, ScaleShift) for p in m.parameters()}
    return all(id(p) in ids for p in selected.values())


def _copies(params: dict[str, Tensor], keep_graph: bool) -> dict[str, Tensor]:
    """Private copies of ``params`` (differentiable when ``keep_graph``)."""
    return {k: v.clone() if keep_graph else v.detach().clone() for k, v in params.items()}


def _tailor_shared(
    model: nn.Module,
    x0: Any,
    selected: dict[str, Tensor],
    *,
    expand: int | None,
    g: Callable[[Any], Tensor],
    steps: int,
    lr: float | Tensor | Sequence[float],
    horizon: int,
    loss_horizon: int,
    create_graph: bool,
    step_fn: StepFn | None,
    loss_fn: Callable[..., Tensor],
    max_grad_norm: float | None,
    dt: float | None,
) -> TailorResult:
    """Inner steps on one shared copy of the parameters (``expand=B``: one copy per sample
    of a ``[B, d]`` batch, for elementwise layers whose weights broadcast over it); the
    predictions step by ``dt`` (see :func:`rollout`)."""
    names = list(selected)
    if expand is None:
        current = dict(selected)
    else:
        current = {k: v.unsqueeze(0).expand(expand, *v.shape) for k, v in selected.items()}
    losses = []
    for _ in range(steps):
        with torch.enable_grad():
            # frozen parameters (or updates made under no_grad) become fresh leaves
            current = {
                k: v if v.requires_grad else v.detach().requires_grad_(True)
                for k, v in current.items()
            }
            pred = rollout(model, x0, loss_horizon, current, step_fn)
            per_traj = loss_fn(g, pred)  # [B] (or [1] for custom losses)
            # per-sample copies: sum, so that each copy gets its own sample's gradient
            loss = per_traj.sum() if expand is not None else per_traj.mean()
            inputs = [current[k] for k in names]
            grads = torch.autograd.grad(loss, inputs, create_graph=create_graph, allow_unused=True)
            grads = [torch.zeros_like(p) if gr is None else gr for p, gr in zip(inputs, grads)]
            if not create_graph:
                grads = [gr.detach() for gr in grads]
            grads = _clip(grads, max_grad_norm, per_sample=expand is not None)
            current = _step(
                current,
                names,
                grads,
                lr,
                per_traj.detach(),
                expand is not None,
                lambda p: loss_fn(g, rollout(model, x0, loss_horizon, p, step_fn)),
            )
        losses.append(per_traj.detach() if expand is not None else loss.detach())
    pred = rollout(model, x0, horizon, current, step_fn, dt=dt if isinstance(x0, Frame) else None)
    if not losses:  # no step: the selected parameters themselves, copied (never aliased)
        current = _copies(current, create_graph)
        ref = pred if isinstance(pred, Tensor) else getattr(pred, "positions", torch.zeros(0))
        empty = ref.new_zeros(0) if expand is None else ref.new_zeros(expand, 0)
        return TailorResult(pred, current, empty.detach())
    inner = torch.stack(losses, -1) if expand is not None else torch.stack(losses)
    return TailorResult(pred, current, inner)


def _tailor_vmap(
    model: nn.Module,
    x0: Tensor,
    selected: dict[str, Tensor],
    *,
    g: Callable[[Any], Tensor],
    steps: int,
    lr: float | Tensor | Sequence[float],
    horizon: int,
    loss_horizon: int,
    create_graph: bool,
    step_fn: StepFn | None,
    loss_fn: Callable[..., Tensor],
    max_grad_norm: float | None,
) -> TailorResult:
    def inner_loss(p: dict[str, Tensor], x: Tensor) -> Tensor:
        return loss_fn(g, rollout(model, x, loss_horizon, p, step_fn)).sum()

    grad_and_value = torch.func.grad_and_value(inner_loss)

    def one(x: Tensor) -> tuple[Tensor, dict[str, Tensor], Tensor]:
        x = x.unsqueeze(0)
        current = dict(selected)
        losses = []
        for _ in range(steps):
            grads, value = grad_and_value(current, x)
            names = list(current)
            glist = [grads[k] if create_graph else grads[k].detach() for k in names]
            glist = _clip(glist, max_grad_norm)
            current = _step(
                current,
                names,
                glist,
                lr,
                value.detach().reshape(1),
                False,
                lambda p: loss_fn(g, rollout(model, x, loss_horizon, p, step_fn)),
            )
            losses.append(value.detach())
        pred = rollout(model, x, horizon, current, step_fn)[:, 0]
        inner = torch.stack(losses) if losses else x.new_zeros(0)
        return pred, current, inner

    pred, params_out, inner = torch.func.vmap(one, out_dims=(1, 0, 0), randomness="same")(x0)
    if steps == 0:  # vmap expanded the selected parameters themselves
        params_out = _copies(params_out, create_graph)
    return TailorResult(pred, params_out, inner)
