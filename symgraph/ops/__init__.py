"""Performance-critical kernels. Layers call these; the backend is chosen here."""

from symgraph.ops.contraction import BACKENDS, EdgeLayout, neighbour_outer_sum
from symgraph.ops.implicit_conv import implicit_convolution

__all__ = ["BACKENDS", "EdgeLayout", "implicit_convolution", "neighbour_outer_sum"]
