"""Meta-tailoring (Algorithm 1 of Noether Networks): train θ and φ through the inner step.

``PREDICTSEQUENCE``: roll ``f_θ`` out from ``x_0``, take an inner gradient step of the
Noether loss of ``g_φ`` on θ, roll out again with the tailored weights ``θ(x_0; φ)``.
``TRAIN``: the task loss of the tailored rollout against the true trajectory is
back-propagated *through* the inner step, updating θ (rate ``λ_out``) and the embedding φ
(rate ``λ_emb``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from symgraph.checks import is_int
from symgraph.noether.frames import Trajectory
from symgraph.noether.metrics import check_time_steps
from symgraph.noether.tailoring import ParamSpec, StepFn, TailorResult, rollout, tailor

__all__ = ["MetaTailoring", "trajectory_mse"]


def trajectory_mse(
    prediction: Tensor | Trajectory, target: Tensor | Trajectory, velocity_weight: float = 1.0
) -> Tensor:
    """Mean squared error of frames ``1..T`` (frame 0 is the given initial state).

    Tensors: ``[T + 1, B, d]`` each. Trajectories: positions plus ``velocity_weight``
    times velocities (when both have velocities); when both carry a ``dt`` (a rollout
    carries its model's), it must be the same.
    """
    if isinstance(prediction, Tensor) and isinstance(target, Tensor):
        if prediction.shape != target.shape:
            raise ValueError(
                f"target: expected shape {list(prediction.shape)} (as the prediction), "
                f"got {list(target.shape)}"
            )
        return ((prediction[1:] - target[1:]) ** 2).mean()
    if isinstance(prediction, Trajectory) and isinstance(target, Trajectory):
        if prediction.positions.shape != target.positions.shape:
            raise ValueError(
                f"target: expected positions of shape {list(prediction.positions.shape)}, "
                f"got {list(target.positions.shape)}"
            )
        check_time_steps(prediction, target, "target")
        loss = ((prediction.positions[1:] - target.positions[1:]) ** 2).mean()
        if velocity_weight and prediction.velocities is not None and target.velocities is not None:
            dv = prediction.velocities[1:] - target.velocities[1:]
            loss = loss + velocity_weight * (dv**2).mean()
        return loss
    raise TypeError(
        f"target: expected the same kind as the prediction ({type(prediction).__name__}), "
        f"got {type(target).__name__}"
    )


class MetaTailoring(nn.Module):
    """A predictor ``f_θ`` with Noether tailoring, trainable end to end (Algorithm 1).

    Args:
        model: the predictor ``f_θ``.
        g: the conserved quantity; an ``nn.Module`` with parameters (``g_φ``) is
            meta-learned, a known quantity has none.
        inner_steps: inner gradient steps per trajectory (the paper uses 1).
        inner_lr: inner learning rate ``λ_in``.
        params: which parameters of ``model`` to tailor (see
            :func:`~symgraph.noether.tailoring.select_parameters`).
        per_sample: tailor each trajectory of a batch separately (the paper's setting).
        first_order: do not back-propagate through the inner gradient (needed when ``g``
            is only differentiable once, e.g. an ase-calculator energy).
        learn_inner_lr: make ``λ_in`` a learned parameter (stored as its logarithm).
        step_fn, max_grad_norm: passed to :func:`~symgraph.noether.tailoring.tailor`; the
            inner gradient is clipped to norm 1 by default (``None``: not clipped), which
            with the mean reduction keeps one inner step bounded on real trajectories,
            where the sum over frames and no clipping blow up for most initialisations.
        reference, reduction: passed to :func:`~symgraph.noether.loss.noether_loss`
            (default: the mean over frames).
        task_loss: ``task_loss(prediction, target) -> scalar``; default
            :func:`trajectory_mse`.
        loss_horizon: rollout length of the inner loss (default: the prediction horizon);
            fixing it lets a model meta-trained on short windows tailor the same way when
            it predicts further.
        clip_grad_norm: clip the outer gradient to this norm in :meth:`training_step`.
    """

    def __init__(
        self,
        model: nn.Module,
        g: Callable[[Any], Tensor],
        *,
        inner_steps: int = 1,
        inner_lr: float = 1e-3,
        params: ParamSpec = None,
        per_sample: bool = True,
        first_order: bool = False,
        learn_inner_lr: bool = False,
        step_fn: StepFn | None = None,
        max_grad_norm: float | None = 1.0,
        reference: str = "initial",
        reduction: str = "mean",
        task_loss: Callable[[Any, Any], Tensor] | None = None,
        loss_horizon: int | None = None,
        clip_grad_norm: float | None = None,
    ) -> None:
        super().__init__()
        if not 0 < inner_lr < math.inf:
            raise ValueError(f"inner_lr: expected a positive finite number, got {inner_lr!r}")
        if not is_int(inner_steps) or inner_steps < 0:
            raise ValueError(f"inner_steps: expected an integer >= 0, got {inner_steps!r}")
        self.model = model
        self.g = g
        self.inner_steps = int(inner_steps)
        self.params = params
        self.per_sample = per_sample
        self.first_order = first_order
        self.step_fn = step_fn
        self.max_grad_norm = max_grad_norm
        self.reference = reference
        self.reduction = reduction
        self.task_loss = task_loss or trajectory_mse
        self.loss_horizon = loss_horizon
        self.clip_grad_norm = clip_grad_norm
        log_lr = torch.tensor(math.log(inner_lr))
        if learn_inner_lr:
            self.log_inner_lr = nn.Parameter(log_lr)
        else:
            self.register_buffer("log_inner_lr", log_lr)

    @property
    def inner_lr(self) -> Tensor:
        return self.log_inner_lr.exp()

    def tailor(
        self, x0: Any, horizon: int, steps: int | None = None, loss_horizon: int | None = None
    ) -> TailorResult:
        """Tailored rollout; keeps the second-order graph when training with grad enabled.

        ``loss_horizon`` (default: the module's ``loss_horizon``, else ``horizon``) is the
        rollout length of the inner Noether loss.
        """
        loss_horizon = loss_horizon or self.loss_horizon
        if loss_horizon is not None:
            loss_horizon = min(loss_horizon, horizon) if self.training else loss_horizon
        create_graph = self.training and torch.is_grad_enabled() and not self.first_order
        return tailor(
            self.model,
            x0,
            self.g,
            steps=self.inner_steps if steps is None else steps,
            lr=self.inner_lr,
            params=self.params,
            horizon=horizon,
            loss_horizon=loss_horizon,
            create_graph=create_graph,
            per_sample=self.per_sample,
            step_fn=self.step_fn,
            reference=self.reference,
            reduction=self.reduction,
            max_grad_norm=self.max_grad_norm,
        )

    def forward(self, x0: Any, horizon: int, tailored: bool = True) -> Tensor | Trajectory:
        """PREDICTSEQUENCE: ``T + 1`` frames (frame 0 is ``x0``), tailored or not."""
        if not tailored or self.inner_steps == 0:
            return rollout(self.model, x0, horizon, None, self.step_fn)
        return self.tailor(x0, horizon).predictions

    def parameter_groups(self, lr_out: float, lr_emb: float) -> list[dict[str, Any]]:
        """Optimizer groups: θ at ``λ_out``; φ (and a learned ``λ_in``) at ``λ_emb``."""
        theta = [p for p in self.model.parameters() if p.requires_grad]
        ids = {id(p) for p in theta}
        phi = [p for p in self.parameters() if p.requires_grad and id(p) not in ids]
        groups = [{"params": theta, "lr": lr_out}] if theta else []
        if phi:
            groups.append({"params": phi, "lr": lr_emb})
        return groups

    def training_step(
        self, target: Tensor | Trajectory, optimizer: torch.optim.Optimizer
    ) -> dict[str, float]:
        """One outer step (lines 11–15 of Algorithm 1) on a batch of true trajectories.

        Args:
            target: true trajectories ``[T + 1, B, d]`` or a :class:`Trajectory` of
                ``T + 1`` frames; frame 0 is the initial state given to the predictor.

        Returns:
            ``{"task": outer loss, "inner": mean Noether loss before the inner step}``.
        """
        self.train()
        if isinstance(target, Trajectory):
            horizon, x0 = len(target) - 1, target.frame(0)
        elif isinstance(target, Tensor):
            horizon, x0 = target.shape[0] - 1, target[0]
        else:
            raise TypeError(
                f"target: expected a tensor [T + 1, B, d] or a Trajectory, "
                f"got {type(target).__name__}"
            )
        if horizon < 1:
            raise ValueError("target: expected at least 2 frames (x_0 and one future frame)")
        optimizer.zero_grad(set_to_none=True)
        if self.inner_steps:
            result = self.tailor(x0, horizon)
            prediction, inner = result.predictions, float(result.inner_losses.mean())
        else:
            prediction, inner = rollout(self.model, x0, horizon, None, self.step_fn), 0.0
        loss = self.task_loss(prediction, target)
        loss.backward()
        if self.clip_grad_norm is not None:
            params = [p for group in optimizer.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.clip_grad_norm)
        optimizer.step()
        return {"task": float(loss.detach()), "inner": inner}
