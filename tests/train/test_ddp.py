"""Data parallel: 2 CPU processes (gloo) train exactly as 1 process on the same global batch."""

from __future__ import annotations

import csv
import os
import shutil
import socket
import subprocess
import sys
from dataclasses import replace

import pytest
import torch
import torch.multiprocessing as mp

from symgraph.cli import main
from symgraph.train.checkpoint import load_checkpoint
from symgraph.train.jobs import JOBS, Job, get_job

# 40 graphs -> 32 train items; global batch 7 -> shards 4 + 3, and a last batch 4 -> 2 + 2
ARGS = [
    "train",
    "toy",
    "--num-graphs",
    "40",
    "--hidden",
    "8",
    "--epochs",
    "2",
    "--batch-size",
    "7",
    "--lr",
    "5e-3",
    "--no-progress",
    "--checkpoint-every",
    "3",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, argv: list[str]) -> None:
    torch.set_num_threads(1)  # a forked child must not reuse the parent's OpenMP pool
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world_size),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    assert main(argv) == 0


def assert_same_run(single_dir, ddp_dir):
    single = load_checkpoint(single_dir / "checkpoint.pt")
    ddp = load_checkpoint(ddp_dir / "checkpoint.pt")
    assert ddp["global_step"] == single["global_step"] == 10
    for name, value in single["model"].items():
        torch.testing.assert_close(ddp["model"][name], value, rtol=1e-5, atol=1e-6, msg=name)
    for a, b in zip(*(csv.DictReader(open(d / "metrics.csv")) for d in (single_dir, ddp_dir))):
        assert float(a["train_loss"]) == pytest.approx(float(b["train_loss"]), rel=1e-5)
        assert float(a["val_mae"]) == pytest.approx(float(b["val_mae"]), rel=1e-5)


@pytest.fixture(scope="module")
def single_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("single") / "run"
    assert main([*ARGS, "--out", str(out)]) == 0
    return out


def test_two_processes_match_one_process(single_run, tmp_path):
    out = tmp_path / "ddp"
    # fork: the children inherit the imported modules, so the test takes seconds
    mp.start_processes(
        _worker, args=(2, free_port(), [*ARGS, "--out", str(out)]), nprocs=2, start_method="fork"
    )
    assert_same_run(single_run, out)
    assert len(load_checkpoint(out / "checkpoint.pt")["rng"]) == 2  # one state per rank


def _mean_output_penalty(model, batch):
    """An extra loss that is a mean over the shard's items (like a Noether loss)."""
    return 0.5 * model(batch).square().mean()


def test_an_extra_loss_averaged_over_items_matches_one_process(tmp_path, monkeypatch):
    """Shards of 4 + 3 items: each rank's objective, extra loss included, is weighted by its
    share of the items, so a per-item mean comes out as on one process."""
    toy = get_job("toy")
    job = Job(
        "toy-extra",
        lambda args: replace(toy(args), extra_losses=[_mean_output_penalty]),
        toy.arguments,
    )
    monkeypatch.setitem(JOBS, "toy-extra", job)  # inherited by the forked processes
    argv = ["train", "toy-extra", *ARGS[2:]]
    assert main([*argv, "--out", str(tmp_path / "single")]) == 0
    mp.start_processes(
        _worker,
        args=(2, free_port(), [*argv, "--out", str(tmp_path / "ddp")]),
        nprocs=2,
        start_method="fork",
    )
    assert_same_run(tmp_path / "single", tmp_path / "ddp")


def test_fp16_with_an_empty_shard_trains(tmp_path):
    """Global batch 1 on 2 processes: one rank has no items at every step; its loss scaler
    must still step (it used to fail: 'Attempted step but _scale is None')."""
    argv = [*ARGS, "--batch-size", "1", "--epochs", "1", "--precision", "fp16"]
    mp.start_processes(
        _worker,
        args=(2, free_port(), [*argv, "--out", str(tmp_path / "ddp")]),
        nprocs=2,
        start_method="fork",
    )
    state = load_checkpoint(tmp_path / "ddp" / "checkpoint.pt")
    assert state["global_step"] == 32
    assert all(torch.isfinite(v).all() for v in state["model"].values())


@pytest.mark.slow
def test_torchrun_command_matches_one_process(single_run, tmp_path):
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    if torchrun is None:
        pytest.skip("torchrun is not installed beside the interpreter")
    out = tmp_path / "torchrun"
    command = [torchrun, "--standalone", "--nproc-per-node=2", "-m", "symgraph", *ARGS]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([*command, "--out", str(out)], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same_run(single_run, out)
