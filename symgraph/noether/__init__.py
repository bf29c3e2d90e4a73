"""Noether networks: conserved quantities, the Noether loss, tailoring and meta-tailoring.

Conventions (shapes and units) are in :mod:`symgraph.data.frames`.
"""

from symgraph.noether.frames import Frame, Trajectory, as_frame, default_masses
from symgraph.noether.known import KNOWN_QUANTITIES, known_quantity, typical_scales
from symgraph.noether.learned import NeuralConservedQuantity
from symgraph.noether.loss import as_trajectory, noether_loss, noether_losses, quantity_series
from symgraph.noether.meta import MetaTailoring, trajectory_mse
from symgraph.noether.metrics import one_step_mse, position_rmse, quantity_drift, squared_errors
from symgraph.noether.potentials import AsePotential, LennardJones, PotentialsByMolecule
from symgraph.noether.quantities import (
    EV_PER_AMU_A2_PER_FS2,
    AngularMomentum,
    CentreOfMassVelocity,
    CombinedQuantity,
    ConservedQuantity,
    KineticEnergy,
    LinearMomentum,
    TotalEnergy,
)
from symgraph.noether.tailoring import (
    ScaleShift,
    TailorResult,
    default_step,
    rollout,
    select_parameters,
    tailor,
)

__all__ = [
    "EV_PER_AMU_A2_PER_FS2",
    "KNOWN_QUANTITIES",
    "AngularMomentum",
    "AsePotential",
    "CentreOfMassVelocity",
    "CombinedQuantity",
    "ConservedQuantity",
    "Frame",
    "KineticEnergy",
    "LennardJones",
    "LinearMomentum",
    "MetaTailoring",
    "NeuralConservedQuantity",
    "PotentialsByMolecule",
    "ScaleShift",
    "TailorResult",
    "TotalEnergy",
    "Trajectory",
    "as_frame",
    "as_trajectory",
    "default_masses",
    "default_step",
    "known_quantity",
    "noether_loss",
    "noether_losses",
    "one_step_mse",
    "position_rmse",
    "quantity_drift",
    "quantity_series",
    "rollout",
    "select_parameters",
    "squared_errors",
    "tailor",
    "trajectory_mse",
    "typical_scales",
]
