"""Training machinery shared by every job: loop, tasks, checkpoints, DDP, job registry.

>>> from symgraph.train import Trainer, TrainConfig, RegressionTask
>>> # Trainer(model, task, train, val, test, "runs/demo", TrainConfig(epochs=5)).fit()

Modules: ``loop`` (Trainer, evaluate), ``tasks`` (what to optimise and report),
``checkpoint`` (atomic saves, random states), ``sampler`` / ``loader`` (the data order),
``distributed`` (torchrun), ``split`` (random splits), ``callbacks``, ``teleport_callback``
(symmetry teleportation, ``--teleport``), ``relaxation_schedule`` (how fast relaxed
layers may leave exact equivariance), ``records`` (metrics.csv, curve.png), ``jobs`` (the
registry of ``symgraph train JOB``), ``toy`` (the built-in demo job). Atomic file writes:
:mod:`symgraph.files`.
"""

from symgraph.train.callbacks import Callback, ExtraLoss
from symgraph.train.checkpoint import ResumeError, load_checkpoint, save_checkpoint
from symgraph.train.distributed import DistContext, init_distributed, shutdown_distributed
from symgraph.train.jobs import JOBS, JobSpec, arg, get_job, register_job
from symgraph.train.loop import RUN_FILES, TrainConfig, Trainer, evaluate, seed_everything
from symgraph.train.sampler import GlobalBatchSampler
from symgraph.train.split import random_split_indices
from symgraph.train.tasks import ClassificationTask, RegressionTask, Task
from symgraph.train.teleport_callback import TeleportCallback

__all__ = [
    "JOBS",
    "RUN_FILES",
    "Callback",
    "ClassificationTask",
    "DistContext",
    "ExtraLoss",
    "GlobalBatchSampler",
    "JobSpec",
    "RegressionTask",
    "ResumeError",
    "Task",
    "TeleportCallback",
    "TrainConfig",
    "Trainer",
    "arg",
    "evaluate",
    "get_job",
    "init_distributed",
    "load_checkpoint",
    "random_split_indices",
    "register_job",
    "save_checkpoint",
    "seed_everything",
    "shutdown_distributed",
]
