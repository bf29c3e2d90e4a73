"""The Noether conservation loss ``Σ_t |g(x_0) − g(x_t)|²`` (Alet et al., NeurIPS 2021).

A trajectory is one of

- a :class:`~symgraph.noether.frames.Trajectory` of molecules (``positions [T, N, 3]``
  ...), or a sequence of :class:`~symgraph.noether.frames.Frame` / PyG ``Data`` objects
  with the same atoms. ``g`` is then called once on all frames packed as a batch of
  ``T * B`` molecules and must return ``[T * B]`` (a scalar per molecule and frame) or
  ``[T * B, k]``;
- a tensor ``[T, ..., d]`` of plain states (the last axis holds the state, e.g. ``(q, p)``
  of a pendulum). ``g`` is called on the whole tensor and must return ``[T, ...]``
  (scalar) or ``[T, ..., k]`` (vector per state).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from symgraph.noether.frames import Trajectory

__all__ = ["as_trajectory", "quantity_series", "noether_loss", "noether_losses"]

State = Any


def as_trajectory(trajectory: object, name: str = "trajectory") -> Trajectory | Tensor:
    """A :class:`Trajectory` or a ``[T, ..., d]`` tensor from any accepted trajectory form."""
    if isinstance(trajectory, (Trajectory, Tensor)):
        if isinstance(trajectory, Tensor) and trajectory.dim() < 2:
            raise ValueError(
                f"{name}: expected a tensor of states [T, ..., d] (T >= 1 frames), "
                f"got shape {list(trajectory.shape)}"
            )
        return trajectory
    if isinstance(trajectory, Sequence) and not isinstance(trajectory, (str, bytes)):
        if len(trajectory) and all(isinstance(x, Tensor) for x in trajectory):
            shapes = {tuple(x.shape) for x in trajectory}
            if len(shapes) != 1:
                raise ValueError(f"{name}: expected states of one shape, got shapes {shapes}")
            return torch.stack(list(trajectory))
        return Trajectory.from_frames(trajectory)
    raise TypeError(
        f"{name}: expected a Trajectory, a sequence of frames or a tensor [T, ..., d], "
        f"got {type(trajectory).__name__}"
    )


def quantity_series(g: Callable[[Any], Tensor], trajectory: object) -> Tensor:
    """Values of ``g`` along a trajectory: ``[T, B, k]``.

    For a molecular trajectory ``B`` is the number of molecules per frame; for a tensor
    trajectory ``[T, *S, d]`` the batch axes ``S`` are flattened into ``B``.

    Raises:
        ValueError: when ``g`` does not return a scalar or a vector per frame, or when ``g``
            reads velocities (``g.uses_velocities``) and the trajectory has none, or when
            ``g`` needs open boundaries (``g.needs_open_boundaries``: angular momentum) and
            the trajectory has periodic ``cells``.
    """
    traj = as_trajectory(trajectory)
    if isinstance(traj, Trajectory):
        if traj.velocities is None and getattr(g, "uses_velocities", False):
            raise ValueError(
                f"trajectory: {type(g).__name__} needs velocities, got a trajectory without "
                "any (estimate them with symgraph.data.trajectories.finite_difference_velocities)"
            )
        if traj.cells is not None and getattr(g, "needs_open_boundaries", False):
            raise ValueError(
                f"trajectory: {type(g).__name__} is not conserved (nor defined for wrapped "
                "positions) under periodic boundaries, got a trajectory with cells; use "
                "LinearMomentum or TotalEnergy for periodic systems"
            )
        t, b = len(traj), traj.num_graphs
        out = g(traj.flatten())
        _check_output(out, (t * b,), "one per molecule and frame: T * B = " + f"{t}*{b}")
        return out.reshape(t, b, -1)
    lead = tuple(traj.shape[:-1])
    out = g(traj)
    _check_output(out, lead, "one per state: the state tensor's shape without its last axis")
    return out.reshape(lead[0], -1, 1 if out.dim() == len(lead) else out.shape[-1])


def _check_output(out: object, lead: tuple[int, ...], what: str) -> None:
    if not isinstance(out, Tensor):
        raise TypeError(f"g: expected a tensor, got {type(out).__name__}")
    shape = tuple(out.shape)
    ok = shape == lead or (len(shape) == len(lead) + 1 and shape[:-1] == lead)
    if not ok:
        raise ValueError(
            f"g: expected a scalar or a vector per frame, i.e. shape {list(lead)} or "
            f"{list(lead) + ['k']} ({what}), got shape {list(shape)}"
        )
    if not out.is_floating_point():
        raise TypeError(f"g: expected floating-point values, got dtype {out.dtype}")


def noether_losses(
    g: Callable[[Any], Tensor],
    trajectory: object,
    *,
    reference: str = "initial",
    reduction: str = "sum",
) -> Tensor:
    """Noether loss of each molecule/sample of a trajectory: ``[B]``.

    ``L_b = Σ_{t=1}^{T-1} |g(x_ref) − g(x_t)|²`` (see :func:`noether_loss` for the
    arguments); :func:`noether_loss` is the mean of these.
    """
    if reference not in ("initial", "previous"):
        raise ValueError(f"reference: expected 'initial' or 'previous', got {reference!r}")
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction: expected 'sum' or 'mean', got {reduction!r}")
    values = quantity_series(g, trajectory)  # [T, B, k]
    if values.shape[0] < 2:
        return values.sum((0, 2)) * 0.0
    if reference == "initial":
        diff = values[1:] - values[:1]
    else:
        diff = values[1:] - values[:-1]
    per_step = (diff * diff).sum(-1)  # [T-1, B]
    return per_step.sum(0) if reduction == "sum" else per_step.mean(0)


def noether_loss(
    g: Callable[[Any], Tensor],
    trajectory: object,
    *,
    reference: str = "initial",
    reduction: str = "sum",
) -> Tensor:
    """Noether conservation loss of a trajectory, averaged over its molecules/samples.

    ``L = mean_b Σ_{t=1}^{T-1} |g(x_ref) − g(x_t)|²`` with frame 0 as ``x_0``.

    Args:
        g: conserved quantity (a :class:`ConservedQuantity`, a
            :class:`NeuralConservedQuantity`, or for tensor trajectories any callable
            ``[T, ..., d] -> [T, ...]`` or ``[T, ..., k]``).
        trajectory: a :class:`Trajectory`, a sequence of frames, or a tensor
            ``[T, ..., d]`` (see the module docstring). Frame 0 is the reference ``x_0``.
        reference: ``"initial"`` compares every frame with frame 0 (the paper's loss);
            ``"previous"`` compares consecutive frames (its approximation).
        reduction: ``"sum"`` over time steps (the paper) or ``"mean"`` over them.

    Returns:
        A scalar tensor (0 when the trajectory has a single frame).
    """
    return noether_losses(g, trajectory, reference=reference, reduction=reduction).mean()
