"""The symmetry groups: positive rescaling, the data-dependent GL(d) action, SO(2) in a chart.

- :class:`RescaleSymmetry` — ``(R_{>0})^U`` acting by ``s = exp(theta)``: the "up" slices
  are multiplied by ``s``, the "down" slices divided by it. Between a ``Linear`` layer, a
  positively homogeneous activation (``σ(s z) = s σ(z)`` for ``s > 0``: ReLU, LeakyReLU,
  PReLU) and the next ``Linear``: ``W1 ← diag(s) W1``, ``b1 ← s ⊙ b1``,
  ``W2 ← W2 diag(1/s)``; data-free and exact. With no "down" slices it describes the scale
  invariance of the weights that feed a normalisation layer.
- :class:`GLSymmetry` — the GL(d) action of the paper on ``Linear → σ → Linear`` with an
  invertible ``σ`` (leaky ReLU, or none): ``W2 ← W2 g⁻¹`` and the first layer solved so that
  ``σ(H W1'ᵀ + b1') = σ(H W1ᵀ + b1) gᵀ`` on the batch inputs ``H``. Exact on the batch only,
  and only when ``[H, 1]`` has full row rank (at most ``d_in + 1`` samples).
- :class:`LinearGLSymmetry` — GL(d) on ``Linear → L → Linear`` where ``L`` is linear and mixes
  samples only (nothing, a sum or mean pooling, a sum aggregation over neighbours):
  ``W1 ← g W1``, ``b1 ← g b1``, ``W2 ← W2 g⁻¹``; data-free and exact at any batch size.
- :class:`SO2ChartSymmetry` — a rotation ``w ← φ⁻¹(R_θ φ(w))`` for a loss ``L = f(‖φ(w)‖)``
  (the Booth and Rosenbrock examples of the paper).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .base import ParameterSymmetry, Params, ParamSlice, TeleportBatchError, TeleportContext

__all__ = [
    "RescaleSymmetry",
    "GLSymmetry",
    "LinearGLSymmetry",
    "SO2ChartSymmetry",
    "leaky_relu_inverse",
]


class RescaleSymmetry(ParameterSymmetry):
    """Positive per-unit rescaling ``s = exp(theta) ∈ (R_{>0})^size``.

    Args:
        name: readable label.
        up: slices multiplied by ``s`` (rows and bias of the layer before the units).
        down: slices divided by ``s`` (columns of the layer after the units); empty for the
            scale invariance in front of a normalisation.
        size: number of units ``U``; ``1`` means one scale shared by all entries of every
            slice (a global scale).
        kind: the rule that found it.
        exact: whether ``L(g·w) = L(w)`` exactly.
        max_log_scale: ``|theta|`` is clipped to this bound during one teleport (the orbit is
            not compact and ``‖∇L‖²`` grows without bound along it).
        max_imbalance: a trust region on the orbit, across teleports: with ``a_u`` and ``b_u``
            the norms of unit ``u``'s "up" and "down" entries at the start of a teleport, the
            teleport may not move ``a_u / b_u`` out of ``[1/max_imbalance, max_imbalance]``
            (a unit already outside may only move back towards it). Without it, repeated
            teleports keep pushing the same units towards ever larger gradients and training
            diverges. Exact for one symmetry; in chains sharing a layer (``A → B → C``) the
            neighbour's scaling also changes the shared layer's norms, so the bound holds
            approximately. ``None``: no bound (only ``max_log_scale``). Ignored without
            "down" slices.
        order: position in the network.

    Group coordinates: ``theta [size]`` (log-scales), identity ``0``.
    """

    def __init__(
        self,
        name: str,
        up: Sequence[ParamSlice],
        down: Sequence[ParamSlice],
        size: int,
        *,
        kind: str = "rescale",
        exact: bool = True,
        max_log_scale: float = 2.0,
        max_imbalance: float | None = 10.0,
        order: int = 0,
    ) -> None:
        if not up and not down:
            raise ValueError("up/down: expected at least one parameter slice, got none")
        if int(size) < 1:
            raise ValueError(f"size: expected a positive number of units, got {size}")
        if not max_log_scale > 0:
            raise ValueError(f"max_log_scale: expected a positive bound, got {max_log_scale}")
        if max_imbalance is not None and not max_imbalance > 1:
            raise ValueError(f"max_imbalance: expected None or a bound > 1, got {max_imbalance}")
        self.name = name
        self.up = tuple(up)
        self.down = tuple(down)
        self.size = int(size)
        self.kind = kind
        self.exact = exact
        self.max_log_scale = float(max_log_scale)
        self.max_imbalance = None if max_imbalance is None else float(max_imbalance)
        self.order = order

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(s.name for s in self.up + self.down))

    def validate(self, params: Mapping[str, Tensor]) -> None:
        """Every slice's ``dim`` exists and addresses :attr:`size` units (any number of
        positions when ``size == 1``)."""
        for side, slices in (("up", self.up), ("down", self.down)):
            for sl in slices:
                _check_slice(self, side, sl, params[sl.name])

    def _unit_norms(self, slices: tuple[ParamSlice, ...], params: Mapping[str, Tensor]) -> Tensor:
        """Per-unit norm of the entries of ``slices``: ``[size]``."""
        like = params[slices[0].name]
        total = torch.zeros(self.size, dtype=like.dtype, device=like.device)
        for sl in slices:
            p = params[sl.name].detach()
            dims = [d for d in range(p.dim()) if d != sl.dim % p.dim()]
            per_position = p.pow(2).sum(dim=dims) if dims else p.pow(2)
            if sl.index is None:
                total = total + (per_position if self.size > 1 else per_position.sum())
            else:
                keep = sl.index >= 0
                total = total.index_add(0, sl.index[keep].to(p.device), per_position[keep])
        return total.sqrt()

    def prepare(self, params: Mapping[str, Tensor], context: TeleportContext) -> Tensor | None:
        """Log-imbalance ``log(a_u / b_u)`` per unit (``None`` when unbounded)."""
        if self.max_imbalance is None or not self.down or not self.up:
            return None
        with torch.no_grad():
            a, b = self._unit_norms(self.up, params), self._unit_norms(self.down, params)
            ratio = torch.where((a > 0) & (b > 0), torch.log(a) - torch.log(b), torch.zeros_like(a))
        return ratio

    def identity(self, like: Tensor) -> Tensor:
        return torch.zeros(self.size, dtype=like.dtype, device=like.device)

    def act(self, params: Mapping[str, Tensor], theta: Tensor, state: Any = None) -> Params:
        out = dict(params)
        scale, inverse = torch.exp(theta), torch.exp(-theta)
        for sl in self.up:
            out[sl.name] = out[sl.name] * sl.factor(scale, out[sl.name])
        for sl in self.down:
            out[sl.name] = out[sl.name] * sl.factor(inverse, out[sl.name])
        return out

    def project(self, theta: Tensor, state: Any = None) -> Tensor:
        theta = theta.clamp(-self.max_log_scale, self.max_log_scale)
        if state is None:
            return theta
        # after the action the log-imbalance is log_ratio + 2 theta
        bound = math.log(self.max_imbalance)
        low = torch.minimum((-bound - state) / 2, torch.zeros_like(state))
        high = torch.maximum((bound - state) / 2, torch.zeros_like(state))
        return torch.maximum(torch.minimum(theta, high), low)

    def elementwise_factors(
        self, theta: Tensor, params: Mapping[str, Tensor]
    ) -> dict[str, Tensor] | None:
        factors: dict[str, Tensor] = {}
        scale, inverse = torch.exp(theta), torch.exp(-theta)
        for slices, values in ((self.up, scale), (self.down, inverse)):
            for sl in slices:
                f = sl.factor(values, params[sl.name])
                factors[sl.name] = factors[sl.name] * f if sl.name in factors else f
        return factors


def leaky_relu_inverse(y: Tensor, negative_slope: float) -> Tensor:
    """Inverse of ``leaky_relu(·, negative_slope)`` (needs ``negative_slope > 0``)."""
    return torch.where(y >= 0, y, y / negative_slope)


@dataclass
class _GLState:
    design: Tensor  # [N, d_in (+1)]: batch inputs of the first layer (with a ones column)
    pinv: Tensor  # [d_in (+1), N]


class _LayerPairGL(ParameterSymmetry):
    """What the two GL(d) actions share: the layers ``first`` (``weight [d, d_in]``, optional
    ``bias [d]``) and ``second`` (``weight [d_out, d]``), coordinates ``T [d, d]`` with
    identity ``0``, kept inside the Frobenius ball of radius ``max_norm``."""

    def __init__(
        self,
        name: str,
        first: str,
        second: str,
        hidden: int,
        *,
        has_bias: bool,
        max_norm: float,
        kind: str,
        order: int,
    ) -> None:
        if int(hidden) < 1:
            raise ValueError(f"hidden: expected a positive width, got {hidden}")
        self.name = name
        self.first = first
        self.second = second
        self.hidden = int(hidden)
        self.has_bias = has_bias
        self.max_norm = float(max_norm)
        self.kind = kind
        self.exact = True
        self.order = order

    @property
    def param_names(self) -> tuple[str, ...]:
        names = [f"{self.first}.weight", f"{self.second}.weight"]
        if self.has_bias:
            names.insert(1, f"{self.first}.bias")
        return tuple(names)

    def identity(self, like: Tensor) -> Tensor:
        return torch.zeros(self.hidden, self.hidden, dtype=like.dtype, device=like.device)

    def project(self, theta: Tensor, state: Any = None) -> Tensor:
        norm = torch.linalg.matrix_norm(theta)
        if float(norm) <= self.max_norm:
            return theta
        return theta * (self.max_norm / norm)


def _check_slice(sym: RescaleSymmetry, side: str, sl: ParamSlice, param: Tensor) -> None:
    where = f"symmetries: {sym.name!r}, {side} slice ParamSlice({sl.name!r}, dim={sl.dim})"
    if not -param.dim() <= sl.dim < param.dim():
        raise ValueError(
            f"{where}: expected dim in [{-param.dim()}, {param.dim()}) for {sl.name!r} of shape "
            f"{list(param.shape)}, got {sl.dim}"
        )
    length = sl.length(param)
    if sl.index is not None:
        if sl.index.shape != (length,):
            raise ValueError(
                f"{where}: expected an index of shape [{length}] (dim {sl.dim} of {sl.name!r}, "
                f"shape {list(param.shape)}), got {list(sl.index.shape)}"
            )
        if sl.num_units(param) > sym.size:
            raise ValueError(
                f"{where}: expected unit ids below size={sym.size}, got up to "
                f"{sl.num_units(param) - 1}"
            )
    elif sym.size not in (1, length):
        raise ValueError(
            f"{where}: expected size={sym.size} positions along dim {sl.dim} of {sl.name!r}, "
            f"got {length} (shape {list(param.shape)})"
        )


class GLSymmetry(_LayerPairGL):
    """The data-dependent GL(d) action on ``first → σ → second`` (Zhao et al. 2022, eq. 8).

    ``first`` and ``second`` are module names of linear layers (``weight [out, in]``,
    optional ``bias [out]``); ``σ`` is ``leaky_relu(·, negative_slope)`` or the identity
    (``negative_slope=None``). With ``g = I + T`` (``T [d, d]``, identity ``0``), ``H`` the
    batch inputs of ``first`` (``[N, d_in]``) and ``Z = H W1ᵀ + b1``:

        second.weight ← W2 g⁻¹,
        [W1'ᵀ; b1'ᵀ] = [W1ᵀ; b1ᵀ] + [H, 1]⁺ (σ⁻¹(σ(Z) gᵀ) − Z)

    which changes the first layer as little as possible and keeps ``second(σ(first(H)))``
    unchanged on every sample of the batch. It is exact only when ``[H, 1]`` has full row
    rank ``N`` (so ``N ≤ d_in + 1``, or ``d_in`` without a bias); :meth:`prepare` checks this.
    ``T`` is kept inside the Frobenius ball of radius ``max_norm < 1`` so ``g`` stays
    invertible.
    """

    def __init__(
        self,
        name: str,
        first: str,
        second: str,
        hidden: int,
        *,
        has_bias: bool,
        negative_slope: float | None,
        max_norm: float = 0.5,
        order: int = 0,
    ) -> None:
        if negative_slope is not None and not negative_slope > 0:
            raise ValueError(
                f"negative_slope: expected a positive slope (an invertible leaky ReLU) or None, "
                f"got {negative_slope}"
            )
        if not 0 < max_norm < 1:
            raise ValueError(f"max_norm: expected a value in (0, 1), got {max_norm}")
        super().__init__(
            name, first, second, hidden, has_bias=has_bias, max_norm=max_norm, kind="gl",
            order=order,
        )  # fmt: skip
        self.negative_slope = negative_slope

    @property
    def input_modules(self) -> tuple[str, ...]:
        return (self.first,)

    def _sigma(self, z: Tensor) -> Tensor:
        if self.negative_slope is None:
            return z
        return torch.nn.functional.leaky_relu(z, self.negative_slope)

    def _sigma_inv(self, y: Tensor) -> Tensor:
        if self.negative_slope is None:
            return y
        return leaky_relu_inverse(y, self.negative_slope)

    def prepare(self, params: Mapping[str, Tensor], context: TeleportContext) -> _GLState:
        if self.first not in context.inputs:
            raise TeleportBatchError(
                f"batch: the GL(d) action {self.name!r} needs the inputs of module "
                f"{self.first!r}, but that module was not called when evaluating the loss"
            )
        weight = params[f"{self.first}.weight"]
        h = context.inputs[self.first].reshape(-1, weight.shape[1]).to(weight.dtype)
        if self.has_bias:
            h = torch.cat([h, h.new_ones(h.shape[0], 1)], dim=1)
        n, cols = h.shape
        rank = int(torch.linalg.matrix_rank(h)) if n else 0
        if n == 0 or n > cols or rank < n:
            layout = "[H, 1] ([N, d_in + 1]: inputs and a ones column for the bias)"
            if not self.has_bias:
                layout = "H ([N, d_in])"
            if n == 0:
                reason = "an empty batch"
            elif n > cols:
                reason = f"{n} samples > {cols} columns"
            else:
                reason = f"rank {rank} < {n} samples: some are linear combinations of others"
            raise TeleportBatchError(
                f"batch: the GL(d) action {self.name!r} is exact on a batch only when the "
                f"inputs of {self.first!r}, {layout}, have full row rank N >= 1, i.e. 1 to "
                f"{cols} linearly independent samples; got N={n}, rank {rank} ({reason}). "
                f"Teleport with a batch of at most {cols} linearly independent samples, or "
                f"use the data-free symmetries (kinds=('rescale',))."
            )
        return _GLState(design=h, pinv=torch.linalg.pinv(h))

    def act(self, params: Mapping[str, Tensor], theta: Tensor, state: Any = None) -> Params:
        if not isinstance(state, _GLState):
            raise TypeError(
                f"state: expected the result of prepare() for {self.name!r}, got "
                f"{type(state).__name__}"
            )
        out = dict(params)
        w1 = out[f"{self.first}.weight"]  # [d, d_in]
        theta_1 = w1.transpose(0, 1)  # [d_in, d]
        if self.has_bias:
            theta_1 = torch.cat([theta_1, out[f"{self.first}.bias"].unsqueeze(0)], dim=0)
        z = state.design @ theta_1  # [N, d]
        g = torch.eye(self.hidden, dtype=theta.dtype, device=theta.device) + theta
        z_new = self._sigma_inv(self._sigma(z) @ g.transpose(0, 1))
        theta_new = theta_1 + state.pinv @ (z_new - z)
        d_in = w1.shape[1]
        out[f"{self.first}.weight"] = theta_new[:d_in].transpose(0, 1)
        if self.has_bias:
            out[f"{self.first}.bias"] = theta_new[d_in]
        w2 = out[f"{self.second}.weight"]  # [out, d]: W2 g^{-1} = (g^{-T} W2^T)^T
        out[f"{self.second}.weight"] = torch.linalg.solve(g.transpose(0, 1), w2.transpose(0, 1)).T
        return out


class LinearGLSymmetry(_LayerPairGL):
    """The data-free GL(d) action on ``first → L → second`` with ``L`` linear on samples.

    ``first`` and ``second`` are module names of linear layers (``weight [d, d_in]`` with an
    optional ``bias [d]``, and ``weight [d_out, d]``). ``L`` is anything between them that is
    linear and acts on the sample axis only, ``L(Z) = A Z`` for some ``A [M, N]`` (the
    identity, a global sum or mean pooling, a neighbour sum as in GIN): it commutes with every
    invertible ``g [d, d]`` acting on the features, so with ``g = exp(T)``

        first.weight ← g W1,   first.bias ← g b1,   second.weight ← W2 g⁻¹

    leaves ``second(L(first(H)))`` unchanged for every input ``H``, whatever the batch size
    (unlike :class:`GLSymmetry`, whose activation makes the action data-dependent). ``T`` is
    kept inside the Frobenius ball of radius ``max_norm`` (so ``cond(g) ≤ exp(2 max_norm)``
    per teleport).

    Group coordinates: ``theta [d, d]`` (``T``), identity ``0``.
    """

    def __init__(
        self,
        name: str,
        first: str,
        second: str,
        hidden: int,
        *,
        has_bias: bool,
        max_norm: float = 1.0,
        order: int = 0,
    ) -> None:
        if not max_norm > 0:
            raise ValueError(f"max_norm: expected a positive bound, got {max_norm}")
        super().__init__(
            name, first, second, hidden, has_bias=has_bias, max_norm=max_norm, kind="linear",
            order=order,
        )  # fmt: skip

    def act(self, params: Mapping[str, Tensor], theta: Tensor, state: Any = None) -> Params:
        expected = (self.hidden, self.hidden)
        if tuple(theta.shape) != expected:
            raise ValueError(
                f"theta: expected shape {list(expected)} for {self.name!r}, got {list(theta.shape)}"
            )
        out = dict(params)
        g, g_inv = torch.linalg.matrix_exp(theta), torch.linalg.matrix_exp(-theta)
        out[f"{self.first}.weight"] = g @ out[f"{self.first}.weight"]
        if self.has_bias:
            out[f"{self.first}.bias"] = g @ out[f"{self.first}.bias"]
        out[f"{self.second}.weight"] = out[f"{self.second}.weight"] @ g_inv
        return out


class SO2ChartSymmetry(ParameterSymmetry):
    """Rotations in a chart: ``w ← φ⁻¹(R_θ φ(w))`` for one parameter ``w``.

    A loss of the form ``L(w) = f(‖φ(w)‖)`` is invariant (Booth:
    ``φ(x) = (x₁ + 2x₂ − 7, 2x₁ + x₂ − 5)``, Rosenbrock: ``φ(x) = (10(x₁² − x₂), x₁ − 1)``).

    Args:
        name: readable label.
        param: parameter name, a tensor with ``φ`` defined on it.
        to_chart: ``φ``, ``w -> v [2]``; differentiable.
        from_chart: ``φ⁻¹``, ``v [2] -> w`` (same shape as the parameter).

    Group coordinates: ``theta [1]`` (the angle), identity ``0``.
    """

    def __init__(
        self,
        name: str,
        param: str,
        to_chart: Callable[[Tensor], Tensor],
        from_chart: Callable[[Tensor], Tensor],
        *,
        exact: bool = True,
    ) -> None:
        self.name = name
        self.param = param
        self.to_chart = to_chart
        self.from_chart = from_chart
        self.kind = "so2_chart"
        self.exact = exact

    @property
    def param_names(self) -> tuple[str, ...]:
        return (self.param,)

    def identity(self, like: Tensor) -> Tensor:
        return torch.zeros(1, dtype=like.dtype, device=like.device)

    def act(self, params: Mapping[str, Tensor], theta: Tensor, state: Any = None) -> Params:
        out = dict(params)
        v = self.to_chart(out[self.param])
        if v.shape != (2,):
            raise ValueError(f"to_chart: expected a point of shape [2], got {list(v.shape)}")
        c, s = torch.cos(theta[0]), torch.sin(theta[0])
        rotated = torch.stack([c * v[0] - s * v[1], s * v[0] + c * v[1]])
        out[self.param] = self.from_chart(rotated).reshape(out[self.param].shape)
        return out
