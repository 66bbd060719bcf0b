"""Time a per-layer summary of ResNet-152 at 224x224: convzoo's against torchinfo's, interleaved in one process.

convzoo builds the network on the meta device (no memory, no arithmetic) and tracks receptive fields and memory as
well; torchinfo runs a real forward pass on the CPU. torchinfo is not a convzoo dependency: install it to compare.

    python benchmarks/bench_summary.py [--write]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import time

import torch
import torchvision

import convzoo
from report import update_section

MODELS = ["resnet152", "vgg19", "wide_resnet101_2"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--write", action="store_true", help="replace the section in BENCHMARKS.md")
    args = parser.parse_args()
    try:
        import torchinfo
    except ImportError:
        torchinfo = None
    lines = ["| network | convzoo.summary, meta (s) | torchinfo.summary, CPU (s) | ratio |", "|---|---:|---:|---:|"]
    # torchinfo's real forward pass uses every thread; other work on the machine slows it more than it slows the
    # single-threaded trace, so the load is part of the result.
    load_before = os.getloadavg()[0]
    for name in MODELS:
        if name not in convzoo.list_models():
            continue
        ours, theirs = [], []
        reference = getattr(torchvision.models, name)() if torchinfo is not None else None
        for r in range(args.repeats + 1):
            order = ("ours", "theirs") if r % 2 == 0 else ("theirs", "ours")
            for who in order:
                start = time.perf_counter()
                if who == "ours":
                    convzoo.summary(name, depth=3)
                elif reference is not None:
                    torchinfo.summary(reference, input_size=(1, 3, 224, 224), depth=3, verbose=0)
                elapsed = time.perf_counter() - start
                if r > 0:  # the first round warms up imports and caches
                    (ours if who == "ours" else theirs).append(elapsed)
        a = statistics.median(ours)
        b = statistics.median(theirs) if theirs else None
        row = f"| {name} | {a:.2f} | {b:.2f} | {a / b:.2f} |" if b else f"| {name} | {a:.2f} | - | - |"
        print(row, flush=True)
        lines.append(row)
    header = (
        f"Measured {datetime.date.today().isoformat()} on {os.cpu_count()}-core {platform.machine()} CPU, "
        f"{torch.get_num_threads()} threads; "
        f"torch {torch.__version__}"
        + (f", torchinfo {torchinfo.__version__}" if torchinfo else "")
        + f"; median of {args.repeats} interleaved repeats after one warm-up round; depth 3, 224x224; "
        f"1-minute load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after."
    )
    print(header)
    if args.write:
        marker = "## Per-layer summary"
        section = "\n".join(
            [
                f"{marker} (`benchmarks/bench_summary.py`)",
                "",
                header,
                "convzoo's time includes building the network on the meta device and tracking receptive fields, "
                "activation and training memory; torchinfo's is a forward pass of a network built beforehand.",
                "Ratio = convzoo time / torchinfo time: below 1.00 is faster, the goal is at most 1.00.",
                "",
                *lines,
                "",
            ]
        )
        update_section(marker, section)


if __name__ == "__main__":
    main()
