"""The ``Teleport`` hook: schedules, use in a plain loop, the example script."""

from __future__ import annotations

import time

import pytest
import torch
from torch import nn

from symgraph.teleport import NoSymmetryError, Teleport, parse_schedule, teleport


def test_parse_schedule_strings():
    every = parse_schedule("every:5")
    assert [s for s in range(21) if every(s)] == [5, 10, 15, 20]
    until = parse_schedule("every:5,until:12")
    assert [s for s in range(21) if until(s)] == [5, 10]
    exclusive = parse_schedule("every:5,until:10")  # "before step N": not at N itself
    assert [s for s in range(21) if exclusive(s)] == [5]
    at = parse_schedule("at:0, 3,7")
    assert [s for s in range(10) if at(s)] == [0, 3, 7]
    assert not any(parse_schedule("never")(s) for s in range(10))
    assert parse_schedule([2, 4])(4) and not parse_schedule([2, 4])(3)
    assert parse_schedule(lambda s: s == 1)(1)


@pytest.mark.parametrize(
    "bad",
    [
        "every:0",
        "every:x",
        "sometimes",
        "at:",
        "every:5,since:3",
        "at:-1,3",
        "every:10,until:5",
        "every:\u0665",  # an Arabic-Indic five: int() takes it, a schedule does not
        "at:1_0",
        "every:5,until:1\uff10",
    ],
)
def test_parse_schedule_rejects_bad_specs(bad):
    with pytest.raises(ValueError, match="schedule"):
        parse_schedule(bad)


def test_parse_schedule_names_negative_steps_and_an_empty_until():
    with pytest.raises(ValueError, match=r"non-negative step numbers .*'at:-1,3'"):
        Teleport.from_spec("at:-1,3")
    with pytest.raises(ValueError, match=r"'until:N' must exceed 'every:K'.*'every:10,until:5'"):
        Teleport.from_spec("every:10,until:5")


def test_parse_schedule_rejects_bad_types():
    with pytest.raises(TypeError, match="schedule"):
        parse_schedule(3.5)
    with pytest.raises(TypeError, match="schedule"):
        parse_schedule([1, "2"])


def _loss(model, batch):
    x, y = batch
    return (model(x) - y).pow(2).mean()


def test_hook_in_plain_loop_teleports_on_schedule():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 16), nn.ReLU(), nn.Linear(16, 1)).double()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9)
    x = torch.randn(64, 3, dtype=torch.float64)
    y = x.sum(dim=1, keepdim=True).sin()
    tp = Teleport.from_spec("every:4", _loss, steps=3, lr=0.1)
    for _ in range(13):
        result = tp(model, (x, y), optimizer)
        if result is not None:
            assert result.accepted
            assert result.loss_after == pytest.approx(result.loss_before, rel=1e-10)
        optimizer.zero_grad()
        _loss(model, (x, y)).backward()
        optimizer.step()
    assert [step for step, _ in tp.history] == [4, 8, 12]
    assert tp.seconds > 0
    found = tp.symmetries_for(model)
    assert len(found) == 1
    tp.reset()
    assert tp.history == [] and tp.step_count == 0
    assert tp.symmetries_for(model) is not found  # found again after a reset
    tp(model, (x, y), optimizer, step=7)  # an explicit step number sets the count
    assert tp.step_count == 8


def test_hook_state_survives_a_restart(tmp_path):
    """``state_dict`` through a checkpoint file: a new hook counts on from the saved step,
    teleports on the same steps and keeps the history; another schedule is refused."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 16), nn.ReLU(), nn.Linear(16, 1)).double()
    batch = (torch.randn(32, 3, dtype=torch.float64), torch.randn(32, 1, dtype=torch.float64))
    first = Teleport("every:3", _loss, steps=2, lr=0.1)
    for _ in range(5):
        first(model, batch)
    torch.save(first.state_dict(), tmp_path / "hook.pt")
    second = Teleport("every:3", _loss, steps=2, lr=0.1)
    second.load_state_dict(torch.load(tmp_path / "hook.pt", weights_only=True))
    assert second.step_count == 5 and second.seconds == first.seconds
    assert [(s, r.accepted, r.loss_before) for s, r in second.history] == [
        (s, r.accepted, r.loss_before) for s, r in first.history
    ]
    assert second(model, batch) is None  # step 5: not due
    assert second(model, batch).accepted  # step 6 is
    assert [step for step, _ in second.history] == [3, 6]
    with pytest.raises(ValueError, match="state: saved by a hook with schedule 'every:3'"):
        Teleport("every:4", _loss).load_state_dict(first.state_dict())


def _every_third(step):
    return step > 0 and step % 3 == 0


def test_hook_state_with_a_callable_or_step_list_schedule_loads_in_a_new_hook():
    """A schedule given as a function or as step numbers (a generator too) is saved under a
    label that a restarted process reproduces (not a repr holding a memory address)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 1)).double()
    batch = (torch.randn(16, 3, dtype=torch.float64), torch.randn(16, 1, dtype=torch.float64))
    builders = [
        lambda: lambda step: step > 0 and step % 3 == 0,  # a fresh function object each
        lambda: _every_third,
        lambda: (k for k in (6, 3)),
        lambda: [3, 6, 3],
    ]
    for build in builders:
        first = Teleport(build(), _loss, steps=1)
        for _ in range(4):
            first(model, batch)
        second = Teleport(build(), _loss, steps=1)
        second.load_state_dict(first.state_dict())
        assert second.step_count == 4 and [s for s, _ in second.history] == [3]
    assert Teleport((k for k in (6, 3)), _loss).spec == "at:3,6"
    assert Teleport((k for k in (6, 3)), _loss).due(6)  # the generator is read once
    with pytest.raises(ValueError, match="state: saved by a hook with schedule"):
        Teleport(_every_third, _loss).load_state_dict(Teleport([3], _loss).state_dict())


def test_hook_teleports_on_its_own_batch_only_when_due():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 1)).double()
    minibatch = (torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 1, dtype=torch.float64))
    own = (torch.randn(32, 3, dtype=torch.float64), torch.randn(32, 1, dtype=torch.float64))
    drawn, seen = [], []

    def batch_fn(step):
        drawn.append(step)
        time.sleep(0.01)
        return own

    def loss(model, batch):
        seen.append(len(batch[0]))
        return _loss(model, batch)

    tp = Teleport("every:2", loss, steps=2, lr=0.1, batch_fn=batch_fn)
    results = [tp(model, minibatch, step=step) for step in range(5)]
    assert drawn == [2, 4] and set(seen) == {32}  # never the minibatch
    assert [r is None for r in results] == [True, True, False, True, False]
    assert results[2].loss_before == pytest.approx(float(_loss(model, own).detach()), rel=1e-10)
    assert all(r.seconds >= 0.01 for r in results if r is not None)  # drawing counts
    with pytest.raises(TypeError, match="batch_fn: expected a callable step -> batch, got 3"):
        Teleport("every:2", loss, batch_fn=3)


@pytest.mark.parametrize(
    "make, key",
    [
        (lambda ps: torch.optim.SGD(ps, lr=1e-2, momentum=0.9), "momentum_buffer"),
        (lambda ps: torch.optim.Adam(ps, lr=1e-3), "exp_avg"),
        # RMSprop's momentum sums normalised steps: its mean gradient is grad_avg
        (lambda ps: torch.optim.RMSprop(ps, lr=1e-3, momentum=0.9, centered=True), "grad_avg"),
    ],
)
def test_hook_takes_the_gradient_from_the_optimizer(make, key, recording_backward):
    """``gradient="optimizer"``: the smallest-gradient target from the optimizer's running
    mean (no backward pass on the batch), the same point as ``teleport`` given that mean."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 16), nn.ReLU(), nn.Linear(16, 1)).double()
    twin = nn.Sequential(nn.Linear(3, 16), nn.ReLU(), nn.Linear(16, 1)).double()
    twin.load_state_dict(model.state_dict())
    optimizer = make(model.parameters())
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(64, 3, generator=gen, dtype=torch.float64)
    batch = (x, x.sum(dim=1, keepdim=True).sin())
    for _ in range(5):
        optimizer.zero_grad()
        _loss(model, batch).backward()
        optimizer.step()
    twin.load_state_dict(model.state_dict())
    means = {n: optimizer.state[p][key].clone() for n, p in model.named_parameters()}
    backward = []
    loss = recording_backward(_loss, backward)
    options = dict(steps=20, lr=0.05, objective="min_grad_norm", kinds=("rescale",))
    tp = Teleport("at:5", loss, gradient="optimizer", **options)
    out = model(x).detach()
    result = tp(model, batch, optimizer, step=5)
    assert result.accepted and result.moved and not backward
    assert torch.allclose(model(x), out, rtol=1e-10, atol=1e-12)
    expected = teleport(twin, _loss, batch, gradient=means, **options)
    assert result.grad_norm_sq_after == pytest.approx(expected.grad_norm_sq_after, rel=1e-10)
    for p, q in zip(model.parameters(), twin.parameters()):
        assert torch.allclose(p, q, rtol=1e-12, atol=1e-14)


def test_hook_gradient_from_the_optimizer_needs_one():
    model = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 1)).double()
    batch = (torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 1, dtype=torch.float64))
    options = dict(objective="min_grad_norm", kinds=("rescale",), gradient="optimizer")
    with pytest.raises(ValueError, match="gradient: expected one of"):
        Teleport("at:0", _loss, objective="min_grad_norm", gradient="adam")
    with pytest.raises(ValueError, match="gradient: 'optimizer' is used only with"):
        Teleport("at:0", _loss, gradient="optimizer")
    with pytest.raises(ValueError, match="optimizer: expected the optimizer in the call"):
        Teleport("at:0", _loss, **options)(model, batch)
    plain = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="optimizer: expected a running mean .* SGD keeps one"):
        Teleport("at:0", _loss, **options)(model, batch, plain)  # before its first step
    plain.zero_grad()
    _loss(model, batch).backward()
    plain.step()
    with pytest.raises(ValueError, match=r"running mean .* for \['0.weight'"):
        Teleport("at:0", _loss, **options)(model, batch, plain)  # no momentum
    partial = torch.optim.Adam(model[2].parameters())
    with pytest.raises(ValueError, match=r"optimizer: expected to hold .* \['0.weight'"):
        Teleport("at:0", _loss, **options)(model, batch, partial)


def test_hook_checks_its_settings_at_construction():
    with pytest.raises(ValueError, match="objective: expected one of"):
        Teleport("every:1000", _loss, objective="bogus")
    with pytest.raises(ValueError, match="steps: expected a non-negative integer, got -1"):
        Teleport("every:1000", _loss, steps=-1)
    with pytest.raises(ValueError, match="lr: expected a positive finite number, got 0.0"):
        Teleport("every:1000", _loss, lr=0.0)
    with pytest.raises(ValueError, match="optimizer_state: expected one of"):
        Teleport("every:1000", _loss, optimizer_state="transfrom")
    with pytest.raises(ValueError, match="descent_lr: expected a positive step size"):
        Teleport("every:1000", _loss, objective="descent", descent_lr=-1.0)
    with pytest.raises(ValueError, match="rtol: expected a non-negative finite tolerance"):
        Teleport("every:1000", _loss, rtol=-1e-4)
    with pytest.raises(ValueError, match="atol: expected a non-negative finite tolerance"):
        Teleport("every:1000", _loss, atol=float("nan"))
    with pytest.raises(TypeError, match=r"options: .* got unknown \['stpes'\]"):
        Teleport("every:1000", _loss, stpes=3)
    with pytest.raises(TypeError, match="find_options: used only to find symmetries"):
        Teleport("every:1000", _loss, symmetries=[], max_imbalance=3.0)


def test_hook_needs_a_loss_and_a_symmetry():
    model = nn.Linear(3, 1).double()
    batch = (torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 1, dtype=torch.float64))
    with pytest.raises(ValueError, match="loss_fn"):
        Teleport("at:0")(model, batch)
    with pytest.raises(NoSymmetryError, match="searched"):
        Teleport("at:0", _loss)(model, batch)
    assert Teleport("at:1", _loss)(model, batch) is None  # not due: nothing searched


def test_example_runs_quick(capsys, load_script):
    module = load_script("examples/teleport_training.py")
    out = module.main(["--quick"])
    assert out["teleports"] >= 1 and out["accepted"] == out["teleports"]
    assert all(torch.isfinite(torch.tensor(out["losses"])))
    assert "teleport accepted" in capsys.readouterr().out
    assert "rescale module_0 -> module_2" in out["symmetries"]  # across the sum pooling


def test_example_teleports_along_the_readout_gl(load_script):
    module = load_script("examples/teleport_training.py")
    out = module.main(["--quick", "--kinds", "linear"])
    assert out["symmetries"] == ["GL(32) module_0.convs.2.nn.lins.1 -> linear -> module_2"]
    assert out["teleports"] >= 1 and out["accepted"] == out["teleports"]
    assert all(torch.isfinite(torch.tensor(out["losses"])))


@pytest.mark.parametrize("gradient", ["batch", "optimizer"])
def test_example_moves_to_the_smallest_gradient(load_script, gradient):
    module = load_script("examples/teleport_training.py")
    out = module.main(["--quick", "--objective", "min_grad_norm", "--gradient", gradient])
    assert out["teleports"] >= 1 and out["accepted"] == out["teleports"]
    assert all(after < before for before, after in out["grad_norm_sq"])
    assert all(torch.isfinite(torch.tensor(out["losses"])))
    with pytest.raises(SystemExit):
        module.main(["--quick", "--gradient", "optimizer"])  # needs min_grad_norm
