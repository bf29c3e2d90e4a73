"""The examples run in --quick mode and report what they claim."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture()
def examples_path():
    sys.path.insert(0, str(EXAMPLES))
    yield
    sys.path.remove(str(EXAMPLES))


def test_equivariance_showcase_quick(examples_path):
    import equivariance_showcase

    result = equivariance_showcase.main(["--quick"])
    for name, _, dim, err32, err64 in result["rows"]:
        assert dim > 0 and err32 < 1e-5 and err64 < 1e-10, name
    assert result["last_loss"] < result["first_loss"]


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_plug_into_pyg_quick(examples_path):
    import plug_into_pyg

    results = plug_into_pyg.main(["--quick"])
    assert set(results) == {"plain GCN", "with ImplicitSteerableConv"}
    assert all(len(losses) == 2 for losses in results.values())
    for name, (first, second) in results.items():
        assert 0 < second < first < float("inf"), name  # both models train
