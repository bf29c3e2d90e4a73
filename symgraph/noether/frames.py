"""Frames and trajectories of molecules: the states that conserved quantities act on.

They live in :mod:`symgraph.data.frames` (the data layer produces them); this module
re-exports them for the Noether modules. Shapes and units are described there.
"""

from symgraph.data.frames import Frame, Trajectory, as_frame, default_masses

__all__ = ["Frame", "Trajectory", "as_frame", "default_masses"]
