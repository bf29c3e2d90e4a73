"""Per-molecule errors of predicted trajectories: rollout RMSE, one-step MSE, drift.

Every function takes :class:`~symgraph.noether.frames.Trajectory` objects of ``B``
molecules packed as a batch (``positions [T, N, 3]``, ``batch [N]``) and returns one value
per molecule (and per frame for the series), so that a batch of held-out trajectories is
scored in one call. Units follow :mod:`symgraph.noether.frames` (Å, Å/fs, eV).

A prediction and its truth must have the same shape and, when both carry a ``dt`` (a
rollout carries its model's), the same time step; otherwise ``ValueError``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from symgraph.data.frames import same_time_step
from symgraph.noether.frames import Trajectory
from symgraph.noether.loss import quantity_series
from symgraph.noether.tailoring import rollout

__all__ = [
    "atom_counts",
    "check_time_steps",
    "one_step_mse",
    "position_rmse",
    "quantity_drift",
    "squared_errors",
]


def atom_counts(trajectory: Trajectory) -> Tensor:
    """Atoms of each molecule ``[B]`` (float, on the trajectory's device)."""
    batch = trajectory.frame(0).batch_index()
    counts = torch.bincount(batch, minlength=trajectory.num_graphs)
    return counts.to(trajectory.positions.dtype)


def _per_molecule(squared: Tensor, trajectory: Trajectory) -> Tensor:
    """``[T, N]`` squared errors summed over xyz -> ``[T, B]`` means over atoms and xyz."""
    batch = trajectory.frame(0).batch_index()
    out = squared.new_zeros(squared.shape[0], trajectory.num_graphs)
    return out.index_add(1, batch, squared) / (3.0 * atom_counts(trajectory))


def _check_pair(prediction: Trajectory, truth: Trajectory, velocities: bool) -> None:
    if prediction.positions.shape != truth.positions.shape:
        raise ValueError(
            f"truth: expected positions of shape {list(prediction.positions.shape)} (as the "
            f"prediction), got {list(truth.positions.shape)}"
        )
    check_time_steps(prediction, truth)
    if velocities and (prediction.velocities is None or truth.velocities is None):
        raise ValueError("truth: expected velocities in the prediction and the truth, got None")


def check_time_steps(prediction: Trajectory, truth: Trajectory, name: str = "truth") -> None:
    """Refuse, naming ``name``, a ``truth`` whose ``dt`` differs from the prediction's
    (to rounding) when both carry one: frame ``t`` of one is another time of the other."""
    a, b = prediction.dt, truth.dt
    if a is not None and b is not None and not same_time_step(a, b):
        raise ValueError(
            f"{name}: expected frames dt={a:g} fs apart (as the prediction, e.g. the model's "
            f"own time step), got dt={b:g} fs; frame t of one would be compared with another "
            f"time of the other (resample the {name}, e.g. {name}[::k], or use a model of "
            "its dt)"
        )


def position_rmse(prediction: Trajectory, truth: Trajectory) -> Tensor:
    """RMSE of the positions of each molecule at each frame, ``[T, B]`` (Å).

    The RMS is over the molecule's atoms and the three coordinates; frame 0 is usually the
    given initial state (error 0).
    """
    _check_pair(prediction, truth, velocities=False)
    diff = prediction.positions - truth.positions
    return _per_molecule((diff * diff).sum(-1), truth).sqrt()


def squared_errors(prediction: Trajectory, truth: Trajectory) -> tuple[Tensor, Tensor]:
    """Mean squared position and velocity errors of each molecule at each frame.

    Returns:
        ``(positions [T, B] in Å², velocities [T, B] in (Å/fs)²)``, means over the
        molecule's atoms and the three coordinates.
    """
    _check_pair(prediction, truth, velocities=True)
    dp = prediction.positions - truth.positions
    dv = prediction.velocities - truth.velocities
    return _per_molecule((dp * dp).sum(-1), truth), _per_molecule((dv * dv).sum(-1), truth)


def one_step_mse(
    model: nn.Module, truth: Trajectory, params: dict[str, Tensor] | None = None
) -> tuple[Tensor, Tensor]:
    """Mean squared errors of one-step predictions from every true frame.

    ``model`` predicts frame ``t + 1`` from the true frame ``t`` for ``t = 0 .. T − 2``
    (all frames in one batched call, see :func:`~symgraph.noether.tailoring.rollout`);
    ``params`` optionally replaces some of its parameters (e.g. tailored ones).

    Returns:
        ``(positions [B] in Å², velocities [B] in (Å/fs)²)``, means over frames, atoms and
        coordinates of each molecule.
    """
    if len(truth) < 2 or truth.velocities is None:
        raise ValueError(
            f"truth: expected at least 2 frames with velocities, got {len(truth)} frames"
            + ("" if truth.velocities is not None else " without velocities")
        )
    inputs, targets = truth[:-1], truth[1:]
    step = rollout(model, inputs.flatten(), 1, params)
    t, n = targets.positions.shape[:2]
    predicted = Trajectory(
        step.positions[1].reshape(t, n, 3),
        step.velocities[1].reshape(t, n, 3),
        truth.z,
        truth.masses,
        truth.batch,
        dt=step.dt,
    )
    pos, vel = squared_errors(predicted, targets)
    return pos.mean(0), vel.mean(0)


def quantity_drift(
    g: Callable[[Any], Tensor], trajectory: Trajectory, per_atom: bool = False
) -> Tensor:
    """``|g(x_t) − g(x_0)|`` of each molecule at each frame, ``[T, B]``.

    Args:
        g: a conserved quantity (``[T * B]`` or ``[T * B, k]`` on the flattened frames; the
            norm is taken over ``k``).
        per_atom: divide by the molecule's number of atoms (e.g. eV/atom for energies).
    """
    with torch.no_grad():
        values = quantity_series(g, trajectory)  # [T, B, k]
    drift = (values - values[:1]).norm(dim=-1)
    return drift / atom_counts(trajectory) if per_atom else drift
