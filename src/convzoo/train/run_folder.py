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

__all__ = ["PLOT_EVERY_S", "RunFolder", "TensorBoard", "plot_curves"]

# Drawing curves.png costs about half a second on a small CPU; during a run it is redrawn at most this often (and
# always at the end, on Ctrl-C and on divergence), so short epochs are not slowed by plotting.
PLOT_EVERY_S = 30.0

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
) -> None:
    """Training and test metrics against epochs, one panel per curve, as a PNG (error and loss by default)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, len(curves), figsize=(5.5 * len(curves), 4), squeeze=False)
    for ax, curve in zip(axes[0], curves):
        ax.plot(epochs, [h[f"train_{curve.key}"] for h in history], "o-", label=f"training {curve.name}", markersize=3)
        ax.plot(epochs, [h[f"test_{curve.key}"] for h in history], "o-", label=f"test {curve.name}", markersize=3)
        ax.set_ylabel(curve.ylabel)
    for ax in axes[0]:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    for ax, curve in zip(axes[0], curves):
        if curve.log:
            ax.set_yscale("log" if min(h[f"test_{curve.key}"] for h in history) > 0 else "linear")
    fig.suptitle(title)
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
    """

    def __init__(self, path: Path, *, title: str, curves: Sequence[Curve], writes: bool) -> None:
        self.path = path
        self.title = title
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
            writer = csv.DictWriter(f, fieldnames=list(history[0]))
            writer.writeheader()
            writer.writerows(history)
        with open(self.path / "metrics.jsonl", "w") as f:
            for row in history:
                f.write(json.dumps(row) + "\n")
        if plot is None:
            plot = time.perf_counter() - self.last_plot >= PLOT_EVERY_S
        if plot:
            plot_curves(history, self.path / "curves.png", title=self.title, curves=self.curves)
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
