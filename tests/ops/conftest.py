"""Markers of the ops tests."""

from __future__ import annotations


def pytest_configure(config) -> None:
    config.addinivalue_line(
        "markers",
        "triton: Triton kernels, on a CUDA GPU or in the CPU interpreter (TRITON_INTERPRET=1); "
        "run with `make test-triton`",
    )
