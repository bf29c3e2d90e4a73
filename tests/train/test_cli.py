"""The ``symgraph`` command: train the toy job, evaluate its run folder, usage errors."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from symgraph.cli import main
from symgraph.train.jobs import JOBS, JobSpec, get_job, register_job

TOY = ["--num-graphs", "40", "--hidden", "8", "--batch-size", "8", "--no-progress"]


def run(capsys, argv):
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_train_then_evaluate_reproduces_the_test_metric(tmp_path, capsys):
    out = tmp_path / "run"
    trained = run(capsys, ["train", "toy", "--epochs", "2", "--out", str(out), *TOY])
    recorded = json.loads((out / "test.json").read_text())
    assert recorded["metrics"] == trained["metrics"]
    assert trained["units"]["mae"] == "a.u."
    evaluated = run(capsys, ["evaluate", str(out)])
    assert evaluated["metrics"] == pytest.approx(recorded["metrics"], rel=1e-9)
    assert json.loads((out / "evaluation.json").read_text())["checkpoint"] == "best.pt"
    config = json.loads((out / "config.json").read_text())
    assert config["job"] == "toy" and config["args"]["num_graphs"] == 40


def test_rerun_needs_resume_and_resume_extends(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "toy", "--out", str(out), "--subset", "16", *TOY]
    run(capsys, [*args, "--epochs", "1"])
    assert main([*args, "--epochs", "1"]) == 2
    assert "--resume" in capsys.readouterr().err
    run(capsys, [*args, "--epochs", "2", "--resume"])
    rows = (out / "metrics.csv").read_text().splitlines()
    assert len(rows) == 3  # header + 2 epochs
    assert len(json.loads((out / "split.json").read_text())["train"]) == 16


def test_a_refused_resume_leaves_the_run_folder_as_it_was(tmp_path, capsys):
    """Resuming with another model size or without the teleport callback is refused with a
    usage error before config.json is rewritten: the finished run still evaluates."""
    out = tmp_path / "run"
    args = ["train", "toy", "--out", str(out), *TOY, "--epochs", "1"]
    run(capsys, [*args, "--teleport", "every:2"])
    config = (out / "config.json").read_text()
    wider = [a if a != "8" or i != TOY.index("--hidden") + 1 else "16" for i, a in enumerate(TOY)]
    resume = ["--epochs", "2", "--resume", "--teleport", "every:2"]
    assert main(["train", "toy", "--out", str(out), *wider, *resume]) == 2
    assert "was trained with --hidden 8 (now 16)" in capsys.readouterr().err
    assert main([*args[:-1], "2", "--resume"]) == 2
    assert "was trained with --teleport 'every:2' (now None)" in capsys.readouterr().err
    assert (out / "config.json").read_text() == config
    run(capsys, ["evaluate", str(out)])


def test_a_corrupt_checkpoint_is_a_usage_error_naming_the_file(tmp_path, capsys):
    """A truncated checkpoint.pt: --resume and evaluate --checkpoint last exit with 2."""
    out = tmp_path / "run"
    args = ["train", "toy", "--out", str(out), "--subset", "16", *TOY]
    run(capsys, [*args, "--epochs", "1"])
    checkpoint = out / "checkpoint.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:64])
    assert main([*args, "--epochs", "2", "--resume"]) == 2
    err = capsys.readouterr().err
    assert f"symgraph: error: --resume: load_checkpoint: {checkpoint} could not be read" in err
    assert main(["evaluate", str(out), "--checkpoint", "last"]) == 2
    assert f"symgraph: error: load_checkpoint: {checkpoint} could not be read" in (
        capsys.readouterr().err
    )


def test_resume_refuses_other_job_settings_and_allows_loop_settings(tmp_path, capsys):
    """A resumed run must learn the same thing: job settings (here the seed and the model
    width) are compared with config.json; loop settings (epochs, lr, …) may change."""
    out = tmp_path / "run"
    args = ["train", "toy", "--out", str(out), *TOY]
    run(capsys, [*args, "--epochs", "1"])
    assert main([*args, "--epochs", "2", "--seed", "3", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "--resume: " in err and "was trained with --seed 0 (now 3)" in err
    assert "may change only: " in err and "--epochs" in err
    run(capsys, [*args, "--epochs", "2", "--lr", "5e-4", "--resume"])
    rows = (out / "metrics.csv").read_text().splitlines()
    assert len(rows) == 3
    lr_column = rows[0].split(",").index("lr")
    assert float(rows[2].split(",")[lr_column]) == 5e-4  # the new rate was trained with
    assert main([*args, "--epochs", "3", "--scheduler", "cosine", "--resume"]) == 2
    assert "was trained with --scheduler 'none' (now 'cosine')" in capsys.readouterr().err


def test_a_cosine_run_cannot_be_extended(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "toy", "--out", str(out), *TOY, "--scheduler", "cosine"]
    run(capsys, [*args, "--epochs", "1"])
    assert main([*args, "--epochs", "3", "--resume"]) == 2
    assert "cosine schedule spans 1 epochs, this run's 3" in capsys.readouterr().err
    run(capsys, [*args, "--epochs", "1", "--resume"])  # the same span resumes


def test_unknown_job_lists_the_valid_ones(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "no-such-job"])
    assert exit_info.value.code == 2
    assert "toy" in capsys.readouterr().err
    with pytest.raises(KeyError, match="valid jobs: .*toy"):
        get_job("no-such-job")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "toy", "--out", str(tmp_path / "run"), *TOY, "--device", "cuda"])
    assert exit_info.value.code == 2
    assert "argument --device: got 'cuda', but CUDA is not available" in capsys.readouterr().err


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--seed", "-1"], "argument --seed: expected a non-negative integer below 2**63, got"),
        (["--seed", str(2**63)], "argument --seed: expected a non-negative integer below 2**63"),
        (["--epochs", "0"], "argument --epochs: expected a positive integer, got '0'"),
        (["--batch-size", "0"], "argument --batch-size: expected a positive integer"),
        (["--subset", "-3"], "argument --subset: expected a positive integer"),
        (["--hidden", "0"], "argument --hidden: expected a positive integer"),
        (["--num-graphs", "8"], "argument --num-graphs: expected at least 10 graphs"),
        (["--radius", "nan"], "argument --radius: expected a positive finite number, got 'nan'"),
        (["--radius", "-1"], "argument --radius: expected a positive finite number, got '-1'"),
        (["--device", "gpu"], "argument --device: expected auto, cpu, cuda or cuda:K, got 'gpu'"),
        (["--lr", "-1"], "argument --lr: expected a positive finite number, got '-1'"),
        (["--weight-decay", "-0.1"], "argument --weight-decay: expected a non-negative"),
        (["--grad-clip", "0"], "argument --grad-clip: expected a positive finite number"),
        (["--num-workers", "-1"], "argument --num-workers: expected a non-negative integer"),
        (["--checkpoint-every", "-1"], "argument --checkpoint-every: expected a non-negative"),
    ],
)
def test_bad_counts_are_usage_errors(tmp_path, capsys, flags, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "toy", "--out", str(tmp_path / "run"), *TOY, *flags])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_job_refusing_its_settings_is_a_usage_error(tmp_path, capsys):
    """The job's own check (here the point net's k) comes out as one line, exit 2."""
    shapes = ["--dataset", "procedural", "--num-shapes", "24", "--num-test-shapes", "12"]
    out = tmp_path / "points"
    argv = ["train", "modelnet40", *shapes, "--num-points", "64", "--k", "0", "--out", str(out)]
    assert main(argv) == 2
    assert "symgraph: error: modelnet40: k: expected a positive int, got 0" in (
        capsys.readouterr().err
    )
    assert not out.exists()
    out = tmp_path / "run"
    run(capsys, ["train", "toy", "--out", str(out), *TOY, "--epochs", "1"])
    (out / "config.json").write_text(json.dumps({"note": "no job"}))
    assert main(["evaluate", str(out)]) == 2
    assert "names no job: the run was not started by `symgraph train`" in capsys.readouterr().err


def test_register_job_refuses_a_second_job_of_the_same_name():
    def other(args) -> JobSpec:
        """Another toy."""

    with pytest.raises(ValueError, match="already registered"):
        register_job("toy")(other)
    assert JOBS["toy"].help.startswith("Synthetic regression")


def test_evaluate_needs_a_run_folder(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path)]) == 2
    assert "config.json" in capsys.readouterr().err


def recorded_trainer(monkeypatch, argv) -> dict:
    """``main(argv)`` with the Trainer replaced by a recorder: what it was given, no training."""
    import symgraph.cli as cli

    seen = {}

    class Recorder:
        def __init__(self, model, task, train, val, test, out, config, **kwargs):
            seen.update(model=model, task=task, train=train, val=val, test=test, config=config)
            seen.update(kwargs)

        def fit(self):
            return {}

    monkeypatch.setattr(cli, "Trainer", Recorder)
    assert main(argv) == 0
    return seen


def test_loop_flags_reach_the_train_config(tmp_path, monkeypatch, capsys):
    """--eval-batch-size, --grad-clip and --weight-decay end up in the TrainConfig."""
    flags = ["--eval-batch-size", "5", "--grad-clip", "0.5", "--weight-decay", "0.01"]
    seen = recorded_trainer(monkeypatch, ["train", "toy", "--out", str(tmp_path), *TOY, *flags])
    config = seen["config"]
    assert config.eval_batch_size == 5 and config.batch_size == 8
    assert config.grad_clip == 0.5 and config.weight_decay == 0.01


def test_teleport_flags_reach_the_callback(tmp_path, monkeypatch, capsys):
    """The documented teleport defaults, and --teleport-samples passed to the callback."""
    from symgraph.cli import build_parser
    from symgraph.train.jobs import load_jobs

    args = build_parser(load_jobs()).parse_args(["train", "toy", "--teleport", "every:2"])
    assert (args.teleport_steps, args.teleport_lr, args.teleport_samples) == (10, 0.1, None)
    argv = ["train", "toy", "--out", str(tmp_path), *TOY, "--teleport", "every:2"]
    seen = recorded_trainer(monkeypatch, [*argv, "--teleport-samples", "24"])
    (callback,) = seen["callbacks"]
    assert callback.schedule == "every:2" and callback.samples == 24


def test_resume_refuses_another_subset(tmp_path, capsys):
    """--subset chooses the data: a resumed run with another subset is refused."""
    out = tmp_path / "run"
    args = ["train", "toy", "--out", str(out), *TOY]
    run(capsys, [*args, "--subset", "16", "--epochs", "1"])
    assert main([*args, "--subset", "24", "--epochs", "2", "--resume"]) == 2
    assert "was trained with --subset 16 (now 24)" in capsys.readouterr().err


def test_resume_refuses_a_run_folder_of_another_job(tmp_path, monkeypatch, capsys):
    """--resume into the run folder of another job is a usage error naming both jobs."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"job": "modelnet40", "args": {}}))
    argv = ["train", "toy", "--out", str(out), *TOY, "--resume"]
    seen = {}
    monkeypatch.setattr("symgraph.cli.Trainer", lambda *a, **k: seen.setdefault("built", 1))
    assert main(argv) == 2
    assert "holds a 'modelnet40' run, not 'toy'" in capsys.readouterr().err
    assert not seen


def test_resume_reads_flags_a_run_predates_as_their_old_value(tmp_path, monkeypatch, capsys):
    """A fluid run folder from before --val-split used the random split (and, from before
    --field-scale, one shared RMS): resuming it with today's defaults (time, per-field) is
    refused by name, not silently switched."""
    from symgraph.train.jobs import get_job, load_jobs

    load_jobs()
    before = {"val_split": "random", "field_scale": "shared", "scale_frames": "past", "seed": 3}
    assert get_job("fluid").saved_args({"seed": 3}) == before
    assert get_job("fluid").saved_args({"val_split": "time"})["val_split"] == "time"
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"job": "fluid", "args": {}}))
    monkeypatch.setattr("symgraph.cli.Trainer", lambda *a, **k: pytest.fail("trained"))
    assert main(["train", "fluid", "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "--field-scale 'shared' (now 'per-field')" in err
    assert "--val-split 'random' (now 'time')" in err
    assert "--scale-frames 'past' (now 'train')" in err


def test_evaluate_last_checkpoint_and_split_check(tmp_path, capsys):
    """evaluate --checkpoint last scores checkpoint.pt (the last epoch); a split.json whose
    training part differs from the rebuilt one is refused."""
    out = tmp_path / "run"
    run(capsys, ["train", "toy", "--epochs", "2", "--out", str(out), *TOY])
    last = run(capsys, ["evaluate", str(out), "--checkpoint", "last"])
    assert last["checkpoint"] == "checkpoint.pt" and last["epoch"] == 2
    split = json.loads((out / "split.json").read_text())
    split["train"] = split["train"][::-1]
    (out / "split.json").write_text(json.dumps(split))
    assert main(["evaluate", str(out)]) == 2
    assert "rebuilt a split different" in capsys.readouterr().err


def test_number_types_zero_and_infinity():
    """non_negative_float takes 0, positive_float does not; neither takes infinity."""
    from symgraph.train.jobs import non_negative_float, positive_float

    assert non_negative_float("0") == 0.0 and positive_float("1e-3") == 1e-3
    for parse, text in [
        (positive_float, "0"),
        (positive_float, "inf"),
        (non_negative_float, "inf"),
    ]:
        with pytest.raises(argparse.ArgumentTypeError, match="finite number"):
            parse(text)


def toy_spec(*flags):
    """The toy job's JobSpec for ``flags``, built as the command line builds it."""
    from symgraph.cli import build_parser
    from symgraph.train.jobs import load_jobs

    args = build_parser(load_jobs()).parse_args(["train", "toy", "--num-graphs", "40", *flags])
    return get_job("toy")(args)


def test_toy_job_reads_its_flags():
    """--seed changes the toy data, every edge is shorter than --radius, and the GCN is
    --hidden wide."""

    def targets(spec):  # of all 40 graphs, whatever the split
        return torch.cat([spec.train.y, spec.val.y, spec.test.y]).sort().values

    first, again, other = toy_spec(), toy_spec(), toy_spec("--seed", "1")
    assert torch.equal(targets(first), targets(again))
    assert not torch.equal(targets(first), targets(other))
    for graph in toy_spec("--radius", "0.2").train:
        src, dst = graph.edge_index
        assert bool(((graph.pos[src] - graph.pos[dst]).norm(dim=-1) < 0.2).all())
    model = toy_spec("--hidden", "8").model
    assert model.conv1.out_channels == 8 and model.readout.in_features == 8


def test_toy_task_is_fitted_on_the_training_split():
    """The target mean and std are the training split's."""
    spec = toy_spec()
    task = spec.resolved_task()
    y = spec.train.y.double().reshape(-1)
    assert float(task.mean) == pytest.approx(float(y.mean()), rel=1e-6)
    assert float(task.std) == pytest.approx(float(y.std(unbiased=False)), rel=1e-6)


def test_evaluate_device_flag_overrides_the_runs(tmp_path, monkeypatch, capsys):
    """evaluate --device replaces the device the run was trained with."""
    import symgraph.cli as cli

    out = tmp_path / "run"
    run(capsys, ["train", "toy", "--epochs", "1", "--out", str(out), *TOY])
    devices = []
    init = cli.init_distributed
    monkeypatch.setattr(
        cli, "init_distributed", lambda device: devices.append(device) or init(device)
    )
    run(capsys, ["evaluate", str(out), "--device", "cpu"])
    run(capsys, ["evaluate", str(out)])
    assert devices == ["cpu", "auto"]


def test_evaluate_a_cuda_run_where_cuda_is_missing_is_a_usage_error(tmp_path, monkeypatch, capsys):
    """A run trained with --device cuda, evaluated on a machine without CUDA, ended in a
    RuntimeError traceback; it is a usage error that says to pass --device."""
    out = tmp_path / "run"
    run(capsys, ["train", "toy", "--epochs", "1", "--out", str(out), *TOY, "--device", "cpu"])
    config = json.loads((out / "config.json").read_text())
    config["args"]["device"] = "cuda"
    (out / "config.json").write_text(json.dumps(config))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["evaluate", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"symgraph: error: {out} was trained with --device cuda, which this machine" in err
    assert err.rstrip().endswith("evaluate it with --device cpu or auto")
    assert run(capsys, ["evaluate", str(out), "--device", "cpu"])["checkpoint"] == "best.pt"


def test_scheduler_flag_builds_the_documented_schedules():
    """--scheduler plateau halves the rate after 5 epochs without progress; cosine spans
    --epochs."""
    from symgraph.cli import _scheduler_factory
    from symgraph.train.tasks import RegressionTask

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    plateau = _scheduler_factory("plateau", 7, RegressionTask())(optimizer)
    assert (plateau.factor, plateau.patience, plateau.mode) == (0.5, 5, "min")
    assert _scheduler_factory("cosine", 7, RegressionTask())(optimizer).T_max == 7
    assert _scheduler_factory("none", 7, RegressionTask()) is None


def test_take_subset_of_a_short_plain_dataset():
    """--subset larger than a (non-PyG) split keeps the whole split, and records it."""
    from torch.utils.data import TensorDataset

    from symgraph.train.jobs import take_subset
    from symgraph.train.tasks import RegressionTask

    def items(n):
        return TensorDataset(torch.arange(float(n)))

    spec = JobSpec(torch.nn.Linear(1, 1), RegressionTask(), items(10), items(3), items(2))
    cut = take_subset(spec, 4)
    assert [len(cut.train), len(cut.val), len(cut.test)] == [4, 3, 2]
    assert [float(cut.val[i][0]) for i in range(len(cut.val))] == [0.0, 1.0, 2.0]
    assert cut.split_indices() == {"train": [0, 1, 2, 3], "val": [0, 1, 2], "test": [0, 1]}


def test_a_run_folder_names_its_data_wherever_it_is_evaluated_from(tmp_path, monkeypatch, capsys):
    """A relative --root is recorded as an absolute path: evaluating or resuming from another
    folder reads the run's data instead of building it again where it runs."""
    from symgraph.train.jobs import Job, arg, changed_flags, load_jobs

    load_jobs()
    toy = JOBS["toy"]
    roots = []

    def build(args):
        roots.append(args.root)
        return toy.build(args)

    arguments = (*toy.arguments, arg("--root", default="data", path=True), arg("--tag"))
    monkeypatch.setitem(JOBS, "toy-root", Job("toy-root", build, arguments, "toy with a root"))
    train_dir, other_dir = tmp_path / "train-here", tmp_path / "elsewhere"
    train_dir.mkdir()
    other_dir.mkdir()
    out = tmp_path / "run"
    monkeypatch.chdir(train_dir)
    run(capsys, ["train", "toy-root", "--epochs", "1", "--out", str(out), *TOY, "--tag", "a/b"])
    config = json.loads((out / "config.json").read_text())
    assert config["args"]["root"] == str(train_dir / "data")
    assert config["args"]["tag"] == "a/b"  # a flag that names no path is kept as given
    # the recorded root is the default's folder: a check of changed flags still says so
    assert changed_flags(argparse.Namespace(**config["args"]), "toy-root", ["--root"]) == []
    monkeypatch.chdir(other_dir)
    run(capsys, ["evaluate", str(out)])
    assert roots == ["data", str(train_dir / "data")]
    argv = ["train", "toy-root", "--epochs", "2", "--out", str(out), *TOY, "--tag", "a/b"]
    assert main([*argv, "--resume"]) == 2  # from here, "data" is another folder
    assert f"--root {str(train_dir / 'data')!r} (now {str(other_dir / 'data')!r})" in (
        capsys.readouterr().err
    )
    run(capsys, [*argv, "--resume", "--root", str(train_dir / "data")])


def test_a_flags_namespace_attribute_is_the_one_argparse_gives():
    """``Argument.dest``: the first long flag, dashes as underscores, or an explicit dest."""
    from symgraph.train.jobs import arg

    for argument, dest in (
        (arg("--data-root"), "data_root"),
        (arg("-r", "--data-root"), "data_root"),
        (arg("-r"), "r"),
        (arg("--data-root", dest="root"), "root"),
    ):
        parser = argparse.ArgumentParser()
        assert parser.add_argument(*argument.flags, **argument.kwargs).dest == dest
        assert argument.dest == dest


def test_path_flags_are_made_absolute_and_compared_as_such(tmp_path, monkeypatch):
    """Each path of a path flag (one or a list) is read from the current folder; other flags
    are kept as given. ``changed_flags`` compares the absolute paths, so ``./data`` is the
    default ``data``."""
    from symgraph.train.jobs import Job, arg, changed_flags

    arguments = (
        arg("--root", default="data", path=True),
        arg("--csv", nargs="*", default=None, path=True),
        arg("--tag", default="a/b"),
    )
    job = Job("paths", lambda args: None, arguments, "path flags")
    monkeypatch.setitem(JOBS, "paths", job)
    monkeypatch.chdir(tmp_path)
    given = {"root": "data", "csv": ["a.csv", "/srv/b.csv"], "tag": "c/d", "epochs": 2}
    assert job.absolute_paths(given) == {
        "root": str(tmp_path / "data"),
        "csv": [str(tmp_path / "a.csv"), "/srv/b.csv"],
        "tag": "c/d",
        "epochs": 2,
    }
    flags = ["--root", "--tag"]
    namespace = argparse.Namespace
    assert changed_flags(namespace(root="./data", csv=None, tag="a/b"), "paths", flags) == []
    assert changed_flags(namespace(root="data", tag="c/d"), "paths", flags) == ["--tag"]
    assert changed_flags(namespace(root="elsewhere"), "paths", flags) == ["--root"]


def test_resume_reads_a_relative_path_an_older_run_folder_recorded(tmp_path, monkeypatch, capsys):
    """Run folders made before path flags were recorded as absolute hold the relative path:
    resuming from the folder it was trained in reads it as the same data."""
    from symgraph.train.jobs import Job, arg, load_jobs

    load_jobs()
    toy = JOBS["toy"]
    arguments = (*toy.arguments, arg("--root", default="data", path=True))
    monkeypatch.setitem(JOBS, "toy-root", Job("toy-root", toy.build, arguments, "toy, root"))
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    run(capsys, ["train", "toy-root", "--epochs", "1", "--out", str(out), *TOY])
    config = json.loads((out / "config.json").read_text())
    config["args"]["root"] = "data"  # as recorded before
    (out / "config.json").write_text(json.dumps(config))
    run(capsys, ["train", "toy-root", "--epochs", "2", "--out", str(out), *TOY, "--resume"])
    assert len((out / "metrics.csv").read_text().splitlines()) == 3  # header + 2 epochs
