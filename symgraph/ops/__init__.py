"""Performance-critical kernels. Layers call these; the backend is chosen here."""

from symgraph.ops.contraction import BACKENDS, EdgeLayout, neighbour_outer_sum
from symgraph.ops.fused import fused_outer_sum, segment_reduce, triton_available
from symgraph.ops.implicit_conv import default_block_edges, implicit_convolution
from symgraph.ops.kernel_conv import fused_implicit_convolution
from symgraph.ops.kernel_mlp import KernelLayer
from symgraph.ops.lattice_conv import (
    lattice_convolution,
    lattice_degree,
    lattice_edge_count,
    lattice_weight,
    stencil_relative_positions,
)

__all__ = [
    "BACKENDS",
    "default_block_edges",
    "EdgeLayout",
    "fused_implicit_convolution",
    "fused_outer_sum",
    "implicit_convolution",
    "KernelLayer",
    "lattice_convolution",
    "lattice_degree",
    "lattice_edge_count",
    "lattice_weight",
    "stencil_relative_positions",
    "neighbour_outer_sum",
    "segment_reduce",
    "triton_available",
]
