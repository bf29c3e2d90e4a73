"""Downloads that never leave a half-written file where a complete one is expected.

PyG's ``download_url`` writes straight to the final name and reuses any file already there,
so a download or an extraction interrupted once would be read as complete ever after.
:func:`fetch_into` downloads (and extracts a zip) inside a hidden staging folder and moves
the results into place only when both finished.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from pathlib import Path

from torch_geometric.data import download_url, extract_zip

__all__ = ["fetch_into"]


def fetch_into(url: str, folder: str | os.PathLike, *, extract: bool = True) -> list[Path]:
    """Download ``url`` into ``folder`` (a ``.zip`` is extracted when ``extract``).

    Returns:
        the paths moved into ``folder`` (the file, or the zip's top-level entries).

    Raises:
        ValueError: the downloaded file is not a complete zip archive (nothing is kept, so
            running again downloads it anew).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".download-", dir=folder))
    try:
        path = Path(download_url(url, str(staging)))
        if extract and path.suffix == ".zip":
            try:
                extract_zip(str(path), str(staging))
            except zipfile.BadZipFile as err:
                raise ValueError(
                    f"url: the file downloaded from {url} is not a complete zip archive "
                    f"({err}); nothing was kept, run again to download it anew"
                ) from err
            path.unlink()
        moved = []
        for item in sorted(staging.iterdir()):
            target = folder / item.name
            os.replace(item, target)
            moved.append(target)
        return moved
    finally:
        shutil.rmtree(staging, ignore_errors=True)
