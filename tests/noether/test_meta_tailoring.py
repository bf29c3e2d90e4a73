"""MetaTailoring: Algorithm 1's outer step updates both the predictor θ and g's φ."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from symgraph.models.dynamics import EquivariantDynamics
from symgraph.noether import (
    LinearMomentum,
    MetaTailoring,
    NeuralConservedQuantity,
    Trajectory,
    trajectory_mse,
)


def pendulum_batch(n: int = 16, steps: int = 8, dt: float = 0.1) -> torch.Tensor:
    q, p = torch.rand(n) * 2 - 1, torch.rand(n) * 2 - 1
    out = [torch.stack([q, p], -1)]
    for _ in range(steps):  # leapfrog of H = p^2 + 3 (1 - cos q)
        p = p - 0.5 * dt * 3 * torch.sin(q)
        q = q + dt * 2 * p
        p = p - 0.5 * dt * 3 * torch.sin(q)
        out.append(torch.stack([q, p], -1))
    return torch.stack(out)


class Step(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, 32), nn.Tanh(), nn.Linear(32, 2))

    def forward(self, x):
        return x + self.net(x)


def test_training_step_updates_theta_and_phi_and_learns():
    torch.manual_seed(0)
    model, g = Step(), nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 4))
    meta = MetaTailoring(model, g, inner_steps=1, inner_lr=1e-2, learn_inner_lr=True)
    opt = torch.optim.Adam(meta.parameter_groups(lr_out=3e-3, lr_emb=1e-3))
    assert len(opt.param_groups) == 2
    theta0 = [p.detach().clone() for p in model.parameters()]
    phi0 = [p.detach().clone() for p in g.parameters()]
    lr0 = float(meta.inner_lr.detach())
    data = pendulum_batch()
    first = meta.training_step(data, opt)
    assert first["task"] > 0 and first["inner"] > 0
    assert all(not torch.equal(a, b) for a, b in zip(theta0, model.parameters()))
    assert all(not torch.equal(a, b) for a, b in zip(phi0, g.parameters()))
    assert float(meta.inner_lr.detach()) != lr0
    for _ in range(60):
        last = meta.training_step(data, opt)
    assert last["task"] < 0.5 * first["task"]
    meta.eval()
    with torch.no_grad():
        pred = meta(data[0], horizon=8)
        plain = meta(data[0], horizon=8, tailored=False)
    assert pred.shape == plain.shape == data.shape


def test_meta_tailoring_on_molecular_frames():
    torch.manual_seed(0)
    n, t = 5, 4
    pos = torch.randn(n, 3, dtype=torch.float64)
    vel = torch.randn(t + 1, n, 3, dtype=torch.float64) * 0.01
    positions = pos + torch.cumsum(vel, 0)
    target = Trajectory(positions, vel, z=torch.tensor([6, 1, 1, 1, 8]))
    model = EquivariantDynamics(hidden=8, num_layers=1, dt=1.0).double()
    g = NeuralConservedQuantity(out_dim=2, hidden=8, num_layers=1).double()
    meta = MetaTailoring(model, g, inner_lr=1e-4, max_grad_norm=1.0)
    opt = torch.optim.SGD(meta.parameter_groups(1e-3, 1e-3))
    phi0 = [p.detach().clone() for p in g.parameters()]
    out = meta.training_step(target, opt)
    assert out["task"] > 0
    assert any(not torch.equal(a, b) for a, b in zip(phi0, g.parameters()))
    pred = meta(target.frame(0), horizon=t)
    assert isinstance(pred, Trajectory) and pred.positions.shape == positions.shape
    plain = meta(target.frame(0), horizon=t, tailored=False)
    assert bool(torch.isfinite(pred.positions).all())
    assert not torch.equal(pred.positions, plain.positions)  # tailoring moved the rollout
    assert float(trajectory_mse(pred, target).detach()) > 0


def test_bad_settings_are_named():
    model = EquivariantDynamics(hidden=8, num_layers=1)
    with pytest.raises(ValueError, match="inner_steps: expected an integer >= 0, got -2"):
        MetaTailoring(model, LinearMomentum(), inner_steps=-2)
    with pytest.raises(ValueError, match="inner_lr: expected a positive finite number"):
        MetaTailoring(model, LinearMomentum(), inner_lr=float("inf"))
