"""The benchmarks' shared measuring tools (``benchmarks/common.py``): what they report where
they cannot measure."""

from __future__ import annotations

import argparse
import math

import pytest


@pytest.fixture(scope="module")
def common(load_script):
    return load_script("benchmarks/common.py")


def test_peak_memory_is_nan_where_the_high_water_mark_cannot_be_reset(
    common, monkeypatch, tmp_path
):
    """Without the reset, ``VmHWM`` is the process's lifetime peak: a small call measured
    after a large one would read the large one's peak, so the tools report NaN instead."""
    monkeypatch.setattr(common, "_CLEAR_REFS", tmp_path / "absent" / "clear_refs", raising=False)
    assert math.isnan(common.peak_memory_mib(lambda: sum(range(10))))
    _, mib, result = common.timed_peak(lambda: 45)
    assert math.isnan(mib) and result == 45


def test_conv_benchmark_configs_are_three_positive_ints(load_script):
    """``--configs 4000,16`` failed with a bare unpacking error; it is a usage error now."""
    conv = load_script("benchmarks/conv.py")
    assert conv._config("4000,16,32") == (4000, 16, 32)
    for bad in ("4000,16", "4000,16,32,1", "4000,0,32", "a,b,c", "4000,-16,32"):
        with pytest.raises(argparse.ArgumentTypeError, match="expected N,k,C"):
            conv._config(bad)


def test_peak_memory_is_never_negative(common, monkeypatch):
    """``VmHWM`` is updated lazily and may read below the ``VmRSS`` read just before the
    call: the extra memory is then 0, not negative."""
    monkeypatch.setattr(common, "_reset_peak", lambda: True)
    monkeypatch.setattr(common, "_status_kib", {"VmRSS": 4096, "VmHWM": 2048}.get)
    assert common.peak_memory_mib(lambda: None) == 0.0
    assert common.timed_peak(lambda: 7)[1:] == (0.0, 7)
