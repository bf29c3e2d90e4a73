"""Ready models for the jobs users come for: molecules, point clouds, dynamics."""

from symgraph.models.dynamics import EquivariantDynamics
from symgraph.models.fluids import FluidCNN, SteerableFluidNet, build_fluid_model, rollout
from symgraph.models.molecule import SteerableMoleculeNet
from symgraph.models.pointnet import SteerablePointNet

__all__ = ["EquivariantDynamics", "SteerableMoleculeNet", "SteerablePointNet"]
__all__ += ["FluidCNN", "SteerableFluidNet", "build_fluid_model", "rollout"]
