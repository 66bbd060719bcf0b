"""Training speed: the engine against a plain PyTorch loop, and one CIFAR-10 epoch of ResNet-20.

1. Time to 97% test accuracy on the embedded digits: convzoo's engine (``convzoo train`` defaults: ResNet-20, the
   ``quick`` recipe, the step format measured at the start) against a plain loop with the same model and
   hyper-parameters fed by torchvision's DataLoader and v2 transforms, in float32 as such a loop is written. The
   epoch at which 97% is first reached varies with the seed (data order, augmentation), so each side runs the same
   seeds, interleaved, and the medians are compared. The engine also runs with ``amp="off", channels_last=False``,
   to show what the measured step format contributes. The engine's first run starts with an empty cache, so it
   pays for measuring the step formats; the others read the choice from the cache, as a user's later runs do.
2. One epoch of ResNet-20 on real CIFAR-10 (``../shared/data/cifar10`` when present) with the ``resnet-cifar``
   recipe: images per second, and the share of the epoch spent outside forward/backward/step (the same steps
   replayed on one fixed batch give the compute time).

    python benchmarks/bench_train.py [--seeds 24] [--write]
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

import convzoo
from convzoo.data import load_dataset
from convzoo.train import TrainConfig, Trainer, get_recipe
from convzoo.train.recipes import LearningRate
from convzoo.train.tuning import autocast
from report import update_section

TARGET = 97.0
GOAL = 0.5
CIFAR = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "cifar10"


class _UntilTarget(Trainer):
    """The engine, stopping at the end of the first epoch whose test accuracy reaches the target."""

    def _end_of_epoch(self, epoch, step, result):
        metrics = super()._end_of_epoch(epoch, step, result)
        if metrics["test_top1"] >= TARGET and not hasattr(self, "reached"):
            self.reached = time.perf_counter()
            self.total_steps = step  # ends the loop after this epoch
        return metrics


def engine_time_to_target(seed: int, **settings) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as tmp:
        # Building the trainer loads the data and the model and chooses the step format: part of the time, as the
        # plain loop's clock counts its own set-up.
        start = time.perf_counter()
        trainer = _UntilTarget(TrainConfig(out=f"{tmp}/run", progress=False, seed=seed, **settings))
        result = trainer.run()
        if not hasattr(trainer, "reached"):
            return math.inf, result.epochs_done
        return trainer.reached - start, result.epochs_done


class _Images(Dataset):
    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.transform(self.images[i]), self.labels[i]


def plain_time_to_target(seed: int) -> tuple[float, int]:
    """The same job written as a plain loop: DataLoader, v2 transforms, the recipe's optimiser and schedule."""
    start = time.perf_counter()
    torch.manual_seed(seed)
    recipe = get_recipe("quick")
    train, test = load_dataset("digits", image_size=32)
    mean, std = train.mean_std()
    train_tf = v2.Compose(
        [v2.RandomCrop(32, padding=recipe.crop_padding), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
    )
    test_tf = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])
    train_loader = DataLoader(
        _Images(train.images, train.labels, train_tf), batch_size=recipe.batch_size, shuffle=True, drop_last=True
    )
    test_loader = DataLoader(_Images(test.images, test.labels, test_tf), batch_size=256)
    model = convzoo.create_model("resnet20", in_chans=1, num_classes=10)
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    optimizer = torch.optim.SGD(
        [{"params": decay, "weight_decay": recipe.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=recipe.lr,
        momentum=recipe.momentum,
        nesterov=recipe.nesterov,
    )
    criterion = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    schedule = LearningRate(recipe, recipe.lr, recipe.epochs * len(train_loader), len(train_loader))
    step = 0
    for epoch in range(recipe.epochs):
        model.train()
        for x, y in train_loader:
            for group in optimizer.param_groups:
                group["lr"] = schedule(step)
            loss = criterion(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
        model.eval()
        correct = total = 0
        with torch.no_grad():
            for x, y in test_loader:
                correct += model(x).argmax(1).eq(y).sum().item()
                total += len(y)
        if 100 * correct / total >= TARGET:
            return time.perf_counter() - start, epoch + 1
    return math.inf, recipe.epochs


def cifar_epoch() -> dict[str, float] | None:
    if not (CIFAR / "train.npz").is_file():
        return None
    with tempfile.TemporaryDirectory() as tmp:
        config = TrainConfig(
            model="resnet20",
            data=str(CIFAR / "train.npz"),  # test.npz beside it is picked up as the test split
            recipe="resnet-cifar",
            recipe_overrides={"epochs": 1},
            out=f"{tmp}/run",
            progress=False,
        )
        trainer = Trainer(config)
        result = trainer.run()
        epoch = result.history[0]
        steps = epoch["step"]
        # The same number of optimiser steps on one fixed batch: forward, backward and step alone.
        model, optimizer = trainer.model, trainer.optimizer
        fmt = trainer.step_format
        x = torch.randn(128, 3, 32, 32)
        if fmt.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 10, (128,))
        model.train()
        start = time.perf_counter()
        for _ in range(steps):
            with autocast(trainer.device, fmt.amp):
                loss = trainer.task.criterion(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        compute = time.perf_counter() - start
    return {
        "images_per_s": epoch["images_per_s"],
        "epoch_s": epoch["seconds"],
        "compute_s": compute,
        "outside_share": max(0.0, 1 - compute / epoch["seconds"]),
        "test_top1": epoch["test_top1"],
        "format": fmt.label,
    }


def warm_up() -> None:
    """Imports and one-time initialisation (the optimiser's first import, oneDNN) outside every timed run."""
    model = convzoo.create_model("resnet20", in_chans=1, num_classes=10)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    nn.functional.cross_entropy(model(torch.randn(8, 1, 32, 32)), torch.randint(0, 10, (8,))).backward()
    optimizer.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=24)
    parser.add_argument("--write", action="store_true", help="replace the section in BENCHMARKS.md")
    args = parser.parse_args()
    warm_up()
    runs = {
        "engine": lambda seed: engine_time_to_target(seed),
        "engine-fp32": lambda seed: engine_time_to_target(seed, amp="off", channels_last=False),
        "plain": plain_time_to_target,
    }
    seconds = {label: [] for label in runs}
    epochs = {label: [] for label in runs}
    with tempfile.TemporaryDirectory() as home:
        os.environ["CONVZOO_HOME"] = home  # an empty cache: the first engine run measures the step formats
        for seed in range(args.seeds):
            order = list(runs) if seed % 2 == 0 else list(reversed(runs))
            for label in order:
                s, e = runs[label](seed)
                seconds[label].append(s)
                epochs[label].append(e)
                print(f"seed {seed} {label}: {s:.1f} s to {TARGET:g}% ({e} epochs)", flush=True)
    med = {label: statistics.median(v) for label, v in seconds.items()}
    mean = {label: statistics.fmean(v) for label, v in seconds.items()}
    med_epochs = {label: statistics.median(v) for label, v in epochs.items()}
    mean_epochs = {label: statistics.fmean(v) for label, v in epochs.items()}
    per_epoch = {label: statistics.median(s / e for s, e in zip(seconds[label], epochs[label])) for label in runs}
    names = {
        "engine": "convzoo engine, defaults (step format measured)",
        "engine-fp32": "convzoo engine, float32 contiguous",
        "plain": "plain loop (DataLoader + v2), float32",
    }
    lines = [
        f"| ResNet-20 on digits to {TARGET:g}% test accuracy | median time (s) | ratio | mean time (s) | ratio | "
        "median / mean epochs | time per epoch (s) | ratio |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label in runs:
        lines.append(
            f"| {names[label]} | {med[label]:.1f} | {med[label] / med['plain']:.2f} | {mean[label]:.1f} | "
            f"{mean[label] / mean['plain']:.2f} | {med_epochs[label]:g} / {mean_epochs[label]:.2f} | "
            f"{per_epoch[label]:.2f} | {per_epoch[label] / per_epoch['plain']:.2f} |"
        )
    lines += [
        "",
        f"Per seed (s): engine {', '.join(f'{v:.1f}' for v in seconds['engine'])} (the first includes measuring "
        f"the step formats); plain {', '.join(f'{v:.1f}' for v in seconds['plain'])}. Time per epoch is a run's "
        "time to the target over its epochs (start-up and evaluation included), median over seeds.",
    ]
    ratio = med["engine"] / med["plain"]
    lines.append(
        f"Goal: the engine's median time to the target at most {GOAL:.2f} of the plain loop's: "
        + ("met." if ratio <= GOAL else f"not met ({ratio:.2f}).")
    )
    epoch = cifar_epoch()
    if epoch is not None:
        lines += [
            "",
            "| one epoch of ResNet-20 on CIFAR-10 (resnet-cifar recipe) | value |",
            "|---|---:|",
            f"| step format (measured) | {epoch['format']} |",
            f"| training images/s | {epoch['images_per_s']:.0f} |",
            f"| epoch time (s) | {epoch['epoch_s']:.1f} |",
            f"| forward/backward/step alone (s) | {epoch['compute_s']:.1f} |",
            f"| share of the epoch outside forward/backward/step | {100 * epoch['outside_share']:.1f}% |",
        ]
    header = (
        f"Measured {datetime.date.today().isoformat()} on {platform.machine()} CPU, {torch.get_num_threads()} threads; "
        f"torch {torch.__version__}; seeds 0-{args.seeds - 1}, interleaved."
    )
    print(header)
    print("\n".join(lines))
    if args.write:
        marker = "## Training"
        section = "\n".join([f"{marker} (`benchmarks/bench_train.py`)", "", header, "", *lines, ""])
        update_section(marker, section)


if __name__ == "__main__":
    main()
