"""Ready models for the jobs users come for: molecules, point clouds, dynamics."""

from symgraph.models.dynamics import EquivariantDynamics
from symgraph.models.fluids import FluidCNN, SteerableFluidNet, build_fluid_model, rollout
from symgraph.models.molecule import SteerableMoleculeNet
from symgraph.models.pointnet import SteerablePointNet
from symgraph.models.steerable_dynamics import SteerableDynamics

__all__ = ["EquivariantDynamics", "SteerableDynamics", "SteerableMoleculeNet", "SteerablePointNet"]
__all__ += ["FluidCNN", "SteerableFluidNet", "build_fluid_model", "rollout"]
