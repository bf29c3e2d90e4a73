"""The training loop shared by every job: :class:`Trainer`, :class:`TrainConfig`, :func:`evaluate`.

A run folder holds::

    config.json     every setting of the run (the trainer's and the caller's, e.g. CLI args)
    split.json      indices of the train / val / test items
    checkpoint.pt   the latest state (each epoch, and every ``checkpoint_every`` steps)
    best.pt         the state with the best validation ``task.monitor``
    metrics.csv     one row per epoch: epoch, step, train_loss, val_*, lr (the rate of the
                    epoch's last optimiser step), wall_time
    curve.png       learning curves (redrawn at most every 30 s, and at the end)
    test.json       test metrics of best.pt, in the task's units
    teleports.csv   one row per teleport (only with a ``TeleportCallback``, ``--teleport``)

Exact resume: the data order is a function of ``(seed, epoch)``, and a checkpoint holds the
step within the epoch, the random states and the running sums of the epoch's loss. A run
killed after step ``k`` and resumed from a checkpoint of step ``k`` ends with the same
parameters, bit for bit on CPU, as a run never interrupted (``num_workers=0``; with workers,
randomness inside the dataset's transforms is reseeded per epoch, not per step).
"""

from __future__ import annotations

import logging
import math
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from symgraph.checks import as_number, is_finite_real, is_int
from symgraph.files import read_json, remove_stale_temporaries, write_json
from symgraph.train.callbacks import Callback, ExtraLoss
from symgraph.train.checkpoint import (
    ResumeError,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from symgraph.train.distributed import DistContext, all_reduce_gradients, resolve_device
from symgraph.train.loader import make_loader, move_to
from symgraph.train.records import plot_learning_curves, write_metrics_csv
from symgraph.train.sampler import GlobalBatchSampler
from symgraph.train.split import dataset_indices
from symgraph.train.tasks import Task

__all__ = ["TrainConfig", "Trainer", "evaluate", "seed_everything", "RUN_FILES"]

logger = logging.getLogger("symgraph.train")

OptimizerFactory = Callable[[nn.Module], Optimizer]
SchedulerFactory = Callable[[Optimizer], LRScheduler]

_PLOT_INTERVAL_S = 30.0  # drawing curve.png takes about a second

#: File names inside a run folder.
RUN_FILES = {
    "config": "config.json",
    "split": "split.json",
    "checkpoint": "checkpoint.pt",
    "best": "best.pt",
    "metrics": "metrics.csv",
    "curve": "curve.png",
    "test": "test.json",
    "teleports": "teleports.csv",
}


#: Training precisions: the autocast dtype of each (``None``: plain float32).
PRECISIONS: dict[str, torch.dtype | None] = {
    "32": None,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}


@dataclass
class TrainConfig:
    """Settings of the loop (all of them go to ``config.json``).

    Attributes:
        epochs: epochs to train in total (a resumed run continues up to this number).
        batch_size: the global batch size (split across ranks under torchrun).
        lr, weight_decay: of the default optimiser (Adam) when none is given; finite,
            ``lr > 0`` and ``weight_decay >= 0``.
        seed: seeds the random states and the data order.
        checkpoint_every: also checkpoint every this many optimiser steps (0: only at the
            end of each epoch); a kill then loses at most that many steps.
        grad_clip: clip the global gradient norm to this value (``None``: no clipping).
        eval_batch_size: batch size of validation and test (``None``: ``batch_size``).
        drop_last: drop each epoch's last incomplete training batch.
        num_workers: data-loader worker processes.
        scheduler_interval: step the scheduler each ``"epoch"`` or each ``"step"``.
        progress: show a tqdm bar (only on rank 0 and only when stderr is a terminal).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ... (ignored when a ``DistContext`` is given).
        precision: ``"32"`` (float32), ``"bf16"`` or ``"fp16"``: the training forward and
            loss run under ``torch.autocast`` with that dtype (matrix products in half
            precision, reductions, norms and the equivariant weight assembly in float32, as
            autocast decides; parameters and optimiser state stay float32); ``"fp16"`` also
            scales the loss (``torch.amp.GradScaler``, kept in the checkpoint). Validation
            and test run in float32. ``symgraph.ops.precision`` measures the equivariance
            error per dtype.
    """

    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    seed: int = 0
    checkpoint_every: int = 0
    grad_clip: float | None = None
    eval_batch_size: int | None = None
    drop_last: bool = False
    num_workers: int = 0
    scheduler_interval: Literal["epoch", "step"] = "epoch"
    progress: bool = True
    device: str = "auto"
    precision: Literal["32", "bf16", "fp16"] = "32"

    def __post_init__(self) -> None:
        counts = {
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "eval_batch_size": self.eval_batch_size,
            "checkpoint_every": self.checkpoint_every,
            "num_workers": self.num_workers,
        }
        for name, value in counts.items():
            if value is not None and not is_int(value):
                raise TypeError(f"TrainConfig: {name} must be an int, got {value!r}")
        for name in (*counts, "lr", "weight_decay", "seed", "grad_clip"):  # for config.json
            setattr(self, name, as_number(getattr(self, name)))
        positive = {"epochs": self.epochs, "batch_size": self.batch_size}
        if self.eval_batch_size is not None:
            positive["eval_batch_size"] = self.eval_batch_size
        for name, value in positive.items():
            if value < 1:
                raise ValueError(f"TrainConfig: {name} must be >= 1, got {value}")
        if not is_int(self.seed) or self.seed < 0:
            raise ValueError(
                f"TrainConfig: seed must be a non-negative integer (it seeds numpy's "
                f"SeedSequence), got {self.seed!r}"
            )
        if self.checkpoint_every < 0:
            raise ValueError(
                f"TrainConfig: checkpoint_every must be >= 0 (0: each epoch only), "
                f"got {self.checkpoint_every}"
            )
        # Adam accepts a rate of inf, and the run turns into NaN one step later
        if not (is_finite_real(self.lr) and self.lr > 0):
            raise ValueError(f"TrainConfig: lr must be a finite number > 0, got {self.lr!r}")
        if not (is_finite_real(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(
                f"TrainConfig: weight_decay must be a finite number >= 0, got {self.weight_decay!r}"
            )
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"TrainConfig: grad_clip must be > 0 or None, got {self.grad_clip}")
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"TrainConfig: precision must be one of {tuple(PRECISIONS)}, got {self.precision!r}"
            )
        if self.scheduler_interval not in ("epoch", "step"):
            raise ValueError(
                f"TrainConfig: scheduler_interval must be 'epoch' or 'step', "
                f"got {self.scheduler_interval!r}"
            )


def seed_everything(seed: int) -> None:
    """Seed python's, numpy's and torch's global random generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def evaluate(
    model: nn.Module,
    dataset: Dataset,
    task: Task,
    *,
    batch_size: int = 256,
    dist: DistContext | None = None,
    num_workers: int = 0,
) -> dict[str, float]:
    """Mean of each of ``task.metrics`` over every item of ``dataset`` (over all ranks).

    The model must already be on ``dist.device`` (CPU by default). Sums are accumulated in
    float64, so the result barely depends on the batch size or the number of ranks.

    Raises:
        ValueError: empty dataset, or a metric that is not one value per item.
    """
    dist = dist or DistContext()
    if len(dataset) == 0:
        raise ValueError("evaluate: dataset is empty")
    sampler = GlobalBatchSampler(
        len(dataset), batch_size, shuffle=False, rank=dist.rank, world_size=dist.world_size
    )
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch in make_loader(dataset, sampler, num_workers):
                if batch is None:
                    continue
                for name, values in task.metrics(model, move_to(batch, dist.device)).items():
                    if values.dim() != 1:
                        raise ValueError(
                            f"evaluate: {type(task).__name__}.metrics()[{name!r}] must hold one "
                            f"value per item, shape [n]; got {tuple(values.shape)}"
                        )
                    sums[name] = sums.get(name, 0.0) + values.detach().double().sum()
                    counts[name] = counts.get(name, 0) + values.numel()
    finally:
        model.train(was_training)
    names = sorted({name for names in dist.all_gather_objects(sorted(sums)) for name in names})
    totals = torch.tensor(
        [float(sums.get(n, 0.0)) for n in names] + [float(counts.get(n, 0)) for n in names],
        dtype=torch.float64,
        device=dist.device,
    )
    totals = dist.all_reduce_sum(totals).cpu().tolist()
    return {name: totals[i] / totals[len(names) + i] for i, name in enumerate(names)}


class Trainer:
    """Train ``model`` on ``task``, writing a run folder; see the module docstring.

    Args:
        model: any ``nn.Module``; moved to the device.
        task: loss and metrics (``symgraph.train.tasks``).
        train, val, test: datasets (PyG or any torch ``Dataset``), all non-empty.
        run_dir: the run folder (created).
        config: loop settings.
        optimizer: ``model -> Optimizer`` (default Adam with ``config.lr``, ``weight_decay``;
            torch's fused implementation on CPU and CUDA).
        scheduler: ``optimizer -> scheduler`` or ``None``; ``ReduceLROnPlateau`` is stepped
            with the validation ``task.monitor``.
        callbacks: hooks, see ``callbacks.py``.
        extra_losses: ``(model, batch) -> scalar`` terms added to the task loss: a mean over
            the batch's items or a term of the parameters alone (under torchrun, each
            rank's objective is weighted by its share of the global batch's items, which is
            exact for both). ``train_loss`` in ``metrics.csv`` is the task loss alone, so
            that it compares with the validation loss.
        split: ``{"train": [...], "val": [...], "test": [...]}`` for ``split.json``
            (default: inferred from the datasets, see ``split.dataset_indices``).
        run_config: what else ``config.json`` should record (e.g. the CLI arguments).
        dist: the process group context (default: one process on ``config.device``).
        resume: continue from ``run_dir/checkpoint.pt`` if it exists. Without it, a run
            folder that already holds a checkpoint is refused.

    After :meth:`fit`, ``trainer.history`` holds the rows of ``metrics.csv`` and the model
    holds the *last* parameters (``best.pt`` the best ones).
    """

    def __init__(
        self,
        model: nn.Module,
        task: Task,
        train: Dataset,
        val: Dataset,
        test: Dataset,
        run_dir: str | Path,
        config: TrainConfig | None = None,
        *,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        callbacks: Sequence[Callback] = (),
        extra_losses: Sequence[ExtraLoss] = (),
        split: dict[str, Sequence[int]] | None = None,
        run_config: dict[str, Any] | None = None,
        dist: DistContext | None = None,
        resume: bool = False,
    ) -> None:
        self.config = config or TrainConfig()
        for name, dataset in (("train", train), ("val", val), ("test", test)):
            if len(dataset) == 0:
                raise ValueError(f"Trainer: the {name} dataset is empty")
        self.dist = dist or DistContext(device=resolve_device(self.config.device))
        self.model = model.to(self.dist.device)
        self.task = task
        self.datasets = {"train": train, "val": val, "test": test}
        self.run_dir = Path(run_dir)
        if optimizer is None:
            cfg = self.config
            fused = self.dist.device.type in ("cpu", "cuda")  # one kernel for all parameters
            optimizer = lambda m: torch.optim.Adam(  # noqa: E731
                m.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused
            )
        self.optimizer = optimizer(self.model)
        # the run's own rates per group: a resumed run may set others (--lr, --weight-decay)
        self._base_rates = _group_rates(self.optimizer)
        self.scheduler = scheduler(self.optimizer) if scheduler is not None else None
        if (
            isinstance(self.scheduler, ReduceLROnPlateau)
            and self.config.scheduler_interval != "epoch"
        ):
            raise ValueError(
                "Trainer: ReduceLROnPlateau needs the validation metric, so "
                f"scheduler_interval must be 'epoch', got {self.config.scheduler_interval!r}"
            )
        self.scaler = torch.amp.GradScaler(
            self.dist.device.type, enabled=self.config.precision == "fp16"
        )
        self.callbacks = list(callbacks)
        self.extra_losses = list(extra_losses)
        self.split = {
            name: [int(i) for i in (split[name] if split else dataset_indices(ds))]
            for name, ds in self.datasets.items()
        }
        self.run_config = dict(run_config or {})
        self.resume = resume
        #: user state saved in every checkpoint (tensors, numbers, strings, lists, dicts).
        self.extra_state: dict[str, Any] = {}
        # progress of the run; all of it is in the checkpoint
        self.epoch = 0
        self.step_in_epoch = 0
        self.global_step = 0
        self.best_metric: float | None = None
        self.best_epoch: int | None = None
        self.history: list[dict[str, Any]] = []
        self._loss_sum = 0.0
        self._loss_count = 0
        self._step_lr: float | None = None  # the rate of the latest optimiser step
        self._elapsed_before = 0.0
        self._started = time.perf_counter()
        self._last_plot = self._started

    # ------------------------------------------------------------------ paths
    def path(self, key: str) -> Path:
        """Path of a run file, ``key`` one of :data:`RUN_FILES`."""
        return self.run_dir / RUN_FILES[key]

    # ------------------------------------------------------------------ public
    def fit(self) -> dict[str, float]:
        """Train up to ``config.epochs`` epochs, then evaluate ``best.pt`` on the test set.

        Returns:
            the test metrics (also written to ``test.json``).
        """
        self._check_run_dir()
        if self.resume and self.path("checkpoint").is_file():
            try:
                state = load_checkpoint(self.path("checkpoint"), self.dist.device)
            except ValueError as err:  # unreadable or not a checkpoint: cannot resume
                raise ResumeError(
                    f"--resume: {err}; delete {self.path('checkpoint')} to restart from "
                    "scratch, or start a new run (--out)"
                ) from err
            self._restore(state)
        else:
            seed_everything(self.config.seed + self.dist.rank)
            self.dist.broadcast_module(self.model)
        self._write_run_files()  # only once the checkpoint (if any) fits this run
        self._started = self._last_plot = time.perf_counter()
        sampler = GlobalBatchSampler(
            len(self.datasets["train"]),
            self.config.batch_size,
            shuffle=True,
            seed=self.config.seed,
            drop_last=self.config.drop_last,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
        )
        if sampler.num_batches == 0:
            raise ValueError(
                f"Trainer: drop_last with batch_size={self.config.batch_size} leaves no batch "
                f"of the {len(self.datasets['train'])} training items"
            )
        while self.epoch < self.config.epochs:
            self._train_epoch(sampler)
            self._end_epoch()
        if self.dist.is_main:
            self._write_records(plot=True)
        return self._test()

    # ------------------------------------------------------------------ setup
    def _check_run_dir(self) -> None:
        """Check the folder (every rank, so that all raise alike)."""
        if not self.resume and self.path("checkpoint").is_file():
            raise FileExistsError(
                f"Trainer: {self.run_dir} already holds a checkpoint; pass resume=True "
                "(--resume) to continue it, or choose another run folder (--out)"
            )
        if self.resume and self.path("split").is_file():
            if read_json(self.path("split")) != self.split:
                raise ResumeError(
                    f"Trainer: the datasets' split differs from {self.path('split')}; "
                    "resuming would train on other data (same job, seed and --subset?)"
                )

    def _write_run_files(self) -> None:
        """Write ``split.json`` and ``config.json`` on rank 0 (after a resumed checkpoint was
        found to fit: a refused resume leaves the run folder as it was)."""
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(self.run_dir)
            write_json(self.path("split"), self.split, indent=None)
            write_json(
                self.path("config"),
                {
                    **self.run_config,
                    "train": asdict(self.config),
                    "world_size": self.dist.world_size,
                    "device": str(self.dist.device),
                    "model": type(self.model).__name__,
                    "num_parameters": sum(p.numel() for p in self.model.parameters()),
                    "task": type(self.task).__name__,
                },
            )
        self.dist.barrier()

    def _restore(self, state: dict[str, Any]) -> None:
        if state["seed"] != self.config.seed:
            raise ResumeError(
                f"Trainer: checkpoint was trained with seed {state['seed']}, resuming with "
                f"seed {self.config.seed} would change the data order; use --seed {state['seed']}"
            )
        for key in ("batch_size", "drop_last"):  # they decide the rest of the epoch's batches
            saved = state.get(key, getattr(self.config, key))
            if state["step_in_epoch"] and saved != getattr(self.config, key):
                raise ResumeError(
                    f"Trainer: checkpoint stopped mid-epoch with {key} {saved}, got {key} "
                    f"{getattr(self.config, key)}"
                )
        if len(state["callbacks"]) != len(self.callbacks):
            raise ResumeError(
                f"Trainer: checkpoint holds state of {len(state['callbacks'])} callbacks, "
                f"this trainer has {len(self.callbacks)}"
            )
        saved_kind = state.get("scheduler_type", _scheduler_type(self.scheduler))
        if saved_kind != _scheduler_type(self.scheduler):
            raise ResumeError(
                f"Trainer: the checkpoint was trained with scheduler {saved_kind}, this run has "
                f"{_scheduler_type(self.scheduler)}; a schedule's state does not carry over to "
                "another kind: resume with the run's own (--scheduler) or start a new run"
            )
        saved_span = (state["scheduler"] or {}).get("T_max")
        span = getattr(self.scheduler, "T_max", None)
        if saved_span is not None and span is not None and saved_span != span:
            raise ResumeError(
                f"Trainer: the checkpoint's cosine schedule spans {saved_span} epochs, this "
                f"run's {span}; a cosine run cannot be extended (its rate has decayed to the "
                f"end): resume with epochs={saved_span} (--epochs) or start a new run"
            )
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError) as err:
            raise ResumeError(
                f"Trainer: the checkpoint's model or optimizer does not fit this run's (other "
                f"model settings?): {err}"
            ) from err
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self._apply_new_rates(state.get("base_rates"))
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.task.load_state_dict(state["task"])
        for callback, cb_state in zip(self.callbacks, state["callbacks"]):
            callback.load_state_dict(cb_state)
        self.extra_state = state["extra"]
        self.epoch = state["epoch"]
        self.step_in_epoch = state["step_in_epoch"]
        self.global_step = state["global_step"]
        self.best_metric = state["best_metric"]
        self.best_epoch = state["best_epoch"]
        self.history = state["history"]
        self._loss_sum = state["loss_sum"]
        self._loss_count = state["loss_count"]
        self._step_lr = state.get("step_lr")
        self._elapsed_before = state["elapsed"]
        if len(state["rng"]) == self.dist.world_size:
            restore_rng_state(state["rng"][self.dist.rank])
        else:
            logger.warning(
                "checkpoint was written by %d processes, resuming with %d: random states "
                "are reseeded (the data order is unchanged)",
                len(state["rng"]),
                self.dist.world_size,
            )
            seed_everything(self.config.seed + self.dist.rank + self.global_step)
        if not self.dist.is_main:
            return
        logger.info(
            "resumed %s at epoch %d, step %d of the epoch (global step %d)",
            self.path("checkpoint"),
            self.epoch + 1,
            self.step_in_epoch,
            self.global_step,
        )

    # ------------------------------------------------------------------ training
    def _show_progress(self) -> bool:
        return self.config.progress and self.dist.is_main and sys.stderr.isatty()

    def _train_epoch(self, sampler: GlobalBatchSampler) -> None:
        sampler.set_epoch(self.epoch, start_batch=self.step_in_epoch)
        loader = make_loader(self.datasets["train"], sampler, self.config.num_workers)
        last_val = self.history[-1].get(f"val_{self.task.monitor}") if self.history else None
        bar = tqdm(
            total=sampler.num_batches,
            initial=self.step_in_epoch,
            desc=f"epoch {self.epoch + 1}/{self.config.epochs}",
            disable=not self._show_progress(),
            leave=False,
            dynamic_ncols=True,
        )
        try:
            for batch in loader:
                self.model.train()
                if batch is not None:
                    batch = move_to(batch, self.dist.device)
                for callback in self.callbacks:
                    callback.on_batch_start(self, self.global_step + 1, batch)
                self._train_step(batch)
                self.step_in_epoch += 1
                self.global_step += 1
                if self.scheduler is not None and self.config.scheduler_interval == "step":
                    self.scheduler.step()
                for callback in self.callbacks:
                    callback.on_step_end(self, self.global_step)
                every = self.config.checkpoint_every
                if every and self.global_step % every == 0:
                    self._save(improved=False)
                postfix = {"loss": f"{self._loss_sum / max(self._loss_count, 1):.4g}"}
                if last_val is not None:
                    postfix[f"val_{self.task.monitor}"] = f"{last_val:.4g}"
                bar.set_postfix(postfix, refresh=False)
                bar.update(1)
        finally:
            bar.close()

    def batch_losses(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, int, torch.Tensor]:
        """``(task loss, n, extra)`` of ``model`` on one batch (shard) already on the device.

        ``task loss`` is the task's mean over the batch's ``n`` items, ``extra`` the sum of
        the extra losses (a zero scalar when there are none).
        """
        loss, n = self.task.loss(model, batch)
        extras = [fn(model, batch) for fn in self.extra_losses]
        extra = sum(extras, torch.zeros((), device=loss.device, dtype=loss.dtype))
        return loss, n, extra

    def autocast(self) -> torch.autocast:
        """The autocast context of training (disabled for ``precision="32"``)."""
        dtype = PRECISIONS[self.config.precision]
        return torch.autocast(self.dist.device.type, dtype=dtype, enabled=dtype is not None)

    def training_loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        """The objective one process minimises on ``batch``: task loss plus extra losses.

        ``model`` is usually ``self.model``; it is an argument so that functional
        evaluations (e.g. teleportation, which swaps the parameters) can call it.
        """
        loss, _, extra = self.batch_losses(model, batch)
        return loss + extra if self.extra_losses else loss

    def _train_step(self, batch: Any) -> None:
        """One optimiser step on this rank's shard (``None``: empty shard) of a global batch.

        ``batch`` is already on the device and the model in training mode.
        """
        self.optimizer.zero_grad(set_to_none=True)
        stats = torch.zeros(3, dtype=torch.float64, device=self.dist.device)
        if batch is not None:
            with self.autocast():
                loss, n, extra = self.batch_losses(self.model, batch)
            stats[0], stats[1], stats[2] = loss.detach() * n, n, extra.detach()
        # global item count, to weight the local objective by this rank's share of the items
        sum_loss, count, sum_extra = self.dist.all_reduce_sum(stats).tolist()
        if not (math.isfinite(sum_loss) and math.isfinite(sum_extra)) or count == 0:
            raise FloatingPointError(
                f"Trainer: training loss is {sum_loss / max(count, 1)} (extra losses "
                f"{sum_extra}, {count:.0f} items) at epoch {self.epoch + 1}, step "
                f"{self.step_in_epoch + 1}"
            )
        if batch is not None:
            objective = loss + extra if self.extra_losses else loss
            if self.dist.is_distributed:  # the shares n / count sum to 1 over the ranks: a
                # mean over items and a term of the parameters alone both come out exact
                objective = objective * (n / count)
            self.scaler.scale(objective).backward()
        else:  # an empty shard: the loss scaler still needs its scale for step() below
            self.scaler.scale(torch.zeros((), device=self.dist.device))
        all_reduce_gradients(self.model.parameters(), self.dist)
        # gradients are identical on all ranks here, so every rank's scaler decides alike
        if self.config.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self._step_lr = float(self.optimizer.param_groups[0]["lr"])
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self._loss_sum += sum_loss
        self._loss_count += int(count)

    def _end_epoch(self) -> None:
        val = evaluate(
            self.model,
            self.datasets["val"],
            self.task,
            batch_size=self.config.eval_batch_size or self.config.batch_size,
            dist=self.dist,
            num_workers=self.config.num_workers,
        )
        monitor = self.task.monitor
        if monitor not in val:
            raise ValueError(
                f"Trainer: task.monitor={monitor!r} is not among the metrics {sorted(val)}"
            )
        value = val[monitor]
        if not math.isfinite(value):
            raise FloatingPointError(
                f"Trainer: validation {monitor} is {value} after epoch {self.epoch + 1}"
            )
        # what the epoch trained with (a per-step scheduler has already moved the rate on)
        lr = self._step_lr if self._step_lr is not None else self.optimizer.param_groups[0]["lr"]
        if self.scheduler is not None and self.config.scheduler_interval == "epoch":
            if isinstance(self.scheduler, ReduceLROnPlateau):
                self.scheduler.step(value)
            else:
                self.scheduler.step()
        improved = self.best_metric is None or (
            value < self.best_metric if self.task.mode == "min" else value > self.best_metric
        )
        if improved:
            self.best_metric, self.best_epoch = value, self.epoch + 1
        self.history.append(
            {
                "epoch": self.epoch + 1,
                "step": self.global_step,
                "train_loss": self._loss_sum / self._loss_count,
                **{f"val_{name}": v for name, v in val.items()},
                "lr": lr,
                "wall_time": self._elapsed(),
            }
        )
        for callback in self.callbacks:
            callback.on_epoch_end(self, self.epoch)
        self.epoch += 1
        self.step_in_epoch = 0
        self._loss_sum, self._loss_count = 0.0, 0
        self._save(improved=improved)
        if self.dist.is_main:
            self._write_records(plot=time.perf_counter() - self._last_plot > _PLOT_INTERVAL_S)
            unit = self.task.units.get(monitor, "")
            logger.info(
                "epoch %d/%d  train_loss %.5g  val_%s %.5g%s%s  lr %.3g",
                self.epoch,
                self.config.epochs,
                self.history[-1]["train_loss"],
                monitor,
                value,
                f" {unit}" if unit else "",
                "  (best)" if improved else "",
                lr,
            )

    # ------------------------------------------------------------------ files
    def _elapsed(self) -> float:
        return self._elapsed_before + time.perf_counter() - self._started

    def _apply_new_rates(self, saved: list[dict[str, float]] | None) -> None:
        """Give the restored optimiser this run's base rates where they differ from the
        checkpoint's (``optimizer.load_state_dict`` brings back the saved ones). Weight decay
        is set; a learning rate is scaled by ``new / saved`` together with the scheduler's
        base rates, so the schedule continues where it was, at the new scale (exact for
        rates proportional to the base: cosine to 0, plateau, none)."""
        if saved is None or saved == self._base_rates:
            return
        if len(saved) != len(self._base_rates):
            raise ResumeError(
                f"Trainer: the checkpoint's optimizer has {len(saved)} parameter groups, this "
                f"run's {len(self._base_rates)}"
            )
        base_lrs = getattr(self.scheduler, "base_lrs", None)
        for i, (group, old, new) in enumerate(
            zip(self.optimizer.param_groups, saved, self._base_rates)
        ):
            if "weight_decay" in new:
                group["weight_decay"] = new["weight_decay"]
            if "lr" not in new or new["lr"] == old.get("lr"):
                continue
            ratio = new["lr"] / old["lr"] if old.get("lr") else None
            for key in ("lr", "initial_lr"):
                if key in group:
                    group[key] = group[key] * ratio if ratio is not None else new["lr"]
            if base_lrs is not None:
                base_lrs[i] = new["lr"]
        if self.scheduler is not None and hasattr(self.scheduler, "_last_lr"):
            self.scheduler._last_lr = [group["lr"] for group in self.optimizer.param_groups]
        logger.info("resumed with new optimiser rates %s (the run had %s)", self._base_rates, saved)

    def _state(self, rng: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "base_rates": self._base_rates,
            "scheduler_type": _scheduler_type(self.scheduler),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step,
            "seed": self.config.seed,
            "batch_size": self.config.batch_size,
            "drop_last": self.config.drop_last,
            "rng": rng,
            "best_metric": self.best_metric,
            "best_epoch": self.best_epoch,
            "history": self.history,
            "loss_sum": self._loss_sum,
            "loss_count": self._loss_count,
            "step_lr": self._step_lr,
            "elapsed": self._elapsed(),
            "task": self.task.state_dict(),
            "callbacks": [callback.state_dict() for callback in self.callbacks],
            "extra": self.extra_state,
        }

    def _save(self, improved: bool) -> None:
        """Checkpoint (and ``best.pt`` first when ``improved``); every rank must call it."""
        rng = self.dist.all_gather_objects(capture_rng_state())
        if self.dist.is_main:
            state = self._state(rng)
            if improved:
                save_checkpoint(self.path("best"), state)
            save_checkpoint(self.path("checkpoint"), state)
        self.dist.barrier()

    def _write_records(self, plot: bool) -> None:
        """Rewrite ``metrics.csv``, and ``curve.png`` when ``plot``."""
        if not self.history:
            return
        write_metrics_csv(self.history, self.path("metrics"))
        if plot:
            monitor = self.task.monitor
            plot_learning_curves(
                self.history, self.path("curve"), monitor, self.task.units.get(monitor, "")
            )
            self._last_plot = time.perf_counter()

    def _test(self) -> dict[str, float]:
        """Evaluate ``best.pt`` on the test set; the model keeps its last parameters."""
        best = load_checkpoint(self.path("best"), self.dist.device)
        last = {key: value.clone() for key, value in self.model.state_dict().items()}
        self.model.load_state_dict(best["model"])
        try:
            metrics = evaluate(
                self.model,
                self.datasets["test"],
                self.task,
                batch_size=self.config.eval_batch_size or self.config.batch_size,
                dist=self.dist,
                num_workers=self.config.num_workers,
            )
        finally:
            self.model.load_state_dict(last)
        if self.dist.is_main:
            write_json(
                self.path("test"),
                {
                    "metrics": metrics,
                    "units": {name: self.task.units.get(name, "") for name in metrics},
                    "checkpoint": RUN_FILES["best"],
                    "best_epoch": best["best_epoch"],
                },
            )
            logger.info(
                "test (best epoch %s): %s",
                best["best_epoch"],
                ", ".join(
                    f"{k} {v:.5g} {self.task.units.get(k, '')}".rstrip() for k, v in metrics.items()
                ),
            )
        return metrics


def _group_rates(optimizer: torch.optim.Optimizer) -> list[dict[str, float]]:
    """``[{"lr": .., "weight_decay": ..}]`` per parameter group (the keys a group has)."""
    return [
        {key: float(group[key]) for key in ("lr", "weight_decay") if key in group}
        for group in optimizer.param_groups
    ]


def _scheduler_type(scheduler: object | None) -> str | None:
    return None if scheduler is None else type(scheduler).__name__
