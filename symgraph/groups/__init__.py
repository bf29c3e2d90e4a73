"""Groups G ≤ O(3), their representations, and the equivariant-basis solver."""

from symgraph.groups.basis import (
    BilinearBasis,
    BlockPair,
    BlockTriple,
    EquivariantBasis,
    bilinear_basis,
    block_hom_basis,
    clear_cache,
    equivariant_basis,
)
from symgraph.groups.catalog import (
    ALIASES,
    GROUPS,
    O2,
    O3,
    SO2,
    SO3,
    C,
    D,
    FullOctahedral,
    Icosahedral,
    Inversion,
    Mirror,
    O2Conical,
    O2Dihedral,
    O2Full,
    Octahedral,
    SO2Inversion,
    Tetrahedral,
    Trivial,
    as_group,
    group_from_name,
)
from symgraph.groups.matrix_group import MatrixGroup, check_elements
from symgraph.groups.rep import IrrepBlock, ProductBlock, RegularBlock, Rep, as_rep

__all__ = [
    "MatrixGroup", "check_elements", "Rep", "as_rep", "IrrepBlock", "RegularBlock",
    "ProductBlock", "equivariant_basis", "bilinear_basis", "BilinearBasis", "BlockTriple",
    "EquivariantBasis", "BlockPair", "block_hom_basis", "clear_cache", "GROUPS", "ALIASES",
    "group_from_name", "as_group", "Trivial", "Inversion", "Mirror", "C", "D",
    "SO2", "O2", "O2Dihedral", "O2Conical", "SO2Inversion", "O2Full", "Tetrahedral", "Octahedral",
    "FullOctahedral", "Icosahedral", "SO3", "O3",
]  # fmt: skip
