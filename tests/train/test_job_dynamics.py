"""``symgraph train dynamics``: quick runs, tailored test metrics, evaluate, resume, errors."""

from __future__ import annotations

import json
import math

import pytest
import torch

from symgraph.cli import main
from symgraph.train.job_dynamics import parse_noether, parse_rates

TINY = ["--molecules", "CH3OH", "--trajectories", "3", "--split", "1", "1", "1", "--frames",
        "12", "--horizon", "5", "--hidden", "8", "--batch-size", "8", "--no-progress"]  # fmt: skip


def run(capsys, argv):
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_quick_run_reports_untailored_and_tailored_rollouts(tmp_path, capsys):
    out, cache = tmp_path / "run", tmp_path / "cache"
    args = ["train", "dynamics", *TINY, "--epochs", "1", "--out", str(out), "--data-root",
            str(cache), "--noether", "momentum,angular", "--tailor-steps", "2"]  # fmt: skip
    trained = run(capsys, args)
    metrics = trained["metrics"]
    for name in ("one_step_mse", "rollout_rmse", "energy_drift", "noether_loss"):
        assert math.isfinite(metrics[name]) and math.isfinite(metrics[f"{name}_tailored"])
    assert trained["units"]["rollout_rmse_tailored"] == "Å"
    assert trained["units"]["energy_drift"] == "eV/atom"
    # the line search never raises the inner Noether loss (same quantities, same horizon)
    assert metrics["noether_loss_tailored"] <= metrics["noether_loss"] * (1 + 1e-4) + 1e-12
    assert json.loads((out / "test.json").read_text())["metrics"] == metrics
    split = json.loads((out / "split.json").read_text())
    assert sorted(split["train"] + split["val"] + split["test"]) == [0, 1, 2]
    header = (out / "metrics.csv").read_text().splitlines()[0]
    assert "val_rollout_rmse" in header and "tailored" not in header  # validation: untailored
    evaluated = run(capsys, ["evaluate", str(out)])
    assert evaluated["metrics"] == pytest.approx(metrics, rel=1e-5, abs=1e-9)
    assert "rollout_rmse_tailored" in json.loads((out / "evaluation.json").read_text())["metrics"]


def test_learned_quantity_run_resumes(tmp_path, capsys):
    out, cache = tmp_path / "run", tmp_path / "cache"
    args = ["train", "dynamics", *TINY, "--out", str(out), "--data-root", str(cache),
            "--noether", "learned", "--tailor-steps", "1", "--tailor-lr", "1e-3"]  # fmt: skip
    run(capsys, [*args, "--epochs", "1"])
    first_epoch = (out / "metrics.csv").read_text().splitlines()
    cached = sorted(p.name for p in cache.iterdir())
    assert len(cached) == 3
    config = json.loads((out / "config.json").read_text())
    assert config["model"] == "MetaTailoring" and config["args"]["noether"] == "learned"
    resumed = run(capsys, [*args, "--epochs", "2", "--resume"])
    rows = (out / "metrics.csv").read_text().splitlines()
    assert len(rows) == 3 and rows[:2] == first_epoch  # epoch 1 carried over, not retrained
    assert math.isfinite(resumed["metrics"]["rollout_rmse_tailored"])
    assert sorted(p.name for p in cache.iterdir()) == cached  # read back, not regenerated


def test_md17_file_without_energy_model(tmp_path, capsys, shared_data):
    path = shared_data / "md" / "md17" / "md17_ethanol_dft_first2000.npz"
    common = ["train", "dynamics", "--data", "md17", "--md17-path", str(path), "--frames",
              "40", "--hidden", "8", "--no-progress"]  # fmt: skip
    quick = ["--epochs", "1", "--horizon", "4", "--train-horizon", "2", "--subset", "32"]
    metrics = run(capsys, [*common, *quick, "--out", str(tmp_path / "run")])["metrics"]
    assert math.isfinite(metrics["rollout_rmse"]) and "energy_drift" not in metrics
    assert main([*common, "--noether", "energy", "--out", str(tmp_path / "other")]) == 2
    assert "'energy' needs an energy model" in capsys.readouterr().err


def test_unknown_noether_name_lists_the_valid_ones(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "dynamics", "--noether", "momentum,spin", "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "'spin'" in err and "momentum, angular, energy, learned" in err
    with pytest.raises(ValueError, match="valid names: momentum, angular, energy, learned"):
        parse_noether("momentum,Energy")
    assert parse_noether(" angular,momentum,angular ") == ("angular", "momentum")
    assert parse_rates("1e-3") == 1e-3 and parse_rates("1e-4,1e-2") == (1e-4, 1e-2)
    with pytest.raises(ValueError, match="--tailor-lr"):
        parse_rates("0,1e-3")


def test_tailoring_needs_quantities(tmp_path, capsys):
    assert main(["train", "dynamics", "--tailor-steps", "2", "--out", str(tmp_path)]) == 2
    assert "--tailor-steps: tailoring needs conserved" in capsys.readouterr().err


def test_subset_records_the_trajectories_it_keeps(tmp_path):
    """``split.json`` of the dynamics job lists trajectory ids, not window indices: after
    ``--subset`` it must list the trajectories of the windows kept (it kept the first n
    ids, most of them not trained on)."""
    from symgraph.cli import build_parser
    from symgraph.train.jobs import get_job, load_jobs, take_subset

    six = ["--trajectories", "6", "--split", "4", "1", "1"]
    argv = ["train", "dynamics", *TINY[:2], *six, *TINY[8:], "--out", str(tmp_path)]
    args = build_parser(load_jobs()).parse_args(argv)
    spec = get_job("dynamics")(args)
    assert len(spec.split_indices()["train"]) > 1  # several trajectories before the cut
    cut = take_subset(spec, 3)
    for name in ("train", "val", "test"):
        dataset = getattr(cut, name)
        kept = list(dict.fromkeys(int(dataset[i].trajectory) for i in range(len(dataset))))
        assert cut.split_indices()[name] == kept


def test_negative_noether_weight_is_refused(tmp_path):
    from symgraph.train.job_dynamics import ConservationLoss

    with pytest.raises(SystemExit):
        main(["train", "dynamics", *TINY, "--noether", "momentum", "--noether-weight", "-1",
              "--out", str(tmp_path / "run")])  # fmt: skip
    assert not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match="--noether-weight: expected a finite weight >= 0"):
        ConservationLoss(torch.nn.Identity(), -1.0, 4)


# --------------------------------------------------------------------------- NextStepTask
class _Drift(torch.nn.Module):
    """Moves every atom by ``d`` and changes every velocity by ``e`` per step."""

    def __init__(self, d, e) -> None:
        super().__init__()
        self.d = torch.nn.Parameter(torch.tensor(d, dtype=torch.float64))
        self.e = torch.tensor(e, dtype=torch.float64)

    def forward(self, pos, vel, z, batch=None):
        return pos + self.d, vel + self.e


def _windows(moves, frames, tag=0, accels=((0.0, 0.0, 0.0),) * 2):
    """Windows of ``frames - 1`` future frames of molecules of 2 and 3 atoms, positions
    moving by ``moves[i]`` and velocities by ``accels[i]`` per frame."""
    from symgraph.data.frames import Trajectory
    from symgraph.data.windows import TrajectoryWindows

    gen = torch.Generator().manual_seed(0)
    trajs = []
    for atoms, move, accel in zip((2, 3), moves, accels):
        start = torch.randn(atoms, 3, generator=gen, dtype=torch.float64)
        steps = torch.arange(frames, dtype=torch.float64)[:, None, None]
        pos = start + steps * torch.tensor(move, dtype=torch.float64)
        vel = torch.randn(atoms, 3, generator=gen, dtype=torch.float64)
        vel = vel + steps * torch.tensor(accel, dtype=torch.float64)
        trajs.append(Trajectory(pos, vel, z=torch.tensor([6, 1, 1][:atoms])))
    return TrajectoryWindows(trajs, frames - 1, tag=tag)


def _window_batch(dataset):
    from torch_geometric.data import Batch

    return Batch.from_data_list([dataset[i] for i in range(len(dataset))])


def test_next_step_scales_are_rms_changes_per_coordinate():
    """``from_dataset``: the RMS one-step change over every atom and coordinate."""
    from symgraph.train.task_dynamics import NextStepTask

    # molecule of 2 atoms moves by |u|² = 9 per frame, the one of 3 atoms by |u|² = 0.25
    # and velocities by |w|² = 0.25 and 0.01
    moves, accels = [(1.0, 2.0, 2.0), (0.0, 0.0, 0.5)], [(0.5, 0.0, 0.0), (0.0, 0.1, 0.0)]
    task = NextStepTask.from_dataset(_windows(moves, frames=4, accels=accels))
    assert task.pos_scale == pytest.approx(math.sqrt((2 * 9 + 3 * 0.25) / (3 * 5)), rel=1e-12)
    assert task.vel_scale == pytest.approx(math.sqrt((2 * 0.25 + 3 * 0.01) / 15), rel=1e-12)


@pytest.mark.parametrize("name", ["pos_scale", "vel_scale"])
@pytest.mark.parametrize("value", [float("inf"), float("nan"), 0.0, "1", True])
def test_next_step_scales_must_be_positive_and_finite(name, value):
    """An infinite scale made that error count zero in the loss, silently."""
    from symgraph.train.task_dynamics import NextStepTask

    with pytest.raises(ValueError, match=f"{name}: expected a positive finite scale"):
        NextStepTask(**{name: value})


def test_next_step_loss_and_metrics_of_a_known_drift():
    """Loss and rollout metrics of a model that drifts by ``d`` per step from still truth:
    frame ``t`` is off by ``t d`` (and the velocity by ``t e``)."""
    from symgraph.train.task_dynamics import NextStepTask

    d, e, steps = (0.3, -0.1, 0.2), (0.0, 0.05, 0.0), 3
    batch = _window_batch(_windows([(0.0, 0.0, 0.0)] * 2, frames=steps + 1))

    def x_sum(frame):  # an "energy": the sum of x coordinates of each molecule
        return torch.zeros(frame.num_graphs, dtype=frame.pos.dtype).index_add(
            0, frame.batch_index(), frame.pos[:, 0]
        )

    task = NextStepTask(2.0, 0.5, energy=x_sum)
    model = _Drift(d, e)
    d2, e2 = sum(x * x for x in d) / 3, sum(x * x for x in e) / 3  # per coordinate
    t2 = [t * t for t in range(1, steps + 1)]
    loss, n = task.loss(model, batch)
    expected = sum(t2) / steps * (d2 / 2.0**2 + e2 / 0.5**2)
    assert n == 2 and loss.item() == pytest.approx(expected, rel=1e-10)
    metrics = task.metrics(model, batch)
    ones = torch.ones(2, dtype=torch.float64)
    torch.testing.assert_close(metrics["one_step_mse"], d2 * ones, rtol=1e-10, atol=0)
    torch.testing.assert_close(metrics["loss"], (d2 / 4 + e2 / 0.25) * ones, rtol=1e-10, atol=0)
    rmse = math.sqrt(sum(t2) / steps * d2)  # RMS over the rolled-out frames 1..L
    torch.testing.assert_close(metrics["rollout_rmse"], rmse * ones, rtol=1e-10, atol=0)
    final = steps * math.sqrt(d2)
    torch.testing.assert_close(metrics["rollout_rmse_final"], final * ones, rtol=1e-10, atol=0)
    # the x sum of a molecule of n atoms drifts by n L d_x: L d_x per atom
    drift = steps * abs(d[0]) * ones
    torch.testing.assert_close(metrics["energy_drift"], drift, rtol=1e-10, atol=0)


def test_tailoring_horizons_follow_the_window(monkeypatch):
    """Test-time tailoring of a tagged window runs its inner Noether loss over
    ``min(tailor_horizon, L)`` steps; meta-training a ``MetaTailoring`` rolls out over its
    ``loss_horizon`` even when the window is shorter, then scores the first ``L`` steps."""
    from symgraph.noether import MetaTailoring
    from symgraph.noether.quantities import AngularMomentum
    from symgraph.train import task_dynamics
    from symgraph.train.task_dynamics import NextStepTask

    calls = []

    def spy(*args, **kwargs):
        calls.append((kwargs["horizon"], kwargs["loss_horizon"]))
        return real_tailor(*args, **kwargs)

    real_tailor = task_dynamics.tailor
    monkeypatch.setattr(task_dynamics, "tailor", spy)
    batch = _window_batch(_windows([(0.0, 0.0, 0.0)] * 2, frames=4, tag=1))
    model = _Drift((0.3, -0.1, 0.2), (0.0, 0.05, 0.0))
    task = NextStepTask(quantity=AngularMomentum(), tailor_steps=1, tailor_horizon=20)
    metrics = task.metrics(model, batch)
    assert calls == [(3, 3), (3, 3)] and metrics["rollout_rmse_tailored"].shape == (2,)
    task = NextStepTask(quantity=AngularMomentum(), tailor_steps=1, tailor_horizon=2)
    task.metrics(model, batch)
    assert calls[2:] == [(3, 2), (3, 2)]

    horizons = []
    real_meta = MetaTailoring.tailor

    def meta_spy(self, x0, horizon, *args, **kwargs):
        horizons.append(horizon)
        return real_meta(self, x0, horizon, *args, **kwargs)

    monkeypatch.setattr(MetaTailoring, "tailor", meta_spy)
    meta = MetaTailoring(model, AngularMomentum(), loss_horizon=5).train()
    loss, n = NextStepTask().loss(meta, batch)
    assert horizons == [5] and n == 2 and torch.isfinite(loss)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--molecules", "XYZ"], "dynamics: --molecules: 'XYZ' is not in ase's g2 collection"),
        (["--data", "md17", "--md17-path", "missing.npz"], "--md17-path: missing.npz does not"),
        (["--md17-path", "x.npz"], "dynamics: --md17-path: read with --data md17 only, got "
         "--data generated"),
        (["--md17-stride", "2"], "dynamics: --md17-stride: read with --data md17 only"),
        (["--data", "md17", "--md17-path", "x.npz", "--temperature", "10"],
         "dynamics: --temperature: read with --data generated only, got --data md17"),
    ],
)  # fmt: skip
def test_data_errors_name_the_flags(tmp_path, capsys, monkeypatch, flags, message):
    """Refusals of the data name the flag, not the library argument; the flags of the
    source --data does not read are refused rather than ignored."""
    monkeypatch.chdir(tmp_path)
    argv = ["train", "dynamics", *flags, "--data-root", str(tmp_path / "c")]
    assert main([*argv, "--out", str(tmp_path / "run")]) == 2
    assert f"symgraph: error: {message}" in capsys.readouterr().err


@pytest.mark.parametrize(
    "split, message",
    [(["1.9", "1", "1"], "--split: fractions [1.9, 1.0, 1.0] sum to 3.9 > 1"),
     (["nan", "1", "1"], "--split: sizes must be finite and non-negative, got [nan, 1.0, 1.0]")],
)  # fmt: skip
def test_split_counts_are_whole_numbers_and_finite(tmp_path, capsys, split, message):
    """``--split 1.9 1 1`` trained on one trajectory (1.9 read as the count 1) and NaN
    failed with "cannot convert float NaN to integer"; both are refused naming --split."""
    argv = ["train", "dynamics", *TINY, "--split", *split, "--data-root", str(tmp_path / "c")]
    assert main([*argv, "--out", str(tmp_path / "run")]) == 2
    assert f"symgraph: error: dynamics: {message}" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "flags, message",
    [(["--tailor-lr", "0.1"], "--tailor-lr: read only with --tailor-steps > 0"),
     (["--tailor-horizon", "3"], "--tailor-horizon: read only with --tailor-steps > 0"),
     (["--noether-horizon", "2"], "--noether-horizon: read only with --noether"),
     (["--noether", "learned", "--noether-weight", "2"],
      "--noether-weight: read only with a known quantity in --noether"),
     (["--noether", "momentum", "--meta-inner-lr", "0.1"],
      "--meta-inner-lr: read only with --noether learned")],
)  # fmt: skip
def test_flags_nothing_reads_are_refused(tmp_path, capsys, flags, message):
    """A flag set where its setting is off was silently ignored while config.json recorded
    it; it is refused before any data is made."""
    argv = ["train", "dynamics", *TINY, *flags, "--data-root", str(tmp_path / "c")]
    assert main([*argv, "--out", str(tmp_path / "run")]) == 2
    assert f"symgraph: error: dynamics: {message}" in capsys.readouterr().err
    assert not (tmp_path / "run").exists() and not (tmp_path / "c").exists()


def test_horizon_must_leave_a_frame_to_start_from(tmp_path, capsys):
    """--horizon equal to --frames leaves no window of horizon + 1 frames: a usage error."""
    argv = ["train", "dynamics", *TINY, "--horizon", "12", "--data-root", str(tmp_path / "c")]
    assert main([*argv, "--out", str(tmp_path / "run")]) == 2
    assert "--horizon: expected 1 <= horizon <= --frames - 1 = 11, got 12" in (
        capsys.readouterr().err
    )


def test_dynamics_job_builds_what_the_flags_say(tmp_path):
    """Held-out windows of --horizon + 1 frames do not overlap, 'learned' meta-tailors and
    the conservation loss rolls out over --noether-horizon steps, tailoring over
    --tailor-horizon, and the known quantities are scaled on training data only."""
    from symgraph.cli import build_parser
    from symgraph.data.frames import Frame
    from symgraph.noether.known import known_quantity, typical_scales
    from symgraph.train.job_dynamics import build_trajectories
    from symgraph.train.jobs import get_job, load_jobs

    flags = ["--noether", "momentum,learned", "--noether-horizon", "3", "--tailor-steps", "1",
             "--tailor-horizon", "2"]  # fmt: skip
    argv = ["train", "dynamics", *TINY, *flags, "--data-root", str(tmp_path / "cache")]
    args = build_parser(load_jobs()).parse_args(argv)
    spec = get_job("dynamics")(args)
    assert len(spec.val) == len(spec.test) == 2  # 12 frames: windows 0-5 and 5-10
    assert spec.model.loss_horizon == 3
    flat = [t.to(torch.float32) for t in build_trajectories(args)[0]]
    train = [flat[i] for i in spec.split_indices()["train"]]
    (conservation,) = spec.extra_losses
    assert conservation.horizon == 3 and spec.resolved_task().tailor_horizon == 2
    frame = flat[0].flatten()  # with a net momentum (MD frames have none)
    frame = Frame(frame.pos, torch.ones_like(frame.vel), frame.z, frame.mass, frame.batch_index())
    expected = known_quantity(["momentum"], typical_scales(train))(frame)
    torch.testing.assert_close(conservation.quantity(frame), expected, rtol=1e-6, atol=0)
    leaked = known_quantity(["momentum"], typical_scales(flat))(frame)
    assert not torch.allclose(leaked, expected, rtol=1e-4, atol=0)
