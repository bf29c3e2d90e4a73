"""Known conserved quantities by name, each divided by its typical size.

Linear momentum (amu·Å/fs), angular momentum (amu·Å²/fs) and total energy (eV) have
different units and sizes; inside one Noether loss each block is divided by a typical
magnitude measured on training trajectories, so that they weigh alike:

==============  =====================================  =========================================
name            quantity                               typical size (mean over molecules, frames)
==============  =====================================  =========================================
``momentum``    :class:`LinearMomentum`                ``Σ_i m_i |v_i|``
``angular``     :class:`AngularMomentum` (about com)   ``Σ_i m_i |r_i − r̄| |v_i|`` (``r̄``: centroid)
``energy``      :class:`TotalEnergy` (needs ``U``)     kinetic energy ``Σ_i ½ m_i |v_i|²``
==============  =====================================  =========================================
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from symgraph.noether.frames import Trajectory
from symgraph.noether.quantities import (
    AngularMomentum,
    CombinedQuantity,
    ConservedQuantity,
    EnergyModel,
    KineticEnergy,
    LinearMomentum,
    TotalEnergy,
    segment_sum,
)

__all__ = ["KNOWN_QUANTITIES", "check_quantity_names", "known_quantity", "typical_scales"]

#: Names of the known conserved quantities, in the order they are combined.
KNOWN_QUANTITIES = ("momentum", "angular", "energy")


def check_quantity_names(names: Sequence[str], valid: Sequence[str] = KNOWN_QUANTITIES) -> None:
    """Raise ``ValueError`` naming the valid quantities unless every name is one of them (a
    single name may be given as a string)."""
    names = (names,) if isinstance(names, str) else names
    unknown = [n for n in names if n not in valid]
    if unknown or not names:
        got = ", ".join(repr(n) for n in unknown) if unknown else "no name"
        raise ValueError(f"quantities: expected names among {', '.join(valid)}, got {got}")


def typical_scales(trajectories: Sequence[Trajectory]) -> dict[str, float]:
    """Typical magnitude of each known quantity (see the module table) on ``trajectories``.

    Args:
        trajectories: trajectories with velocities (each ``[T, N, 3]``, any number of
            molecules per frame).

    Returns:
        ``{"momentum": ..., "angular": ..., "energy": ...}``, each averaged over all
        molecules of all frames (amu·Å/fs, amu·Å²/fs, eV).
    """
    if not trajectories:
        raise ValueError("trajectories: expected at least one Trajectory, got none")
    sums = dict.fromkeys(KNOWN_QUANTITIES, 0.0)
    count = 0
    for i, traj in enumerate(trajectories):
        if traj.velocities is None:
            raise ValueError(f"trajectories[{i}]: expected velocities, got None")
        frame = traj.flatten()
        batch, b = frame.batch_index(), frame.num_graphs
        speed = frame.vel.norm(dim=-1)
        centroid = segment_sum(frame.pos, batch, b) / segment_sum(
            torch.ones_like(speed), batch, b
        ).unsqueeze(-1)
        arm = (frame.pos - centroid[batch]).norm(dim=-1)
        sums["momentum"] += float(segment_sum(frame.mass * speed, batch, b).sum())
        sums["angular"] += float(segment_sum(frame.mass * arm * speed, batch, b).sum())
        sums["energy"] += float(KineticEnergy()(frame).sum())
        count += b
    return {name: total / count for name, total in sums.items()}


def known_quantity(
    names: Sequence[str], scales: dict[str, float], energy_model: EnergyModel | None = None
) -> CombinedQuantity:
    """The known quantities ``names`` side by side, each divided by ``scales[name]``.

    Args:
        names: some of :data:`KNOWN_QUANTITIES` (combined in that table's order), or one
            of them as a string.
        scales: positive typical sizes by name (:func:`typical_scales`).
        energy_model: potential energy ``U(z, pos, batch) -> [B]`` (eV), needed for
            ``"energy"``.

    Returns:
        a :class:`CombinedQuantity` ``frame -> [B, k]``.
    """
    names = (names,) if isinstance(names, str) else tuple(names)
    check_quantity_names(names)
    if "energy" in names and energy_model is None:
        raise ValueError(
            "energy_model: expected a potential energy model U(z, pos, batch) for 'energy', "
            "got None"
        )
    parts: list[ConservedQuantity] = []
    weights: list[float] = []
    for name in KNOWN_QUANTITIES:
        if name not in names:
            continue
        scale = scales.get(name)
        if scale is None or not 0 < scale < math.inf:
            raise ValueError(
                f"scales: expected a positive finite scale for {name!r}, got {scale!r}"
            )
        if name == "momentum":
            parts.append(LinearMomentum())
        elif name == "angular":
            parts.append(AngularMomentum())
        else:
            parts.append(TotalEnergy(energy_model))
        weights.append(1.0 / scale)
    return CombinedQuantity(parts, weights)
