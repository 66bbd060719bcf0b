"""CPU inference of exported networks: eager PyTorch against torch.compile (inductor) and onnxruntime.

For each network and batch size, the three runtimes alternate in one process, the order rotating each repeat,
and the median of the repeats is reported as latency (ms per batch) and throughput (images/s), with the ratio
of each runtime's time to eager's (below 1: faster than eager). The ONNX file is written by
`convzoo.export.export_model` (checked against PyTorch) into a temporary folder. torch.compile's first call,
which compiles, is timed apart and reported as its compile time.

    python benchmarks/bench_export.py                  # print the table
    python benchmarks/bench_export.py --write          # and update BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

import convzoo
from convzoo.experiments.report import cpu_name
from convzoo.export import export_model
from report import update_section

MODELS = ["resnet20", "mobilenet_v1", "resnet50"]
RUNTIMES = ("eager", "compile", "onnxruntime")


def load() -> float:
    """The 1-minute load average (NaN where the system has none)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def make_steps(model: torch.nn.Module, session: object, batch: int) -> tuple[dict[str, Callable[[], object]], float]:
    """One forward pass per runtime on the same batch, and torch.compile's compile time (s) for this batch size."""
    x = torch.randn(batch, *model.card.input_size)
    feed = {session.get_inputs()[0].name: x.numpy()}
    torch._dynamo.reset()
    compiled = torch.compile(model)
    start = time.perf_counter()
    with torch.no_grad():
        compiled(x)
    compile_s = time.perf_counter() - start

    def eager() -> object:
        with torch.no_grad():
            return model(x)

    def compiled_step() -> object:
        with torch.no_grad():
            return compiled(x)

    return {"eager": eager, "compile": compiled_step, "onnxruntime": lambda: session.run(None, feed)}, compile_s


def time_interleaved(steps: dict[str, Callable[[], object]], repeats: int, warmup: int) -> dict[str, float]:
    """Median seconds per call of each step; the order of the steps rotates from one repeat to the next."""
    names = list(steps)
    for _ in range(warmup):
        for name in names:
            steps[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = time.perf_counter()
            steps[name]()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", default=MODELS, help=f"networks (default: {' '.join(MODELS)})")
    parser.add_argument("--batches", nargs="*", type=int, default=[1, 32], help="batch sizes (default: 1 32)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument(
        "--threads", type=int, default=torch.get_num_threads(), help="threads of every runtime (default: torch's)"
    )
    parser.add_argument("--write", action="store_true", help="replace the section in BENCHMARKS.md")
    args = parser.parse_args()
    import onnxruntime

    # The same number of threads for every runtime, so that the ratios compare the runtimes, not their thread pools.
    torch.set_num_threads(args.threads)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1

    load_before = load()
    started = time.perf_counter()
    lines = [
        "| network | input | eager (ms) | compile (ms) | onnxruntime (ms) | eager img/s | compile img/s "
        "| onnxruntime img/s | compile / eager | onnxruntime / eager | compile time (s) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            torch.manual_seed(0)
            model = convzoo.create_model(name).eval()
            path = export_model(model, Path(tmp) / f"{name}.onnx", format="onnx").path
            session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            size = "x".join(str(d) for d in model.card.input_size)
            for batch in args.batches:
                steps, compile_s = make_steps(model, session, batch)
                t = time_interleaved(steps, args.repeats, args.warmup)
                row = (
                    f"| {name} | {batch}x{size} | "
                    + " | ".join(f"{t[r] * 1e3:.1f}" for r in RUNTIMES)
                    + " | "
                    + " | ".join(f"{batch / t[r]:,.0f}" for r in RUNTIMES)
                    + f" | {t['compile'] / t['eager']:.2f} | {t['onnxruntime'] / t['eager']:.2f} | {compile_s:.0f} |"
                )
                print(row, flush=True)
                lines.append(row)
    load_after = load()
    header = (
        f"Measured {datetime.date.today().isoformat()} on {cpu_name()} ({os.cpu_count()} logical CPUs), "
        f"{args.threads} thread(s) for each runtime; torch {torch.__version__}, "
        f"onnxruntime {onnxruntime.__version__}. Median of {args.repeats} interleaved repeats after {args.warmup} "
        f"warm-up round(s); {time.perf_counter() - started:.0f} s in all. 1-minute load average {load_before:.2f} "
        f"before, {load_after:.2f} after."
    )
    print(header)
    if args.write:
        section = "\n".join(
            [
                "## Deployment runtimes on CPU (`benchmarks/bench_export.py`)",
                "",
                header,
                *(
                    [
                        "The machine was shared with other jobs during this run (a load average above its CPU count): "
                        "absolute times are pessimistic; the ratios, measured side by side, are the figures to read.",
                    ]
                    if max(load_before, load_after) >= 0.5 * (os.cpu_count() or 1)
                    else []
                ),
                "Ratio = runtime time / eager time: below 1.00 is faster. Compile time: torch.compile's first call.",
                "",
                *lines,
                "",
            ]
        )
        update_section("## Deployment runtimes on CPU", section)


if __name__ == "__main__":
    main()
