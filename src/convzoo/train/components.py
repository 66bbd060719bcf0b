"""The parts a `Trainer` is built from: data and loaders, the network, its optimiser and the step's numeric format.

Everything here is checked before the run folder is touched.
"""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from convzoo.train import distributed as dist_utils
from convzoo.train.config import TrainConfig
from convzoo.train.recipes import Recipe
from convzoo.train.tuning import StepFormat, candidate_formats, resolve_step_format

__all__ = [
    "ModelEma",
    "RunData",
    "build_ema",
    "build_model",
    "build_optimizer",
    "check_device",
    "choose_step_format",
    "load_run_data",
    "process_switches",
    "wrap_model",
]


def check_device(config: TrainConfig, device: torch.device) -> None:
    """Refuse settings ``device`` cannot run.

    Raises:
        ValueError: fp16 or ``sync_bn`` without CUDA.
    """
    if config.amp == "fp16" and device.type != "cuda":
        raise ValueError("fp16 mixed precision needs CUDA; use --amp bf16 on the CPU")
    if config.sync_bn and device.type != "cuda":
        # DistributedDataParallel accepts SyncBatchNorm layers only on GPUs.
        raise ValueError(
            f"--sync-bn needs CUDA devices (PyTorch's SyncBatchNorm does not run on {device.type}); "
            f"on the CPU each process normalises its own share of the batch, so drop --sync-bn"
        )


@contextlib.contextmanager
def process_switches(config: TrainConfig) -> Iterator[None]:
    """Deterministic kernels while inside, when the config asks for them; the process's own switches afterwards."""
    previous = torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark
    try:
        if config.deterministic:
            torch.use_deterministic_algorithms(True)
            torch.backends.cudnn.benchmark = False
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0])
        torch.backends.cudnn.benchmark = previous[1]


@dataclass
class RunData:
    """The data sets of a run and the loaders that feed them, this process's share of each batch included.

    Attributes:
        train_set: Training images.
        test_set: Test images.
        train_loader: Augmented, shuffled training batches of this process.
        test_loader: This process's share of the test set, unaugmented: every ``world_size``-th image.
        mean: Per-channel mean the images are normalised with.
        std: Per-channel standard deviation the images are normalised with.
        size: Side of the images fed to the network.
        batch_size: Images per training batch on this process.
    """

    train_set: Any
    test_set: Any
    train_loader: Any
    test_loader: Any
    mean: tuple[float, ...]
    std: tuple[float, ...]
    size: int
    batch_size: int

    @property
    def in_chans(self) -> int:
        return self.train_set.image_size[0]

    @property
    def num_classes(self) -> int:
        return self.train_set.num_classes

    def description(self) -> dict[str, Any]:
        """What predicting needs to know of the data (saved in checkpoints)."""
        return {
            "classes": list(self.train_set.classes),
            "image_size": list(self.train_set.image_size),
            "mean": list(self.mean),
            "std": list(self.std),
        }


def load_run_data(
    config: TrainConfig,
    recipe: Recipe,
    size: int,
    dist: dist_utils.DistInfo,
    device: torch.device,
    *,
    datasets: tuple[Any, Any] | None = None,
    extras: tuple[str, ...] = (),
    task: str | None = None,
    prepare: Callable[[Any], Any] | None = None,
) -> RunData:
    """Load the data sets and build the loaders of this process.

    Args:
        config: The run's settings; ``config.data`` names the data set unless ``datasets`` are given.
        recipe: The recipe (batch size, augmentation).
        size: Side of the images fed to the network.
        dist: This process's place in the run.
        device: Where the batches are made.
        datasets: (train, test) splits prepared by the caller, `ArrayDataset` images or `FeatureSet` vectors, in
            place of loading ``config.data`` (which then only names them).
        extras: Per-image tensors of the splits' ``extras`` that the loaders yield after the labels.
        task: What the network does (its model card's ``task``), which decides how a data folder is read.
        prepare: Applied to each split before the loaders are built (`Task.prepare_data`).

    Raises:
        ValueError: The batch does not divide over the processes, or the training set holds less than one batch.
    """
    from convzoo.data import Augment, FastLoader, FeatureSet, load_dataset

    if datasets is None:
        train_set, test_set = load_dataset(
            config.data,
            root=config.data_root,
            image_size=size,
            seed=config.seed,
            skip_corrupt=config.skip_corrupt,
            task=task,
        )
    else:
        train_set, test_set = datasets
    if config.classes:
        train_set, test_set = train_set.select_classes(config.classes), test_set.select_classes(config.classes)
    if prepare is not None:
        train_set, test_set = prepare(train_set), prepare(test_set)
    features = isinstance(train_set, FeatureSet)
    mean, std = ((), ()) if features else train_set.mean_std()
    if recipe.batch_size % dist.world_size:
        raise ValueError(
            f"the global batch size {recipe.batch_size} must divide evenly over {dist.world_size} processes"
        )
    per_rank = recipe.batch_size // dist.world_size
    augment = (
        None
        if features
        else Augment(
            crop=size if (recipe.crop_padding or recipe.random_resized_crop) else None,
            padding=recipe.crop_padding,
            flip=recipe.flip,
            random_resized_crop=recipe.random_resized_crop,
            out_size=size,
            color_jitter=recipe.color_jitter,
            mean=mean,
            std=std,
        )
    )
    train_loader = FastLoader(
        train_set,
        batch_size=per_rank,
        shuffle=True,
        augment=augment,
        device=device,
        drop_last=True,
        seed=config.seed,
        rank=dist.rank,
        world_size=dist.world_size,
        extras=extras,
    )
    if len(train_loader) == 0:
        raise ValueError(
            f"the training set has {len(train_set)} images, fewer than one batch of {per_rank}; lower --batch-size"
        )
    # Each process evaluates every world_size-th test image and the metrics' sums are added up over processes: the
    # shards are disjoint and cover the set once (no padding), so the result is that of the whole set.
    test_shard = test_set.subset(torch.arange(dist.rank, len(test_set), dist.world_size)) if dist.enabled else test_set
    test_loader = FastLoader(
        test_shard,
        batch_size=config.eval_batch_size,
        shuffle=False,
        augment=None if features else Augment(mean=mean, std=std, out_size=size),
        device=device,
        extras=extras,
    )
    return RunData(train_set, test_set, train_loader, test_loader, mean, std, size, per_rank)


def build_model(config: TrainConfig, data: RunData, dist: dist_utils.DistInfo, device: torch.device) -> nn.Module:
    """The network for ``data``, with the config's initial weights, on ``device``."""
    from convzoo.factory import create_model

    model = create_model(
        config.model, num_classes=data.num_classes, in_chans=data.in_chans, weights=config.weights, **config.model_args
    )
    if config.sync_bn and dist.enabled:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model.to(device)


class ModelEma(nn.Module):
    """An exponential moving average of a model's weights, with a warm-up, to evaluate and export instead of them.

    The decay of update ``t`` (counted from 0) is ``min(decay, (1 + t) / (10 + t))``: TensorFlow's
    ``ExponentialMovingAverage`` rule with ``num_updates``, one of the two warm-ups timm's ``ModelEmaV3`` offers (the
    other is a power law). Without a warm-up a decay of 0.999 keeps about ``0.999**t`` of the random initialisation
    after ``t`` steps, so a run of a few hundred steps would export a network that guesses. With it, the average
    spans roughly the last tenth of a short run and the last ``1 / (1 - decay)`` steps of a long one.

    Parameters are averaged; buffers (batch-norm running statistics, counters) are copied from the model at every
    update, as timm's ``ModelEmaV3(exclude_buffers=True)`` does: the running statistics are already an average
    over recent batches, and a slow average of them would lag far behind the weights early in a run.

    Args:
        model: The network whose weights are averaged (unwrapped: not in DistributedDataParallel or compiled).
        decay: The decay once the warm-up is over, e.g. 0.999.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        super().__init__()
        if not 0.0 < decay < 1.0:
            raise ValueError(f"the EMA decay must lie between 0 and 1 (e.g. 0.999); got {decay}")
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay
        # Saved with the weights, so a resumed run continues the warm-up where it stopped.
        self.register_buffer("n_updates", torch.zeros((), dtype=torch.long))

    def current_decay(self) -> float:
        """The decay the next update uses."""
        t = int(self.n_updates)
        return min(self.decay, (1 + t) / (10 + t))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards ``model``'s weights and take its buffers."""
        weight = 1.0 - self.current_decay()
        for average, current in zip(self.module.parameters(), model.parameters(), strict=True):
            average.lerp_(current.detach(), weight)
        for average, current in zip(self.module.buffers(), model.buffers(), strict=True):
            average.copy_(current)
        self.n_updates += 1

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        # Checkpoints of torch's AveragedModel, which this replaces, count the updates as n_averaged.
        if prefix + "n_averaged" in state_dict and prefix + "n_updates" not in state_dict:
            state_dict[prefix + "n_updates"] = state_dict.pop(prefix + "n_averaged").reshape(())
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def build_ema(model: nn.Module, decay: float | None) -> ModelEma | None:
    """The moving average of ``model``'s weights the run keeps (None without a decay); see `ModelEma`."""
    return ModelEma(model, decay) if decay else None


def build_optimizer(
    model: nn.Module, recipe: Recipe, lr_scale: Callable[[str], float] | None = None
) -> torch.optim.Optimizer:
    """The recipe's optimiser over the parameters that train (``requires_grad``).

    Norm and bias parameters go without weight decay unless the recipe decays them. ``lr_scale`` gives a parameter
    (by name) a factor of the recipe's learning rate; each parameter group records its factor as ``"lr_scale"``,
    which the `Trainer` applies at every step.
    """
    groups: dict[tuple[bool, float], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        decays = not (p.ndim <= 1 and not recipe.decay_norm_and_bias)
        scale = float(lr_scale(name)) if lr_scale is not None else 1.0
        if scale < 0:
            raise ValueError(f"the learning rate factor of {name} must not be negative; got {scale}")
        groups.setdefault((decays, scale), []).append(p)
    if not groups:
        raise ValueError("nothing to train: every parameter of the network is frozen (requires_grad is off)")
    groups = [
        {"params": params, "weight_decay": recipe.weight_decay if decays else 0.0, "lr_scale": scale}
        for (decays, scale), params in sorted(groups.items(), key=lambda kv: (not kv[0][0], -kv[0][1]))
    ]
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=recipe.lr, momentum=recipe.momentum, nesterov=recipe.nesterov)
    return torch.optim.AdamW(groups, lr=recipe.lr, betas=(recipe.momentum, 0.999))


def wrap_model(model: nn.Module, config: TrainConfig, dist: dist_utils.DistInfo, device: torch.device) -> nn.Module:
    """What the training step calls: ``model`` in DistributedDataParallel across processes, compiled if asked."""
    net = model
    if dist.enabled:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if config.compile:
        net = torch.compile(net)
    return net


def choose_step_format(
    config: TrainConfig,
    model: nn.Module,
    data: RunData,
    *,
    saved: dict[str, Any] | None,
    dist: dist_utils.DistInfo,
    device: torch.device,
    criterion: nn.Module | None,
    measure: bool = True,
) -> tuple[StepFormat, str]:
    """Precision and memory format of the training step, and how they were chosen (for the log and report).

    Args:
        config: The run's settings; ``amp="auto"`` and ``channels_last=None`` leave the choice to a measurement.
        model: The network, on its device.
        data: The run's data (the measured batch has its shape).
        saved: The checkpoint a resumed run continues from (it keeps the format it began with).
        dist: This process's place in the run; rank 0 measures and tells the others.
        device: The training device.
        criterion: The loss the network is timed with (see `Task.criterion`).
        measure: Whether a timed classification step may choose the format (`Task.measures_step_format`).
    """
    left_open = config.amp == "auto" or config.channels_last is None
    if saved is not None and "step_format" in saved:
        fmt = StepFormat(**saved["step_format"])
        return fmt, fmt.label + (" (as the run began)" if left_open else "")
    if config.deterministic or saved is not None:
        # A deterministic run must not depend on a timing; a checkpoint without a recorded format predates
        # the automatic choice, whose defaults were float32 and contiguous.
        fmt = StepFormat("off" if config.amp == "auto" else config.amp, bool(config.channels_last) and measure is False)
        if not left_open:
            return fmt, fmt.label
        return fmt, fmt.label + (" (as the run began)" if config.resume else " (deterministic mode measures nothing)")
    features = data.train_set.images.dim() != 4
    if features or not measure:
        # Feature vectors: a linear layer or two, nothing to gain from a format worth measuring. A network with
        # dense or box targets cannot be timed on class labels: float32, unless the config says otherwise.
        fmt = StepFormat("off" if config.amp == "auto" else config.amp, bool(config.channels_last) and not features)
        why = "feature vectors" if features else "the task's step is not timed"
        return fmt, fmt.label + (f" ({why}: nothing measured)" if left_open else "")
    candidates = candidate_formats(device, amp=config.amp, channels_last=config.channels_last)
    if len(candidates) == 1:
        return candidates[0], candidates[0].label
    chosen, timings = StepFormat(), None
    if dist.is_main:
        batch, chans, size, classes = data.batch_size, data.in_chans, data.size, data.num_classes
        generator = torch.Generator().manual_seed(0)  # the run's own random streams are left alone
        x = torch.randn(batch, chans, size, size, generator=generator).to(device)
        y = torch.randint(0, classes, (batch,), generator=generator).to(device)
        args = ",".join(f"{k}={v}" for k, v in sorted(config.model_args.items()))
        key = f"{config.model}({args}) {classes} classes | {batch}x{chans}x{size}x{size}"
        chosen, timings = resolve_step_format(model, (x, y), candidates, key=key, criterion=criterion)
    chosen = dist_utils.broadcast_object(chosen, dist)
    if timings:
        measured = ", ".join(f"{fmt.label} {1000 * t:.0f}" for fmt, t in timings.items())
        return chosen, f"{chosen.label} (fastest measured, ms per forward/backward: {measured})"
    return chosen, f"{chosen.label} (fastest, from an earlier measurement)"
