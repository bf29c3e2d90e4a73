"""Datasets, generators and converters: point clouds, fluids (lattices), molecules."""

from symgraph.data import fluids
from symgraph.data.frames import Frame, Trajectory
from symgraph.data.md_generated import generated_trajectories
from symgraph.data.md_simulation import MMFFCalculator, energy_drift, generate_md_trajectory
from symgraph.data.modelnet40 import ModelNet40
from symgraph.data.molecules import (
    ATOM_FEATURE_DIM,
    BOND_FEATURE_DIM,
    from_ase,
    from_geometry,
    from_rdkit,
)
from symgraph.data.qm9 import QM9
from symgraph.data.shapes import ProceduralShapes
from symgraph.data.trajectories import MD17, load_deepmd, load_md17
from symgraph.data.transforms import (
    DeduplicatePoints,
    KNNGraph,
    NormalizeUnitSphere,
    NormalsAsFeatures,
    RadiusGraph,
    RandomGroupRotation,
    SamplePointsFixed,
)
from symgraph.data.windows import TrajectoryWindows, cut_segments, window_trajectory

__all__ = [
    "Frame",
    "MD17",
    "MMFFCalculator",
    "energy_drift",
    "fluids",
    "generate_md_trajectory",
    "load_deepmd",
    "load_md17",
    "ATOM_FEATURE_DIM",
    "BOND_FEATURE_DIM",
    "QM9",
    "from_ase",
    "from_geometry",
    "from_rdkit",
    "ModelNet40",
    "ProceduralShapes",
    "DeduplicatePoints",
    "KNNGraph",
    "NormalizeUnitSphere",
    "NormalsAsFeatures",
    "RadiusGraph",
    "RandomGroupRotation",
    "SamplePointsFixed",
    "Trajectory",
    "TrajectoryWindows",
    "cut_segments",
    "generated_trajectories",
    "window_trajectory",
]
