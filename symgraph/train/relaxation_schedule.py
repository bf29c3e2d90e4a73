"""How fast relaxed layers may leave exact equivariance: their own learning rate, a warm-up.

A relaxed layer (:mod:`symgraph.nn.relaxed_utils`) starts exactly equivariant, and its
relaxation parameters -- the non-equivariant pathway -- receive the gradient of whatever the
equivariant part has not yet fitted. Early in training that is nearly everything, so a
free pathway that may depend on the raw offset can grow fast and fit what the equivariant
part would have learned, at the price of the symmetry prior. Two knobs slow it down:

- :func:`relaxed_adam`: Adam whose parameter group of relaxation parameters runs at
  ``lr_scale`` times the learning rate of the others (a scheduler scales both groups alike);
- :class:`RelaxationWarmup`: a callback that keeps the relaxation parameters frozen (no
  gradient, so Adam leaves them and their moments untouched) for the first ``epochs``
  epochs: the model trains as the strict one, then the relaxation is released.

Both work with any model holding relaxed layers; ``symgraph train fluid`` exposes them as
``--relaxation-lr-scale`` and ``--relaxation-warmup``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from symgraph.checks import as_number, is_int, is_real
from symgraph.nn.relaxed_utils import relaxed_modules, set_relaxation_trainable
from symgraph.train.callbacks import Callback

if TYPE_CHECKING:
    from symgraph.train.loop import OptimizerFactory, Trainer

__all__ = ["relaxation_parameter_groups", "relaxed_adam", "RelaxationWarmup"]


def relaxation_parameter_groups(model: nn.Module, lr: float, lr_scale: float) -> list[dict]:
    """Two parameter groups: every other parameter at ``lr``, the relaxation ones at
    ``lr * lr_scale`` (that group is left out when the model has no relaxed layer).

    Raises:
        ValueError: ``lr_scale`` is not a positive finite number.
    """
    if not (is_real(lr_scale) and 0 < lr_scale < float("inf")):
        raise ValueError(f"lr_scale: expected a positive finite number, got {lr_scale!r}")
    lr, lr_scale = as_number(lr), as_number(lr_scale)  # optimizer state holds no numpy
    relaxation = {
        id(p): p for _, module in relaxed_modules(model) for p in module.relaxation_parameters()
    }
    others = [p for p in model.parameters() if id(p) not in relaxation]
    groups = [{"params": others, "lr": lr}]
    if relaxation:
        groups.append({"params": list(relaxation.values()), "lr": lr * lr_scale})
    return groups


def relaxed_adam(lr: float, weight_decay: float = 0.0, lr_scale: float = 1.0) -> OptimizerFactory:
    """``model -> Adam`` with the groups of :func:`relaxation_parameter_groups` (torch's fused
    implementation on CPU and CUDA, as the trainer's default optimiser)."""

    def build(model: nn.Module) -> torch.optim.Optimizer:
        device = next(model.parameters()).device
        return torch.optim.Adam(
            relaxation_parameter_groups(model, lr, lr_scale),
            lr=lr,
            weight_decay=weight_decay,
            fused=device.type in ("cpu", "cuda"),
        )

    return build


class RelaxationWarmup(Callback):
    """Keep the relaxation parameters frozen for the first ``epochs`` epochs of training.

    Before each optimiser step the relaxation parameters are made trainable exactly when the
    current (0-based) epoch is at least ``epochs``, so a resumed run freezes and releases
    them where an uninterrupted one does. A relaxed layer initialised exactly equivariant
    stays so while frozen: the first ``epochs`` epochs train the strict model. Adam starts the
    released parameters' moments afresh. Single-process training only (toggling
    ``requires_grad`` changes what a DistributedDataParallel model reduces).

    Args:
        epochs: number of frozen epochs, ``≥ 0`` (0: never frozen).
    """

    def __init__(self, epochs: int) -> None:
        if not is_int(epochs) or epochs < 0:
            raise ValueError(f"epochs: expected an int ≥ 0, got {epochs!r}")
        self.epochs = int(epochs)

    def on_batch_start(self, trainer: Trainer, step: int, batch: Any) -> None:
        set_relaxation_trainable(trainer.model, trainer.epoch >= self.epochs)

    def on_epoch_end(self, trainer: Trainer, epoch: int) -> None:
        """After the last epoch the relaxation is trainable again, also when the run ended
        inside the warm-up: the returned model is not left with frozen parameters (a resumed,
        longer run freezes them again at its next batch while the warm-up lasts)."""
        if epoch + 1 >= trainer.config.epochs:
            set_relaxation_trainable(trainer.model, True)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(epochs={self.epochs})"
