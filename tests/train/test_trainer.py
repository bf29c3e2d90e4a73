"""The training loop: run-folder files, exact resume after a crash, hooks, errors."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from symgraph.train import Callback, ClassificationTask, RegressionTask, TrainConfig, Trainer
from symgraph.train.checkpoint import load_checkpoint, save_checkpoint
from symgraph.train.toy import ToyGCN


class Crash(Exception):
    """The simulated kill."""


class CrashAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, trainer, step):
        if step == self.step:
            raise Crash(f"killed after step {step}")


class CountSteps(Callback):
    """A callback with state (``count``), which must survive a resume; ``seen`` (not saved)
    lists the steps this process trained."""

    def __init__(self) -> None:
        self.count = 0
        self.seen: list[int] = []

    def on_step_end(self, trainer, step):
        self.count += 1
        self.seen.append(step)

    def state_dict(self):
        return {"count": self.count}

    def load_state_dict(self, state):
        self.count = state["count"]


def noisy_penalty(model, batch):
    """An extra loss drawing from the global torch RNG: exact resume needs its state."""
    weight = 1e-3 * torch.randn(())
    return weight * sum(p.square().sum() for p in model.parameters())


def toy_trainer(splits, run_dir, config: TrainConfig, unit_name: str = "", **options) -> Trainer:
    """A ToyGCN trainer on ``splits``, its target statistics from the training split."""
    train, val, test = splits
    task = RegressionTask.from_dataset(train, unit_name=unit_name)
    return Trainer(ToyGCN(4, 8), task, train, val, test, run_dir, config, **options)


def make_trainer(splits, run_dir, *, callbacks=(), resume=False, every=1, epochs=3):
    torch.manual_seed(123)
    config = TrainConfig(epochs=epochs, batch_size=7, seed=3, checkpoint_every=every,
                         progress=False)  # fmt: skip
    return toy_trainer(splits, run_dir, config, "a.u.", callbacks=callbacks,
                       extra_losses=[noisy_penalty], resume=resume)  # fmt: skip


def read_rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def without_time(rows):
    return [{k: v for k, v in row.items() if k != "wall_time"} for row in rows]


@pytest.fixture(scope="module")
def straight_run(toy_splits, tmp_path_factory):
    """An uninterrupted 3-epoch run (5 steps per epoch)."""
    run_dir = tmp_path_factory.mktemp("straight")
    counter = CountSteps()
    trainer = make_trainer(toy_splits, run_dir, callbacks=[counter])
    test_metrics = trainer.fit()
    return trainer, run_dir, test_metrics, counter


def test_run_folder_files(straight_run, toy_splits):
    trainer, run_dir, test_metrics, counter = straight_run
    names = {p.name for p in run_dir.iterdir()}
    assert names == {
        "config.json",
        "split.json",
        "checkpoint.pt",
        "best.pt",
        "metrics.csv",
        "curve.png",
        "test.json",
    }
    rows = read_rows(run_dir / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert [int(r["step"]) for r in rows] == [5, 10, 15]
    assert set(rows[0]) == {"epoch", "step", "train_loss", "val_loss", "val_mae", "lr", "wall_time"}
    assert (run_dir / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    split = json.loads((run_dir / "split.json").read_text())
    assert split == {
        name: list(ds.indices()) for name, ds in zip(["train", "val", "test"], toy_splits)
    }
    record = json.loads((run_dir / "test.json").read_text())
    assert record["metrics"] == pytest.approx(test_metrics)
    assert record["units"]["mae"] == "a.u."
    best_epoch = min(rows, key=lambda r: float(r["val_mae"]))["epoch"]
    assert record["best_epoch"] == int(best_epoch)
    config = json.loads((run_dir / "config.json").read_text())
    assert config["train"]["batch_size"] == 7 and config["model"] == "ToyGCN"
    assert counter.count == 15
    assert not any(p.name.startswith(".") for p in run_dir.iterdir())


@pytest.mark.parametrize("every", [1, 0])
def test_crash_mid_epoch_then_resume_is_exact(straight_run, toy_splits, tmp_path, every):
    trainer, straight_dir, test_metrics, _ = straight_run
    with pytest.raises(Crash):
        make_trainer(toy_splits, tmp_path, callbacks=[CrashAt(8), CountSteps()], every=every).fit()
    saved = load_checkpoint(tmp_path / "checkpoint.pt")
    # with K = 1 only the step in flight is lost; with K = 0 the epoch restarts
    assert saved["global_step"] == (7 if every else 5)
    counter = CountSteps()
    resumed = make_trainer(
        toy_splits, tmp_path, callbacks=[CrashAt(-1), counter], every=every, resume=True
    )
    assert resumed.fit() == pytest.approx(test_metrics, rel=0, abs=0)
    for (name, a), b in zip(
        trainer.model.state_dict().items(), resumed.model.state_dict().values()
    ):
        assert torch.equal(a, b), name
    assert counter.count == 15  # the callback's own state resumed too
    # it continued from the checkpoint instead of training again from the start
    assert counter.seen == list(range(saved["global_step"] + 1, 16))
    assert without_time(read_rows(tmp_path / "metrics.csv")) == without_time(
        read_rows(straight_dir / "metrics.csv")
    )
    times = [float(r["wall_time"]) for r in read_rows(tmp_path / "metrics.csv")]
    assert times == sorted(times) and times[0] > 0  # the clock continues across the resume
    assert load_checkpoint(tmp_path / "checkpoint.pt")["elapsed"] >= times[-1]


def test_resume_at_an_epoch_boundary_may_change_the_batches(toy_splits, tmp_path):
    first = make_trainer(toy_splits, tmp_path, epochs=1)
    first.fit()
    resumed = make_trainer(toy_splits, tmp_path, resume=True, epochs=2)
    resumed.config.batch_size, resumed.config.drop_last = 5, True
    resumed.fit()
    assert resumed.global_step == 5 + 32 // 5


def test_checkpoint_keeps_the_best_epoch(toy_splits, tmp_path, monkeypatch):
    """The best epoch, not the last, is what a resumed run must compare against."""
    from symgraph.train import loop

    trainer = make_trainer(toy_splits, tmp_path, epochs=3)
    monitor = [0.5, 0.1, 0.9]  # the best validation at epoch 2 (then the test set: 1.0)
    monkeypatch.setattr(
        loop, "evaluate", lambda *a, **k: {"loss": 1.0, "mae": monitor.pop(0) if monitor else 1.0}
    )
    trainer.fit()
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["best_epoch"] == 2 and state["best_metric"] == 0.1


@pytest.mark.parametrize("change", [{"batch_size": 5}, {"drop_last": True}])
def test_mid_epoch_resume_refuses_other_batches(toy_splits, tmp_path, change):
    with pytest.raises(Crash):
        make_trainer(toy_splits, tmp_path, callbacks=[CrashAt(8), CountSteps()]).fit()
    resumed = make_trainer(toy_splits, tmp_path, callbacks=[CountSteps()], resume=True)
    for key, value in change.items():
        setattr(resumed.config, key, value)
    with pytest.raises(ValueError, match=f"mid-epoch with {next(iter(change))}"):
        resumed.fit()


def test_existing_run_needs_resume_and_finished_run_only_retests(straight_run, toy_splits):
    _, run_dir, test_metrics, _ = straight_run
    with pytest.raises(FileExistsError, match="resume"):
        make_trainer(toy_splits, run_dir).fit()
    counter = CountSteps()
    again = make_trainer(toy_splits, run_dir, callbacks=[counter], resume=True)
    assert again.fit() == pytest.approx(test_metrics)
    assert again.global_step == 15 and counter.seen == []  # nothing trained again


def test_resume_rejects_other_split_or_seed(straight_run, toy_splits):
    _, run_dir, _, _ = straight_run
    train, val, test = toy_splits
    with pytest.raises(ValueError, match="split differs"):
        make_trainer((train[1:], val, test), run_dir, callbacks=[CountSteps()], resume=True).fit()
    other_seed = make_trainer(toy_splits, run_dir, callbacks=[CountSteps()], resume=True)
    other_seed.config.seed = 4
    with pytest.raises(ValueError, match="seed 3"):
        other_seed.fit()


def rate_trainer(splits, run_dir, *, lr, weight_decay=0.0, scheduler="cosine", resume=False):
    torch.manual_seed(123)
    factories = {
        "cosine": lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=3),
        "step": lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5),
        None: None,
    }
    config = TrainConfig(epochs=3, batch_size=7, seed=3, lr=lr, weight_decay=weight_decay,
                         progress=False)  # fmt: skip
    return toy_trainer(splits, run_dir, config, scheduler=factories[scheduler], resume=resume)


def test_resume_takes_new_rates_and_keeps_the_schedule(toy_splits, tmp_path):
    """--lr and --weight-decay may change on resume: the optimiser gets them (its
    load_state_dict brings back the saved ones), and the schedule goes on at the new scale."""
    fresh = rate_trainer(toy_splits, tmp_path / "fresh", lr=2e-2)
    fresh.fit()
    first = rate_trainer(toy_splits, tmp_path / "run", lr=1e-2)
    first.config.epochs = 1  # stop after one epoch (T_max stays 3)
    first.fit()
    after_one_epoch = load_checkpoint(tmp_path / "run/checkpoint.pt")
    resumed = rate_trainer(toy_splits, tmp_path / "run", lr=2e-2, weight_decay=0.1, resume=True)
    resumed.fit()
    assert resumed.optimizer.param_groups[0]["weight_decay"] == 0.1
    assert resumed.scheduler.base_lrs == [2e-2]
    rows, fresh_rows = (
        read_rows(tmp_path / "run/metrics.csv"),
        read_rows(tmp_path / "fresh/metrics.csv"),
    )
    assert float(rows[0]["lr"]) == pytest.approx(float(fresh_rows[0]["lr"]) / 2)
    for row, fresh_row in zip(rows[1:], fresh_rows[1:]):  # after the resume: the new scale
        assert float(row["lr"]) == pytest.approx(float(fresh_row["lr"]), rel=1e-12)
    assert resumed.optimizer.param_groups[0]["lr"] == pytest.approx(
        fresh.optimizer.param_groups[0]["lr"], rel=1e-12, abs=1e-15
    )
    # right after the restore, before any step: the scheduler reports the new scale
    again = rate_trainer(toy_splits, tmp_path / "run", lr=4e-2, resume=True)
    again._restore(after_one_epoch)
    group = again.optimizer.param_groups[0]
    assert group["initial_lr"] == 4e-2 and group["lr"] > 0
    assert again.scheduler.get_last_lr() == [group["lr"]]


@pytest.mark.parametrize("before, after", [("cosine", None), (None, "step"), ("step", "cosine")])
def test_resume_refuses_another_kind_of_scheduler(toy_splits, tmp_path, before, after):
    first = rate_trainer(toy_splits, tmp_path, lr=1e-2, scheduler=before)
    first.config.epochs = 1
    first.fit()
    with pytest.raises(ValueError, match="scheduler"):
        rate_trainer(toy_splits, tmp_path, lr=1e-2, scheduler=after, resume=True).fit()


class CrashAtEpochEnd(Callback):
    """Killed after the epoch's last step was checkpointed, before its end-of-epoch save."""

    def on_epoch_end(self, trainer, epoch):
        raise Crash(f"killed at the end of epoch {epoch + 1}")


class RecordRates(Callback):
    def __init__(self) -> None:
        self.rates: list[float] = []

    def on_batch_start(self, trainer, step, batch):
        self.rates.append(trainer.optimizer.param_groups[0]["lr"])


def per_step_trainer(splits, run_dir, callbacks, resume=False, batch_size=7, schedule=None):
    """Two epochs under a per-step scheduler (default: the rate halves every step)."""
    schedule = schedule or (lambda opt: torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5))
    config = TrainConfig(epochs=2, batch_size=batch_size, lr=1e-2, checkpoint_every=1,
                         progress=False, scheduler_interval="step")  # fmt: skip
    return toy_trainer(splits, run_dir, config, scheduler=schedule, callbacks=callbacks,
                       resume=resume)  # fmt: skip


def test_per_step_schedule_records_the_rate_the_epoch_trained_with(toy_splits, tmp_path):
    """With scheduler_interval="step", metrics.csv's lr is the rate of the epoch's last step,
    not the one the scheduler moved on to for the next epoch; also after a resume."""

    def per_step(run_dir, callbacks, resume=False):
        return per_step_trainer(toy_splits, run_dir, callbacks, resume)

    recorder = RecordRates()
    per_step(tmp_path / "straight", [recorder]).fit()
    rates = [float(r["lr"]) for r in read_rows(tmp_path / "straight/metrics.csv")]
    assert rates == [recorder.rates[4], recorder.rates[9]] == [1e-2 / 2**4, 1e-2 / 2**9]
    with pytest.raises(Crash):
        per_step(tmp_path / "crashed", [CrashAtEpochEnd()]).fit()
    per_step(tmp_path / "crashed", [Callback()], resume=True).fit()
    assert [float(r["lr"]) for r in read_rows(tmp_path / "crashed/metrics.csv")] == rates


def test_a_last_step_at_rate_zero_is_recorded_as_zero(toy_splits, tmp_path):
    """A warmup from 0 over one-step epochs: the first epoch trained at rate 0, which is what
    metrics.csv says (not the next epoch's rate)."""
    warmup = lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lambda step: float(step))  # noqa: E731
    recorder = RecordRates()
    per_step_trainer(toy_splits, tmp_path, [recorder], batch_size=32, schedule=warmup).fit()
    assert recorder.rates == [0.0, 1e-2]
    assert [float(r["lr"]) for r in read_rows(tmp_path / "metrics.csv")] == [0.0, 1e-2]


def test_a_checkpoint_without_step_lr_resumes(toy_splits, tmp_path):
    """A checkpoint written before ``step_lr`` was kept resumes; the epoch it ended in then
    reports the optimiser's rate, as metrics.csv did before."""
    with pytest.raises(Crash):
        per_step_trainer(toy_splits, tmp_path, [CrashAtEpochEnd()]).fit()
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    del state["step_lr"]
    save_checkpoint(tmp_path / "checkpoint.pt", state)
    resumed = per_step_trainer(toy_splits, tmp_path, [Callback()], resume=True)
    resumed.fit()
    rates = [float(r["lr"]) for r in read_rows(tmp_path / "metrics.csv")]
    assert rates == [1e-2 / 2**5, 1e-2 / 2**9]  # 5 steps an epoch: the rate after the 5th


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 2))

    def forward(self, x):
        return self.net(x)


def test_plain_tensor_classification(tmp_path):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(96, 2, generator=generator)
    data = TensorDataset(x, (x[:, 0] * x[:, 1] > 0).long())
    trainer = Trainer(
        MLP(),
        ClassificationTask(),
        torch.utils.data.Subset(data, range(64)),
        torch.utils.data.Subset(data, range(64, 80)),
        torch.utils.data.Subset(data, range(80, 96)),
        tmp_path,
        TrainConfig(epochs=2, batch_size=16, lr=1e-2, progress=False, grad_clip=1.0),
        scheduler=lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5),
    )
    assert trainer.optimizer.defaults["fused"]  # the default Adam: one fused step on CPU
    metrics = trainer.fit()
    best = MLP()  # the test accuracy, recomputed by hand from best.pt, which it reports on
    best.load_state_dict(load_checkpoint(tmp_path / "best.pt")["model"])
    with torch.no_grad():
        hits = best(x[80:]).argmax(-1) == data.tensors[1][80:]
    assert metrics["accuracy"] == pytest.approx(float(hits.float().mean()))
    rows = read_rows(tmp_path / "metrics.csv")
    assert [float(r["lr"]) for r in rows] == [1e-2, 5e-3]
    assert json.loads((tmp_path / "split.json").read_text())["test"] == list(range(80, 96))


def test_non_finite_loss_raises(toy_splits, tmp_path):
    trainer = make_trainer(toy_splits, tmp_path)
    trainer.extra_losses = [lambda model, batch: torch.tensor(float("nan"))]
    with pytest.raises(FloatingPointError, match="epoch 1, step 1"):
        trainer.fit()


def test_config_validation():
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        TrainConfig(seed=True)
    with pytest.raises(ValueError, match="grad_clip"):
        TrainConfig(grad_clip=0.0)
    with pytest.raises(ValueError, match="eval_batch_size must be >= 1"):
        TrainConfig(eval_batch_size=0)
    for name, value in [("epochs", 1.5), ("batch_size", 4.7), ("checkpoint_every", 2.5),
                        ("num_workers", True), ("eval_batch_size", 8.0)]:  # fmt: skip
        with pytest.raises(TypeError, match=f"{name} must be an int, got {value!r}"):
            TrainConfig(**{name: value})
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="checkpoint_every"):
        TrainConfig(checkpoint_every=-1)
    with pytest.raises(ValueError, match="seed must be a non-negative integer.*got -1"):
        TrainConfig(seed=-1)
    with pytest.raises(ValueError, match="scheduler_interval"):
        TrainConfig(scheduler_interval="batch")


@pytest.mark.parametrize(
    "name, value",
    [("lr", float("inf")), ("lr", float("nan")), ("lr", 0.0), ("lr", -1e-3), ("lr", "1e-3"),
     ("weight_decay", float("inf")), ("weight_decay", -0.1), ("weight_decay", None)],
)  # fmt: skip
def test_config_refuses_rates_that_cannot_train(name, value):
    """Adam takes lr=inf or weight_decay=inf and the run fails with a NaN loss a step
    later, after its run folder is written; the config refuses them up front."""
    with pytest.raises(ValueError, match=f"TrainConfig: {name} must be a finite number"):
        TrainConfig(**{name: value})


def test_csv_records_keep_every_column_and_refuse_unknown_keys(tmp_path):
    """``write_metrics_csv``: the header is the union of the rows' keys in first-seen order
    (a metric that appears later still gets its column); ``write_csv`` refuses a row with a
    key outside its columns rather than dropping the value."""
    import csv

    from symgraph.train.records import write_csv, write_metrics_csv

    history = [{"epoch": 1, "train_loss": 0.5}, {"epoch": 2, "train_loss": 0.25, "val_mae": 3.0}]
    write_metrics_csv(history, tmp_path / "metrics.csv")
    lines = (tmp_path / "metrics.csv").read_text().splitlines()
    assert lines == ["epoch,train_loss,val_mae", "1,0.5,", "2,0.25,3.0"]
    with pytest.raises(ValueError):
        write_csv([{"step": 1, "extra": 2}], tmp_path / "t.csv", ["step"])
    with open(tmp_path / "metrics.csv", newline="") as handle:
        assert [row["val_mae"] for row in csv.DictReader(handle)] == ["", "3.0"]
