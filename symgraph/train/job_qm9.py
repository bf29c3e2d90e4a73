"""The ``qm9`` job: molecular property regression with :class:`SteerableMoleculeNet`.

``symgraph train qm9 --target homo --group O3 --epochs 10 --subset-size 5000 --out runs/homo``
reads QM9 from the ``qm9pack`` package (full data through the package registry), from
local qm9pack-format CSV files (``--source csv --csv FILE ...``) or from PyG's download
(``--source pyg``); splits it with a seeded random split (recorded in ``split.json``);
standardises the target on the training split; reports the MAE in meV for energies.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from symgraph.train.jobs import JobSpec, arg, named_by_flags, register_job
from symgraph.train.split import random_split_indices
from symgraph.train.tasks import RegressionTask

if TYPE_CHECKING:
    from symgraph.groups import MatrixGroup

__all__ = ["qm9", "build_qm9_dataset", "build_qm9_model", "INTENSIVE_TARGETS", "DipoleNorm"]

_DATASET_FLAGS = {
    "source": "--source", "csv_files": "--csv", "subset": "--subset-size",
    "subset_seed": "--subset-seed", "cutoff": "--cutoff",
}  # fmt: skip
_MODEL_FLAGS = {
    "irreps": "--hidden", "num_layers": "--layers", "cutoff": "--cutoff", "lmax": "--lmax",
    "num_radial": "--num-radial",
}  # fmt: skip

INTENSIVE_TARGETS = ("mu", "homo", "lumo", "gap")
"""Targets pooled with a mean over atoms; the others (energies, alpha, r2, Cv) are summed."""


class DipoleNorm(nn.Module):
    """``|μ|`` ``[B]`` from a model predicting the dipole vector ``[B, 3]`` (for target ``mu``)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, data) -> Tensor:
        return self.model(data).norm(dim=-1)


def build_qm9_dataset(args: argparse.Namespace):
    """The dataset the flags describe (processed once and cached under ``--root``)."""
    from symgraph.data.qm9 import QM9

    csv_files = [Path(p) for p in args.csv] if args.csv else None
    with named_by_flags(_DATASET_FLAGS):
        return QM9(
            args.root,
            source=args.source,
            csv_files=csv_files,
            subset=args.subset_size,
            subset_seed=args.subset_seed if args.subset_size else None,
            cutoff=args.cutoff,
        )


def build_qm9_model(args: argparse.Namespace) -> nn.Module:
    """The model the flags describe (``DipoleNorm``-wrapped with ``--dipole``)."""
    from symgraph.data.qm9 import TARGETS, target_index
    from symgraph.groups import group_from_name

    with named_by_flags({"target": "--target", "group": "--group"}):
        name = TARGETS[target_index(args.target)]
        group = group_from_name(args.group)
    with named_by_flags(_MODEL_FLAGS):
        model = _molecule_model(args, group, name)
    return DipoleNorm(model) if args.dipole else model


def _molecule_model(args: argparse.Namespace, group: MatrixGroup, name: str) -> nn.Module:
    """SteerableMoleculeNet of the flags, for target ``name`` (its readout) and ``group``."""
    from symgraph.models import SteerableMoleculeNet

    return SteerableMoleculeNet(
        group=group,
        hidden=args.hidden,
        num_layers=args.layers,
        cutoff=args.cutoff,
        # run folders written before these flags existed hold the defaults of that time
        lmax=getattr(args, "lmax", 2),
        num_radial=getattr(args, "num_radial", 8),
        use_edge_attr=not args.no_edge_attr,
        use_node_attr=not args.no_node_attr,
        readout="mean" if name in INTENSIVE_TARGETS else "sum",
        dipole=args.dipole,
        last_layer=getattr(args, "last_layer", "full"),
    )


@register_job(
    "qm9",
    arguments=[
        arg("--target", default="homo", help="QM9 target name: mu, alpha, homo, lumo, gap, "
            "r2, zpve, U0, U, H, G, Cv (default homo)"),
        arg("--group", default="O3", help="group name, e.g. O3, SO3, SO2, D4 (default O3)"),
        arg("--source", default="qm9pack", choices=["qm9pack", "csv", "pyg"],
            help="where the data come from (default: the qm9pack package)"),
        arg("--csv", nargs="*", default=None, path=True,
            help="qm9pack CSV(.gz) files (--source csv)"),
        arg("--root", default="data/qm9", path=True, help="cache folder for the processed dataset"),
        arg("--subset-size", type=int, default=None,
            help="use this many molecules (seeded random sample) before splitting"),
        arg("--subset-seed", type=int, default=0, help="seed of the --subset-size sample"),
        arg("--split", type=float, nargs=3, default=[0.8, 0.1, 0.1],
            metavar=("TRAIN", "VAL", "TEST"), help="split fractions or counts"),
        arg("--hidden", default="32x0e + 8x1o + 4x2e", help="node irreps between layers"),
        arg("--layers", type=int, default=3, help="interaction layers (default 3)"),
        arg("--cutoff", type=float, default=5.0, help="radius of the graph and kernel (Å)"),
        arg("--lmax", type=int, default=2, help="kernel's largest spherical-harmonic degree"),
        arg("--num-radial", type=int, default=8,
            help="Gaussians of the kernel's radial basis (default 8; benchmarks/qm9.py uses 48)"),
        arg("--no-edge-attr", action="store_true", help="do not give bond types to the kernel"),
        arg("--no-node-attr", action="store_true", help="do not give atom types to the kernel"),
        arg("--dipole", action="store_true",
            help="for target mu: predict the dipole vector with an equivariant 1o readout"),
        arg("--last-layer", choices=["readout", "full"], default="readout",
            help="what the last layer outputs: the blocks the readout reads (default) or all "
            "of --hidden"),
    ],
    predated={"last_layer": "full"},  # the last layer before it was trimmed to the readout
)  # fmt: skip
def qm9(args: argparse.Namespace) -> JobSpec:
    """QM9 molecular property regression with SteerableMoleculeNet."""
    from symgraph.data.qm9 import REPORT_FACTOR, REPORT_UNITS, TARGETS, target_index

    with named_by_flags({"target": "--target"}):
        index = target_index(args.target)
    name = TARGETS[index]
    if args.dipole and name != "mu":
        raise ValueError(f"--dipole: only for target 'mu', got target {name!r}")
    dataset = build_qm9_dataset(args)
    whole = all(float(f).is_integer() for f in args.split) and max(args.split) >= 1
    counts = [int(f) for f in args.split] if whole else list(args.split)  # counts or fractions
    train, val, test = random_split_indices(len(dataset), counts, seed=args.seed)
    model = build_qm9_model(args)
    unit_scale, unit_name = REPORT_FACTOR[name], REPORT_UNITS[name]
    if args.dipole:

        def task(_train) -> RegressionTask:  # |μ| is predicted directly, in Debye
            return RegressionTask(index, 0.0, 1.0, unit_scale, unit_name)
    else:

        def task(train_set) -> RegressionTask:
            return RegressionTask.from_dataset(train_set, index, unit_scale, unit_name)

    return JobSpec(
        model=model,
        task=task,
        train=dataset[torch.tensor(train, dtype=torch.long)],
        val=dataset[torch.tensor(val, dtype=torch.long)],
        test=dataset[torch.tensor(test, dtype=torch.long)],
        split={"train": train, "val": val, "test": test},
    )
