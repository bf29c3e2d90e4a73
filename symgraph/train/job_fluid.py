"""The ``fluid`` job: next-frame prediction of smoke plumes, evaluated by rollouts.

``symgraph train fluid --model relaxed --symmetry-breaking 0.2 --frames-in 3 --epochs 20``
simulates :class:`~symgraph.data.fluids.SmokePlumeDataset` plumes (deterministic from
``--seed``; cached under ``--data-root`` when given), trains a predictor of
:mod:`symgraph.models.fluids` (``conv``, ``equivariant`` or ``relaxed``) on windows of the
training simulations' past, and reports:

- validation (the latest 10 % of each training simulation's windows, training on the
  windows that end before them, so no frame is shared; ``--val-split random``: a seeded
  random 10 % of the windows, most of which share frames with training windows, the
  protocol of ``benchmarks/relaxed.py``): ``rmse``, the RMSE of an autoregressive rollout
  of ``--horizon`` frames;
- test: ``future_rmse`` (the training simulations' future) and ``domain_rmse`` (unseen
  inflow positions), each also per forecast step, ``future_rmse_h1`` ... (RMSE vs horizon).

With ``--fields velocity+density`` these RMSEs pool both fields, whose units differ; each
field's own RMSE is reported beside them (``rmse_velocity``, ``future_rmse_density``, ...).

The training loss is the mean squared error of a rollout of ``--train-horizon`` frames, in
units of the RMS of the frames training reads (the first ``--frames-in`` +
``--train-horizon`` frames of the training windows: neither the validation windows' frames
nor the future; ``--scale-frames past``: the training simulations' whole past, validation
frames included, as runs made before the flag), which also
scales the models' inputs and updates: with ``--fields velocity+density`` one RMS per field
(velocity and density have different units; ``--field-scale shared``: one RMS over both, as
runs made before the flag were trained and are evaluated); relaxed
models add ``--relaxation-weight`` times :func:`symgraph.nn.relaxation_penalty`, and may
slow their non-equivariant pathway down (``--relaxation-lr-scale``, ``--relaxation-warmup``;
see :mod:`symgraph.train.relaxation_schedule`). Everything else -- run folder, checkpoints,
``--resume``, ``symgraph evaluate`` -- is the trainer's.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torch.utils.data import ConcatDataset, Dataset, Subset

from symgraph.train.jobs import (
    JobSpec,
    arg,
    changed_flags,
    int_at_least,
    named_by_flags,
    non_negative_float,
    positive_float,
    positive_int,
    register_job,
)
from symgraph.train.split import random_split_indices, temporal_split_indices
from symgraph.train.tasks import Task

if TYPE_CHECKING:
    from symgraph.lattice import FieldLayout

__all__ = [
    "FluidRolloutTask",
    "TaggedWindows",
    "fluid",
    "build_fluid_datasets",
    "SPLIT_TAGS",
    "FIELD_UNITS",
]

#: The unit of each field the plumes hold (the solver's density has no physical unit).
FIELD_UNITS = {"velocity": "L / time", "density": "solver units"}
#: tags of the evaluation groups; untagged (``-1``) items report plain ``rmse``.
SPLIT_TAGS = {"future": 0, "domain": 1}
_SPLITS = ("train", "future", "domain")


class TaggedWindows(Dataset):
    """Items ``(inputs, targets, tag)`` of a window dataset, ``tag`` an int64 scalar."""

    def __init__(self, dataset: Dataset, tag: int = -1) -> None:
        self.dataset, self.tag = dataset, int(tag)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor, Tensor]:
        inputs, targets = self.dataset[index]
        return inputs, targets, torch.tensor(self.tag)


class FluidRolloutTask(Task):
    """Rollout loss and RMSE-vs-horizon metrics of a next-frame predictor.

    Batches are ``(inputs [B, T, C, H, W], targets [B, S, C, H, W], tag [B])``. Metrics are
    per window -- the RMSE over the forecast frames, channels and cells (``*_rmse``, in the
    fields' own units) and per forecast step (``*_rmse_h<k>``) -- grouped by tag (``rmse``
    for untagged windows, ``future_rmse``, ``domain_rmse``), and ``loss``, the mean squared
    error in units of ``scale``; the trainer averages them over windows. With several
    ``field_names``, ``*_rmse`` pools fields of different units, so each field also gets
    its own RMSE over the forecast frames, ``*_rmse_<field>`` (``future_rmse_density``).

    Args:
        horizon: frames forecast by the metrics (at most ``S``).
        train_horizon: frames forecast by the training loss (at most ``horizon``).
        scale: the fields' RMS, one number or one per field of ``layout`` (see
            :func:`symgraph.models.fluids.field_scales`); the loss is the squared error in
            these units.
        unit: name of the field unit, for ``units``; with several fields, one per field in
            the order of ``field_names`` (``("L / time", "density")``).
        layout: the field layout of a frame (``"1x1o"``: velocity; ``"1x1o + 1x0e"``: velocity
            and density); needed to place a per-field ``scale`` and per-field metrics.
        field_names: one name per field of ``layout`` (``("velocity", "density")``), for the
            per-field metrics; default none (no per-field metrics).
    """

    monitor = "rmse"
    mode = "min"

    def __init__(
        self,
        horizon: int,
        train_horizon: int = 1,
        scale: float | Sequence[float] = 1.0,
        unit: str | Sequence[str] = "",
        layout: FieldLayout | str = "1x1o",
        field_names: Sequence[str] = (),
    ) -> None:
        from symgraph.models.fluids import field_scales

        if not 1 <= train_horizon <= horizon:
            raise ValueError(
                f"train_horizon: expected 1 <= train_horizon <= horizon={horizon}, "
                f"got {train_horizon}"
            )
        self.horizon, self.train_horizon = horizon, train_horizon
        self.scales = field_scales(scale, layout)
        self.fields = _named_fields(layout, field_names)
        units = _field_units(unit, [name for name, _ in self.fields])
        pooled = units[0] if len(set(units)) == 1 else "mixed units"  # see *_rmse_<field>
        self.units = {"loss": "squared error / scale^2"}
        for name in ["rmse"] + [f"{group}_rmse" for group in SPLIT_TAGS]:
            self.units[name] = pooled
            self.units.update({f"{name}_h{k}": pooled for k in range(1, horizon + 1)})
            if len(self.fields) > 1:
                self.units.update({f"{name}_{f}": u for (f, _), u in zip(self.fields, units)})

    def _rollout(self, model: nn.Module, batch: Any, steps: int) -> tuple[Tensor, Tensor, Tensor]:
        from symgraph.models.fluids import rollout

        inputs, targets, tag = batch
        if targets.shape[1] < steps:
            raise ValueError(
                f"FluidRolloutTask: targets hold {targets.shape[1]} frames, the task forecasts "
                f"{steps}; build the dataset with target_frames >= {steps}"
            )
        return rollout(model, inputs, steps), targets[:, :steps], tag

    def _scaled_error(self, pred: Tensor, target: Tensor) -> Tensor:
        """``[B, S]`` mean squared error of each forecast frame in units of ``scale``."""
        from symgraph.models.fluids import rescale_fields

        return rescale_fields(pred - target, self.scales).square().flatten(2).mean(dim=2)

    def loss(self, model: nn.Module, batch: Any) -> tuple[Tensor, int]:
        pred, target, _ = self._rollout(model, batch, self.train_horizon)
        return self._scaled_error(pred, target).mean(), pred.shape[0]

    def metrics(self, model: nn.Module, batch: Any) -> dict[str, Tensor]:
        pred, target, tag = self._rollout(model, batch, self.horizon)
        error = pred - target  # [B, horizon, C, H, W]
        squared = error.square().flatten(2).mean(dim=2)  # [B, horizon]
        groups = {"rmse": tag < 0, **{f"{g}_rmse": tag == t for g, t in SPLIT_TAGS.items()}}
        out = {"loss": self._scaled_error(pred, target).mean(dim=1)}
        for name, members in groups.items():
            if bool(members.any()):
                rows = squared[members]
                out[name] = rows.mean(dim=1).sqrt()
                out.update({f"{name}_h{k + 1}": rows[:, k].sqrt() for k in range(self.horizon)})
                if len(self.fields) > 1:
                    errors = error[members]
                    for field, channels in self.fields:
                        field_squared = errors[:, :, channels].square().flatten(1).mean(dim=1)
                        out[f"{name}_{field}"] = field_squared.sqrt()
        return out


def _named_fields(layout: FieldLayout | str, names: Sequence[str]) -> tuple[tuple[str, slice], ...]:
    """``((name, channels), ...)``: each field of ``layout`` (a 2D layout when a string) with
    its grid channels; one unnamed field of all channels when ``names`` is empty."""
    from symgraph.models.fluids import as_field_layout

    fields = as_field_layout(layout).field_slices
    if isinstance(names, str) or not isinstance(names, Sequence):
        raise TypeError(f"field_names: expected a sequence of names, got {names!r}")
    if not names:
        return (("", slice(0, fields[-1].stop)),)
    if len(names) != len(fields) or len(set(names)) != len(names):
        raise ValueError(
            f"field_names: expected {len(fields)} distinct names, one per field of the "
            f"layout, got {list(names)!r}"
        )
    return tuple(zip(names, fields))


def _field_units(unit: str | Sequence[str], names: Sequence[str]) -> list[str]:
    """One unit per field ``names``: ``unit`` itself, or repeated when a single string."""
    if isinstance(unit, str):
        return [unit] * len(names)
    if len(unit) != len(names):
        raise ValueError(
            f"unit: expected one unit string, or one per field {list(names)!r}, got {unit!r}"
        )
    return list(unit)


#: Library arguments of the datasets and the model, by the flag that sets them.
_DATASET_FLAGS = {
    "symmetry_breaking": "--symmetry-breaking", "num_train_simulations": "--simulations",
    "num_domain_simulations": "--domain-simulations", "frames": "--frames",
    "future_frames": "--future-frames", "input_frames": "--frames-in",
    "target_frames": "--horizon", "fields": "--fields", "domain_split": "--domain-split",
    "size": "--grid", "seed": "--seed",
}  # fmt: skip
_MODEL_FLAGS = {
    "kind": "--model", "frames_in": "--frames-in", "width": "--width", "hidden": "--width",
    "layers": "--layers", "group": "--group", "radius": "--radius", "grid": "--grid",
    "features": "--features", "kernel_hidden": "--kernel-hidden", "free_input": "--free-input",
    "free_hidden": "--free-hidden", "relaxation": "--relaxation", "breaking": "--breaking",
}  # fmt: skip


def build_fluid_datasets(args: argparse.Namespace) -> dict[str, Dataset]:
    """The ``"train"``, ``"future"`` and ``"domain"`` window datasets the flags describe."""
    from symgraph.data.fluids import SmokePlumeDataset
    from symgraph.data.fluids.dataset import DEFAULT_BASE

    options = dict(
        symmetry_breaking=args.symmetry_breaking,
        num_train_simulations=args.simulations,
        num_domain_simulations=args.domain_simulations,
        frames=args.frames,
        future_frames=args.future_frames,
        input_frames=args.frames_in,
        target_frames=args.horizon,
        fields=getattr(args, "fields", "velocity"),
        domain_split=getattr(args, "domain_split", "diagonals"),
        base_config=DEFAULT_BASE.replace(size=args.grid),
        seed=args.seed,
    )
    with named_by_flags(_DATASET_FLAGS):
        if args.data_root is not None:
            return {s: SmokePlumeDataset(args.data_root, s, **options) for s in _SPLITS}
        with tempfile.TemporaryDirectory(prefix="symgraph_plumes_") as root:  # simulate once
            return {s: SmokePlumeDataset(root, s, **options) for s in _SPLITS}


def _grid_size(text: str) -> int:
    """``--grid``: an even number of cells, at least 8 (the solver's spectral grid)."""
    size = int_at_least(8, "an even integer >= 8")(text)
    if size % 2:
        raise argparse.ArgumentTypeError(f"expected an even integer >= 8, got {text!r}")
    return size


def _field_rms(
    dataset: Dataset, per_field: bool = False, read_by: tuple[Sequence[int], int] | None = None
) -> float | tuple[float, ...]:
    """RMS of the fields ``dataset`` (a SmokePlumeDataset) reads: for the training split, the
    past of its simulations (their future frames are the ``future`` test split).

    One RMS over all channels, or with ``per_field`` one per field of ``dataset.layout``
    (the components of the velocity together, the density alone). ``read_by = (windows,
    read)``: only the frames covered by the first ``read`` frames of those windows (indices
    into ``dataset``), each counted once -- the frames training reads, not the validation
    windows' later ones."""
    from symgraph.lattice import FieldLayout

    if read_by is None:
        first, last = dataset.frame_range
        frames = dataset.data[:, first:last].flatten(0, 1)  # [S * T, C, H, W]
    else:
        windows, read = read_by
        used = torch.zeros(dataset.data.shape[:2], dtype=torch.bool)  # [S, T]
        for index in windows:
            simulation, start = dataset.window(index)
            used[simulation, start : start + read] = True
        frames = dataset.data[used]  # [F, C, H, W]
    frames = frames.double()
    if not per_field:
        return float(frames.square().mean().sqrt())
    fields = FieldLayout(dataset.layout).field_slices
    return tuple(float(frames[:, channels].square().mean().sqrt()) for channels in fields)


#: Flags read by the relaxed model only: another value than their default with a strict
#: model would be silently ignored, so it is refused.
RELAXED_ONLY_FLAGS = (
    "--relaxation-weight", "--relaxation-lr-scale", "--relaxation-warmup", "--relaxation",
    "--breaking", "--free-input", "--free-hidden",
)  # fmt: skip


@register_job(
    "fluid",
    # the validation split before --val-split existed; one RMS before --field-scale; that
    # RMS over the whole past (validation frames included) before --scale-frames
    predated={"val_split": "random", "field_scale": "shared", "scale_frames": "past"},
    arguments=[
        arg(
            "--model",
            default="relaxed",
            choices=("relaxed", "equivariant", "conv"),
            help="predictor (default relaxed)",
        ),
        arg(
            "--symmetry-breaking",
            type=float,
            default=0.2,
            help="rotation-symmetry breaking of the simulated plumes, in [0, 1] (default 0.2)",
        ),
        arg(
            "--frames-in",
            type=positive_int,
            default=3,
            help="past frames fed to the model (default 3)",
        ),
        arg(
            "--horizon",
            type=positive_int,
            default=5,
            help="frames forecast in evaluation (default 5)",
        ),
        arg(
            "--train-horizon",
            type=positive_int,
            default=1,
            help="frames forecast by the training loss (default 1)",
        ),
        arg(
            "--relaxation-weight",
            type=non_negative_float,
            default=1.0,
            help="weight of the relaxation penalty Σ s² (relaxed model; default 1)",
        ),
        arg(
            "--relaxation-lr-scale",
            type=positive_float,
            default=1.0,
            help="relaxed model: learning rate of the non-equivariant pathway, as a multiple "
            "of --lr (default 1)",
        ),
        arg(
            "--relaxation-warmup",
            type=int_at_least(0, "epochs >= 0"),
            default=0,
            help="relaxed model: epochs during which the non-equivariant pathway stays "
            "frozen, training the strict model first (default 0)",
        ),
        arg(
            "--val-split",
            default="time",
            choices=("random", "time"),
            help="validation windows: the latest 10 %% of each training simulation's, "
            "training only on windows that end before them (time), or a seeded random 10 %% "
            "of the training windows, which share frames with training windows (random) "
            "(default time)",
        ),
        arg(
            "--relaxation",
            default="kernel",
            choices=("kernel", "input"),
            help="relaxed model: break the symmetry through each layer's non-equivariant "
            "kernel pathway (kernel) or through a learned global input of --breaking "
            "irreps that every layer reads (input) (default kernel)",
        ),
        arg(
            "--breaking",
            default="1x1o",
            help="relaxed model with --relaxation input: irreps of the learned "
            "symmetry-breaking input (default '1x1o': one global direction)",
        ),
        arg(
            "--free-input",
            default="position",
            choices=("position", "radial", "constant"),
            help="relaxed model: what each layer's non-equivariant pathway depends on -- an "
            "MLP of the raw offset (position), of its length (radial), or nothing, one "
            "channel-mixing matrix per layer (constant) (default position)",
        ),
        arg(
            "--free-hidden",
            type=positive_int,
            default=8,
            help="relaxed model: width of the non-equivariant pathway's features (position "
            "and radial; default 8)",
        ),
        arg("--width", type=positive_int, default=16, help="model width (see build_fluid_model)"),
        arg("--layers", type=positive_int, default=4, help="convolution layers (default 4)"),
        arg(
            "--radius", type=positive_int, default=1, help="stencil radius, kernel 2r+1 (default 1)"
        ),
        arg("--group", default="C4", help="group of the steerable models (default C4)"),
        arg(
            "--kernel-hidden",
            default=None,
            help="hidden irreps of the steerable models' kernel MLPs (default "
            "'8x0e + 4x1o + 2x2e'; smaller ones leave more parameters for --width)",
        ),
        arg(
            "--features",
            default="irreps",
            choices=("irreps", "regular"),
            help="hidden features of the steerable models: scalars and vectors with gates "
            "(irreps), or copies of the regular representation of the finite --group with "
            "pointwise SiLU, as in a group CNN (regular) (default irreps)",
        ),
        arg(
            "--grid",
            type=_grid_size,
            default=32,
            help="grid cells per side, even, at least 8 (default 32)",
        ),
        arg("--simulations", type=positive_int, default=8, help="training simulations (default 8)"),
        arg(
            "--domain-simulations",
            type=positive_int,
            default=4,
            help="simulations of the domain test set (default 4)",
        ),
        arg("--frames", type=positive_int, default=60, help="frames per simulation (default 60)"),
        arg(
            "--future-frames",
            type=positive_int,
            default=20,
            help="last frames of each simulation kept for the future test set (default 20)",
        ),
        arg(
            "--domain-split",
            default="diagonals",
            choices=("diagonals", "half-turn", "three-quarter"),
            help="unseen inflows of the domain test set: near the diagonals (training near "
            "all four axes), the training inflows (two axes) turned by 180 degrees, or near "
            "the fourth axis (training near three) (default diagonals)",
        ),
        arg(
            "--fields",
            default="velocity",
            choices=("velocity", "velocity+density"),
            help="fields fed and forecast (default velocity)",
        ),
        arg(
            "--field-scale",
            default="per-field",
            choices=("per-field", "shared"),
            help="normalisation of the fields (model inputs and updates, loss): the RMS of "
            "each field, velocity and density apart (per-field), or one RMS over all "
            "channels (shared, as runs made before this flag) (default per-field)",
        ),
        arg(
            "--scale-frames",
            default="train",
            choices=("train", "past"),
            help="frames the field RMS of --field-scale is taken over: those the training "
            "windows read (train), or the whole past of the training simulations, the "
            "validation windows' frames included (past, as runs made before this flag) "
            "(default train)",
        ),
        arg(
            "--data-root",
            default=None,
            path=True,
            help="cache folder of the simulations (default: simulate in memory)",
        ),
    ],
)
def fluid(args: argparse.Namespace) -> JobSpec:
    """Smoke-plume forecasting: CNN, equivariant or relaxed-equivariant predictor."""
    from symgraph.groups import as_group, as_rep
    from symgraph.models.fluids import build_fluid_model, check_stencil
    from symgraph.nn import relaxation_penalty
    from symgraph.train.relaxation_schedule import RelaxationWarmup, relaxed_adam

    model_kind = getattr(args, "model", "relaxed")
    changed = changed_flags(args, "fluid", RELAXED_ONLY_FLAGS)
    if model_kind != "relaxed" and changed:
        raise ValueError(
            f"{', '.join(changed)}: read by the relaxed model only, got --model {model_kind} "
            "(leave them at their defaults, or train --model relaxed)"
        )
    breaking_irreps = getattr(args, "breaking", "1x1o")
    if breaking_irreps != "1x1o" and getattr(args, "relaxation", "kernel") != "input":
        raise ValueError(
            f"--breaking: irreps of the learned symmetry-breaking input, read only with "
            f"--relaxation input, got {breaking_irreps!r} with --relaxation "
            f"{getattr(args, 'relaxation', 'kernel')} (the plumes' breaking level is "
            "--symmetry-breaking)"
        )
    if args.train_horizon > args.horizon:  # as FluidRolloutTask, but before simulating
        raise ValueError(
            f"--train-horizon: expected at most --horizon = {args.horizon} frames (the "
            f"targets the windows hold), got {args.train_horizon}"
        )
    with named_by_flags(_MODEL_FLAGS):  # before simulating: the group, the kernels' irreps,
        group = as_group(args.group)  # a stencil the grid cannot hold
        if getattr(args, "kernel_hidden", None):
            as_rep(args.kernel_hidden, group, "kernel_hidden")
        check_stencil(args.radius, args.grid)
    lr_scale = float(getattr(args, "relaxation_lr_scale", 1.0))
    warmup = int(getattr(args, "relaxation_warmup", 0))
    data = build_fluid_datasets(args)
    read = args.frames_in + args.train_horizon  # the frames of a window training reads
    val_split = getattr(args, "val_split", "random")  # runs from before the flag: random
    if val_split == "time":  # each simulation's latest windows
        windows_of = [data["train"].window(i) for i in range(len(data["train"]))]
        train_idx, val_idx = temporal_split_indices(windows_of, read, 0.1)
    else:
        train_idx, val_idx = random_split_indices(len(data["train"]), [0.9, 0.1], seed=args.seed)
    per_field = getattr(args, "field_scale", "shared") == "per-field"  # older runs: shared
    scale_frames = getattr(args, "scale_frames", "past")  # older runs: the whole past
    read_by = (train_idx, read) if scale_frames == "train" else None
    scale = _field_rms(data["train"], per_field, read_by)
    windows = TaggedWindows(data["train"])
    test = ConcatDataset([TaggedWindows(data[g], t) for g, t in SPLIT_TAGS.items()])
    with named_by_flags(_MODEL_FLAGS):
        model = build_fluid_model(
            args.model, args.frames_in, data["train"].layout, width=args.width,
            layers=args.layers, group=args.group, radius=args.radius, scale=scale,
            free_input=getattr(args, "free_input", "position"),
            features=getattr(args, "features", "irreps"),
            kernel_hidden=getattr(args, "kernel_hidden", None),
            free_hidden=getattr(args, "free_hidden", 8),
            relaxation=getattr(args, "relaxation", "kernel"),
            breaking=getattr(args, "breaking", "1x1o"),
        )  # fmt: skip
    fields = data["train"].fields.split("+")  # ("velocity", "density")
    weight = float(args.relaxation_weight)
    relaxed = args.model == "relaxed"
    extra = [lambda m, _batch: weight * relaxation_penalty(m)] if relaxed else []
    return JobSpec(
        model=model,
        task=FluidRolloutTask(
            args.horizon,
            args.train_horizon,
            scale,
            [FIELD_UNITS[f] for f in fields],
            data["train"].layout,
            fields,
        ),  # fmt: skip
        train=Subset(windows, train_idx),
        val=Subset(windows, val_idx),
        test=test,
        split={"train": train_idx, "val": val_idx, "test": list(range(len(test)))},
        extra_losses=extra,
        optimizer=relaxed_adam(args.lr, args.weight_decay, lr_scale)
        if relaxed and lr_scale != 1.0
        else None,
        callbacks=[RelaxationWarmup(warmup)] if relaxed and warmup else [],
    )
