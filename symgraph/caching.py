"""Caches of tensors that outlive the call that built them.

A tensor made under :func:`torch.inference_mode` is an *inference tensor*: autograd can
never save it for backward. A cache filled during one inference-mode evaluation would hand
such tensors to every later training step (index tensors are saved by ``index_select``,
``index_add`` …), which then fails far from the cause. :func:`tensor_cache` builds every
value outside inference mode instead, so the cache serves both.

While :func:`torch.compile` traces, every cache here builds its value directly: dynamo
bypasses a ``functools.lru_cache`` anyway (and warns that it did), and the traced graph
holds the value it built.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import torch

__all__ = ["compile_aware_cache", "tensor_cache", "outside_inference_mode"]

P = ParamSpec("P")
R = TypeVar("R")


def outside_inference_mode(build: Callable[P, R]) -> Callable[P, R]:
    """``build`` run with inference mode off (its tensors are ordinary tensors)."""

    @functools.wraps(build)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with torch.inference_mode(False):
            return build(*args, **kwargs)

    return wrapper


def compile_aware_cache(maxsize: int | None = 128) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """:func:`functools.lru_cache` in eager mode; while ``torch.compile`` traces, the value
    is computed directly. The result keeps ``cache_clear`` and ``cache_info``."""

    def decorate(build: Callable[P, R]) -> Callable[P, R]:
        cached = functools.lru_cache(maxsize=maxsize)(build)

        @functools.wraps(build)
        def lookup(*args: P.args, **kwargs: P.kwargs) -> R:
            if torch.compiler.is_compiling():
                return build(*args, **kwargs)
            return cached(*args, **kwargs)

        lookup.cache_clear = cached.cache_clear  # type: ignore[attr-defined]
        lookup.cache_info = cached.cache_info  # type: ignore[attr-defined]
        return lookup

    return decorate


def tensor_cache(maxsize: int | None = 128) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """:func:`compile_aware_cache` whose values are built outside inference mode."""

    def decorate(build: Callable[P, R]) -> Callable[P, R]:
        return compile_aware_cache(maxsize)(outside_inference_mode(build))

    return decorate
