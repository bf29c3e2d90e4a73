"""One teleportation step: ``w ← g·w`` with ``g ≈ argmax_g ‖∇L(g·w)‖²`` (Algorithm 1, line 3).

The group element is found by gradient ascent on its coordinates ``theta``. Every
evaluation applies the symmetries *functionally* to a dictionary of parameter tensors and
runs the loss through :func:`torch.func.functional_call`, so ``‖∇_w L‖²`` (first backward,
``create_graph=True``) can be differentiated once more with respect to ``theta`` (double
backprop) without touching the model. Only the chosen ``g·w`` is written into the model, and
only if the loss stayed within the tolerance; otherwise the original tensors are copied back
(bit-identical) and a :class:`TeleportRefusedWarning` is issued. A loss that is not finite
at the current weights is refused the same way, before anything moves.

During a teleport the model keeps its mode (train/eval), but every loss evaluation

- starts from the same random-number state (the dropout masks are the same each time, and
  the global RNG is left as it was), and
- runs on copies of the buffers (batch-norm running statistics are not updated).
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from symgraph.checks import as_number, is_finite_real, is_int

from .base import (
    NoSymmetryError,
    ParameterSymmetry,
    TeleportContext,
    TeleportRefusedWarning,
    uncompiled,
)
from .detect import DEFAULT_KINDS, find_symmetries
from .optim_state import OPTIMIZER_STATE_MODES, plan_optimizer_state
from .symmetries import RescaleSymmetry

__all__ = [
    "teleport",
    "TeleportResult",
    "LossFn",
    "OBJECTIVES",
    "check_min_grad_norm",
    "check_search_settings",
]

#: What :func:`teleport` can optimise over the orbit (see its ``objective`` argument).
OBJECTIVES = ("grad_norm", "descent", "min_norm", "min_grad_norm")

LossFn = Callable[[nn.Module, Any], Tensor]


@dataclass
class TeleportResult:
    """What one call of :func:`teleport` did.

    Attributes:
        accepted: ``False`` when the teleport was refused (model left bit-identical).
        moved: whether the parameters were changed (accepted and ``g ≠ e``).
        loss_before, loss_after: loss on the batch before and after (``after`` = ``before``
            when refused or not moved).
        grad_norm_sq_before, grad_norm_sq_after: ``‖∇L‖²`` over the trainable parameters.
        objective: the ascent objective at each evaluated point (``‖∇L‖²``, the one-step
            decrease for ``objective="descent"``, ``−Σ ‖w‖²`` for ``"min_norm"``, ``−‖∇L‖²``
            for ``"min_grad_norm"``).
        symmetries: names of the symmetries used.
        group_params: the chosen coordinates ``theta`` per symmetry (detached).
        optimizer_state: what was done to each parameter's optimizer state.
        seconds: wall-clock time of the call.
        message: why it was refused, or ``""``.
    """

    accepted: bool
    moved: bool
    loss_before: float
    loss_after: float
    grad_norm_sq_before: float
    grad_norm_sq_after: float
    objective: list[float] = field(default_factory=list)
    symmetries: tuple[str, ...] = ()
    group_params: list[Tensor] = field(default_factory=list)
    optimizer_state: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    message: str = ""


class _LossModule(nn.Module):
    """``forward(batch) = loss_fn(model, batch)``, so functional_call can swap parameters."""

    def __init__(self, model: nn.Module, loss_fn: LossFn) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, batch: Any) -> Tensor:
        return self.loss_fn(self.model, batch)


class _Evaluator:
    """Evaluates the loss at given parameters, with fixed randomness and copied buffers."""

    def __init__(self, model: nn.Module, loss_fn: LossFn, batch: Any) -> None:
        self.module = _LossModule(model, loss_fn)
        self.batch = batch
        self.buffers = dict(model.named_buffers())
        devices = {p.device for p in model.parameters()} | {b.device for b in self.buffers.values()}
        self.cuda = sorted({d.index or 0 for d in devices if d.type == "cuda"})
        self.cpu_state = torch.get_rng_state()
        self.cuda_states = [torch.cuda.get_rng_state(i) for i in self.cuda]

    @contextlib.contextmanager
    def _fixed_rng(self) -> Iterator[None]:
        with torch.random.fork_rng(devices=self.cuda):
            torch.set_rng_state(self.cpu_state)
            for i, state in zip(self.cuda, self.cuda_states):
                torch.cuda.set_rng_state(state, i)
            yield

    def loss(self, params: dict[str, Tensor] | None = None) -> Tensor:
        tensors = {f"model.{k}": v for k, v in (params or {}).items()}
        tensors.update({f"model.{k}": b.clone() for k, b in self.buffers.items()})
        with self._fixed_rng():
            out = functional_call(self.module, tensors, (self.batch,), strict=False)
        if not isinstance(out, Tensor) or out.numel() != 1:
            got = f"shape {list(out.shape)}" if isinstance(out, Tensor) else type(out).__name__
            raise TypeError(f"loss_fn: expected a scalar tensor, got {got}")
        return out.reshape(())

    def capture(self, params: dict[str, Tensor], names: Sequence[str]) -> TeleportContext:
        model = self.module.model
        modules = dict(model.named_modules())
        missing = [n for n in names if n not in modules]
        if missing:
            raise ValueError(f"symmetries: expected module names of the model, got {missing}")
        seen: dict[str, list[Tensor]] = {n: [] for n in names}
        handles = [
            modules[n].register_forward_hook(
                lambda mod, args, out, n=n: seen[n].append(args[0].detach())
            )
            for n in names
        ]
        try:
            with torch.no_grad():
                self.loss(params)
        finally:
            for h in handles:
                h.remove()
        inputs = {}
        for n, got in seen.items():
            if len(got) > 1:
                raise ValueError(
                    f"symmetries: module {n!r} was called {len(got)} times in one loss "
                    f"evaluation; a data-dependent action needs a module called once"
                )
            if got:
                inputs[n] = got[0]
        return TeleportContext(inputs=inputs)


def check_min_grad_norm(
    symmetries: Sequence[ParameterSymmetry], params: Mapping[str, Tensor]
) -> None:
    """Raise unless ``‖∇L‖²`` can be minimised along every symmetry from one gradient.

    What ``objective="min_grad_norm"`` needs: every symmetry exact and diagonal (``w ← c ⊙ w``
    for all of its parameters), and, for a :class:`RescaleSymmetry`, both incoming ("up") and
    outgoing ("down") entries. Along a scale invariance (kind ``"norm"``: no "down" entries)
    ``‖∇L‖²`` keeps falling as the weights grow and has no minimum. ``params``: the model's
    parameters by name.

    Raises:
        ValueError: naming the first symmetry that does not qualify.
    """
    for sym in symmetries:
        like = params[sym.param_names[0]]
        factors = sym.elementwise_factors(sym.identity(like), params)
        if not sym.exact or factors is None or not set(sym.param_names) <= set(factors):
            raise ValueError(
                f"symmetries: objective='min_grad_norm' needs exact diagonal actions "
                f"(kinds 'rescale', 'gated'), got {sym!r}"
            )
        if isinstance(sym, RescaleSymmetry) and not (sym.up and sym.down):
            raise ValueError(
                f"symmetries: objective='min_grad_norm' has no minimum along a scale "
                f"invariance (the gradient shrinks as the weights grow), got {sym!r}; leave "
                f"out kind 'norm' (e.g. kinds=('rescale', 'gated'))"
            )


class _TransportedGradient:
    """``‖∇L(g·w)‖²`` for exact diagonal actions ``g·w = c(theta) ⊙ w`` from one gradient.

    With ``L(c ⊙ w) = L(w)`` for every ``w``, ``∇L(c ⊙ w) = ∇L(w) / c``, so the squared
    gradient norm anywhere on the orbit is ``Σ_n ‖∇_n L(w) / c_n(theta)‖²`` (a sum of
    exponentials of the log-scales: convex in ``theta``), differentiable in ``theta``.
    """

    def __init__(
        self,
        evaluator: _Evaluator,
        base: dict[str, Tensor],
        trainable: Sequence[str],
        symmetries: Sequence[ParameterSymmetry],
        gradient: Mapping[str, Tensor] | None = None,
    ) -> None:
        check_min_grad_norm(symmetries, base)
        self.symmetries = list(symmetries)
        self.base = base
        touched = {n for s in symmetries for n in s.param_names}
        if gradient is None:
            loss = evaluator.loss(base)
            grads = torch.autograd.grad(loss, [base[n] for n in trainable], allow_unused=True)
            present = {n: g for n, g in zip(trainable, grads) if g is not None}
        else:
            with torch.no_grad():
                loss = evaluator.loss(base)
            present = _checked_gradient(gradient, base, touched)
        self.loss = loss.detach()
        self.grads = {n: g for n, g in present.items() if n in touched}
        self.fixed = sum(
            (g.pow(2).sum() for n, g in present.items() if n not in touched),
            self.loss.new_zeros(()),
        )

    def grad_norm_sq(self, thetas: Sequence[Tensor]) -> Tensor:
        """``‖∇L(g(thetas)·w)‖²`` over the trainable parameters (a scalar tensor)."""
        factors: dict[str, Tensor] = {}
        for sym, theta in zip(self.symmetries, thetas):
            for n, c in (sym.elementwise_factors(theta, self.base) or {}).items():
                factors[n] = factors[n] * c if n in factors else c
        total = self.fixed
        for n, g in self.grads.items():
            total = total + (g / factors[n] if n in factors else g).pow(2).sum()
        return total


def _checked_gradient(
    gradient: Mapping[str, Tensor], base: Mapping[str, Tensor], touched: set[str]
) -> dict[str, Tensor]:
    """``gradient`` restricted to the model's parameters, checked against their shapes."""
    if not isinstance(gradient, Mapping):
        raise TypeError(
            f"gradient: expected a mapping parameter name -> tensor, got {type(gradient).__name__}"
        )
    missing = sorted(touched - set(gradient))
    if missing:
        raise ValueError(
            f"gradient: expected an estimate for every parameter the symmetries change, "
            f"got none for {missing[:5]}"
        )
    out = {}
    for name, g in gradient.items():
        if name not in base:
            raise ValueError(f"gradient: {name!r} is not a parameter of the model")
        if not isinstance(g, Tensor) or g.shape != base[name].shape:
            got = list(g.shape) if isinstance(g, Tensor) else type(g).__name__
            raise ValueError(
                f"gradient: expected shape {list(base[name].shape)} for {name!r}, got {got}"
            )
        out[name] = g.detach().to(base[name].dtype)
    return out


def _check_optimizer_holds(
    optimizer: torch.optim.Optimizer, named: Mapping[str, nn.Parameter], touched: Sequence[str]
) -> None:
    """Raise ``ValueError`` unless ``optimizer`` holds every parameter the symmetries change:
    the state of one it does not hold (another optimizer's, or none) would go stale."""
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    missing = [n for n in touched if id(named[n]) not in held]
    if missing:
        raise ValueError(
            f"optimizer: expected an optimizer holding every parameter the symmetries change, "
            f"got one ({type(optimizer).__name__}) without {missing[:5]}"
            f"{' ...' if len(missing) > 5 else ''} ({len(missing)} of {len(touched)}); pass "
            f"the optimizer of these parameters, or symmetries that change only its own"
        )


def _default_tolerance(dtype: torch.dtype) -> tuple[float, float]:
    if dtype == torch.float64:
        return 1e-9, 1e-12
    return 1e-4, 1e-6


def _ascent_step(grad: Tensor | None, theta: Tensor, lr: float, normalize: bool) -> Tensor:
    if grad is None:
        return theta
    if normalize:
        rms = grad.pow(2).mean().sqrt()
        if not torch.isfinite(rms) or rms == 0:
            return theta
        return theta + lr * grad / rms
    return theta + lr * grad


def check_search_settings(
    steps: object,
    lr: object,
    objective: object,
    optimizer_state: object,
    descent_lr: object = None,
    *,
    rtol: object = None,
    atol: object = None,
) -> None:
    """Raise ``ValueError`` naming the first of :func:`teleport`'s search settings that is
    not valid (what :class:`~symgraph.teleport.Teleport` checks at construction)."""
    if not is_int(steps) or steps < 0:
        raise ValueError(f"steps: expected a non-negative integer, got {steps!r}")
    if not (is_finite_real(lr) and lr > 0):
        raise ValueError(f"lr: expected a positive finite number, got {lr!r}")
    if objective not in OBJECTIVES:
        raise ValueError(f"objective: expected one of {OBJECTIVES}, got {objective!r}")
    if (
        objective == "descent"
        and descent_lr is not None
        and not (is_finite_real(descent_lr) and descent_lr > 0)
    ):
        raise ValueError(
            f"descent_lr: expected a positive step size (or None: the optimizer's lr) with "
            f"objective='descent', got {descent_lr!r}"
        )
    if optimizer_state not in OPTIMIZER_STATE_MODES:
        raise ValueError(
            f"optimizer_state: expected one of {OPTIMIZER_STATE_MODES}, got {optimizer_state!r}"
        )
    for name, value in (("rtol", rtol), ("atol", atol)):
        if value is not None and not (is_finite_real(value) and value >= 0):
            raise ValueError(
                f"{name}: expected a non-negative finite tolerance (or None: the default of "
                f"the parameters' dtype), got {value!r}"
            )


def teleport(
    model: nn.Module,
    loss_fn: LossFn,
    batch: Any,
    steps: int = 10,
    lr: float = 0.1,
    *,
    symmetries: Sequence[ParameterSymmetry] | None = None,
    kinds: Sequence[str] | str | None = None,
    normalize: bool = True,
    rtol: float | None = None,
    atol: float | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    optimizer_state: str = "transform",
    objective: str = "grad_norm",
    descent_lr: float | None = None,
    gradient: Mapping[str, Tensor] | None = None,
) -> TeleportResult:
    """Teleport ``model`` in place to a point of its symmetry orbit with a steeper gradient.

    Args:
        model: the model; its trainable parameters are the ``w`` of the paper. A
            ``torch.compile``d model is teleported through the module it wraps (same
            parameters): ``loss_fn`` then runs eagerly, as compiled graphs have no double
            backward.
        loss_fn: ``loss_fn(model, batch) -> scalar tensor``.
        batch: anything ``loss_fn`` accepts (a tensor tuple, a PyG ``Batch``, ``None``).
        steps: gradient-ascent steps on the group coordinates (``0``: only measure).
        lr: ascent step size. With ``normalize=True`` each step moves every symmetry's
            coordinates by ``lr · grad / rms(grad)`` (about ``lr`` per coordinate, e.g. a
            log-scale); with ``normalize=False`` by ``lr · grad`` (the paper's plain ascent).
        symmetries: the symmetries to use; default :func:`find_symmetries` with ``kinds``.
        kinds: detection rules when ``symmetries`` is not given (default
            ``("rescale", "norm", "gated")``).
        normalize: see ``lr``.
        rtol, atol: the loss may move by at most ``atol + rtol·|L|`` (defaults: ``1e-4,
            1e-6`` in float32, ``1e-9, 1e-12`` in float64); otherwise the teleport is refused.
        optimizer: its state for the changed parameters is updated (see ``optimizer_state``).
        optimizer_state: ``"transform"`` — for diagonal actions ``w ← c ⊙ w`` the moments are
            transported like the gradient, ``∇L(c ⊙ w) = ∇L(w) / c``: first moments
            (``exp_avg``, ``momentum_buffer``) are divided by ``c``, second moments
            (``exp_avg_sq``, ``max_exp_avg_sq``, ``square_avg``, ``sum``) by ``c²``; the state
            of parameters changed by a non-diagonal action (GL(d), SO(2)) is reset.
            ``"reset"`` — the state of every changed parameter is deleted (Adam restarts its
            bias correction for them). ``"keep"`` — left as is (stale moments).
        objective: what the ascent maximises over the orbit: ``"grad_norm"`` — ``‖∇L‖²``
            (the paper); ``"descent"`` — the decrease of one gradient step from the teleported
            point, ``L(g·w) − L(g·w − descent_lr · ∇L(g·w))``, which also sees the curvature
            (``‖∇L‖²`` grows without bound along a rescaling orbit, and a fixed learning rate
            overshoots at very steep points).
            ``"min_norm"`` — minimise ``Σ ‖w‖²`` over the parameters the symmetries change
            (equi-normalisation, Stock et al., ICLR 2019: every rescaled unit ends with
            incoming and outgoing weights of equal norm). It needs no loss gradients while
            ascending (one loss evaluation before, one at the chosen point), so it is cheap;
            use it with symmetries whose orbits are bounded in norm from below (``"rescale"``,
            ``"gated"``): along a scale invariance (``"norm"``) the norm has no minimum.
            ``"min_grad_norm"`` — minimise ``‖∇L‖²``, the opposite end of the paper's search:
            every rescaled unit moves towards equal gradient norms on its incoming and
            outgoing weights. Only for exact diagonal actions ``w ← c ⊙ w`` with incoming and
            outgoing entries (``"rescale"``, ``"gated"``; along ``"norm"``'s scale
            invariances ‖∇L‖² has no minimum), where ``∇L(c ⊙ w) = ∇L(w) / c`` for every
            ``w``: the gradient is computed once, at ``w``, and every step of the search is
            the closed form ``Σ ‖∇L(w) / c(theta)‖²``, with no further passes through the
            model (so ``grad_norm_sq_after`` is that closed form at the chosen point).
        descent_lr: the step size of ``objective="descent"`` (default: the ``lr`` of the
            ``optimizer``'s first parameter group; one of the two is needed).
        gradient: only with ``objective="min_grad_norm"``: an estimate of ``∇L(w)`` by
            parameter name (every parameter the symmetries change; e.g. the optimizer's
            running mean of past gradients, :func:`~symgraph.teleport.running_gradient`)
            used instead of the gradient on ``batch``. The batch is then only run forward,
            for the loss check, and ``grad_norm_sq_before``/``_after`` are of the estimate
            (over the parameters it holds). The target depends only on the estimate's
            direction per parameter, not on its overall scale.

    Returns:
        A :class:`TeleportResult`. The point kept is the evaluated one with the largest
        objective (the identity if none beats it).

    Raises:
        NoSymmetryError: nothing to teleport along (lists what was searched).
        TeleportBatchError: a data-dependent symmetry cannot act exactly on ``batch``.
        ValueError: ``objective="min_grad_norm"`` with a symmetry it cannot use
            (:func:`check_min_grad_norm`).
    """
    start = time.perf_counter()
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    model = uncompiled(model)  # the loss is differentiated twice: eagerly
    if not callable(loss_fn):
        raise TypeError(f"loss_fn: expected a callable (model, batch) -> loss, got {loss_fn!r}")
    check_search_settings(steps, lr, objective, optimizer_state, descent_lr, rtol=rtol, atol=atol)
    steps, lr, descent_lr = int(steps), as_number(lr), as_number(descent_lr)
    if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer: expected a torch.optim.Optimizer or None, got {optimizer!r}")
    if objective == "descent" and descent_lr is None:
        if optimizer is None:
            raise ValueError(
                "descent_lr: expected a step size with objective='descent' (or an optimizer, "
                "whose lr is used), got None and no optimizer"
            )
        descent_lr = float(optimizer.param_groups[0]["lr"])
    if gradient is not None and objective != "min_grad_norm":
        raise ValueError(
            f"gradient: an estimate is used only with objective='min_grad_norm', got "
            f"objective={objective!r}"
        )

    if symmetries is None:
        symmetries = find_symmetries(model, DEFAULT_KINDS if kinds is None else kinds)
    symmetries = [symmetries] if isinstance(symmetries, ParameterSymmetry) else list(symmetries)
    if not symmetries:
        raise NoSymmetryError("symmetries: expected at least one symmetry, got an empty list")
    named = dict(model.named_parameters())
    for sym in symmetries:
        if not isinstance(sym, ParameterSymmetry):
            raise TypeError(f"symmetries: expected ParameterSymmetry objects, got {sym!r}")
        missing = [n for n in sym.param_names if n not in named]
        if missing:
            raise ValueError(
                f"symmetries: {sym.name!r} names parameters {missing} that the model does not "
                f"have (it has e.g. {list(named)[:5]})"
            )
        sym.validate(named)
    trainable = [n for n, p in named.items() if p.requires_grad]
    if not trainable:
        raise ValueError("model: expected trainable parameters (requires_grad=True), got none")
    for sym in symmetries:
        frozen = [n for n in sym.param_names if not named[n].requires_grad]
        if frozen:
            raise ValueError(
                f"symmetries: {sym.name!r} would change the frozen parameters {frozen} "
                "(requires_grad=False); teleportation never touches frozen parameters"
            )
    touched = list(dict.fromkeys(n for s in symmetries for n in s.param_names))
    if optimizer is not None:
        _check_optimizer_holds(optimizer, named, touched)
    dtype = named[touched[0]].dtype
    default_rtol, default_atol = _default_tolerance(dtype)
    rtol = default_rtol if rtol is None else float(rtol)
    atol = default_atol if atol is None else float(atol)

    evaluator = _Evaluator(model, loss_fn, batch)
    base = {
        n: (p.detach().requires_grad_(True) if p.requires_grad else p.detach())
        for n, p in named.items()
    }
    needed = list(dict.fromkeys(m for s in symmetries for m in s.input_modules))
    context = evaluator.capture(base, needed) if needed else TeleportContext(inputs={})
    states = [s.prepare(base, context) for s in symmetries]
    order = sorted(range(len(symmetries)), key=lambda i: -symmetries[i].order)
    like = named[touched[0]]
    transported = None
    if objective == "min_grad_norm":
        transported = _TransportedGradient(evaluator, base, trainable, symmetries, gradient)

    def transformed(thetas: list[Tensor]) -> dict[str, Tensor]:
        params = dict(base)
        for i in order:
            params = symmetries[i].act(params, thetas[i], states[i])
        return params

    def evaluate(
        thetas: list[Tensor], create_graph: bool, with_loss: bool = True
    ) -> tuple[Tensor | None, Tensor | None, Tensor]:
        """(loss, ‖∇L‖², objective) at ``g(thetas)·w`` (``with_loss=False``: ``min_norm``
        only, loss and ``‖∇L‖²`` are ``None``)."""
        if transported is not None:
            gn2 = transported.grad_norm_sq(thetas)
            return transported.loss, gn2, -gn2
        params = transformed(thetas)
        if objective == "min_norm":
            value = -sum(params[n].pow(2).sum() for n in touched)
            if not with_loss:
                return None, None, value
        loss = evaluator.loss(params)
        inputs = [params[n] for n in trainable]
        grads = torch.autograd.grad(
            loss,
            inputs,
            create_graph=(create_graph and objective == "grad_norm") or objective == "descent",
            allow_unused=True,
        )
        gn2 = sum((g.pow(2).sum() for g in grads if g is not None), loss.new_zeros(()))
        if objective == "min_norm":
            return loss, gn2, value
        if objective == "grad_norm":
            return loss, gn2, gn2
        ahead = dict(params)
        for n, g in zip(trainable, grads):
            if g is not None:
                ahead[n] = params[n] - descent_lr * g
        return loss, gn2, loss - evaluator.loss(ahead)

    thetas = [s.identity(like) for s in symmetries]
    history: list[float] = []
    best_value, best_thetas, best_gn2 = -math.inf, [t.clone() for t in thetas], math.nan
    loss_before = gn2_before = math.nan
    for k in range(steps + 1):
        last = k == steps
        current = [t.detach().requires_grad_(not last) for t in thetas]
        loss, gn2, value_t = evaluate(
            current, create_graph=not last, with_loss=objective != "min_norm" or k == 0
        )
        value = float(value_t.detach())
        if k == 0:
            loss_before, gn2_before = float(loss.detach()), float(gn2.detach())
        if not math.isfinite(value):
            break
        history.append(value)
        if value > best_value:
            best_value, best_thetas = value, [t.detach().clone() for t in current]
            best_gn2 = math.nan if gn2 is None else float(gn2.detach())
        if last:
            break
        if not value_t.requires_grad:  # the objective does not depend on the orbit here
            break
        grads = torch.autograd.grad(value_t, current, allow_unused=True)
        with torch.no_grad():
            thetas = [
                sym.project(_ascent_step(g, t.detach(), lr, normalize), state)
                for sym, g, t, state in zip(symmetries, grads, current, states)
            ]

    names = tuple(s.name for s in symmetries)
    moved = any(bool(t.abs().max() > 0) for t in best_thetas if t.numel())
    if moved and math.isnan(best_gn2):
        best_gn2 = float(evaluate(best_thetas, create_graph=False)[1])

    def unchanged(message: str = "") -> TeleportResult:
        """The model as it was: refused (and warned) with a ``message``, else not moved."""
        if message:
            warnings.warn(message, TeleportRefusedWarning, stacklevel=3)
        return TeleportResult(
            not message,
            False,
            loss_before,
            loss_before,
            gn2_before,
            gn2_before,
            history,
            names,
            best_thetas,
            {},
            time.perf_counter() - start,
            message,
        )

    if not math.isfinite(loss_before):
        return unchanged(
            f"teleport refused: the loss at the current weights is {loss_before} (not finite), "
            f"so no point of the orbit can be checked; weights unchanged. Symmetries: "
            f"{', '.join(names)}"
        )
    if not moved:
        return unchanged()

    with torch.no_grad():
        new = transformed(best_thetas)
        saved = {n: named[n].detach().clone() for n in touched}

    def restore() -> None:
        with torch.no_grad():
            for n in touched:
                named[n].copy_(saved[n])

    # Until the optimizer's update is applied, any exception (a KeyboardInterrupt in the
    # loss check included) puts the weights back, so weights and moments stay consistent.
    try:
        with torch.no_grad():
            for n in touched:
                named[n].copy_(new[n])
            loss_after = float(evaluator.loss(None))
        tolerance = atol + rtol * abs(loss_before)
        accepted = math.isfinite(loss_after) and abs(loss_after - loss_before) <= tolerance
        state_update = None
        if accepted and optimizer is not None:
            factors: dict[str, Tensor | None] = {}
            for sym, theta in zip(symmetries, best_thetas):
                got = sym.elementwise_factors(theta, saved)
                for n in sym.param_names:
                    if got is None or n not in got or factors.get(n, 0) is None:
                        factors[n] = None
                    else:
                        factors[n] = got[n] if n not in factors else factors[n] * got[n]
            state_update = plan_optimizer_state(optimizer, named, factors, optimizer_state)
    except BaseException:
        restore()
        raise
    if not accepted:
        restore()
        return unchanged(
            f"teleport refused: the loss moved from {loss_before:.6g} to {loss_after:.6g} "
            f"(|change| {abs(loss_after - loss_before):.3g} > tolerance {tolerance:.3g}); "
            f"weights restored. Symmetries: {', '.join(names)}"
        )
    done = {} if state_update is None else state_update.apply()
    return TeleportResult(
        True,
        True,
        loss_before,
        loss_after,
        gn2_before,
        best_gn2,
        history,
        names,
        best_thetas,
        done,
        time.perf_counter() - start,
        "",
    )
