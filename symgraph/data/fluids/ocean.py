"""Reader for the real ocean-current sample (Wang, Walters, Yu, ICLR 2021; Copernicus Marine).

The sample is one sequence of surface-current velocity frames ``(T, 2, H, W)`` = (time,
channel ``(u, v)``, y, x), stored as ``ocean_current_sample.npy`` (NumPy) or
``ocean_current_sample.pt`` (a legacy PyTorch tensor). See ``datasets/ocean_currents.md``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from symgraph.checks import check_float_dtype

__all__ = ["load_ocean_currents", "OCEAN_SAMPLE_NAMES"]

OCEAN_SAMPLE_NAMES = ("ocean_current_sample.npy", "ocean_current_sample.pt")


def _resolve(path: str | Path) -> Path:
    path = Path(path)
    if path.is_dir():
        for folder in (path, path / "ocean_currents", path / "fluids" / "ocean_currents"):
            for name in OCEAN_SAMPLE_NAMES:
                if (folder / name).is_file():
                    return folder / name
        raise FileNotFoundError(
            f"path: no {' or '.join(OCEAN_SAMPLE_NAMES)} in {path} (or its ocean_currents/)"
        )
    if not path.is_file():
        raise FileNotFoundError(f"path: no such file {path}")
    return path


def load_ocean_currents(path: str | Path, dtype: torch.dtype = torch.float32) -> Tensor:
    """Load the ocean-current velocity sample as a ``[T, 2, H, W]`` tensor.

    Args:
        path: the ``.npy`` or ``.pt`` file, or a folder holding it (also searched:
            ``<folder>/ocean_currents`` and ``<folder>/fluids/ocean_currents``).
        dtype: floating dtype of the result.

    Returns:
        a contiguous ``[T, 2, H, W]`` tensor, channels ``(u, v)`` (eastward, northward).

    Raises:
        FileNotFoundError: nothing at ``path``.
        TypeError: ``dtype`` is not a floating-point dtype (velocities would be truncated).
        ValueError: the array is not ``[T, 2, H, W]``, or holds NaN/inf.
    """
    check_float_dtype(dtype)
    file = _resolve(path)
    if file.suffix == ".npy":
        array = np.load(file, allow_pickle=False)
        data = torch.from_numpy(np.ascontiguousarray(array))
    elif file.suffix == ".pt":
        data = torch.load(file, map_location="cpu", weights_only=True)
        if not isinstance(data, Tensor):
            raise ValueError(f"path: expected {file} to hold one tensor, got {type(data).__name__}")
    else:
        raise ValueError(f"path: expected a .npy or .pt file, got {file}")
    if data.dim() != 4 or data.shape[1] != 2:
        raise ValueError(
            f"{file}: expected a velocity sequence of shape [T, 2, H, W] (channels u, v), "
            f"got shape {list(data.shape)}"
        )
    if not data.is_floating_point():
        raise ValueError(f"{file}: expected floating-point values, got dtype {data.dtype}")
    data = data.to(dtype).contiguous()
    if not bool(torch.isfinite(data).all()):
        raise ValueError(f"{file}: expected finite values, got NaN/inf entries")
    return data
