"""Symmetry teleportation inside the training loop: :class:`TeleportCallback` (``--teleport``).

When the schedule is due at ``k`` (the number of optimiser steps already taken, as for
:class:`symgraph.teleport.Teleport` in a plain loop: ``"every:K"`` teleports before steps
``K + 1, 2K + 1, ...``, ``"at:0"`` before the first), the model is moved along its
parameter-space symmetries, on the batch of the coming step (or, with ``samples=N``, on
``N`` random training samples drawn for this teleport), to where ``‖∇L‖²`` of the
trainer's objective (:meth:`~symgraph.train.loop.Trainer.training_loss`: the task loss plus
the extra losses) is larger; the optimiser's moments of the changed parameters are
transported (or reset, or kept), and the step then descends from the teleported point. A
teleport that moves the loss by more than the tolerance is refused and undone.

Data parallel: rank 0 teleports on its shard of the global batch, then every rank copies
rank 0's changed parameters and their optimiser state. One rank computing and the others
copying keeps the ranks bit-identical (the same computation on every rank would not be
on GPUs, whose reductions are not bit-reproducible) and takes the same wall-clock.

Exact resume: whether a teleport is due depends only on the global step, and a teleport
only on the weights, the optimiser state and the batch (its loss evaluations restore the
random state; the ``samples`` batch is drawn with a generator seeded from the run's seed and
the step), so a resumed run teleports exactly where an uninterrupted one does.

Record: ``teleports.csv`` in the run folder (rewritten atomically from the checkpointed
records after each teleport and each epoch), one row per teleport: ``step`` (optimiser
steps taken before it), ``epoch`` (1-based), ``refused``, ``moved``, ``loss_before``,
``loss_after``, ``loss_change``, ``grad_norm_before``, ``grad_norm_after`` (``‖∇L‖`` on the
batch; with ``gradient="optimizer"``, the norm of the optimiser's running gradient over
the parameters the symmetries touch, which the search used instead) and ``seconds``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from symgraph.checks import is_int
from symgraph.teleport import (
    DEFAULT_KINDS,
    Teleport,
    TeleportResult,
    find_symmetries,
)
from symgraph.teleport.teleport import check_min_grad_norm, check_search_settings
from symgraph.train.callbacks import Callback
from symgraph.train.checkpoint import ResumeError
from symgraph.train.loader import move_to, random_batch
from symgraph.train.records import write_csv

if TYPE_CHECKING:
    from symgraph.train.loop import Trainer

__all__ = ["TeleportCallback", "TELEPORT_COLUMNS", "CALLBACK_OBJECTIVES"]

logger = logging.getLogger("symgraph.train")

#: Columns of ``teleports.csv``.
TELEPORT_COLUMNS = (
    "step",
    "epoch",
    "refused",
    "moved",
    "loss_before",
    "loss_after",
    "loss_change",
    "grad_norm_before",
    "grad_norm_after",
    "seconds",
)


#: The targets a scheduled teleport can move to (``"descent"``, the largest one-step decrease,
#: is left to :func:`symgraph.teleport.teleport` and the ``Teleport`` hook: on the GIN job of
#: ``benchmarks/teleport.py`` it made SGD diverge).
CALLBACK_OBJECTIVES = ("grad_norm", "min_grad_norm", "min_norm")


def _record(step: int, epoch: int, result: TeleportResult) -> dict[str, Any]:
    """One row of ``teleports.csv``."""
    return {
        "step": step,
        "epoch": epoch,
        "refused": not result.accepted,
        "moved": result.moved,
        "loss_before": result.loss_before,
        "loss_after": result.loss_after,
        "loss_change": result.loss_after - result.loss_before,
        "grad_norm_before": math.sqrt(result.grad_norm_sq_before),
        "grad_norm_after": math.sqrt(result.grad_norm_sq_after),
        "seconds": result.seconds,
    }


class TeleportCallback(Callback):
    """Teleport the trainer's model on a schedule; see the module docstring.

    The symmetries are found here, once, so a model without any fails before training.

    Args:
        model: the model the trainer will train (symmetries are found on it).
        schedule: ``"every:K"``, ``"every:K,until:N"``, ``"at:i,j,..."`` or ``"never"``
            (:func:`symgraph.teleport.parse_schedule`), in optimiser steps taken.
        steps: gradient-ascent steps per teleport (``0``: only measure ``‖∇L‖``).
        lr: ascent step size (about the change of each log-scale per step).
        kinds: symmetry rules of :func:`symgraph.teleport.find_symmetries`.
        optimizer_state: ``"transform"``, ``"reset"`` or ``"keep"`` the moments of the
            changed parameters (:func:`symgraph.teleport.update_optimizer_state`).
        objective: the point of the orbit to move to (:data:`CALLBACK_OBJECTIVES`):
            ``"grad_norm"`` the steepest (the paper), ``"min_grad_norm"`` the least steep,
            ``"min_norm"`` the smallest weights (see :func:`symgraph.teleport.teleport`).
        samples: teleport on this many random training samples (drawn for each teleport)
            instead of the coming batch; ``None`` (default): the coming batch. The
            ``"min_grad_norm"`` target moves every rescaled unit, and a small batch's
            gradient is a noisy guide for that (``benchmarks/teleport.py`` uses 512 graphs).
        gradient: with ``"min_grad_norm"``, ``"batch"`` (default) computes its gradient on
            the teleport's batch; ``"optimizer"`` takes the optimiser's running mean of past
            gradients instead (Adam's ``exp_avg``, SGD's momentum; no backward pass, the
            batch is only run forward to check the loss; it is checkpointed with the
            optimiser, so a resumed run teleports the same way).

    Raises:
        NoSymmetryError: ``model`` has no symmetry of ``kinds`` (the message lists what was
            searched).
        ValueError: a bad schedule, ``steps``, ``lr``, ``kinds``, ``optimizer_state``,
            ``objective``, ``samples`` or ``gradient`` (``"optimizer"`` with a teleport
            before the first step), or ``"min_grad_norm"`` with a
            symmetry it cannot use (found by ``kinds`` such as ``"norm"`` or ``"linear"``;
            :func:`symgraph.teleport.teleport.check_min_grad_norm`).
    """

    def __init__(
        self,
        model: nn.Module,
        schedule: str = "every:100",
        *,
        steps: int = 10,
        lr: float = 0.1,
        kinds: Sequence[str] | str = DEFAULT_KINDS,
        optimizer_state: str = "transform",
        objective: str = "grad_norm",
        samples: int | None = None,
        gradient: str = "batch",
    ) -> None:
        if not isinstance(schedule, str):
            raise TypeError(f"schedule: expected a string such as 'every:100', got {schedule!r}")
        if objective not in CALLBACK_OBJECTIVES:
            raise ValueError(f"objective: expected one of {CALLBACK_OBJECTIVES}, got {objective!r}")
        check_search_settings(steps, lr, objective, optimizer_state)
        if samples is not None and (not is_int(samples) or samples < 1):
            raise ValueError(f"samples: expected a positive integer or None, got {samples!r}")
        self.samples = None if samples is None else int(samples)
        self.symmetries = find_symmetries(model, kinds)
        if objective == "min_grad_norm":
            check_min_grad_norm(self.symmetries, dict(model.named_parameters()))
        self.teleporter = Teleport(
            schedule,
            steps=steps,
            lr=lr,
            symmetries=self.symmetries,
            optimizer_state=optimizer_state,
            objective=objective,
            gradient=gradient,
        )
        if gradient == "optimizer" and self.teleporter.due(0):
            raise ValueError(
                f"schedule: {schedule!r} teleports before the first optimiser step, when the "
                "optimiser holds no running gradient for gradient='optimizer' to read; start "
                "at step 1 or later"
            )
        named = dict(model.named_parameters())
        touched = {n for sym in self.symmetries for n in sym.param_names}
        #: names of the parameters a teleport may change, in the model's order
        self.param_names = [n for n in named if n in touched]
        #: one row of ``teleports.csv`` per teleport so far (kept in checkpoints)
        self.records: list[dict[str, Any]] = []

    @property
    def schedule(self) -> str:
        """The schedule string."""
        return self.teleporter.spec

    def on_batch_start(self, trainer: Trainer, step: int, batch: Any) -> None:
        """Teleport before step ``step`` if the schedule is due at ``step - 1`` steps taken."""
        taken = step - 1
        if not self.teleporter.due(taken):
            return
        dist = trainer.dist
        record, states = None, {}
        if dist.is_main and batch is not None:
            if self.samples is not None:
                self.teleporter.batch_fn = lambda at: self._random_batch(trainer, at)
            result = self.teleporter(
                trainer.model, batch, trainer.optimizer, step=taken, loss_fn=trainer.training_loss
            )
            record = _record(taken, trainer.epoch + 1, result)
            states = self._state_keys(trainer, result.optimizer_state)
        if dist.is_distributed:
            record, states = dist.broadcast_object((record, states))
            if record is not None and record["moved"]:
                self._copy_from_rank0(trainer, states)
        if record is None:
            return
        self.records.append(record)
        if dist.is_main:
            self._write(trainer)

    def on_epoch_end(self, trainer: Trainer, epoch: int) -> None:
        """Rewrite ``teleports.csv`` and log the epoch's teleports (rank 0)."""
        if not trainer.dist.is_main:
            return
        self._write(trainer)
        mine = [r for r in self.records if r["epoch"] == epoch + 1]
        if mine:
            logger.info(
                "epoch %d: %d teleports (%d refused), %.2f s, grad norm x%.3g on average",
                epoch + 1,
                len(mine),
                sum(r["refused"] for r in mine),
                sum(r["seconds"] for r in mine),
                sum(r["grad_norm_after"] / max(r["grad_norm_before"], 1e-300) for r in mine)
                / len(mine),
            )

    def state_dict(self) -> dict[str, Any]:
        return {"schedule": self.schedule, "records": [dict(r) for r in self.records]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("schedule") != self.schedule:
            raise ResumeError(
                f"--teleport: the checkpoint was trained with schedule "
                f"{state.get('schedule')!r}, resuming with {self.schedule!r} would not continue "
                "the same run"
            )
        self.records = [dict(r) for r in state["records"]]

    # ------------------------------------------------------------------ helpers
    def _random_batch(self, trainer: Trainer, taken: int) -> Any:
        """``samples`` random training samples, a function of the run's seed and ``taken``."""
        mixed = np.random.SeedSequence([trainer.config.seed, taken]).generate_state(1)
        generator = torch.Generator().manual_seed(int(mixed[0]))
        batch = random_batch(trainer.datasets["train"], self.samples, generator)
        return move_to(batch, trainer.dist.device)

    def _write(self, trainer: Trainer) -> None:
        write_csv(self.records, trainer.path("teleports"), TELEPORT_COLUMNS)

    @staticmethod
    def _state_keys(trainer: Trainer, actions: dict[str, str]) -> dict[str, tuple[str, list[str]]]:
        """Per changed parameter: what the teleport did to its optimiser state, and the keys
        of the state's tensors shaped like the parameter (the moments), sorted."""
        named = dict(trainer.model.named_parameters())
        out = {}
        for name, action in actions.items():
            state = trainer.optimizer.state.get(named[name], {})
            shape = named[name].shape
            keys = [k for k, v in state.items() if isinstance(v, Tensor) and v.shape == shape]
            out[name] = (action, sorted(keys))
        return out

    def _copy_from_rank0(self, trainer: Trainer, states: dict[str, tuple[str, list[str]]]) -> None:
        """Give every rank rank 0's changed parameters and their optimiser state."""
        dist, optimizer = trainer.dist, trainer.optimizer
        named = dict(trainer.model.named_parameters())
        dist.broadcast_tensors(named[n] for n in self.param_names)
        tensors = []
        for name in self.param_names:
            action, keys = states.get(name, ("kept", []))
            param = named[name]
            if action == "reset":
                optimizer.state.pop(param, None)
            elif action == "transformed":
                state = optimizer.state.get(param, {})
                missing = [k for k in keys if k not in state]
                if missing:
                    raise RuntimeError(
                        f"TeleportCallback: rank {dist.rank} has no optimiser state {missing} "
                        f"for {name!r}, which rank 0 has; the ranks' optimisers diverged"
                    )
                tensors += [state[k] for k in keys]
        dist.broadcast_tensors(tensors)
