"""The pieces every parameter-space symmetry is made of.

A *parameter-space symmetry* is a group ``G`` acting on a model's parameters ``w`` such that
the loss does not change: ``L(g·w) = L(w)``. Teleportation (Zhao, Dehmamy, Walters, Yu,
NeurIPS 2022, Algorithm 1) moves ``w`` along such an orbit to where ``‖∇L‖²`` is largest.

Here a symmetry is an object that knows

- which parameters it changes (:attr:`ParameterSymmetry.param_names`, names as in
  ``model.named_parameters()``);
- the coordinates of its identity element (:meth:`ParameterSymmetry.identity`);
- how an element with coordinates ``theta`` acts on a dictionary of parameter tensors,
  *functionally* (no in-place writes), so that gradients flow to ``theta``
  (:meth:`ParameterSymmetry.act`).

Data-dependent symmetries (the GL(d) action of the paper) also name the modules whose inputs
they need (:attr:`ParameterSymmetry.input_modules`); :func:`symgraph.teleport.teleport`
captures those inputs on the batch and passes them to :meth:`ParameterSymmetry.prepare`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "uncompiled",
    "ParamSlice",
    "ParameterSymmetry",
    "TeleportContext",
    "NoSymmetryError",
    "TeleportBatchError",
    "TeleportRefusedWarning",
]

Params = dict[str, Tensor]


def uncompiled(model: torch.nn.Module) -> torch.nn.Module:
    """The module a ``torch.compile``d ``model`` wraps (same parameter objects, named without
    the ``_orig_mod.`` prefix), else ``model``: teleportation differentiates the loss twice,
    which compiled graphs do not support, and finds and names symmetries on this module."""
    wrapped = getattr(model, "_orig_mod", None)
    return wrapped if isinstance(wrapped, torch.nn.Module) else model


class NoSymmetryError(ValueError):
    """No parameter-space symmetry was found (raised by :func:`find_symmetries`, the message
    lists what was searched)."""


class TeleportBatchError(ValueError):
    """A data-dependent symmetry cannot act exactly on the given batch."""


class TeleportRefusedWarning(UserWarning):
    """A teleport was refused because the loss moved by more than the tolerance, or was not
    finite before teleporting; the model is left as it was."""


@dataclass(frozen=True)
class ParamSlice:
    """The entries of one parameter that a group of units scales.

    ``name`` is a parameter name as in ``model.named_parameters()``; ``dim`` the axis that
    indexes the units (rows ``0`` of a ``Linear`` weight for its outputs, columns ``1`` for
    its inputs). ``index`` maps positions along ``dim`` to unit ids when they are not the
    identity: a ``LongTensor [param.shape[dim]]`` whose entry ``k`` is the unit of position
    ``k`` (``-1``: position not scaled). This lets a slice describe flattened or blocked
    weights (e.g. one unit spanning the three components of a vector channel).
    """

    name: str
    dim: int
    index: Tensor | None = None

    def length(self, param: Tensor) -> int:
        """Number of positions along :attr:`dim` of ``param``."""
        return int(param.shape[self.dim])

    def num_units(self, param: Tensor) -> int:
        """Number of units this slice addresses (``param.shape[dim]`` without an index)."""
        if self.index is None:
            return self.length(param)
        return int(self.index.max()) + 1 if self.index.numel() else 0

    def factor(self, scale: Tensor, param: Tensor) -> Tensor:
        """Broadcastable factor that multiplies ``param``.

        Shapes: ``scale [U]`` (or ``[1]``, one scale for all units) ->
        ``[1, ..., param.shape[dim], ..., 1]``.
        """
        n = self.length(param)
        if self.index is None:
            if scale.numel() == 1:
                per_position = scale.reshape(1).expand(n)
            elif scale.shape[0] == n:
                per_position = scale
            else:
                raise ValueError(
                    f"scale: expected {n} entries (one per position along dim {self.dim} of "
                    f"{self.name!r}) or 1, got {scale.shape[0]}"
                )
        else:
            if self.index.shape != (n,):
                raise ValueError(
                    f"index of {self.name!r}: expected shape [{n}], got {list(self.index.shape)}"
                )
            padded = torch.cat([scale.new_ones(1), scale.reshape(-1)])
            per_position = padded[self.index.to(scale.device) + 1]
        shape = [1] * param.dim()
        shape[self.dim] = n
        return per_position.reshape(shape)


@dataclass
class TeleportContext:
    """What :func:`~symgraph.teleport.teleport` measured on the batch before ascending.

    ``inputs[name]`` is the first positional input of module ``name`` during one forward pass
    of the loss at the current weights, ``[..., features]``, detached.
    """

    inputs: dict[str, Tensor]


class ParameterSymmetry(ABC):
    """A group acting on some of a model's parameters that leaves the loss unchanged.

    Attributes:
        name: readable label (which modules, which group).
        kind: the detection rule that produced it (``"rescale"``, ``"norm"``, ``"gl"``, ...).
        exact: ``True`` when ``L(g·w) = L(w)`` holds exactly for every input; ``False`` when it
            holds only approximately (e.g. a normalisation with ``eps > 0``).
        order: position of the symmetry in the network (larger = closer to the output).
            Symmetries are applied from the largest ``order`` down, so that a data-dependent
            action sees inputs that the actions applied before it did not change.
    """

    name: str = "symmetry"
    kind: str = "custom"
    exact: bool = True
    order: int = 0

    @property
    @abstractmethod
    def param_names(self) -> tuple[str, ...]:
        """Names of the parameters this symmetry changes."""

    @property
    def input_modules(self) -> tuple[str, ...]:
        """Modules whose inputs on the batch the action needs (data-dependent symmetries)."""
        return ()

    @property
    def data_dependent(self) -> bool:
        """Whether the action depends on the batch (then it preserves the loss on it only)."""
        return bool(self.input_modules)

    @abstractmethod
    def identity(self, like: Tensor) -> Tensor:
        """Group coordinates of the identity element (dtype and device of ``like``)."""

    def validate(self, params: Mapping[str, Tensor]) -> None:
        """Raise ``ValueError`` when this symmetry cannot act on these parameters (by name;
        every name in :attr:`param_names` is present). Default: no check."""
        return None

    def prepare(self, params: Mapping[str, Tensor], context: TeleportContext) -> Any:
        """Validate and precompute what :meth:`act` needs on this batch (default: nothing).

        Raises :class:`TeleportBatchError` when the batch does not allow an exact action.
        """
        return None

    @abstractmethod
    def act(self, params: Mapping[str, Tensor], theta: Tensor, state: Any = None) -> Params:
        """Return a new dictionary: ``params`` with the entries this symmetry changes replaced.

        Must be differentiable in ``theta`` and must not modify ``params`` in place.
        """

    def project(self, theta: Tensor, state: Any = None) -> Tensor:
        """Keep ``theta`` inside the allowed region (``state``: what :meth:`prepare` returned)."""
        return theta

    def elementwise_factors(
        self, theta: Tensor, params: Mapping[str, Tensor]
    ) -> dict[str, Tensor] | None:
        """Factors ``c`` with ``act(params)[n] = c[n] * params[n]`` when the action is diagonal.

        Used to transport optimizer moments (``None``: not diagonal, reset the moments).
        """
        return None

    def __repr__(self) -> str:
        flag = "" if self.exact else ", approximate"
        return f"{type(self).__name__}({self.name!r}, kind={self.kind!r}{flag})"
