"""Atomic writes and checkpoints: a crash while saving never damages the previous file."""

from __future__ import annotations

import os
import random
import stat

import numpy as np
import pytest
import torch

from symgraph import files as files_module
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


@pytest.mark.skipif(os.name != "posix", reason="directory fsync is POSIX only")
def test_atomic_write_syncs_the_data_before_the_rename_and_the_directory_after(
    tmp_path, monkeypatch
):
    """The content reaches the disk before it replaces the target, and the rename itself is
    persisted by syncing the directory: ``fsync(file)``, ``replace``, ``fsync(directory)``."""
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append("fsync dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync file")
        real_fsync(fd)

    def replace(src, dst):
        events.append("replace")
        real_replace(src, dst)

    monkeypatch.setattr(files_module.os, "fsync", fsync)
    monkeypatch.setattr(files_module.os, "replace", replace)
    with atomic_write(tmp_path / "a.bin") as handle:
        handle.write(b"data")
    assert events == ["fsync file", "replace", "fsync dir"]
    assert (tmp_path / "a.bin").read_bytes() == b"data"


def test_written_files_get_the_usual_mode(tmp_path):
    """The temporary file is created owner-only; the written file has ``0o666 & ~umask``
    like any file the process creates with ``open``."""
    mask = os.umask(0)
    os.umask(mask)
    write_json(tmp_path / "a.json", {"x": 1})
    (tmp_path / "plain.txt").write_text("x")
    mode = stat.S_IMODE((tmp_path / "a.json").stat().st_mode)
    assert mode == 0o666 & ~mask == stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode)


def test_stale_temporaries_are_only_our_hidden_files(tmp_path):
    """Only hidden ``.*.tmp`` files (the pattern :func:`atomic_write` uses) are removed; a
    user's ``notes.tmp`` stays."""
    with atomic_write(tmp_path / "b.txt", "w") as handle:
        handle.write("b")
    user = tmp_path / "notes.tmp"
    user.write_text("mine")
    stale = tmp_path / ".b.txt.xyz.tmp"
    stale.write_text("left by a killed process")
    assert remove_stale_temporaries(tmp_path) == [stale]
    assert user.read_text() == "mine" and (tmp_path / "b.txt").read_text() == "b"
