"""Input checks: the finiteness test is exact (a finite sum proves it, an overflow does not
fool it); shape, range and dtype checks refuse what they should and name the argument."""

from __future__ import annotations

import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from symgraph.checks import (
    check_batch,
    check_edge_attr,
    check_edge_index,
    check_features,
    check_finite,
    check_int,
    check_parameter_dtype,
    check_positions,
)


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


def test_positions_must_be_finite_matrices():
    """``check_positions`` refuses a 3-D tensor and NaN coordinates, naming the argument."""
    assert check_positions(torch.zeros(4, 3)).shape == (4, 3)
    with pytest.raises(ValueError, match=r"pos: expected shape \[N, 3\]"):
        check_positions(torch.zeros(4, 3, 2))
    with pytest.raises(ValueError, match="pos: expected finite values"):
        check_positions(torch.tensor([[0.0, float("nan"), 1.0]]))


def test_features_need_one_row_per_node():
    """Fewer rows than nodes are refused as well as more."""
    check_features(torch.zeros(4, 2), 2, num_nodes=4)
    for rows in (3, 5):
        with pytest.raises(ValueError, match="x: expected 4 rows"):
            check_features(torch.zeros(rows, 2), 2, num_nodes=4)


def test_edge_index_range_and_dtype():
    """Indices must lie in ``[0, num_nodes)`` and be int32/int64 (a bool mask is refused)."""
    ok = torch.tensor([[0, 1], [1, 0]])
    assert check_edge_index(ok, 2) is ok
    assert check_edge_index(ok.int(), 2).dtype == torch.int32
    with pytest.raises(ValueError, match=r"expected node indices in \[0, 2\)"):
        check_edge_index(torch.tensor([[0, 1], [1, 2]]), 2)
    with pytest.raises(TypeError, match="edge_index: expected an int64 or int32 tensor"):
        check_edge_index(ok.bool(), 2)


def test_edge_attr_rows_and_values():
    """``edge_attr`` needs one finite row per edge; a vector is a column when ``dim == 1``."""
    assert check_edge_attr(torch.zeros(4), 4, 1).shape == (4, 1)
    with pytest.raises(ValueError, match=r"edge_attr: expected shape \[4, 2\]"):
        check_edge_attr(torch.zeros(3, 2), 4, 2)
    with pytest.raises(ValueError, match="edge_attr: expected finite values"):
        check_edge_attr(torch.tensor([[1.0, float("inf")]]), 1, 2)


def test_batch_is_non_negative_integer_and_returned_as_int64():
    """Graph indices must be non-negative integers (not bools); int32 comes back as int64."""
    out = check_batch(torch.tensor([0, 0, 1], dtype=torch.int32), 3)
    assert out.dtype == torch.int64 and out.tolist() == [0, 0, 1]
    with pytest.raises(ValueError, match="batch: expected graph indices >= 0, got -1"):
        check_batch(torch.tensor([-1, 0, 0]), 3)
    with pytest.raises(TypeError, match="batch: expected an integer tensor"):
        check_batch(torch.tensor([False, True, True]), 3)


def test_parameter_dtype_is_enforced_except_under_autocast():
    """A bfloat16 input to a float32 layer is refused, unless autocast will cast it."""
    layer = torch.nn.Linear(2, 2)
    x = torch.zeros(3, 2, dtype=torch.bfloat16)
    with pytest.raises(TypeError, match="x: expected dtype torch.float32"):
        check_parameter_dtype(x, layer, "x")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert check_parameter_dtype(x, layer, "x") is x


def test_check_int_returns_a_python_int_and_names_what_it_refuses():
    import numpy as np

    assert check_int(3, "n") == 3 and type(check_int(np.int64(3), "n")) is int
    assert check_int(0, "n", least=0) == 0
    for bad in (0, -1, 2.0, True, "3", torch.tensor(3)):
        with pytest.raises(ValueError, match=re.escape(f"n: expected a positive int, got {bad!r}")):
            check_int(bad, "n")
    with pytest.raises(ValueError, match="max_z: expected an int >= 0, got -1"):
        check_int(-1, "max_z", least=0)


def test_is_finite_real_accepts_only_finite_real_numbers():
    import numpy as np

    from symgraph.checks import is_finite_real

    assert all(is_finite_real(v) for v in (0, -2, 1.5, np.float32(3.0), np.int64(4)))
    for bad in (float("nan"), float("inf"), -float("inf"), True, "1", None, 1j, torch.tensor(1.0)):
        assert not is_finite_real(bad), bad


def test_same_time_step_is_equality_to_rounding_and_none_only_equals_none():
    from symgraph.data.frames import same_time_step

    assert same_time_step(0.1 * 3, 0.3) and same_time_step(None, None)
    assert not same_time_step(0.5, 0.501) and not same_time_step(0.5, None)
