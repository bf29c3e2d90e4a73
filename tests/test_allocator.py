"""``retain_freed_memory``: freed blocks are reused instead of being mapped afresh."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

SCRIPT = """
import ctypes, ctypes.util, resource
from symgraph.allocator import retain_freed_memory
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
SIZE = 6 * 2**20
def faults_of_a_loop():
    start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):  # a step's intermediates: five 6 MB blocks alive together
        blocks = [libc.malloc(SIZE) for _ in range(5)]
        for block in blocks:
            ctypes.memset(block, 1, SIZE)
        for block in blocks:
            libc.free(block)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start
faults_of_a_loop()
before = faults_of_a_loop()
took = retain_freed_memory()
faults_of_a_loop()
after = faults_of_a_loop()
print(took, before, after)
"""


@pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only"
)
def test_freed_blocks_are_reused_without_page_faults():
    """In a fresh process, a loop that frees 30 MB at the end of each round page-faults every
    round (glibc trims the top of its heap and maps the memory again); after
    ``retain_freed_memory`` the freed memory is reused and the loop faults almost never."""
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True, timeout=120
    )
    took, before, after = result.stdout.split()
    assert took == "True"
    assert int(before) > 20 * 1000  # 20 rounds of 7,680 pages (30 MB) of 4 KiB each
    assert int(after) < 100


class _FakeLibc:
    """A C library whose ``mallopt`` records its calls and answers ``results`` in turn."""

    def __init__(self, *results: int, has_mallopt: bool = True):
        self.calls = []
        answers = iter(results)
        if has_mallopt:

            def mallopt(param, value):
                self.calls.append((param, value))
                return next(answers)

            self.mallopt = mallopt


@pytest.mark.parametrize("results", [(1, 1), (0, 1), (1, 0)])
def test_mallopt_gets_glibcs_parameters_and_its_answer_is_reported(monkeypatch, results):
    """``M_MMAP_THRESHOLD`` (-3 in glibc's malloc.h) is set to 32 MiB and ``M_TRIM_THRESHOLD``
    (-1) to the largest int; True only when both calls succeed (``mallopt`` returns 1)."""
    import ctypes.util

    from symgraph import allocator

    libc = _FakeLibc(*results)
    monkeypatch.setattr(ctypes, "CDLL", lambda name: libc)
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: "libc.so.6")
    assert allocator.retain_freed_memory() is (results == (1, 1))
    assert libc.calls == [(-3, 32 * 2**20), (-1, 2**31 - 1)]


def test_a_c_library_without_mallopt_is_a_no_op(monkeypatch):
    """No ``mallopt`` (musl) or no C library at all: False, nothing raised."""
    import ctypes.util

    from symgraph import allocator

    monkeypatch.setattr(ctypes, "CDLL", lambda name: _FakeLibc(has_mallopt=False))
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: "libc.musl.so")
    assert allocator.retain_freed_memory() is False
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    assert allocator.retain_freed_memory() is False
