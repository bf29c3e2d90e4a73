"""SteerableDynamics: G-equivariance (float64), the integrator at initialisation, learning,
tailoring, input checks, and ``symgraph train dynamics --model steerable``."""

from __future__ import annotations

import json
import math

import pytest
import torch

from symgraph.groups import group_from_name
from symgraph.models import EquivariantDynamics, SteerableDynamics
from symgraph.testing import transform

Z = torch.tensor([6, 1, 1, 8, 1, 6, 1, 7, 1, 1])
BATCH = torch.tensor([0] * 4 + [1] * 3 + [2] * 3)  # three molecules of 4, 3 and 3 atoms


def _perturbed(model: torch.nn.Module, size: float = 0.3) -> torch.nn.Module:
    """A trained-looking model: every parameter moved well away from its initialisation."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(size * torch.randn_like(p))
    return model


def _frames(n: int = 10, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    pos = torch.randn(n, 3, generator=gen, dtype=torch.float64) * 1.2
    vel = torch.randn(n, 3, generator=gen, dtype=torch.float64) * 0.01
    return pos, vel


def _elements(name: str) -> torch.Tensor:
    group = group_from_name(name)
    if group.is_finite:
        return group.elements().double()
    return group.sample(4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


@pytest.mark.parametrize("group, cutoff", [("O3", None), ("O3", 2.5), ("SO2", 2.5), ("D4", None)])
def test_equivariant_under_the_group_and_translations(group, cutoff):
    """Rotations/reflections of G turn positions and velocities alike; translations only
    shift positions; molecules of a batch do not interact."""
    torch.manual_seed(0)
    model = SteerableDynamics(group, "8x0e + 4x1o", dt=2.0, cutoff=cutoff).double()
    _perturbed(model)
    pos, vel = _frames()
    next_pos, next_vel = model(pos, vel, Z, BATCH)
    assert (next_vel - vel).abs().max() > 1e-4  # the learned terms are not negligible
    for g in _elements(group):
        shift = torch.randn(3, dtype=torch.float64) * 2
        moved_pos, moved_vel = model(
            transform(pos, "pos", g, shift), transform(vel, "vector", g, None), Z, BATCH
        )
        expected_pos = transform(next_pos, "pos", g, shift)
        torch.testing.assert_close(moved_pos, expected_pos, rtol=0, atol=1e-12)
        torch.testing.assert_close(
            moved_vel, transform(next_vel, "vector", g, None), rtol=0, atol=1e-12
        )
    alone_pos, alone_vel = model(pos[4:7], vel[4:7], Z[4:7])
    torch.testing.assert_close(alone_pos, next_pos[4:7], rtol=0, atol=1e-12)
    torch.testing.assert_close(alone_vel, next_vel[4:7], rtol=0, atol=1e-12)


def test_a_subgroup_model_is_not_o3_equivariant():
    """An SO(2) model may use the z axis: a general rotation changes its prediction (so the
    test above is not passing trivially)."""
    torch.manual_seed(0)
    model = _perturbed(SteerableDynamics("SO2", "8x0e + 4x1o", cutoff=2.5).double())
    pos, vel = _frames()
    g = group_from_name("SO3").sample(
        1, generator=torch.Generator().manual_seed(3), dtype=torch.float64
    )[0]
    _, next_vel = model(pos, vel, Z, BATCH)
    _, moved_vel = model(pos @ g.T, vel @ g.T, Z, BATCH)
    assert (moved_vel - next_vel @ g.T).abs().max() > 1e-6


def test_untrained_model_moves_in_straight_lines():
    """As EquivariantDynamics: the learned terms start near zero, so the prediction is the
    straight-line step ``r + dt v`` within a few per cent of the step itself."""
    torch.manual_seed(0)
    for model in (SteerableDynamics(dt=0.5), SteerableDynamics("D4", dt=0.5, cutoff=3.0)):
        model = model.double()
        pos, vel = _frames()
        p, v = model(pos, vel, Z, BATCH)
        step = (0.5 * vel).abs().max()
        assert (p - (pos + 0.5 * vel)).abs().max() < 0.05 * step
        assert (v - vel).abs().max() < 0.05 * vel.abs().max()


def test_positions_follow_the_mean_velocity_and_scale_with_the_speed():
    """With the correction's readout off, ``r' = r + dt (v + v') / 2``; scaling velocities
    and ``velocity_scale`` by ``λ`` scales the whole update by ``λ``."""
    torch.manual_seed(0)
    model = _perturbed(SteerableDynamics(dt=0.7).double())
    pos, vel = _frames()
    p1, v1 = model(pos, vel, Z, BATCH)
    model.velocity_scale *= 4.0
    p4, v4 = model(pos, 4.0 * vel, Z, BATCH)
    torch.testing.assert_close(v4, 4.0 * v1, rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(p4 - pos, 4.0 * (p1 - pos), rtol=1e-10, atol=1e-14)
    with torch.no_grad():  # the readout's second 1o copy is the correction
        correction = torch.tensor([0.0, 1.0], dtype=torch.float64)
        for weight, pair in zip(model.readout.weights, model.readout.basis.pairs):
            weight.mul_((1 - correction)[:, None, None] if pair.mul_out == 2 else 1.0)
    p, v = model(pos, vel, Z, BATCH)
    assert (v - vel).abs().max() > 1e-4
    torch.testing.assert_close(p, pos + 0.35 * (vel + v), rtol=1e-12, atol=1e-12)


def _spring_trajectory(frames: int = 9, dt: float = 2.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two molecules of three atoms joined by springs (rest length 1.2 Å), velocity
    Verlet with small substeps: positions and velocities ``[frames, 6, 3]`` ``dt`` fs apart."""
    gen = torch.Generator().manual_seed(0)
    pos = torch.randn(6, 3, generator=gen, dtype=torch.float64) * 0.7
    pos[3:] += 5.0
    vel = torch.randn(6, 3, generator=gen, dtype=torch.float64) * 0.01
    vel = vel - vel.reshape(2, 3, 3).mean(1).repeat_interleave(3, 0)
    same = BATCH6[:, None] == BATCH6[None, :]

    def force(r):
        d = r[:, None] - r[None]
        dist = (d.square().sum(-1) + torch.eye(6, dtype=r.dtype)).sqrt()
        f = -1e-3 * ((dist - 1.2) / dist)[..., None] * d
        return (f * (same & ~torch.eye(6, dtype=torch.bool))[..., None]).sum(1)

    out_p, out_v, sub = [pos], [vel], 20
    h = dt / sub
    for _ in range(frames - 1):
        for _ in range(sub):
            vel = vel + 0.5 * h * force(pos)
            pos = pos + h * vel
            vel = vel + 0.5 * h * force(pos)
        out_p.append(pos)
        out_v.append(vel)
    return torch.stack(out_p), torch.stack(out_v)


BATCH6 = torch.tensor([0, 0, 0, 1, 1, 1])


def test_learns_a_spring_trajectory():
    """A few dozen Adam steps on the one-step error of a small spring system lower the
    loss clearly (the straight-line start misses the spring forces)."""
    torch.manual_seed(0)
    positions, velocities = _spring_trajectory()
    z = torch.tensor([6, 1, 1, 6, 1, 1])
    pos, vel = positions[:-1].reshape(-1, 3), velocities[:-1].reshape(-1, 3)
    batch = torch.arange(2 * (len(positions) - 1)).repeat_interleave(3)
    target_p, target_v = positions[1:].reshape(-1, 3), velocities[1:].reshape(-1, 3)
    pos_scale = (target_p - pos).square().mean().sqrt()
    vel_scale = (target_v - vel).square().mean().sqrt()
    speed = float(vel.square().sum(-1).mean().sqrt())
    model = SteerableDynamics("O3", "8x0e + 4x1o", dt=2.0, velocity_scale=speed).double()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)

    def loss() -> torch.Tensor:
        p, v = model(pos, vel, z.repeat(len(positions) - 1), batch)
        return ((p - target_p) / pos_scale).square().mean() + (
            (v - target_v) / vel_scale
        ).square().mean()

    losses = []
    for _ in range(40):
        opt.zero_grad()
        value = loss()
        value.backward()
        opt.step()
        losses.append(value.item())
    assert all(math.isfinite(x) for x in losses)
    assert loss().item() < 0.1 * losses[0]


def test_tailoring_and_meta_tailoring_run_on_it():
    """``tailor`` (first and second order) and ``MetaTailoring`` drive it through the
    frame interface, as they drive EquivariantDynamics."""
    from symgraph.noether import (
        AngularMomentum,
        Frame,
        MetaTailoring,
        NeuralConservedQuantity,
        Trajectory,
        tailor,
    )

    torch.manual_seed(0)
    model = _perturbed(SteerableDynamics("O3", "8x0e + 4x1o", cutoff=3.0).double(), 0.1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pos, vel = _frames()
    x0 = Frame(pos, vel, Z, batch=BATCH)
    plain = tailor(model, x0, AngularMomentum(), steps=0, horizon=3).predictions
    res = tailor(model, x0, AngularMomentum(), steps=2, lr=1e-2, horizon=3, max_grad_norm=1.0)
    assert res.predictions.positions.shape == (4, 10, 3)
    assert res.inner_losses[-1] <= res.inner_losses[0]
    assert not torch.equal(res.predictions.positions, plain.positions)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    g = NeuralConservedQuantity(out_dim=2, hidden=8, num_layers=1).double()
    meta = MetaTailoring(model, g, inner_lr=1e-3, max_grad_norm=1.0)
    steps = torch.arange(4, dtype=torch.float64)[:, None, None]
    target = Trajectory(pos + steps * vel, vel.expand(4, -1, -1), z=Z, batch=BATCH)
    opt = torch.optim.SGD(meta.parameter_groups(1e-3, 1e-3))
    phi0 = [p.detach().clone() for p in g.parameters()]
    out = meta.training_step(target, opt)
    assert math.isfinite(out["task"])
    assert any(not torch.equal(a, b) for a, b in zip(phi0, g.parameters()))  # second order


def test_bad_inputs_and_settings_are_named():
    model = SteerableDynamics(hidden="4x0e + 2x1o", num_layers=1, max_z=9)
    pos, vel, z = torch.randn(4, 3), torch.randn(4, 3) * 0.01, torch.tensor([6, 1, 1, 1])
    with pytest.raises(ValueError, match=r"vel: expected shape \[4, 3\] \(as pos\)"):
        model(pos, vel[:3], z)
    with pytest.raises(ValueError, match=r"z: expected integer atomic numbers \[4\]"):
        model(pos, vel, z.float())
    with pytest.raises(ValueError, match=r"z: expected atomic numbers in \[0, 9\]"):
        model(pos, vel, torch.tensor([10, 1, 1, 1]))
    with pytest.raises(TypeError, match="pos: expected dtype torch.float32"):
        model(pos.double(), vel, z)
    with pytest.raises(ValueError, match=r"batch: expected shape \[4\]"):
        model(pos, vel, z, torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="hidden: expected irreps with at least one 0e"):
        SteerableDynamics(hidden="8x0e + 4x2e")
    with pytest.raises(ValueError, match="group: unknown group name 'O4'"):
        SteerableDynamics("O4")
    with pytest.raises(TypeError, match="group: expected a MatrixGroup or a group name"):
        SteerableDynamics(3)
    for setting, message in [
        (dict(dt=0.0), "dt: expected a positive finite time step"),
        (dict(num_layers=0), "num_layers: expected a positive int, got 0"),
        (dict(cutoff=-1.0), "cutoff: expected a positive distance"),
        (dict(velocity_scale=math.inf), "velocity_scale: expected a positive typical speed"),
        (dict(species_dim=-1), "species_dim: expected an int >= 0, got -1"),
    ]:
        with pytest.raises(ValueError, match=message):
            SteerableDynamics(**setting)


def test_repr_and_reset_parameters():
    model = SteerableDynamics("D4", "8x0e + 4x1o", num_layers=3, cutoff=3.0)
    text = repr(model)
    assert text.startswith("SteerableDynamics(group=D(4), hidden=8x0e + 4x1o, layers=3")
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    _perturbed(model)
    torch.manual_seed(0)
    model.reset_parameters()
    for weight in model.readout.weights:  # the readout starts near zero again
        assert weight.abs().max() < 0.1
    assert model.state_dict().keys() == fresh.keys()
    assert isinstance(EquivariantDynamics(), torch.nn.Module)  # the E(3) baseline stays


# --------------------------------------------------------------------------- the job
TINY = ["--molecules", "CH3OH", "--trajectories", "3", "--split", "1", "1", "1", "--frames",
        "8", "--horizon", "3", "--batch-size", "8", "--no-progress"]  # fmt: skip


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """The tiny runs' MMFF94 trajectories, generated once for the module's tests."""
    from symgraph.cli import build_parser
    from symgraph.train.job_dynamics import build_trajectories
    from symgraph.train.jobs import load_jobs

    root = tmp_path_factory.mktemp("md_cache")
    args = build_parser(load_jobs()).parse_args(
        ["train", "dynamics", *TINY, "--data-root", str(root)]
    )
    build_trajectories(args)
    return root


def test_job_trains_evaluates_and_resumes_a_steerable_model(tmp_path, capsys, cache):
    from symgraph.cli import main

    out = tmp_path / "run"
    args = ["train", "dynamics", *TINY, "--out", str(out), "--data-root", str(cache),
            "--model", "steerable", "--group", "D4", "--irreps", "4x0e + 2x1o",
            "--noether", "momentum,learned", "--hidden", "8", "--tailor-steps", "1",
            "--tailor-lr", "1e-3"]  # fmt: skip
    assert main([*args, "--epochs", "1"]) == 0
    metrics = json.loads(capsys.readouterr().out)["metrics"]
    assert math.isfinite(metrics["rollout_rmse"])
    assert math.isfinite(metrics["rollout_rmse_tailored"])
    config = json.loads((out / "config.json").read_text())
    assert config["model"] == "MetaTailoring" and config["args"]["model"] == "steerable"
    weights = torch.load(out / "best.pt", weights_only=False)["model"]
    assert any(k.startswith("model.convs.0.kernel") for k in weights)  # steerable inside
    assert main(["evaluate", str(out)]) == 0
    evaluated = json.loads(capsys.readouterr().out)["metrics"]
    assert evaluated == pytest.approx(metrics, rel=1e-5, abs=1e-9)
    assert main([*args, "--epochs", "2", "--resume"]) == 0
    assert len((out / "metrics.csv").read_text().splitlines()) == 3
    capsys.readouterr()
    egnn = ["train", "dynamics", *TINY, "--out", str(out), "--data-root", str(cache),
            "--noether", "momentum,learned", "--hidden", "8", "--tailor-steps", "1",
            "--tailor-lr", "1e-3"]  # fmt: skip
    assert main([*egnn, "--epochs", "3", "--resume"]) == 2
    assert "--model 'steerable' (now 'egnn')" in capsys.readouterr().err


def test_old_run_folders_without_the_flag_are_egnn_runs(tmp_path, capsys, cache):
    """A run folder made before ``--model`` (no ``model``, ``group`` nor ``irreps`` in
    config.json) resumes and evaluates as an egnn run; resuming it as steerable is refused."""
    from symgraph.cli import main

    out = tmp_path / "run"
    args = ["train", "dynamics", *TINY, "--hidden", "8", "--out", str(out),
            "--data-root", str(cache)]  # fmt: skip
    assert main([*args, "--epochs", "1"]) == 0
    capsys.readouterr()
    path = out / "config.json"
    config = json.loads(path.read_text())
    for key in ("model", "group", "irreps"):
        del config["args"][key]
    path.write_text(json.dumps(config))
    assert main(["evaluate", str(out)]) == 0
    capsys.readouterr()
    steerable = [*TINY, "--model", "steerable"]
    argv = ["train", "dynamics", *steerable, "--out", str(out), "--data-root", str(cache)]
    assert main([*argv, "--epochs", "2", "--resume"]) == 2
    assert "--model 'egnn' (now 'steerable')" in capsys.readouterr().err
    assert main([*args, "--epochs", "2", "--resume"]) == 0
    assert len((out / "metrics.csv").read_text().splitlines()) == 3


def test_job_refuses_flags_the_chosen_model_does_not_read(tmp_path, capsys):
    from symgraph.cli import main

    common = ["train", "dynamics", "--out", str(tmp_path / "run"), "--no-progress"]
    cases = [
        (["--group", "D4"], "--group: read by --model steerable only, got --model egnn"),
        (["--irreps", "4x0e + 2x1o"], "--irreps: read by --model steerable only"),
        (["--model", "steerable", "--hidden", "8"], "--hidden: the width of --model egnn"),
        (["--model", "steerable", "--group", "O4"], "--group: unknown group name 'O4'"),
    ]
    for flags, message in cases:
        assert main([*common, *flags]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
