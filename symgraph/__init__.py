"""symgraph: symmetry-aware deep learning for graphs and point clouds.

>>> import symgraph as sg
>>> G = sg.groups.SO3()
>>> rep = sg.Rep("8x0e + 4x1o", G)
>>> lin = sg.nn.EquivariantLinear(rep, rep)

The heavier subpackages (``data``, ``lattice``, ``models``, ``noether``, ``teleport``,
``train``) are imported on first use, so ``sg.noether.tailor`` works without importing
``symgraph.noether`` first.
"""

import importlib
from types import ModuleType

from symgraph import graph, groups, nn, ops, testing
from symgraph.groups import Rep, equivariant_basis

__version__ = "0.1.0"

_LAZY_SUBPACKAGES = ("data", "lattice", "models", "noether", "teleport", "train")

__all__ = [
    "Rep", "equivariant_basis", "graph", "groups", "nn", "ops", "testing", "__version__",
    *_LAZY_SUBPACKAGES,
]  # fmt: skip


def __getattr__(name: str) -> ModuleType:
    if name in _LAZY_SUBPACKAGES:
        return importlib.import_module(f"symgraph.{name}")
    raise AttributeError(f"module 'symgraph' has no attribute {name!r}")
