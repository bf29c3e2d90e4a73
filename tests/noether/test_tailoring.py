"""tailor(): leaves the model untouched, returns predictions, is differentiable."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from symgraph.noether import (
    Frame,
    ScaleShift,
    noether_loss,
    rollout,
    select_parameters,
    tailor,
)


def energy(x: torch.Tensor) -> torch.Tensor:
    """Pendulum Hamiltonian of states ``[..., 2]`` = (q, p)."""
    return x[..., 1] ** 2 + 3 * (1 - torch.cos(x[..., 0]))


class Step(nn.Module):
    """x -> x + MLP(x), with a BatchNorm buffer and a ScaleShift layer."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(2, 16)
        self.norm = nn.BatchNorm1d(16)
        self.cond = ScaleShift(16)
        self.out = nn.Linear(16, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.1 * self.out(self.cond(torch.tanh(self.norm(self.inp(x)))))


class Plain(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), ScaleShift(16), nn.Linear(16, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.1 * self.net(x)


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_tailor_leaves_model_untouched_and_predicts():
    model = Step().train()
    before = snapshot(model)
    x0 = torch.randn(8, 2)
    res = tailor(model, x0, energy, steps=3, lr=1e-2, horizon=5)
    after = snapshot(model)
    assert before.keys() == after.keys()
    for k in before:
        assert torch.equal(before[k], after[k]), k  # bit-identical, buffers included
    assert all(p.grad is None for p in model.parameters())
    assert res.predictions.shape == (6, 8, 2)
    assert torch.equal(res.predictions[0], x0)
    assert res.inner_losses.shape == (3,)
    assert set(res.params) == {k for k, _ in model.named_parameters()}
    assert not torch.equal(res.params["out.weight"], model.out.weight)


def test_zero_steps_is_the_plain_rollout_and_loss_decreases():
    model = Plain()
    x0 = torch.randn(16, 2)
    plain = rollout(model, x0, 6)
    res0 = tailor(model, x0, energy, steps=0, horizon=6)
    torch.testing.assert_close(res0.predictions, plain)
    res = tailor(model, x0, energy, steps=5, lr=1e-2, horizon=6)
    losses = res.inner_losses
    final = noether_loss(energy, res.predictions)
    assert final < losses[0]
    assert bool((losses[1:] <= losses[:-1] + 1e-6).all())


def test_gradients_reach_theta_and_phi_only_with_create_graph():
    model = Plain()
    phi = nn.Linear(2, 3)
    g = lambda x: phi(torch.stack([torch.cos(x[..., 0]), x[..., 1] ** 2], -1))  # noqa: E731
    x0, target = torch.randn(4, 2), torch.randn(7, 4, 2)
    res = tailor(model, x0, g, steps=1, lr=0.1, horizon=6, create_graph=True)
    ((res.predictions - target) ** 2).mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in phi.parameters())
    # first order: the inner gradient is a constant, so phi gets nothing
    model.zero_grad(), phi.zero_grad(set_to_none=True)
    res = tailor(model, x0, g, steps=1, lr=0.1, horizon=6, create_graph=False)
    ((res.predictions - target) ** 2).mean().backward()
    assert all(p.grad is None for p in phi.parameters())
    assert all(p.grad is not None for p in model.parameters())


def test_meta_gradient_matches_finite_differences():
    torch.manual_seed(1)
    model = Plain().double()
    x0 = torch.randn(3, 2, dtype=torch.float64)

    def predict(phi: torch.Tensor) -> torch.Tensor:
        g = lambda x: (phi * torch.stack([x[..., 0] ** 2, x[..., 1] ** 2], -1)).sum(-1)  # noqa: E731
        return tailor(model, x0, g, steps=2, lr=0.05, horizon=3, create_graph=True).predictions

    phi = torch.tensor([0.7, 1.3], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(predict, (phi,), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("create_graph", [False, True])
def test_per_sample_matches_one_at_a_time(create_graph):
    model = Plain().double()
    x0 = torch.randn(5, 2, dtype=torch.float64)
    batched = tailor(
        model, x0, energy, steps=2, lr=1e-2, horizon=4, per_sample=True, create_graph=create_graph
    )
    assert batched.predictions.shape == (5, 5, 2)
    assert batched.params["net.0.weight"].shape == (5, 16, 2)
    assert batched.inner_losses.shape == (5, 2)
    for b in range(5):
        one = tailor(model, x0[b : b + 1], energy, steps=2, lr=1e-2, horizon=4)
        torch.testing.assert_close(batched.predictions[:, b], one.predictions[:, 0])
        torch.testing.assert_close(batched.params["net.3.bias"][b], one.params["net.3.bias"])
    if create_graph:
        batched.predictions.sum().backward()
        assert model.net[0].weight.grad is not None


@pytest.mark.parametrize("per_sample, params", [(False, None), (True, None), (True, "scale_shift")])
def test_clipped_meta_gradient_is_finite_when_an_inner_gradient_vanishes(per_sample, params):
    """A conserved quantity the rollout keeps exactly has a zero inner gradient; clipping
    it must not make the second-order gradient NaN (the derivative of the norm at 0)."""
    model = Plain().double()
    x0 = torch.randn(3, 2, dtype=torch.float64)
    res = tailor(
        model,
        x0,
        lambda x: 0.0 * x.sum(-1),  # constant, but connected to the parameters
        steps=1,
        lr=1e-2,
        params=params,
        horizon=2,
        create_graph=True,
        per_sample=per_sample,
        max_grad_norm=1.0,
    )
    res.predictions.square().sum().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(bool(g.isfinite().all()) for g in grads)


def test_clipped_meta_gradient_of_a_lone_atoms_angular_momentum_is_finite():
    """The angular momentum of a one-atom molecule is 0 whatever the model predicts."""
    from symgraph.models.dynamics import EquivariantDynamics
    from symgraph.noether import AngularMomentum

    torch.manual_seed(0)
    model = EquivariantDynamics(hidden=8, num_layers=1).double()
    x0 = Frame(
        torch.randn(1, 3, dtype=torch.float64),
        0.01 * torch.randn(1, 3, dtype=torch.float64),
        torch.tensor([8]),
    )
    res = tailor(
        model, x0, AngularMomentum(), steps=1, lr=1e-2, horizon=2, create_graph=True,
        max_grad_norm=1.0,
    )  # fmt: skip
    res.predictions.positions.square().sum().backward()
    assert all(bool(p.grad.isfinite().all()) for p in model.parameters() if p.grad is not None)


def test_parameter_selection():
    model = Plain()
    assert set(select_parameters(model, "scale_shift")) == {"net.2.weight", "net.2.bias"}
    assert set(select_parameters(model, ["net.3.bias"])) == {"net.3.bias"}
    assert set(select_parameters(model, lambda k, p: k.endswith("bias"))) == {
        "net.0.bias",
        "net.2.bias",
        "net.3.bias",
    }
    x0 = torch.randn(4, 2)
    res = tailor(model, x0, energy, steps=1, lr=1e-2, horizon=3, params="scale_shift")
    assert set(res.params) == {"net.2.weight", "net.2.bias"}
    with pytest.raises(ValueError, match="unknown parameter names"):
        select_parameters(model, ["nope"])
    with pytest.raises(ValueError, match="matches no parameter"):
        select_parameters(model, lambda k, p: False)
    with pytest.raises(ValueError, match="params: expected"):
        select_parameters(model, "some")
    with pytest.raises(ValueError, match="^horizon: expected a positive int, got 0"):
        tailor(model, x0, energy, horizon=0)
    with pytest.raises(ValueError, match="^horizon: expected a positive int, got True"):
        tailor(model, x0, energy, horizon=True)
    with pytest.raises(ValueError, match="steps"):
        tailor(model, x0, energy, steps=-1, horizon=2)
    with pytest.raises(ValueError, match="lr: expected non-negative finite step sizes"):
        tailor(model, x0, energy, lr=-1.0, horizon=2)
    with pytest.raises(ValueError, match="lr: expected non-negative.*got \\[0.1, nan\\]"):
        tailor(model, x0, energy, lr=[0.1, float("nan")], horizon=2)
    with pytest.raises(ValueError, match="max_grad_norm: expected a positive finite number"):
        tailor(model, x0, energy, max_grad_norm=-1.0, horizon=2)


def test_tailor_under_no_grad_still_adapts():
    model = Plain()
    x0 = torch.randn(4, 2)
    with torch.no_grad():
        res = tailor(model, x0, energy, steps=2, lr=1e-2, horizon=4)
    assert res.inner_losses[1] < res.inner_losses[0]
    assert not res.predictions.requires_grad


def test_per_sample_scale_shift_copies_match_one_at_a_time():
    model = Plain().double()
    x0 = torch.randn(4, 2, dtype=torch.float64)
    fast = tailor(
        model,
        x0,
        energy,
        steps=2,
        lr=0.05,
        horizon=4,
        params="scale_shift",
        per_sample=True,
        max_grad_norm=0.5,
    )
    assert fast.params["net.2.weight"].shape == (4, 16) and fast.inner_losses.shape == (4, 2)
    for b in range(4):
        one = tailor(
            model,
            x0[b : b + 1],
            energy,
            steps=2,
            lr=0.05,
            horizon=4,
            params="scale_shift",
            max_grad_norm=0.5,
        )
        torch.testing.assert_close(fast.predictions[:, b], one.predictions[:, 0])
        torch.testing.assert_close(fast.params["net.2.bias"][b], one.params["net.2.bias"])
        torch.testing.assert_close(fast.inner_losses[b], one.inner_losses)


def test_loss_horizon_shorter_than_prediction_horizon():
    model = Plain()
    x0 = torch.randn(3, 2)
    res = tailor(model, x0, energy, steps=1, lr=1e-2, horizon=8, loss_horizon=3)
    assert res.predictions.shape == (9, 3, 2)
    torch.testing.assert_close(res.predictions, rollout(model, x0, 8, res.params))
    with pytest.raises(ValueError, match="loss_horizon"):
        tailor(model, x0, energy, horizon=8, loss_horizon=0)


@pytest.mark.parametrize("per_sample", [False, True])
@pytest.mark.parametrize("params", [None, "scale_shift"])
def test_line_search_never_increases_the_noether_loss(per_sample, params):
    from symgraph.noether import noether_losses

    model = Plain()
    x0 = torch.randn(6, 2) * 2
    rates = [1e-3, 1e-2, 1e-1, 10.0]  # the last one always overshoots
    res = tailor(
        model, x0, energy, steps=2, lr=rates, params=params, horizon=5, per_sample=per_sample
    )
    before = noether_losses(energy, rollout(model, x0, 5))
    after = noether_losses(energy, res.predictions)
    if per_sample:
        assert bool((after <= before + 1e-6).all())
    else:
        assert after.mean() <= before.mean() + 1e-6
    assert torch.isfinite(res.predictions).all()


def test_rollout_without_params_updates_buffers_as_a_forward_call_does():
    """Training through rollout keeps BatchNorm's running statistics; tailoring (params
    given) works on private copies of the buffers."""
    model = Step().train()
    x0 = torch.randn(8, 2)
    rollout(model, x0, 2)
    assert int(model.norm.num_batches_tracked) == 2
    assert model.norm.running_mean.abs().sum() > 0
    before = snapshot(model)
    rollout(model, x0, 2, dict(model.named_parameters()))
    for k, v in snapshot(model).items():
        assert torch.equal(before[k], v), k


def test_per_sample_refuses_batch_statistics():
    model = Step().train()
    x0 = torch.randn(4, 2)
    for params in (None, "scale_shift"):
        with pytest.raises(ValueError, match="per_sample=True: model.norm normalises with batch"):
            tailor(model, x0, energy, steps=1, lr=1e-2, horizon=2, params=params, per_sample=True)
    model.eval()  # running statistics: the samples are independent again
    fast = tailor(model, x0, energy, steps=1, lr=1e-2, horizon=2, params="scale_shift",
                  per_sample=True)  # fmt: skip
    one = tailor(model, x0[:1], energy, steps=1, lr=1e-2, horizon=2, params="scale_shift")
    torch.testing.assert_close(fast.predictions[:, 0], one.predictions[:, 0])


def test_no_steps_returns_copies_and_losses_of_the_model_dtype():
    model = Plain().double()
    x0 = torch.randn(3, 2, dtype=torch.float64)
    for per_sample in (False, True):
        res = tailor(model, x0, energy, steps=0, lr=1e-2, horizon=2, per_sample=per_sample)
        assert res.inner_losses.dtype == torch.float64 and res.inner_losses.numel() == 0
        weight = res.params["net.0.weight"]
        assert weight.data_ptr() != model.net[0].weight.data_ptr()
        torch.testing.assert_close(weight[0] if per_sample else weight, model.net[0].weight)


def test_bad_learning_rates_are_named():
    model = Plain()
    x0 = torch.randn(2, 2)
    with pytest.raises(ValueError, match=r"lr: expected a step size or a non-empty sequence"):
        tailor(model, x0, energy, lr=[], horizon=2)
    with pytest.raises(ValueError, match=r"lr: expected a non-negative finite step size.*-0.05"):
        tailor(model, x0, energy, lr=torch.tensor(-0.05), horizon=2)
    with pytest.raises(ValueError, match=r"lr: expected a scalar tensor, got shape \[2\]"):
        tailor(model, x0, energy, lr=torch.tensor([0.1, 0.2]), horizon=2)
    learned = torch.tensor(-0.05, requires_grad=True)  # a learned rate is the user's to keep
    tailor(model, x0, energy, steps=1, lr=learned, horizon=2)


def test_inference_mode_is_refused_with_the_alternative():
    model = Plain()
    with torch.inference_mode():
        x0 = torch.randn(2, 2)
        with pytest.raises(RuntimeError, match=r"inference_mode.*torch.no_grad\(\) instead"):
            tailor(model, x0, energy, steps=1, lr=1e-2, horizon=2)
        assert tailor(model, x0, energy, steps=0, horizon=2).predictions.shape == (3, 2, 2)


@pytest.mark.parametrize("per_sample", [False, True])
def test_line_search_keeps_the_model_when_every_rate_overshoots(per_sample):
    """With only rates that overshoot, "no step" is the best choice: the plain rollout."""
    torch.manual_seed(0)
    model, x0 = Plain(), torch.randn(6, 2) * 2
    res = tailor(model, x0, energy, steps=2, lr=[10.0, 100.0], horizon=5, per_sample=per_sample)
    torch.testing.assert_close(res.predictions, rollout(model, x0, 5))


def test_per_sample_refuses_batch_norm_without_running_statistics():
    """In eval mode too, a BatchNorm without running statistics normalises with the batch."""
    model = Step()
    model.norm = nn.BatchNorm1d(16, track_running_stats=False)
    model.eval()
    with pytest.raises(ValueError, match="batch statistics"):
        tailor(model, torch.randn(4, 2), energy, steps=1, lr=1e-2, horizon=2, per_sample=True)


def _molecules() -> Frame:
    """Two molecules (3 and 2 atoms) in float64."""
    gen = torch.Generator().manual_seed(0)
    pos = torch.randn(5, 3, generator=gen, dtype=torch.float64)
    vel = 0.01 * torch.randn(5, 3, generator=gen, dtype=torch.float64)
    return Frame(pos, vel, torch.tensor([6, 1, 1, 8, 1]), batch=torch.tensor([0, 0, 0, 1, 1]))


def _kinetic(frame: Frame) -> torch.Tensor:
    """Kinetic energy per molecule ``[B, 1]``."""
    per_atom = 0.5 * frame.mass * frame.vel.square().sum(-1)
    return torch.zeros(frame.num_graphs, 1, dtype=per_atom.dtype).index_add(
        0, frame.batch_index(), per_atom[:, None]
    )


@pytest.mark.parametrize("kind", ["egnn", "steerable"])
def test_frame_rollouts_carry_the_models_time_step(kind):
    """A rollout of Frames is a Trajectory ``model.dt`` fs apart, plain or tailored (shared
    or per molecule), so it can be compared with, sliced and scored like MD trajectories."""
    from symgraph.models.dynamics import EquivariantDynamics
    from symgraph.models.steerable_dynamics import SteerableDynamics

    torch.manual_seed(0)
    if kind == "egnn":
        model = EquivariantDynamics(hidden=8, num_layers=1, dt=0.5).double()
    else:
        model = SteerableDynamics("O3", "4x0e + 2x1o", num_layers=1, dt=0.5).double()
    x0 = _molecules()
    assert rollout(model, x0, 3).dt == 0.5
    assert rollout(model, x0, 2, dt=0.5)[::2].dt == 1.0
    for per_sample in (False, True):
        result = tailor(model, x0, _kinetic, steps=1, lr=1e-4, horizon=2, per_sample=per_sample)
        assert len(result.predictions) == 3 and result.predictions.dt == 0.5


class Drift(nn.Module):
    """A one-step model of Frames without a ``dt`` of its own: ``pos + speed · vel``."""

    def __init__(self) -> None:
        super().__init__()
        self.speed = nn.Parameter(torch.ones((), dtype=torch.float64))

    def forward(self, pos, vel, z, batch):
        return pos + self.speed * vel, vel


def test_rollout_dt_of_a_model_without_one_and_bad_dt_values():
    """A model without ``dt`` gives ``dt=None`` unless one is passed; a ``dt`` that is not
    positive, contradicts the model's, or comes with tensor states is refused by name."""
    from symgraph.models.dynamics import EquivariantDynamics

    x0 = _molecules()
    assert rollout(Drift(), x0, 2).dt is None
    assert rollout(Drift(), x0, 2, dt=2.0).dt == 2.0
    for per_sample in (False, True):  # tailor passes its dt on to the predictions
        tailored = tailor(Drift(), x0, _kinetic, steps=0, horizon=2, per_sample=per_sample)
        assert tailored.predictions.dt is None
        tailored = tailor(Drift(), x0, _kinetic, steps=0, horizon=2, per_sample=per_sample, dt=2.0)
        assert tailored.predictions.dt == 2.0
    with pytest.raises(ValueError, match="dt: only a rollout of Frames"):
        tailor(Plain(), torch.randn(3, 2), _kinetic, steps=0, horizon=2, dt=1.0)
    with pytest.raises(ValueError, match="dt: expected a positive finite time step in fs, got 0"):
        rollout(Drift(), x0, 2, dt=0)
    with pytest.raises(ValueError, match="dt: expected a positive finite time step in fs"):
        rollout(Drift(), x0, 2, dt=True)
    model = EquivariantDynamics(hidden=8, num_layers=1, dt=0.5).double()
    with pytest.raises(ValueError, match="dt: the model steps by its own dt = 0.5 fs, got dt=1.0"):
        rollout(model, x0, 2, dt=1.0)
    with pytest.raises(ValueError, match="dt: only a rollout of Frames .* got x0 of type Tensor"):
        rollout(Plain(), torch.randn(3, 2), 2, dt=1.0)


@pytest.mark.parametrize("own", [0.0, -1.0, float("inf"), float("nan")])
def test_a_models_dt_that_is_no_positive_finite_time_step_is_not_its_own(own):
    """Only a positive finite ``model.dt`` is a time step: any other value rolls out as a
    model without one (``dt=None`` unless one is passed, and then any one is accepted)."""

    def with_dt() -> Drift:
        model = Drift()
        model.dt = own
        return model

    x0 = _molecules()
    assert rollout(with_dt(), x0, 2).dt is None
    assert rollout(with_dt(), x0, 2, dt=2.0).dt == 2.0
