"""Known conserved quantities of isolated molecular systems, as ``nn.Module``\\ s.

Every quantity maps one :class:`~symgraph.noether.frames.Frame` (``B`` molecules packed
as a PyG batch) to a tensor ``[B, k]``; ``k`` is the module's :attr:`dim`. A PyG
``Data``/``Batch`` with ``pos``, ``z`` and ``vel`` (and optionally ``mass``, ``batch``) is
accepted too.

How each quantity transforms under a Euclidean motion ``r -> R r + t`` (``v -> R v``):

==========================  ====  ==============================================
quantity                    k     transformation
==========================  ====  ==============================================
:class:`LinearMomentum`     3     ``P -> R P``
:class:`CentreOfMassVelocity` 3   ``V -> R V``
:class:`AngularMomentum`    3     ``L -> det(R) R L`` (pseudovector); about the
                                  origin also ``+ t x P`` under translations
:class:`KineticEnergy`      1     invariant
:class:`TotalEnergy`        1     invariant when the energy model is
==========================  ====  ==============================================

Units: Å, Å/fs, amu, eV (see :mod:`symgraph.data.frames`). Kinetic energies are
``½ m v²`` converted from amu·Å²/fs² to eV (factor :data:`EV_PER_AMU_A2_PER_FS2`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from symgraph.data.frames import EV_PER_AMU_A2_PER_FS2
from symgraph.noether.frames import Frame, as_frame

__all__ = [
    "EV_PER_AMU_A2_PER_FS2",
    "ConservedQuantity",
    "LinearMomentum",
    "CentreOfMassVelocity",
    "AngularMomentum",
    "KineticEnergy",
    "TotalEnergy",
    "CombinedQuantity",
    "segment_sum",
]


def segment_sum(values: Tensor, batch: Tensor, num_graphs: int) -> Tensor:
    """Sum ``values [N, ...]`` per graph of ``batch [N]`` -> ``[num_graphs, ...]``."""
    out = values.new_zeros((num_graphs, *values.shape[1:]))
    return out.index_add(0, batch, values)


class ConservedQuantity(nn.Module):
    """Base class: ``forward(frame) -> [num_graphs, dim]``."""

    #: Number of components ``k`` of the quantity.
    dim: int = 1
    #: Whether it reads the velocities (a trajectory without any is then refused rather than
    #: read as standing still).
    uses_velocities: bool = False
    #: Whether it is defined only without periodic boundaries (angular momentum: a periodic
    #: cell is not rotation invariant, and wrapped positions jump), so trajectories with
    #: ``cells`` are refused.
    needs_open_boundaries: bool = False

    def forward(self, frame: Frame) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, frame: object) -> Tensor:  # type: ignore[override]
        return super().__call__(as_frame(frame))


class LinearMomentum(ConservedQuantity):
    """Total linear momentum ``P = Σ_i m_i v_i`` per molecule -> ``[B, 3]`` (amu·Å/fs)."""

    dim = 3
    uses_velocities = True

    def forward(self, frame: Frame) -> Tensor:
        p = frame.mass[:, None] * frame.vel
        return segment_sum(p, frame.batch_index(), frame.num_graphs)


class CentreOfMassVelocity(ConservedQuantity):
    """Centre-of-mass velocity ``V = P / M`` per molecule -> ``[B, 3]`` (Å/fs)."""

    dim = 3
    uses_velocities = True

    def forward(self, frame: Frame) -> Tensor:
        batch, b = frame.batch_index(), frame.num_graphs
        p = segment_sum(frame.mass[:, None] * frame.vel, batch, b)
        return p / segment_sum(frame.mass, batch, b)[:, None]


def centre_of_mass(frame: Frame) -> Tensor:
    """Centre of mass of each molecule ``[B, 3]`` (Å)."""
    batch, b = frame.batch_index(), frame.num_graphs
    weighted = segment_sum(frame.mass[:, None] * frame.pos, batch, b)
    return weighted / segment_sum(frame.mass, batch, b)[:, None]


class AngularMomentum(ConservedQuantity):
    """Total angular momentum ``L = Σ_i m_i (r_i − c) × v_i`` -> ``[B, 3]`` (amu·Å²/fs).

    Args:
        about: ``"com"`` (default): about each molecule's centre of mass ``c``, which makes
            ``L`` invariant under translations (and Galilean boosts); ``"origin"``: about
            ``c = 0``, the textbook definition, which changes by ``t × P`` when the frame is
            translated by ``t``. Both are conserved for an isolated system.
    """

    dim = 3
    uses_velocities = True
    needs_open_boundaries = True

    def __init__(self, about: str = "com") -> None:
        super().__init__()
        if about not in ("com", "origin"):
            raise ValueError(f"about: expected 'com' or 'origin', got {about!r}")
        self.about = about

    def forward(self, frame: Frame) -> Tensor:
        r = frame.pos
        if self.about == "com":
            r = r - centre_of_mass(frame)[frame.batch_index()]
        l_atom = frame.mass[:, None] * torch.linalg.cross(r, frame.vel, dim=-1)
        return segment_sum(l_atom, frame.batch_index(), frame.num_graphs)

    def extra_repr(self) -> str:
        return f"about={self.about!r}"


class KineticEnergy(ConservedQuantity):
    """Kinetic energy ``Σ_i ½ m_i |v_i|²`` per molecule -> ``[B, 1]`` (eV by default).

    Args:
        scale: conversion of amu·Å²/fs² to the energy unit (eV by default).
    """

    dim = 1
    uses_velocities = True

    def __init__(self, scale: float = EV_PER_AMU_A2_PER_FS2) -> None:
        super().__init__()
        self.scale = float(scale)

    def forward(self, frame: Frame) -> Tensor:
        ke = 0.5 * self.scale * frame.mass * (frame.vel * frame.vel).sum(-1)
        return segment_sum(ke, frame.batch_index(), frame.num_graphs)[:, None]


EnergyModel = Callable[[Tensor, Tensor, Tensor], Tensor]


class TotalEnergy(ConservedQuantity):
    """Kinetic plus potential energy ``K + U`` per molecule -> ``[B, 1]`` (eV by default).

    Args:
        energy_model: potential energy ``U``, called PyG-style as
            ``energy_model(z [N], pos [N, 3], batch [N]) -> [B]`` or ``[B, 1]`` (PyG's
            ``SchNet``/``DimeNet`` signature; :mod:`symgraph.noether.potentials` has an
            ase-calculator wrapper and a Lennard-Jones pair potential). Its unit must match
            ``kinetic_scale``'s.
        kinetic_scale: conversion of amu·Å²/fs² to the energy unit (eV by default; use
            ``EV_PER_AMU_A2_PER_FS2 * 23.0605`` for kcal/mol).
    """

    dim = 1
    uses_velocities = True

    def __init__(self, energy_model: EnergyModel, kinetic_scale: float = EV_PER_AMU_A2_PER_FS2):
        super().__init__()
        if not callable(energy_model):
            raise TypeError(
                f"energy_model: expected a callable (z, pos, batch) -> [B], "
                f"got {type(energy_model).__name__}"
            )
        self.energy_model = energy_model
        self.kinetic = KineticEnergy(kinetic_scale)

    def forward(self, frame: Frame) -> Tensor:
        b = frame.num_graphs
        u = self.energy_model(frame.z, frame.pos, frame.batch_index())
        if not isinstance(u, Tensor) or u.shape not in ((b,), (b, 1)):
            got = list(u.shape) if isinstance(u, Tensor) else type(u).__name__
            raise ValueError(
                f"energy_model: expected a potential energy of shape [{b}] or [{b}, 1] "
                f"(one per molecule), got {got}"
            )
        return self.kinetic(frame) + u.reshape(b, 1).to(frame.pos.dtype)


class CombinedQuantity(ConservedQuantity):
    """Several quantities side by side: ``[B, Σ k_i]``, each optionally scaled.

    Momentum, angular momentum and energy have different units; ``weights`` puts them on
    comparable scales inside one Noether loss (each block is multiplied by its weight).

    Args:
        quantities: conserved quantities (modules with ``dim``).
        weights: one positive number per quantity (default 1).
    """

    def __init__(
        self, quantities: Sequence[ConservedQuantity], weights: Sequence[float] | None = None
    ) -> None:
        super().__init__()
        if len(quantities) == 0:
            raise ValueError("quantities: expected at least one conserved quantity, got none")
        weights = [1.0] * len(quantities) if weights is None else [float(w) for w in weights]
        if len(weights) != len(quantities):
            raise ValueError(
                f"weights: expected {len(quantities)} numbers (one per quantity), "
                f"got {len(weights)}"
            )
        for i, w in enumerate(weights):
            if not 0 < w < math.inf:
                raise ValueError(f"weights[{i}]: expected a positive finite number, got {w}")
        self.quantities = nn.ModuleList(quantities)
        self.weights = weights
        self.dim = sum(int(getattr(q, "dim", 1)) for q in quantities)
        self.uses_velocities = any(getattr(q, "uses_velocities", False) for q in quantities)
        self.needs_open_boundaries = any(
            getattr(q, "needs_open_boundaries", False) for q in quantities
        )

    def forward(self, frame: Frame) -> Tensor:
        parts = [w * q(frame) for q, w in zip(self.quantities, self.weights)]
        return torch.cat(parts, dim=-1)
