"""Mixed-precision training: ``--precision bf16|fp16`` runs the loss under autocast."""

from __future__ import annotations

import json

import pytest
import torch

from symgraph.cli import main
from symgraph.train.checkpoint import load_checkpoint
from symgraph.train.loop import TrainConfig
from symgraph.train.toy import ToyGCN

TOY = ["--num-graphs", "40", "--hidden", "8", "--batch-size", "8", "--no-progress"]


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_toy_job_trains_under_autocast(tmp_path, capsys, monkeypatch, precision):
    seen = []
    forward = ToyGCN.forward

    def spy(self, data):
        out = forward(self, data)
        seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
        return out

    monkeypatch.setattr(ToyGCN, "forward", spy)
    out = tmp_path / precision
    argv = ["train", "toy", "--epochs", "2", "--precision", precision, "--out", str(out), *TOY]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert all(torch.isfinite(torch.tensor(v)) for v in result["metrics"].values())
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    assert (True, dtype) in seen  # training steps ran under autocast
    assert any(not enabled for enabled, _ in seen)  # validation and test did not
    state = load_checkpoint(out / "checkpoint.pt", torch.device("cpu"))
    assert bool(state["scaler"]) == (precision == "fp16")  # the loss scale is checkpointed
    assert json.loads((out / "config.json").read_text())["args"]["precision"] == precision


def test_fp16_resume_restores_the_loss_scale(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    args = ["train", "toy", "--precision", "fp16", "--out", str(out), *TOY]
    assert main([*args, "--epochs", "1"]) == 0
    saved = load_checkpoint(out / "checkpoint.pt", torch.device("cpu"))["scaler"]
    restored = []
    load = torch.amp.GradScaler.load_state_dict
    monkeypatch.setattr(
        torch.amp.GradScaler,
        "load_state_dict",
        lambda self, state: restored.append(dict(state)) or load(self, state),
    )
    assert main([*args, "--epochs", "2", "--resume"]) == 0
    capsys.readouterr()
    assert restored == [saved]


def test_unknown_precision_is_refused(capsys):
    with pytest.raises(ValueError, match="precision must be one of"):
        TrainConfig(precision="fp8")
    with pytest.raises(SystemExit):
        main(["train", "toy", "--precision", "fp8", *TOY])
    assert "--precision" in capsys.readouterr().err
