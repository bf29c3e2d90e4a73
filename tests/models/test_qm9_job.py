"""The qm9 job end to end on real QM9 rows: CLI train, evaluate, resume, predict, the demo."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

from symgraph.cli import main

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def first200(shared_data) -> Path:
    return shared_data / "qm9" / "qm9pack_first200.csv"


def train_args(csv: Path, out: Path, *extra: str) -> list[str]:
    return [
        "train", "qm9", "--source", "csv", "--csv", str(csv), "--root", str(out.parent / "data"),
        "--hidden", "8x0e + 2x1o", "--layers", "1", "--batch-size", "16", "--no-progress",
        "--out", str(out), *extra,
    ]  # fmt: skip


def test_train_evaluate_predict(first200, tmp_path):
    from ase.build import molecule

    from symgraph.train.predict import load_qm9_run, predict

    run = tmp_path / "run"
    kernel = ["--lmax", "1", "--num-radial", "12"]
    assert main(train_args(first200, run, "--epochs", "2", "--target", "U0", *kernel)) == 0
    for name in ("config.json", "split.json", "metrics.csv", "curve.png", "test.json", "best.pt"):
        assert (run / name).exists(), name
    test = json.loads((run / "test.json").read_text())
    assert test["units"]["mae"] == "meV" and test["metrics"]["mae"] > 0
    assert main(["evaluate", str(run)]) == 0
    evaluation = json.loads((run / "evaluation.json").read_text())
    assert evaluation["metrics"]["mae"] == pytest.approx(test["metrics"]["mae"], rel=1e-5)
    model, task = load_qm9_run(run)
    assert model.convs[0].kernel.radial.num_basis == 12 and model.convs[0].kernel.lmax == 1
    values = predict((model, task), [molecule("CH3CH2OH"), molecule("HCN")])
    assert values.shape == (2,) and bool(torch.isfinite(values).all())
    one_by_one = predict((model, task), [molecule("CH3CH2OH"), molecule("HCN")], batch_size=1)
    torch.testing.assert_close(one_by_one, values)
    with pytest.raises(ValueError, match="batch_size: expected a positive integer, got 0"):
        predict((model, task), [molecule("HCN")], batch_size=0)
    with pytest.raises(TypeError, match="molecules: expected a sequence of molecules, got one"):
        predict((model, task), molecule("HCN"))
    from rdkit import Chem
    from rdkit.Chem import AllChem

    with_h = Chem.AddHs(Chem.MolFromSmiles("CCO"))
    AllChem.EmbedMolecule(with_h, randomSeed=0)
    heavy = Chem.RemoveHs(with_h)  # what rdkit's file readers give by default
    assert predict((model, task), [with_h]).shape == (1,)
    with pytest.raises(ValueError, match="hydrogens that are not atoms .* Chem.AddHs"):
        predict((model, task), [heavy])


def test_predict_refuses_hydrogens_kept_only_as_explicit_counts():
    """A reader that drops the H atoms keeps those of stereocentres as explicit counts, not
    implicit ones: such a molecule (no implicit H left) must not pass without its hydrogens."""
    from rdkit import Chem
    from rdkit.Chem import AllChem

    from symgraph.train.predict import to_graph

    with_h = Chem.AddHs(Chem.MolFromSmiles("F[C@H]1O[C@@H]1F"))
    AllChem.EmbedMolecule(with_h, randomSeed=1)
    read = Chem.MolFromMolBlock(Chem.MolToMolBlock(with_h))  # removeHs=True, as SDF readers
    assert sum(a.GetNumImplicitHs() for a in read.GetAtoms()) == 0
    with pytest.raises(ValueError, match="with 2 hydrogens that are not atoms .* Chem.AddHs"):
        to_graph(read, 5.0)
    assert to_graph(with_h, 5.0).z.tolist().count(1) == 2


def test_kill_and_resume_loses_nothing(first200, tmp_path, monkeypatch):
    """Killed in the middle of epoch 2 (a checkpoint after every step), resumed: the same
    weights as an uninterrupted run, epoch 1's row carried over."""
    from symgraph.train.loop import Trainer

    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    common = ("--epochs", "2", "--checkpoint-every", "1", "--target", "homo")
    assert main(train_args(first200, straight, *common)) == 0
    step = Trainer._train_step
    calls = []

    def killed_at_step_13(self, batch):  # epoch 1 has 10 steps (160 molecules, batch 16)
        calls.append(1)
        if len(calls) == 13:
            raise KeyboardInterrupt
        return step(self, batch)

    monkeypatch.setattr(Trainer, "_train_step", killed_at_step_13)
    with pytest.raises(KeyboardInterrupt):
        main(train_args(first200, resumed, *common))
    first_epoch = (resumed / "metrics.csv").read_text().splitlines()
    assert len(first_epoch) == 2  # the header and epoch 1
    assert torch.load(resumed / "checkpoint.pt", weights_only=True)["step_in_epoch"] == 2
    trained = []

    def counted(self, batch):
        trained.append(1)
        return step(self, batch)

    monkeypatch.setattr(Trainer, "_train_step", counted)
    assert main(train_args(first200, resumed, *common, "--resume")) == 0
    assert len(trained) == 8  # steps 13-20 only: a restart would train all 20 again
    assert (resumed / "metrics.csv").read_text().splitlines()[:2] == first_epoch
    a = torch.load(straight / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(resumed / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_unknown_target_and_group_list_valid_names(first200, tmp_path, capsys):
    assert main(train_args(first200, tmp_path / "a", "--target", "enthalpy")) == 2
    assert "qm9: --target: unknown QM9 target 'enthalpy'" in capsys.readouterr().err
    assert main(train_args(first200, tmp_path / "b", "--group", "SO4")) == 2
    assert "qm9: --group: unknown group name 'SO4'; expected one of" in capsys.readouterr().err


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--subset-size", "400"], "--subset-size: asked for 400 molecules, the source has 200"),
        (["--hidden", "8x0q"], "--hidden: expected an e3nn irreps string"),
        (["--layers", "0"], "--layers: expected a positive int, got 0"),
        (["--cutoff", "-1"], "--cutoff: expected a positive number"),
        (["--num-radial", "0"], "--num-radial: expected a positive int"),
    ],
)
def test_refused_settings_name_their_flag(first200, tmp_path, capsys, flags, message):
    assert main(train_args(first200, tmp_path / "run", *flags)) == 2
    assert f"symgraph: error: qm9: {message}" in capsys.readouterr().err


def test_demo_quick(first200, tmp_path):
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import qm9_demo
    finally:
        sys.path.pop(0)
    quick = ["--quick", "--csv", str(first200), "--out", str(tmp_path / "demo")]
    result = qm9_demo.main(quick)
    assert 0 < result["baseline"] < math.inf and 0 < result["mae"] < math.inf
    assert qm9_demo.main(quick) == result  # run again: the same run, resumed and evaluated
    with pytest.raises(SystemExit) as stopped:  # another target: refused, no stale report
        qm9_demo.main([*quick, "--target", "gap"])
    assert stopped.value.code == 2


def _ddp_worker(rank: int, world_size: int, port: int, argv: list[str]) -> None:
    import os

    torch.set_num_threads(1)  # a forked child must not reuse the parent's OpenMP pool
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size),
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
    )  # fmt: skip
    assert main(argv) == 0


def test_two_processes_match_one_process_on_qm9(first200, tmp_path):
    """torchrun-style data parallel (2 CPU processes, gloo) equals one process, same batch."""
    import socket

    import torch.multiprocessing as mp

    schedule = ("--epochs", "1", "--batch-size", "10", "--subset", "40", "--target", "gap")
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    assert main(train_args(first200, single, *schedule)) == 0  # also builds the data cache
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    argv = train_args(first200, ddp, *schedule)
    mp.start_processes(_ddp_worker, args=(2, port, argv), nprocs=2, start_method="fork")
    a = torch.load(single / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(ddp / "checkpoint.pt", weights_only=True)["model"]
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-5, atol=1e-6, msg=name)


def qm9_args(csv: Path, root: Path, *flags: str):
    """The parsed command line of the qm9 job (data cached under ``root``)."""
    from symgraph.cli import build_parser
    from symgraph.train.jobs import load_jobs

    argv = ["train", "qm9", "--source", "csv", "--csv", str(csv), "--root", str(root)]
    return build_parser(load_jobs()).parse_args([*argv, "--hidden", "8x0e", *flags])


def test_qm9_job_builds_what_the_flags_say(first200, tmp_path):
    """Counts split, the test split's molecules, the cutoff, the readout of an intensive
    target and the MAE reported in meV for an energy (eV) target."""
    from symgraph.data.qm9 import TARGETS
    from symgraph.train.job_qm9 import build_qm9_dataset, build_qm9_model
    from symgraph.train.jobs import get_job

    flags = ["--target", "gap", "--cutoff", "4.0", "--split", "150", "49", "1"]
    args = qm9_args(first200, tmp_path / "data", *flags)
    spec = get_job("qm9")(args)
    split = spec.split_indices()
    assert [len(split[k]) for k in ("train", "val", "test")] == [150, 49, 1]
    assert len(set(split["train"]) | set(split["val"]) | set(split["test"])) == 200
    dataset = build_qm9_dataset(args)
    for name in ("train", "val", "test"):
        expected = dataset[torch.tensor(split[name])].y
        assert torch.equal(getattr(spec, name).y, expected), name
    assert spec.model.cutoff == 4.0 and spec.model.readout == "mean"
    task = spec.resolved_task()
    assert task.target_index == TARGETS.index("gap")
    assert task.unit_scale == 1000.0 and task.unit_name == "meV"
    assert build_qm9_model(qm9_args(first200, tmp_path, "--target", "U0")).readout == "sum"
    hidden = ("--hidden", "8x0e + 2x1o")  # its 1o is not read under O(3)
    trimmed = build_qm9_model(qm9_args(first200, tmp_path, *hidden))
    full = build_qm9_model(qm9_args(first200, tmp_path, *hidden, "--last-layer", "full"))
    assert trimmed.rep_read.short() == "8x0e" and full.rep_read == full.rep_hidden


def test_split_counts_may_hold_a_zero_and_an_empty_split_is_a_usage_error(
    first200, tmp_path, capsys
):
    """``--split 190 0 10`` are counts (a whole-number 0 among them is no fraction); an empty
    split stops the run before training with a usage error naming the split."""
    from symgraph.train.jobs import get_job

    spec = get_job("qm9")(qm9_args(first200, tmp_path / "data", "--split", "190", "0", "10"))
    assert [len(spec.split[k]) for k in ("train", "val", "test")] == [190, 0, 10]
    assert len(spec.val) == 0 and len(spec.test) == 10
    for split in (["190", "0", "10"], ["0.9", "0", "0.1"]):
        assert main(train_args(first200, tmp_path / "run", "--split", *split)) == 2
        err = capsys.readouterr().err
        assert "qm9: the val split is empty (train " in err and "--split" in err
    assert not (tmp_path / "run").exists()


def test_qm9_subset_seed_picks_other_molecules(first200, tmp_path):
    """--subset-seed seeds the --subset-size sample: another seed, other molecules."""
    from symgraph.train.job_qm9 import build_qm9_dataset

    def sample(seed: str):
        flags = ["--subset-size", "50", "--subset-seed", seed]
        return build_qm9_dataset(qm9_args(first200, tmp_path / "data", *flags)).y

    first = sample("0")
    assert len(first) == 50 and torch.equal(sample("0"), first)
    assert not torch.equal(sample("1"), first)


def test_dipole_only_for_target_mu(first200, tmp_path, capsys):
    assert main(train_args(first200, tmp_path / "run", "--target", "homo", "--dipole")) == 2
    assert "--dipole: only for target 'mu', got target 'homo'" in capsys.readouterr().err


def test_predict_undoes_the_standardisation():
    """predict returns model output * std + mean, in batches."""
    from torch import nn
    from torch_geometric.data import Data
    from torch_geometric.nn import global_add_pool

    from symgraph.train.predict import predict
    from symgraph.train.tasks import RegressionTask

    class SumOfX(nn.Module):
        def forward(self, batch):
            return global_add_pool(batch.x, batch.batch).squeeze(-1)

    graphs = [Data(x=torch.full((n, 1), float(n)), pos=torch.zeros(n, 3)) for n in (1, 2, 3)]
    task = RegressionTask(0, mean=2.0, std=3.0)
    values = predict((SumOfX(), task), graphs, batch_size=2)
    torch.testing.assert_close(values, torch.tensor([1.0, 4.0, 9.0]) * 3.0 + 2.0)


def test_load_qm9_run_reads_the_chosen_checkpoint(tmp_path):
    """checkpoint='last' loads checkpoint.pt, 'best' best.pt (here with other weights); a run
    of another job is refused."""
    from symgraph.train.checkpoint import save_checkpoint
    from symgraph.train.job_qm9 import build_qm9_model
    from symgraph.train.loop import RUN_FILES
    from symgraph.train.predict import load_qm9_run
    from symgraph.train.tasks import RegressionTask

    args = qm9_args(tmp_path / "none.csv", tmp_path / "data", "--layers", "1")
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"job": "qm9", "args": vars(args)}))
    best = build_qm9_model(args).state_dict()
    last = {name: value + 1 if value.is_floating_point() else value for name, value in best.items()}
    task = RegressionTask(2, 0.5, 2.0).state_dict()
    save_checkpoint(run / RUN_FILES["best"], {"model": best, "task": task})
    save_checkpoint(run / RUN_FILES["checkpoint"], {"model": last, "task": task})
    for checkpoint, expected in (("last", last), ("best", best)):
        model, loaded = load_qm9_run(run, checkpoint)
        state = model.state_dict()
        assert all(torch.equal(state[name], expected[name]) for name in expected), checkpoint
        assert float(loaded.mean) == 0.5 and float(loaded.std) == 2.0
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "job": "toy"}))
    with pytest.raises(ValueError, match="expected a run of the qm9 job, got job 'toy'"):
        load_qm9_run(run)


def test_predict_builds_graphs_with_the_wrapped_models_cutoff():
    """A DipoleNorm-wrapped model's cutoff (not the 5 Å default) decides the graph's edges:
    HCN with a 1.25 Å cutoff has its two bonds (1.07, 1.16 Å), not the 2.2 Å H-N pair."""
    from ase.build import molecule
    from torch import nn

    from symgraph.train.job_qm9 import DipoleNorm
    from symgraph.train.predict import predict
    from symgraph.train.tasks import RegressionTask

    class LongestEdge(nn.Module):
        cutoff = 1.25

        def forward(self, batch):
            src, dst = batch.edge_index
            length = (batch.pos[src] - batch.pos[dst]).norm(dim=-1)
            longest = torch.zeros(batch.num_graphs).scatter_reduce(
                0, batch.batch[src], length.float(), "amax"
            )
            return torch.stack([longest, torch.zeros_like(longest), torch.zeros_like(longest)], -1)

    value = predict((DipoleNorm(LongestEdge()), RegressionTask(0, 0.0, 1.0)), [molecule("HCN")])
    assert 1.0 < float(value[0]) < 1.25


def test_old_run_folders_keep_their_full_last_layer(first200, tmp_path, capsys):
    """A run folder made before ``--last-layer`` (no ``last_layer`` in config.json) holds a
    full last layer: it evaluates, loads for predict and resumes as one, and resuming it
    trimmed is refused."""
    from symgraph.train.predict import load_qm9_run

    run = tmp_path / "run"

    def command(epochs: int, *flags: str) -> list[str]:
        hidden = ["--hidden", "8x0e + 2x1o + 1x2e"]  # its 1o and 2e are not read under O(3)
        return train_args(first200, run, "--epochs", str(epochs), *hidden, *flags)

    assert main(command(1, "--last-layer", "full")) == 0
    path = run / "config.json"
    config = json.loads(path.read_text())
    del config["args"]["last_layer"]
    path.write_text(json.dumps(config))
    capsys.readouterr()
    assert main(["evaluate", str(run)]) == 0
    model, _ = load_qm9_run(run, "last")  # predict's loader builds the full layer too
    assert model.last_layer == "full"
    assert main(command(2, "--resume")) == 2  # the last layer is trimmed by default now
    assert "--last-layer 'full' (now 'readout')" in capsys.readouterr().err
    assert main(command(2, "--last-layer", "full", "--resume")) == 0
    assert len((run / "metrics.csv").read_text().splitlines()) == 3
