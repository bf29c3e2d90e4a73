"""`PlumeConfig`: parameters of one 2D smoke-plume simulation.

Geometry. The domain is the periodic square ``[-L/2, L/2)^2`` (``L = length``) sampled at
``size x size`` cell centres ``(index - (size - 1) / 2) * L / size`` -- the positions of
:func:`symgraph.lattice.cell_positions` with spacing ``L / size``. Fields are arrays
``[..., H, W]`` with the row index along ``y`` and the column index along ``x``; velocity
channels are ``(u, v)`` = the ``x`` and ``y`` components.

Forcing and symmetry. A Gaussian source of smoke sits at ``inflow_position``. The smoke is
buoyant: the force density is ``density * F`` with the constant vector

    F = buoyancy * [(1 - s) * e(phi + buoyancy_angle) + s * e(gravity_angle)]

where ``phi`` is the polar angle of the inflow about the domain centre, ``e(a) =
(cos a, sin a)`` and ``s = symmetry_breaking`` in ``[0, 1]``. The first term turns with the
inflow (``buoyancy_angle = pi``: the plume rises towards the centre), so for ``s = 0`` rotating
the whole setup by a multiple of 90 degrees about the centre rotates the solution (the
spectral solver is exactly C4-equivariant up to rounding). The second term is a fixed,
global direction ("gravity") that does not turn with the setup: for ``s > 0`` the force
depends on the inflow position in a way no rotation explains, and rotating the initial
state and inflow no longer rotates the dynamics. ``s = 1`` is the usual always-upwards
plume. ``walls > 0`` adds a solid frame of that many cells around the border (volume
penalisation): it breaks translation symmetry and keeps the 90-degree rotations.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from symgraph.checks import as_number, is_finite_real, is_int, is_real

__all__ = ["PlumeConfig"]


def _positive(name: str, value: float) -> None:
    if not (is_finite_real(value) and value > 0):
        raise ValueError(f"{name}: expected a positive finite number, got {value!r}")


def _non_negative(name: str, value: float) -> None:
    if not (is_finite_real(value) and value >= 0):
        raise ValueError(f"{name}: expected a non-negative finite number, got {value!r}")


@dataclass(frozen=True)
class PlumeConfig:
    """One smoke-plume simulation (see the module docstring for the physics).

    Attributes:
        size: grid cells per side ``N`` (even, >= 8).
        length: side ``L`` of the periodic square domain.
        dt: solver time step.
        substeps: solver steps per returned frame.
        viscosity: kinematic viscosity ``nu``.
        diffusivity: smoke diffusivity ``kappa``.
        drag: linear damping rate of the vorticity (keeps a periodic run bounded).
        density_decay: linear decay rate of the smoke (likewise).
        buoyancy: force per unit density ``|F|`` (before the breaking blend).
        inflow_position: ``(x, y)`` of the source relative to the domain centre, in the
            closed square ``[-L/2, L/2]^2``: the edges ``x = -L/2`` and ``x = L/2`` hold the
            same source (periodic domain) but different polar angles, hence forces.
        inflow_radius: standard deviation of the Gaussian source.
        inflow_rate: peak smoke added per unit time at the source centre.
        buoyancy_angle: symmetric force direction relative to the inflow's polar angle.
        gravity_angle: the fixed, symmetry-breaking force direction (``pi / 2``: +y).
        symmetry_breaking: ``s`` in ``[0, 1]``; 0 = rotation-equivariant dynamics.
        walls: thickness in cells of a solid frame at the border (0 = fully periodic).
        initial_vorticity: RMS of the smooth random initial vorticity (0 = fluid at rest).
        warmup_steps: solver steps run before the first returned frame.
    """

    size: int = 64
    length: float = 1.0
    dt: float = 0.01
    substeps: int = 2
    viscosity: float = 1e-3
    diffusivity: float = 1e-3
    drag: float = 0.1
    density_decay: float = 0.1
    buoyancy: float = 2.5
    inflow_position: tuple[float, float] = (0.0, -0.3)
    inflow_radius: float = 0.04
    inflow_rate: float = 2.0
    buoyancy_angle: float = math.pi
    gravity_angle: float = math.pi / 2
    symmetry_breaking: float = 0.0
    walls: int = 0
    initial_vorticity: float = 0.0
    warmup_steps: int = 0

    def __post_init__(self) -> None:
        n = self.size
        if not is_int(n) or n < 8 or n % 2:
            raise ValueError(f"size: expected an even integer >= 8, got {n!r}")
        for name in ("length", "dt", "inflow_radius"):
            _positive(name, getattr(self, name))
        for name in (
            "viscosity",
            "diffusivity",
            "drag",
            "density_decay",
            "buoyancy",
            "inflow_rate",
            "initial_vorticity",
        ):
            _non_negative(name, getattr(self, name))
        for name in ("buoyancy_angle", "gravity_angle"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name}: expected a finite angle, got {getattr(self, name)!r}")
        for name in ("substeps", "warmup_steps", "walls"):
            value = getattr(self, name)
            low = 1 if name == "substeps" else 0
            if not is_int(value) or value < low:
                raise ValueError(f"{name}: expected an integer >= {low}, got {value!r}")
        if 2 * self.walls >= n:
            raise ValueError(f"walls: expected fewer than {n // 2} cells, got {self.walls}")
        s = self.symmetry_breaking
        if not (is_real(s) and 0 <= s <= 1):
            raise ValueError(f"symmetry_breaking: expected a number in [0, 1], got {s!r}")
        for field in dataclasses.fields(self):  # numpy scalars: Python numbers, JSON-safe
            object.__setattr__(self, field.name, as_number(getattr(self, field.name)))
        try:
            pos = tuple(self.inflow_position)
            finite = len(pos) == 2 and all(math.isfinite(float(p)) for p in pos)
        except (TypeError, ValueError):  # not a sequence, or not of numbers
            pos, finite = self.inflow_position, False
        if not finite:
            raise ValueError(f"inflow_position: expected finite (x, y), got {pos!r}")
        half = self.length / 2
        if not all(-half <= float(p) <= half for p in pos):
            raise ValueError(
                f"inflow_position: expected (x, y) in [-{half}, {half}] (domain centred at 0), "
                f"got {pos!r}"
            )
        # + 0.0: no signed zeros (atan2 would turn (-0.0, 0.0) by a half turn)
        object.__setattr__(self, "inflow_position", (float(pos[0]) + 0.0, float(pos[1]) + 0.0))
        # explicit RK3 on the linear terms: keep (nu k_max^2 + drag) dt inside its region
        k_max = 2 * math.pi / self.length * (n / 3) * math.sqrt(2)
        stiff = max(self.viscosity, self.diffusivity) * k_max**2 + max(
            self.drag, self.density_decay
        )
        if stiff * self.dt > 2.0:
            raise ValueError(
                f"dt: diffusion is unstable for dt={self.dt} (needs (nu k_max^2 + drag) dt <= 2, "
                f"got {stiff * self.dt:.3g}); reduce dt or the viscosity/diffusivity"
            )

    @property
    def spacing(self) -> float:
        """Cell size ``L / N``."""
        return self.length / self.size

    @property
    def inflow_angle(self) -> float:
        """Polar angle ``phi`` of the inflow about the domain centre (0 at the centre)."""
        x, y = self.inflow_position
        return math.atan2(y, x)

    def force(self) -> tuple[float, float]:
        """The buoyant force per unit density ``F = (F_x, F_y)``."""
        s = float(self.symmetry_breaking)
        a = self.inflow_angle + self.buoyancy_angle
        g = self.gravity_angle
        fx = (1 - s) * math.cos(a) + s * math.cos(g)
        fy = (1 - s) * math.sin(a) + s * math.sin(g)
        return (self.buoyancy * fx, self.buoyancy * fy)

    def rotated(self, k: int = 1) -> PlumeConfig:
        """The same setup turned by ``k * 90`` degrees about the centre (inflow moved).

        The inflow turns exactly, ``(x, y) -> (-y, x)`` per quarter turn, and stays in the
        closed square ``[-L/2, L/2]^2``: an inflow on the edge stays on the edge it is
        turned onto, it is not wrapped to the opposite one. The source itself would be the
        same there (the domain is periodic), but its polar angle, which sets the symmetric
        part of the force, would change by a half turn. For ``symmetry_breaking = 0``
        simulating the rotated config therefore gives the rotated fields
        (:func:`symgraph.lattice.rotate_field` of the velocity ``"1x1o"`` and the density)
        from the rotated initial state, for every inflow but the centre, whose force
        direction (``phi = 0``) does not turn. The global ``gravity_angle`` does not turn
        either: it is the part that breaks symmetry.

        Args:
            k: quarter turns, counterclockwise (negative: clockwise).
        """
        if not is_int(k):
            raise TypeError(f"k: expected an integer number of quarter turns, got {k!r}")
        x, y = self.inflow_position
        for _ in range(int(k) % 4):
            x, y = -y, x
        return dataclasses.replace(self, inflow_position=(x, y))

    def replace(self, **changes: object) -> PlumeConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)
