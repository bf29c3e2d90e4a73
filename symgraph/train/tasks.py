"""Tasks: what a job optimises and what it reports, independent of model and data.

A :class:`Task` turns ``(model, batch)`` into a training loss and into per-item metrics.
The trainer sums per-item metrics over the whole split (and over ranks), so every metric
is an exact mean over items whatever the batching. ``monitor`` names the validation metric
that selects ``best.pt``; ``units`` says in which unit each metric is reported.

Batches are PyG ``Batch`` objects (inputs: the batch itself, targets: ``batch.y``) or
``(inputs, targets)`` pairs from plain tensor datasets.

Jobs with other needs define their own task, e.g. ``NextStepTask`` of the dynamics job
(:mod:`symgraph.train.task_dynamics`): its ``loss`` is the error of the predicted next
frames, its ``metrics`` are per-trajectory rollout errors and drifts of conserved
quantities, untailored and tailored, and its ``state_dict`` holds the scales it fits on the
training split.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset
from torch_geometric.data.data import BaseData

from symgraph.checks import is_finite_real
from symgraph.train.loader import make_loader
from symgraph.train.sampler import GlobalBatchSampler

__all__ = ["Task", "RegressionTask", "ClassificationTask", "split_batch"]


def split_batch(batch: Any) -> tuple[Any, Tensor]:
    """``(inputs, targets)`` of a batch: ``(batch, batch.y)`` for PyG, ``batch`` for pairs."""
    if isinstance(batch, BaseData):
        if getattr(batch, "y", None) is None:
            raise ValueError("split_batch: the graph batch has no target attribute 'y'")
        return batch, batch.y
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        return batch[0], batch[1]
    raise TypeError(
        "split_batch: expected a PyG Batch with 'y' or an (inputs, targets) pair, "
        f"got {type(batch).__name__}"
    )


class Task(ABC):
    """Loss and metrics of a job.

    Attributes:
        monitor: the metric (a key of :meth:`metrics`) that selects the best checkpoint.
        mode: ``"min"`` or ``"max"``: whether a smaller or a larger ``monitor`` is better.
        units: unit of each reported metric, e.g. ``{"mae": "meV"}``.
    """

    monitor: str = "loss"
    mode: Literal["min", "max"] = "min"
    units: dict[str, str] = {}

    @abstractmethod
    def loss(self, model: nn.Module, batch: Any) -> tuple[Tensor, int]:
        """The training loss: a scalar *mean* over the batch's ``n`` items, and ``n``."""

    @abstractmethod
    def metrics(self, model: nn.Module, batch: Any) -> dict[str, Tensor]:
        """Per-item metric values, each ``[n]``, in reporting units (summed by the trainer)."""

    def state_dict(self) -> dict[str, Any]:
        """State fitted to the data (e.g. normalisation), saved in every checkpoint."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        if state:
            raise ValueError(
                f"{type(self).__name__}.load_state_dict: this task has no state, got keys "
                f"{sorted(state)}"
            )


def _match_prediction(pred: Tensor, target: Tensor, who: str) -> Tensor:
    """Reshape ``[n, 1]`` / ``[n]`` predictions to the target's shape, or raise."""
    if pred.shape == target.shape:
        return pred
    if pred.shape[:1] == target.shape[:1] and pred.numel() == target.numel():
        return pred.reshape(target.shape)
    raise ValueError(
        f"{who}: model output has shape {tuple(pred.shape)}, expected the target's shape "
        f"{tuple(target.shape)}"
    )


def _per_item_mean(values: Tensor) -> Tensor:
    """``[n, ...]`` → ``[n]``: the mean over everything but the item dimension."""
    return values.reshape(values.shape[0], -1).mean(dim=1)


class RegressionTask(Task):
    """Regression on standardised targets, reported as MAE in physical units.

    The model predicts the *standardised* target ``(y - mean) / std``; the loss is the
    mean squared error there. ``mae`` is ``|pred * std + mean - y| * unit_scale``: the target
    is stored in the dataset in some unit, ``unit_scale`` converts it to ``unit_name``
    (e.g. eV → meV: ``unit_scale=1000``, ``unit_name="meV"``).

    Args:
        target_index: column of ``y`` to fit (``y[:, target_index]``), or ``None`` for all of
            ``y``; targets are ``[n]`` or ``[n, T]``.
        mean, std: statistics of the *training* split (scalars or ``[T]``); see
            :meth:`from_dataset`.
        unit_scale: factor from the dataset's unit to ``unit_name``.
        unit_name: the reporting unit.
    """

    monitor = "mae"
    mode = "min"

    def __init__(
        self,
        target_index: int | None = None,
        mean: float | Tensor = 0.0,
        std: float | Tensor = 1.0,
        unit_scale: float = 1.0,
        unit_name: str = "",
    ) -> None:
        self.target_index = target_index
        self.mean = torch.as_tensor(mean, dtype=torch.float32)
        self.std = torch.as_tensor(std, dtype=torch.float32)
        if not torch.all(torch.isfinite(self.mean)):
            raise ValueError(f"RegressionTask: mean must be finite, got {self.mean.tolist()}")
        if not torch.all((self.std > 0) & torch.isfinite(self.std)):
            raise ValueError(f"RegressionTask: std must be > 0 and finite, got {self.std.tolist()}")
        # a negative scale would make the MAE negative, and best.pt the worst epoch
        if not (is_finite_real(unit_scale) and unit_scale > 0):
            raise ValueError(
                f"RegressionTask: unit_scale must be a finite number > 0, got {unit_scale!r}"
            )
        self.unit_scale = float(unit_scale)
        self.unit_name = unit_name
        self.units = {"mae": unit_name, "loss": "standardised squared error"}

    @classmethod
    def from_dataset(
        cls,
        dataset: Dataset,
        target_index: int | None = None,
        unit_scale: float = 1.0,
        unit_name: str = "",
        batch_size: int = 1024,
    ) -> RegressionTask:
        """A task whose mean and std are computed on ``dataset`` (pass the training split).

        Raises:
            ValueError: empty dataset, or a target that is constant on it (std 0).
        """
        if len(dataset) == 0:
            raise ValueError("RegressionTask.from_dataset: the training dataset is empty")
        probe = cls(target_index)
        sampler = GlobalBatchSampler(len(dataset), batch_size, shuffle=False)
        targets = torch.cat([probe.target(batch) for batch in make_loader(dataset, sampler)])
        targets = targets.double()
        bad = ~torch.isfinite(targets)
        if bad.any():
            rows = bad.reshape(bad.shape[0], -1).any(dim=1).nonzero().reshape(-1)
            raise ValueError(
                f"RegressionTask.from_dataset: target {target_index} holds NaN or inf on "
                f"{len(rows)} of the {len(targets)} training items (the first at position "
                f"{int(rows[0])} of the split); clean or drop them"
            )
        std = targets.std(dim=0, unbiased=False)
        if not torch.all(std > 0):
            raise ValueError(
                f"RegressionTask.from_dataset: target {target_index} is constant on the "
                f"training split (std {std.tolist()}); it cannot be standardised"
            )
        return cls(target_index, targets.mean(dim=0), std, unit_scale, unit_name)

    def target(self, batch: Any) -> Tensor:
        """The selected target in dataset units, ``[n]`` or ``[n, T]``."""
        _, y = split_batch(batch)
        if self.target_index is None:
            return y
        if y.dim() != 2 or not 0 <= self.target_index < y.shape[1]:
            raise ValueError(
                f"RegressionTask: target_index={self.target_index} needs y of shape [n, T] "
                f"with T > {self.target_index}, got {tuple(y.shape)}"
            )
        return y[:, self.target_index]

    def _standardised(self, model: nn.Module, batch: Any) -> tuple[Tensor, Tensor]:
        inputs, _ = split_batch(batch)
        target = self.target(batch)
        pred = _match_prediction(model(inputs), target, "RegressionTask")
        if pred.dtype in (torch.float16, torch.bfloat16):  # autocast: compare in float32,
            pred = pred.float()  # not with the target rounded to half precision
        mean, std = self.mean.to(target.device), self.std.to(target.device)
        return pred, (target - mean) / std

    def loss(self, model: nn.Module, batch: Any) -> tuple[Tensor, int]:
        pred, target = self._standardised(model, batch)
        return F.mse_loss(pred, target.to(pred.dtype)), target.shape[0]

    def metrics(self, model: nn.Module, batch: Any) -> dict[str, Tensor]:
        pred, target = self._standardised(model, batch)
        error = pred - target.to(pred.dtype)
        std = self.std.to(error.device, error.dtype)
        return {
            "mae": _per_item_mean(error.abs() * std) * self.unit_scale,
            "loss": _per_item_mean(error.square()),
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "target_index": self.target_index,
            "mean": self.mean.clone(),
            "std": self.std.clone(),
            "unit_scale": self.unit_scale,
            "unit_name": self.unit_name,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("target_index") != self.target_index:
            raise ValueError(
                f"RegressionTask.load_state_dict: checkpoint fits target_index="
                f"{state.get('target_index')!r}, this task fits {self.target_index!r}"
            )
        self.mean = state["mean"].float().cpu()
        self.std = state["std"].float().cpu()
        self.unit_scale = float(state["unit_scale"])
        self.unit_name = state["unit_name"]
        self.units = {**self.units, "mae": self.unit_name}


class ClassificationTask(Task):
    """Cross-entropy on logits ``[n, C]`` against integer labels ``[n]``; reports accuracy."""

    monitor = "accuracy"
    mode = "max"
    units = {"accuracy": "fraction", "loss": "nats"}

    def _logits_labels(self, model: nn.Module, batch: Any) -> tuple[Tensor, Tensor]:
        inputs, y = split_batch(batch)
        logits = model(inputs)
        if logits.dim() != 2:
            raise ValueError(
                f"ClassificationTask: model output must be logits [n, C], got {tuple(logits.shape)}"
            )
        if y.numel() != logits.shape[0]:
            raise ValueError(
                f"ClassificationTask: {logits.shape[0]} rows of logits but {y.numel()} labels "
                f"(y of shape {tuple(y.shape)})"
            )
        return logits, y.reshape(-1).long()

    def loss(self, model: nn.Module, batch: Any) -> tuple[Tensor, int]:
        logits, labels = self._logits_labels(model, batch)
        return F.cross_entropy(logits, labels), labels.shape[0]

    def metrics(self, model: nn.Module, batch: Any) -> dict[str, Tensor]:
        logits, labels = self._logits_labels(model, batch)
        return {
            "accuracy": (logits.argmax(dim=1) == labels).to(logits.dtype),
            "loss": F.cross_entropy(logits, labels, reduction="none"),
        }
