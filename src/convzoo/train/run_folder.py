"""The files a run leaves in its folder besides checkpoints: metrics, curves, report, weights and TensorBoard events.

Only the main process of a distributed run writes them; on the others every method here does nothing.
"""

from __future__ import annotations

import csv
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch.nn as nn

from convzoo.train.tasks import ClassificationTask, Curve

__all__ = ["LOG_FLOOR", "PLOT_EVERY_S", "RunFolder", "TensorBoard", "plot_curves"]

# Drawing curves.png costs about half a second on a small CPU; during a run it is redrawn at most this often (and
# always at the end, on Ctrl-C and on divergence), so short epochs are not slowed by plotting.
PLOT_EVERY_S = 30.0
# The lowest value a logarithmic panel of curves.png draws (an error of 0.01%: one image in 10,000).
LOG_FLOOR = 0.01

_FILES_NOTE = (
    "Files: `model.safetensors` (final weights; `convzoo.create_model(name, weights=...)`), `last.pt` and "
    "`best.pt` (checkpoints; `convzoo eval`, `convzoo predict`, `--resume`), `metrics.csv`, `metrics.jsonl`."
)


def plot_curves(
    history: list[dict[str, Any]],
    path: str | os.PathLike[str],
    *,
    title: str = "",
    curves: Sequence[Curve] = ClassificationTask.curves,
    note: str = "",
) -> None:
    """Training and test metrics against epochs, one panel per curve, as a PNG (error and loss by default).

    A logarithmic panel draws values below `LOG_FLOOR` (a 0% error) at the floor, marked in its axis label.

    Args:
        history: The rows of metrics.csv.
        path: The PNG to write.
        title: The figure's title.
        curves: The panels.
        note: A line under the title, e.g. why the training loss sits above the test loss.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, len(curves), figsize=(5.5 * len(curves), 4), squeeze=False)
    for ax, curve in zip(axes[0], curves):
        ylabel = curve.ylabel
        for split, name in (("train", "training"), ("test", "test")):
            if not all(f"{split}_{curve.key}" in h for h in history):
                continue  # a metric measured on one split only, e.g. a detector's mAP on the test set
            values = [h[f"{split}_{curve.key}"] for h in history]
            if curve.log:
                # A log axis keeps the late, small errors readable, but it has no place for 0: a perfect epoch is
                # drawn at the floor (and the label says so) rather than dropping the line off the chart.
                if min(values) < LOG_FLOOR:
                    ylabel = f"{curve.ylabel}, below {LOG_FLOOR:g} drawn at {LOG_FLOOR:g}"
                values = [max(v, LOG_FLOOR) for v in values]
            ax.plot(epochs, values, "o-", label=f"{name} {curve.name}", markersize=3)
        if curve.log:
            ax.set_yscale("log")
        ax.set_ylabel(ylabel)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole; a short run gets no 1.5
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"{title}\n{note}" if note else title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


class TensorBoard:
    """TensorBoard event files in the run folder's ``tensorboard/``.

    Raises:
        ImportError: The tensorboard package is missing.
    """

    def __init__(self, path: Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:
            raise ImportError("--tensorboard needs the tensorboard package: pip install tensorboard") from e
        self.writer = SummaryWriter(log_dir=str(path))

    def add(self, row: dict[str, Any], step: int) -> None:
        """Every number of an epoch's row of metrics.csv but its position."""
        for key, value in row.items():
            if isinstance(value, (int, float)) and key not in ("epoch", "step"):
                self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        self.writer.close()


class RunFolder:
    """Writes a run's metrics, curves, report and weights.

    Args:
        path: The run folder.
        title: The run's name in the plot and the report, e.g. ``"resnet20 on digits"``.
        curves: The panels of ``curves.png``.
        writes: Whether this process writes (the main process of a distributed run).
        note: A line under the title of ``curves.png``.
    """

    def __init__(self, path: Path, *, title: str, curves: Sequence[Curve], writes: bool, note: str = "") -> None:
        self.path = path
        self.title = title
        self.note = note
        self.curves = tuple(curves)
        self.writes = writes
        self.last_plot = time.perf_counter()

    def create(self) -> None:
        """Make the folder; the plotting interval starts now."""
        if self.writes:
            self.path.mkdir(parents=True, exist_ok=True)
        self.last_plot = time.perf_counter()

    def tensorboard(self) -> TensorBoard | None:
        return TensorBoard(self.path / "tensorboard") if self.writes else None

    def write_metrics(self, history: list[dict[str, Any]], *, plot: bool | None = None) -> None:
        """Rewrite metrics.csv and metrics.jsonl, and redraw curves.png when ``plot`` (None: every `PLOT_EVERY_S`)."""
        if not self.writes or not history:
            return
        with open(self.path / "metrics.csv", "w", newline="") as f:
            # Every column of any row: a run resumed from an older checkpoint may have gained one.
            columns = list(dict.fromkeys(key for row in history for key in row))
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(history)
        with open(self.path / "metrics.jsonl", "w") as f:
            for row in history:
                f.write(json.dumps(row) + "\n")
        if plot is None:
            plot = time.perf_counter() - self.last_plot >= PLOT_EVERY_S
        if plot:
            plot_curves(history, self.path / "curves.png", title=self.title, curves=self.curves, note=self.note)
            self.last_plot = time.perf_counter()

    def write_weights(self, model: nn.Module, name: str, *, metadata: dict[str, str] | None = None) -> None:
        if self.writes:
            from convzoo.weights import save_weights

            save_weights(model, self.path / name, metadata=metadata)

    def write_report(self, facts: list[str], results: list[tuple[str, str]]) -> None:
        """Write report.md: the run's facts as a list, its results as a table, then the curves."""
        if not self.writes:
            return
        lines = [f"# {self.title}", "", *(f"- {fact}" for fact in facts), "", "| result | value |", "|---|---:|"]
        lines += [f"| {name} | {value} |" for name, value in results]
        lines += ["", "![training curves](curves.png)", "", _FILES_NOTE]
        (self.path / "report.md").write_text("\n".join(lines) + "\n")
