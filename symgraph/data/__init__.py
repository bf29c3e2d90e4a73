"""Datasets, generators and converters: point clouds, fluids (lattices), molecules."""

from symgraph.data.modelnet40 import ModelNet40
from symgraph.data.shapes import ProceduralShapes
from symgraph.data.transforms import (
    DeduplicatePoints,
    KNNGraph,
    NormalizeUnitSphere,
    NormalsAsFeatures,
    RadiusGraph,
    RandomGroupRotation,
    SamplePointsFixed,
)

__all__ = [
    "ModelNet40",
    "ProceduralShapes",
    "DeduplicatePoints",
    "KNNGraph",
    "NormalizeUnitSphere",
    "NormalsAsFeatures",
    "RadiusGraph",
    "RandomGroupRotation",
    "SamplePointsFixed",
]
