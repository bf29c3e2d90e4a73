"""The ``dynamics`` job: next-frame molecular dynamics with Noether losses and tailoring.

``symgraph train dynamics --noether momentum,angular --tailor-steps 5 --epochs 20`` trains
a next-frame predictor on molecular trajectories and reports, on held-out trajectories,
one-step and rollout errors with and without test-time tailoring.

Model (``--model``):

- ``egnn`` (default): :class:`~symgraph.models.EquivariantDynamics`, EGNN-style and
  E(3)-equivariant, ``--hidden`` wide, ``--layers`` layers (run folders made before the
  flag existed are ``egnn`` runs);
- ``steerable``: :class:`~symgraph.models.SteerableDynamics`, ``--layers`` implicit
  steerable convolutions equivariant under ``--group`` (a catalog name, default ``O3``)
  with node irreps ``--irreps`` (default ``16x0e + 8x1o``). ``--group`` and ``--irreps``
  are read by this model only, ``--hidden`` only by ``egnn`` and by ``learned``'s ``g_φ``.

Data (``--data``):

- ``generated`` (default): MMFF94 NVE trajectories made by the library
  (:func:`~symgraph.data.md_generated.generated_trajectories`), ``--trajectories`` per
  molecule of ``--molecules``, ``--frames`` frames each ``--md-dt × --save-every`` fs apart,
  cached under ``--data-root`` so that reruns only read files. Trajectory id
  ``m * trajectories + k`` is trajectory ``k`` of molecule ``m``. Energies come from the
  same force field, so ``energy`` is available as a conserved quantity and the energy
  drift of predicted rollouts is reported.
- ``md17``: one local MD17 file (``--md17-path md17_ethanol.npz``, consecutive frames 0.5 fs
  apart), velocities by finite differences, every ``--md17-stride``-th frame kept, cut into
  pieces of ``--frames`` frames that play the role of trajectories (id = piece number).
  No energy model: ``energy`` and the energy drift are unavailable.

Split: the trajectories of each molecule are split into train / val / test by ``--split``
(fractions or counts, seeded by ``--seed``); ``split.json`` lists trajectory ids. Training
items are windows of ``--train-horizon + 1`` frames starting at every frame of the training
trajectories (``--subset`` keeps the first windows); validation and test items are
non-overlapping windows of ``--horizon + 1`` frames of the held-out trajectories.

Training: the squared error of a ``--train-horizon``-step rollout (1: one-step) in units of
the RMS one-step change of the training data (:class:`NextStepTask`). ``--noether`` adds:

- known quantities (``momentum``, ``angular``, ``energy``): ``--noether-weight`` times the
  Noether loss ``mean_t |g(x_t) − g(x_0)|²`` of the quantities, each divided by its typical
  size (:mod:`symgraph.noether.known`), on a ``--noether-horizon``-step rollout from the
  first frame of every training window (:class:`ConservationLoss`);
- ``learned``: a :class:`~symgraph.noether.NeuralConservedQuantity` ``g_φ`` meta-learned
  with the predictor (Algorithm 1 of Noether networks): the model becomes a
  :class:`~symgraph.noether.MetaTailoring`, whose training rollout is tailored by one inner
  step of ``g_φ``'s Noether loss over ``--noether-horizon`` steps (rate learned, starting at
  ``--meta-inner-lr``, shared by the batch) and whose outer loss trains θ, φ and the rate
  through that step. ``g_φ`` gets no conservation loss of its own (it would collapse to a
  constant); ``--noether-weight`` applies to the known quantities only.

Evaluation: validation reports the untailored metrics and selects ``best.pt`` by
``rollout_rmse``; the test set is also scored after ``--tailor-steps`` inner steps per
held-out window on all chosen quantities (known ones and ``g_φ``), rates ``--tailor-lr``
(a comma list is a line search that never raises the inner loss), inner loss over
``--tailor-horizon`` steps: metrics with the suffix ``_tailored`` in ``test.json`` and in
``symgraph evaluate``'s ``evaluation.json``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torch_geometric.data import Batch

from symgraph.checks import is_finite_real, is_int
from symgraph.data.frames import Frame, Trajectory
from symgraph.data.md_generated import generated_trajectories, mmff_atoms
from symgraph.data.trajectories import finite_difference_velocities, load_md17
from symgraph.data.windows import TrajectoryWindows, cut_segments
from symgraph.groups import group_from_name
from symgraph.models.dynamics import EquivariantDynamics
from symgraph.models.steerable_dynamics import SteerableDynamics
from symgraph.noether import (
    AsePotential,
    MetaTailoring,
    NeuralConservedQuantity,
    PotentialsByMolecule,
    TotalEnergy,
    noether_loss,
    rollout,
)
from symgraph.noether.known import KNOWN_QUANTITIES, known_quantity, typical_scales
from symgraph.train.jobs import (
    JobSpec,
    arg,
    changed_flags,
    named_by_flags,
    non_negative_float,
    register_job,
)
from symgraph.train.split import random_split_indices
from symgraph.train.task_dynamics import TAILOR_TAG, NextStepTask, dynamics_model

__all__ = [
    "NOETHER_NAMES",
    "ConservationLoss",
    "build_trajectories",
    "dynamics",
    "parse_noether",
    "parse_rates",
]

#: Valid names of ``--noether``.
NOETHER_NAMES = (*KNOWN_QUANTITIES, "learned")
DEFAULT_MOLECULES = "CH3OH,CH3CHO,CH3CH2OH"
#: Valid values of ``--model``; runs made before the flag are ``egnn`` runs.
MODELS = ("egnn", "steerable")
DEFAULT_GROUP, DEFAULT_IRREPS, DEFAULT_HIDDEN = "O3", "16x0e + 8x1o", 32


def parse_noether(text: str) -> tuple[str, ...]:
    """``--noether``: comma-separated names of :data:`NOETHER_NAMES` ("" for none).

    Raises:
        ValueError: an unknown name; the message lists the valid ones.
    """
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    unknown = [n for n in names if n not in NOETHER_NAMES]
    if unknown:
        raise ValueError(
            f"--noether: unknown quantity {', '.join(map(repr, unknown))}; valid names: "
            f"{', '.join(NOETHER_NAMES)}"
        )
    return names


def parse_rates(text: str) -> float | tuple[float, ...]:
    """``--tailor-lr``: one positive rate, or a comma list of rates for a line search."""
    try:
        rates = [float(r) for r in text.split(",") if r.strip()]
    except ValueError:
        rates = []
    if not rates or not all(0 < r < float("inf") for r in rates):
        raise ValueError(f"--tailor-lr: expected positive numbers, comma-separated, got {text!r}")
    return rates[0] if len(rates) == 1 else tuple(rates)


def _checked(parse: Callable[[str], object]) -> Callable[[str], str]:
    """An argparse ``type`` that validates with ``parse`` and keeps the text (JSON-safe)."""

    def check(text: str) -> str:
        try:
            parse(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err).split(": ", 1)[1]) from None
        return text

    return check


class ConservationLoss:
    """Extra loss ``weight · mean_b mean_t |g(x_t) − g(x_0)|²`` on predicted rollouts.

    ``x_t`` are ``horizon`` steps of the predictor rolled out from the first frame of each
    training window (``g``: the known quantities, each normalised).

    Args:
        quantity: the conserved quantities ``frame -> [B, k]``.
        weight: factor of the loss.
        horizon: rollout steps.
    """

    def __init__(self, quantity: nn.Module, weight: float, horizon: int) -> None:
        if not is_int(horizon) or horizon < 1:
            raise ValueError(f"--noether-horizon: expected a positive int, got {horizon!r}")
        if not is_finite_real(weight) or weight < 0:
            raise ValueError(
                f"--noether-weight: expected a finite weight >= 0 (a negative one rewards "
                f"breaking the conservation law), got {weight!r}"
            )
        self.quantity, self.weight, self.horizon = quantity, float(weight), int(horizon)

    def __call__(self, model: nn.Module, batch: Batch) -> Tensor:
        x0 = Frame(batch.pos, batch.vel, batch.z, batch.mass, batch.batch)
        pred = rollout(dynamics_model(model), x0, self.horizon)
        return self.weight * noether_loss(self.quantity, pred, reduction="mean")


#: Library arguments of the generated trajectories, by the flag that sets them.
_GENERATED_FLAGS = {
    "molecules": "--molecules", "atoms_or_name": "--molecules", "per_molecule": "--trajectories",
    "frames": "--frames", "steps": "--frames", "dt_fs": "--md-dt", "save_every": "--save-every",
    "temperature_K": "--temperature", "seed": "--data-seed", "cache_dir": "--data-root",
}  # fmt: skip
#: Flags read by one ``--data`` source only: another value than their default with the other
#: source would be silently ignored, so it is refused.
DATA_ONLY_FLAGS = {
    "md17": ("--md17-path", "--md17-stride"),
    "generated": ("--molecules", "--trajectories", "--md-dt", "--save-every", "--temperature",
                  "--data-seed"),
}  # fmt: skip


def _check_data_flags(args: argparse.Namespace) -> None:
    """Refuse flags of the ``--data`` source that is not read (they would be ignored)."""
    data = getattr(args, "data", "generated")
    for source, flags in DATA_ONLY_FLAGS.items():
        changed = changed_flags(args, "dynamics", flags) if source != data else []
        if changed:
            raise ValueError(
                f"{', '.join(changed)}: read with --data {source} only, got --data {data} "
                f"(leave them at their defaults, or pass --data {source})"
            )


def build_trajectories(args: argparse.Namespace) -> list[list[Trajectory]]:
    """The trajectories the flags describe, one list per molecule (float64)."""
    _check_data_flags(args)
    if args.data == "generated":
        molecules = [m.strip() for m in args.molecules.split(",") if m.strip()]
        with named_by_flags(_GENERATED_FLAGS):
            trajs = generated_trajectories(
                molecules,
                args.trajectories,
                args.frames,
                dt_fs=args.md_dt,
                save_every=args.save_every,
                temperature_K=args.temperature,
                seed=args.data_seed,
                cache_dir=args.data_root,
            )
        k = args.trajectories
        return [trajs[i * k : (i + 1) * k] for i in range(len(molecules))]
    if args.md17_path is None:
        raise ValueError("--md17-path: expected an MD17 .npz file for --data md17, got none")
    if args.md17_stride < 1:
        raise ValueError(f"--md17-stride: expected a positive int, got {args.md17_stride}")
    with named_by_flags({"path_or_root": "--md17-path"}):
        traj = load_md17(args.md17_path)
    if traj.dt is None:
        raise ValueError(
            f"--md17-path: {args.md17_path} holds no time step between frames (samples, not a "
            "trajectory); expected an original MD17 trajectory file md17_<molecule>.npz"
        )
    velocities = finite_difference_velocities(traj.positions, traj.dt)
    traj = Trajectory(traj.positions, velocities, traj.z, dt=traj.dt, info=traj.info)
    with named_by_flags({"frames": "--frames"}):
        return [cut_segments(traj[:: args.md17_stride], args.frames)]


def _split(groups: list[list[Trajectory]], sizes: Sequence[float], seed: int) -> list[list[int]]:
    """Train / val / test trajectory ids, split within each group (molecule)."""
    parts: list[list[int]] = [[], [], []]
    offset = 0
    # counts when every size is a whole number (not 1.9 read as 1), else fractions
    whole = all(float(s).is_integer() for s in sizes) and max(sizes) >= 1
    counts = [int(s) for s in sizes] if whole else [float(s) for s in sizes]
    for m, group in enumerate(groups):
        with named_by_flags({"random_split_indices": "--split"}):
            chosen_parts = random_split_indices(len(group), counts, seed)
        for name, part, chosen in zip(("train", "val", "test"), parts, chosen_parts):
            if not chosen:
                molecule = group[0].info.get("molecule", f"number {m}")
                raise ValueError(
                    f"--split: the {len(group)} trajectories of molecule {molecule} leave no "
                    f"{name} trajectory with --split {' '.join(map(str, sizes))}; use more "
                    "trajectories (--trajectories / --frames) or counts"
                )
            part.extend(offset + i for i in chosen)
        offset += len(group)
    return parts


def _energy_model(groups: list[list[Trajectory]]) -> nn.Module:
    """Potential energy (MMFF94) of every generated molecule, by atomic numbers."""
    return PotentialsByMolecule([(g[0].z, AsePotential(mmff_atoms(g[0]))) for g in groups])


def _check_model_flags(args: argparse.Namespace, names: Sequence[str]) -> str:
    """``--model`` (``egnn`` for runs that predate it), refusing flags the chosen model
    would not read."""
    kind = getattr(args, "model", "egnn")
    if kind not in MODELS:
        raise ValueError(f"--model: expected one of {', '.join(MODELS)}, got {kind!r}")
    changed = changed_flags(args, "dynamics", ("--group", "--irreps"))
    if kind == "egnn" and changed:
        raise ValueError(
            f"{', '.join(changed)}: read by --model steerable only, got --model egnn (leave "
            "them at their defaults, or train --model steerable)"
        )
    if kind == "steerable":
        with named_by_flags({"group": "--group"}):
            group_from_name(getattr(args, "group", DEFAULT_GROUP))  # before any data is made
    hidden_unread = kind == "steerable" and "learned" not in names
    if hidden_unread and changed_flags(args, "dynamics", ("--hidden",)):
        raise ValueError(
            f"--hidden: the width of --model egnn and of the learned quantity g_φ, read by "
            f"neither here, got {args.hidden} with --model steerable (its features are "
            "--irreps; leave --hidden at its default or add --noether learned)"
        )
    return kind


#: Flags read only with another setting: ``flag -> (reads it?, what that setting is)``.
_DEPENDENT_FLAGS: dict[str, tuple[Callable[[argparse.Namespace, Sequence[str]], bool], str]] = {
    "--noether-horizon": (lambda args, names: bool(names), "--noether"),
    "--noether-weight": (
        lambda args, names: any(n in KNOWN_QUANTITIES for n in names),
        "a known quantity in --noether",
    ),
    "--meta-inner-lr": (lambda args, names: "learned" in names, "--noether learned"),
    "--tailor-lr": (lambda args, names: bool(args.tailor_steps), "--tailor-steps > 0"),
    "--tailor-horizon": (lambda args, names: bool(args.tailor_steps), "--tailor-steps > 0"),
}


def _check_dependent_flags(args: argparse.Namespace, names: Sequence[str]) -> None:
    """Refuse a flag set away from its default where nothing reads it (the run would
    silently train without it, while config.json records it)."""
    unread = [
        (flag, needs)
        for flag, (read, needs) in _DEPENDENT_FLAGS.items()
        if not read(args, names) and changed_flags(args, "dynamics", (flag,))
    ]
    if unread:
        raise ValueError(
            "; ".join(f"{flag}: read only with {needs}" for flag, needs in unread)
            + " (leave unread flags at their defaults)"
        )


def _predictor(args: argparse.Namespace, kind: str, dt: float, speed: float) -> nn.Module:
    """The next-frame predictor ``--model`` names, its refusals naming the flags."""
    if kind == "egnn":
        with named_by_flags({"hidden": "--hidden", "num_layers": "--layers", "cutoff": "--cutoff"}):
            return EquivariantDynamics(
                hidden=args.hidden, num_layers=args.layers, dt=dt, cutoff=args.cutoff,
                velocity_scale=speed,
            )  # fmt: skip
    flags = {"group": "--group", "hidden": "--irreps", "num_layers": "--layers",
             "cutoff": "--cutoff"}  # fmt: skip
    with named_by_flags(flags):
        return SteerableDynamics(
            group=getattr(args, "group", DEFAULT_GROUP),
            hidden=getattr(args, "irreps", DEFAULT_IRREPS),
            num_layers=args.layers, dt=dt, cutoff=args.cutoff, velocity_scale=speed,
        )  # fmt: skip


def _model(
    args: argparse.Namespace, kind: str, names: Sequence[str], dt: float, speed: float
) -> nn.Module:
    """The ``--model`` predictor, wrapped in MetaTailoring with a learned g_φ for
    ``learned``."""
    model = _predictor(args, kind, dt, speed)
    if "learned" not in names:
        return model
    g_phi = NeuralConservedQuantity(
        out_dim=8, hidden=args.hidden, num_layers=2, cutoff=args.cutoff, velocity_scale=speed
    )
    return MetaTailoring(
        model, g_phi, inner_steps=1, inner_lr=args.meta_inner_lr, per_sample=False,
        reduction="mean", max_grad_norm=1.0, learn_inner_lr=True,
        loss_horizon=args.noether_horizon,
    )  # fmt: skip


@register_job(
    "dynamics",
    predated={"model": "egnn"},
    arguments=[
        arg("--data", default="generated", choices=("generated", "md17"),
            help="generated: MMFF94 MD made by the library (default); md17: --md17-path"),
        arg("--molecules", default=DEFAULT_MOLECULES,
            help=f"g2 molecule names, comma-separated (default {DEFAULT_MOLECULES})"),
        arg("--trajectories", type=int, default=5, help="trajectories per molecule (default 5)"),
        arg("--frames", type=int, default=101,
            help="frames per trajectory, or per piece of the MD17 file (default 101)"),
        arg("--md-dt", type=float, default=0.5, help="MD integration step in fs (default 0.5)"),
        arg("--save-every", type=int, default=4,
            help="MD steps between saved frames (default 4: frames 2 fs apart)"),
        arg("--temperature", type=float, default=300.0,
            help="initial temperature in K (default 300)"),
        arg("--data-seed", type=int, default=0,
            help="seed of the generated trajectories (default 0)"),
        arg("--data-root", default="data/md_generated", path=True,
            help="cache folder of the generated trajectories (default data/md_generated)"),
        arg("--md17-path", default=None, path=True, help="an MD17 trajectory .npz (--data md17)"),
        arg("--md17-stride", type=int, default=4,
            help="keep every K-th MD17 frame (default 4: 2 fs apart)"),
        arg("--split", type=float, nargs=3, default=[0.6, 0.2, 0.2],
            metavar=("TRAIN", "VAL", "TEST"),
            help="trajectories per molecule: fractions or counts (default 0.6 0.2 0.2)"),
        arg("--model", default="egnn", choices=MODELS,
            help="egnn: EquivariantDynamics, E(3) (default); steerable: SteerableDynamics, "
            "steerable convolutions equivariant under --group"),
        arg("--hidden", type=int, default=DEFAULT_HIDDEN,
            help="width of --model egnn and of the learned g_φ (default 32)"),
        arg("--group", default=DEFAULT_GROUP,
            help="symmetry group of --model steerable, e.g. O3, SO3, SO2, D4 (default O3)"),
        arg("--irreps", default=DEFAULT_IRREPS,
            help=f"node irreps of --model steerable (default {DEFAULT_IRREPS})"),
        arg("--layers", type=int, default=2, help="message-passing layers (default 2)"),
        arg("--cutoff", type=float, default=None, help="neighbour cutoff in Å (default: all)"),
        arg("--train-horizon", type=int, default=1,
            help="rollout steps of the training loss (default 1: one-step)"),
        arg("--horizon", type=int, default=100,
            help="rollout steps of validation and test (default 100)"),
        arg("--noether", type=_checked(parse_noether), default="",
            help=f"conserved quantities, comma-separated among {','.join(NOETHER_NAMES)}"),
        arg("--noether-weight", type=non_negative_float, default=1.0,
            help="weight of the known quantities' conservation loss (default 1)"),
        arg("--noether-horizon", type=int, default=4,
            help="rollout steps of the conservation loss and of meta-tailoring (default 4)"),
        arg("--meta-inner-lr", type=float, default=1e-3,
            help="initial inner rate of meta-tailoring with 'learned' (default 1e-3)"),
        arg("--tailor-steps", type=int, default=0,
            help="test-time tailoring steps per held-out trajectory (default 0: none)"),
        arg("--tailor-lr", type=_checked(parse_rates), default="1e-4,1e-3,1e-2,1e-1",
            help="tailoring rate, or comma-separated rates of a line search "
            "(default 1e-4,1e-3,1e-2,1e-1)"),
        arg("--tailor-horizon", type=int, default=20,
            help="rollout steps of the tailoring loss, capped at --horizon (default 20)"),
    ],
)  # fmt: skip
def dynamics(args: argparse.Namespace) -> JobSpec:
    """Molecular dynamics forecasting with Noether conservation losses and tailoring."""
    names = parse_noether(args.noether)
    kind = _check_model_flags(args, names)
    _check_dependent_flags(args, names)
    known = [n for n in names if n in KNOWN_QUANTITIES]
    if args.tailor_steps and not names:
        raise ValueError("--tailor-steps: tailoring needs conserved quantities; pass --noether")
    if args.data == "md17" and "energy" in known:
        raise ValueError(
            "--noether: 'energy' needs an energy model, which --data md17 does not have "
            "(use --data generated, whose MMFF94 force field gives it)"
        )
    if not 1 <= args.horizon < args.frames:
        raise ValueError(
            f"--horizon: expected 1 <= horizon <= --frames - 1 = {args.frames - 1}, "
            f"got {args.horizon}"
        )
    if not 1 <= args.train_horizon < args.frames:
        raise ValueError(
            f"--train-horizon: expected 1 <= train_horizon <= --frames - 1 = "
            f"{args.frames - 1}, got {args.train_horizon}"
        )
    groups = build_trajectories(args)
    train_ids, val_ids, test_ids = _split(groups, args.split, args.seed)
    flat = [t.to(torch.float32) for group in groups for t in group]
    train = [flat[i] for i in train_ids]
    potential = _energy_model(groups) if args.data == "generated" else None
    quantity = None
    if known:
        quantity = known_quantity(known, typical_scales(train), potential)
    velocities = torch.cat([t.velocities.reshape(-1, 3) for t in train])
    speed = float(velocities.square().sum(-1).mean().sqrt())  # RMS speed (Å/fs)

    def task(train_windows) -> NextStepTask:
        return NextStepTask.from_dataset(
            train_windows,
            quantity=quantity,
            energy=None if potential is None else TotalEnergy(potential),
            tailor_steps=args.tailor_steps,
            tailor_lr=parse_rates(args.tailor_lr),
            tailor_horizon=args.tailor_horizon,
        )

    extra = []
    if quantity is not None and args.noether_weight:
        extra.append(ConservationLoss(quantity, args.noether_weight, args.noether_horizon))
    return JobSpec(
        model=_model(args, kind, names, flat[0].dt, speed),
        task=task,
        train=TrajectoryWindows(train, args.train_horizon, ids=train_ids),
        val=TrajectoryWindows([flat[i] for i in val_ids], args.horizon, args.horizon, val_ids),
        test=TrajectoryWindows(
            [flat[i] for i in test_ids], args.horizon, args.horizon, test_ids, tag=TAILOR_TAG
        ),
        split={"train": train_ids, "val": val_ids, "test": test_ids},
        extra_losses=extra,
    )
