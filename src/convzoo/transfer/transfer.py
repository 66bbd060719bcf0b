"""Transfer learning: a network trained on one data set, moved to another (the lectures' transfer-learning table).

Three ways to train on the target data, each through the one training engine:

- **scratch**: the same architecture, randomly initialised, trained on the target alone (the baseline);
- **linear**: the pretrained network frozen; its features (the vector the output layer reads: the pooled last
  feature map, or fc7 for networks with fully connected heads) computed once for every target image and cached,
  then a linear classifier trained on them;
- **finetune**: the pretrained network with a new output layer; the last ``unfreeze`` stages (or all) and the head
  trained, the pretrained part at a lower learning rate than the new head. Frozen stages keep their batch-norm
  statistics.

`run_transfer` runs any of them on one source and one target and writes the lectures' table: target data set,
from scratch, frozen features + classifier, fine-tuned.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from convzoo.data import ArrayDataset, Augment, FastLoader, FeatureSet
from convzoo.experiments.report import Evidence, ExperimentFolder, Table
from convzoo.train import ClassificationTask, RunResult, TrainConfig, Trainer
from convzoo.train import distributed as dist_utils
from convzoo.transfer.source import Source, load_source

__all__ = [
    "MODES",
    "FinetuneTask",
    "Source",
    "TransferResult",
    "extract_features",
    "linear_classifier",
    "check_unfreeze",
    "freeze_all_but_last",
    "load_source",
    "run_transfer",
    "stage_count",
    "transfer_findings",
]

MODES = ("scratch", "linear", "finetune")
_MODE_COLUMNS = {"scratch": "from scratch", "linear": "frozen features + classifier", "finetune": "fine-tuned"}


def _module_order(model: nn.Module) -> dict[str, int]:
    return {name: i for i, (name, _) in enumerate(model.named_modules())}


def _subtree_end(order: dict[str, int], name: str) -> int:
    """The position (in ``named_modules`` order) of the last module inside ``name``: its subtree ends there."""
    if name not in order:
        raise RuntimeError(f"feature_info names a module the network does not have: {name!r}")
    return max(i for n, i in order.items() if n == name or n.startswith(name + "."))


def _stage_ends(model: nn.Module) -> list[int]:
    """The indices in ``feature_info`` of the tap points that end a stage holding parameters.

    A stage is the part of the trunk between two tap points (the first tap ends the stem). One that holds no
    parameters (VGG's last tap is the max pooling after its last convolution) is not counted: there is nothing in
    it to unfreeze.
    """
    order = _module_order(model)
    owners = [order.get(name.rpartition(".")[0], -1) for name, _ in model.named_parameters()]
    ends = [_subtree_end(order, f.module) for f in model.feature_info]
    return [i for i in range(1, len(ends)) if any(ends[i - 1] < o <= ends[i] for o in owners)]


def stage_count(model: nn.Module) -> int:
    """The stages ``--unfreeze`` counts: the parts of the trunk between consecutive tap points of ``feature_info``
    after the stem that hold parameters."""
    return len(_stage_ends(model))


def check_unfreeze(model: nn.Module, unfreeze: int | str) -> int | None:
    """The number of stages ``unfreeze`` asks to train (None: ``"all"``, the whole network).

    Raises:
        ValueError: Anything but ``"all"`` or a count from 0 to `stage_count` (the message lists the stages).
    """
    if unfreeze == "all":
        return None
    ends = _stage_ends(model)
    try:
        stages = int(unfreeze)
    except (TypeError, ValueError):
        stages = -1
    if not 0 <= stages <= len(ends):
        names = ", ".join(model.feature_info[i].module for i in ends)
        raise ValueError(
            f"{getattr(model, 'model_name', 'the network')} has {len(ends)} stages after its stem (ending at "
            f"{names}); --unfreeze takes 0 to {len(ends)}, or all; got {unfreeze!r}"
        )
    return stages


def freeze_all_but_last(model: nn.Module, stages: int | None) -> list[str]:
    """Freeze the network but its last ``stages`` stages (see `stage_count`) and its head; the names of the
    parameters left to train.

    Every parameter of the modules up to and including the tap point before the last ``stages`` stages is frozen;
    later stages and the head train. ``stages=None`` trains the whole network, stem included; 0 trains the head
    (everything after the last tap point) alone.

    Raises:
        ValueError: ``stages`` below 0 or above `stage_count`.
    """
    if stages is None:
        model.requires_grad_(True)
        return [name for name, _ in model.named_parameters()]
    check_unfreeze(model, stages)
    ends = _stage_ends(model)
    tap = len(model.feature_info) - 1 if stages == 0 else ends[-stages] - 1
    order = _module_order(model)
    last = _subtree_end(order, model.feature_info[tap].module)
    trained = []
    for name, p in model.named_parameters():
        frozen = order.get(name.rpartition(".")[0], -1) <= last
        p.requires_grad_(not frozen)
        if not frozen:
            trained.append(name)
    return trained


class FinetuneTask(ClassificationTask):
    """Classification where the pretrained part learns at a fraction of the new head's learning rate.

    Args:
        head: Names of the head's parameters (the new output layer), trained at the full rate.
        backbone_lr_scale: The pretrained parameters' factor of the recipe's learning rate.
        label_smoothing: Label smoothing of the training loss.
    """

    def __init__(self, head: Sequence[str], backbone_lr_scale: float, *, label_smoothing: float = 0.0) -> None:
        super().__init__(label_smoothing=label_smoothing)
        if backbone_lr_scale < 0:
            raise ValueError(f"the backbone's learning-rate factor must not be negative; got {backbone_lr_scale}")
        self.head = set(head)
        self.backbone_lr_scale = backbone_lr_scale

    def lr_scale(self, name: str) -> float:
        return 1.0 if name in self.head else self.backbone_lr_scale


@torch.no_grad()
def extract_features(
    model: nn.Module,
    dataset: ArrayDataset,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    progress: bool | None = None,
) -> FeatureSet:
    """The pre-logits vectors (``forward_head(forward_features(x), pre_logits=True)``) of every image, in order.

    The images are normalised with ``mean`` and ``std`` as the training run normalises them, unaugmented.
    """
    from tqdm import tqdm

    model = model.eval().to(device)
    loader = FastLoader(
        dataset, batch_size=batch_size, shuffle=False, augment=Augment(mean=mean, std=std), device=device
    )
    chunks = []
    for x, _ in tqdm(loader, desc=f"features of {dataset.name}", unit="batch", leave=False, disable=progress is False):
        chunks.append(model.forward_head(model.forward_features(x), pre_logits=True).float().cpu())
    name = f"{dataset.name} through {getattr(model, 'model_name', type(model).__name__)} (pre-logits)"
    return FeatureSet(torch.cat(chunks), dataset.labels, list(dataset.classes), name)


@dataclass
class TransferResult:
    """What `run_transfer` produced.

    Attributes:
        out: The experiment folder.
        accuracy: Final test accuracy (percent) by mode.
        best: Best test accuracy of any epoch by mode.
        runs: The engine's result of each mode's run.
        report: The report's path.
    """

    out: Path
    accuracy: dict[str, float]
    best: dict[str, float]
    runs: dict[str, RunResult] = field(default_factory=dict)
    report: Path | None = None


def _target_splits(
    data: str, source: Source, *, data_root: str | None, classes: Sequence[int | str] | None, seed: int
) -> tuple[ArrayDataset, ArrayDataset]:
    from convzoo.data import load_dataset

    train, test = load_dataset(data, root=data_root, image_size=source.image_size, in_chans=source.in_chans, seed=seed)
    if classes:
        train, test = train.select_classes(classes), test.select_classes(classes)
    return train, test


def _train(
    config: TrainConfig, *, task: ClassificationTask | None = None, model: nn.Module | None, datasets: tuple
) -> RunResult:
    trainer = Trainer(config, task=task, model=model, datasets=datasets)
    try:
        return trainer.run()
    finally:
        dist_utils.teardown(trainer.dist)


def _result_of(run_dir: Path) -> RunResult:
    """The result of a run that finished earlier (an experiment resumed after it)."""
    from convzoo.train import load_checkpoint

    state = load_checkpoint(run_dir / "last.pt")
    history = state["history"]
    last = history[-1]
    return RunResult(
        out=run_dir,
        epochs_done=int(state["epoch"]),
        steps_done=int(state["step"]),
        test_top1=last.get("test_top1"),
        test_top5=last.get("test_top5"),
        best_top1=max(row["test_top1"] for row in history),
        seconds=sum(row.get("seconds", 0.0) for row in history),
        stopped_early=False,
        history=history,
        best=state.get("best_top1"),
    )


def run_transfer(
    source: str | os.PathLike[str],
    data: str,
    *,
    modes: Sequence[str] = MODES,
    weights: str | os.PathLike[str] | None = None,
    classes: Sequence[int | str] | None = None,
    train_size: int | None = None,
    data_root: str | None = None,
    recipe: str = "quick",
    epochs: int | None = None,
    linear_epochs: int | None = None,
    unfreeze: int | str = "all",
    backbone_lr_scale: float = 0.1,
    seed: int = 0,
    device: str = "auto",
    out: str | os.PathLike[str] | None = None,
    progress: bool | None = None,
    recipe_overrides: dict[str, Any] | None = None,
    train_settings: dict[str, Any] | None = None,
) -> TransferResult:
    """Move ``source`` to the data set ``data`` by any of the three modes, and write the lectures' table.

    Args:
        source: A training checkpoint, or a registered model name (with ``weights``).
        data: The target data set: a name (``digits``, ``shapes``, ``cifar10``, ...) or a path. Its images are
            resized and converted to the source's input size and channels.
        modes: Any of ``"scratch"``, ``"linear"``, ``"finetune"`` (default: all three).
        weights: For a model name: registered weights, or a file in convzoo's or torchvision's format.
        classes: Use these classes of the target alone (e.g. the other half of CIFAR-10).
        train_size: Train on a class-balanced subset of this many target images (the lectures' small target data
            set), fixed by ``seed``; the test set stays whole.
        data_root: Where named real data sets live.
        recipe: The engine's recipe for every run.
        epochs: Epochs of the scratch and fine-tuning runs (default: the recipe's).
        linear_epochs: Epochs of the linear classifier on cached features (default: ``epochs``).
        unfreeze: Fine-tuning trains the last this many stages and the head; ``"all"`` trains everything.
        backbone_lr_scale: Fine-tuning trains the pretrained layers at this fraction of the head's rate.
        seed: Seed of every run.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        out: The experiment folder (default: ``runs/transfer-<time>``); running again with the same folder
            continues unfinished runs and skips finished ones.
        progress: Progress bars (None: on a terminal).
        recipe_overrides: Further recipe settings for every run.
        train_settings: Further `TrainConfig` settings for every run (``amp``, ``channels_last``, ``compile``,
            ``deterministic``, ``eval_batch_size``, ...).

    Raises:
        ValueError: An unknown mode, an ``unfreeze`` out of range, a bad learning-rate factor.
        FileExistsError: ``out`` holds a finished experiment.
    """
    from convzoo.factory import create_model

    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        raise ValueError(f"unknown transfer mode(s) {unknown or list(modes)}; choose from {', '.join(MODES)} or all")
    modes = [m for m in MODES if m in modes]
    if backbone_lr_scale < 0:
        raise ValueError(f"backbone_lr_scale must not be negative; got {backbone_lr_scale}")
    if epochs is not None and epochs < 1 or linear_epochs is not None and linear_epochs < 1:
        raise ValueError("epochs must be positive")
    folder = ExperimentFolder(out, "transfer")
    src = load_source(source, weights=weights)
    stages = check_unfreeze(src.model, unfreeze)
    run_device = _resolve_device(device)
    train_set, test_set = _target_splits(data, src, data_root=data_root, classes=classes, seed=seed)
    if train_size is not None:
        train_set = train_set.balanced_subset(train_size, seed=seed)
    target = f"{Path(data).name if os.sep in data else data}" + (f" classes {list(classes)}" if classes else "")
    target += f", {train_size:,} training images" if train_size is not None else ""
    overrides = dict(recipe_overrides or {})
    if epochs is not None:
        overrides["epochs"] = epochs
    base = TrainConfig(
        model=src.arch,
        data=target,
        recipe=recipe,
        recipe_overrides=overrides,
        image_size=src.image_size,
        seed=seed,
        device=device,
        progress=progress,
        **(train_settings or {}),
    )

    runs: dict[str, RunResult] = {}
    for mode in modes:
        config = dataclasses.replace(base, out=str(folder.run_dir(mode)))
        if mode == "linear":
            linear_overrides = dict(overrides)
            if linear_epochs is not None:
                linear_overrides["epochs"] = linear_epochs
            config = dataclasses.replace(config, model=f"{src.arch}-linear", recipe_overrides=linear_overrides)
        state = folder.run_state(mode, config)
        if state == "finished":
            runs[mode] = _result_of(folder.run_dir(mode))
            continue
        config = dataclasses.replace(config, resume=state == "unfinished")
        if mode == "scratch":
            torch.manual_seed(seed)
            model = create_model(src.arch, num_classes=train_set.num_classes, in_chans=src.in_chans, **src.model_args)
            runs[mode] = _train(config, model=model, datasets=(train_set, test_set))
        elif mode == "finetune":
            model = load_source(source, weights=weights).model  # a fresh copy: each mode starts from the source
            model.reset_classifier(train_set.num_classes)
            freeze_all_but_last(model, stages)
            head = _classifier_parameters(model)
            task = FinetuneTask(head, backbone_lr_scale, label_smoothing=_smoothing(config))
            runs[mode] = _train(config, task=task, model=model, datasets=(train_set, test_set))
        else:
            mean, std = train_set.mean_std()
            train_features, test_features = (
                extract_features(src.model, split, mean=mean, std=std, device=run_device, progress=progress)
                for split in (train_set, test_set)
            )
            torch.manual_seed(seed)
            classifier = linear_classifier(train_features.dim, train_set.num_classes)
            runs[mode] = _train(config, model=classifier, datasets=(train_features, test_features))
    if not all(r.is_main for r in runs.values()):
        return TransferResult(folder.path, {}, {}, runs)
    accuracy = {m: float(r.test_top1) for m, r in runs.items()}
    best = {m: float(r.best_top1) for m, r in runs.items()}
    table = Table(["target data set", *(_MODE_COLUMNS[m] for m in modes)])
    table.add(target, *(accuracy[m] for m in modes))
    report = folder.write(
        title=f"Transfer learning: {src.arch} ({src.label}) to {target}",
        evidence=Evidence(
            experiment=f"transfer of {src.arch} trained on {src.model.num_classes} classes ({src.label}) to {target}: "
            + ", ".join(_MODE_COLUMNS[m] for m in modes),
            data=f"{target}: {len(train_set)} training and {len(test_set)} test images of "
            f"{'x'.join(map(str, train_set.image_size))}, {train_set.num_classes} classes",
            runs=f"{len(runs)} (one per mode), " + ", ".join(f"{m} {r.epochs_done} epochs" for m, r in runs.items()),
            seeds=[seed],
            settings={
                "recipe": recipe,
                **({"overrides": overrides} if overrides else {}),
                **({"unfreeze": unfreeze, "backbone lr factor": backbone_lr_scale} if "finetune" in modes else {}),
            },
            device=str(run_device),
        ),
        table=table,
        findings=transfer_findings(accuracy),
        chart=lambda path: plot_transfer(runs, path, title=f"{src.arch} to {target}"),
        notes=[
            "Test accuracy (%) after the last epoch of each run. From scratch: the architecture randomly "
            "initialised. Frozen features + classifier: a linear classifier on the source network's pre-logits "
            "features (fc7 for networks with fully connected heads), computed once. Fine-tuned: the source network "
            "with a new output layer, "
            + ("every layer" if stages is None else f"the last {stages} stage(s) and the head")
            + f" trained, the pretrained layers at {backbone_lr_scale:g} of the head's learning rate."
        ],
    )
    return TransferResult(folder.path, accuracy, best, runs, report)


def _classifier_parameters(model: nn.Module) -> set[str]:
    """Names of the output layer's parameters."""
    head = {id(p) for p in model.get_classifier().parameters()}
    return {name for name, p in model.named_parameters() if id(p) in head}


def _resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _smoothing(config: TrainConfig) -> float:
    from convzoo.train import build_recipe

    return build_recipe(config).label_smoothing


def linear_classifier(dim: int, num_classes: int) -> nn.Module:
    """A linear classifier on feature vectors, standardised first by a batch norm without parameters of its own."""
    return nn.Sequential(nn.BatchNorm1d(dim, affine=False), nn.Linear(dim, num_classes))


def transfer_findings(accuracy: dict[str, float]) -> list[str]:
    """What the accuracies show, in sentences."""
    out = []
    scratch = accuracy.get("scratch")
    for mode in ("linear", "finetune"):
        if mode in accuracy and scratch is not None:
            diff = accuracy[mode] - scratch
            verdict = "beats" if diff > 0 else "does not beat"
            out.append(f"{_MODE_COLUMNS[mode].capitalize()} {verdict} training from scratch ({diff:+.2f} points).")
    if "linear" in accuracy and "finetune" in accuracy:
        diff = accuracy["finetune"] - accuracy["linear"]
        verdict = "improves on" if diff > 0 else "does not improve on"
        out.append(f"Fine-tuning {verdict} the frozen features ({diff:+.2f} points).")
    if not out:
        out.append("One mode only: nothing to compare; run with --mode all for the table of the lectures.")
    return out


def plot_transfer(runs: dict[str, RunResult], path: str | os.PathLike[str], *, title: str) -> None:
    """Test accuracy against epochs of each mode's run, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for mode, run in runs.items():
        epochs = [row["epoch"] for row in run.history]
        ax.plot(epochs, [row["test_top1"] for row in run.history], "o-", markersize=3, label=_MODE_COLUMNS[mode])
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=110)
    plt.close(fig)
