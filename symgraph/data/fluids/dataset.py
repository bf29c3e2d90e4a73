"""`SmokePlumeDataset`: windows of simulated smoke plumes with train / future / domain splits.

Simulations (all generated together, deterministically from ``seed``):

- *training simulations*: the inflow sits at distance ``inflow_distance`` from the centre at
  a polar angle drawn uniformly within ``+-pi/8`` of the axes (``0, pi/2, pi, 3pi/2``); the
  force magnitude ``buoyancy`` is drawn from ``buoyancy_range``; the fluid starts with a
  smooth random vorticity.
- *domain simulations*: the same distributions at inflow positions never seen in training,
  chosen by ``domain_split``:

  - ``"diagonals"`` (default): the inflow angle lies within ``+-pi/8`` of the diagonals
    (``pi/4 + k pi/2``), the training inflows near all four axes;
  - ``"half-turn"``: the training inflows sit near the axes ``0`` and ``pi/2`` only (the
    plume rises leftwards or downwards for ``s = 0``), the domain inflows near ``pi`` and
    ``3pi/2`` -- the training distribution turned by 180 degrees. A model without a
    rotation prior meets flow directions it never saw; a strictly C4-equivariant model
    maps them onto the training ones, which is right only for ``s = 0``: the fixed
    "gravity" part of the force makes the ``3pi/2`` domain plumes (rising upwards) stronger
    than any training plume, while the ``pi`` ones mirror the ``0`` training plumes and are
    as strong. Note that for ``s > 0`` the training set then holds
    a single buoyant direction (the ``pi/2`` plumes are nearly force-free for ``s = 0.5``):
    the fixed "up" part of the force cannot be told apart from a prior on that direction;
  - ``"three-quarter"``: the training inflows sit near the axes ``0``, ``pi/2`` and ``pi``,
    the domain inflows near ``3pi/2`` (plumes rising straight up for ``s > 0``, the
    strongest). The training plumes rise leftwards, barely, and rightwards, so the fixed
    "up" part of the force is what they share; a model without a rotation prior meets an
    unseen flow direction, a strict one plumes stronger than their rotated counterparts.

  With ``symmetry_breaking = 0`` a rotation-equivariant model can generalise to the domain
  inflows; the larger the breaking, the less rotations help.

Each simulation has ``frames`` frames; the first ``frames - future_frames`` are the *past*,
the rest the *future*. Splits (windows never straddle the boundary):

- ``"train"``: windows of the training simulations inside their past;
- ``"future"``: windows of the training simulations inside their future;
- ``"domain"``: windows of the domain simulations inside their past.

An item is ``(inputs [input_frames, C, N, N], targets [target_frames, C, N, N])`` with
channels ``(u, v)`` (``fields="velocity"``, layout ``"1x1o"``) or ``(u, v, density)``
(``fields="velocity+density"``, layout ``"1x1o + 1x0e"``); see :attr:`layout`.

With a ``root`` the generated simulations are cached in ``root/smoke_plume_<key>.pt``
(written to a temporary file and renamed, so a crash never leaves half a file); the key
hashes every generation parameter.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import tempfile
import warnings
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset

from symgraph.checks import as_number, check_int, is_int, is_real
from symgraph.data.fluids.config import PlumeConfig
from symgraph.data.fluids.solver import simulate_plumes

__all__ = ["SmokePlumeDataset"]

_SPLITS = ("train", "future", "domain")
#: ``domain_split`` -> (quarter turns of the training inflows, of the domain inflows, offset
#: of the domain angles); angles are ``offset + quarter * pi / 2`` within ``+-pi/8``, the
#: quarter drawn at random among all four, or taken in turn from a subset.
_DOMAIN_SPLITS = {
    "diagonals": ((0, 1, 2, 3), (0, 1, 2, 3), math.pi / 4),
    "half-turn": ((0, 1), (2, 3), 0.0),
    "three-quarter": ((0, 1, 2), (3,), 0.0),
}
_FIELDS = {"velocity": "1x1o", "velocity+density": "1x1o + 1x0e"}
_FORMAT_VERSION = 1

#: default simulation settings: 64 x 64, a solid frame of 2 cells, 100 warm-up steps and
#: 4 solver steps (0.04 time units) per frame.
DEFAULT_BASE = PlumeConfig(initial_vorticity=1.0, walls=2, substeps=4, warmup_steps=100)


class SmokePlumeDataset(Dataset):
    """Smoke-plume windows (see the module docstring).

    Args:
        root: cache folder (created if needed), or ``None`` to keep everything in memory.
        split: ``"train"``, ``"future"`` or ``"domain"``.
        symmetry_breaking: ``s`` in ``[0, 1]`` of :class:`PlumeConfig` (0 = equivariant).
        num_train_simulations, num_domain_simulations: simulations per group.
        frames: frames per simulation; ``future_frames`` of them form the future.
        input_frames, target_frames: window lengths; ``stride``: step between windows.
        fields: ``"velocity"`` or ``"velocity+density"``.
        inflow_distance: distance of the inflow from the centre, as a fraction of ``L``.
        buoyancy_range: ``(low, high)`` of the force magnitude.
        domain_split: where the training and domain inflows sit, ``"diagonals"``,
            ``"half-turn"`` or ``"three-quarter"`` (see the module docstring).
        base_config: every other parameter (grid, ``dt``, viscosity, warm-up...), default
            :data:`DEFAULT_BASE`; its inflow position, ``buoyancy`` and
            ``symmetry_breaking`` are overridden.
        seed: seed of every random choice. One stream draws the training and the domain
            simulations in turn, so changing ``num_train_simulations`` changes every
            simulation, the domain test set's included (a sweep over data sizes compares
            different test sets; keep the domain set with its own dataset of fixed counts).
        force_reload: regenerate even when a cache file exists.
    """

    def __init__(
        self,
        root: str | Path | None = None,
        split: str = "train",
        *,
        symmetry_breaking: float = 0.0,
        num_train_simulations: int = 8,
        num_domain_simulations: int = 4,
        frames: int = 60,
        future_frames: int = 20,
        input_frames: int = 5,
        target_frames: int = 5,
        stride: int = 1,
        fields: str = "velocity",
        inflow_distance: float = 0.3,
        buoyancy_range: tuple[float, float] = (2.0, 3.0),
        domain_split: str = "diagonals",
        base_config: PlumeConfig | None = None,
        seed: int = 0,
        force_reload: bool = False,
    ) -> None:
        if split not in _SPLITS:
            raise ValueError(f"split: expected one of {_SPLITS}, got {split!r}")
        if domain_split not in _DOMAIN_SPLITS:
            raise ValueError(
                f"domain_split: expected one of {tuple(_DOMAIN_SPLITS)}, got {domain_split!r}"
            )
        if fields not in _FIELDS:
            raise ValueError(f"fields: expected one of {tuple(_FIELDS)}, got {fields!r}")
        num_train_simulations = check_int(num_train_simulations, "num_train_simulations")
        num_domain_simulations = check_int(num_domain_simulations, "num_domain_simulations")
        input_frames = check_int(input_frames, "input_frames")
        target_frames = check_int(target_frames, "target_frames")
        stride = check_int(stride, "stride")
        future_frames = check_int(future_frames, "future_frames")
        frames = as_number(frames)  # checked by the solver; a Python int in the cache key
        window = input_frames + target_frames
        if future_frames < window or frames - future_frames < window:
            raise ValueError(
                f"frames: the past ({frames} - {future_frames} frames) and the future "
                f"({future_frames}) must each hold one window of {window} frames, "
                f"got frames={frames}, future_frames={future_frames}"
            )
        if not is_int(seed):
            raise ValueError(f"seed: expected an integer, got {seed!r}")
        if not (is_real(inflow_distance) and 0 < inflow_distance < 0.5):
            raise ValueError(
                f"inflow_distance: expected a fraction in (0, 0.5), got {inflow_distance!r}"
            )
        try:
            low, high = (float(b) for b in buoyancy_range)
        except (TypeError, ValueError) as err:  # not a pair of numbers
            raise ValueError(
                f"buoyancy_range: expected a pair (low, high) of numbers, got {buoyancy_range!r}"
            ) from err
        if not (0 <= low <= high and math.isfinite(high)):
            raise ValueError(f"buoyancy_range: expected 0 <= low <= high, got {buoyancy_range!r}")
        base = base_config if base_config is not None else DEFAULT_BASE
        if not isinstance(base, PlumeConfig):
            raise TypeError(f"base_config: expected a PlumeConfig, got {type(base).__name__}")
        base = base.replace(symmetry_breaking=symmetry_breaking)  # validates the range

        self.split = split
        self.fields = fields
        self.layout = _FIELDS[fields]
        self.input_frames, self.target_frames, self.stride = input_frames, target_frames, stride
        self.params = {
            "version": _FORMAT_VERSION,
            "base": dataclasses.asdict(base),
            "num_train": num_train_simulations,
            "num_domain": num_domain_simulations,
            "frames": frames,
            "inflow_distance": float(inflow_distance),
            "buoyancy_range": [low, high],
            "seed": int(seed),
        }
        if domain_split != "diagonals":  # keeps the cache keys of the default split
            self.params["domain_split"] = domain_split
        self.domain_split = domain_split
        self.train_configs, self.domain_configs = self._configs(base)
        data = self._load_or_generate(root, force_reload)
        group = "domain" if split == "domain" else "train"
        velocity, density = data[f"{group}_velocity"], data[f"{group}_density"]
        self.data = velocity if fields == "velocity" else torch.cat([velocity, density], dim=2)
        self.configs = self.domain_configs if split == "domain" else self.train_configs
        first, last = (
            (frames - future_frames, frames) if split == "future" else (0, frames - future_frames)
        )
        #: ``(first, last)``: the frames of each simulation this split's windows read
        self.frame_range = (first, last)
        self.windows = [
            (sim, start)
            for sim in range(self.data.shape[0])
            for start in range(first, last - window + 1, stride)
        ]

    # -- generation -------------------------------------------------------------------
    def _configs(self, base: PlumeConfig) -> tuple[list[PlumeConfig], list[PlumeConfig]]:
        p = self.params
        gen = torch.Generator().manual_seed(p["seed"])
        low, high = p["buoyancy_range"]
        radius = p["inflow_distance"] * base.length

        train_quarters, domain_quarters, domain_offset = _DOMAIN_SPLITS[self.domain_split]

        def draw(count: int, offset: float, quarters: tuple[int, ...]) -> list[PlumeConfig]:
            u = torch.rand(count, 2, generator=gen, dtype=torch.float64)
            quarter = torch.randint(0, 4, (count,), generator=gen)
            out = []
            for i in range(count):
                jitter = (float(u[i, 0]) - 0.5) * math.pi / 4  # within +-pi/8
                # all four axes: drawn at random; a subset: taken in turn (balanced groups)
                turn = int(quarter[i]) if len(quarters) == 4 else quarters[i % len(quarters)]
                angle = offset + turn * math.pi / 2 + jitter
                force = low + (high - low) * float(u[i, 1])
                pos = (radius * math.cos(angle), radius * math.sin(angle))
                out.append(base.replace(inflow_position=pos, buoyancy=force))
            return out

        return (
            draw(p["num_train"], 0.0, train_quarters),
            draw(p["num_domain"], domain_offset, domain_quarters),
        )

    def _generate(self) -> dict[str, Tensor]:
        p = self.params
        gen = torch.Generator().manual_seed(p["seed"] + 1)
        out: dict[str, Tensor] = {}
        for group, configs in (("train", self.train_configs), ("domain", self.domain_configs)):
            velocity, density = simulate_plumes(configs, p["frames"], gen)
            out[f"{group}_velocity"] = velocity.float().contiguous()
            out[f"{group}_density"] = density.float().contiguous()
        return out

    def _load_or_generate(self, root: str | Path | None, force_reload: bool) -> dict[str, Tensor]:
        if root is None:
            return self._generate()
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        key = hashlib.sha256(json.dumps(self.params, sort_keys=True).encode()).hexdigest()[:16]
        path = root / f"smoke_plume_{key}.pt"
        self.cache_path = path
        params = json.loads(json.dumps(self.params))  # tuples as lists, as stored and compared
        if path.is_file() and not force_reload:
            try:
                stored = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as err:  # torch raises several types for truncated files
                warnings.warn(
                    f"SmokePlumeDataset: cache {path} could not be read ({err}); "
                    "regenerating it (the simulations are deterministic)",
                    RuntimeWarning,
                    stacklevel=3,
                )
                stored = None
            if isinstance(stored, dict) and stored.get("params") == params:
                return stored["tensors"]
        tensors = self._generate()
        fd, tmp = tempfile.mkstemp(prefix=".smoke_plume_", suffix=".tmp", dir=root)
        try:
            with os.fdopen(fd, "wb") as handle:
                torch.save({"params": params, "tensors": tensors}, handle)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return tensors

    # -- Dataset ----------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index: expected in [0, {len(self)}), got {index}")
        sim, start = self.windows[index]
        mid = start + self.input_frames
        frames = self.data[sim]
        return frames[start:mid], frames[mid : mid + self.target_frames]

    def window(self, index: int) -> tuple[int, int]:
        """``(simulation, first frame)`` of window ``index`` (simulations of this split)."""
        return self.windows[index]

    def __repr__(self) -> str:
        return (
            f"SmokePlumeDataset(split={self.split!r}, windows={len(self)}, "
            f"simulations={self.data.shape[0]}, layout={self.layout!r})"
        )
