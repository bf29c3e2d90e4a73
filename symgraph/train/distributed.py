"""Data-parallel training across processes started by ``torchrun``.

``torchrun --nproc_per_node=W -m symgraph train JOB ...`` sets ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK``; :func:`init_distributed` reads them and joins the process group (gloo on
CPU, nccl on CUDA, one GPU per local rank). Without them it returns a single-process
context and nothing else changes.

How the gradient of ``W`` processes equals the gradient of one process on the same global
batch: every rank gets a shard of each global batch (``sampler.py``), computes its task loss
(a mean over its ``n_r`` items), weights it by ``n_r / N`` where ``N = Σ_r n_r`` is the global
count, and :func:`all_reduce_gradients` *sums* the gradients over ranks. The result is the
gradient of the mean over the global batch, whatever the shard sizes. The reduction is done
explicitly rather than by wrapping the model in ``DistributedDataParallel``: it accepts any
module and any loss (several forward passes, unused parameters, second-order gradients as
in Noether tailoring) and keeps a parameter that no rank used without a gradient, exactly
as in single-process training. Layers that mix items of a batch (batch normalisation)
still see per-rank statistics.

Only rank 0 writes files; the others wait at :meth:`DistContext.barrier`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "DistContext",
    "resolve_device",
    "init_distributed",
    "shutdown_distributed",
    "all_reduce_gradients",
]


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: ``rank`` of ``world_size``, and its ``device``."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes files and shows progress."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        """Wait for every rank (no-op in a single process)."""
        if self.is_distributed:
            dist.barrier()

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` over ranks in place and return it."""
        if self.is_distributed:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def all_gather_objects(self, obj: Any) -> list[Any]:
        """``[obj of rank 0, obj of rank 1, ...]`` on every rank (picklable objects)."""
        if not self.is_distributed:
            return [obj]
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, obj)
        return gathered

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (a picklable object; the others pass anything)."""
        if not self.is_distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def broadcast_tensors(self, tensors: Iterable[torch.Tensor]) -> None:
        """Overwrite each tensor in place with rank 0's (same order and shapes on every rank)."""
        if not self.is_distributed:
            return
        with torch.no_grad():
            for tensor in tensors:
                dist.broadcast(tensor.data, src=0)

    def broadcast_module(self, module: nn.Module) -> None:
        """Copy rank 0's parameters and buffers to every rank."""
        self.broadcast_tensors(list(module.parameters()) + list(module.buffers()))


def resolve_device(device: str | torch.device, local_rank: int = 0) -> torch.device:
    """``"auto"`` → CUDA when available else CPU; a bare ``"cuda"`` → ``cuda:local_rank``."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    resolved = torch.device(device)
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"device={device!r} was requested but CUDA is not available")
        if resolved.index is None:
            resolved = torch.device("cuda", local_rank)
    return resolved


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError as err:
        raise ValueError(f"environment variable {name} must be an integer, got {value!r}") from err


def init_distributed(device: str | torch.device = "auto") -> DistContext:
    """Join the process group described by torchrun's variables, or run alone without them.

    Args:
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or a ``torch.device``; under torchrun a bare
            ``"cuda"`` becomes ``cuda:LOCAL_RANK``.

    Returns:
        the context; backend gloo on CPU, nccl on CUDA.
    """
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    resolved = resolve_device(device, local_rank)
    if world_size == 1:
        return DistContext(0, 1, 0, resolved)
    if resolved.type == "cuda":
        torch.cuda.set_device(resolved)
    if not dist.is_initialized():
        backend = "nccl" if resolved.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    return DistContext(rank, world_size, local_rank, resolved)


def shutdown_distributed(ctx: DistContext) -> None:
    """Leave the process group joined by :func:`init_distributed` (no-op when alone)."""
    if ctx.is_distributed and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_gradients(parameters: Iterable[nn.Parameter], ctx: DistContext) -> None:
    """Sum ``.grad`` over ranks, one flat buffer per dtype.

    A parameter whose gradient is ``None`` on every rank keeps ``None`` (the optimiser then
    skips it, as it would in one process); if some rank has a gradient, ranks without one
    contribute zeros.
    """
    if not ctx.is_distributed:
        return
    params = [p for p in parameters if p.requires_grad]
    present = torch.tensor([p.grad is not None for p in params], dtype=torch.float32)
    present = ctx.all_reduce_sum(present.to(ctx.device)).cpu()
    used = [p for p, flag in zip(params, present.tolist()) if flag > 0]
    by_dtype: dict[torch.dtype, list[nn.Parameter]] = {}
    for p in used:
        by_dtype.setdefault(p.dtype, []).append(p)
    for group in by_dtype.values():
        flat = torch.cat(
            [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in group]
        )
        ctx.all_reduce_sum(flat)
        offset = 0
        for p in group:
            numel = p.numel()
            summed = flat[offset : offset + numel].view_as(p)
            if p.grad is None:
                p.grad = summed.clone()
            else:
                p.grad.copy_(summed)
            offset += numel
