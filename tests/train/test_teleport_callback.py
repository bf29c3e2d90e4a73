"""Teleportation inside the trainer: ``on_batch_start``, ``TeleportCallback``, ``--teleport``."""

from __future__ import annotations

import csv
import json
import os
import socket
from dataclasses import replace

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn
from torch_geometric.nn import GCNConv, global_add_pool

from symgraph.cli import main
from symgraph.teleport import NoSymmetryError
from symgraph.train import Callback, RegressionTask, TrainConfig, Trainer
from symgraph.train.distributed import init_distributed, shutdown_distributed
from symgraph.train.jobs import JOBS, Job, get_job
from symgraph.train.loader import random_batch
from symgraph.train.teleport_callback import TELEPORT_COLUMNS, TeleportCallback
from symgraph.train.toy import ToyGCN, ToyGraphs

TOY = ["--num-graphs", "40", "--hidden", "8", "--batch-size", "8", "--no-progress"]


class Crash(Exception):
    """The simulated kill."""


class CrashAt(Callback):
    """Raises after step ``step``; ``seen`` lists the steps this process trained."""

    def __init__(self, step: int) -> None:
        self.step = step
        self.seen: list[int] = []

    def on_step_end(self, trainer, step):
        self.seen.append(step)
        if step == self.step:
            raise Crash(f"killed after step {step}")


class SeeBatches(Callback):
    """Records what ``on_batch_start`` and ``on_step_end`` see."""

    def __init__(self) -> None:
        self.starts: list[tuple[int, int, bool]] = []
        self.ends: list[int] = []

    def on_batch_start(self, trainer, step, batch):
        self.starts.append((step, batch.num_graphs, trainer.model.training))

    def on_step_end(self, trainer, step):
        self.ends.append(step)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def read_rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def without(rows, key):
    return [{k: v for k, v in row.items() if k != key} for row in rows]


def make_trainer(
    splits,
    run_dir,
    *,
    callbacks=(),
    resume=False,
    dist=None,
    state="transform",
    samples=None,
    **teleport_options,
):
    """3 epochs of 5 steps (32 items, batch 7) with Adam; teleports every 2 steps."""
    torch.manual_seed(123)
    train, val, test = splits
    model = ToyGCN(4, 8)
    teleport = TeleportCallback(
        model,
        "every:2",
        steps=3,
        lr=0.1,
        optimizer_state=state,
        samples=samples,
        **teleport_options,
    )
    return Trainer(
        model,
        RegressionTask.from_dataset(train, unit_name="a.u."),
        train,
        val,
        test,
        run_dir,
        TrainConfig(epochs=3, batch_size=7, lr=1e-2, seed=3, checkpoint_every=1, progress=False),
        callbacks=[*callbacks, teleport],
        dist=dist,
        resume=resume,
    )


def assert_resumes_exactly(splits, run_dir, straight, rows, **options) -> None:
    """A run killed after step 5 and resumed trains only steps 5-15 and ends with the
    uninterrupted run's weights and teleport rows (``rows``, of ``straight``)."""
    with pytest.raises(Crash):
        make_trainer(splits, run_dir, callbacks=[CrashAt(5)], **options).fit()
    resumed = make_trainer(splits, run_dir, callbacks=[CrashAt(-1)], resume=True, **options)
    resumed.fit()
    assert resumed.callbacks[0].seen == list(range(5, 16))
    for (name, a), b in zip(
        straight.model.state_dict().items(), resumed.model.state_dict().values()
    ):
        assert torch.equal(a, b), name
    assert without(read_rows(run_dir / "teleports.csv"), "seconds") == without(rows, "seconds")


@pytest.fixture(scope="module")
def straight_run(toy_splits, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("straight")
    seen = SeeBatches()
    trainer = make_trainer(toy_splits, run_dir, callbacks=[seen])
    trainer.fit()
    return trainer, run_dir, seen


def test_on_batch_start_sees_each_step_before_it_is_taken(straight_run):
    _, _, seen = straight_run
    assert [step for step, _, _ in seen.starts] == seen.ends == list(range(1, 16))
    assert [n for _, n, _ in seen.starts[:5]] == [7, 7, 7, 7, 4]
    assert all(training for _, _, training in seen.starts)


def test_teleports_are_recorded_and_keep_the_loss(straight_run):
    trainer, run_dir, _ = straight_run
    rows = read_rows(run_dir / "teleports.csv")
    assert list(rows[0]) == list(TELEPORT_COLUMNS)
    assert [int(r["step"]) for r in rows] == [2, 4, 6, 8, 10, 12, 14]
    assert [int(r["epoch"]) for r in rows] == [1, 1, 2, 2, 3, 3, 3]
    for row in rows:
        assert row["refused"] == "False" and row["moved"] == "True"
        before, after = float(row["loss_before"]), float(row["loss_after"])
        assert after == pytest.approx(before, rel=1e-4, abs=1e-6)
        assert float(row["loss_change"]) == pytest.approx(after - before, abs=1e-12)
        assert float(row["grad_norm_after"]) > float(row["grad_norm_before"])
    assert trainer.callbacks[-1].records[-1]["step"] == 14


def test_resumed_teleport_run_equals_an_uninterrupted_one(straight_run, toy_splits, tmp_path):
    trainer, straight_dir, _ = straight_run
    # killed after step 5, before its checkpoint: the teleport before step 5 is done again
    with pytest.raises(Crash):
        make_trainer(toy_splits, tmp_path, callbacks=[CrashAt(5)]).fit()
    assert [int(r["step"]) for r in read_rows(tmp_path / "teleports.csv")] == [2, 4]
    resumed = make_trainer(toy_splits, tmp_path, callbacks=[CrashAt(-1)], resume=True)
    resumed.fit()
    assert resumed.callbacks[0].seen == list(range(5, 16))  # from the step-4 checkpoint
    for (name, a), b in zip(
        trainer.model.state_dict().items(), resumed.model.state_dict().values()
    ):
        assert torch.equal(a, b), name
    for p, q in zip(trainer.model.parameters(), resumed.model.parameters()):
        for key, value in trainer.optimizer.state[p].items():
            assert torch.equal(value, resumed.optimizer.state[q][key]), key
    for name in ("teleports.csv", "metrics.csv"):
        key = "seconds" if name == "teleports.csv" else "wall_time"
        assert without(read_rows(tmp_path / name), key) == without(
            read_rows(straight_dir / name), key
        )


def test_teleports_on_its_own_samples_and_resumes_exactly(toy_splits, tmp_path, monkeypatch):
    sizes = []

    def spy(dataset, size, generator):
        batch = random_batch(dataset, size, generator)
        sizes.append(batch.num_graphs)
        return batch

    monkeypatch.setattr("symgraph.train.teleport_callback.random_batch", spy)
    straight = make_trainer(toy_splits, tmp_path / "straight", samples=20)
    straight.fit()
    assert sizes == [20] * 7  # every teleport on 20 of the 32 training graphs
    rows = read_rows(tmp_path / "straight" / "teleports.csv")
    assert all(r["refused"] == "False" and r["moved"] == "True" for r in rows)
    # the draws depend on the seed and the step only: a resumed run teleports identically
    assert_resumes_exactly(toy_splits, tmp_path / "b", straight, rows, samples=20)
    # and on other batches than the coming ones: other teleports than the default run's
    default = make_trainer(toy_splits, tmp_path / "default")
    default.fit()
    other = read_rows(tmp_path / "default" / "teleports.csv")
    assert [r["grad_norm_before"] for r in other] != [r["grad_norm_before"] for r in rows]


def test_least_steep_point_from_the_optimizers_mean_resumes_exactly(toy_splits, tmp_path):
    options = dict(objective="min_grad_norm", gradient="optimizer")
    straight = make_trainer(toy_splits, tmp_path / "straight", **options)
    straight.fit()
    rows = read_rows(tmp_path / "straight" / "teleports.csv")
    assert len(rows) == 7 and all(r["refused"] == "False" and r["moved"] == "True" for r in rows)
    assert all(float(r["grad_norm_after"]) < float(r["grad_norm_before"]) for r in rows)
    # Adam's exp_avg is checkpointed: a resumed run teleports exactly as an uninterrupted one
    assert_resumes_exactly(toy_splits, tmp_path / "b", straight, rows, **options)
    # the batch's own gradient gives other teleports
    batch = make_trainer(toy_splits, tmp_path / "batch", objective="min_grad_norm")
    batch.fit()
    other = read_rows(tmp_path / "batch" / "teleports.csv")
    assert [r["grad_norm_after"] for r in other] != [r["grad_norm_after"] for r in rows]


def test_resume_with_another_schedule_is_refused(straight_run, toy_splits):
    _, run_dir, _ = straight_run
    trainer = make_trainer(toy_splits, run_dir, callbacks=[CrashAt(-1)], resume=True)
    trainer.callbacks[-1] = TeleportCallback(trainer.model, "every:3")
    with pytest.raises(ValueError, match="--teleport.*'every:2'"):
        trainer.fit()


def test_callback_validates_its_arguments():
    model = ToyGCN(4, 8)
    with pytest.raises(ValueError, match="schedule"):
        TeleportCallback(model, "every:0")
    with pytest.raises(ValueError, match="steps: expected a non-negative integer, got -1"):
        TeleportCallback(model, steps=-1)
    with pytest.raises(ValueError, match="lr: expected a positive finite number, got nan"):
        TeleportCallback(model, lr=float("nan"))
    with pytest.raises(ValueError, match="optimizer_state"):
        TeleportCallback(model, optimizer_state="drop")
    with pytest.raises(ValueError, match="objective: expected one of .*got 'descent'"):
        TeleportCallback(model, objective="descent")
    with pytest.raises(ValueError, match="samples: expected a positive integer or None, got 0"):
        TeleportCallback(model, samples=0)
    with pytest.raises(ValueError, match="gradient: 'optimizer' is used only with"):
        TeleportCallback(model, gradient="optimizer")
    linear = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 1))
    with pytest.raises(ValueError, match="min_grad_norm.*exact diagonal.*LinearGLSymmetry"):
        TeleportCallback(linear, kinds=("linear",), objective="min_grad_norm")
    with pytest.raises(NoSymmetryError, match="searched"):
        TeleportCallback(nn.Linear(3, 1))


def test_cli_teleport_runs_and_records(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "toy", "--epochs", "2", *TOY]
    assert main([*argv, "--out", str(out), "--teleport", "every:2", "--teleport-steps", "2"]) == 0
    result = json.loads(capsys.readouterr().out)
    rows = read_rows(out / "teleports.csv")
    assert [int(r["step"]) for r in rows] == [2, 4, 6]  # 4 steps per epoch
    assert all(r["refused"] == "False" for r in rows)
    config = json.loads((out / "config.json").read_text())["args"]
    assert config["teleport"] == "every:2" and config["teleport_steps"] == 2
    assert config["teleport_kinds"] == ["rescale", "norm", "gated"]
    # the teleported run trains the same model to a comparable loss
    assert main([*argv, "--out", str(tmp_path / "plain")]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert result["metrics"]["loss"] == pytest.approx(plain["metrics"]["loss"], rel=0.2)
    assert not (tmp_path / "plain" / "teleports.csv").exists()


def test_cli_teleports_to_the_least_steep_point(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "toy", "--epochs", "1", *TOY, "--teleport", "every:1"]
    flags = ["--teleport-objective", "min_grad_norm", "--teleport-steps", "20"]
    assert main([*argv, *flags, "--out", str(out), "--teleport-samples", "24"]) == 0
    rows = read_rows(out / "teleports.csv")
    assert len(rows) == 3 and all(r["refused"] == "False" for r in rows)
    assert all(float(r["grad_norm_after"]) < float(r["grad_norm_before"]) for r in rows)
    assert abs(float(rows[0]["loss_change"])) < 1e-4
    args = json.loads((out / "config.json").read_text())["args"]
    assert args["teleport_objective"] == "min_grad_norm" and args["teleport_samples"] == 24
    free = tmp_path / "free"
    assert main([*argv, *flags, "--out", str(free), "--teleport-gradient", "optimizer"]) == 0
    rows = read_rows(free / "teleports.csv")
    assert len(rows) == 3 and all(r["refused"] == "False" for r in rows)
    assert json.loads((free / "config.json").read_text())["args"]["teleport_gradient"] == (
        "optimizer"
    )


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--teleport", "every:x"], "argument --teleport: schedule: expected 'every:K'"),
        (["--teleport", "sometimes"], "argument --teleport: schedule"),
        (["--teleport-steps", "-1"], "argument --teleport-steps: expected a non-negative"),
        (["--teleport-lr", "0"], "argument --teleport-lr: expected a positive"),
        (["--teleport-kinds", "rescale,bogus"], "argument --teleport-kinds: expected comma"),
        (["--teleport-kinds", ","], "argument --teleport-kinds: expected comma"),
        (["--teleport-objective", "descent"], "argument --teleport-objective: invalid choice"),
        (["--teleport-samples", "0"], "argument --teleport-samples: expected a positive"),
        (["--teleport-gradient", "adam"], "argument --teleport-gradient: invalid choice"),
    ],
)
def test_cli_rejects_bad_teleport_flags(tmp_path, capsys, flags, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "toy", "--out", str(tmp_path / "run"), *TOY, *flags])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "flags, message",
    [
        (
            ["--teleport-gradient", "optimizer"],
            "--teleport: gradient: 'optimizer' is used only with objective='min_grad_norm'",
        ),
        (
            ["--teleport-objective", "min_grad_norm", "--teleport-kinds", "rescale,linear"],
            "--teleport: symmetries: objective='min_grad_norm' needs exact diagonal actions",
        ),
        (
            "--teleport-objective min_grad_norm --teleport-gradient optimizer --teleport-kinds "
            "rescale --teleport at:0,3".split(),
            "--teleport: schedule: 'at:0,3' teleports before the first optimiser step",
        ),
    ],
)
def test_cli_refuses_teleport_settings_the_callback_refuses(
    tmp_path, capsys, monkeypatch, flags, message
):
    """Settings refused together, or for this model (a linear chain: GL(8) is not diagonal),
    are a usage error (exit 2, no run folder), as a model without symmetry is, not a
    traceback; the callback refuses them before training."""
    toy = get_job("toy")
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.Linear(8, 1))
    job = Job("chain", lambda args: replace(toy(args), model=model), toy.arguments)
    monkeypatch.setitem(JOBS, "chain", job)
    out = tmp_path / "run"
    argv = ["train", "chain", "--out", str(out), *TOY, "--teleport", "every:2", *flags]
    assert main(argv) == 2
    assert f"symgraph: error: {message}" in capsys.readouterr().err
    assert not out.exists()


def test_cli_refuses_teleport_flags_without_teleport(tmp_path, capsys):
    """Without --teleport nothing reads the --teleport-* flags: the run trained without
    teleporting while its config.json recorded the search settings; now a usage error."""
    out = tmp_path / "run"
    flags = ["--teleport-objective", "min_grad_norm", "--teleport-samples", "24"]
    assert main(["train", "toy", "--out", str(out), *TOY, *flags]) == 2
    assert (
        "symgraph: error: --teleport-objective, --teleport-samples: read with --teleport only"
    ) in capsys.readouterr().err
    assert not out.exists()
    # their default values, written out, are what a run without --teleport has anyway
    defaults = ["--teleport-steps", "10", "--teleport-kinds", "rescale,norm,gated"]
    assert main(["train", "toy", "--out", str(out), *TOY, "--epochs", "1", *defaults]) == 0
    # a run folder made before the refusal, with such a flag, still resumes with its settings
    config = json.loads((out / "config.json").read_text())
    config["args"]["teleport_steps"] = 3
    (out / "config.json").write_text(json.dumps(config))
    older = ["--epochs", "2", "--teleport-steps", "3", "--resume"]
    assert main(["train", "toy", "--out", str(out), *TOY, *older]) == 0


def test_a_resume_that_starts_the_run_refuses_teleport_flags_without_teleport(tmp_path, capsys):
    """``--resume`` with no run in ``--out`` starts one: its flags are checked as a new run's."""
    out = tmp_path / "run"
    argv = ["train", "toy", "--out", str(out), *TOY, "--teleport-samples", "24", "--resume"]
    assert main(argv) == 2
    assert (
        "symgraph: error: --teleport-samples: read with --teleport only"
    ) in capsys.readouterr().err
    assert not out.exists()


class PlainGCN(nn.Module):
    """One convolution and a sum: no symmetry that detection can see."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = GCNConv(4, 1)

    def forward(self, data):
        return global_add_pool(self.conv(data.x, data.edge_index), data.batch).squeeze(-1)


def test_cli_refuses_a_model_without_symmetry_before_training(tmp_path, capsys, monkeypatch):
    toy = get_job("toy")
    job = Job("plain-gcn", lambda args: replace(toy(args), model=PlainGCN()), toy.arguments)
    monkeypatch.setitem(JOBS, "plain-gcn", job)
    out = tmp_path / "run"
    assert main(["train", "plain-gcn", "--out", str(out), *TOY, "--teleport", "every:2"]) == 2
    err = capsys.readouterr().err
    assert "--teleport: model: no parameter-space symmetry found in PlainGCN" in err
    assert not out.exists()


def _ddp_worker(rank: int, world_size: int, port: int, out, state: str) -> None:
    torch.set_num_threads(1)  # a forked child must not reuse the parent's OpenMP pool
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world_size),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    dist = init_distributed("cpu")
    try:
        dataset = ToyGraphs(44, seed=1)
        splits = dataset[:32], dataset[32:38], dataset[38:]
        trainer = make_trainer(splits, out / "run", dist=dist, state=state)
        trainer.fit()
        optimizer = {n: trainer.optimizer.state[p] for n, p in trainer.model.named_parameters()}
        probe = torch.full((2,), float(rank + 1))  # every rank gets rank 0's tensor and object
        dist.broadcast_tensors([probe])
        torch.save(
            {
                "model": trainer.model.state_dict(),
                "optimizer": optimizer,
                "records": trainer.callbacks[-1].records,
                "probe": probe,
                "object": dist.broadcast_object(rank),
            },
            out / f"rank{rank}.pt",
        )
    finally:
        shutdown_distributed(dist)


@pytest.mark.parametrize("state", ["transform", "reset"])
def test_two_processes_teleport_identically(tmp_path, state):
    # fork: the children inherit the imported modules, so the test takes seconds
    mp.start_processes(
        _ddp_worker, args=(2, free_port(), tmp_path, state), nprocs=2, start_method="fork"
    )
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert [r["step"] for r in rank0["records"]] == [2, 4, 6, 8, 10, 12, 14]
    assert rank0["records"] == rank1["records"]
    assert all(r["moved"] for r in rank0["records"])
    for name, value in rank0["model"].items():
        assert torch.equal(value, rank1["model"][name]), name
    for name, entries in rank0["optimizer"].items():
        for key, value in entries.items():
            assert torch.equal(value, rank1["optimizer"][name][key]), (name, key)
    assert len(read_rows(tmp_path / "run" / "teleports.csv")) == 7
    for rank in (rank0, rank1):
        assert rank["probe"].tolist() == [1.0, 1.0] and rank["object"] == 0


def test_sample_batches_depend_on_the_seed_and_the_step(toy_splits):
    """``samples=N``: each teleport draws its own samples, a function of the run's seed and
    the step (the same step draws the same graphs, another step or seed other graphs)."""
    from types import SimpleNamespace

    train = toy_splits[0]
    callback = TeleportCallback(ToyGCN(4, 8), "every:2", samples=5)

    def trainer(seed):
        dist = SimpleNamespace(device=torch.device("cpu"))
        return SimpleNamespace(
            config=SimpleNamespace(seed=seed), datasets={"train": train}, dist=dist
        )

    def drawn(seed, taken):
        return callback._random_batch(trainer(seed), taken).y.tolist()

    assert drawn(3, 2) == drawn(3, 2)
    assert drawn(3, 2) != drawn(3, 4) and drawn(3, 2) != drawn(4, 2)


def test_epoch_end_logs_that_epochs_teleports(tmp_path, caplog):
    """``on_epoch_end`` rewrites ``teleports.csv`` and logs the teleports of the epoch that
    ended (1-based in the records), with the mean ratio of the gradient norms."""
    import logging
    from types import SimpleNamespace

    callback = TeleportCallback(ToyGCN(4, 8), "every:2")
    row = dict.fromkeys(TELEPORT_COLUMNS, 0.0)
    callback.records = [
        {**row, "epoch": 1, "refused": False, "seconds": 0.5, "grad_norm_before": 1.0,
         "grad_norm_after": 2.0},
        {**row, "epoch": 1, "refused": True, "seconds": 0.25, "grad_norm_before": 2.0,
         "grad_norm_after": 2.0},
        {**row, "epoch": 2, "refused": False, "seconds": 9.0, "grad_norm_before": 1.0,
         "grad_norm_after": 9.0},
    ]  # fmt: skip
    trainer = SimpleNamespace(
        dist=SimpleNamespace(is_main=True), path=lambda name: tmp_path / f"{name}.csv"
    )
    with caplog.at_level(logging.INFO, logger="symgraph.train"):
        callback.on_epoch_end(trainer, 0)
    messages = [r.getMessage() for r in caplog.records if r.name == "symgraph.train"]
    assert messages == ["epoch 1: 2 teleports (1 refused), 0.75 s, grad norm x1.5 on average"]
    assert len(read_rows(tmp_path / "teleports.csv")) == 3
