"""Constant buffers that keep float64 precision across ``.float()`` / ``.double()`` round trips.

Basis tensors are solved in float64. A module created in float32 and later cast with
``.double()`` would otherwise carry float32-rounded bases (errors ~1e-8, far above the
1e-10 bound of float64 equivariance). Buffers registered here are re-derived from their
float64 master copy whenever the module changes dtype or device.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["ExactBufferModule"]


class ExactBufferModule(nn.Module):
    """``nn.Module`` whose constant buffers are re-cast from float64 masters on ``_apply``."""

    def __init__(self) -> None:
        super().__init__()
        self._exact_masters: dict[str, Tensor] = {}

    def register_exact_buffer(self, name: str, master: Tensor) -> None:
        """Register a non-persistent buffer ``name`` holding ``master`` in the default dtype."""
        master = master.detach().to(torch.float64).contiguous()
        self._exact_masters[name] = master
        self.register_buffer(name, master.to(torch.get_default_dtype()), persistent=False)

    def exact_buffer_as(self, name: str, like: Tensor) -> Tensor:
        """Buffer ``name`` in ``like``'s dtype and device, from its float64 master when the
        module holds it in another dtype (no precision lost by a round trip)."""
        current = getattr(self, name)
        if current.dtype == like.dtype and current.device == like.device:
            return current
        return self._exact_masters[name].to(device=like.device, dtype=like.dtype)

    def _apply(self, fn, recurse: bool = True):  # type: ignore[override]
        super()._apply(fn, recurse)
        for name, master in self._exact_masters.items():
            current = getattr(self, name)
            setattr(self, name, master.to(device=current.device, dtype=current.dtype))
        return self
