"""Shared fixtures: the real data samples beside the repository, and float64 helpers."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (real public samples, kept outside the repository)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data samples not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def load_script() -> Callable[[str], ModuleType]:
    """Imports a script of the repository (``"examples/x.py"``, ``"benchmarks/y.py"``)."""

    def load(relative_path: str) -> ModuleType:
        path = REPO_ROOT / relative_path
        name = f"{path.parent.name}_{path.stem}"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up
        # PyG's Sequential compiles its forward in a module importing the caller's module
        # by its file name; without it, the instance falls back to the class-level forward,
        # which the last Sequential compiled elsewhere has replaced (another signature)
        sys.modules[path.stem] = module
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


@pytest.fixture
def float64_default():
    """float64 as torch's default dtype for one test (for libraries such as e3nn that draw
    their random inputs and rotations in it), restored afterwards."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)
