"""Input checks: the finiteness test is exact (a finite sum proves it, an overflow does not
fool it)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from symgraph.checks import check_finite


def test_large_finite_values_whose_sum_overflows_pass():
    big = torch.full((4,), torch.finfo(torch.float32).max)
    assert check_finite(big, "x") is big


@settings(max_examples=50, deadline=None)
@given(
    st.integers(0, 63),
    st.sampled_from([float("nan"), float("inf"), -float("inf")]),
    st.sampled_from([torch.float32, torch.float64, torch.float16]),
)
def test_any_single_non_finite_entry_is_reported(index, bad, dtype):
    x = torch.randn(8, 8, dtype=dtype)
    x.view(-1)[index] = bad
    with pytest.raises(ValueError, match=r"x: expected finite values, got 1 NaN/inf entries"):
        check_finite(x, "x")


def test_opposite_infinities_are_reported():
    x = torch.tensor([float("inf"), -float("inf"), 1.0])
    with pytest.raises(ValueError, match="got 2 NaN/inf"):
        check_finite(x, "x")
