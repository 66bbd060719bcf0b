"""Input pipeline throughput for CIFAR-10-sized training: convzoo's FastLoader against torchvision's DataLoader.

Both produce the same batches of 128 normalised float images with He et al.'s CIFAR augmentation - a random 32x32
crop from the image padded by 4 zero pixels, and a horizontal flip with probability 1/2 - from the same uint8 images
(the real CIFAR-10 training set from ../shared/data/cifar10 when present, else random images of the same shape).

- convzoo: `FastLoader` + `Augment(crop=32, padding=4, flip=True)`: one index_select and one batched gather per batch.
- torchvision: `DataLoader` over a dataset that applies `v2.Compose([RandomCrop(32, padding=4),
  RandomHorizontalFlip(), ToDtype(float32, scale=True), Normalize(mean, std)])` to each uint8 image tensor, with
  num_workers=0 and num_workers=2 (persistent workers, started before timing).

The peer without workers collates in the main process, so it is timed with torch's default intra-op threads and
with one; FastLoader assembles its batches with one thread (its default ``cpu_threads=1``).

Each repeat times one pass over the same images for every pipeline, in rotated order; the table reports the median
images/s and the ratio of FastLoader to the peer without workers and to the peer's best setting.

    python benchmarks/bench_data.py                  # print the table
    python benchmarks/bench_data.py --write          # and update the "Input pipeline" section of BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
import torchvision
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from convzoo.data import ArrayDataset, Augment, FastLoader, load_dataset
from report import update_section

ROOT = Path(__file__).resolve().parent.parent
REAL_CIFAR = ROOT.parent / "shared" / "data" / "cifar10" / "train.npz"
BATCH = 128


class PerImage(Dataset):
    """The per-image path: index one uint8 image (C, H, W) and transform it."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: Callable) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.images[i]), int(self.labels[i])


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def one_pass(batches: Iterable, device: torch.device) -> int:
    n = 0
    for x, y in batches:
        if x.device != device:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        n += y.shape[0]
    sync(device)
    return n


def load_images(n: int) -> tuple[ArrayDataset, str]:
    if REAL_CIFAR.is_file():
        train, _ = load_dataset(str(REAL_CIFAR))
        return train.subset(torch.arange(min(n, len(train)))), f"real CIFAR-10 (first {min(n, len(train)):,} images)"
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (n,), generator=g)
    data = ArrayDataset(images=images, labels=labels, classes=[str(i) for i in range(10)], name="random")
    return data, f"random uint8 images of 3x32x32 ({n:,}; real CIFAR-10 not found at {REAL_CIFAR})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="where the batches are needed (cpu or cuda)")
    parser.add_argument("--images", type=int, default=10_240, help="images per pass (80 batches of 128)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--workers", type=int, nargs="*", default=[0, 2], help="num_workers settings of the peer")
    parser.add_argument("--write", action="store_true", help="replace the Input pipeline section of BENCHMARKS.md")
    args = parser.parse_args()
    device = torch.device(args.device)
    default_threads = torch.get_num_threads()

    data, source = load_images(args.images)
    mean, std = data.mean_std()
    ours = FastLoader(
        data,
        batch_size=BATCH,
        shuffle=True,
        augment=Augment(crop=32, padding=4, flip=True, mean=mean, std=std),
        device=device,
        drop_last=True,
    )
    peer_transform = v2.Compose(
        [
            v2.RandomCrop(32, padding=4),
            v2.RandomHorizontalFlip(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(list(mean), list(std)),
        ]
    )
    peer_data = PerImage(data.images, data.labels, peer_transform)
    epoch = iter(range(1_000_000))

    def fast() -> Iterable:
        ours.set_epoch(next(epoch))
        return ours

    # (label, main-process intra-op threads, a fresh pass). Without workers the peer collates in the main process,
    # so it is timed with torch's default threads and with one; workers run one thread each whatever the setting.
    pipelines: list[tuple[str, int, Callable[[], Iterable]]] = [("convzoo FastLoader", default_threads, fast)]
    for workers in args.workers:
        loader = DataLoader(
            peer_data,
            batch_size=BATCH,
            shuffle=True,
            drop_last=True,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=device.type == "cuda",
        )
        settings = sorted({default_threads, 1}, reverse=True) if workers == 0 else [default_threads]
        for threads in settings:
            label = f"torchvision DataLoader, num_workers={workers}"
            pipelines.append((label, threads, lambda loader=loader: loader))

    def timed_pass(threads: int, make: Callable[[], Iterable]) -> float:
        torch.set_num_threads(threads)
        start = time.perf_counter()
        n = one_pass(make(), device)
        return n / (time.perf_counter() - start)

    for _ in range(args.warmup):
        for _, threads, make in pipelines:
            timed_pass(threads, make)
    rates: list[list[float]] = [[] for _ in pipelines]
    for r in range(args.repeats):
        order = list(range(len(pipelines)))
        for i in order[r % len(order) :] + order[: r % len(order)]:
            rates[i].append(timed_pass(pipelines[i][1], pipelines[i][2]))
    torch.set_num_threads(default_threads)
    median = [statistics.median(v) for v in rates]
    ours_rate = median[0]
    peers = list(range(1, len(pipelines)))
    best = max(peers, key=lambda i: median[i])
    plain = next(i for i in peers if pipelines[i][0].endswith("num_workers=0") and pipelines[i][1] == default_threads)

    lines = [
        "| pipeline | main-process threads | images/s (median) | FastLoader speed-up |",
        "|---|---:|---:|---:|",
        f"| {pipelines[0][0]} | {default_threads} | {ours_rate:,.0f} | - |",
    ]
    lines += [
        f"| {pipelines[i][0]} | {pipelines[i][1]} | {median[i]:,.0f} | {ours_rate / median[i]:.1f}x |" for i in peers
    ]
    best_setting = f"{pipelines[best][0].split(', ')[-1]}, {pipelines[best][1]} thread(s)"
    summary = (
        f"FastLoader against DataLoader with num_workers=0: **{ours_rate / median[plain]:.1f}x**; against the "
        f"peer's best setting ({best_setting}): **{ours_rate / median[best]:.1f}x** (goal: at least 3x)."
    )
    if device.type == "cuda":
        machine = f"{torch.cuda.get_device_name(device)}, batches made on the GPU"
    else:
        machine = f"{platform.processor() or platform.machine()} CPU, {os.cpu_count()} cores"
    header = (
        f"Measured {datetime.date.today().isoformat()} on {machine}; torch {torch.__version__}, torchvision "
        f"{torchvision.__version__}; {source}, batch {BATCH}, random crop 32 with padding 4 + horizontal flip + "
        f"normalise; median of {args.repeats} interleaved passes of {args.images:,} images after {args.warmup} "
        f"warm-up pass(es). FastLoader assembles batches with one intra-op thread (its default)."
    )
    print("\n".join(lines))
    print()
    print(summary)
    print(header)
    if args.write:
        section = "\n".join(
            [
                "## Input pipeline (`benchmarks/bench_data.py`)",
                "",
                header,
                "",
                *lines,
                "",
                summary,
                "",
            ]
        )
        update_section("## Input pipeline", section)


if __name__ == "__main__":
    main()
