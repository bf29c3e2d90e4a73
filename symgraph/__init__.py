"""symgraph: symmetry-aware deep learning for graphs and point clouds.

>>> import symgraph as sg
>>> G = sg.groups.SO3()
>>> rep = sg.Rep("8x0e + 4x1o", G)
>>> lin = sg.nn.EquivariantLinear(rep, rep)
"""

from symgraph import graph, groups, nn, ops, testing
from symgraph.groups import Rep, equivariant_basis

__version__ = "0.1.0"

__all__ = ["Rep", "equivariant_basis", "graph", "groups", "nn", "ops", "testing", "__version__"]
