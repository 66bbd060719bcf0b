"""Networks side by side: cost, measured speed and reported accuracy, and the accuracy-against-compute chart.

The chart follows Canziani, Paszke and Culurciello, "An Analysis of Deep Neural Network Models for Practical
Applications" (2017): top-1 accuracy against multiply-adds, one bubble per network, its area proportional to the
number of parameters.
"""

from __future__ import annotations

import math
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from convzoo.analysis.summary import summary
from convzoo.registry import get_model_card

# Slowest over fastest timed run above which a throughput is flagged. On an idle machine the timed passes of a
# network agree within a few percent; load from another process slows some of them, and a figure measured so can be
# far off (ResNet-20 gave 8.7 images/s while another process held one of two cores, against 1,508 idle). Load that
# slows every pass alike leaves no spread and is not detected.
NOISY_SPREAD = 1.5


class NoisyMeasurementWarning(UserWarning):
    """The timed runs of a throughput measurement disagree: the machine was probably busy with something else."""


@dataclass
class Comparison:
    """One network's row of the comparison."""

    name: str
    family: str
    year: int
    input_size: tuple[int, int, int]
    params: int
    macs: int
    activation_bytes: int
    top1: float | None
    top1_dataset: str | None
    images_per_s: float | None = None
    latency_ms: float | None = None
    spread: float | None = None
    noisy: bool = False


@dataclass(frozen=True)
class Timing:
    """How throughput was measured."""

    device: str
    batch_size: int
    threads: int
    warmup: int
    repeats: int

    def __str__(self) -> str:
        return (
            f"{self.device}, batch {self.batch_size}, {self.threads} threads, median of {self.repeats} runs after "
            f"{self.warmup} warm-up"
        )


@dataclass(frozen=True)
class Throughput:
    """A throughput measurement: the median of the timed runs, and how far the runs disagreed.

    Attributes:
        images_per_s: Images per second at the median batch time.
        latency_ms: Median milliseconds per batch.
        spread: Slowest over fastest timed run (1.0 for one run).
        noisy: Whether ``spread`` exceeds the threshold it was measured against: load from elsewhere on the machine
            probably slowed some runs, and the figures should be measured again.
    """

    images_per_s: float
    latency_ms: float
    spread: float
    noisy: bool


def measure_throughput(
    model: torch.nn.Module,
    input_size: Sequence[int],
    *,
    batch_size: int = 8,
    warmup: int = 2,
    repeats: int = 5,
    device: str | torch.device = "cpu",
    noisy_spread: float = NOISY_SPREAD,
    timer: Callable[[], float] = time.perf_counter,
    on_run: Callable[[], object] | None = None,
) -> Throughput:
    """Inference speed of ``model``: the median of ``repeats`` timed runs after ``warmup`` untimed ones.

    A measurement whose slowest timed run is more than ``noisy_spread`` times its fastest is flagged ``noisy``, with
    a `NoisyMeasurementWarning`.

    Args:
        model: The network; it is moved to ``device`` and put in eval mode.
        input_size: (C, H, W) of one image.
        batch_size: Images per forward pass.
        warmup: Untimed passes first (kernel selection, caches).
        repeats: Timed passes.
        device: Where to run.
        noisy_spread: Slowest over fastest timed pass above which the measurement is flagged.
        timer: The clock, in seconds.
        on_run: Called after every pass, warm-up included (to advance a progress bar).
    """
    if batch_size < 1 or warmup < 0 or repeats < 1:
        raise ValueError(
            f"throughput needs batch_size >= 1, warmup >= 0 and repeats >= 1; got {batch_size}, {warmup}, {repeats}"
        )
    device = torch.device(device)
    model = model.to(device).eval()
    x = torch.randn((batch_size, *input_size), device=device)
    times = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = timer()
            model(x)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            elapsed = timer() - start
            if i >= warmup:
                times.append(elapsed)
            if on_run is not None:
                on_run()
    median = statistics.median(times)
    spread = max(times) / min(times) if min(times) > 0 else math.inf
    noisy = spread > noisy_spread
    if noisy:
        name = getattr(model, "model_name", type(model).__name__)
        warnings.warn(
            f"{name}: the {repeats} timed runs disagree (slowest {max(times) * 1e3:.1f} ms, fastest "
            f"{min(times) * 1e3:.1f} ms per batch, x{spread:.2f}); another process was probably using the machine, "
            f"so its throughput is unreliable: measure again on an idle machine",
            NoisyMeasurementWarning,
            stacklevel=2,
        )
    return Throughput(batch_size / median, median * 1e3, spread, noisy)


def compare_models(
    names: Iterable[str],
    *,
    throughput: bool = True,
    timing: Timing | None = None,
    progress: bool = True,
    noisy_spread: float = NOISY_SPREAD,
) -> list[Comparison]:
    """Cost, reported accuracy and (optionally) measured throughput of each named model at its default input size.

    Args:
        names: Registered model names.
        throughput: Whether to measure speed (the slow part: ``timing.warmup + timing.repeats`` passes per model).
        timing: How to measure it; default: CPU, batch 8, 2 warm-up and 5 timed passes.
        progress: Show a progress bar on stderr, advancing with every pass (never when stderr is not a terminal).
        noisy_spread: Slowest over fastest timed pass above which a row is flagged ``noisy`` (see
            `measure_throughput`).
    """
    from tqdm import tqdm

    from convzoo.factory import create_model

    names = list(names)
    rows = []
    timing = timing or Timing("cpu", 8, torch.get_num_threads(), 2, 5)
    per_model = 1 + (timing.warmup + timing.repeats if throughput else 0)
    with tqdm(
        total=len(names) * per_model,
        desc="comparing",
        unit="pass",
        file=sys.stderr,
        disable=not progress or None,
        leave=False,
    ) as bar:
        for name in names:
            bar.set_postfix_str(name)
            card = get_model_card(name)
            s = summary(name, depth=0)
            bar.update()
            top = next((r for r in card.reported if r.metric in ("top-1 error", "top-1 accuracy")), None)
            row = Comparison(
                name=name,
                family=card.family,
                year=card.paper.year,
                input_size=card.input_size,
                params=s.total_params,
                macs=s.total_macs,
                activation_bytes=s.activation_bytes,
                top1=card.top1_accuracy(),
                top1_dataset=top.dataset if top else None,
            )
            if throughput:
                torch.manual_seed(0)
                model = create_model(name)
                measured = measure_throughput(
                    model,
                    card.input_size,
                    batch_size=timing.batch_size,
                    warmup=timing.warmup,
                    repeats=timing.repeats,
                    device=timing.device,
                    noisy_spread=noisy_spread,
                    on_run=bar.update,
                )
                row.images_per_s, row.latency_ms = measured.images_per_s, measured.latency_ms
                row.spread, row.noisy = measured.spread, measured.noisy
                del model
            rows.append(row)
    return rows


def comparison_table(rows: Sequence[Comparison], timing: Timing | None = None) -> str:
    """A fixed-width table of the comparison; a throughput whose timed runs disagreed is marked ``!``."""
    header = ("model", "input", "params", "mult-adds", "act. mem/img", "images/s", "spread", "top-1 %", "on")
    body = [
        (
            r.name,
            str(r.input_size[-1]),
            f"{r.params / 1e6:.2f}M",
            f"{r.macs / 1e9:.2f}G",
            f"{r.activation_bytes / 2**20:.1f} MB",
            (f"{r.images_per_s:.1f}" + ("!" if r.noisy else "")) if r.images_per_s is not None else "-",
            f"x{r.spread:.2f}" if r.spread is not None else "-",
            f"{r.top1:.2f}" if r.top1 is not None else "-",
            r.top1_dataset or "-",
        )
        for r in rows
    ]
    widths = [max(len(c) for c in col) for col in zip(header, *body)]
    lines = [
        "  ".join(f"{c:>{w}}" if i else f"{c:<{w}}" for i, (c, w) in enumerate(zip(cells, widths)))
        for cells in (header, *body)
    ]
    lines.insert(1, "-" * len(lines[0]))
    if timing is not None and any(r.images_per_s is not None for r in rows):
        lines.append(f"Throughput measured on {timing}; spread: slowest over fastest timed run.")
    noisy = [r.name for r in rows if r.noisy]
    if noisy:
        lines.append(
            f"! Unreliable: the timed runs of {', '.join(noisy)} disagree; the machine was probably busy with "
            f"something else. Measure again on an idle machine."
        )
    lines.append("Top-1: accuracy the paper reports on the data set named (100 - top-1 error).")
    return "\n".join(lines)


def comparison_records(rows: Sequence[Comparison]) -> list[dict[str, object]]:
    """The rows as plain dictionaries (for CSV or JSON)."""
    return [asdict(r) for r in rows]


def plot_accuracy_vs_compute(
    rows: Sequence[Comparison], path: str | os.PathLike[str], *, title: str = ""
) -> list[Path]:
    """Save the accuracy-against-multiply-adds bubble chart as PNG and SVG (``path`` without or with either suffix).

    One chart per data set the reported accuracies come from, since ImageNet and CIFAR numbers do not share an axis.

    Returns:
        The files written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    stem = path.with_suffix("") if path.suffix in (".png", ".svg") else path
    stem.parent.mkdir(parents=True, exist_ok=True)
    plotted = [r for r in rows if r.top1 is not None]
    if not plotted:
        raise ValueError("none of these models has a reported top-1 result to plot; nothing to chart")
    datasets = sorted({r.top1_dataset for r in plotted})
    fig, axes = plt.subplots(1, len(datasets), figsize=(7.5 * len(datasets), 6), squeeze=False)
    families = sorted({r.family for r in plotted})
    colours = {f: plt.get_cmap("tab10")(i % 10) for i, f in enumerate(families)}
    largest = max(r.params for r in plotted)
    for ax, dataset in zip(axes[0], datasets):
        subset = [r for r in plotted if r.top1_dataset == dataset]
        for r in subset:
            ax.scatter(
                r.macs / 1e9,
                r.top1,
                s=40 + 1500 * r.params / largest,
                color=colours[r.family],
                alpha=0.45,
                edgecolors="black",
                linewidths=0.5,
            )
            ax.annotate(
                r.name,
                (r.macs / 1e9, r.top1),
                fontsize=7,
                ha="center",
                va="bottom",
                xytext=(0, 4),
                textcoords="offset points",
            )
        ax.set_xscale("log")
        ax.set_xlabel("multiply-adds per image (G, log scale)")
        ax.set_ylabel(f"top-1 accuracy on {dataset} (%), as reported")
        ax.set_title(title or f"Accuracy against compute ({dataset}); bubble area ~ parameters")
        ax.grid(True, which="both", alpha=0.3)
    handles = [plt.Line2D([], [], marker="o", linestyle="", color=colours[f], label=f) for f in families]
    axes[0][-1].legend(handles=handles, title="family", fontsize=8, loc="lower right")
    fig.tight_layout()
    written = []
    for suffix in (".png", ".svg"):
        target = stem.with_suffix(suffix)
        fig.savefig(target, dpi=130)
        written.append(target)
    plt.close(fig)
    return written
