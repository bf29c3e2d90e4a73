"""Representations of a group G ≤ O(3): O(3) irreps restricted to G, regular reps, sums.

A :class:`Rep` is an ordered direct sum ``⊕ mul_i · block_i`` laid out like e3nn's
``Irreps``: block by block, and inside a block copy by copy (``[mul, dim]`` flattened).
Blocks are

- :class:`IrrepBlock` — an O(3) irrep ``(l, parity)`` in e3nn's real basis (``1o`` is the
  Cartesian vector ``(x, y, z)``), restricted to G;
- :class:`RegularBlock` — the regular representation of a finite G (permutation matrices);
- :class:`ProductBlock` — the tensor (Kronecker) product of two representations.

All blocks are orthogonal representations, so the dual of a representation is itself.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable

import torch
from e3nn import o3
from torch import Tensor

from symgraph.checks import check_finite, is_int
from symgraph.groups.matrix_group import MatrixGroup, check_elements
from symgraph.groups.wigner import wigner_D, wigner_dD

__all__ = ["Rep", "IrrepBlock", "RegularBlock", "ProductBlock", "as_rep"]


class IrrepBlock:
    """The O(3) irrep ``(l, parity)`` (e3nn's ``"{l}e"``/``"{l}o"``), dimension ``2l + 1``."""

    def __init__(self, l: int, parity: int) -> None:
        if not is_int(l) or l < 0:
            raise ValueError(f"l: expected a degree l >= 0, got {l!r}")
        if parity not in (1, -1) or isinstance(parity, bool):
            raise ValueError(f"parity: expected 1 (even) or -1 (odd), got {parity!r}")
        self.l, self.parity = int(l), int(parity)
        self.dim = 2 * self.l + 1
        self.key = ("irrep", self.l, self.parity)

    @property
    def is_invariant_scalar(self) -> bool:
        """True for ``0e``: invariant under every subgroup of O(3)."""
        return self.l == 0 and self.parity == 1

    @property
    def is_odd_scalar(self) -> bool:
        """True for ``0o``: the sign of the determinant."""
        return self.l == 0 and self.parity == -1

    def rho(self, g: Tensor) -> Tensor:
        return wigner_D(self.l, self.parity, g)

    def drho(self, a: Tensor) -> Tensor:
        return wigner_dD(self.l, a)

    def __repr__(self) -> str:
        return f"{self.l}{'e' if self.parity == 1 else 'o'}"


class RegularBlock:
    """The regular representation of a finite group: ``ρ(g) e_h = e_{gh}``."""

    is_invariant_scalar = False
    is_odd_scalar = False

    def __init__(self, group: MatrixGroup) -> None:
        if not group.is_finite:
            raise ValueError(f"Rep.regular: expected a finite group, got {group!r}")
        self.group = group
        self.dim = int(group.order)
        self.key = ("regular", group.key)
        elements = group.elements()
        self._elements = elements
        # the distance between two elements is that of one from the identity (the Frobenius
        # norm is invariant), so the closest two lie this far apart
        others = (elements[1:] - torch.eye(3, dtype=torch.float64)).flatten(1).norm(dim=1)
        self._separation = float(others.min()) if len(others) else math.inf
        # cayley[a, b] = index of elements[a] @ elements[b]
        self._cayley = self.element_index(elements[:, None] @ elements[None, :])

    def element_index(self, g: Tensor) -> Tensor:
        """Index into ``group.elements()`` of each matrix in ``g [..., 3, 3]``.

        Each matrix must lie within ``1e-4`` of an element (float32, float64), or within the
        rounding of its dtype in half precision."""
        tolerance = max(1e-4, 8 * torch.finfo(g.dtype).eps)
        if not tolerance < self._separation / 2:
            raise ValueError(
                f"g: {g.dtype} cannot tell the elements of {self.group.name} apart (the closest "
                f"two are {self._separation:.1e} apart, its rounding up to {tolerance:.1e}); "
                "expected elements in float32 or float64"
            )
        flat = g.reshape(-1, 9).to(torch.float64)
        dist = torch.cdist(flat, self._elements.reshape(-1, 9).to(flat.device))
        best, index = dist.min(dim=1)
        if bool((best > tolerance).any()):
            raise ValueError(
                f"g: expected elements of {self.group.name}, got a matrix at distance "
                f"{float(best.max()):.2e} from every element"
            )
        return index.reshape(g.shape[:-2])

    def rho(self, g: Tensor) -> Tensor:
        index = self.element_index(g).cpu()
        images = self._cayley[index]  # [B, order]: g * h_j = h_images[j]
        eye = torch.eye(self.dim, dtype=g.dtype)
        return eye[images].transpose(1, 2).to(g.device)

    def drho(self, a: Tensor) -> Tensor:
        raise ValueError(
            "drho: the regular representation belongs to a finite group (no Lie algebra)"
        )

    def __repr__(self) -> str:
        return f"regular({self.group.name})"


class ProductBlock:
    """``rep_a ⊗ rep_b`` with the Kronecker layout ``[dim_a, dim_b]`` flattened."""

    is_invariant_scalar = False
    is_odd_scalar = False

    def __init__(self, rep_a: Rep, rep_b: Rep) -> None:
        self.rep_a, self.rep_b = rep_a, rep_b
        self.dim = rep_a.dim * rep_b.dim
        self.key = ("product", rep_a.key, rep_b.key)

    def rho(self, g: Tensor) -> Tensor:
        a, b = self.rep_a.rho(g), self.rep_b.rho(g)
        return torch.einsum("bij,bkl->bikjl", a, b).reshape(g.shape[0], self.dim, self.dim)

    def drho(self, x: Tensor) -> Tensor:
        a, b = self.rep_a.drho(x), self.rep_b.drho(x)
        eye_a = torch.eye(self.rep_a.dim, dtype=x.dtype, device=x.device)
        eye_b = torch.eye(self.rep_b.dim, dtype=x.dtype, device=x.device)
        left = torch.einsum("mij,kl->mikjl", a, eye_b)
        right = torch.einsum("ij,mkl->mikjl", eye_a, b)
        return (left + right).reshape(x.shape[0], self.dim, self.dim)

    def __repr__(self) -> str:
        return f"({self.rep_a.short()})⊗({self.rep_b.short()})"


Block = IrrepBlock | RegularBlock | ProductBlock


@functools.cache
def _parse_irreps(text: str) -> tuple[tuple[int, IrrepBlock], ...]:
    try:
        irreps = o3.Irreps(text)
    except (ValueError, AssertionError, TypeError) as error:
        raise ValueError(
            f"irreps: expected an e3nn irreps string such as '16x0e + 8x1o + 4x2e', got {text!r} "
            f"({error})"
        ) from None
    return tuple((mul, IrrepBlock(ir.l, ir.p)) for mul, ir in irreps)


def _check_block_group(block: Block, group: MatrixGroup) -> None:
    """Raise unless ``block`` is a representation of ``group``: O(3) irreps restrict to every
    G ≤ O(3), but the regular representation of a finite group H only to subgroups of H
    (its matrices are defined on H's elements)."""
    if isinstance(block, ProductBlock):
        for _, inner in (*block.rep_a.blocks, *block.rep_b.blocks):
            _check_block_group(inner, group)
    elif isinstance(block, RegularBlock) and block.group != group:
        if group.is_finite:
            elements = group.elements()
            distance = torch.cdist(elements.reshape(-1, 9), block._elements.reshape(-1, 9))
            inside = bool((distance.min(dim=1).values <= 1e-6).all())
        else:
            inside = False
        if not inside:
            raise ValueError(
                f"group: expected a subgroup of {block.group.name} (its regular representation "
                f"is defined only on its elements), got {group!r}"
            )


def _group_or_default(group: MatrixGroup | str | None) -> MatrixGroup:
    """``group`` as a MatrixGroup (:func:`~symgraph.groups.catalog.as_group`), ``None`` as O(3)."""
    from symgraph.groups.catalog import O3, as_group

    return O3() if group is None else as_group(group)


class Rep:
    """A representation of ``group`` (default O(3)) made of blocks with multiplicities.

    Args:
        irreps: an e3nn irreps string (``"16x0e + 8x1o"``), an ``e3nn.o3.Irreps``, or a Rep.
        group: the group G ≤ O(3) the irreps are restricted to, or its catalog name
            (``"SO3"``, ``"C4"`` …; default ``O3()``).

    Example:
        >>> rep = Rep("8x0e + 4x1o", SO2())
        >>> rep.dim
        20
        >>> rep.rho(SO2().sample(5)).shape
        torch.Size([5, 20, 20])
    """

    def __init__(
        self,
        irreps: str | o3.Irreps | Rep = "",
        group: MatrixGroup | str | None = None,
        *,
        blocks: Iterable[tuple[int, Block]] | None = None,
    ) -> None:
        if isinstance(irreps, Rep):
            group = group or irreps.group
            blocks = irreps.blocks if blocks is None else blocks
        self.group = _group_or_default(group)
        if blocks is None:
            if not isinstance(irreps, str | o3.Irreps):
                raise TypeError(f"irreps: expected a string or e3nn Irreps, got {type(irreps)}")
            blocks = _parse_irreps(
                str(o3.Irreps(irreps)) if isinstance(irreps, o3.Irreps) else irreps
            )
        blocks = tuple(blocks)
        for mul, block in blocks:
            if not is_int(mul) or mul < 0:
                raise ValueError(
                    f"blocks: expected non-negative int multiplicities, got {mul!r} for {block!r}"
                )
            _check_block_group(block, self.group)
        self.blocks: tuple[tuple[int, Block], ...] = tuple((int(m), b) for m, b in blocks if m > 0)
        self.dim = sum(m * b.dim for m, b in self.blocks)

    # ---------------------------------------------------------------- constructors
    @classmethod
    def regular(cls, group: MatrixGroup | str, mul: int = 1) -> Rep:
        """``mul`` copies of the regular representation of a finite group (or its catalog
        name, ``"C4"`` …)."""
        group = _group_or_default(group)
        if not is_int(mul) or mul < 1:
            raise ValueError(f"mul: expected a positive number of copies, got {mul!r}")
        return cls(group=group, blocks=[(int(mul), RegularBlock(group))])

    @classmethod
    def trivial(cls, group: MatrixGroup | str, mul: int = 1) -> Rep:
        """``mul`` invariant scalars (``"{mul}x0e"``) of ``group`` (or its catalog name)."""
        if not is_int(mul) or mul < 0:
            raise ValueError(f"mul: expected a non-negative number of scalars, got {mul!r}")
        return cls(f"{int(mul)}x0e", group)

    # ---------------------------------------------------------------- algebra
    def _check_same_group(self, other: Rep, what: str) -> None:
        if not isinstance(other, Rep):
            raise TypeError(f"{what}: expected a Rep, got {type(other).__name__}")
        if other.group != self.group:
            raise ValueError(
                f"{what}: representations of different groups: {self.group.name} and "
                f"{other.group.name}"
            )

    def __add__(self, other: Rep) -> Rep:
        self._check_same_group(other, "Rep + Rep")
        return Rep(group=self.group, blocks=self.blocks + other.blocks)

    def __rmul__(self, k: int) -> Rep:
        if not is_int(k) or k < 0:
            raise ValueError(f"k * rep: expected a non-negative int k, got {k!r}")
        return Rep(group=self.group, blocks=self.blocks * int(k))

    __mul__ = __rmul__

    def tensor(self, other: Rep) -> Rep:
        """The tensor product ``self ⊗ other`` (dimension ``self.dim * other.dim``)."""
        self._check_same_group(other, "Rep.tensor")
        return Rep(group=self.group, blocks=[(1, ProductBlock(self, other))])

    __matmul__ = tensor

    def dual(self) -> Rep:
        """The dual representation; every block here is orthogonal, so it is ``self``."""
        return self

    # ---------------------------------------------------------------- properties
    @property
    def key(self) -> tuple:
        return (self.group.key, tuple((m, b.key) for m, b in self.blocks))

    @property
    def irreps(self) -> o3.Irreps | None:
        """The e3nn ``Irreps`` when every block is an O(3) irrep, else ``None``."""
        if not all(isinstance(b, IrrepBlock) for _, b in self.blocks):
            return None
        return o3.Irreps([(m, (b.l, b.parity)) for m, b in self.blocks])

    def slices(self) -> list[slice]:
        """The slice of each block in a feature vector of length ``dim``."""
        out, start = [], 0
        for mul, block in self.blocks:
            out.append(slice(start, start + mul * block.dim))
            start += mul * block.dim
        return out

    @property
    def num_invariant_scalars(self) -> int:
        """Number of ``0e`` components."""
        return sum(m for m, b in self.blocks if b.is_invariant_scalar)

    # ---------------------------------------------------------------- actions
    def rho(self, g: Tensor) -> Tensor:
        """Block-diagonal matrices ``[B, dim, dim]`` for elements ``g [B, 3, 3]`` (taken to be
        orthogonal, as :meth:`MatrixGroup.sample` gives them: not checked here)."""
        g = check_elements(g, "g")
        out = torch.zeros(g.shape[0], self.dim, self.dim, dtype=g.dtype, device=g.device)
        for (mul, block), where in zip(self.blocks, self.slices()):
            d = block.rho(g)
            eye = torch.eye(mul, dtype=g.dtype, device=g.device)
            size = where.stop - where.start
            full = torch.einsum("uv,bij->buivj", eye, d).reshape(g.shape[0], size, size)
            out[:, where, where] = full
        return out

    def drho(self, a: Tensor) -> Tensor:
        """Lie-algebra action ``[m, dim, dim]`` of skew matrices ``a [m, 3, 3]``."""
        a = check_elements(a, "a")
        out = torch.zeros(a.shape[0], self.dim, self.dim, dtype=a.dtype, device=a.device)
        for (mul, block), where in zip(self.blocks, self.slices()):
            d = block.drho(a)
            eye = torch.eye(mul, dtype=a.dtype, device=a.device)
            size = where.stop - where.start
            full = torch.einsum("uv,bij->buivj", eye, d).reshape(a.shape[0], size, size)
            out[:, where, where] = full
        return out

    def check_features(self, x: object, name: str = "x") -> Tensor:
        """``x`` must be a finite floating tensor whose last dimension is ``dim``."""
        if not isinstance(x, Tensor):
            raise TypeError(f"{name}: expected a tensor [..., {self.dim}], got {type(x).__name__}")
        if x.dim() == 0 or x.shape[-1] != self.dim:
            raise ValueError(
                f"{name}: expected last dimension {self.dim} (= dim of {self.short()}), "
                f"got shape {list(x.shape)}"
            )
        if not x.is_floating_point():
            raise TypeError(f"{name}: expected a floating-point tensor, got dtype {x.dtype}")
        return check_finite(x, name)

    # ---------------------------------------------------------------- display
    def short(self) -> str:
        return " + ".join(f"{m}x{b!r}" for m, b in self.blocks) or "0"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Rep) and self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)

    def __repr__(self) -> str:
        return f"Rep({self.short()!r}, {self.group.name})"


def as_rep(value: str | o3.Irreps | Rep, group: MatrixGroup | str | None, name: str) -> Rep:
    """Turn an irreps string / e3nn Irreps / Rep into a Rep of ``group`` (a MatrixGroup, a
    catalog name, or ``None``: the Rep's own group, O(3) for strings), checking the group."""
    if group is not None:
        group = _group_or_default(group)
    if isinstance(value, Rep):
        if group is not None and value.group != group:
            raise ValueError(
                f"{name}: expected a representation of {group.name}, got one of {value.group.name}"
            )
        return value
    if not isinstance(value, str | o3.Irreps):
        raise TypeError(f"{name}: expected an irreps string, e3nn Irreps or Rep, got {type(value)}")
    try:
        return Rep(value, group)
    except ValueError as err:  # a string e3nn cannot read, named by this argument
        reason = str(err)
        if not reason.startswith("irreps: "):
            raise
        raise ValueError(f"{name}: {reason.removeprefix('irreps: ')}") from None
