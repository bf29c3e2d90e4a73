"""``NextStepTask``: next-frame training and rollout evaluation of molecular dynamics models.

Batches are PyG batches of :class:`~symgraph.data.windows.TrajectoryWindows` items: a
frame and its next ``L`` frames, for ``B`` molecules. The model predicts
``(pos, vel) -> (next_pos, next_vel)`` (e.g. :class:`~symgraph.models.EquivariantDynamics`),
or is a :class:`~symgraph.noether.MetaTailoring` around such a predictor with a learned
conserved quantity ``g_φ``.

- ``loss``: the model is rolled out ``L`` steps from the window's first frame (``L = 1``:
  one-step training) and scored by the squared position and velocity errors, each divided
  by the RMS one-step change of the training data (``pos_scale``, ``vel_scale``). With a
  :class:`MetaTailoring` model in training, the rollout is the *tailored* one (one inner
  step of the Noether loss of ``g_φ`` over ``loss_horizon`` steps), so the loss trains θ
  and φ through the inner step (Algorithm 1 of Noether networks).
- ``metrics`` (per window, i.e. per held-out trajectory piece): ``loss`` and
  ``one_step_mse`` (one-step predictions from every true frame), ``rollout_rmse`` (position
  RMSE over the ``L`` rolled-out frames) and ``rollout_rmse_final`` (at frame ``L``),
  ``energy_drift`` (``|E(L) − E(0)|`` per atom of the predicted rollout, when an energy model
  is given) and ``noether_loss`` (Noether loss of the known quantities on the rollout).
  Items tagged :data:`TAILOR_TAG` are also scored after test-time tailoring: the same
  metrics with the suffix ``_tailored``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from symgraph.checks import as_number, is_finite_real, is_int
from symgraph.data.frames import Trajectory
from symgraph.data.windows import window_trajectory
from symgraph.noether import (
    CombinedQuantity,
    ConservedQuantity,
    MetaTailoring,
    noether_losses,
    rollout,
    tailor,
)
from symgraph.noether.metrics import one_step_mse, position_rmse, quantity_drift, squared_errors
from symgraph.train.loader import make_loader
from symgraph.train.sampler import GlobalBatchSampler
from symgraph.train.tasks import Task

__all__ = ["NextStepTask", "TAILOR_TAG", "dynamics_model", "learned_quantity"]

#: ``tag`` of the window items that are also evaluated with test-time tailoring.
TAILOR_TAG = 1
#: Inner gradients of test-time tailoring are clipped to this norm (so a line search over
#: fixed rates makes sense whatever the size of the Noether loss).
TAILOR_MAX_GRAD_NORM = 1.0


def dynamics_model(model: nn.Module) -> nn.Module:
    """The next-frame predictor: ``model.model`` of a :class:`MetaTailoring`, else ``model``."""
    return model.model if isinstance(model, MetaTailoring) else model


def learned_quantity(model: nn.Module) -> nn.Module | None:
    """The meta-learned ``g_φ`` of a :class:`MetaTailoring` model, else ``None``."""
    return model.g if isinstance(model, MetaTailoring) else None


class NextStepTask(Task):
    """Loss and rollout metrics of a molecular next-frame predictor (see the module doc).

    Args:
        pos_scale, vel_scale: RMS one-step change of positions (Å) and velocities (Å/fs) on
            the training data (:meth:`from_dataset`); the loss is in these units.
        quantity: known conserved quantities (each normalised, see
            :func:`~symgraph.noether.known.known_quantity`) for ``noether_loss`` and for
            tailoring, or ``None``.
        energy: total energy ``frame -> [B, 1]`` (eV) for ``energy_drift``, or ``None``.
        tailor_steps: inner steps of test-time tailoring (0: no ``*_tailored`` metrics).
        tailor_lr: inner learning rate, or rates of a line search (see
            :func:`~symgraph.noether.tailor`).
        tailor_horizon: rollout length of the inner Noether loss (capped by the window).
    """

    monitor = "rollout_rmse"
    mode = "min"

    def __init__(
        self,
        pos_scale: float = 1.0,
        vel_scale: float = 1.0,
        *,
        quantity: ConservedQuantity | None = None,
        energy: ConservedQuantity | None = None,
        tailor_steps: int = 0,
        tailor_lr: float | Sequence[float] = 1e-3,
        tailor_horizon: int = 20,
    ) -> None:
        for name, value in (("pos_scale", pos_scale), ("vel_scale", vel_scale)):
            if not (is_finite_real(value) and value > 0):  # inf: that error counts 0
                raise ValueError(f"{name}: expected a positive finite scale, got {value!r}")
        if not is_int(tailor_steps) or tailor_steps < 0:
            raise ValueError(f"tailor_steps: expected a non-negative int, got {tailor_steps!r}")
        if not is_int(tailor_horizon) or tailor_horizon < 1:
            raise ValueError(f"tailor_horizon: expected a positive int, got {tailor_horizon!r}")
        self.pos_scale, self.vel_scale = float(pos_scale), float(vel_scale)
        self.quantity, self.energy = quantity, energy
        self.tailor_steps, self.tailor_lr = int(tailor_steps), as_number(tailor_lr)
        self.tailor_horizon = int(tailor_horizon)
        base = {
            "loss": "standardised squared error",
            "one_step_mse": "Å²",
            "rollout_rmse": "Å",
            "rollout_rmse_final": "Å",
            "energy_drift": "eV/atom",
            "noether_loss": "normalised units²",
        }
        self.units = {**base, **{f"{k}_tailored": v for k, v in base.items()}}

    @classmethod
    def from_dataset(cls, dataset: Dataset, batch_size: int = 256, **kwargs: Any) -> NextStepTask:
        """A task whose scales are the RMS one-step changes on ``dataset`` (the training
        windows); ``kwargs`` as in the constructor.

        Raises:
            ValueError: an empty dataset, or frames that never change.
        """
        if len(dataset) == 0:
            raise ValueError("NextStepTask.from_dataset: the training dataset is empty")
        sums = torch.zeros(2, dtype=torch.float64)
        count = 0
        sampler = GlobalBatchSampler(len(dataset), batch_size, shuffle=False)
        for batch in make_loader(dataset, sampler):
            dp = batch.future_pos[:, 0] - batch.pos
            dv = batch.future_vel[:, 0] - batch.vel
            sums += torch.stack([dp.double().square().sum(), dv.double().square().sum()])
            count += dp.numel()
        pos_scale, vel_scale = (sums / count).sqrt().tolist()
        if not (pos_scale > 0 and vel_scale > 0):
            raise ValueError(
                "NextStepTask.from_dataset: positions or velocities never change between "
                f"frames of the training windows (RMS changes {pos_scale}, {vel_scale})"
            )
        return cls(pos_scale, vel_scale, **kwargs)

    # ------------------------------------------------------------------ training
    def _standardised(self, pos_se: Tensor, vel_se: Tensor) -> Tensor:
        return pos_se / self.pos_scale**2 + vel_se / self.vel_scale**2

    def loss(self, model: nn.Module, batch: Any) -> tuple[Tensor, int]:
        truth = window_trajectory(batch)
        steps, x0 = len(truth) - 1, truth.frame(0)
        if isinstance(model, MetaTailoring) and model.training and torch.is_grad_enabled():
            inner = max(steps, model.loss_horizon or steps)
            pred = model.tailor(x0, inner).predictions[: steps + 1]
        else:
            pred = rollout(dynamics_model(model), x0, steps)
        pos_se, vel_se = squared_errors(pred, truth)
        return self._standardised(pos_se[1:], vel_se[1:]).mean(), truth.num_graphs

    # ------------------------------------------------------------------ evaluation
    def _scores(
        self, model: nn.Module, truth: Trajectory, pred: Trajectory, params: dict | None
    ) -> dict[str, Tensor]:
        """Per-molecule metrics ``[B]`` of a predicted rollout of the true trajectory."""
        pos_se, vel_se = one_step_mse(model, truth, params)
        rmse = position_rmse(pred, truth)[1:]  # [L, B]
        out = {
            "loss": self._standardised(pos_se, vel_se),
            "one_step_mse": pos_se,
            "rollout_rmse": rmse.square().mean(0).sqrt(),
            "rollout_rmse_final": rmse[-1],
        }
        if self.energy is not None:
            out["energy_drift"] = quantity_drift(self.energy, pred, per_atom=True)[-1]
        if self.quantity is not None:
            with torch.no_grad():
                out["noether_loss"] = noether_losses(self.quantity, pred, reduction="mean")
        return out

    def _tailoring_quantity(self, model: nn.Module) -> ConservedQuantity | None:
        """The known quantities and the learned ``g_φ`` (if any), side by side."""
        parts = [q for q in (self.quantity, learned_quantity(model)) if q is not None]
        if len(parts) < 2:
            return parts[0] if parts else None
        return CombinedQuantity(parts)

    def _tailored(self, model: nn.Module, one: Trajectory, g: ConservedQuantity) -> dict:
        """Metrics ``[1]`` of one molecule after tailoring to its initial frame."""
        dyn, steps = dynamics_model(model), len(one) - 1
        result = tailor(
            dyn,
            one.frame(0),
            g,
            steps=self.tailor_steps,
            lr=self.tailor_lr,
            horizon=steps,
            loss_horizon=min(self.tailor_horizon, steps),
            reduction="mean",
            max_grad_norm=TAILOR_MAX_GRAD_NORM,
        )
        pred = result.predictions
        pred = replace(pred, positions=pred.positions.detach(), velocities=pred.velocities.detach())
        params = {k: v.detach() for k, v in result.params.items()}
        with torch.no_grad():
            return self._scores(dyn, one, pred, params)

    def metrics(self, model: nn.Module, batch: Any) -> dict[str, Tensor]:
        truth = window_trajectory(batch)
        dyn = dynamics_model(model)
        with torch.no_grad():
            out = self._scores(dyn, truth, rollout(dyn, truth.frame(0), len(truth) - 1), None)
        g = self._tailoring_quantity(model)
        tagged = (batch.tag == TAILOR_TAG).nonzero().reshape(-1).tolist()
        if self.tailor_steps and g is not None and tagged:
            molecules = truth.split()
            rows = [self._tailored(model, molecules[i], g) for i in tagged]
            out.update({f"{k}_tailored": torch.cat([r[k] for r in rows]) for k in rows[0]})
        return out

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {"pos_scale": self.pos_scale, "vel_scale": self.vel_scale}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        missing = {"pos_scale", "vel_scale"} - set(state)
        if missing:
            raise ValueError(f"NextStepTask.load_state_dict: missing keys {sorted(missing)}")
        self.pos_scale = float(state["pos_scale"])
        self.vel_scale = float(state["vel_scale"])
