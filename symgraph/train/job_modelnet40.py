"""The ``modelnet40`` job: point-cloud classification with :class:`SteerablePointNet`.

``symgraph train modelnet40 --group SO2 --scheduler cosine --epochs 20 --out runs/so2``
trains on the library's own procedural shapes (no download); ``--dataset modelnet40
--root DIR`` on ModelNet40 (the PointNet++ resampled folder, or PyG's OFF meshes with
``--source off``). A decaying learning rate (``--scheduler cosine``) is advisable: the
batch norm in the model's head then settles, and so does the validation accuracy.

Procedural: ``--num-shapes`` shapes split into train / val by ``--val-fraction``, and
``--num-test-shapes`` independent shapes for the test set. ModelNet40: the official train
list split into train / val, the official test list for test. ``--train-rotation G``
augments every training shape with a random element of G; ``--test-rotation G`` applies
one fixed random element of G per shape to the validation and test sets (the same
elements every epoch and in ``symgraph evaluate``).

Bad input gives clear errors from the datasets and the model: an unknown class name or
group (``ValueError`` listing the valid ones), a missing ModelNet40 split file
(``FileNotFoundError`` saying where to get it), shapes with fewer than ``k + 1`` points or
NaN coordinates (``ValueError`` naming ``k`` / ``pos``).
"""

from __future__ import annotations

import argparse

import torch
from torch_geometric.data import Data, InMemoryDataset

from symgraph.train.jobs import JobSpec, arg, named_by_flags, register_job
from symgraph.train.split import random_split_indices
from symgraph.train.tasks import ClassificationTask

__all__ = ["modelnet40", "rotated_copy", "build_pointcloud_datasets", "build_pointnet"]

_TEST_SEED_OFFSET = 1_000_003
#: The group arguments by the flag that names them.
_GROUP_FLAGS = {
    "group": "--group", "tta_group": "--tta-group", "train_rotation": "--train-rotation",
    "test_rotation": "--test-rotation",
}  # fmt: skip


class _Clouds(InMemoryDataset):
    """An in-memory dataset of the given ``Data`` items."""

    def __init__(self, items: list[Data]) -> None:
        super().__init__(None)
        self._data, self.slices = self.collate(items)


def rotated_copy(dataset, group: str, seed: int) -> InMemoryDataset:
    """Every shape of ``dataset`` acted on by its own random element of ``group`` (fixed by
    ``seed``): ``pos`` and ``normal`` transformed, in memory.

    Args:
        dataset: a point-cloud dataset (items with ``pos`` and optionally ``normal``).
        group: a catalog group name (``"SO2"``: rotations about z, ``"SO3"`` ...).
        seed: seed of the sequence of elements.
    """
    from symgraph.data import RandomGroupRotation
    from symgraph.groups import group_from_name

    rotate = RandomGroupRotation(group_from_name(group), seed=seed)
    return _Clouds([rotate(dataset[i].clone()) for i in range(len(dataset))])


def _check_group_flags(args: argparse.Namespace) -> None:
    """Refuse an unknown group name in any of the group flags, naming that flag (before any
    data is read)."""
    from symgraph.groups import as_group

    with named_by_flags(_GROUP_FLAGS):
        for name in _GROUP_FLAGS:
            if getattr(args, name, None):
                as_group(getattr(args, name), name)


def build_pointcloud_datasets(args: argparse.Namespace):
    """``(train_and_val, test, classes)`` for ``--dataset procedural | modelnet40``."""
    if args.dataset == "procedural":
        from symgraph.data import ProceduralShapes

        common = dict(num_points=args.num_points, classes=args.classes, noise=args.noise)
        pool = ProceduralShapes(args.num_shapes, seed=args.seed, **common)
        test = ProceduralShapes(args.num_test_shapes, seed=args.seed + _TEST_SEED_OFFSET, **common)
        return pool, test, pool.classes
    from symgraph.data import ModelNet40, NormalizeUnitSphere

    common = dict(
        source=args.source,
        num_points=args.num_points,
        classes=args.classes,
        processed_dir=args.cache,
        pre_transform=NormalizeUnitSphere(),
    )
    pool = ModelNet40(args.root, split="train", **common)
    test = ModelNet40(args.root, split="test", **common)
    return pool, test, pool.classes


def build_pointnet(args: argparse.Namespace, num_classes: int):
    """The :class:`SteerablePointNet` the flags describe."""
    from symgraph.models import SteerablePointNet

    return SteerablePointNet(
        num_classes,
        group=args.group,
        hidden=args.hidden,
        stages=args.stages,
        k=args.k,
        ratio=args.ratio,
        use_normals=not args.no_normals,
        tta=args.tta,
        tta_group=args.tta_group,
        dropout=args.dropout,
    )


@register_job(
    "modelnet40",
    arguments=[
        arg("--dataset", default="procedural", choices=["procedural", "modelnet40"],
            help="procedural shapes (no download) or ModelNet40 (default procedural)"),
        arg("--root", default="data/modelnet40", path=True,
            help="ModelNet40 folder (--dataset modelnet40)"),
        arg("--source", default="resampled", choices=["resampled", "off"],
            help="ModelNet40 format: PointNet++ resampled txt files or PyG's OFF meshes"),
        arg("--cache", default=None, path=True,
            help="folder for ModelNet40's processed files (default ROOT/processed)"),
        arg("--classes", nargs="*", default=None, help="restrict to these class names"),
        arg("--num-points", type=int, default=1024, help="points per shape (default 1024)"),
        arg("--num-shapes", type=int, default=1200,
            help="procedural shapes for train + val (default 1200)"),
        arg("--num-test-shapes", type=int, default=240,
            help="independent procedural test shapes (default 240)"),
        arg("--noise", type=float, default=0.0, help="procedural position noise (std)"),
        arg("--val-fraction", type=float, default=0.1,
            help="fraction of the training shapes held out for validation (default 0.1)"),
        arg("--train-rotation", default=None,
            help="augment training shapes with random elements of this group (e.g. SO3)"),
        arg("--test-rotation", default=None,
            help="act on val/test shapes with fixed random elements of this group"),
        arg("--group", default="SO3", help="symmetry group of the model (default SO3)"),
        arg("--hidden", default="16x0e + 8x1o + 4x2e", help="features of every stage"),
        arg("--stages", type=int, default=2, help="resolution levels (default 2)"),
        arg("--k", type=int, default=16, help="neighbours per point (default 16)"),
        arg("--ratio", type=float, default=0.25, help="FPS ratio per stage (default 0.25)"),
        arg("--no-normals", action="store_true", help="do not use normals as input features"),
        arg("--tta", type=int, default=0, help="test-time augmentation elements (default 0)"),
        arg("--tta-group", default=None, help="group of the augmentation (default --group)"),
        arg("--dropout", type=float, default=0.0, help="dropout in the classifier head"),
    ],
)  # fmt: skip
def modelnet40(args: argparse.Namespace) -> JobSpec:
    """Point-cloud classification (ModelNet40 or procedural shapes) with SteerablePointNet."""
    if not 0 < args.val_fraction < 1:
        raise ValueError(f"--val-fraction: expected a number in (0, 1), got {args.val_fraction}")
    _check_group_flags(args)
    pool, test, classes = build_pointcloud_datasets(args)
    train_idx, val_idx = random_split_indices(
        len(pool), [1 - args.val_fraction, args.val_fraction], seed=args.seed
    )
    train = pool[torch.tensor(train_idx, dtype=torch.long)]
    val = pool[torch.tensor(val_idx, dtype=torch.long)]
    if args.train_rotation:
        from symgraph.data import RandomGroupRotation
        from symgraph.groups import group_from_name

        train.transform = RandomGroupRotation(group_from_name(args.train_rotation))
    if args.test_rotation:
        val = rotated_copy(val, args.test_rotation, seed=args.seed)
        test = rotated_copy(test, args.test_rotation, seed=args.seed + 1)
    return JobSpec(
        model=build_pointnet(args, len(classes)),
        task=ClassificationTask(),
        train=train,
        val=val,
        test=test,
        split={"train": train_idx, "val": val_idx, "test": list(range(len(test)))},
    )
