"""Caches of tensors that outlive the call that built them.

A tensor made under :func:`torch.inference_mode` is an *inference tensor*: autograd can
never save it for backward. A cache filled during one inference-mode evaluation would hand
such tensors to every later training step (index tensors are saved by ``index_select``,
``index_add`` …), which then fails far from the cause. :func:`tensor_cache` builds every
value outside inference mode instead, so the cache serves both.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import torch

__all__ = ["tensor_cache", "outside_inference_mode"]

P = ParamSpec("P")
R = TypeVar("R")


def outside_inference_mode(build: Callable[P, R]) -> Callable[P, R]:
    """``build`` run with inference mode off (its tensors are ordinary tensors)."""

    @functools.wraps(build)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with torch.inference_mode(False):
            return build(*args, **kwargs)

    return wrapper


def tensor_cache(maxsize: int | None = 128) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """:func:`functools.lru_cache` whose values are built outside inference mode."""

    def decorate(build: Callable[P, R]) -> Callable[P, R]:
        return functools.lru_cache(maxsize=maxsize)(outside_inference_mode(build))

    return decorate
