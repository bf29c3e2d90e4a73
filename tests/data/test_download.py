"""Downloads (no network: ``download_url`` is replaced by a local copy): complete or nothing."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import pytest

import symgraph.data.download as download_module
from symgraph.data.download import fetch_into


def _serve(monkeypatch: pytest.MonkeyPatch, source: Path) -> None:
    """``download_url(url, folder)`` copies ``source`` into ``folder``."""

    def fake(url: str, folder: str) -> str:
        target = Path(folder) / source.name
        shutil.copy(source, target)
        return str(target)

    monkeypatch.setattr(download_module, "download_url", fake)


def _zip(path: Path, entries: dict[str, str]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in entries.items():
            archive.writestr(name, text)
    return path


def test_a_zip_is_extracted_into_place(tmp_path, monkeypatch):
    source = _zip(tmp_path / "set.zip", {"Set/a/one.off": "OFF", "Set/b/two.off": "OFF"})
    _serve(monkeypatch, source)
    moved = fetch_into("https://example.org/set.zip", tmp_path / "root")
    assert [p.name for p in moved] == ["Set"]
    assert (tmp_path / "root" / "Set" / "b" / "two.off").read_text() == "OFF"
    assert sorted(p.name for p in (tmp_path / "root").iterdir()) == ["Set"]  # no staging left


def test_an_interrupted_extraction_leaves_nothing(tmp_path, monkeypatch):
    source = _zip(tmp_path / "set.zip", {"Set/a/one.off": "OFF", "Set/b/two.off": "OFF"})
    _serve(monkeypatch, source)

    def killed(path: str, folder: str) -> None:
        with zipfile.ZipFile(path) as archive:
            archive.extract(archive.namelist()[0], folder)  # one file, then the kill
        raise KeyboardInterrupt

    monkeypatch.setattr(download_module, "extract_zip", killed)
    with pytest.raises(KeyboardInterrupt):
        fetch_into("https://example.org/set.zip", tmp_path / "root")
    assert list((tmp_path / "root").iterdir()) == []


def test_a_truncated_zip_is_named_and_not_kept(tmp_path, monkeypatch):
    source = _zip(tmp_path / "set.zip", {"Set/a/one.off": "OFF" * 1000})
    truncated = tmp_path / "cut" / "set.zip"
    truncated.parent.mkdir()
    truncated.write_bytes(source.read_bytes()[:40])
    _serve(monkeypatch, truncated)
    with pytest.raises(ValueError, match="not a complete zip archive .* run again"):
        fetch_into("https://example.org/set.zip", tmp_path / "root")
    assert list((tmp_path / "root").iterdir()) == []


def test_a_plain_file_is_moved_into_place(tmp_path, monkeypatch):
    source = tmp_path / "md17_ethanol.npz"
    source.write_bytes(b"data")
    _serve(monkeypatch, source)
    (moved,) = fetch_into("https://example.org/md17_ethanol.npz", tmp_path / "root")
    assert moved == tmp_path / "root" / "md17_ethanol.npz" and moved.read_bytes() == b"data"


def test_a_zip_is_kept_as_is_without_extract(tmp_path, monkeypatch):
    """``extract=False`` moves the archive itself into place, unopened."""
    source = _zip(tmp_path / "set.zip", {"Set/a/one.off": "OFF"})
    _serve(monkeypatch, source)
    (moved,) = fetch_into("https://example.org/set.zip", tmp_path / "root", extract=False)
    assert moved == tmp_path / "root" / "set.zip" and moved.read_bytes() == source.read_bytes()
    assert sorted(p.name for p in (tmp_path / "root").iterdir()) == ["set.zip"]


def test_the_download_is_staged_in_a_hidden_folder_inside_the_target(tmp_path, monkeypatch):
    """The staging folder lies inside the (created) target folder, so moving into place is a
    rename on one file system; it is removed afterwards."""
    source = tmp_path / "md17_ethanol.npz"
    source.write_bytes(b"data")
    staged = []

    def fake(url: str, folder: str) -> str:
        staged.append(Path(folder))
        target = Path(folder) / source.name
        shutil.copy(source, target)
        return str(target)

    monkeypatch.setattr(download_module, "download_url", fake)
    root = tmp_path / "a" / "b"
    fetch_into("https://example.org/md17_ethanol.npz", root)
    (folder,) = staged
    assert folder.parent == root and folder.name.startswith(".")
    assert not folder.exists()
