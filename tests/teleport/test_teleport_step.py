"""``teleport``: steeper gradient, same loss, refusals undone bit for bit, optimizer state."""

from __future__ import annotations

import copy
import importlib
import warnings

import pytest
import torch
from torch import nn
from torch_geometric.nn.models import GIN

from symgraph.teleport import (
    NoSymmetryError,
    ParamSlice,
    RescaleSymmetry,
    SO2ChartSymmetry,
    TeleportBatchError,
    TeleportRefusedWarning,
    find_symmetries,
    teleport,
)


def mse(model, batch):
    x, y = batch
    return (model(x) - y).pow(2).mean()


def value(loss_fn, model, batch) -> float:
    with torch.no_grad():
        return float(loss_fn(model, batch))


def grad_norm_sq(model, loss_fn, batch) -> float:
    model.zero_grad()
    loss_fn(model, batch).backward()
    return float(sum(p.grad.pow(2).sum() for p in model.parameters() if p.grad is not None))


def snapshot(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_bit_identical(model, saved) -> None:
    for k, v in model.state_dict().items():
        assert torch.equal(v, saved[k]), k


def _mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(3, 16), nn.ReLU(), nn.Linear(16, 16), nn.LeakyReLU(0.1), nn.Linear(16, 2)
    ).double()


def _data(n: int = 64, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=gen, dtype=torch.float64)
    return x, torch.sin(x[:, :2]) + 0.1 * torch.randn(n, 2, generator=gen, dtype=torch.float64)


def test_teleport_increases_gradient_norm_and_keeps_loss():
    model, batch = _mlp(), _data()
    loss0, gn0 = value(mse, model, batch), grad_norm_sq(model, mse, batch)
    result = teleport(model, mse, batch, steps=10, lr=0.2)
    assert result.accepted and result.moved
    loss1, gn1 = value(mse, model, batch), grad_norm_sq(model, mse, batch)
    assert loss1 == pytest.approx(loss0, rel=1e-12)
    assert gn1 > 1.5 * gn0
    assert result.grad_norm_sq_before == pytest.approx(gn0, rel=1e-10)
    assert result.grad_norm_sq_after == pytest.approx(gn1, rel=1e-10)
    assert result.objective[0] == pytest.approx(gn0, rel=1e-10)
    assert max(result.objective) == pytest.approx(result.grad_norm_sq_after)


def test_a_compiled_model_is_teleported_through_the_module_it_wraps():
    """Compiled graphs have no double backward (torch raised "does not support double
    backward"): teleport, find_symmetries and the hook use the wrapped module, whose
    parameters the compiled model shares, and the two stay one model."""
    from symgraph.teleport import Teleport

    model, batch = _mlp(), _data()
    compiled = torch.compile(model, backend="aot_eager")
    names = [s.param_names for s in find_symmetries(compiled)]
    assert names == [s.param_names for s in find_symmetries(model)]
    loss0 = value(mse, compiled, batch)
    result = teleport(compiled, mse, batch, steps=5, lr=0.2)
    assert result.accepted and result.moved
    assert value(mse, compiled, batch) == pytest.approx(loss0, rel=1e-10)
    torch.testing.assert_close(compiled(batch[0]), model(batch[0]))
    hook = Teleport("every:1", mse, steps=2, lr=0.2)
    assert hook(compiled, batch, step=1).accepted
    optimizer = torch.optim.Adam(compiled.parameters(), lr=1e-3)
    optimizer.zero_grad()
    mse(compiled, batch).backward()
    optimizer.step()
    running = Teleport("every:1", mse, objective="min_grad_norm", gradient="optimizer")
    assert running(compiled, batch, optimizer, step=1).accepted  # names of the wrapped module


def test_teleport_on_pyg_gnn(graph):
    x, edge_index = graph(num_nodes=30, num_edges=90)
    torch.manual_seed(0)
    model = GIN(4, 16, 3, out_channels=1).double()
    y = torch.randn(30, 1, dtype=torch.float64)

    def loss_fn(m, b):
        return (m(b[0], b[1]) - b[2]).pow(2).mean()

    batch = (x, edge_index, y)
    loss0, gn0 = value(loss_fn, model, batch), grad_norm_sq(model, loss_fn, batch)
    result = teleport(model, loss_fn, batch, steps=5, lr=0.1)
    assert result.accepted and result.moved
    assert value(loss_fn, model, batch) == pytest.approx(loss0, rel=1e-11)
    assert grad_norm_sq(model, loss_fn, batch) > gn0


def test_teleport_gl_paper_mlp():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(5, 6, bias=False),
        nn.LeakyReLU(0.1),
        nn.Linear(6, 7, bias=False),
        nn.LeakyReLU(0.1),
        nn.Linear(7, 8, bias=False),
    ).double()
    batch = (torch.randn(4, 5, dtype=torch.float64), torch.randn(4, 8, dtype=torch.float64))
    loss0, gn0 = value(mse, model, batch), grad_norm_sq(model, mse, batch)
    result = teleport(model, mse, batch, steps=8, lr=0.05, kinds="gl")
    assert result.accepted and result.moved
    assert value(mse, model, batch) == pytest.approx(loss0, rel=1e-9)
    assert grad_norm_sq(model, mse, batch) > gn0


def test_gl_batch_too_large_is_reported_and_model_untouched():
    model = _mlp()
    model[1] = nn.LeakyReLU(0.2)
    saved = snapshot(model)
    with pytest.raises(TeleportBatchError, match="at most 4 linearly independent"):
        teleport(model, mse, _data(n=32), kinds="gl")
    assert_bit_identical(model, saved)


def test_refused_teleport_leaves_model_and_optimizer_bit_identical():
    model, batch = _mlp(), _data()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    mse(model, batch).backward()
    optimizer.step()
    saved = snapshot(model)
    saved_state = {k: v.clone() for k, v in optimizer.state[model[4].weight].items()}
    # not a symmetry: scales the output layer, so the loss moves
    bogus = RescaleSymmetry("bogus", [ParamSlice("4.weight", 0)], [], 2, kind="custom")
    with pytest.warns(TeleportRefusedWarning, match="refused"):
        result = teleport(model, mse, batch, symmetries=[bogus], optimizer=optimizer)
    assert not result.accepted and not result.moved
    assert "loss moved" in result.message
    assert_bit_identical(model, saved)
    for k, v in optimizer.state[model[4].weight].items():
        assert torch.equal(v, saved_state[k])


class _Interrupt(KeyboardInterrupt):
    """Raised by a test to stand for Ctrl-C at a chosen point."""


@pytest.mark.parametrize("where", ["final loss check", "optimizer update"])
def test_an_interrupt_before_the_teleport_is_committed_leaves_model_and_optimizer_as_they_were(
    where, monkeypatch
):
    """Ctrl-C in the final loss check (after the new weights are written) or while the new
    moments are computed puts the weights back and leaves the optimizer untouched."""
    teleport_module = importlib.import_module("symgraph.teleport.teleport")

    def trained():
        model, batch = _mlp(), _data()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        for _ in range(2):
            optimizer.zero_grad()
            mse(model, batch).backward()
            optimizer.step()
        return model, batch, optimizer

    model, batch, optimizer = trained()
    calls = []
    result = teleport(
        model, lambda m, b: calls.append(1) or mse(m, b), batch, steps=3, optimizer=optimizer
    )
    assert result.moved and set(result.optimizer_state.values()) == {"transformed"}

    model, batch, optimizer = trained()
    saved = snapshot(model)
    saved_state = {p: {k: v.clone() for k, v in s.items()} for p, s in optimizer.state.items()}
    seen = []

    def loss_fn(m, b):
        seen.append(1)
        if where == "final loss check" and len(seen) == len(calls):
            raise _Interrupt
        return mse(m, b)

    if where == "optimizer update":

        def interrupted(*args, **kwargs):
            raise _Interrupt

        monkeypatch.setattr(teleport_module, "plan_optimizer_state", interrupted)
    with pytest.raises(_Interrupt):
        teleport(model, loss_fn, batch, steps=3, optimizer=optimizer)
    assert len(seen) == len(calls)  # the interrupt came after the last loss evaluation
    assert_bit_identical(model, saved)
    assert set(optimizer.state) == set(saved_state)
    for p, state in optimizer.state.items():
        assert state.keys() == saved_state[p].keys()
        for k, v in state.items():
            assert torch.equal(v, saved_state[p][k])


@pytest.mark.parametrize("objective", ["grad_norm", "min_grad_norm", "min_norm"])
def test_a_loss_that_is_not_finite_is_refused_before_anything_moves(objective):
    model, (x, y) = _mlp(), _data()
    y = y.clone()
    y[0] = float("nan")
    saved = snapshot(model)
    with pytest.warns(TeleportRefusedWarning, match="not finite"):
        result = teleport(model, mse, (x, y), objective=objective, kinds=("rescale",))
    assert not result.accepted and not result.moved and "nan" in result.message
    assert_bit_identical(model, saved)


def test_steps_zero_only_measures():
    model, batch = _mlp(), _data()
    saved = snapshot(model)
    result = teleport(model, mse, batch, steps=0)
    assert result.accepted and not result.moved
    assert result.grad_norm_sq_after == result.grad_norm_sq_before
    assert_bit_identical(model, saved)


def test_dropout_and_batchnorm_in_train_mode():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(3, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 2)
    ).double()
    model.train()
    batch = _data()
    running = model[1].running_mean.clone()
    rng = torch.get_rng_state()
    result = teleport(model, mse, batch, steps=5, lr=0.2)
    assert result.accepted and result.moved
    assert torch.equal(model[1].running_mean, running)  # buffers untouched
    assert torch.equal(torch.get_rng_state(), rng)  # global RNG untouched
    torch.set_rng_state(rng)
    loss_after = value(mse, model, batch)
    assert loss_after == pytest.approx(result.loss_before, rel=1e-10)


@pytest.mark.parametrize("amsgrad", [False, True])
def test_adam_moments_are_transported(amsgrad):
    """Adam's moments (and AMSGrad's running maximum of the second) follow the rescaling."""
    model, batch = _mlp(), _data()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, amsgrad=amsgrad)
    for _ in range(3):
        optimizer.zero_grad()
        mse(model, batch).backward()
        optimizer.step()
    before = {p: {k: v.clone() for k, v in s.items()} for p, s in optimizer.state.items()}
    weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    result = teleport(model, mse, batch, steps=5, lr=0.2, optimizer=optimizer)
    assert result.moved and set(result.optimizer_state.values()) == {"transformed"}
    scaled = 0
    for name, p in model.named_parameters():
        # the factor c of w <- c * w, read back from the weights
        c = p.detach() / weights[name]
        scaled += int(bool((c - 1).abs().max() > 1e-3))
        state, old = optimizer.state[p], before[p]
        assert torch.allclose(state["exp_avg"], old["exp_avg"] / c, rtol=1e-9)
        assert torch.allclose(state["exp_avg_sq"], old["exp_avg_sq"] / c**2, rtol=1e-9)
        if amsgrad:
            want = old["max_exp_avg_sq"] / c**2
            assert torch.allclose(state["max_exp_avg_sq"], want, rtol=1e-9)
        assert torch.equal(state["step"], old["step"])
    assert scaled >= 2  # a layer pair moved by more than rounding: the test is not c = 1
    model, batch = _mlp(), _data()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    mse(model, batch).backward()
    optimizer.step()
    result = teleport(model, mse, batch, steps=3, optimizer=optimizer, optimizer_state="reset")
    assert set(result.optimizer_state.values()) == {"reset"}
    assert model[0].weight not in optimizer.state

    torch.manual_seed(0)
    gl_model = nn.Sequential(nn.Linear(5, 6), nn.LeakyReLU(0.1), nn.Linear(6, 2)).double()
    gl_batch = (torch.randn(4, 5, dtype=torch.float64), torch.randn(4, 2, dtype=torch.float64))
    optimizer = torch.optim.Adam(gl_model.parameters(), lr=1e-3)
    mse(gl_model, gl_batch).backward()
    optimizer.step()
    result = teleport(gl_model, mse, gl_batch, steps=3, lr=0.05, kinds="gl", optimizer=optimizer)
    assert result.moved and set(result.optimizer_state.values()) == {"reset"}


@pytest.mark.parametrize(
    "make",
    [
        lambda ps: torch.optim.Adam(ps, lr=1e-3, eps=1e-14),
        lambda ps: torch.optim.RMSprop(ps, lr=1e-3, momentum=0.9, eps=1e-14),
        lambda ps: torch.optim.RMSprop(ps, lr=1e-3, momentum=0.9, centered=True, eps=1e-14),
    ],
    ids=["adam", "rmsprop-momentum", "rmsprop-centered"],
)
def test_normalising_optimizers_take_the_same_step_after_a_transported_teleport(make):
    """Adam's and RMSprop's next update is invariant to a rescaling of the gradient: with the
    moments transported, the step after a teleport is the step before it (ε made negligible)."""
    model, batch = _mlp(), _data()
    optimizer = make(model.parameters())
    for _ in range(3):
        optimizer.zero_grad()
        mse(model, batch).backward()
        optimizer.step()
    twin = _mlp()
    twin.load_state_dict(model.state_dict())
    twin_opt = make(twin.parameters())
    twin_opt.load_state_dict(copy.deepcopy(optimizer.state_dict()))  # its own moments

    def update(net, opt):
        start = {n: p.detach().clone() for n, p in net.named_parameters()}
        opt.zero_grad()
        mse(net, batch).backward()
        opt.step()
        return {n: p.detach() - start[n] for n, p in net.named_parameters()}

    result = teleport(model, mse, batch, steps=5, lr=0.2, optimizer=optimizer)
    assert result.moved and set(result.optimizer_state.values()) == {"transformed"}
    after, before = update(model, optimizer), update(twin, twin_opt)
    for name in after:
        assert torch.allclose(after[name], before[name], rtol=1e-9, atol=1e-15), name


def test_factored_or_unknown_moments_are_reset():
    if not hasattr(torch.optim, "Adafactor"):
        pytest.skip("torch.optim.Adafactor is new in torch 2.5")
    model, batch = _mlp(), _data()
    optimizer = torch.optim.Adafactor(model.parameters(), lr=1e-3)
    optimizer.zero_grad()
    mse(model, batch).backward()
    optimizer.step()
    result = teleport(model, mse, batch, steps=5, lr=0.2, optimizer=optimizer)
    assert result.moved
    assert result.optimizer_state["2.weight"] == "reset"  # row_var / col_var of a matrix


def test_unknown_moments_of_a_one_element_parameter_are_reset():
    """Adamax's ``exp_inf`` is no known moment, also for a parameter of one element (its
    ``exp_avg`` was divided by the scale and ``exp_inf`` left alone)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 1), nn.ReLU(), nn.Linear(1, 2)).double()  # one unit
    batch = _data()
    optimizer = torch.optim.Adamax(model.parameters(), lr=1e-2)
    for _ in range(4):
        optimizer.zero_grad()
        mse(model, batch).backward()
        optimizer.step()
    result = teleport(model, mse, batch, steps=3, lr=0.5, optimizer=optimizer)
    assert result.moved
    assert result.optimizer_state == {"0.weight": "reset", "0.bias": "reset", "2.weight": "reset"}
    assert all(optimizer.state[p] == {} for p in (model[0].weight, model[0].bias))


def test_a_symmetry_on_a_frozen_parameter_is_refused():
    model, batch = _mlp(), _data()
    model[0].weight.requires_grad_(False)
    sym = RescaleSymmetry("first", [ParamSlice("0.weight", 0)], [ParamSlice("2.weight", 1)], 16)
    saved = snapshot(model)
    with pytest.raises(ValueError, match=r"frozen parameters \['0.weight'\]"):
        teleport(model, mse, batch, steps=2, lr=0.1, symmetries=[sym])
    assert_bit_identical(model, saved)


def test_gl_batch_messages_name_the_real_condition():
    model = nn.Sequential(nn.Linear(3, 4), nn.LeakyReLU(0.1), nn.Linear(4, 2)).double()
    (sym,) = find_symmetries(model, kinds="gl")
    for batch, reason in [
        (torch.zeros(0, 3, dtype=torch.float64), "an empty batch"),
        (torch.ones(3, 3, dtype=torch.float64), "some are linear combinations of others"),
    ]:
        with pytest.raises(TeleportBatchError, match=reason):
            teleport(model, lambda m, x: m(x).square().sum(), batch, steps=1, lr=0.1,
                     symmetries=[sym])  # fmt: skip


def test_an_optimizer_of_the_wrong_type_is_refused_before_anything_moves():
    model, batch = _mlp(), _data()
    saved = snapshot(model)
    scheduler = torch.optim.lr_scheduler.StepLR(torch.optim.SGD(model.parameters(), 0.1), 1)
    with pytest.raises(TypeError, match="optimizer: expected a torch.optim.Optimizer or None"):
        teleport(model, mse, batch, optimizer=scheduler)
    assert_bit_identical(model, saved)


def test_an_optimizer_without_the_moved_parameters_is_refused_before_anything_moves():
    model, batch = _mlp(), _data()
    saved = snapshot(model)
    other = torch.optim.Adam(_mlp().parameters())
    with pytest.raises(ValueError, match=r"optimizer: expected an optimizer holding every .*Adam"):
        teleport(model, mse, batch, optimizer=other)
    head = torch.optim.Adam(list(model.parameters())[-2:])
    with pytest.raises(ValueError, match=r"optimizer: .* without \['0.weight'"):
        teleport(model, mse, batch, optimizer=head)
    assert_bit_identical(model, saved)


def test_so2_booth_teleport():
    class Point(nn.Module):
        def __init__(self):
            super().__init__()
            self.x = nn.Parameter(torch.tensor([-2.0, 4.0], dtype=torch.float64))

    def booth(model, _):
        x = model.x
        return (x[0] + 2 * x[1] - 7) ** 2 + (2 * x[0] + x[1] - 5) ** 2

    sym = SO2ChartSymmetry(
        "SO(2)",
        "x",
        lambda x: torch.stack([x[0] + 2 * x[1] - 7, 2 * x[0] + x[1] - 5]),
        lambda v: torch.stack([(-v[0] + 2 * v[1]) / 3 + 1, (2 * v[0] - v[1]) / 3 + 3]),
    )
    model = Point()
    loss0, gn0 = value(booth, model, None), grad_norm_sq(model, booth, None)
    result = teleport(model, booth, None, steps=20, lr=0.1, symmetries=[sym])
    assert result.accepted and result.moved
    assert value(booth, model, None) == pytest.approx(loss0, rel=1e-12)
    assert grad_norm_sq(model, booth, None) > gn0


def test_bad_input_is_named():
    model, batch = _mlp(), _data()
    with pytest.raises(ValueError, match="steps"):
        teleport(model, mse, batch, steps=-1)
    with pytest.raises(ValueError, match="lr"):
        teleport(model, mse, batch, lr=0.0)
    with pytest.raises(ValueError, match="optimizer_state"):
        teleport(model, mse, batch, optimizer_state="magic")
    with pytest.raises(TypeError, match="loss_fn: expected a scalar"):
        teleport(model, lambda m, b: m(b[0]), batch)
    with pytest.raises(ValueError, match="does not have"):
        teleport(
            model,
            mse,
            batch,
            symmetries=[RescaleSymmetry("x", [ParamSlice("nope.weight", 0)], [], 2)],
        )
    with pytest.raises(NoSymmetryError, match="searched"):
        teleport(nn.Linear(3, 2).double(), mse, batch)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        teleport(model, mse, batch, steps=2)  # no stray warnings on the normal path


def test_found_symmetries_are_reusable():
    model, batch = _mlp(), _data()
    syms = find_symmetries(model)
    first = teleport(model, mse, batch, steps=3, symmetries=syms)
    second = teleport(model, mse, batch, steps=3, symmetries=syms)
    assert first.accepted and second.accepted
    assert second.grad_norm_sq_before == pytest.approx(first.grad_norm_sq_after, rel=1e-9)


def test_descent_objective_improves_one_step_decrease():
    model, batch = _mlp(), _data()
    eta = 0.05

    def one_step_decrease() -> float:
        params = dict(model.named_parameters())
        loss = mse(model, batch)
        grads = torch.autograd.grad(loss, list(params.values()))
        with torch.no_grad():
            ahead = {n: p - eta * g for (n, p), g in zip(params.items(), grads)}
            after = mse(lambda x: torch.func.functional_call(model, ahead, (x,)), batch)
        return float(loss.detach() - after)

    before = one_step_decrease()
    loss0 = value(mse, model, batch)
    result = teleport(model, mse, batch, steps=8, lr=0.2, objective="descent", descent_lr=eta)
    assert result.accepted and result.moved
    assert value(mse, model, batch) == pytest.approx(loss0, rel=1e-12)
    assert result.objective[0] == pytest.approx(before, rel=1e-9)
    assert one_step_decrease() > before
    assert one_step_decrease() == pytest.approx(max(result.objective), rel=1e-9)
    with pytest.raises(ValueError, match="descent_lr: expected a step size .* no optimizer"):
        teleport(model, mse, batch, objective="descent")
    with pytest.raises(ValueError, match="objective"):
        teleport(model, mse, batch, objective="loss")
    # without descent_lr, the optimizer's step size: the same search as with it given
    twin = _mlp()
    twin.load_state_dict(model.state_dict())
    given = teleport(model, mse, batch, steps=3, lr=0.2, objective="descent", descent_lr=eta)
    optimizer = torch.optim.SGD(twin.parameters(), lr=eta)
    taken = teleport(twin, mse, batch, steps=3, lr=0.2, objective="descent", optimizer=optimizer)
    assert taken.objective == pytest.approx(given.objective, rel=1e-12)


def test_min_norm_objective_balances_units_and_keeps_loss():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 16), nn.ReLU(), nn.Linear(16, 2)).double()
    with torch.no_grad():  # unbalance the units: large incoming, small outgoing weights
        model[0].weight.mul_(torch.logspace(-1, 1, 16, dtype=torch.float64)[:, None])
    batch = _data()
    loss0, out0 = value(mse, model, batch), model(batch[0]).detach()
    norm0 = sum(float(p.detach().pow(2).sum()) for p in model.parameters())
    assert float(_log_imbalance(model[0], model[2]).abs().max()) > 1.0
    result = teleport(model, mse, batch, steps=300, lr=0.02, objective="min_norm")
    assert result.accepted and result.moved
    assert value(mse, model, batch) == pytest.approx(loss0, rel=1e-12)
    assert torch.allclose(model(batch[0]), out0, rtol=1e-10, atol=1e-12)
    norm1 = sum(float(p.detach().pow(2).sum()) for p in model.parameters())
    assert norm1 < 0.9 * norm0
    assert -max(result.objective) == pytest.approx(
        float(model[0].weight.detach().pow(2).sum() + model[0].bias.detach().pow(2).sum())
        + float(model[2].weight.detach().pow(2).sum()),
        rel=1e-10,
    )
    # at the minimum of the norm every unit's incoming and outgoing weights are equal in norm
    assert float(_log_imbalance(model[0], model[2]).abs().max()) < 0.05
    assert result.grad_norm_sq_after == pytest.approx(grad_norm_sq(model, mse, batch), rel=1e-9)


def _unit_grad_log_ratio(first: nn.Linear, second: nn.Linear) -> torch.Tensor:
    """log(|∇ incoming weights| / |∇ outgoing weights|) per hidden unit (grads present)."""
    rows = torch.cat([first.weight.grad, first.bias.grad[:, None]], dim=1).norm(dim=1)
    return (rows / second.weight.grad.norm(dim=0)).log()


def test_min_grad_norm_objective_lowers_the_gradient_and_keeps_the_loss():
    model, batch = _mlp(), _data()
    loss0, out0 = value(mse, model, batch), model(batch[0]).detach()
    gn0 = grad_norm_sq(model, mse, batch)
    calls = []

    def counted(model, batch):
        calls.append(1)
        return mse(model, batch)

    result = teleport(model, counted, batch, steps=50, lr=0.05, objective="min_grad_norm")
    assert result.accepted and result.moved
    assert len(calls) == 2  # the gradient at w and the loss check at the chosen point
    assert value(mse, model, batch) == pytest.approx(loss0, rel=1e-12)
    assert torch.allclose(model(batch[0]), out0, rtol=1e-10, atol=1e-12)
    # the 50 search steps never evaluated the model: their values are the transported
    # gradient's, and they are the true ‖∇L‖² at the chosen point
    gn1 = grad_norm_sq(model, mse, batch)
    assert gn1 < 0.95 * gn0
    assert result.grad_norm_sq_before == pytest.approx(gn0, rel=1e-10)
    assert result.grad_norm_sq_after == pytest.approx(gn1, rel=1e-10)
    assert -max(result.objective) == pytest.approx(gn1, rel=1e-10)


def test_min_grad_norm_balances_each_units_gradients():
    """At the minimum of ‖∇L‖² along a rescaling, a unit's incoming and outgoing gradients
    have equal norm (``‖g_in‖² e^{-2t} + ‖g_out‖² e^{2t}`` is smallest there)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 16), nn.ReLU(), nn.Linear(16, 2)).double()
    batch = _data()
    (sym,) = find_symmetries(model, max_imbalance=None)
    sym.max_log_scale = 10.0
    grad_norm_sq(model, mse, batch)
    live = model[2].weight.grad.norm(dim=0) > 0
    assert float(_unit_grad_log_ratio(model[0], model[2])[live].abs().max()) > 0.5
    teleport(model, mse, batch, steps=1000, lr=0.005, symmetries=[sym], objective="min_grad_norm")
    grad_norm_sq(model, mse, batch)
    assert float(_unit_grad_log_ratio(model[0], model[2])[live].abs().max()) < 0.05


def test_min_grad_norm_needs_exact_diagonal_actions_with_a_minimum():
    model = nn.Sequential(nn.Linear(3, 8), nn.Linear(8, 2)).double()
    (sym,) = find_symmetries(model, ("linear",))
    saved = snapshot(model)
    with pytest.raises(ValueError, match="min_grad_norm.*exact diagonal"):
        teleport(model, mse, _data(), symmetries=[sym], objective="min_grad_norm")
    assert_bit_identical(model, saved)
    # along a scale invariance the gradient shrinks as the weights grow: no minimum
    normed = nn.Sequential(nn.Linear(3, 8), nn.LayerNorm(8, eps=0.0), nn.Linear(8, 2)).double()
    saved = snapshot(normed)
    with pytest.raises(ValueError, match="no minimum along a scale invariance.*'norm'"):
        teleport(normed, mse, _data(), kinds=("norm",), objective="min_grad_norm")
    assert_bit_identical(normed, saved)


def test_min_grad_norm_without_gradients_on_the_orbit_does_not_move():
    class WithUnusedBranch(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = nn.Linear(3, 2)
            self.unused = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))

        def forward(self, x):
            return self.head(x)

    model = WithUnusedBranch().double()
    saved = snapshot(model)
    result = teleport(model, mse, _data(), objective="min_grad_norm")
    assert result.accepted and not result.moved
    assert_bit_identical(model, saved)


def _gradient(model, loss_fn, batch) -> dict[str, torch.Tensor]:
    grad_norm_sq(model, loss_fn, batch)
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    return grads


def test_min_grad_norm_with_a_given_gradient_uses_it_and_runs_the_batch_forward_only(
    recording_backward,
):
    """A gradient estimate replaces the batch's gradient: teleporting on batch B with the
    gradient of batch A lands where teleporting on A does (its scale does not matter), and
    the batch is only run forward, for the loss check."""
    first, second = _data(seed=1), _data(seed=2)
    reference = _mlp()
    teleport(reference, mse, first, steps=30, lr=0.05, objective="min_grad_norm")
    model = _mlp()
    estimate = {n: 7.0 * g for n, g in _gradient(model, mse, first).items()}
    loss0 = value(mse, model, second)
    backward = []
    counted = recording_backward(mse, backward)
    result = teleport(
        model, counted, second, steps=30, lr=0.05, objective="min_grad_norm", gradient=estimate
    )
    assert result.accepted and result.moved and not backward
    assert result.loss_before == pytest.approx(loss0, rel=1e-12)
    assert value(mse, model, second) == pytest.approx(loss0, rel=1e-10)
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        assert torch.allclose(p, q, rtol=1e-10, atol=1e-12), name


def test_a_gradient_estimate_is_checked():
    model, batch = _mlp(), _data()
    grads = _gradient(model, mse, batch)
    saved = snapshot(model)
    with pytest.raises(ValueError, match="gradient: an estimate is used only with"):
        teleport(model, mse, batch, gradient=grads)
    partial = {n: g for n, g in grads.items() if not n.startswith("0.")}
    with pytest.raises(ValueError, match=r"gradient: expected an estimate .* \['0.bias'"):
        teleport(model, mse, batch, objective="min_grad_norm", gradient=partial)
    wrong = dict(grads, **{"2.weight": grads["2.weight"][:, :8]})
    with pytest.raises(ValueError, match=r"gradient: expected shape \[16, 16\] for '2.weight'"):
        teleport(model, mse, batch, objective="min_grad_norm", gradient=wrong)
    with pytest.raises(ValueError, match="gradient: 'extra' is not a parameter"):
        extra = dict(grads, extra=grads["0.bias"])
        teleport(model, mse, batch, objective="min_grad_norm", gradient=extra)
    with pytest.raises(TypeError, match="gradient: expected a mapping"):
        teleport(model, mse, batch, objective="min_grad_norm", gradient=list(grads.values()))
    assert_bit_identical(model, saved)


def _log_imbalance(first: nn.Linear, second: nn.Linear) -> torch.Tensor:
    """log(|incoming weights| / |outgoing weights|) per hidden unit between two layers."""
    rows = torch.cat([first.weight, first.bias[:, None]], dim=1).norm(dim=1)
    return (rows / second.weight.norm(dim=0)).log().detach()


def test_repeated_teleports_stay_inside_the_imbalance_bound():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 16), nn.ReLU(), nn.Linear(16, 2)).double()
    batch = _data()
    (sym,) = find_symmetries(model, max_imbalance=3.0)
    assert sym.max_imbalance == 3.0
    start = _log_imbalance(model[0], model[2])
    allowed = torch.clamp(start.abs(), min=float(torch.log(torch.tensor(3.0)))) + 1e-9
    for _ in range(10):
        assert teleport(model, mse, batch, steps=5, lr=1.0, symmetries=[sym]).accepted
        assert bool((_log_imbalance(model[0], model[2]).abs() <= allowed).all())

    # without the bound the same teleports drift further and further
    torch.manual_seed(0)
    unbounded = nn.Sequential(nn.Linear(3, 16), nn.ReLU(), nn.Linear(16, 2)).double()
    syms = find_symmetries(unbounded, max_imbalance=None)
    for _ in range(10):
        teleport(unbounded, mse, batch, steps=5, lr=1.0, symmetries=syms)
    assert float(_log_imbalance(unbounded[0], unbounded[2]).abs().max()) > 2 * float(allowed.max())


def test_linear_gl_teleport_balances_the_factors_and_keeps_the_loss():
    """min_norm over GL(d) on ``Linear → Linear``: ends near ``A Aᵀ = Bᵀ B`` (balanced)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 3), nn.Identity(), nn.Linear(3, 3)).double()
    (sym,) = find_symmetries(model, kinds="linear", max_norm=3.0)
    with torch.no_grad():  # start off balance along a random direction of the orbit
        g = torch.linalg.matrix_exp(0.8 * torch.randn(3, 3, dtype=torch.float64))
        model[0].weight.copy_(g @ model[0].weight)
        model[0].bias.copy_(g @ model[0].bias)
        model[2].weight.copy_(model[2].weight @ torch.linalg.inv(g))
    batch = (torch.randn(64, 3, dtype=torch.float64), torch.randn(64, 3, dtype=torch.float64))
    loss0, out0 = value(mse, model, batch), model(batch[0]).detach()

    def imbalance() -> float:
        a = torch.cat([model[0].weight, model[0].bias[:, None]], dim=1).detach()
        b = model[2].weight.detach()
        return float((a @ a.T - b.T @ b).norm() / (a @ a.T).norm())

    before = imbalance()
    result = teleport(model, mse, batch, steps=400, lr=0.01, symmetries=[sym], objective="min_norm")
    assert result.accepted and result.moved
    assert value(mse, model, batch) == pytest.approx(loss0, rel=1e-12)
    assert torch.allclose(model(batch[0]), out0, rtol=1e-10, atol=1e-12)
    assert before > 0.5 and imbalance() < 0.05 * before


def test_linear_gl_teleport_steepens_and_resets_adam_moments():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.0), nn.Linear(8, 2)).double()
    batch = (torch.randn(50, 4, dtype=torch.float64), torch.randn(50, 2, dtype=torch.float64))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    mse(model, batch).backward()
    opt.step()
    opt.zero_grad()
    loss0, gn0 = value(mse, model, batch), grad_norm_sq(model, mse, batch)
    result = teleport(model, mse, batch, steps=5, lr=0.02, kinds="linear", optimizer=opt)
    assert result.accepted and result.moved
    assert value(mse, model, batch) == pytest.approx(loss0, rel=1e-10)
    assert grad_norm_sq(model, mse, batch) > 1.2 * gn0
    # a non-diagonal action cannot carry Adam's second moments: they are reset
    assert result.optimizer_state == {"0.weight": "reset", "0.bias": "reset", "2.weight": "reset"}
    assert model[0].weight not in opt.state and model[2].bias in opt.state


def test_parameters_without_optimizer_state_are_reported_as_such():
    """Reading ``optimizer.state[p]`` creates an empty entry: that is still no state."""
    from symgraph.teleport import update_optimizer_state

    model = _mlp()
    optimizer = torch.optim.Adam(model.parameters())
    assert optimizer.state[model[0].weight] == {}  # the defaultdict made an empty entry
    params = dict(model.named_parameters())
    factors = {"0.weight": torch.full((16, 1), 2.0, dtype=torch.float64)}
    assert update_optimizer_state(optimizer, params, factors) == {"0.weight": "no state"}


def _loss_with_a_small_leak(eps: float):
    """``100·MSE + eps·‖W₀‖²``: rescaling units of layer 0 moves it by about ``eps``."""

    def loss_fn(model, batch):
        return 100 * mse(model, batch) + eps * model[0].weight.pow(2).sum()

    return loss_fn


def _relative_leak(eps: float, dtype=torch.float64) -> float:
    """How far (relative to the loss) a teleport moves the leaky loss with this ``eps``."""
    model = _mlp().to(dtype)
    x, y = _data()
    result = teleport(
        model,
        _loss_with_a_small_leak(eps),
        (x.to(dtype), y.to(dtype)),
        steps=5,
        lr=0.2,
        rtol=1.0,
        atol=0.0,
    )
    assert result.accepted and result.moved
    return abs(result.loss_after - result.loss_before) / abs(result.loss_before)


def test_the_loss_check_scales_rtol_by_the_loss_and_adds_atol():
    """Refused just below ``atol + rtol·|L|``, accepted just above: each term and their sum."""
    eps = 1e-3
    change = _relative_leak(eps)
    loss = value(_loss_with_a_small_leak(eps), _mlp(), _data())
    assert loss > 10  # so that rtol·|L| and rtol alone differ
    for rtol, atol, accepted in (
        (0.5 * change, 0.0, False),
        (2.0 * change, 0.0, True),
        (0.0, 0.5 * change * loss, False),
        (0.0, 2.0 * change * loss, True),
        (0.6 * change, 0.6 * change * loss, True),  # the two terms add up
    ):
        model = _mlp()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TeleportRefusedWarning)
            result = teleport(
                model, _loss_with_a_small_leak(eps), _data(), steps=5, lr=0.2, rtol=rtol, atol=atol
            )
        assert result.accepted is accepted, (rtol, atol, result.message)


@pytest.mark.parametrize(
    ("option", "bad"), [("rtol", -1e-4), ("atol", float("nan")), ("rtol", "loose"), ("atol", True)]
)
def test_a_bad_tolerance_is_refused_before_anything_moves(option, bad):
    """A negative or NaN tolerance would refuse every teleport with a warning; a string failed
    in ``float()`` without naming the argument."""
    model = _mlp()
    saved = snapshot(model)
    with pytest.raises(ValueError, match=f"{option}: expected a non-negative finite tolerance"):
        teleport(model, mse, _data(), **{option: bad})
    assert_bit_identical(model, saved)


@pytest.mark.parametrize(
    ("dtype", "relative", "accepted"),
    [
        (torch.float64, 1e-7, False),  # float32's default would pass it
        (torch.float64, 1e-11, True),
        (torch.float32, 1e-6, True),  # float64's default would refuse it
    ],
)
def test_default_tolerances_follow_the_parameter_dtype(dtype, relative, accepted):
    """Defaults: ``1e-9·|L| + 1e-12`` in float64, ``1e-4·|L| + 1e-6`` in float32."""
    eps = 1e-3 * relative / _relative_leak(1e-3)
    measured = _relative_leak(eps, dtype)
    assert relative / 3 < measured < 3 * relative
    model = _mlp().to(dtype)
    x, y = _data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TeleportRefusedWarning)
        result = teleport(
            model, _loss_with_a_small_leak(eps), (x.to(dtype), y.to(dtype)), steps=5, lr=0.2
        )
    assert result.accepted is accepted, result.message


def test_a_data_dependent_symmetry_needs_its_module_called_once():
    """GL(d) reads a layer's input batch: a loss calling the model twice is refused by name."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(5, 6, bias=False), nn.LeakyReLU(0.1), nn.Linear(6, 7, bias=False)
    ).double()
    x, y = torch.randn(4, 5, dtype=torch.float64), torch.randn(4, 7, dtype=torch.float64)

    def twice(m, b):
        return mse(m, (b[0][:2], b[1][:2])) + mse(m, (b[0][2:], b[1][2:]))

    saved = snapshot(model)
    with pytest.raises(ValueError, match="module '.*' was called 2 times in one loss"):
        teleport(model, twice, (x, y), kinds="gl")
    assert_bit_identical(model, saved)
    assert teleport(model, mse, (x[:3], y[:3]), steps=2, lr=0.05, kinds="gl").accepted


def test_keep_leaves_the_optimizer_state_as_it_was():
    model, batch = _mlp(), _data()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    mse(model, batch).backward()
    optimizer.step()
    before = {p: {k: v.clone() for k, v in s.items()} for p, s in optimizer.state.items()}
    result = teleport(model, mse, batch, steps=5, lr=0.2, optimizer=optimizer,
                      optimizer_state="keep")  # fmt: skip
    assert result.moved and set(result.optimizer_state.values()) == {"kept"}
    for p, state in optimizer.state.items():
        assert all(torch.equal(v, before[p][k]) for k, v in state.items())


def test_update_optimizer_state_checks_its_mode():
    from symgraph.teleport import update_optimizer_state

    model = _mlp()
    optimizer = torch.optim.Adam(model.parameters())
    params = dict(model.named_parameters())
    with pytest.raises(ValueError, match="mode: expected one of .*, got 'magic'"):
        update_optimizer_state(optimizer, params, {"0.weight": None}, mode="magic")


def test_a_planned_optimizer_update_changes_nothing_until_it_is_applied():
    """``plan_optimizer_state`` computes new moments beside the old ones: the optimizer is
    as it was until ``apply``, which then divides the moments by the factors."""
    from symgraph.teleport.optim_state import plan_optimizer_state

    model, batch = _mlp(), _data()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    mse(model, batch).backward()
    optimizer.step()
    weight = model[0].weight
    before = {k: v.clone() for k, v in optimizer.state[weight].items()}
    factor = torch.full((16, 1), 2.0, dtype=torch.float64)
    update = plan_optimizer_state(optimizer, dict(model.named_parameters()), {"0.weight": factor})
    for k, v in optimizer.state[weight].items():
        assert torch.equal(v, before[k]), k
    assert update.apply() == {"0.weight": "transformed"}
    state = optimizer.state[weight]
    assert torch.equal(state["exp_avg"], before["exp_avg"] / 2)
    assert torch.equal(state["exp_avg_sq"], before["exp_avg_sq"] / 4)
    assert torch.equal(state["step"], before["step"])


def test_transported_moments_keep_their_dtype_under_factors_of_another():
    """float64 factors on float32 moments: the moments stay float32, as the optimizer's step
    expects."""
    from symgraph.teleport import update_optimizer_state

    model, batch = _mlp().float(), _data()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    mse(model, (batch[0].float(), batch[1].float())).backward()
    optimizer.step()
    weight = model[0].weight
    before = {k: v.clone() for k, v in optimizer.state[weight].items()}
    factor = torch.full((16, 1), 2.0, dtype=torch.float64)
    params = dict(model.named_parameters())
    assert update_optimizer_state(optimizer, params, {"0.weight": factor}) == {
        "0.weight": "transformed"
    }
    for key in ("exp_avg", "exp_avg_sq"):
        assert optimizer.state[weight][key].dtype == torch.float32, key
    torch.testing.assert_close(optimizer.state[weight]["exp_avg"], before["exp_avg"] / 2)


def test_a_loss_that_the_orbit_leaves_exactly_unchanged_passes_a_zero_tolerance():
    """The loss may move by at most ``atol + rtol·|L|``, bounds included: with both 0, a
    teleport that keeps the loss bit for bit is accepted."""

    def flat_loss(model, batch):  # the value 1.0 everywhere, the gradient that of the MSE
        loss = mse(model, batch)
        return 1.0 + (loss - loss.detach())

    model = _mlp()
    result = teleport(model, flat_loss, _data(), steps=3, lr=0.2, rtol=0.0, atol=0.0)
    assert result.moved and result.accepted, result.message
    assert result.loss_after == result.loss_before == 1.0
