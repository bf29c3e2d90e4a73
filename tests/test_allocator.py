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
