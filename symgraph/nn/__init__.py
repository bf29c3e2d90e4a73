"""Equivariant layers. Every layer takes and returns plain tensors ``[N, rep.dim]``."""

from symgraph.nn.activations import Gate, NormActivation, gate_rep, gated_blocks
from symgraph.nn.bilinear import EquivariantBilinear
from symgraph.nn.conv import ImplicitSteerableConv
from symgraph.nn.embedding import RadialEmbedding, cosine_cutoff, direction_embedding
from symgraph.nn.kernel import ImplicitKernel, default_kernel_hidden
from symgraph.nn.linear import EquivariantLinear, InvariantBias, invariant_subspace
from symgraph.nn.mlp import EquivariantMLP, EquivariantMLPLayer
from symgraph.nn.readout import EquivariantLayerNorm, InvariantReadout
from symgraph.nn.relaxed_group import GroupPooling, RelaxedGroupConv
from symgraph.nn.relaxed_implicit import RelaxedImplicitKernel, RelaxedImplicitSteerableConv
from symgraph.nn.relaxed_steerable import RelaxedSteerableConv, symmetry_breaking_basis
from symgraph.nn.relaxed_utils import (
    relaxation_penalty,
    relaxation_report,
    relaxed_modules,
    set_relaxation_trainable,
)
from symgraph.nn.symmetry_breaking import SymmetryBreakingInput

__all__ = [
    "RelaxedImplicitKernel",
    "RelaxedImplicitSteerableConv",
    "EquivariantLayerNorm",
    "InvariantReadout",
    "GroupPooling",
    "RelaxedGroupConv",
    "RelaxedSteerableConv",
    "relaxation_penalty",
    "relaxation_report",
    "relaxed_modules",
    "set_relaxation_trainable",
    "symmetry_breaking_basis",
    "SymmetryBreakingInput",
    "ImplicitKernel",
    "ImplicitSteerableConv",
    "InvariantBias",
    "RadialEmbedding",
    "cosine_cutoff",
    "direction_embedding",
    "default_kernel_hidden",
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
