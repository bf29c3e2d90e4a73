"""Atomic writes and checkpoints: a crash while saving never damages the previous file."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from symgraph.files import atomic_write, read_json, remove_stale_temporaries, write_json
from symgraph.train import checkpoint as checkpoint_module
from symgraph.train.checkpoint import (
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)


def _leftovers(directory):
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


def test_save_and_load_roundtrip(tmp_path):
    state = {"model": {"w": torch.arange(6.0).reshape(2, 3)}, "epoch": 3, "best": None}
    save_checkpoint(tmp_path / "c.pt", state)
    loaded = load_checkpoint(tmp_path / "c.pt")
    assert torch.equal(loaded["model"]["w"], state["model"]["w"])
    assert loaded["epoch"] == 3 and loaded["best"] is None
    assert _leftovers(tmp_path) == []


def test_crash_during_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"epoch": 1, "w": torch.ones(100)})

    def crashing_save(obj, handle):
        handle.write(b"partial bytes of a checkpoint")
        raise RuntimeError("simulated crash while writing")

    monkeypatch.setattr(checkpoint_module.torch, "save", crashing_save)
    with pytest.raises(RuntimeError, match="simulated crash"):
        save_checkpoint(path, {"epoch": 2, "w": torch.zeros(100)})
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1
    assert _leftovers(tmp_path) == []  # no partial temporary file


def test_interrupt_during_text_write_keeps_previous_file(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text("old\n")
    with pytest.raises(KeyboardInterrupt):
        with atomic_write(path, "w") as handle:
            handle.write("new, half written")
            raise KeyboardInterrupt
    assert path.read_text() == "old\n"
    assert _leftovers(tmp_path) == []


def test_load_rejects_missing_and_foreign_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path / "absent.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="could not be read"):
        load_checkpoint(tmp_path / "garbage.pt")
    torch.save({"w": torch.ones(1)}, tmp_path / "plain.pt")
    with pytest.raises(ValueError, match="not a symgraph checkpoint"):
        load_checkpoint(tmp_path / "plain.pt")


def test_rng_state_roundtrip_through_checkpoint(tmp_path):
    random.gauss(0, 1), np.random.normal()  # both cache the second Gaussian of a pair
    save_checkpoint(tmp_path / "rng.pt", {"rng": capture_rng_state()})
    expected = (random.random(), np.random.rand(), torch.rand(3))
    gaussians = (random.gauss(0, 1), np.random.normal())
    restore_rng_state(load_checkpoint(tmp_path / "rng.pt")["rng"])
    assert random.random() == expected[0]
    assert np.random.rand() == expected[1]
    assert torch.equal(torch.rand(3), expected[2])
    assert (random.gauss(0, 1), np.random.normal()) == gaussians  # the cached ones too


class _Payload:
    """Any class: unpickling it could run code, so checkpoints load with weights_only."""


def test_load_refuses_arbitrary_objects(tmp_path):
    torch.save({"format": 1, "payload": _Payload()}, tmp_path / "pickled.pt")
    with pytest.raises(ValueError, match="could not be read"):
        load_checkpoint(tmp_path / "pickled.pt")


def test_json_helpers_and_stale_temporaries(tmp_path):
    write_json(tmp_path / "a.json", {"x": [1, 2], "path": tmp_path})
    assert read_json(tmp_path / "a.json") == {"x": [1, 2], "path": str(tmp_path)}
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_json(tmp_path / "bad.json")
    stale = tmp_path / ".checkpoint.pt.abc123.tmp"
    stale.write_bytes(b"left by a killed process")
    assert remove_stale_temporaries(tmp_path) == [stale]
    assert not stale.exists() and (tmp_path / "a.json").exists()
