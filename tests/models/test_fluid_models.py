"""Fluid next-frame predictors: grid-rotation equivariance, rollouts, bad input, the ``fluid``
job and the example in quick mode."""

from __future__ import annotations

import json

import pytest
import torch

from symgraph.cli import main as symgraph_main
from symgraph.groups import Rep, group_from_name
from symgraph.lattice import FieldLayout, reflect_field, rotate_field
from symgraph.models.fluids import FluidCNN, SteerableFluidNet, build_fluid_model, rollout
from symgraph.nn import ImplicitSteerableConv, relaxation_penalty


def frames(layout: str = "1x1o", batch: int = 2, t: int = 3, size: int = 8, dtype=torch.float32):
    channels = FieldLayout(layout).field_channels
    return torch.randn(batch, t, channels, size, size, dtype=dtype)


def turn(x: torch.Tensor, k: int, layout: str) -> torch.Tensor:
    """Rotate every frame of ``[B, T, C, H, W]`` (or ``[B, C, H, W]``) by ``k`` quarter turns."""
    if x.dim() == 4:
        return rotate_field(x, k, layout)
    return rotate_field(x.flatten(0, 1), k, layout).reshape(x.shape)


def commutation_error(model, x, layout, k) -> float:
    with torch.no_grad():
        expected = turn(model(x), k, layout)
        return float((model(turn(x, k, layout)) - expected).abs().max() / expected.abs().max())


def fit(model, x, target, steps: int = 150) -> list[float]:
    """Adam (lr 1e-2) on the MSE of ``model(x)`` against ``target``; the loss at each step."""
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(steps):
        loss = torch.nn.functional.mse_loss(model(x), target)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    return losses


@pytest.mark.parametrize("kind", ["equivariant", "relaxed"])
@pytest.mark.parametrize("layout", ["1x1o", "1x1o + 1x0e"])
def test_steerable_predictors_commute_with_quarter_turns(kind, layout):
    torch.manual_seed(0)
    model = build_fluid_model(kind, 3, layout, width=4, layers=2, scale=0.5)
    assert float(relaxation_penalty(model).detach()) == 0.0  # relaxed: at initialisation
    x = frames(layout)
    for k in (1, 2, 3):
        assert commutation_error(model, x, layout, k) < 1e-5
    model = model.double()
    assert commutation_error(model, x.double(), layout, 1) < 1e-12


@pytest.mark.parametrize("kind", ["equivariant", "relaxed"])
@pytest.mark.parametrize("group", ["C4", "D4"])
def test_regular_features_commute_with_the_grid_group(kind, group):
    torch.manual_seed(0)
    layout = "1x1o + 1x0e"
    model = build_fluid_model(kind, 1, layout, width=4, layers=3, group=group, features="regular")
    order = 4 if group == "C4" else 8
    assert model.convs[1].rep_in.dim == 2 * order  # width/2 = 2 regular copies
    model = model.double()
    x = frames(layout, t=1, dtype=torch.float64)
    assert commutation_error(model, x, layout, 1) < 1e-12
    if group == "D4":
        with torch.no_grad():
            expected = reflect_field(model(x), "y", layout)
            moved = reflect_field(x.flatten(0, 1), "y", layout).reshape(x.shape)
            assert torch.allclose(model(moved), expected, atol=1e-12)


def test_regular_features_learn_a_rotation_symmetric_map():
    """The strict model with regular features fits a C4-equivariant target: the discrete
    Laplacian of the velocity (each component), far below the loss it starts from."""
    torch.manual_seed(0)
    model = build_fluid_model("equivariant", 1, width=4, layers=2, features="regular")
    x = frames(batch=8, t=1, size=8)
    lap = sum(torch.roll(x[:, 0], s, d) for s in (1, -1) for d in (-1, -2)) - 4 * x[:, 0]
    target = x[:, 0] + 0.1 * lap
    losses = fit(model, x, target)
    assert losses[-1] < 0.1 * losses[0]


@pytest.mark.parametrize("kind", ["equivariant", "relaxed"])
def test_kernel_mlp_size_is_an_option(kind):
    small = build_fluid_model(kind, 1, width=4, layers=2, kernel_hidden="1x0e + 1x1o + 1x2e")
    default = build_fluid_model(kind, 1, width=4, layers=2)
    for conv in small.convs:
        assert conv.kernel.rep_hidden == Rep("1x0e + 1x1o + 1x2e", conv.group)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(small) < count(default)
    x = frames(t=1, dtype=torch.float64)
    assert commutation_error(small.double(), x, "1x1o", 1) < 1e-12


def test_free_pathway_width_is_an_option():
    model = build_fluid_model("relaxed", 1, width=4, layers=2, free_hidden=2)
    assert all(conv.kernel.head.free.shape[1] == 2 for conv in model.convs)
    with pytest.raises(ValueError, match="free_hidden: expected a positive int"):
        build_fluid_model("relaxed", 1, width=4, layers=2, free_hidden=0)


def test_dihedral_model_commutes_with_reflections():
    model = SteerableFluidNet(2, "1x1o", "2x0e + 2x1o", layers=2, group="D4").double()
    x = frames(t=2, dtype=torch.float64)
    with torch.no_grad():
        expected = reflect_field(model(x), "y", "1x1o")
        moved = reflect_field(x.flatten(0, 1), "y", "1x1o").reshape(x.shape)
        assert torch.allclose(model(moved), expected, atol=1e-12)


@pytest.mark.parametrize("free_input", ["radial", "constant"])
def test_low_capacity_relaxed_variants_start_strict_and_can_break(free_input):
    torch.manual_seed(0)
    model = build_fluid_model("relaxed", 3, width=4, layers=3, free_input=free_input).double()
    assert all(conv.kernel.free_input == free_input for conv in model.convs)
    assert float(relaxation_penalty(model).detach()) == 0.0
    x = frames(dtype=torch.float64)
    assert commutation_error(model, x, "1x1o", 1) < 1e-12
    with torch.no_grad():
        for conv in model.convs:
            conv.kernel.head.free.normal_(std=0.1)
    assert float(relaxation_penalty(model).detach()) > 0
    assert commutation_error(model, x, "1x1o", 1) > 1e-3


@pytest.mark.parametrize("group", ["C4", "D4"])
def test_breaking_input_relaxation_starts_strict(group):
    model = build_fluid_model("relaxed", 3, width=4, layers=3, relaxation="input", group=group)
    model = model.double()
    assert model.breaking is not None
    assert all(isinstance(conv, ImplicitSteerableConv) for conv in model.convs)
    assert float(relaxation_penalty(model).detach()) == 0.0
    x = frames(dtype=torch.float64)
    assert commutation_error(model, x, "1x1o", 1) < 1e-12
    with torch.no_grad():
        model.breaking.value.copy_(torch.tensor([0.0, 0.0, 1.0]))
    assert commutation_error(model, x, "1x1o", 1) < 1e-12
    # along z, b is fixed by the quarter turns; D4's flips are half turns about in-plane
    # axes, which reverse z: the penalty counts exactly what some element moves
    assert float(relaxation_penalty(model).detach()) == (0.0 if group == "C4" else 1.0)


def test_breaking_input_learns_a_global_direction_the_strict_model_cannot():
    """Target: the last frame plus a uniform wind ``(0.5, 0)`` (mean square 0.125 per
    component). No rotation-equivariant map can add a fixed direction; the model with a
    learned ``1x1o`` input fits it."""
    torch.manual_seed(0)
    x = frames(batch=8, t=1, size=8)
    target = x[:, 0] + torch.tensor([0.5, 0.0])[:, None, None]
    finals = {}
    for kind, options in (("equivariant", {}), ("relaxed", {"relaxation": "input"})):
        torch.manual_seed(1)
        model = build_fluid_model(kind, 1, width=4, layers=2, **options)
        finals[kind] = fit(model, x, target)[-1]
    assert finals["relaxed"] < 0.01 * 0.125
    assert finals["equivariant"] > 0.5 * 0.125
    assert float(relaxation_penalty(model).detach()) > 0.01


def test_relaxed_and_plain_cnn_break_the_symmetry():
    torch.manual_seed(0)
    relaxed = build_fluid_model("relaxed", 3, width=4, layers=2)
    with torch.no_grad():
        for conv in relaxed.convs:
            conv.kernel.head.free.normal_(std=0.1)
    assert float(relaxation_penalty(relaxed).detach()) > 0
    assert commutation_error(relaxed, frames(), "1x1o", 1) > 1e-3
    assert commutation_error(build_fluid_model("conv", 3, width=4), frames(), "1x1o", 1) > 1e-3


def test_rollout_feeds_predictions_back():
    model = FluidCNN(2, "1x1o", hidden=4, layers=2)
    x = frames(t=2)
    out = rollout(model, x, 3)
    assert out.shape == (2, 3, 2, 8, 8)
    with torch.no_grad():
        second = model(torch.stack([x[:, 1], out[:, 0]], dim=1))
    assert torch.allclose(out[:, 1], second.detach(), atol=1e-6)


def test_bad_input_names_the_argument():
    model = build_fluid_model("equivariant", 3, width=4, layers=2)
    with pytest.raises(ValueError, match="frames: expected 2 channels per frame"):
        model(frames("1x1o + 1x0e"))
    with pytest.raises(ValueError, match=r"frames: expected \[B, 3, 2, H, W\]"):
        model(frames(t=2))
    bad = frames()
    bad[0, 1, 0, 2, 3] = float("nan")
    with pytest.raises(ValueError, match="frames: expected finite values"):
        model(bad)
    with pytest.raises(ValueError, match="kind: expected one of"):
        build_fluid_model("unet", 3)
    with pytest.raises(ValueError, match="free_input: expected one of"):
        build_fluid_model("relaxed", 3, free_input="global")
    with pytest.raises(ValueError, match="relaxation: expected one of"):
        build_fluid_model("relaxed", 3, relaxation="global")
    with pytest.raises(ValueError, match="features: expected one of"):
        build_fluid_model("equivariant", 3, features="fourier")
    with pytest.raises(ValueError, match="group: features='regular' needs a finite group"):
        build_fluid_model("equivariant", 3, group="SO2", features="regular")
    with pytest.raises(ValueError, match=r"hidden: expected an irreps string or a Rep of C\(4\)"):
        SteerableFluidNet(3, "1x1o", Rep("2x0e", group_from_name("D4")))
    with pytest.raises(ValueError, match="steps: expected a positive int, got 0"):
        rollout(model, frames(), 0)


@pytest.mark.parametrize("kind", ["conv", "equivariant", "relaxed"])
@pytest.mark.parametrize("scale", [0.0, -1.0, float("nan")])
def test_a_scale_that_is_not_a_positive_number_is_refused(kind, scale):
    """Inputs are divided by ``scale``: 0 made NaN fields (the CNN returned them silently,
    the steerable models failed inside with "field: expected finite values")."""
    with pytest.raises(ValueError, match="scale: expected a positive finite number"):
        build_fluid_model(kind, 3, width=4, layers=2, scale=scale)


@pytest.mark.parametrize(
    "options",
    [
        [],
        ["--free-input", "constant", "--domain-split", "three-quarter"],
        ["--features", "regular", "--kernel-hidden", "1x0e + 1x1o + 1x2e"],
        ["--relaxation", "input", "--breaking", "1x1o + 1x0e", "--val-split", "random"],
    ],
)
def test_fluid_job_trains_and_evaluates(tmp_path, capsys, options):
    out = tmp_path / "run"
    flags = [*options,
        "--model", "relaxed", "--grid", "16", "--simulations", "2", "--domain-simulations",
        "1", "--frames", "20", "--future-frames", "6", "--frames-in", "2", "--horizon", "2",
        "--width", "4", "--layers", "2", "--epochs", "1", "--batch-size", "16",
        "--no-progress", "--out", str(out),
    ]  # fmt: skip
    assert symgraph_main(["train", "fluid", *flags]) == 0
    trained = json.loads(capsys.readouterr().out)["metrics"]
    assert {"future_rmse", "domain_rmse", "future_rmse_h2", "domain_rmse_h1"} <= set(trained)
    assert json.loads((out / "config.json").read_text())["args"]["symmetry_breaking"] == 0.2
    split = json.loads((out / "split.json").read_text())
    if "--val-split" in options:  # random: a seeded tenth of the 22 windows, all kept
        assert sorted(split["train"] + split["val"]) == list(range(22))
        assert len(split["val"]) == 3
    else:  # by default time: 11 windows of 4 frames per simulation, training reads 3
        assert split["val"] == [9, 10, 20, 21]
        assert split["train"] == [*range(0, 7), *range(11, 18)]
    assert symgraph_main(["evaluate", str(out)]) == 0
    evaluated = json.loads(capsys.readouterr().out)["metrics"]
    assert evaluated == pytest.approx(trained, rel=1e-6)


def test_fluid_job_scale_comes_from_the_training_past_only():
    """The loss unit is the RMS of the frames training reads: the training simulations'
    future frames are the future test split and must not enter it."""
    from symgraph.data.fluids import PlumeConfig, SmokePlumeDataset
    from symgraph.train.job_fluid import _field_rms

    options = dict(num_train_simulations=2, num_domain_simulations=1, frames=12,
                   future_frames=5, input_frames=2, target_frames=1,
                   base_config=PlumeConfig(size=16))  # fmt: skip
    train = SmokePlumeDataset(split="train", **options)
    past = train.data[:, :7].double()
    assert _field_rms(train) == pytest.approx(float(past.square().mean().sqrt()), rel=1e-12)
    assert _field_rms(train) != pytest.approx(float(train.data.double().square().mean().sqrt()))


def test_fluid_rollout_task_loss_and_metrics_by_hand():
    """Loss in units of ``scale``; ``*_rmse`` the RMSE over all forecast frames (not the mean
    of the per-step RMSEs), grouped by tag: zero predictions against frames of 1 then 3."""
    from torch import nn

    from symgraph.train.job_fluid import FluidRolloutTask

    class Zero(nn.Module):
        def forward(self, window):
            return torch.zeros_like(window[:, -1])

    inputs = torch.zeros(2, 2, 1, 2, 2)
    targets = torch.stack([torch.ones(1, 2, 2), torch.full((1, 2, 2), 3.0)])[None].repeat(
        2, 1, 1, 1, 1
    )
    batch = (inputs, targets, torch.tensor([-1, 0]))
    task = FluidRolloutTask(horizon=2, train_horizon=2, scale=2.0)
    loss, count = task.loss(Zero(), batch)
    assert count == 2 and float(loss) == pytest.approx((1 + 9) / 2 / 4)
    metrics = task.metrics(Zero(), batch)
    for name in ("rmse", "future_rmse"):
        assert metrics[name].tolist() == pytest.approx([5**0.5])
        assert metrics[f"{name}_h1"].tolist() == [1.0] and metrics[f"{name}_h2"].tolist() == [3.0]
    assert "domain_rmse" not in metrics
    assert metrics["loss"].tolist() == pytest.approx([5 / 4, 5 / 4])


def test_fluid_job_passes_its_flags_on():
    """--symmetry-breaking reaches the simulations, --relaxation-weight the penalty."""
    from symgraph.cli import build_parser
    from symgraph.nn import relaxed_modules
    from symgraph.train.jobs import get_job, load_jobs

    flags = [
        "--grid", "8", "--simulations", "1", "--domain-simulations", "1", "--frames", "10",
        "--future-frames", "3", "--frames-in", "2", "--horizon", "1", "--width", "4",
        "--layers", "2", "--symmetry-breaking", "0.5", "--relaxation-weight", "0.25",
    ]  # fmt: skip
    args = build_parser(load_jobs()).parse_args(["train", "fluid", *flags])
    spec = get_job("fluid")(args)
    plumes = spec.train.dataset.dataset
    assert {config.symmetry_breaking for config in plumes.configs} == {0.5}
    for _, module in relaxed_modules(spec.model):
        for parameter in module.relaxation_parameters():
            torch.nn.init.constant_(parameter, 1.0)
    (extra,) = spec.extra_losses
    with torch.no_grad():
        penalty, weighted = float(relaxation_penalty(spec.model)), float(extra(spec.model, None))
    assert penalty > 0 and weighted == pytest.approx(0.25 * penalty)


def test_strict_models_refuse_the_relaxed_width(tmp_path, capsys):
    """--free-hidden is read by the relaxed model only: refused with --model conv."""
    args = ["train", "fluid", "--model", "conv", "--free-hidden", "4", "--out", str(tmp_path)]
    assert symgraph_main(args) == 2
    assert "--free-hidden: read by the relaxed model only" in capsys.readouterr().err


def test_a_stencil_wider_than_the_grid_is_refused_at_construction():
    for kind in ("conv", "equivariant", "relaxed"):
        with pytest.raises(
            ValueError, match=r"radius: stencil radius 4 on periodic axis H of size 8 wraps"
        ):
            build_fluid_model(kind, 3, width=4, layers=2, radius=4, grid=8)
    build_fluid_model("conv", 3, width=4, layers=2, radius=3, grid=8)  # 7 cells fit


@pytest.mark.parametrize("kind", ["conv", "equivariant", "relaxed"])
def test_every_model_kind_refuses_a_stencil_of_one_cell(kind):
    """Radius 0 couples no cells; the steerable models refused it and the CNN became 1x1."""
    with pytest.raises(ValueError, match="radius: expected a positive int, got 0"):
        build_fluid_model(kind, 3, width=4, layers=2, radius=0)


@pytest.mark.parametrize(
    "flags, message",
    [
        (
            ["--grid", "8", "--radius", "4"],
            "fluid: --radius: stencil radius 4 on periodic axis H of size 8",
        ),
        (["--symmetry-breaking", "1.5"], "fluid: --symmetry-breaking: expected a number in"),
        (
            "--train-horizon 3 --horizon 2 --grid 8 --simulations 1 --frames 10".split(),
            "fluid: --train-horizon: expected at most --horizon = 2 frames",
        ),
        (["--kernel-hidden", "4x9q"], "fluid: --kernel-hidden: expected an e3nn irreps string"),
        (["--group", "C0"], "fluid: --group: unknown group name 'C0'"),
    ],
)
def test_fluid_job_names_the_flags_before_writing_anything(tmp_path, capsys, flags, message):
    """Refusals of the library arguments name the flags, and come before simulating or
    writing the run folder."""
    out = tmp_path / "run"
    assert symgraph_main(["train", "fluid", *flags, "--out", str(out)]) == 2
    assert f"symgraph: error: {message}" in capsys.readouterr().err
    assert not out.exists()


def test_fluid_job_refuses_an_invariant_breaking_input(tmp_path, capsys):
    """--breaking 1x0e under C4 could never break the symmetry: refused, naming the flag."""
    flags = ["--relaxation", "input", "--breaking", "1x0e", "--grid", "8", "--simulations",
             "1", "--domain-simulations", "1", "--frames", "10", "--future-frames", "3",
             "--frames-in", "2", "--horizon", "1", "--out", str(tmp_path / "run")]  # fmt: skip
    assert symgraph_main(["train", "fluid", *flags]) == 2
    err = capsys.readouterr().err
    assert "fluid: --breaking: every vector of '1x0e' is invariant under C(4)" in err


@pytest.mark.parametrize("relaxation", [[], ["--relaxation", "input"]])
def test_example_runs_in_quick_mode(capsys, load_script, relaxation):
    example = load_script("examples/fluid_dynamics.py")
    example.main(["--quick", *relaxation])
    text = capsys.readouterr().out
    for kind in ("conv", "equivariant", "relaxed"):
        assert f"| {kind} |" in text
    assert ("{'breaking':" in text) == bool(relaxation)  # the per-layer relaxation report


@pytest.mark.parametrize("kind", ["conv", "equivariant"])
def test_predictors_are_homogeneous_in_the_field_scale(kind):
    """Inputs are divided by ``scale`` and updates multiplied: a model of scale ``s`` on
    ``s x`` predicts ``s`` times what the same model of scale 1 predicts on ``x``."""
    torch.manual_seed(0)
    unit = build_fluid_model(kind, 3, width=4, layers=2, scale=1.0).double()
    torch.manual_seed(0)
    scaled = build_fluid_model(kind, 3, width=4, layers=2, scale=2.5).double()
    x = frames(dtype=torch.float64)
    with torch.no_grad():
        expected, out = 2.5 * unit(x), scaled(2.5 * x)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)
    assert (expected - 2.5 * x[:, -1]).abs().max() > 1e-3  # a non-trivial update


def test_cnn_update_is_added_to_the_last_frame():
    """With zero weights the CNN's update is its last bias times ``scale``, added to the
    newest frame (no nonlinearity after the last convolution)."""
    model = FluidCNN(3, "1x1o", hidden=4, layers=2, scale=0.5).double()
    with torch.no_grad():
        model.convs[-1].weight.zero_()
        model.convs[-1].bias.copy_(torch.tensor([-2.0, 3.0]))
    x = frames(dtype=torch.float64)
    expected = x[:, -1] + 0.5 * torch.tensor([-2.0, 3.0], dtype=torch.float64)[:, None, None]
    torch.testing.assert_close(model(x).detach(), expected, rtol=1e-12, atol=1e-12)


def test_cnn_commutes_with_periodic_shifts():
    """Circular padding: shifting the field around the periodic grid shifts the prediction."""
    torch.manual_seed(0)
    model = FluidCNN(3, "1x1o", hidden=4, layers=3).double()
    x = frames(dtype=torch.float64)
    with torch.no_grad():
        shifted = model(torch.roll(x, (2, -3), dims=(-2, -1)))
        expected = torch.roll(model(x), (2, -3), dims=(-2, -1))
    torch.testing.assert_close(shifted, expected, rtol=1e-12, atol=1e-12)


def test_steerable_model_reads_every_input_frame():
    """Every one of the ``T`` input frames (not only the newest) changes the prediction."""
    torch.manual_seed(0)
    model = build_fluid_model("equivariant", 3, "1x1o + 1x0e", width=4, layers=2).double()
    x = frames("1x1o + 1x0e", dtype=torch.float64)
    with torch.no_grad():
        base = model(x)
        for t in range(3):
            for channel in range(3):
                moved = x.clone()
                moved[:, t, channel] += torch.randn_like(moved[:, t, channel])
                assert (model(moved) - base).abs().max() > 1e-6, (t, channel)


def test_kernel_radial_range_reaches_the_stencil_corners():
    """``r_max`` defaults to the stencil's reach ``radius √2``; the CNN has ``2 width``
    channels and kernel size ``2 radius + 1``."""
    for radius in (1, 2):
        model = build_fluid_model("equivariant", 3, width=4, layers=2, radius=radius)
        for conv in model.convs:
            assert conv.kernel.radial.r_max == pytest.approx(radius * 2**0.5, rel=1e-12)
    cnn = build_fluid_model("conv", 3, width=4, layers=3, radius=2)
    assert [c.out_channels for c in cnn.convs] == [8, 8, 2]
    assert all(c.kernel_size == (5, 5) for c in cnn.convs)


VD = "1x1o + 1x0e"  # velocity (u, v) and density


def per_field(x: torch.Tensor, velocity: float, density: float) -> torch.Tensor:
    """``x [..., 3, H, W]`` with the velocity channels times ``velocity``, the density times
    ``density``."""
    factors = torch.tensor([velocity, velocity, density], dtype=x.dtype)[:, None, None]
    return x * factors


@pytest.mark.parametrize("kind", ["conv", "equivariant", "relaxed"])
def test_per_field_scales_make_predictors_independent_of_the_fields_units(kind):
    """With one scale per field, a model of scales ``(a, b)`` on velocities times ``a`` and
    densities times ``b`` predicts what the model of scales ``(1, 1)`` predicts, each field
    in its own unit: a change of the density unit does not reach the velocity."""
    torch.manual_seed(0)
    unit = build_fluid_model(kind, 3, VD, width=4, layers=2, scale=(1.0, 1.0)).double()
    torch.manual_seed(0)
    scaled = build_fluid_model(kind, 3, VD, width=4, layers=2, scale=(0.5, 300.0)).double()
    assert scaled.scale == (0.5, 300.0)
    x = frames(VD, dtype=torch.float64)
    with torch.no_grad():
        expected, out = per_field(unit(x), 0.5, 300.0), scaled(per_field(x, 0.5, 300.0))
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kind", ["equivariant", "relaxed"])
def test_per_field_scales_keep_the_steerable_models_equivariant(kind):
    """The velocity's two components share their scale: the model still commutes with
    quarter turns of the grid."""
    torch.manual_seed(0)
    model = build_fluid_model(kind, 3, VD, width=4, layers=2, scale=(0.1, 2.0)).double()
    x = frames(VD, dtype=torch.float64)
    for k in (1, 2, 3):
        assert commutation_error(model, x, VD, k) < 1e-10


@pytest.mark.parametrize(
    ("scale", "error", "message"),
    [
        ((1.0,), ValueError, r"scale: expected one number per field of '1x1o\+1x0e' \(2\), got 1"),
        ((1.0, 0.0), ValueError, r"scale\[1\]: expected a positive finite number"),
        ("1.0", TypeError, r"scale: expected a positive finite number .* or a sequence of one"),
        (torch.ones(2), TypeError, r"scale: expected .* per field of '1x1o\+1x0e', got Tensor"),
    ],
)
def test_bad_per_field_scales_are_named(scale, error, message):
    with pytest.raises(error, match=message):
        build_fluid_model("conv", 3, VD, width=4, layers=2, scale=scale)


def test_fluid_job_scales_velocity_and_density_by_their_own_rms():
    """``_field_rms(per_field=True)``: the RMS of the velocity components together and of the
    density, over the training past; the shared RMS mixes both."""
    from symgraph.data.fluids import PlumeConfig, SmokePlumeDataset
    from symgraph.train.job_fluid import _field_rms

    options = dict(num_train_simulations=2, num_domain_simulations=1, frames=12,
                   future_frames=5, input_frames=2, target_frames=1, fields="velocity+density",
                   base_config=PlumeConfig(size=16))  # fmt: skip
    train = SmokePlumeDataset(split="train", **options)
    past = train.data[:, :7].double()
    velocity, density = _field_rms(train, per_field=True)
    assert velocity == pytest.approx(float(past[:, :, :2].square().mean().sqrt()), rel=1e-12)
    assert density == pytest.approx(float(past[:, :, 2].square().mean().sqrt()), rel=1e-12)
    shared = _field_rms(train)
    assert shared == pytest.approx(((2 * velocity**2 + density**2) / 3) ** 0.5, rel=1e-12)


def test_fluid_rollout_task_weighs_each_field_by_its_own_scale():
    """Per-field scales: the loss is the mean squared error of each channel in units of its
    field's scale; the RMSE metrics stay in the fields' own units."""
    from torch import nn

    from symgraph.train.job_fluid import FluidRolloutTask

    class Zero(nn.Module):
        def forward(self, window):
            return torch.zeros_like(window[:, -1])

    inputs = torch.zeros(1, 2, 3, 2, 2)
    targets = per_field(torch.ones(1, 1, 3, 2, 2), 2.0, 8.0)  # velocity 2, density 8
    batch = (inputs, targets, torch.tensor([-1]))
    task = FluidRolloutTask(horizon=1, scale=(1.0, 4.0), layout=VD)
    loss, _ = task.loss(Zero(), batch)
    assert float(loss) == pytest.approx((2 * 2**2 + (8 / 4) ** 2) / 3)
    metrics = task.metrics(Zero(), batch)
    assert metrics["loss"].tolist() == pytest.approx([float(loss)])
    assert metrics["rmse"].tolist() == pytest.approx([((2 * 4 + 64) / 3) ** 0.5])
    with pytest.raises(ValueError, match=r"scale: expected one number per field of '1x1o'"):
        FluidRolloutTask(horizon=1, scale=(1.0, 4.0))


def test_fluid_rollout_task_reports_each_field_in_its_own_units():
    """With field names, every RMSE group also reports each field's own RMSE over the
    forecast frames (``rmse_density`` does not pool velocity), each with its own unit;
    without names, or for one field, there are none."""
    from torch import nn

    from symgraph.train.job_fluid import FluidRolloutTask

    class Zero(nn.Module):
        def forward(self, window):
            return torch.zeros_like(window[:, -1])

    inputs = torch.zeros(2, 2, 3, 2, 2)
    targets = torch.cat(
        [
            per_field(torch.ones(1, 2, 3, 2, 2), 2.0, 8.0),
            per_field(torch.ones(1, 2, 3, 2, 2), 1.0, 3.0),
        ]
    )
    targets[1, 1, 2] = 5.0  # window 1, second frame: density 5
    batch = (inputs, targets, torch.tensor([-1, 0]))
    task = FluidRolloutTask(
        horizon=2, scale=(1.0, 4.0), unit=("L / time", "solver units"), layout=VD,
        field_names=("velocity", "density"),
    )  # fmt: skip
    metrics = task.metrics(Zero(), batch)
    assert metrics["rmse_velocity"].tolist() == pytest.approx([2.0])
    assert metrics["rmse_density"].tolist() == pytest.approx([8.0])
    assert metrics["future_rmse_velocity"].tolist() == pytest.approx([1.0])
    assert metrics["future_rmse_density"].tolist() == pytest.approx([((9 + 25) / 2) ** 0.5])
    assert "domain_rmse_density" not in metrics  # no domain windows in the batch
    assert task.units["future_rmse_density"] == "solver units"
    assert task.units["rmse_velocity"] == "L / time"
    assert task.units["rmse"] == "mixed units"
    unnamed = FluidRolloutTask(horizon=2, scale=(1.0, 4.0), unit="L / time", layout=VD)
    assert not [k for k in unnamed.metrics(Zero(), batch) if k.endswith(("_velocity", "_density"))]
    assert unnamed.units["rmse"] == "L / time"
    with pytest.raises(ValueError, match=r"field_names: expected 2 distinct names"):
        FluidRolloutTask(horizon=1, layout=VD, field_names=("velocity",))
    with pytest.raises(ValueError, match=r"field_names: expected 2 distinct names"):
        FluidRolloutTask(horizon=1, layout=VD, field_names=("velocity", "velocity"))
    with pytest.raises(TypeError, match=r"field_names: expected a sequence of names"):
        FluidRolloutTask(horizon=1, layout=VD, field_names="vd")
    with pytest.raises(ValueError, match=r"unit: expected one unit string, or one per field"):
        FluidRolloutTask(horizon=1, unit=("L / time",), layout=VD, field_names=("v", "d"))


def test_fluid_job_reports_velocity_and_density_rmse_apart():
    """``--fields velocity+density``: the job's task names both fields and their units."""
    from symgraph.train.jobs import get_job

    task = get_job("fluid")(_fluid_args("--fields", "velocity+density")).task
    assert [name for name, _ in task.fields] == ["velocity", "density"]
    assert task.units["domain_rmse_velocity"] == "L / time"
    assert task.units["domain_rmse_density"] == "solver units"
    velocity = get_job("fluid")(_fluid_args()).task
    assert len(velocity.fields) == 1 and velocity.units["rmse"] == "L / time"
    assert sorted(velocity.units) == sorted(  # one field: no per-field keys
        ["loss", "rmse", "rmse_h1", "future_rmse", "future_rmse_h1", "domain_rmse",
         "domain_rmse_h1"]
    )  # fmt: skip


def _fluid_args(*flags: str):
    from symgraph.cli import build_parser
    from symgraph.train.jobs import load_jobs

    small = ["--grid", "8", "--simulations", "1", "--domain-simulations", "1", "--frames",
             "10", "--future-frames", "3", "--frames-in", "2", "--horizon", "1", "--width",
             "4", "--layers", "2", "--model", "conv"]  # fmt: skip
    return build_parser(load_jobs()).parse_args(["train", "fluid", *small, *flags])


def test_fluid_job_normalises_velocity_and_density_per_field_by_default():
    """``--fields velocity+density``: the model and the loss use one RMS per field, unless
    ``--field-scale shared``; for velocity alone both are the one velocity RMS."""
    from symgraph.train.job_fluid import _field_rms
    from symgraph.train.jobs import get_job

    spec = get_job("fluid")(_fluid_args("--fields", "velocity+density"))
    plumes = spec.train.dataset.dataset
    assert spec.model.scale == _field_rms(plumes, True, _read_by(spec))
    assert [value for _, value in spec.task.scales] == list(spec.model.scale)
    flags = ("--fields", "velocity+density", "--field-scale", "shared")
    shared = get_job("fluid")(_fluid_args(*flags))
    assert shared.model.scale == _field_rms(plumes, False, _read_by(shared))
    velocity = get_job("fluid")(_fluid_args())
    assert velocity.model.scale == (
        _field_rms(velocity.train.dataset.dataset, False, _read_by(velocity)),
    )


def _read_by(spec):
    """The training windows of a ``_fluid_args`` job and the frames training reads of each
    (``--frames-in 2`` + ``--train-horizon 1``)."""
    return spec.train.indices, 3


def test_fluid_job_scale_leaves_out_the_validation_frames():
    """The RMS that scales the models and the loss covers the frames the training windows
    read, not the later frames of the validation windows (nor the future); ``--scale-frames
    past`` and runs from before the flag take the whole past, as they were trained."""
    from symgraph.train.job_fluid import _field_rms
    from symgraph.train.jobs import get_job

    spec = get_job("fluid")(_fluid_args("--frames", "14", "--future-frames", "3"))
    plumes = spec.train.dataset.dataset
    read = {
        f for i in spec.train.indices for f in range(plumes.window(i)[1], plumes.window(i)[1] + 3)
    }
    later = {
        f for i in spec.val.indices for f in range(plumes.window(i)[1], plumes.window(i)[1] + 3)
    }
    assert read == set(range(8)) and later == set(range(8, 11))  # the 11 past frames
    expected = float(plumes.data[:, :8].double().square().mean().sqrt())
    assert spec.model.scale == pytest.approx((expected,), rel=1e-12)
    assert _field_rms(plumes) != pytest.approx(expected, rel=1e-3)  # the past is not it
    past = get_job("fluid")(_fluid_args("--frames", "14", "--future-frames", "3",
                                        "--scale-frames", "past"))  # fmt: skip
    assert past.model.scale == (_field_rms(plumes),)
    args = _fluid_args("--frames", "14", "--future-frames", "3")
    del args.scale_frames
    assert get_job("fluid")(args).model.scale == (_field_rms(plumes),)
    assert get_job("fluid").saved_args({})["scale_frames"] == "past"


def test_fluid_job_reads_arguments_without_field_scale_as_one_shared_rms():
    """Arguments from before ``--field-scale`` (no ``field_scale`` attribute) build the model
    those runs trained: one RMS over velocity and density."""
    from symgraph.train.job_fluid import _field_rms
    from symgraph.train.jobs import get_job

    args = _fluid_args("--fields", "velocity+density")
    del args.field_scale, args.scale_frames  # nor --scale-frames, added later: the whole past
    spec = get_job("fluid")(args)
    assert spec.model.scale == _field_rms(spec.train.dataset.dataset)
    assert len(spec.task.scales) == 1


def test_fluid_runs_from_before_per_field_scales_evaluate_as_trained(tmp_path, capsys):
    """A velocity+density run folder without ``field_scale`` in config.json was trained with
    one shared RMS: evaluate rebuilds it so (the per-field model would predict otherwise)."""
    from symgraph.train.jobs import get_job

    out = tmp_path / "run"
    flags = ["--fields", "velocity+density", "--grid", "8", "--simulations", "1",
             "--domain-simulations", "1", "--frames", "12", "--future-frames", "4",
             "--frames-in", "1", "--horizon", "1", "--width", "4", "--layers", "2",
             "--model", "conv", "--epochs", "1", "--no-progress", "--out", str(out)]  # fmt: skip
    assert symgraph_main(["train", "fluid", *flags, "--field-scale", "shared"]) == 0
    trained = json.loads(capsys.readouterr().out)["metrics"]
    config = json.loads((out / "config.json").read_text())
    assert config["args"].pop("field_scale") == "shared"
    (out / "config.json").write_text(json.dumps(config))
    assert get_job("fluid").saved_args(config["args"])["field_scale"] == "shared"
    assert symgraph_main(["evaluate", str(out)]) == 0
    evaluated = json.loads(capsys.readouterr().out)["metrics"]
    assert evaluated == pytest.approx(trained, rel=1e-6)
    config["args"]["field_scale"] = "per-field"  # the same weights read per field: not so
    (out / "config.json").write_text(json.dumps(config))
    assert symgraph_main(["evaluate", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["metrics"]["future_rmse"] != pytest.approx(
        trained["future_rmse"], rel=1e-6
    )


def test_field_layouts_give_the_channels_of_each_field():
    """Per-field scales read these: a vector takes ``dim`` channels of the grid field, a
    scalar one, in the order of the irreps."""
    assert FieldLayout("1x1o + 1x0e").field_slices == (slice(0, 2), slice(2, 3))
    assert FieldLayout("1x0e + 2x1o").field_slices == (slice(0, 1), slice(1, 3), slice(3, 5))
    assert FieldLayout("1x1o + 1x0e", dim=3).field_slices == (slice(0, 3), slice(3, 4))
