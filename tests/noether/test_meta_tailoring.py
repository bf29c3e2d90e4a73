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


def test_trajectory_mse_skips_frame_zero_and_weights_velocities():
    target = torch.randn(4, 3, 2, dtype=torch.float64)
    prediction = target.clone()
    prediction[0] += 5.0  # the given initial state is not scored
    prediction[1:] += 0.1
    torch.testing.assert_close(
        trajectory_mse(prediction, target), torch.tensor(0.01, dtype=torch.float64)
    )
    z = torch.tensor([6, 1, 8])
    truth = Trajectory(torch.randn(4, 3, 3, dtype=torch.float64),
                       torch.zeros(4, 3, 3, dtype=torch.float64), z)  # fmt: skip
    moved = Trajectory(truth.positions + 0.1, truth.velocities + 0.2, z)
    for weight in (0.5, 0.0):
        want = torch.tensor(0.01 + weight * 0.04, dtype=torch.float64)
        torch.testing.assert_close(trajectory_mse(moved, truth, velocity_weight=weight), want)


def test_a_target_of_another_time_step_is_refused():
    """A model stepping 1 fs trained on frames 2 fs apart would learn the wrong physics."""
    from dataclasses import replace

    torch.manual_seed(0)
    positions = torch.randn(4, 3, 3, dtype=torch.float64)
    target = Trajectory(positions, torch.zeros_like(positions), torch.tensor([6, 1, 8]), dt=2.0)
    model = EquivariantDynamics(hidden=8, num_layers=1, dt=1.0).double()
    meta = MetaTailoring(model, LinearMomentum(), inner_lr=1e-4)
    opt = torch.optim.SGD(meta.parameters(), lr=1e-3)
    with pytest.raises(ValueError, match="target: expected frames dt=1 fs apart .* got dt=2 fs"):
        meta.training_step(target, opt)
    assert meta.training_step(replace(target, dt=1.0), opt)["task"] > 0
    assert meta.training_step(replace(target, dt=None), opt)["task"] > 0  # snapshots: unchecked


def test_first_order_meta_training_leaves_g_alone():
    """Without the second-order term, the tailored rollout depends on g only through a
    detached inner gradient: the outer step moves θ but not φ."""
    torch.manual_seed(0)
    model, g = Step(), nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 4))
    meta = MetaTailoring(model, g, inner_lr=1e-2, first_order=True)
    opt = torch.optim.SGD(meta.parameter_groups(lr_out=1e-2, lr_emb=1e-2))
    theta0 = [p.detach().clone() for p in model.parameters()]
    phi0 = [p.detach().clone() for p in g.parameters()]
    meta.training_step(pendulum_batch(), opt)
    assert all(p.grad is None for p in g.parameters())
    assert all(torch.equal(a, b) for a, b in zip(phi0, g.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(theta0, model.parameters()))


def test_parameter_groups_put_theta_at_lr_out_and_trainable_phi_at_lr_emb():
    model, g = Step(), nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 4))
    g[0].weight.requires_grad_(False)
    meta = MetaTailoring(model, g, learn_inner_lr=True)
    theta, phi = meta.parameter_groups(lr_out=3e-3, lr_emb=1e-4)
    assert theta["lr"] == 3e-3 and phi["lr"] == 1e-4
    assert {id(p) for p in theta["params"]} == {id(p) for p in model.parameters()}
    want = {id(g[0].bias), id(g[2].weight), id(g[2].bias), id(meta.log_inner_lr)}
    assert {id(p) for p in phi["params"]} == want


def test_each_training_step_starts_from_zero_gradients():
    """With a zero learning rate nothing moves, so a second step sees the same gradients
    (not their sum with the first step's)."""
    torch.manual_seed(0)
    model, g = Step(), nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 4))
    meta = MetaTailoring(model, g, inner_lr=1e-2)
    opt = torch.optim.SGD(meta.parameter_groups(lr_out=0.0, lr_emb=0.0))
    data = pendulum_batch()
    meta.training_step(data, opt)
    first = [p.grad.clone() for p in meta.parameters()]
    meta.training_step(data, opt)
    for a, p in zip(first, meta.parameters()):
        torch.testing.assert_close(p.grad, a)


def test_training_step_clips_the_outer_gradient():
    torch.manual_seed(0)
    model, g = Step(), nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 4))
    meta = MetaTailoring(model, g, inner_lr=1e-2, clip_grad_norm=1e-3)
    opt = torch.optim.SGD(meta.parameter_groups(lr_out=1.0, lr_emb=1.0))
    before = [p.detach().clone() for p in meta.parameters()]
    meta.training_step(pendulum_batch(), opt)
    grad_norm = torch.cat([p.grad.reshape(-1) for p in meta.parameters()]).norm()
    moved = torch.cat([(p.detach() - b).reshape(-1) for p, b in zip(meta.parameters(), before)])
    assert float(grad_norm) == pytest.approx(1e-3, rel=1e-4)
    assert float(moved.norm()) == pytest.approx(1e-3, rel=1e-4)  # SGD at lr 1


def test_the_inner_loss_horizon_is_capped_by_the_training_horizon():
    """``loss_horizon=8`` on a 3-frame target: the inner loss is that of a 2-step rollout."""
    from symgraph.noether import noether_loss, rollout

    torch.manual_seed(0)
    model, g = Step(), nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 4))
    meta = MetaTailoring(model, g, inner_lr=1e-2, loss_horizon=8)
    data = pendulum_batch(steps=2)
    with torch.no_grad():
        want = float(noether_loss(g, rollout(model, data[0], 2), reduction="mean"))
    opt = torch.optim.SGD(meta.parameter_groups(lr_out=1e-3, lr_emb=1e-3))
    assert meta.training_step(data, opt)["inner"] == pytest.approx(want, rel=1e-6)


def test_defaults_clip_the_inner_step_and_average_over_frames():
    """The defaults (mean over frames, inner gradient clipped to norm 1) keep one inner step
    bounded: a quantity with a huge Noether gradient moves the tailored weights by at most
    ``inner_lr`` (the clipped step), where the sum and no clipping take a huge one."""
    torch.manual_seed(0)
    model, g = Step(), nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 4))
    meta = MetaTailoring(model, lambda x: 1e4 * g(x), inner_lr=1e-2)
    assert (meta.reduction, meta.max_grad_norm) == ("mean", 1.0)
    data = pendulum_batch(steps=4)
    moved = [
        max(float((p.detach() - model.state_dict()[k]).abs().max()) for k, p in r.params.items())
        for r in (
            meta.tailor(data[0], 4),
            MetaTailoring(model, lambda x: 1e4 * g(x), inner_lr=1e-2, reduction="sum",
                          max_grad_norm=None).tailor(data[0], 4),
        )
    ]  # fmt: skip
    assert moved[0] <= 1e-2 * (1 + 1e-6) < 1.0 < moved[1]


def test_a_target_needs_two_frames_and_inner_steps_an_integer():
    model, g = Step(), nn.Sequential(nn.Linear(2, 4))
    meta = MetaTailoring(model, g)
    opt = torch.optim.SGD(meta.parameter_groups(1e-3, 1e-3))
    with pytest.raises(ValueError, match="target: expected at least 2 frames"):
        meta.training_step(pendulum_batch()[:1], opt)
    with pytest.raises(ValueError, match="inner_steps: expected an integer >= 0, got True"):
        MetaTailoring(model, g, inner_steps=True)
