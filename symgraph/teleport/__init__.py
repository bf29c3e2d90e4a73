"""Symmetry teleportation for training any model (Zhao, Dehmamy, Walters, Yu, NeurIPS 2022).

Parameter-space symmetries leave the loss unchanged; :func:`teleport` moves the weights
along one to where ``‖∇L‖²`` is larger (gradient ascent on the group coordinates, double
backprop), or to another target on the orbit (``objective=``: the largest one-step decrease,
the smallest weight norm, the smallest ``‖∇L‖²``), and training continues from there. Works
on any ``torch.nn.Module``: plain PyTorch, PyG models, symgraph's.

Public API:

- :func:`find_symmetries` — symmetries found from the model's structure (``kinds``:
  ``"rescale"`` positive rescaling through ReLU-like activations, ``"norm"`` scale
  invariance in front of normalisations, ``"gated"`` per-copy scales through symgraph's
  gated equivariant layers, ``"linear"`` the data-free GL(d) action across linear chains
  such as a GNN's last layer → sum pooling → readout, ``"gl"`` the data-dependent GL(d)
  action);
- :class:`RescaleSymmetry`, :class:`LinearGLSymmetry`, :class:`GLSymmetry`,
  :class:`SO2ChartSymmetry` and the base
  :class:`ParameterSymmetry` with :class:`ParamSlice`, to declare symmetries by hand;
- :func:`register_rule`, :func:`register_container`, :func:`register_channel_map`,
  :func:`register_passthrough`, :func:`register_linear_passthrough`,
  :func:`register_linear_wrapper` — teach detection new structures;
- :func:`teleport`, :class:`TeleportResult` — one teleport, applied in place, refused (and
  undone) if the loss moved;
- :class:`Teleport` — the schedule-driven hook (``Teleport("every:K", loss_fn)``),
  :func:`parse_schedule`;
- :func:`update_optimizer_state` — transport or reset optimizer moments.
"""

from .base import (
    NoSymmetryError,
    ParameterSymmetry,
    ParamSlice,
    TeleportBatchError,
    TeleportContext,
    TeleportRefusedWarning,
)
from .detect import DEFAULT_KINDS, describe_search, find_symmetries
from .hook import Teleport, parse_schedule
from .optim_state import OPTIMIZER_STATE_MODES, running_gradient, update_optimizer_state
from .registry import (
    register_channel_map,
    register_container,
    register_linear_passthrough,
    register_linear_wrapper,
    register_passthrough,
    register_rule,
)
from .symmetries import (
    GLSymmetry,
    LinearGLSymmetry,
    RescaleSymmetry,
    SO2ChartSymmetry,
    leaky_relu_inverse,
)
from .teleport import OBJECTIVES, TeleportResult, teleport

__all__ = [
    "DEFAULT_KINDS",
    "OBJECTIVES",
    "OPTIMIZER_STATE_MODES",
    "GLSymmetry",
    "LinearGLSymmetry",
    "NoSymmetryError",
    "ParamSlice",
    "ParameterSymmetry",
    "RescaleSymmetry",
    "SO2ChartSymmetry",
    "Teleport",
    "TeleportBatchError",
    "TeleportContext",
    "TeleportRefusedWarning",
    "TeleportResult",
    "describe_search",
    "find_symmetries",
    "leaky_relu_inverse",
    "parse_schedule",
    "register_channel_map",
    "register_container",
    "register_linear_passthrough",
    "register_linear_wrapper",
    "register_passthrough",
    "register_rule",
    "running_gradient",
    "teleport",
    "update_optimizer_state",
]
