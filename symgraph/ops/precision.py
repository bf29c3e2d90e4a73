"""Mixed precision: the equivariance error of a module per compute dtype.

float64 and float32 run the module in that dtype; float16 and bfloat16 run the float32
module under ``torch.autocast`` (matmuls and linear layers in half precision, reductions
and geometry in float32, as autocast decides), which is how one trains with them::

    table = equivariance_error_by_dtype(conv, G, [x, pos, edge_index], [rep, "pos", None],
                                        rep_out, device_type="cuda")
    # {"float64": 3e-15, "float32": 2e-7, "bfloat16": 6e-3, "float16": 8e-4}
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from symgraph.groups import MatrixGroup
from symgraph.testing import Spec, equivariance_error

__all__ = ["AUTOCAST_DTYPES", "equivariance_error_by_dtype"]

AUTOCAST_DTYPES = ("bfloat16", "float16")
_FULL_DTYPES = ("float64", "float32")


def _cast(value, dtype: torch.dtype):
    if isinstance(value, Tensor) and value.is_floating_point():
        return value.to(dtype)
    return value


def equivariance_error_by_dtype(
    module: nn.Module,
    group: MatrixGroup,
    args: Sequence,
    arg_specs: Sequence[Spec],
    out_spec: Spec,
    dtypes: Sequence[str] = _FULL_DTYPES + AUTOCAST_DTYPES,
    device_type: str = "cpu",
    num_elements: int = 4,
) -> dict[str, float]:
    """``{dtype name: relative equivariance error}`` (see :func:`equivariance_error`).

    Args:
        module: the layer or model (left unchanged: each dtype runs on a copy).
        group, args, arg_specs, out_spec, num_elements: as for :func:`equivariance_error`.
        dtypes: names among ``float64``, ``float32`` (plain) and ``bfloat16``, ``float16``
            (autocast of the float32 module).
        device_type: the autocast device (``"cpu"`` or ``"cuda"``).
    """
    errors = {}
    for name in dtypes:
        if name not in _FULL_DTYPES + AUTOCAST_DTYPES:
            raise ValueError(f"dtypes: expected names among {_FULL_DTYPES + AUTOCAST_DTYPES}, "
                             f"got {name!r}")  # fmt: skip
        autocast = name in AUTOCAST_DTYPES
        dtype = torch.float32 if autocast else getattr(torch, name)
        copied = copy.deepcopy(module).to(dtype)
        cast_args = [_cast(a, dtype) for a in args]

        def run(*inputs, copied=copied, autocast=autocast, name=name):
            with torch.autocast(device_type, dtype=getattr(torch, name), enabled=autocast):
                return copied(*inputs).float() if autocast else copied(*inputs)

        generator = torch.Generator().manual_seed(0)
        errors[name] = equivariance_error(
            run, group, cast_args, arg_specs, out_spec, num_elements, generator=generator
        )
    return errors
