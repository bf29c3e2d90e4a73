"""``Teleport``: a schedule-driven teleportation hook for any training loop.

Call it once per step, *before* the gradient step (Algorithm 1 teleports ``w_t`` and then
descends from it)::

    tp = Teleport("every:50", loss_fn, steps=10, lr=0.1)
    for step, batch in enumerate(loader):
        tp(model, batch, optimizer)            # teleports when the schedule says so
        optimizer.zero_grad()
        loss_fn(model, batch).backward()
        optimizer.step()

Schedules: ``"every:K"`` (steps ``K, 2K, ...``), ``"every:K,until:N"`` (only before step
``N``), ``"at:5,20,100"``, ``"never"``, a callable ``step -> bool`` or an iterable of step
numbers. ``Teleport.from_spec("every:K", ...)`` is what a command line
(``--teleport every:K``) builds.

A teleport's target is measured on the batch it is given. For a less noisy one than a small
minibatch's, ``batch_fn(step)`` supplies the teleport's own batch (drawn only on the steps
the schedule teleports at, its time counted in the result's ``seconds``)::

    def sample(step):
        picked = torch.randperm(len(train_set), generator=gen)[:512]
        return Batch.from_data_list([train_set[i] for i in picked])

    tp = Teleport("every:100", loss_fn, objective="min_grad_norm", kinds=("rescale",),
                  batch_fn=sample)

``objective="min_grad_norm"`` can instead take its gradient from the optimizer for free
(``gradient="optimizer"``: Adam's ``exp_avg`` or SGD's momentum, an average over the last
~``1 / (1 − β)`` minibatches, :func:`~symgraph.teleport.running_gradient`); the batch is then
only run forward, to check the loss.
"""

from __future__ import annotations

import dataclasses
import re
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn

from symgraph.checks import as_number, is_int

from .base import ParameterSymmetry, uncompiled
from .detect import DEFAULT_KINDS, check_find_options, find_symmetries
from .optim_state import running_gradient
from .teleport import LossFn, TeleportResult, check_search_settings, teleport

__all__ = ["Teleport", "parse_schedule"]

Schedule = str | Callable[[int], bool] | Iterable[int]

#: Where ``Teleport(objective="min_grad_norm")`` takes its gradient from.
GRADIENT_SOURCES = ("batch", "optimizer")


def _ascii_int(text: str) -> int:
    """``int(text)`` for ASCII digits with an optional ``-`` only (``int`` also takes other
    scripts' digits, ``"٥"``, and underscores, ``"1_0"``); ``ValueError`` otherwise."""
    if not re.fullmatch(r"-?[0-9]+", text):
        raise ValueError(f"expected an integer in ASCII digits, got {text!r}")
    return int(text)


def parse_schedule(schedule: Schedule) -> Callable[[int], bool]:
    """Turn a schedule into ``step -> bool``.

    Accepts ``"every:K"``, ``"every:K,until:N"``, ``"at:i,j,k"``, ``"never"``, a callable, or
    an iterable of step numbers.
    """
    if callable(schedule):
        return schedule
    if isinstance(schedule, str):
        spec = schedule.strip().replace(" ", "")
        if spec == "never":
            return lambda step: False
        if spec.startswith("at:"):
            try:
                steps = {_ascii_int(s) for s in spec[3:].split(",") if s}
            except ValueError:
                steps = None
            if steps and min(steps) < 0:
                raise ValueError(
                    f"schedule: expected non-negative step numbers after 'at:', got {schedule!r}"
                )
            if steps:
                return steps.__contains__
        if spec.startswith("every:"):
            parts = spec[6:].split(",")
            try:
                every = _ascii_int(parts[0])
                until = None
                if len(parts) == 2 and parts[1].startswith("until:"):
                    until = _ascii_int(parts[1][6:])
                elif len(parts) != 1:
                    raise ValueError
            except ValueError:
                every = 0
            if every > 0 and until is not None and until <= every:
                raise ValueError(
                    f"schedule: 'until:N' must exceed 'every:K' (the first teleport is at step "
                    f"K={every}, and none at or after N={until}), got {schedule!r}"
                )
            if every > 0:
                return lambda step: (
                    step > 0 and step % every == 0 and (until is None or step < until)
                )
        raise ValueError(
            f"schedule: expected 'every:K', 'every:K,until:N', 'at:i,j,...' or 'never' with "
            f"positive integers, got {schedule!r}"
        )
    if isinstance(schedule, Iterable):
        steps = set()
        for s in schedule:
            if not is_int(s):
                raise TypeError(f"schedule: expected integer step numbers, got {s!r}")
            steps.add(int(s))
        return steps.__contains__
    raise TypeError(
        f"schedule: expected a string, a callable or step numbers, got {type(schedule).__name__}"
    )


def _schedule_label(schedule: Schedule) -> str:
    """A label of ``schedule`` that is the same in every process (what :meth:`Teleport.
    state_dict` saves and :meth:`Teleport.load_state_dict` compares): the string itself, the
    step numbers as ``"at:i,j,..."``, or a callable's qualified name (its ``repr`` holds a
    memory address, which a restarted process would not match)."""
    if isinstance(schedule, str):
        return schedule
    if callable(schedule):
        module = getattr(schedule, "__module__", None) or type(schedule).__module__
        qualname = getattr(schedule, "__qualname__", None) or type(schedule).__qualname__
        return f"callable:{module}.{qualname}"
    return "at:" + ",".join(str(int(s)) for s in sorted(set(schedule)))


class Teleport:
    """Teleport a model on a schedule, keeping the optimizer state consistent.

    Args:
        schedule: when to teleport (see :func:`parse_schedule`).
        loss_fn: ``loss_fn(model, batch) -> scalar``; may also be given per call.
        steps, lr, normalize, rtol, atol, objective, descent_lr: passed to
            :func:`~symgraph.teleport.teleport`.
        symmetries: fixed symmetries; default: found once per model with
            :func:`~symgraph.teleport.find_symmetries` (``kinds``, ``**find_options``).
        kinds: detection rules (default ``("rescale", "norm", "gated")``).
        optimizer_state: ``"transform"`` (default), ``"reset"`` or ``"keep"`` — see
            :mod:`symgraph.teleport.optim_state`.
        batch_fn: ``batch_fn(step) -> batch``, the batch a due teleport runs on instead of
            the one passed to the call (default: that one). Called only when a teleport is
            due; the time it takes counts in the result's ``seconds``.
        gradient: with ``objective="min_grad_norm"``, where its gradient comes from:
            ``"batch"`` (default) — computed on the teleport's batch; ``"optimizer"`` — the
            optimizer's running mean of past gradients (no backward pass; needs the
            ``optimizer`` in the call and a momentum/first-moment state).

    Under data parallelism (several processes, each with its own batch) every process
    would teleport on its own batch and the replicas would drift apart: teleport on one
    rank and broadcast the parameters and optimizer state to the others, as
    ``symgraph train --teleport`` does (:class:`~symgraph.train.TeleportCallback`).

    Attributes:
        history: ``(step, TeleportResult)`` for every teleport made.
        seconds: total wall-clock time spent teleporting.
        step_count: the internal step counter (the next call's step when none is passed);
            :meth:`state_dict` keeps it, the history and the time across restarts.
    """

    def __init__(
        self,
        schedule: Schedule = "every:100",
        loss_fn: LossFn | None = None,
        *,
        steps: int = 10,
        lr: float = 0.1,
        normalize: bool = True,
        rtol: float | None = None,
        atol: float | None = None,
        symmetries: Sequence[ParameterSymmetry] | None = None,
        kinds: Sequence[str] | str = DEFAULT_KINDS,
        optimizer_state: str = "transform",
        objective: str = "grad_norm",
        descent_lr: float | None = None,
        batch_fn: Callable[[int], Any] | None = None,
        gradient: str = "batch",
        **find_options: Any,
    ) -> None:
        check_search_settings(
            steps, lr, objective, optimizer_state, descent_lr, rtol=rtol, atol=atol
        )
        if isinstance(schedule, Iterable) and not isinstance(schedule, str | bytes):
            schedule = list(schedule)  # a generator is read once, for the label and the steps
        self.schedule = parse_schedule(schedule)
        self.spec = _schedule_label(schedule)
        if loss_fn is not None and not callable(loss_fn):
            raise TypeError(f"loss_fn: expected a callable (model, batch) -> loss, got {loss_fn!r}")
        if batch_fn is not None and not callable(batch_fn):
            raise TypeError(f"batch_fn: expected a callable step -> batch, got {batch_fn!r}")
        if gradient not in GRADIENT_SOURCES:
            raise ValueError(f"gradient: expected one of {GRADIENT_SOURCES}, got {gradient!r}")
        if gradient == "optimizer" and objective != "min_grad_norm":
            raise ValueError(
                f"gradient: 'optimizer' is used only with objective='min_grad_norm', got "
                f"objective={objective!r}"
            )
        self.loss_fn = loss_fn
        self.batch_fn = batch_fn
        self.gradient = gradient
        self.kwargs = dict(
            steps=int(steps),
            lr=as_number(lr),
            normalize=normalize,
            rtol=as_number(rtol),
            atol=as_number(atol),
            optimizer_state=optimizer_state,
            objective=objective,
            descent_lr=as_number(descent_lr),
        )
        if symmetries is None:
            check_find_options(kinds, find_options)
        elif find_options:
            raise TypeError(
                f"find_options: used only to find symmetries, got {sorted(find_options)} with "
                "symmetries given"
            )
        if isinstance(symmetries, ParameterSymmetry):
            symmetries = [symmetries]
        self.symmetries = list(symmetries) if symmetries is not None else None
        self.kinds = kinds
        self.find_options = find_options
        self._found: weakref.WeakKeyDictionary[nn.Module, list[ParameterSymmetry]] = (
            weakref.WeakKeyDictionary()
        )
        self.step_count = 0
        self.history: list[tuple[int, TeleportResult]] = []
        self.seconds = 0.0

    @classmethod
    def from_spec(cls, spec: str, loss_fn: LossFn | None = None, **kwargs: Any) -> Teleport:
        """Build from a command-line spec such as ``"every:50"``."""
        return cls(spec, loss_fn, **kwargs)

    def symmetries_for(self, model: nn.Module) -> list[ParameterSymmetry]:
        """The symmetries used for ``model`` (found on first use, then cached)."""
        if self.symmetries is not None:
            return self.symmetries
        if model not in self._found:
            self._found[model] = find_symmetries(model, self.kinds, **self.find_options)
        return self._found[model]

    def due(self, step: int) -> bool:
        """Whether the schedule teleports at ``step``."""
        return bool(self.schedule(step))

    def __call__(
        self,
        model: nn.Module,
        batch: Any,
        optimizer: torch.optim.Optimizer | None = None,
        step: int | None = None,
        loss_fn: LossFn | None = None,
    ) -> TeleportResult | None:
        """Teleport if the schedule says so at ``step`` (default: an internal counter), on
        ``batch`` or, with ``batch_fn``, on ``batch_fn(step)``.

        Returns the :class:`TeleportResult`, or ``None`` when no teleport was due.
        """
        current = self.step_count if step is None else int(step)
        self.step_count = current + 1
        if not self.due(current):
            return None
        loss_fn = loss_fn or self.loss_fn
        if loss_fn is None:
            raise ValueError(
                "loss_fn: expected a loss function (here or in Teleport(...)), got None"
            )
        model = uncompiled(model)  # names as teleport and find_symmetries see them
        drawing = 0.0
        if self.batch_fn is not None:
            start = time.perf_counter()
            batch = self.batch_fn(current)
            drawing = time.perf_counter() - start
        symmetries = self.symmetries_for(model)
        estimate = None
        if self.gradient == "optimizer":
            if optimizer is None:
                raise ValueError(
                    "optimizer: expected the optimizer in the call with gradient='optimizer', "
                    "got None"
                )
            estimate = running_gradient(
                optimizer,
                dict(model.named_parameters()),
                dict.fromkeys(n for s in symmetries for n in s.param_names),
            )
        result = teleport(
            model,
            loss_fn,
            batch,
            symmetries=symmetries,
            optimizer=optimizer,
            gradient=estimate,
            **self.kwargs,
        )
        result.seconds += drawing
        self.history.append((current, result))
        self.seconds += result.seconds
        return result

    def reset(self) -> None:
        """Forget the step counter, the history and the cached symmetries."""
        self.step_count = 0
        self.history.clear()
        self.seconds = 0.0
        self._found = weakref.WeakKeyDictionary()

    def state_dict(self) -> dict[str, Any]:
        """The schedule, step counter, time spent and history (results as dicts): save it
        with a training loop's checkpoint, so that a resumed loop counts on where it was."""
        return {
            "schedule": self.spec,
            "step_count": self.step_count,
            "seconds": self.seconds,
            "history": [(step, dataclasses.asdict(result)) for step, result in self.history],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; refused when it was saved under another schedule."""
        if state.get("schedule") != self.spec:
            raise ValueError(
                f"state: saved by a hook with schedule {state.get('schedule')!r}, this one has "
                f"{self.spec!r}"
            )
        self.step_count = int(state["step_count"])
        self.seconds = float(state["seconds"])
        self.history = [(int(step), TeleportResult(**result)) for step, result in state["history"]]

    def __repr__(self) -> str:
        return f"Teleport({self.spec!r}, steps={self.kwargs['steps']}, lr={self.kwargs['lr']})"
