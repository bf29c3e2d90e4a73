"""Keep freed CPU memory in the process, so that training steps stop page-faulting.

PyTorch's CPU tensors come from the C library's ``malloc``. glibc hands allocations above
its mmap threshold straight back to the kernel when they are freed, and trims the top of
its heap, so a training step can map its large intermediates afresh and touch every page of
them once more. How often depends on what the process allocated before (glibc raises its
threshold as it frees large blocks): QM9 steps of :class:`~symgraph.models.SteerableMoleculeNet`
have shown from a few hundred to 6,000 page faults each, up to a tenth of the step's time.
:func:`retain_freed_memory` tells glibc to serve such blocks from its heap and to keep freed
memory for the next step. The cost is that the process's resident memory stays at its peak
instead of shrinking between steps. It is what ``LD_PRELOAD``-ing jemalloc or tcmalloc
(PyTorch's CPU tuning advice) achieves, without a second allocator.

``symgraph train`` calls it, and so do the QM9 benchmarks (``qm9.py``, ``train_step.py``).
"""

from __future__ import annotations

import ctypes
import ctypes.util

__all__ = ["retain_freed_memory", "MMAP_THRESHOLD_BYTES"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 * 2**20
"""Blocks up to this size come from the heap (glibc's largest allowed threshold on 64-bit)."""
_NEVER_TRIM = 2**31 - 1


def retain_freed_memory() -> bool:
    """Ask glibc to keep freed memory for reuse; returns whether it took effect.

    Allocations up to :data:`MMAP_THRESHOLD_BYTES` are then served from the heap, and the
    heap is never trimmed on ``free`` (``malloc_trim(0)`` still hands it back on request).
    A no-op returning False where the C library is not glibc (macOS, Windows, musl).
    """
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    mapped = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
    trimmed = mallopt(_M_TRIM_THRESHOLD, _NEVER_TRIM)
    return bool(mapped and trimmed)
