"""Checkpoints: atomic saves, safe loads, and the random-number state needed for exact resume.

A checkpoint is a plain ``dict`` saved with ``torch.save``. :class:`~symgraph.train.loop.Trainer`
stores in it (``FORMAT`` = 1):

- ``model``, ``optimizer``, ``scheduler`` (or ``None``): ``state_dict()`` of each;
- ``epoch`` (the epoch in progress, 0-based), ``step_in_epoch`` (batches of that epoch
  already applied), ``global_step``;
- ``rng``: one :func:`capture_rng_state` per rank (python, numpy, torch, CUDA); the data
  order needs no state, it is a function of ``(seed, epoch)`` (see ``sampler.py``);
- ``best_metric``, ``best_epoch``, ``history`` (the rows of ``metrics.csv``), the running
  sums of the unfinished epoch's training loss, the learning rate of the latest optimiser
  step (``step_lr``, for ``metrics.csv``), the wall time spent so far;
- ``task`` (e.g. target mean/std), ``callbacks`` (their ``state_dict()``), ``extra`` (user).

Everything is stored as tensors, numbers, strings, lists and dicts, so
:func:`load_checkpoint` reads it with ``torch.load(weights_only=True)``: loading a
checkpoint never runs code from the file.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from symgraph.files import atomic_write

__all__ = [
    "FORMAT",
    "ResumeError",
    "save_checkpoint",
    "load_checkpoint",
    "capture_rng_state",
    "restore_rng_state",
]

FORMAT = 1


class ResumeError(ValueError):
    """A checkpoint cannot continue this run (other seed, split, model, schedule, ...)."""


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Save ``state`` to ``path`` atomically (temporary file, fsync, ``os.replace``).

    If anything fails (disk full, kill, an exception while pickling) the previous file at
    ``path`` stays valid and no partial file is left behind (a hard kill can leave a hidden
    ``.NAME.*.tmp`` beside it, which :func:`~symgraph.files.remove_stale_temporaries`
    clears).
    """
    if not isinstance(state, dict):
        raise TypeError(f"save_checkpoint: state must be a dict, got {type(state).__name__}")
    with atomic_write(path, "wb") as handle:
        torch.save({"format": FORMAT, **state}, handle)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint written by :func:`save_checkpoint` (tensors mapped to ``map_location``).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not a symgraph checkpoint of a known format.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"load_checkpoint: no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises several types for corrupt files
        raise ValueError(f"load_checkpoint: {path} could not be read: {err}") from err
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise ValueError(
            f"load_checkpoint: {path} is not a symgraph checkpoint of format {FORMAT} "
            f"(found format {found!r})"
        )
    return state


def capture_rng_state() -> dict[str, Any]:
    """The global random states of python, numpy, torch (and CUDA when initialised).

    Returns:
        a dict of tensors and numbers (safe for ``weights_only`` loading).
    """
    py_version, py_internal, py_gauss = random.getstate()
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": {
            "version": py_version,
            "internal": torch.tensor(py_internal, dtype=torch.int64),
            "gauss": py_gauss,
        },
        "numpy": {
            "kind": np_kind,
            "keys": torch.from_numpy(np_keys.astype(np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "gauss": float(np_gauss),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"].tolist()), py["gauss"]))
    nps = state["numpy"]
    np.random.set_state(
        (
            nps["kind"],
            nps["keys"].numpy().astype(np.uint32),
            nps["pos"],
            nps["has_gauss"],
            nps["gauss"],
        )
    )
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
