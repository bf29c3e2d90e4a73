"""The job registry behind ``symgraph train <job>``.

A job is one function that builds a :class:`JobSpec` (model, datasets, task, and optionally
optimiser, scheduler, callbacks, extra losses) from the parsed command line, registered
with one decorator that also declares the job's own flags::

    from symgraph.train.jobs import JobSpec, arg, register_job
    from symgraph.train.tasks import RegressionTask

    @register_job("qm9", arguments=[arg("--target", type=int, default=7, help="column of y")])
    def qm9(args) -> JobSpec:
        \"\"\"QM9 molecular property regression.\"\"\"
        train, val, test = ...  # split with random_split_indices(n, [0.8, 0.1, 0.1], args.seed)
        return JobSpec(
            model=...,
            train=train, val=val, test=test,
            task=lambda train: RegressionTask.from_dataset(
                train, args.target, unit_scale=1000.0, unit_name="meV"
            ),
        )

The module holding a job must be listed in :data:`JOB_MODULES` so that the command line
imports it; a job module imports heavy optional dependencies inside its function, not at
the top, so that one missing package never hides the other jobs. The common flags
(``--epochs --batch-size --lr --seed --out --resume --device --checkpoint-every
--no-progress --subset`` ...) are in ``args`` too; ``--subset`` is applied by the command
line after the job returns, so a job may ignore it (or use it to build less data).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from torch import nn
from torch.utils.data import Dataset, Subset
from torch_geometric.data import Dataset as PygDataset

from symgraph.train.callbacks import Callback, ExtraLoss
from symgraph.train.loop import OptimizerFactory, SchedulerFactory
from symgraph.train.split import dataset_indices
from symgraph.train.tasks import Task

__all__ = [
    "JOBS",
    "JOB_MODULES",
    "Argument",
    "Job",
    "JobSpec",
    "arg",
    "get_job",
    "load_jobs",
    "register_job",
    "take_subset",
    "named_by_flags",
    "changed_flags",
]

#: Modules that register jobs when imported (add yours here).
JOB_MODULES: list[str] = [
    "symgraph.train.toy",
    "symgraph.train.job_qm9",
    "symgraph.train.job_modelnet40",
    "symgraph.train.job_fluid",
    "symgraph.train.job_dynamics",
]


@dataclass
class JobSpec:
    """What a job builds for the trainer.

    Attributes:
        model: the model to train.
        task: a :class:`Task`, or ``train_dataset -> Task`` to fit it (e.g. target mean/std)
            on the final training split, after ``--subset``.
        train, val, test: the three datasets.
        split: indices for ``split.json`` (default: inferred from the datasets).
        optimizer, scheduler, callbacks, extra_losses: as in :class:`~symgraph.train.loop.Trainer`
            (``None``: Adam with ``--lr`` / ``--weight-decay`` and the ``--scheduler`` flag).
    """

    model: nn.Module
    task: Task | Callable[[Dataset], Task]
    train: Dataset
    val: Dataset
    test: Dataset
    split: dict[str, Sequence[int]] | None = None
    optimizer: OptimizerFactory | None = None
    scheduler: SchedulerFactory | None = None
    callbacks: Sequence[Callback] = ()
    extra_losses: Sequence[ExtraLoss] = ()

    def split_indices(self) -> dict[str, list[int]]:
        """``split`` as lists, or inferred from the datasets (``split.dataset_indices``)."""
        datasets = {"train": self.train, "val": self.val, "test": self.test}
        if self.split is not None:
            return {name: [int(i) for i in self.split[name]] for name in datasets}
        return {name: dataset_indices(ds) for name, ds in datasets.items()}

    def resolved_task(self) -> Task:
        """The task, fitted on ``train`` when a factory was given."""
        return self.task if isinstance(self.task, Task) else self.task(self.train)


@dataclass(frozen=True)
class Argument:
    """One ``parser.add_argument(*flags, **kwargs)`` call; ``path``: its value names a file
    or folder (or a list of them)."""

    flags: tuple[str, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)
    path: bool = False

    @property
    def dest(self) -> str:
        """The attribute of the parsed namespace that holds the flag's value."""
        if "dest" in self.kwargs:
            return self.kwargs["dest"]
        flag = next((f for f in self.flags if f.startswith("--")), self.flags[0])
        return flag.lstrip("-").replace("-", "_")


def int_at_least(minimum: int, expected: str, maximum: int | None = None) -> Callable[[str], int]:
    """``argparse`` type of a count flag: an integer ``>= minimum`` (and ``<= maximum``);
    ``expected`` says so in the usage error (``"expected <expected>, got '0'"``)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return parse


#: ``argparse`` type of a count flag: an integer ``>= 1``.
positive_int = int_at_least(1, "a positive integer")


def _finite_float(allow_zero: bool) -> Callable[[str], float]:
    expected = "a non-negative finite number" if allow_zero else "a positive finite number"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (0 <= value if allow_zero else 0 < value) or not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return parse


#: ``argparse`` types of a positive / non-negative finite number.
positive_float = _finite_float(allow_zero=False)
non_negative_float = _finite_float(allow_zero=True)


def arg(*flags: str, path: bool = False, **kwargs: Any) -> Argument:
    """Declare a job flag with ``argparse.add_argument``'s signature; ``path=True`` for a
    flag naming files or folders, which a run folder records as absolute paths."""
    if not flags or not all(flag.startswith("-") for flag in flags):
        raise ValueError(f"arg: job flags must be optional ('--name'), got {flags}")
    return Argument(flags, kwargs, path)


@dataclass(frozen=True)
class Job:
    """A registered job: ``job(args)`` builds its :class:`JobSpec`.

    ``predated``: for flags added after runs were made, the value those runs used
    (``{"model": "egnn"}``); ``--resume`` and ``symgraph evaluate`` read a run folder whose
    ``config.json`` lacks the flag as having that value.
    """

    name: str
    build: Callable[[argparse.Namespace], JobSpec]
    arguments: tuple[Argument, ...] = ()
    help: str = ""
    predated: Mapping[str, Any] = field(default_factory=dict)

    def saved_args(self, saved: Mapping[str, Any]) -> dict[str, Any]:
        """The settings of a run folder (``config.json``'s ``args``), the flags it
        predates filled in from :attr:`predated`."""
        return {**self.predated, **saved}

    def absolute_paths(self, args: Mapping[str, Any]) -> dict[str, Any]:
        """``args`` with the values of the job's path flags made absolute (relative ones are
        read from the current folder), so that a run folder names its data wherever it is
        evaluated, resumed or predicted from."""
        out = dict(args)
        for argument in self.arguments:
            value = out.get(argument.dest)
            if not argument.path or value is None:
                continue
            if isinstance(value, (list, tuple)):
                out[argument.dest] = [os.path.abspath(v) for v in value]
            else:
                out[argument.dest] = os.path.abspath(value)
        return out

    def __call__(self, args: argparse.Namespace) -> JobSpec:
        spec = self.build(args)
        if not isinstance(spec, JobSpec):
            raise TypeError(
                f"job {self.name!r} must return a JobSpec, returned {type(spec).__name__}"
            )
        return spec

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add the job's own flags to ``parser``."""
        for argument in self.arguments:
            parser.add_argument(*argument.flags, **argument.kwargs)


#: name -> job; filled by :func:`register_job` when the modules of JOB_MODULES are imported.
JOBS: dict[str, Job] = {}


def register_job(
    name: str,
    *,
    arguments: Sequence[Argument] = (),
    help: str | None = None,
    predated: Mapping[str, Any] | None = None,
) -> Callable[[Callable[[argparse.Namespace], JobSpec]], Callable[[argparse.Namespace], JobSpec]]:
    """Decorator registering ``build(args) -> JobSpec`` as job ``name``.

    Args:
        name: the job's name on the command line.
        arguments: the job's own flags (:func:`arg`).
        help: one line for ``symgraph train --help`` (default: the docstring's first line).
        predated: destinations of flags added later and the value that runs made before
            them used (see :class:`Job`); ``build`` should read them with ``getattr(args,
            name, value)`` too, for namespaces made by hand.
    """

    def decorator(
        build: Callable[[argparse.Namespace], JobSpec],
    ) -> Callable[[argparse.Namespace], JobSpec]:
        if name in JOBS and JOBS[name].build is not build:
            raise ValueError(f"register_job: a job named {name!r} is already registered")
        summary = help if help is not None else (build.__doc__ or "").strip().split("\n")[0]
        JOBS[name] = Job(name, build, tuple(arguments), summary, dict(predated or {}))
        return build

    return decorator


def load_jobs() -> dict[str, Job]:
    """Import the modules of :data:`JOB_MODULES` and return :data:`JOBS`."""
    for module in JOB_MODULES:
        importlib.import_module(module)
    return JOBS


def get_job(name: str) -> Job:
    """The job called ``name``.

    Raises:
        KeyError: no such job; the message lists the valid names.
    """
    jobs = load_jobs()
    if name not in jobs:
        raise KeyError(f"unknown job {name!r}; valid jobs: {', '.join(sorted(jobs))}")
    return jobs[name]


def _first(dataset: Dataset, n: int) -> Dataset:
    if isinstance(dataset, PygDataset):
        return dataset[:n]
    return Subset(dataset, range(min(n, len(dataset))))


def take_subset(spec: JobSpec, n: int) -> JobSpec:
    """Keep the first ``n`` items of each split, and record what they are: a dataset with
    ``split_ids(items)`` (e.g. windows of trajectories, recorded by trajectory id) says so
    itself, any other keeps the first ``n`` recorded indices (one per item)."""
    if n < 1:
        raise ValueError(f"take_subset: n must be >= 1, got {n}")
    datasets = {"train": spec.train, "val": spec.val, "test": spec.test}
    split = spec.split_indices()

    def recorded(name: str, dataset: Dataset) -> list[int]:
        if hasattr(dataset, "split_ids"):
            return [int(i) for i in dataset.split_ids(range(min(n, len(dataset))))]
        return split[name][:n]

    return replace(
        spec,
        split={name: recorded(name, ds) for name, ds in datasets.items()},
        **{name: _first(ds, n) for name, ds in datasets.items()},
    )


@contextlib.contextmanager
def named_by_flags(flags: Mapping[str, str]) -> Iterator[None]:
    """Re-raise a ``ValueError`` (or ``FileNotFoundError``) that names a library argument
    (``"subset: ..."``) with the command-line flag that sets it (``"--subset-size: ..."``),
    e.g. ``{"subset": "--subset-size"}``; other errors pass unchanged."""
    try:
        yield
    except (ValueError, FileNotFoundError) as err:
        name, sep, rest = str(err).partition(": ")
        if not sep or name not in flags:
            raise
        kind = FileNotFoundError if isinstance(err, FileNotFoundError) else ValueError
        raise kind(f"{flags[name]}: {rest}") from err


def changed_flags(args: argparse.Namespace, job: str, flags: Sequence[str]) -> list[str]:
    """Those of ``flags`` (job ``job``'s own, ``"--free-hidden"`` …) whose value in ``args``
    differs from their default; a flag missing from ``args`` (a run folder that predates
    it) counts as its default. For refusing flags that the chosen setting would not read."""
    arguments = {a.flags[0]: a for a in JOBS[job].arguments}
    defaults = {a.dest: a.kwargs.get("default") for a in arguments.values()}
    # path flags compare as the absolute paths a run folder records
    values = JOBS[job].absolute_paths({**defaults, **vars(args)})
    defaults = JOBS[job].absolute_paths(defaults)
    return [
        flag for flag in flags if values[arguments[flag].dest] != defaults[arguments[flag].dest]
    ]
