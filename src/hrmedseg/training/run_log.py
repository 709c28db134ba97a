"""Run logs: a CSV row per epoch, TensorBoard scalars when it is installed, and a PNG of the curves."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

from ..atomic import atomic_write

# grad_norm: the median over the epoch's optimiser steps of the gradients' total norm before
# clipping; grad_norm_max: its largest (see loop.EpochStats).
COLUMNS = (
    "epoch", "lr", "train_loss", "grad_norm", "grad_norm_max",
    "val_loss", "val_dice", "val_iou", "epoch_seconds",
)  # fmt: skip
# Promptable models: val_dice and val_iou score the union of the object masks, val_object_dice
# each object's mask against its own object.
PROMPTED_COLUMNS = (*COLUMNS[:-1], "val_object_dice", COLUMNS[-1])


class RunLogger:
    """Appends epoch rows to ``log.csv`` and mirrors them to TensorBoard under ``tensorboard/``
    if the ``tensorboard`` package is available (``pip install hrmedseg[tensorboard]``).

    A resumed run keeps the rows up to ``completed_epochs`` (the epochs its saved state covers)
    and drops any later row that a crash left behind, so every epoch appears exactly once, in
    the CSV and in TensorBoard.
    """

    def __init__(self, output: Path, completed_epochs: int = 0, columns: Sequence[str] = COLUMNS) -> None:
        self.columns = tuple(columns)
        self.path = output / "log.csv"
        kept = (
            [r for r in read_log(self.path) if r["epoch"] <= completed_epochs] if self.path.is_file() else []
        )
        with self.path.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(self.columns)
            writer.writerows([_cells(row, self.columns) for row in kept])
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # optional dependency
            self.tensorboard = None
        else:
            # purge_step hides the events a crashed run wrote after its last saved epoch
            purge = completed_epochs + 1 if completed_epochs else None
            self.tensorboard = SummaryWriter(str(output / "tensorboard"), purge_step=purge)

    def log(self, row: dict[str, float]) -> None:
        with self.path.open("a", newline="") as f:
            csv.writer(f).writerow(_cells(row, self.columns))
        if self.tensorboard is not None:
            for key in self.columns[1:]:
                if key in row:
                    self.tensorboard.add_scalar(key, row[key], row["epoch"])
            self.tensorboard.flush()

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()


def _cells(row: dict[str, float], columns: Sequence[str]) -> list[float | str]:
    """A CSV row; empty where the epoch has no such value (no validation that epoch)."""
    return ["" if row.get(c) is None or math.isnan(row[c]) else row[c] for c in columns]


def read_log(path: Path) -> list[dict[str, float]]:
    """The rows of ``log.csv``; an empty cell (an epoch without validation) reads as NaN."""
    with path.open() as f:
        return [
            {k: int(float(v)) if k == "epoch" else float(v or "nan") for k, v in row.items()}
            for row in csv.DictReader(f)
        ]


def plot_curves(log_path: Path, png_path: Path) -> Path:
    """Losses, the validation scores (the other ``val_*`` columns) and, where the log has them,
    the gradient norms (median and maximum per epoch, on a log scale) against epochs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_log(log_path)
    epochs = [r["epoch"] for r in rows]
    with_norms = bool(rows) and "grad_norm" in rows[0]  # logs written before the column existed lack it
    fig, axes = plt.subplots(1, 3 if with_norms else 2, figsize=(15 if with_norms else 10, 4))
    loss_ax, metric_ax = axes[:2]
    loss_ax.plot(epochs, [r["train_loss"] for r in rows], label="train")
    validated = [r for r in rows if not math.isnan(r["val_loss"])]
    loss_ax.plot(
        [r["epoch"] for r in validated], [r["val_loss"] for r in validated], "o-", ms=3, label="validation"
    )
    loss_ax.set(xlabel="epoch", ylabel="loss", title="Loss")
    scores = [c for c in rows[0] if c.startswith("val_") and c != "val_loss"] if rows else []
    for column in scores:
        metric_ax.plot(
            [r["epoch"] for r in validated], [r[column] for r in validated], "o-", ms=3,
            label=column.removeprefix("val_"),
        )  # fmt: skip
    metric_ax.set(xlabel="epoch", ylabel="score", title="Validation", ylim=(0, 1))
    if with_norms:
        norm_ax = axes[2]
        for column, label in (("grad_norm", "median"), ("grad_norm_max", "maximum")):
            norm_ax.plot(epochs, [r[column] for r in rows], label=label)
        norm_ax.set(xlabel="epoch", ylabel="total norm", title="Gradient norm per step", yscale="log")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    atomic_write(png_path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)
    return png_path
