"""Windows of consecutive frames of molecular trajectories, as PyG graphs.

A dynamics model learns ``frame t -> frame t + 1`` and is scored on rollouts; both need a
frame together with its next ``L`` frames. :class:`TrajectoryWindows` serves those windows
as PyG ``Data`` (so the trainer batches molecules of different sizes), and
:func:`window_trajectory` turns a batch of windows back into a
:class:`~symgraph.data.frames.Trajectory` of ``L + 1`` frames.

Item fields (``n`` atoms, ``L`` = ``length``)::

    pos [n, 3], vel [n, 3]            frame ``start`` (Å, Å/fs)
    z [n], mass [n]                   atomic numbers, masses (amu)
    future_pos [n, L, 3]              frames ``start + 1 .. start + L``
    future_vel [n, L, 3]
    trajectory [1], start [1], tag [1]   trajectory id, first frame, the dataset's tag
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import Dataset
from torch_geometric.data import Data

from symgraph.checks import is_int
from symgraph.data.frames import Trajectory, same_time_step

__all__ = ["TrajectoryWindows", "cut_segments", "window_trajectory"]


class TrajectoryWindows(Dataset):
    """Windows of ``length + 1`` consecutive frames, starting every ``step`` frames.

    Args:
        trajectories: single-molecule trajectories with velocities.
        length: future frames per window ``L`` (1: one-step pairs).
        step: frames between the starts of consecutive windows of one trajectory
            (1: every start; ``length``: non-overlapping windows).
        ids: an id per trajectory, stored in each item's ``trajectory`` (default
            ``0, 1, ...``).
        tag: an integer stored in every item's ``tag`` (e.g. to mark an evaluation group).

    Attributes:
        dt: the time between consecutive frames (fs) shared by every trajectory, or
            ``None`` when they give none.

    Raises:
        ValueError: a trajectory without velocities, with several molecules, shorter
            than ``length + 1`` frames, or with another ``dt`` than ``trajectories[0]``
            (items do not carry their time step, so one step must mean one ``dt``).
    """

    def __init__(
        self,
        trajectories: Sequence[Trajectory],
        length: int,
        step: int = 1,
        ids: Sequence[int] | None = None,
        tag: int = 0,
    ) -> None:
        if not is_int(length) or length < 1:
            raise ValueError(f"length: expected a positive int, got {length!r}")
        if not is_int(step) or step < 1:
            raise ValueError(f"step: expected a positive int, got {step!r}")
        length, step = int(length), int(step)
        ids = list(range(len(trajectories))) if ids is None else [int(i) for i in ids]
        if len(ids) != len(trajectories):
            raise ValueError(
                f"ids: expected one id per trajectory ({len(trajectories)}), got {len(ids)}"
            )
        for i, traj in enumerate(trajectories):
            if traj.velocities is None:
                raise ValueError(
                    f"trajectories[{i}]: expected velocities, got None (estimate them with "
                    "symgraph.data.trajectories.finite_difference_velocities)"
                )
            if traj.num_graphs != 1:
                raise ValueError(f"trajectories[{i}]: expected one molecule, got {traj.num_graphs}")
            if len(traj) < length + 1:
                raise ValueError(
                    f"trajectories[{i}]: expected at least length + 1 = {length + 1} frames, "
                    f"got {len(traj)}"
                )
            if not same_time_step(traj.dt, trajectories[0].dt):
                raise ValueError(
                    f"trajectories[{i}]: expected dt={trajectories[0].dt} fs as "
                    f"trajectories[0], got dt={traj.dt} (windows of different time steps "
                    "cannot share one dataset; resample them, e.g. traj[::k], first)"
                )
        self.trajectories = list(trajectories)
        self.dt = self.trajectories[0].dt if self.trajectories else None
        self.length, self.step, self.ids, self.tag = length, step, ids, int(tag)
        self.index = [
            (i, start)
            for i, traj in enumerate(self.trajectories)
            for start in range(0, len(traj) - length, step)
        ]

    def __len__(self) -> int:
        return len(self.index)

    def split_ids(self, items: Sequence[int] | None = None) -> list[int]:
        """The ids of the trajectories that ``items`` (window indices, default all) come
        from, in order of first appearance: what ``split.json`` records for these windows."""
        chosen = range(len(self)) if items is None else items
        return list(dict.fromkeys(self.ids[self.index[int(k)][0]] for k in chosen))

    def __getitem__(self, index: int) -> Data:
        i, start = self.index[index]
        traj = self.trajectories[i]
        future = slice(start + 1, start + 1 + self.length)
        return Data(
            z=traj.z,
            pos=traj.positions[start],
            vel=traj.velocities[start],
            mass=traj.masses,
            future_pos=traj.positions[future].transpose(0, 1),
            future_vel=traj.velocities[future].transpose(0, 1),
            trajectory=torch.tensor([self.ids[i]]),
            start=torch.tensor([start]),
            tag=torch.tensor([self.tag]),
        )


def window_trajectory(batch: Data) -> Trajectory:
    """The ``L + 1`` frames of a (batch of) window item(s) as one :class:`Trajectory`.

    Args:
        batch: an item of :class:`TrajectoryWindows` or a PyG ``Batch`` of them.

    Returns:
        ``positions [L + 1, N, 3]``, ``velocities [L + 1, N, 3]``, ``z``, ``masses`` and
        ``batch`` (``None`` for a single item).
    """
    for key in ("pos", "vel", "z", "mass", "future_pos", "future_vel"):
        if getattr(batch, key, None) is None:
            raise ValueError(f"batch: expected a window item with `{key}`, found none")
    positions = torch.cat([batch.pos[:, None], batch.future_pos], dim=1).transpose(0, 1)
    velocities = torch.cat([batch.vel[:, None], batch.future_vel], dim=1).transpose(0, 1)
    return Trajectory(
        positions=positions,
        velocities=velocities,
        z=batch.z,
        masses=batch.mass,
        batch=getattr(batch, "batch", None),
    )


def cut_segments(trajectory: Trajectory, frames: int) -> list[Trajectory]:
    """Consecutive non-overlapping pieces of ``frames`` frames (the remainder is dropped).

    E.g. one long MD17 trajectory cut into pieces that can be held out as whole
    trajectories.
    """
    if not is_int(frames) or frames < 2:
        raise ValueError(f"frames: expected an int >= 2, got {frames!r}")
    frames = int(frames)
    count = len(trajectory) // frames
    if count == 0:
        raise ValueError(
            f"frames: expected at most {len(trajectory)} frames per piece (the trajectory's "
            f"length), got {frames}"
        )
    return [trajectory[k * frames : (k + 1) * frames] for k in range(count)]
