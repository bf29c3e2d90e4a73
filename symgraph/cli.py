"""The ``symgraph`` command: ``symgraph train JOB [flags]`` and ``symgraph evaluate RUN_DIR``.

``python -m symgraph ...`` is the same command, and so is
``torchrun --nproc_per_node=2 -m symgraph train JOB ...`` (data parallel, gloo on CPU,
nccl on CUDA). ``symgraph train --help`` lists the jobs; ``symgraph train JOB --help`` the
flags, common and the job's own. Jobs live in the registry of ``symgraph.train.jobs``.
Every job takes ``--teleport every:K`` (symmetry teleportation during training,
``symgraph.train.teleport_callback``); a model without a parameter-space symmetry is
refused before training starts.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from symgraph.allocator import retain_freed_memory
from symgraph.files import read_json, write_json
from symgraph.teleport import DEFAULT_KINDS, OPTIMIZER_STATE_MODES, NoSymmetryError, parse_schedule
from symgraph.teleport.hook import GRADIENT_SOURCES
from symgraph.teleport.registry import registered_rules
from symgraph.train.callbacks import Callback
from symgraph.train.checkpoint import ResumeError, load_checkpoint
from symgraph.train.distributed import init_distributed, shutdown_distributed
from symgraph.train.jobs import (
    Job,
    JobSpec,
    get_job,
    int_at_least,
    load_jobs,
    non_negative_float,
    positive_float,
    positive_int,
    take_subset,
)
from symgraph.train.loop import RUN_FILES, TrainConfig, Trainer, evaluate, seed_everything
from symgraph.train.tasks import Task
from symgraph.train.teleport_callback import CALLBACK_OBJECTIVES, TeleportCallback

__all__ = ["main", "build_parser"]

EVALUATION_FILE = "evaluation.json"


def _schedule(text: str) -> str:
    """``--teleport``: a schedule string of :func:`symgraph.teleport.parse_schedule`."""
    try:
        parse_schedule(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


_non_negative_int = int_at_least(0, "a non-negative integer")
_seed = int_at_least(0, "a non-negative integer below 2**63", maximum=2**63 - 1)


def _device(text: str) -> str:
    """``--device``: ``auto`` or a torch device string (``cpu``, ``cuda``, ``cuda:K``, ...)."""
    if text != "auto":
        try:
            device = torch.device(text)
        except RuntimeError:
            raise argparse.ArgumentTypeError(
                f"expected auto, cpu, cuda or cuda:K, got {text!r}"
            ) from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(
                f"got {text!r}, but CUDA is not available on this machine (use auto or cpu)"
            )
    return text


def _kinds(text: str) -> tuple[str, ...]:
    """``--teleport-kinds``: comma-separated names of symmetry rules."""
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    known = sorted(registered_rules())
    unknown = [k for k in kinds if k not in known]
    if not kinds or unknown:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated names among {known}, got {text!r}"
        )
    return kinds


def _add_teleport_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "symmetry teleportation", "see symgraph.train.teleport_callback; rows in teleports.csv"
    )
    group.add_argument(
        "--teleport",
        type=_schedule,
        default=None,
        metavar="SCHEDULE",
        help="teleport before a step when due, in steps taken: every:K, every:K,until:N, "
        "at:i,j,... or never (default: no teleportation)",
    )
    group.add_argument(
        "--teleport-steps",
        type=_non_negative_int,
        default=10,
        metavar="N",
        help="search steps per teleport (default 10)",
    )
    group.add_argument(
        "--teleport-lr",
        type=positive_float,
        default=0.1,
        metavar="LR",
        help="search step size (default 0.1)",
    )
    group.add_argument(
        "--teleport-kinds",
        type=_kinds,
        default=DEFAULT_KINDS,
        metavar="KINDS",
        help=f"symmetry rules, comma-separated (default {','.join(DEFAULT_KINDS)})",
    )
    group.add_argument(
        "--teleport-optimizer-state",
        choices=OPTIMIZER_STATE_MODES,
        default="transform",
        help="what to do with the optimiser moments of teleported parameters (default "
        "transform: transported like the gradient)",
    )
    group.add_argument(
        "--teleport-objective",
        choices=CALLBACK_OBJECTIVES,
        default="grad_norm",
        help="the point of the orbit to move to (default grad_norm: the steepest, as in the "
        "paper; min_grad_norm: the least steep, with --teleport-kinds rescale,gated; "
        "min_norm: the smallest weights)",
    )
    group.add_argument(
        "--teleport-samples",
        type=positive_int,
        default=None,
        metavar="N",
        help="teleport on N random training samples drawn for each teleport (default: on "
        "the batch of the coming step); min_grad_norm needs a less noisy gradient than a "
        "small batch's",
    )
    group.add_argument(
        "--teleport-gradient",
        choices=GRADIENT_SOURCES,
        default="batch",
        help="with --teleport-objective min_grad_norm, where its gradient comes from "
        "(default batch: computed on the teleport's batch; optimizer: the optimiser's "
        "running mean of past gradients, no backward pass)",
    )


def _check_teleport_flags(args: argparse.Namespace) -> None:
    """Refuse ``--teleport-*`` flags without ``--teleport``: nothing would read them, and the
    run would train without teleporting."""
    if args.teleport is not None:
        return
    parser = argparse.ArgumentParser(add_help=False)
    _add_teleport_arguments(parser)
    unread = [
        f"--{dest.replace('_', '-')}"
        for dest, default in vars(parser.parse_args([])).items()
        if dest != "teleport" and getattr(args, dest, default) != default
    ]
    if unread:
        raise UsageError(
            f"{', '.join(unread)}: read with --teleport only, which is not given (add "
            "--teleport SCHEDULE, or leave them out)"
        )


def _teleport_callbacks(args: argparse.Namespace, model: torch.nn.Module) -> list[Callback]:
    """``[TeleportCallback]`` with ``--teleport``, else ``[]``; finds the symmetries now.

    Settings the callback refuses together or for this model (``--teleport-gradient
    optimizer`` without ``--teleport-objective min_grad_norm``, or ``min_grad_norm`` with
    symmetries it cannot use) are a usage error, raised before the run folder is written."""
    if args.teleport is None:
        return []
    try:
        callback = TeleportCallback(
            model,
            args.teleport,
            steps=args.teleport_steps,
            lr=args.teleport_lr,
            kinds=args.teleport_kinds,
            optimizer_state=args.teleport_optimizer_state,
            objective=args.teleport_objective,
            samples=args.teleport_samples,
            gradient=args.teleport_gradient,
        )
    except NoSymmetryError:
        raise
    except ValueError as err:
        raise UsageError(f"--teleport: {err}") from err
    return [callback]


def _add_common_arguments(parser: argparse.ArgumentParser, job: str) -> None:
    group = parser.add_argument_group("training")
    group.add_argument(
        "--epochs", type=positive_int, default=10, help="epochs in total (default 10)"
    )
    group.add_argument(
        "--batch-size", type=positive_int, default=32, help="global batch size, over all processes"
    )
    group.add_argument(
        "--eval-batch-size", type=positive_int, default=None, help="default: --batch-size"
    )
    group.add_argument(
        "--lr", type=positive_float, default=1e-3, help="learning rate (default 1e-3)"
    )
    group.add_argument(
        "--weight-decay", type=non_negative_float, default=0.0, help="Adam weight decay"
    )
    group.add_argument(
        "--scheduler",
        choices=("none", "cosine", "plateau"),
        default="none",
        help="learning-rate schedule per epoch (plateau: halve once 6 epochs in a row bring "
        "no progress, as ReduceLROnPlateau with patience 5)",
    )
    group.add_argument(
        "--grad-clip", type=positive_float, default=None, help="max global gradient norm"
    )
    group.add_argument(
        "--precision",
        choices=("32", "bf16", "fp16"),
        default="32",
        help="training precision: float32, or autocast to bfloat16 / float16 (fp16 scales "
        "the loss); validation and test run in float32",
    )
    group.add_argument("--seed", type=_seed, default=0, help="seed of data, split and model")
    group.add_argument(
        "--subset", type=positive_int, default=None, help="keep the first N items of each split"
    )
    group.add_argument(
        "--num-workers", type=_non_negative_int, default=0, help="data-loader workers"
    )
    group.add_argument("--device", type=_device, default="auto", help="auto, cpu, cuda or cuda:K")
    run = parser.add_argument_group("run folder")
    run.add_argument("--out", default=f"runs/{job}", help=f"run folder (default runs/{job})")
    run.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    run.add_argument(
        "--checkpoint-every",
        type=_non_negative_int,
        default=0,
        help="also checkpoint every K optimiser steps (default 0: each epoch only)",
    )
    run.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    _add_teleport_arguments(parser)


def build_parser(jobs: dict[str, Job]) -> argparse.ArgumentParser:
    """The argument parser, with one ``train`` sub-command per job of ``jobs``."""
    parser = argparse.ArgumentParser(
        prog="symgraph", description="Train and evaluate symgraph models."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    train = commands.add_parser("train", help="train a job; writes a run folder")
    train_jobs = train.add_subparsers(dest="job", required=True, metavar="JOB", title="jobs")
    for name in sorted(jobs):
        job = jobs[name]
        job_parser = train_jobs.add_parser(name, help=job.help, description=job.help)
        _add_common_arguments(job_parser, name)
        job.add_arguments(job_parser.add_argument_group(f"{name} job"))
    ev = commands.add_parser("evaluate", help="test metrics of a run folder's checkpoint")
    ev.add_argument("run_dir", type=Path, help="a run folder written by `symgraph train`")
    ev.add_argument(
        "--checkpoint", choices=("best", "last"), default="best", help="best.pt or checkpoint.pt"
    )
    ev.add_argument("--device", type=_device, default=None, help="default: the run's --device")
    ev.add_argument("--batch-size", type=positive_int, default=None, help="default: the run's")
    return parser


def _scheduler_factory(name: str, epochs: int, task: Task):
    if name == "cosine":
        return lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    if name == "plateau":
        return lambda opt: torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, mode=task.mode, factor=0.5, patience=5
        )
    return None


class UsageError(Exception):
    """A job's settings or a run folder the command cannot use (exit status 2)."""


def _build_or_explain(args: argparse.Namespace) -> tuple[JobSpec, Task]:
    """:func:`_build`, with the job's own refusal of its settings or data (a ``ValueError``
    naming the argument) as a usage error rather than a traceback."""
    try:
        return _build(args)
    except ValueError as err:
        raise UsageError(f"{args.job}: {err}") from err


def _build(args: argparse.Namespace) -> tuple[JobSpec, Task]:
    """Seed, build the job, apply ``--subset``, fit the task on the training split."""
    seed_everything(args.seed)
    spec = get_job(args.job)(args)
    if args.subset is not None:
        spec = take_subset(spec, args.subset)
    sizes = {name: len(getattr(spec, name)) for name in ("train", "val", "test")}
    empty = [name for name, size in sizes.items() if size == 0]
    if empty:
        counts = ", ".join(f"{name} {size}" for name, size in sizes.items())
        raise ValueError(
            f"the {' and '.join(empty)} split is empty ({counts} items); give every split at "
            "least one item (--split, --val-fraction, --subset, or more data)"
        )
    return spec, spec.resolved_task()


def _units(task: Task, metrics: dict[str, float]) -> dict[str, str]:
    return {name: task.units.get(name, "") for name in metrics}


#: Settings that ``--resume`` may change: how long and how the loop runs. Every other
#: setting (target, data, model, seed, teleportation …) must be the run's own, or the
#: resumed run would silently learn something else.
RESUMABLE_CHANGES = frozenset({
    "epochs", "batch_size", "eval_batch_size", "lr", "weight_decay",
    "grad_clip", "precision", "num_workers", "device", "out", "resume",
    "checkpoint_every", "no_progress",
})  # fmt: skip


def _check_resumed_settings(args: argparse.Namespace) -> None:
    """Raise :class:`ResumeError` when ``--resume`` asks for other job settings than the
    run in ``--out`` was trained with (settings the run predates are not compared)."""
    path = Path(args.out) / RUN_FILES["config"]
    if not path.exists():
        return
    saved = read_json(path)
    if saved.get("job") not in (None, args.job):
        raise ResumeError(f"--resume: {args.out} holds a {saved['job']!r} run, not {args.job!r}")
    job = get_job(args.job)
    before = job.absolute_paths(job.saved_args(saved.get("args", {})))
    # as config.json stores them
    now = json.loads(json.dumps(job.absolute_paths(vars(args)), default=str))
    changed = sorted(
        key for key in before.keys() & now.keys()
        if key not in RESUMABLE_CHANGES and before[key] != now[key]
    )  # fmt: skip
    if changed:
        shown = ", ".join(
            f"--{key.replace('_', '-')} {before[key]!r} (now {now[key]!r})" for key in changed
        )
        raise ResumeError(
            f"--resume: {args.out} was trained with {shown}; resume with the run's settings "
            f"or start a new run (--out). A resumed run may change only: "
            + ", ".join(f"--{key.replace('_', '-')}" for key in sorted(RESUMABLE_CHANGES))
        )


def _train(args: argparse.Namespace) -> dict[str, Any] | None:
    """Train; the test metrics on rank 0, ``None`` on the other ranks."""
    if args.resume and (Path(args.out) / RUN_FILES["config"]).exists():
        _check_resumed_settings(args)  # the run's own settings, as it was started with them
    else:
        _check_teleport_flags(args)
    retain_freed_memory()
    dist = init_distributed(args.device)
    try:
        spec, task = _build_or_explain(args)
        config = TrainConfig(
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            weight_decay=args.weight_decay,
            seed=args.seed,
            checkpoint_every=args.checkpoint_every,
            grad_clip=args.grad_clip,
            precision=args.precision,
            eval_batch_size=args.eval_batch_size,
            num_workers=args.num_workers,
            progress=not args.no_progress,
            device=args.device,
        )
        trainer = Trainer(
            spec.model,
            task,
            spec.train,
            spec.val,
            spec.test,
            args.out,
            config,
            optimizer=spec.optimizer,
            scheduler=spec.scheduler or _scheduler_factory(args.scheduler, args.epochs, task),
            callbacks=[*spec.callbacks, *_teleport_callbacks(args, spec.model)],
            extra_losses=spec.extra_losses,
            split=spec.split_indices(),
            run_config={"job": args.job, "args": get_job(args.job).absolute_paths(vars(args))},
            dist=dist,
            resume=args.resume,
        )
        metrics = trainer.fit()
        dist.barrier()  # every rank finishes before the process group is torn down
        return {"metrics": metrics, "units": _units(task, metrics)} if dist.is_main else None
    finally:
        shutdown_distributed(dist)


def _evaluate(args: argparse.Namespace) -> dict[str, Any] | None:
    """Evaluate a run folder's checkpoint on its test split; ``None`` on ranks other than 0."""
    run_dir: Path = args.run_dir
    config = read_json(run_dir / RUN_FILES["config"])
    if "job" not in config or "args" not in config:
        raise UsageError(
            f"{run_dir / RUN_FILES['config']} names no job: the run was not started by "
            "`symgraph train`"
        )
    try:
        saved_args = get_job(config["job"]).saved_args(config["args"])
    except KeyError as err:
        raise UsageError(f"{run_dir / RUN_FILES['config']}: {err.args[0]}") from err
    saved = argparse.Namespace(**saved_args)
    if args.device is None:  # the run's device, which this machine may lack (CUDA)
        try:
            _device(saved.device)
        except argparse.ArgumentTypeError as err:
            raise UsageError(
                f"{run_dir} was trained with --device {saved.device}, which this machine "
                f"cannot use ({err}); evaluate it with --device cpu or auto"
            ) from err
    saved.device = args.device or saved.device
    dist = init_distributed(saved.device)
    try:
        spec, task = _build_or_explain(saved)
        recorded = read_json(run_dir / RUN_FILES["split"])
        if spec.split_indices() != recorded:
            raise UsageError(
                f"the job rebuilt a split different from {run_dir / RUN_FILES['split']}"
            )
        name = RUN_FILES["best" if args.checkpoint == "best" else "checkpoint"]
        try:
            state = load_checkpoint(run_dir / name, dist.device)
        except ValueError as err:  # unreadable, or not a symgraph checkpoint
            raise UsageError(str(err)) from err
        model = spec.model.to(dist.device)
        model.load_state_dict(state["model"])
        task.load_state_dict(state["task"])
        batch_size = args.batch_size or saved.eval_batch_size or saved.batch_size
        metrics = evaluate(model, spec.test, task, batch_size=batch_size, dist=dist)
        result = {
            "metrics": metrics,
            "units": _units(task, metrics),
            "checkpoint": name,
            "epoch": state["epoch"],
        }
        if not dist.is_main:
            return None
        write_json(run_dir / EVALUATION_FILE, result)
        return result
    finally:
        shutdown_distributed(dist)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of the message (tests replace it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def _configure_logging() -> None:
    """Progress messages of ``symgraph.*`` to stderr, once per process."""
    logger = logging.getLogger("symgraph")
    if not logger.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (argparse exits with 2 on bad usage)."""
    parser = build_parser(load_jobs())
    args = parser.parse_args(argv)
    _configure_logging()
    try:
        result = _train(args) if args.command == "train" else _evaluate(args)
    except (FileExistsError, FileNotFoundError, ResumeError, UsageError) as err:
        print(f"symgraph: error: {err}", file=sys.stderr)
        return 2
    except NoSymmetryError as err:
        print(f"symgraph: error: --teleport: {err}", file=sys.stderr)
        return 2
    if result is not None:
        print(json.dumps(result, indent=2))
    return 0
