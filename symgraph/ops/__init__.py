"""Performance-critical kernels. Layers call these; the backend is chosen here."""

from symgraph.ops.contraction import BACKENDS, EdgeLayout, neighbour_outer_sum
from symgraph.ops.fused import fused_outer_sum, segment_reduce, triton_available
from symgraph.ops.implicit_conv import implicit_convolution

__all__ = [
    "BACKENDS",
    "EdgeLayout",
    "fused_outer_sum",
    "implicit_convolution",
    "neighbour_outer_sum",
    "segment_reduce",
    "triton_available",
]
