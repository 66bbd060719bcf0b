"""Time convzoo's residual networks against torchvision's, interleaved in one process.

For each network, memory format (contiguous, channels_last) and mode (forward in eval mode without gradients;
forward+backward in train mode), the two implementations alternate, each repeat in swapped order, and the median
of the repeats is reported with the ratio ours / torchvision (below 1: ours is faster).

    python benchmarks/bench_resnet.py                  # print the table
    python benchmarks/bench_resnet.py --write          # and update BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn as nn
import torchvision

import convzoo
from report import update_section

PEERS = ["resnet50", "resnext50_32x4d", "wide_resnet50_2"]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def make_step(model: nn.Module, x: torch.Tensor, backward: bool) -> Callable[[], None]:
    if backward:
        model.train()

        def step() -> None:
            model.zero_grad(set_to_none=True)
            model(x).float().sum().backward()

    else:
        model.eval()

        def step() -> None:
            with torch.no_grad():
                model(x)

    return step


def time_pair(
    steps: dict[str, Callable[[], None]], repeats: int, warmup: int, device: torch.device
) -> dict[str, float]:
    names = list(steps)
    for _ in range(warmup):
        for name in names:
            steps[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names if r % 2 == 0 else reversed(names):
            sync(device)
            start = time.perf_counter()
            steps[name]()
            sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--cifar-batch", type=int, default=128)
    parser.add_argument("--models", nargs="*", default=PEERS)
    parser.add_argument("--write", action="store_true", help="replace the table in BENCHMARKS.md")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)

    lines = [
        "| network | input | format | pass | convzoo (ms) | torchvision (ms) | ratio |",
        "|---|---|---|---|---:|---:|---:|",
    ]
    for name in args.models:
        ours = convzoo.create_model(name).to(device)
        theirs = getattr(torchvision.models, name)(weights=None).to(device)
        ours.load_state_dict(theirs.state_dict())
        for fmt in (torch.contiguous_format, torch.channels_last):
            ours, theirs = ours.to(memory_format=fmt), theirs.to(memory_format=fmt)
            x = torch.randn(args.batch, 3, 224, 224, device=device).contiguous(memory_format=fmt)
            for backward in (False, True):
                result = time_pair(
                    {"ours": make_step(ours, x, backward), "theirs": make_step(theirs, x, backward)},
                    args.repeats,
                    args.warmup,
                    device,
                )
                layout = "channels_last" if fmt == torch.channels_last else "contiguous"
                row = (
                    f"| {name} | {args.batch}x3x224x224 | {layout}"
                    f" | {'fwd+bwd' if backward else 'fwd'} | {result['ours'] * 1e3:.1f} | {result['theirs'] * 1e3:.1f}"
                    f" | {result['ours'] / result['theirs']:.3f} |"
                )
                print(row, flush=True)
                lines.append(row)
        del ours, theirs

    # ResNet-56 has no torchvision twin: the two memory formats are timed against each other instead.
    cifar_lines = [
        "| network | input | pass | contiguous (ms) | channels_last (ms) | images/s (best) |",
        "|---|---|---|---:|---:|---:|",
    ]
    model = convzoo.create_model("resnet56").to(device)
    twin = convzoo.create_model("resnet56").to(device).to(memory_format=torch.channels_last)
    twin.load_state_dict(model.state_dict())
    x = torch.randn(args.cifar_batch, 3, 32, 32, device=device)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    for backward in (False, True):
        result = time_pair(
            {"contiguous": make_step(model, x, backward), "channels_last": make_step(twin, x_cl, backward)},
            args.repeats,
            args.warmup,
            device,
        )
        best = min(result.values())
        row = (
            f"| resnet56 | {args.cifar_batch}x3x32x32 | {'fwd+bwd' if backward else 'fwd'} | "
            f"{result['contiguous'] * 1e3:.1f} | {result['channels_last'] * 1e3:.1f} | {args.cifar_batch / best:,.0f} |"
        )
        print(row, flush=True)
        cifar_lines.append(row)

    if device.type == "cuda":
        machine = torch.cuda.get_device_name(device)
    else:
        machine = f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"
    header = (
        f"Measured {datetime.date.today().isoformat()} on {machine}; torch {torch.__version__}, torchvision "
        f"{torchvision.__version__}; median of {args.repeats} interleaved repeats after {args.warmup} warm-up rounds."
    )
    print(header)
    if args.write:
        section = "\n".join(
            [
                "## Residual networks against torchvision (`benchmarks/bench_resnet.py`)",
                "",
                header,
                "Ratio = convzoo time / torchvision time: below 1.00 is faster, the goal is at most 1.02.",
                "",
                *lines,
                "",
                "ResNet-56 (no torchvision twin), memory formats against each other:",
                "",
                *cifar_lines,
                "",
            ]
        )
        update_section("## Residual networks against torchvision", section)


if __name__ == "__main__":
    main()
