"""What a training run depends on: its settings, the recipe they select, and where the run's files go."""

from __future__ import annotations

import dataclasses
import datetime
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from convzoo.train.recipes import Recipe, get_recipe

__all__ = ["AMP_MODES", "TrainConfig", "build_recipe", "check_same_settings", "default_out_dir"]

AMP_MODES = ("auto", "off", "bf16", "fp16")
# Settings that may differ between an interrupted run and its resumption.
RESUMABLE_CHANGES = {"resume", "progress", "out", "tensorboard"}


@dataclass
class TrainConfig:
    """Everything a run depends on. Saved in every checkpoint; a resumed run must match it.

    Attributes:
        model: Registered model name.
        data: Data set name (``digits``, ``shapes``, ``cifar10``, ...) or a path (.npz file or image folder).
        data_root: Where named real data sets live (default: ``$CONVZOO_DATA``, else ``$CONVZOO_HOME/data``).
        classes: Train and test on these classes of the data set alone (indices or names), relabelled 0.. in the
            order given, e.g. one half of CIFAR-10 to pretrain a network that is then moved to the other half.
        recipe: Named recipe (see ``convzoo.train.RECIPES``).
        recipe_overrides: Recipe settings to change, e.g. ``{"epochs": 5, "lr": 0.05}``.
        model_args: Architecture overrides passed to ``create_model``.
        weights: Initial weights (path, URL or registered name), e.g. for fine-tuning.
        image_size: Side of the training images; default: the model card's input size.
        out: Run folder; default ``runs/<model>-<data>-<timestamp>``.
        resume: Continue the run in ``out`` from its ``last.pt``.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        amp: Mixed precision: ``"off"``, ``"bf16"`` (CPU or CUDA), ``"fp16"`` (CUDA, with loss scaling), or
            ``"auto"``: the fastest of those the device runs natively, measured at the start of the run (see
            `convzoo.train.tuning`; float32 in deterministic mode).
        channels_last: Train in the channels-last memory format; None: whichever is faster, measured with ``amp``
            (contiguous in deterministic mode).
        compile: Compile the model with ``torch.compile``.
        clip_grad: Clip the global gradient norm to this value.
        ema: Keep an exponential moving average of the weights with this decay (e.g. 0.999) and evaluate it.
        seed: Seed of weights, data order and augmentation.
        deterministic: Use deterministic kernels only (bitwise-reproducible runs).
        sync_bn: Synchronise batch-norm statistics across processes (CUDA only, as PyTorch's SyncBatchNorm).
        skip_corrupt: Skip unreadable images in image folders (counted) instead of failing.
        eval_batch_size: Batch size for evaluation.
        progress: Show progress bars (None: only on a terminal).
        tensorboard: Also write TensorBoard event files.
    """

    model: str = "resnet20"
    data: str = "digits"
    data_root: str | None = None
    classes: list[int | str] | None = None
    recipe: str = "quick"
    recipe_overrides: dict[str, Any] = field(default_factory=dict)
    model_args: dict[str, Any] = field(default_factory=dict)
    weights: str | None = None
    image_size: int | None = None
    out: str | None = None
    resume: bool = False
    device: str = "auto"
    amp: str = "auto"
    channels_last: bool | None = None
    compile: bool = False
    clip_grad: float | None = None
    ema: float | None = None
    seed: int = 0
    deterministic: bool = False
    sync_bn: bool = False
    skip_corrupt: bool = False
    eval_batch_size: int = 256
    progress: bool | None = None
    tensorboard: bool = False

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def build_recipe(config: TrainConfig) -> Recipe:
    """The recipe with the config's overrides.

    The learning rate follows a batch-size override linearly, and an ``epochs`` override replaces a length in steps.
    """
    recipe = get_recipe(config.recipe)
    overrides = dict(config.recipe_overrides)
    if "epochs" in overrides and "iterations" not in overrides:
        overrides["iterations"] = None  # a length given in epochs replaces a recipe's length in steps
    if "batch_size" in overrides and "lr" not in overrides:
        overrides["lr"] = recipe.lr * overrides["batch_size"] / recipe.batch_size
    return recipe.replace(**overrides) if overrides else recipe


def default_out_dir(config: TrainConfig) -> Path:
    data = Path(config.data).stem if os.sep in config.data or config.data.endswith(".npz") else config.data
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{config.model}-{data}-{stamp}"


def check_same_settings(saved: dict[str, Any], config: TrainConfig) -> None:
    """Refuse to resume a run whose checkpoint was written with other settings (see `RESUMABLE_CHANGES`).

    Raises:
        ValueError: Naming every changed setting, with its old and new value.
    """
    now = config.as_dict()
    changed = [
        f"{k}: {saved.get(k)!r} -> {now.get(k)!r}"
        for k in sorted(set(now) | set(saved))
        if k not in RESUMABLE_CHANGES and saved.get(k) != now.get(k)
    ]
    if changed:
        raise ValueError(
            "cannot resume with changed settings (start a new run to change them):\n  " + "\n  ".join(changed)
        )
