"""2D fluid data: a torch smoke-plume simulator, its dataset, and the real ocean sample.

- :class:`PlumeConfig`, :func:`simulate_plume`, :func:`simulate_plumes` -- a periodic
  pseudo-spectral incompressible Navier-Stokes solver with a buoyant passive smoke and
  controls that break rotation symmetry (``symmetry_breaking``).
- :class:`SmokePlumeDataset` -- windows of simulated frames, ``"train"``, ``"future"`` and
  ``"domain"`` splits, cached to disk.
- :func:`load_ocean_currents` -- the Copernicus ocean-current sample of Wang et al. (2021).
"""

from symgraph.data.fluids.config import PlumeConfig
from symgraph.data.fluids.dataset import SmokePlumeDataset
from symgraph.data.fluids.ocean import load_ocean_currents
from symgraph.data.fluids.solver import (
    PlumeSolver,
    simulate_plume,
    simulate_plumes,
    spectral_divergence,
)

__all__ = [
    "PlumeConfig",
    "PlumeSolver",
    "simulate_plume",
    "simulate_plumes",
    "spectral_divergence",
    "SmokePlumeDataset",
    "load_ocean_currents",
]
