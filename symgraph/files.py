"""Atomic file writes: a reader sees the old file or the new one, never half of one.

Every file of a run folder (checkpoints, ``metrics.csv``, ``curve.png``, JSON records) and
every processed dataset cache goes through :func:`atomic_write`: the content is written to
a temporary file in the same directory, flushed and fsynced, then renamed over the target
with ``os.replace`` (atomic on POSIX and Windows). If writing fails, the temporary file is
removed and the previous file is untouched.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_write", "write_json", "read_json", "remove_stale_temporaries"]

_TMP_SUFFIX = ".tmp"


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates files readable by the owner only; written files get the usual mode
_FILE_MODE = 0o666 & ~_current_umask()


def _fsync_directory(directory: Path) -> None:
    """Persist a rename on POSIX (no-op where directories cannot be opened)."""
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; on clean exit it replaces ``path`` atomically.

    Args:
        path: the file to (re)write; its directory must exist.
        mode: ``"wb"`` (binary) or ``"w"`` (text, UTF-8).

    Yields:
        the open temporary file. If the ``with`` body raises, the temporary file is deleted
        and ``path`` keeps its previous content.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write: mode must be 'wb' or 'w', got {mode!r}")
    target = Path(path)
    if not target.parent.is_dir():
        raise FileNotFoundError(f"atomic_write: directory {target.parent} does not exist")
    fd, tmp_name = tempfile.mkstemp(
        dir=target.parent, prefix=f".{target.name}.", suffix=_TMP_SUFFIX
    )
    tmp = Path(tmp_name)
    try:
        os.chmod(tmp, _FILE_MODE)
        encoding = None if mode == "wb" else "utf-8"
        with os.fdopen(fd, mode, encoding=encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_directory(target.parent)


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> None:
    """Write ``obj`` as JSON, atomically (``indent=None``: compact, for long index lists).

    Values JSON does not know (paths, devices) are written as their ``str``.
    """
    with atomic_write(path, "w") as handle:
        json.dump(obj, handle, indent=indent, default=str)
        handle.write("\n")


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file, naming the path in the error if it is missing or malformed."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"expected a JSON file at {path}, found none")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err


def remove_stale_temporaries(directory: str | os.PathLike) -> list[Path]:
    """Delete temporaries left in ``directory`` by a process killed inside :func:`atomic_write`.

    Call it only when no other process writes to ``directory`` (the trainer calls it on rank
    0 before training starts). Returns the removed paths.
    """
    removed = []
    for tmp in Path(directory).glob(f".*{_TMP_SUFFIX}"):
        if tmp.is_file():
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed
