"""Shared measuring tools for the benchmarks: wall time and peak memory of a callable.

Peak memory on CPU is the rise of the process's resident-set high-water mark (Linux
``VmHWM``, reset through ``/proc/self/clear_refs`` before each measurement, with freed heap
memory handed back by ``malloc_trim`` first); on CUDA it is ``max_memory_allocated``.
"""

from __future__ import annotations

import ctypes
import gc
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

__all__ = [
    "machine_line",
    "measure",
    "measure_interleaved",
    "paired_ratio",
    "peak_memory_mib",
]

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kib(field: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    """Collect garbage, hand freed heap memory back and reset ``VmHWM`` to the current
    resident set; returns whether the reset took (without it ``VmHWM`` is the process's
    lifetime peak, which an earlier measurement may have set)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def timed_peak(fn: Callable[[], object]) -> tuple[float, float, object]:
    """``(seconds, peak extra resident memory in MiB, result)`` of one CPU call of ``fn``,
    timed without instrumentation (for calls too slow to repeat for each measure); the
    memory is NaN where the peak cannot be reset (see :func:`peak_memory_mib`)."""
    reset = _reset_peak()
    before = _status_kib("VmRSS")
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    peak = _status_kib("VmHWM")
    if not reset or before is None or peak is None:
        return seconds, float("nan"), result
    return seconds, max(peak - before, 0) / 1024, result


def peak_memory_mib(fn: Callable[[], object], device: str = "cpu") -> float:
    """Peak extra memory (MiB) while running ``fn`` once.

    On CPU: NaN where ``/proc/self/status`` or the reset of its high-water mark
    (``/proc/self/clear_refs``) is unavailable, rather than a peak left by earlier work.
    """
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - before) / 2**20
    return timed_peak(fn)[1]


def measure(
    fn: Callable[[], object], repeats: int = 5, warmup: int = 1, device: str = "cpu"
) -> dict[str, float]:
    """Median wall time (s) over ``repeats`` runs after ``warmup``, and peak memory (MiB)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return {"time_s": statistics.median(times), "peak_mib": peak_memory_mib(fn, device)}


def measure_interleaved(
    fns: dict[str, Callable[[], object]], repeats: int = 5, warmup: int = 1, device: str = "cpu"
) -> dict[str, dict[str, object]]:
    """Time several callables in rounds (one run of each per round).

    On a shared machine the speed drifts by ±15% over seconds; running the contenders
    back to back in every round exposes them to the same drift, so the ratio of two of them
    is best read as the median over rounds of their per-round ratio (:func:`paired_ratio`
    of ``times`` or ``cpu_times``). On CUDA each run ends with a synchronisation, so its
    wall time includes the kernels it queued. Returns ``{name: {"time_s", "cpu_s"
    (medians), "times", "cpu_times" (every round), "peak_mib"}}``.
    """
    on_cuda = device.startswith("cuda")
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    wall: dict[str, list[float]] = {name: [] for name in fns}
    cpu: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            if on_cuda:
                torch.cuda.synchronize()
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            if on_cuda:
                torch.cuda.synchronize()
            cpu[name].append(time.process_time() - start_cpu)
            wall[name].append(time.perf_counter() - start)
    return {
        name: {
            "time_s": statistics.median(wall[name]),
            "cpu_s": statistics.median(cpu[name]),
            "times": wall[name],
            "cpu_times": cpu[name],
            "peak_mib": peak_memory_mib(fn, device),
        }
        for name, fn in fns.items()
    }


def paired_ratio(slow: list[float], fast: list[float]) -> float:
    """Median over rounds of ``slow / fast`` (see :func:`measure_interleaved`)."""
    return statistics.median(s / f for s, f in zip(slow, fast, strict=True))


def _cpu_model() -> str:
    """The processor's model name from ``/proc/cpuinfo`` (Linux), else ``platform``'s."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def machine_line() -> str:
    """One line describing the machine, threads and torch build."""
    return (
        f"{platform.machine()} {_cpu_model()}, {torch.get_num_threads()} torch "
        f"threads, torch {torch.__version__}, python {platform.python_version()}"
    )


def result_path(folder: Path, stem: str, suffix: str, quick: bool, tag: str = "") -> Path:
    """``folder/stem[_tag][_quick].suffix``: a quick run or another configuration never
    overwrites a full run's file (``tag``: e.g. the targets of one of several processes)."""
    parts = [stem, *([tag] if tag else []), *(["quick"] if quick else [])]
    return folder / ("_".join(parts) + suffix)


def write_result(path: Path, text: str) -> None:
    """Write a result file atomically (a crash leaves the previous one whole)."""
    from symgraph.files import atomic_write

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "w") as handle:
        handle.write(text)
