"""Lattices as graphs: regular 2D/3D grids, their stencil graphs and fields on them.

- :class:`Lattice` -- shape, spacing, stencil radius and shape, boundaries.
- :func:`stencil_offsets`, :func:`kernel_index`, :func:`stencil_to_kernel` -- stencil
  offsets in row-major ``conv2d``/``conv3d`` kernel order.
- :func:`lattice_graph`, :func:`grid_to_graph` -- one node per cell, edges neighbour ->
  centre, minimum-image offsets on periodic axes.
- :func:`field_to_nodes`, :func:`nodes_to_field`, :class:`FieldLayout` -- batched fields
  ``[B, C, H, W]`` <-> node features, vectors as e3nn ``1o`` features.
- :func:`rotate_field`, :func:`reflect_field` -- the square grid's planar symmetries.
"""

from symgraph.lattice.fields import (
    FieldLayout,
    field_to_nodes,
    nodes_to_field,
    nodes_to_vector_field,
    vector_field_to_nodes,
)
from symgraph.lattice.graph import (
    LatticeGraph,
    cell_index,
    cell_positions,
    grid_to_graph,
    lattice_graph,
)
from symgraph.lattice.spec import Lattice
from symgraph.lattice.stencil import (
    kernel_index,
    kernel_to_stencil,
    stencil_offsets,
    stencil_to_kernel,
)
from symgraph.lattice.transforms import reflect_field, rotate_field, rotation_matrix_90

__all__ = [
    "Lattice",
    "LatticeGraph",
    "FieldLayout",
    "stencil_offsets",
    "kernel_index",
    "stencil_to_kernel",
    "kernel_to_stencil",
    "lattice_graph",
    "grid_to_graph",
    "cell_index",
    "cell_positions",
    "field_to_nodes",
    "nodes_to_field",
    "vector_field_to_nodes",
    "nodes_to_vector_field",
    "rotate_field",
    "reflect_field",
    "rotation_matrix_90",
]
