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
    with pytest.raises(ValueError, match="implicit hydrogens .* Chem.AddHs"):
        predict((model, task), [heavy])


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
    assert "homo" in capsys.readouterr().err
    assert main(train_args(first200, tmp_path / "b", "--group", "SO4")) == 2
    assert "SO3" in capsys.readouterr().err


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
