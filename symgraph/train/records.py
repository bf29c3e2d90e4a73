"""The run folder's human-readable records: ``metrics.csv``, ``curve.png`` (and the rows of
any other CSV record, e.g. ``teleports.csv``).

They are rewritten in full, atomically, from the history kept in the checkpoint, so after
a crash and ``--resume`` they hold exactly one row per finished epoch (or event).
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Sequence
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from symgraph.files import atomic_write

__all__ = ["write_csv", "write_metrics_csv", "plot_learning_curves"]


def _columns(history: Sequence[dict[str, Any]]) -> list[str]:
    columns: list[str] = []
    for row in history:
        columns.extend(key for key in row if key not in columns)
    return columns


def write_csv(
    rows: Sequence[dict[str, Any]], path: str | os.PathLike, columns: Sequence[str]
) -> None:
    """Rewrite ``path`` atomically: a header of ``columns``, then one line per row.

    Raises:
        ValueError: a row has a key that is not among ``columns``.
    """
    with atomic_write(path, "w") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def write_metrics_csv(history: Sequence[dict[str, Any]], path: str | os.PathLike) -> None:
    """One row per epoch; columns are the union of the rows' keys, in first-seen order."""
    write_csv(history, path, _columns(history))


def plot_learning_curves(
    history: Sequence[dict[str, Any]], path: str | os.PathLike, monitor: str, unit: str = ""
) -> None:
    """Training / validation loss (left) and the validation ``monitor`` metric (right).

    Args:
        history: rows with ``epoch``, ``train_loss``, ``val_loss`` (optional) and
            ``val_<monitor>``.
        path: the PNG to write (atomically).
        monitor: the metric of the right panel; ``unit`` labels its axis.
    """
    epochs = [row["epoch"] for row in history]
    figure = Figure(figsize=(9, 3.5), layout="constrained")
    FigureCanvasAgg(figure)
    loss_ax, metric_ax = figure.subplots(1, 2)
    for key, label in (("train_loss", "train"), ("val_loss", "validation")):
        values = [row.get(key, math.nan) for row in history]
        if any(math.isfinite(v) for v in values):
            loss_ax.plot(epochs, values, marker="o", markersize=3, label=label)
    if all(v > 0 for row in history for k, v in row.items() if k.endswith("_loss")):
        loss_ax.set_yscale("log")
    loss_ax.set(xlabel="epoch", ylabel="loss", title="loss")
    loss_ax.legend()
    metric_ax.plot(
        epochs,
        [row.get(f"val_{monitor}", math.nan) for row in history],
        marker="o",
        markersize=3,
        color="C2",
    )
    metric_ax.set(
        xlabel="epoch",
        ylabel=f"{monitor} ({unit})" if unit else monitor,
        title=f"validation {monitor}",
    )
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    with atomic_write(path, "wb") as handle:
        handle.write(buffer.getvalue())
