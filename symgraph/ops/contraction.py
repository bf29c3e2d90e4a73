"""The neighbour contraction of the implicit convolution, without per-edge kernel matrices.

``T_i = Σ_{j -> i} h_ij ⊗ f_j``  (``h [E, A]`` hidden kernel features, ``f [E, B]`` source
features) is all the convolution needs per node; the kernel's last (bilinear) layer is
applied to ``T_i`` afterwards. Four backends compute the same numbers:

- ``"regular"``: every node has the same in-degree ``k`` and edges are grouped by receiver
  in node order (kNN graphs, periodic lattices): one batched matmul
  ``[N, A, k] @ [N, k, B]``;
- ``"padded"``: general graphs: edges sorted by receiver are laid into ``[N, k_max, ·]``
  slots (zero padding) and contracted by one batched matmul;
- ``"scatter"``: per-edge outer products in bounded chunks, summed with ``index_add_`` (or
  ``torch_scatter`` when it is installed); used when padding would waste too much memory;
- ``"triton"``: the fused segment kernel of :mod:`symgraph.ops.fused` (no padding, no
  per-edge products in memory); CUDA only, or CPU under ``TRITON_INTERPRET=1`` for tests.

``backend="auto"`` picks in that order, except that irregular graphs on CUDA use
``"triton"`` when Triton is installed (:func:`symgraph.ops.fused.use_triton`). Layers call
:func:`neighbour_outer_sum`; they never choose a backend themselves.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

try:  # optional: used by the scatter backend when present
    import torch_scatter as _torch_scatter
except ImportError:  # pragma: no cover - depends on the environment
    _torch_scatter = None

__all__ = ["EdgeLayout", "neighbour_outer_sum", "BACKENDS"]

BACKENDS = ("auto", "regular", "padded", "scatter", "triton")
_MAX_PADDING_FACTOR = 4.0
_CHUNK_ELEMENTS = 1 << 24


@dataclass(frozen=True)
class EdgeLayout:
    """How the edges of one graph sit relative to their receivers (computed once, O(E)).

    Attributes:
        num_nodes: N.
        degree: ``[N]`` in-degree of each node.
        order: permutation sorting edges by receiver (``None`` when already sorted).
        slot: ``[E]`` flat slot ``receiver * k_max + rank`` of each *sorted* edge.
        k_max: the largest in-degree.
        regular: every node has in-degree ``k_max`` and edges are in node order.
    """

    num_nodes: int
    degree: Tensor
    order: Tensor | None
    slot: Tensor
    k_max: int
    regular: bool

    @classmethod
    def from_receivers(cls, dst: Tensor, num_nodes: int) -> EdgeLayout:
        """Build the layout from receiver indices ``dst [E]``."""
        num_edges = dst.shape[0]
        degree = torch.bincount(dst, minlength=num_nodes)
        is_sorted = num_edges < 2 or bool((dst[1:] >= dst[:-1]).all())
        order = None if is_sorted else torch.argsort(dst, stable=True)
        sorted_dst = dst if order is None else dst[order]
        k_max = int(degree.max()) if num_nodes and num_edges else 0
        ptr = torch.cumsum(degree, 0) - degree
        rank = torch.arange(num_edges, device=dst.device) - ptr[sorted_dst]
        slot = sorted_dst * max(k_max, 1) + rank
        regular = is_sorted and num_edges == num_nodes * k_max and bool((degree == k_max).all())
        return cls(num_nodes, degree, order, slot, k_max, regular)

    def choose(self, backend: str) -> str:
        """The backend actually used for ``backend`` (``"auto"`` resolved)."""
        if backend not in BACKENDS:
            raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
        if backend == "regular" and not self.regular:
            raise ValueError(
                "backend: 'regular' needs every node to have the same in-degree with edges "
                "grouped by receiver in node order; got an irregular graph (use 'auto')"
            )
        if backend != "auto":
            return backend
        if self.regular:
            return "regular"
        num_edges = self.slot.shape[0]
        if self.num_nodes * self.k_max <= _MAX_PADDING_FACTOR * max(num_edges, 1):
            return "padded"
        return "scatter"


def _checked_inputs(
    h: Tensor, f: Tensor, dst: Tensor, num_nodes: int, backend: str, check_range: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """``(h, f, dst)`` checked by name (shapes, dtypes, backend), ``h``/``f`` promoted."""
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
    for name, value in (("h", h), ("f", f)):
        if not isinstance(value, Tensor) or value.dim() != 2 or not value.is_floating_point():
            got = (f"shape {list(value.shape)}, dtype {value.dtype}"
                   if isinstance(value, Tensor) else type(value).__name__)  # fmt: skip
            raise ValueError(f"{name}: expected a floating tensor [E, ·], got {got}")
    if f.shape[0] != h.shape[0]:
        raise ValueError(f"f: expected {h.shape[0]} rows (one per edge, as h), got {f.shape[0]}")
    if not isinstance(dst, Tensor) or dst.is_floating_point() or dst.dtype == torch.bool:
        got = dst.dtype if isinstance(dst, Tensor) else type(dst).__name__
        raise TypeError(f"dst: expected an integer index tensor [E], got {got}")
    if tuple(dst.shape) != (h.shape[0],):
        raise ValueError(
            f"dst: expected shape [{h.shape[0]}] (one per edge), got {list(dst.shape)}"
        )
    if check_range and dst.numel() and not torch.compiler.is_compiling():
        low, high = int(dst.min()), int(dst.max())
        if low < 0 or high >= num_nodes:
            raise ValueError(f"dst: expected entries in [0, {num_nodes}), got [{low}, {high}]")
    if backend == "triton":
        from symgraph.ops import fused

        fused.check_triton_request(h, f)
    dtype = torch.promote_types(h.dtype, f.dtype)
    return h.to(dtype), f.to(dtype), dst.long()


def neighbour_outer_sum(
    h: Tensor,
    f: Tensor,
    dst: Tensor,
    num_nodes: int,
    layout: EdgeLayout | None = None,
    backend: str = "auto",
) -> Tensor:
    """``T [N, A, B]`` with ``T_i = Σ_{e: dst_e = i} h_e ⊗ f_e``.

    Args:
        h: ``[E, A]`` per-edge hidden kernel features.
        f: ``[E, B]`` per-edge source features (``x[src]``).
        dst: ``[E]`` receiver of each edge.
        num_nodes: N.
        layout: a precomputed :class:`EdgeLayout` of ``dst`` (computed when ``None``).
        backend: ``"auto"``, ``"regular"``, ``"padded"``, ``"scatter"`` or ``"triton"``.

    ``h`` and ``f`` of different floating dtypes are promoted to a common one (as the
    Triton kernel does). Without a ``layout``, ``dst`` is checked to lie in
    ``[0, num_nodes)``.
    """
    h, f, dst = _checked_inputs(h, f, dst, num_nodes, backend, check_range=layout is None)
    layout = layout or EdgeLayout.from_receivers(dst, num_nodes)
    num_a, num_b = h.shape[1], f.shape[1]
    if layout.k_max == 0:  # no edge: zeros, still connected to h and f for autograd
        return h.new_zeros(num_nodes, num_a, num_b) + 0 * (h.sum() + f.sum())
    chosen = layout.choose(backend)
    if backend == "auto" and chosen != "regular" and h.is_cuda:
        from symgraph.ops import fused

        chosen = "triton" if fused.use_triton(h, f) else chosen
    if chosen == "regular":
        k = layout.k_max
        return _batched_outer(h.reshape(num_nodes, k, num_a), f.reshape(num_nodes, k, num_b))
    if layout.order is not None:
        h, f, dst = h[layout.order], f[layout.order], dst[layout.order]
    if chosen == "triton":
        from symgraph.ops import fused

        ptr = torch.cat([layout.degree.new_zeros(1), torch.cumsum(layout.degree, 0)])
        return fused.outer_sum_csr(h, f, ptr)
    if chosen == "padded":
        k = layout.k_max
        slots = num_nodes * k
        hp = h.new_zeros(slots, num_a).index_copy(0, layout.slot, h)
        fp = f.new_zeros(slots, num_b).index_copy(0, layout.slot, f)
        return _batched_outer(hp.reshape(num_nodes, k, num_a), fp.reshape(num_nodes, k, num_b))
    return _scatter_outer(h, f, dst, num_nodes)


def _batched_outer(h: Tensor, f: Tensor) -> Tensor:
    """``Σ_k h[n, k, :] ⊗ f[n, k, :]``: ``[N, A, B]`` from ``h [N, k, A]``, ``f [N, k, B]``.

    For the narrow shapes of kernels, CPU ``bmm`` is fastest with the operand whose
    features are contiguous on the right: ``hᵀ f`` when ``h`` is a transposed view of
    feature-major features (``h.stride(-1) != 1``, as :class:`~symgraph.nn.ImplicitKernel`
    returns them; no copy), else ``(fᵀ h)ᵀ`` (about twice as fast as ``hᵀ f`` then), given
    as a transposed view whose ``.transpose(1, 2)`` is contiguous.
    """
    if h.stride(-1) != 1:
        return torch.bmm(h.transpose(1, 2), f)
    return torch.bmm(f.transpose(1, 2), h).transpose(1, 2)


def _scatter_outer(h: Tensor, f: Tensor, dst: Tensor, num_nodes: int) -> Tensor:
    num_a, num_b = h.shape[1], f.shape[1]
    out = h.new_zeros(num_nodes, num_a * num_b)
    chunk = max(1, _CHUNK_ELEMENTS // max(num_a * num_b, 1))
    for start in range(0, h.shape[0], chunk):
        stop = start + chunk
        outer = (h[start:stop, :, None] * f[start:stop, None, :]).reshape(-1, num_a * num_b)
        if _torch_scatter is not None:
            out = out + _torch_scatter.scatter_add(outer, dst[start:stop], 0, dim_size=num_nodes)
        else:
            out = out.index_add(0, dst[start:stop], outer)
    return out.reshape(num_nodes, num_a, num_b)
