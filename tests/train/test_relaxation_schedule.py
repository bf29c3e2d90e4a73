"""The relaxation's own learning rate and warm-up (``symgraph.train.relaxation_schedule``)."""

from __future__ import annotations

import pytest
import torch

from symgraph.cli import main as symgraph_main
from symgraph.models.fluids import build_fluid_model
from symgraph.nn import relaxed_modules
from symgraph.train.relaxation_schedule import (
    RelaxationWarmup,
    relaxation_parameter_groups,
    relaxed_adam,
)


def test_relaxation_parameters_get_their_own_group_at_the_scaled_rate():
    model = build_fluid_model("relaxed", 3, width=4, layers=2)
    groups = relaxation_parameter_groups(model, lr=1e-3, lr_scale=0.25)
    free = {id(p) for _, m in relaxed_modules(model) for p in m.relaxation_parameters()}
    assert [g["lr"] for g in groups] == [1e-3, 2.5e-4]
    assert {id(p) for p in groups[1]["params"]} == free
    assert free.isdisjoint(id(p) for p in groups[0]["params"])
    assert len(groups[0]["params"]) + len(groups[1]["params"]) == len(list(model.parameters()))
    optimizer = relaxed_adam(1e-3, lr_scale=0.25)(model)
    assert [g["lr"] for g in optimizer.param_groups] == [1e-3, 2.5e-4]
    strict = build_fluid_model("equivariant", 3, width=4, layers=2)
    assert len(relaxation_parameter_groups(strict, 1e-3, 0.25)) == 1


@pytest.mark.parametrize("bad", [0.0, -1.0, float("inf"), float("nan")])
def test_bad_scale_or_warmup_is_refused(bad):
    model = build_fluid_model("relaxed", 3, width=4, layers=2)
    with pytest.raises(ValueError, match="lr_scale: expected a positive finite number"):
        relaxation_parameter_groups(model, 1e-3, bad)
    with pytest.raises(ValueError, match="epochs: expected an int ≥ 0"):
        RelaxationWarmup(-1)


def _free_heads(run) -> list[torch.Tensor]:
    state = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=False)["model"]
    return [v for k, v in state.items() if k.endswith("head.free")]


@pytest.mark.parametrize(("epochs", "warmup", "released"), [(1, 1, False), (2, 1, True)])
def test_warmup_trains_the_strict_model_first_then_releases_the_relaxation(
    tmp_path, epochs, warmup, released
):
    run = tmp_path / "run"
    flags = [
        "--model", "relaxed", "--grid", "16", "--simulations", "2", "--domain-simulations",
        "1", "--frames", "16", "--future-frames", "6", "--frames-in", "2", "--horizon", "1",
        "--width", "4", "--layers", "2", "--epochs", str(epochs), "--batch-size", "8",
        "--relaxation-warmup", str(warmup), "--relaxation-lr-scale", "0.5",
        "--no-progress", "--out", str(run),
    ]  # fmt: skip
    assert symgraph_main(["train", "fluid", *flags]) == 0
    heads = _free_heads(run)
    assert heads and all(h.abs().max() > 0 for h in heads) == released
    if not released:  # frozen at its initial value: exactly the strict model
        assert all(torch.count_nonzero(h) == 0 for h in heads)
    checkpoint = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=False)
    rates = [g["lr"] for g in checkpoint["optimizer"]["param_groups"]]
    assert rates == pytest.approx([1e-3, 5e-4])


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--relaxation-lr-scale", "0"], "--relaxation-lr-scale: expected a positive finite"),
        (["--relaxation-warmup", "-2"], "--relaxation-warmup: expected epochs >= 0"),
        (["--relaxation-weight", "-1"], "--relaxation-weight: expected a non-negative finite"),
        (["--relaxation-weight", "nan"], "--relaxation-weight: expected a non-negative finite"),
        (["--horizon", "0"], "--horizon: expected a positive integer"),
        (["--frames-in", "0"], "--frames-in: expected a positive integer"),
        (["--simulations", "0"], "--simulations: expected a positive integer"),
        (["--grid", "6"], "--grid: expected an even integer >= 8"),
        (["--grid", "33"], "--grid: expected an even integer >= 8"),
    ],
)
def test_bad_flags_of_the_fluid_job_name_the_flag(tmp_path, capsys, flags, message):
    base = ["train", "fluid", "--out", str(tmp_path / "run"), "--no-progress"]
    with pytest.raises(SystemExit) as exit_info:
        symgraph_main([*base, *flags])
    assert exit_info.value.code == 2
    assert f"argument {message}" in capsys.readouterr().err


def test_breaking_irreps_without_the_input_relaxation_are_refused(tmp_path, capsys):
    """``--breaking`` is read only by ``--relaxation input``; a level such as 0.3 given
    there by mistake (the plumes' level is ``--symmetry-breaking``) is not ignored."""
    args = ["train", "fluid", "--out", str(tmp_path / "run"), "--no-progress"]
    assert symgraph_main([*args, "--model", "relaxed", "--breaking", "0.3"]) == 2
    err = capsys.readouterr().err
    assert "--breaking: irreps of the learned symmetry-breaking input" in err
    assert "--symmetry-breaking" in err and not (tmp_path / "run").exists()


@pytest.mark.parametrize("model", ["equivariant", "conv"])
def test_relaxed_only_settings_are_refused_for_strict_models(tmp_path, capsys, model):
    """A strict model reads none of the relaxed model's settings: given, they were ignored."""
    args = ["train", "fluid", "--out", str(tmp_path / "run"), "--no-progress", "--model", model]
    flags = ["--relaxation", "input", "--relaxation-warmup", "3", "--relaxation-lr-scale", "0.1"]
    assert symgraph_main([*args, *flags]) == 2
    err = capsys.readouterr().err
    assert "--relaxation-lr-scale, --relaxation-warmup, --relaxation: read by the relaxed" in err
    assert f"got --model {model}" in err and not (tmp_path / "run").exists()


def test_a_run_ending_inside_the_warmup_returns_trainable_relaxation():
    from types import SimpleNamespace

    model = build_fluid_model("relaxed", 3, width=4, layers=2)
    free = [p for _, m in relaxed_modules(model) for p in m.relaxation_parameters()]
    trainer = SimpleNamespace(model=model, epoch=0, config=SimpleNamespace(epochs=2))
    warmup = RelaxationWarmup(5)
    warmup.on_batch_start(trainer, 1, None)
    assert free and not any(p.requires_grad for p in free)
    warmup.on_epoch_end(trainer, 0)  # not the last epoch: still frozen
    assert not any(p.requires_grad for p in free)
    warmup.on_epoch_end(trainer, 1)
    assert all(p.requires_grad for p in free)


def test_relaxed_adam_applies_weight_decay_to_both_groups():
    """``weight_decay`` of :func:`relaxed_adam` reaches every parameter group."""
    model = build_fluid_model("relaxed", 3, width=4, layers=2)
    optimizer = relaxed_adam(1e-3, weight_decay=0.125, lr_scale=0.5)(model)
    assert len(optimizer.param_groups) == 2
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.125, 0.125]


def test_zero_warmup_never_freezes_and_a_bool_is_refused():
    """``RelaxationWarmup(0)`` leaves the relaxation trainable from the first batch; ``True`` is
    not an epoch count."""
    from types import SimpleNamespace

    model = build_fluid_model("relaxed", 3, width=4, layers=2)
    free = [p for _, m in relaxed_modules(model) for p in m.relaxation_parameters()]
    trainer = SimpleNamespace(model=model, epoch=0, config=SimpleNamespace(epochs=3))
    RelaxationWarmup(0).on_batch_start(trainer, 1, None)
    assert free and all(p.requires_grad for p in free)
    with pytest.raises(ValueError, match="epochs: expected an int ≥ 0"):
        RelaxationWarmup(True)
