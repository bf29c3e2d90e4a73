"""Hooks into the training loop: callbacks and extra loss terms.

A callback subclasses :class:`Callback` and overrides what it needs. Hooks run on every
rank: before the forward and backward pass of each optimiser step (``on_batch_start``,
which sees the batch), after the optimiser step (``on_step_end``) or after validation
(``on_epoch_end``). The last two run before the checkpoint of that step or epoch is
written, so their effects are saved; ``on_batch_start`` of step ``k`` runs after the
checkpoint of step ``k - 1``, so a run resumed from that checkpoint calls it again. A
callback that changes parameters (e.g. a teleportation every K steps,
:class:`symgraph.train.teleport_callback.TeleportCallback`) must do the same on every rank
(use data that all ranks share, or ``trainer.dist.broadcast_module(model)``), and keep the
optimiser state consistent on every rank too.
A callback with state defines ``state_dict`` / ``load_state_dict``; the trainer keeps it in
the checkpoint so that a resumed run continues exactly.

An extra loss is a function ``(model, batch) -> scalar`` added to the task loss before the
backward pass (e.g. a relaxed-equivariance penalty ``weight * model.relaxation_penalty()``).
It is averaged over ranks, which is exact for terms that depend only on the parameters.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from torch import Tensor, nn

if TYPE_CHECKING:
    from symgraph.train.loop import Trainer

__all__ = ["Callback", "ExtraLoss"]

ExtraLoss = Callable[[nn.Module, Any], Tensor]


class Callback:
    """Base class of training callbacks; every hook does nothing by default."""

    def on_batch_start(self, trainer: Trainer, step: int, batch: Any) -> None:
        """Before optimiser step number ``step`` (counted from 1), on its batch.

        ``batch`` is this rank's shard of the global batch, already on ``trainer.dist.device``
        (``None``: an empty shard), and the model is in training mode. The step's gradient
        is computed after every callback's ``on_batch_start``, from the parameters they leave.
        """

    def on_step_end(self, trainer: Trainer, step: int) -> None:
        """After optimiser step number ``step`` (counted from 1 over the whole run)."""

    def on_epoch_end(self, trainer: Trainer, epoch: int) -> None:
        """After epoch ``epoch`` (0-based) is trained and validated (``trainer.history[-1]``)."""

    def state_dict(self) -> dict[str, Any]:
        """State to checkpoint (none by default)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (nothing by default)."""
