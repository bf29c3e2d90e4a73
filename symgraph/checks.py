"""Input validation shared by every layer: clear errors that name the argument.

Each check raises ``ValueError`` (wrong shape, range or value) or ``TypeError`` (wrong
type or dtype) with a message of the form
``"<argument>: expected <what>, got <what came>"``.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "check_tensor",
    "check_positions",
    "check_features",
    "check_edge_index",
    "check_edge_attr",
    "check_batch",
    "check_finite",
    "check_parameter_dtype",
    "is_int",
    "is_real",
    "as_number",
]


def _describe(value: object) -> str:
    if isinstance(value, Tensor):
        return f"tensor of shape {list(value.shape)} and dtype {value.dtype}"
    return f"{type(value).__name__} {value!r}"[:200]


def is_int(value: object) -> bool:
    """Whether ``value`` is an integer setting: a Python or numpy integer, never a bool.

    ``numbers.Integral`` covers ``np.int64`` and friends (``np.bool_`` is not one) and leaves
    out tensors, floats and strings; ``bool`` subclasses ``int`` and is refused explicitly.
    """
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_int(value: object, name: str, least: int = 1) -> int:
    """``value`` as a Python int, refused (``ValueError`` naming ``name``) unless an integer
    setting (:func:`is_int`) ``>= least``."""
    if not is_int(value) or value < least:
        expected = "a positive int" if least == 1 else f"an int >= {least}"
        raise ValueError(f"{name}: expected {expected}, got {value!r}")
    return int(value)


def is_real(value: object) -> bool:
    """Whether ``value`` is a real-number setting: a Python or numpy integer or float, never
    a bool (nor ``np.bool_``), a tensor or a complex number. NaN and inf are reals: range
    checks stay with the caller."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def is_finite_real(value: object) -> bool:
    """Whether ``value`` is a real number (see :func:`is_real`) that is neither NaN nor
    infinite."""
    return is_real(value) and math.isfinite(value)


def check_float_dtype(dtype: object, name: str = "dtype") -> torch.dtype:
    """``dtype`` if it is a floating-point ``torch.dtype`` (an integer one would truncate
    values such as ``0.5`` to ``0``), else a ``TypeError`` naming ``name``."""
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"{name}: expected a floating-point torch dtype, got {dtype!r}")
    return dtype


def as_number(value: Any) -> Any:
    """``value`` with a numpy number (``np.int64``, ``np.float32`` …) replaced by the equal
    Python ``int`` or ``float``; anything else (Python numbers, bools, ``None``, tensors) is
    returned as it is. For storing checked settings, so that attributes, reprs, JSON and
    cache keys never hold a numpy type."""
    if not is_real(value):
        return value
    return int(value) if isinstance(value, numbers.Integral) else float(value)


def check_tensor(value: object, name: str) -> Tensor:
    """Raise ``TypeError`` unless ``value`` is a tensor."""
    if not isinstance(value, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {_describe(value)}")
    return value


def check_finite(value: Tensor, name: str) -> Tensor:
    """Raise ``ValueError`` if ``value`` holds NaN or inf (skipped while tracing).

    A finite sum proves every entry finite (NaN and inf propagate through it) in one pass
    without a mask; only a non-finite sum, which may also be an overflow, is checked
    element by element.
    """
    if value.is_floating_point() and not torch.compiler.is_compiling():
        if not bool(torch.isfinite(value.detach().sum())) and not bool(torch.isfinite(value).all()):
            bad = int((~torch.isfinite(value)).sum())
            raise ValueError(f"{name}: expected finite values, got {bad} NaN/inf entries")
    return value


def check_parameter_dtype(value: Tensor, module: torch.nn.Module, name: str) -> Tensor:
    """Raise ``TypeError`` unless floating ``value`` has the dtype of ``module``'s parameters
    (skipped for modules without floating parameters and under autocast, which casts)."""
    reference = next((p for p in module.parameters() if p.is_floating_point()), None)
    if (
        reference is None
        or value.dtype == reference.dtype
        or torch.is_autocast_enabled(value.device.type)
    ):
        return value
    raise TypeError(
        f"{name}: expected dtype {reference.dtype} (the dtype of the layer's parameters), got "
        f"{value.dtype}; convert the input with .to({reference.dtype}) or the model with "
        f".to({value.dtype})"
    )


def check_positions(pos: object, name: str = "pos", dims: int | None = 3) -> Tensor:
    """``pos`` must be a finite floating tensor ``[N, dims]``."""
    pos = check_tensor(pos, name)
    if pos.dim() != 2 or (dims is not None and pos.shape[1] != dims):
        want = f"[N, {dims}]" if dims is not None else "[N, D]"
        raise ValueError(f"{name}: expected shape {want}, got {_describe(pos)}")
    if not pos.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got {_describe(pos)}")
    return check_finite(pos, name)


def check_features(x: object, dim: int, name: str = "x", num_nodes: int | None = None) -> Tensor:
    """``x`` must be a finite floating tensor ``[N, dim]`` (``N == num_nodes`` when given)."""
    x = check_tensor(x, name)
    if x.dim() != 2 or x.shape[1] != dim:
        raise ValueError(f"{name}: expected shape [N, {dim}], got {_describe(x)}")
    if num_nodes is not None and x.shape[0] != num_nodes:
        raise ValueError(
            f"{name}: expected {num_nodes} rows (one per node of `pos`), got {x.shape[0]}"
        )
    if not x.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got {_describe(x)}")
    return check_finite(x, name)


def check_edge_index(edge_index: object, num_nodes: int, name: str = "edge_index") -> Tensor:
    """``edge_index`` must be an integer tensor ``[2, E]`` with entries in ``[0, num_nodes)``."""
    edge_index = check_tensor(edge_index, name)
    if edge_index.dim() != 2 or edge_index.shape[0] != 2:
        raise ValueError(f"{name}: expected shape [2, E], got {_describe(edge_index)}")
    if edge_index.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"{name}: expected an int64 or int32 tensor, got {_describe(edge_index)}")
    if edge_index.numel() and not torch.compiler.is_compiling():
        low, high = int(edge_index.min()), int(edge_index.max())
        if low < 0 or high >= num_nodes:
            raise ValueError(
                f"{name}: expected node indices in [0, {num_nodes}), got values in [{low}, {high}]"
            )
    return edge_index


def check_edge_attr(
    edge_attr: object, num_edges: int, dim: int, name: str = "edge_attr"
) -> Tensor | None:
    """``edge_attr`` must be ``[E, dim]`` (or ``None`` when ``dim == 0``)."""
    if edge_attr is None:
        if dim:
            raise ValueError(f"{name}: expected a tensor [E, {dim}] (edge_dim={dim}), got None")
        return None
    edge_attr = check_tensor(edge_attr, name)
    if edge_attr.dim() == 1 and dim == 1:
        edge_attr = edge_attr[:, None]
    if edge_attr.dim() != 2 or edge_attr.shape != (num_edges, dim):
        raise ValueError(
            f"{name}: expected shape [{num_edges}, {dim}] (E edges, edge_dim={dim}), "
            f"got {_describe(edge_attr)}"
        )
    return check_finite(edge_attr, name)


def check_batch(
    batch: object, num_nodes: int, name: str = "batch", *, require_sorted: bool = True
) -> Tensor | None:
    """``batch`` must be ``None`` or an integer tensor ``[N]`` of graph indices ``>= 0``,
    sorted (as PyG batches) unless ``require_sorted=False``."""
    if batch is None:
        return None
    batch = check_tensor(batch, name)
    if batch.dim() != 1 or batch.shape[0] != num_nodes:
        raise ValueError(f"{name}: expected shape [{num_nodes}], got {_describe(batch)}")
    if batch.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"{name}: expected an integer tensor, got {_describe(batch)}")
    if batch.numel() and not torch.compiler.is_compiling():
        if require_sorted and bool((batch[1:] < batch[:-1]).any()):
            raise ValueError(
                f"{name}: expected sorted graph indices (as PyG batches), got unsorted"
            )
        if int(batch.min()) < 0:
            raise ValueError(f"{name}: expected graph indices >= 0, got {int(batch.min())}")
    return batch.long()
