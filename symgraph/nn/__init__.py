"""Equivariant layers. Every layer takes and returns plain tensors ``[N, rep.dim]``."""

from symgraph.nn.activations import Gate, NormActivation, gate_rep, gated_blocks
from symgraph.nn.bilinear import EquivariantBilinear
from symgraph.nn.linear import EquivariantLinear, invariant_subspace
from symgraph.nn.mlp import EquivariantMLP, EquivariantMLPLayer

__all__ = [
    "EquivariantBilinear",
    "EquivariantLinear",
    "EquivariantMLPLayer",
    "EquivariantMLP",
    "Gate",
    "NormActivation",
    "gate_rep",
    "gated_blocks",
    "invariant_subspace",
]
