"""The teacher of a distillation: a trained network, the data it learned, and how its inputs were normalised."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from convzoo.data.arrays import ArrayDataset

__all__ = ["Teacher", "check_teacher", "load_teacher"]


@dataclass
class Teacher:
    """A trained network with what is recorded about the data it learned.

    Attributes:
        model: The network, in evaluation mode, its parameters frozen.
        source: What was loaded: a checkpoint path or a registered weights name (or file).
        name: The registered model name.
        classes: Its class names in output order, as recorded (empty when nothing is recorded).
        data: The data set it was trained on, as recorded (None when unknown).
        image_size: Side of the images it was trained on (None when unknown).
        in_chans: Input channels.
        mean: Per-channel mean of its input normalisation (None when unknown: it is fed the student's inputs).
        std: Per-channel standard deviation of its input normalisation.
    """

    model: nn.Module
    source: str
    name: str
    classes: list[str]
    data: str | None
    image_size: int | None
    in_chans: int
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def for_inputs(self, mean: tuple[float, ...], std: tuple[float, ...]) -> nn.Module:
        """The teacher taking images normalised with ``mean`` and ``std`` (the student's) as its own inputs.

        Normalisation is affine per channel, so ``(x * std + mean - mean_t) / std_t`` maps the student's input
        exactly onto the teacher's; a teacher trained with the student's statistics gets the batch unchanged.
        """
        if self.mean is None or self.std is None or (tuple(self.mean), tuple(self.std)) == (tuple(mean), tuple(std)):
            return self.model
        return nn.Sequential(_Renormalise(mean, std, self.mean, self.std), self.model).eval()


class _Renormalise(nn.Module):
    """Maps images normalised with one mean and std onto another's normalisation."""

    def __init__(
        self,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        to_mean: tuple[float, ...],
        to_std: tuple[float, ...],
    ) -> None:
        super().__init__()
        shape = (1, -1, 1, 1)
        mean_, std_ = torch.tensor(mean).view(shape), torch.tensor(std).view(shape)
        to_mean_, to_std_ = torch.tensor(to_mean).view(shape), torch.tensor(to_std).view(shape)
        self.register_buffer("scale", std_ / to_std_)
        self.register_buffer("shift", (mean_ - to_mean_) / to_std_)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift


def load_teacher(target: str | os.PathLike[str], *, weights: str | os.PathLike[str] | None = None) -> Teacher:
    """A teacher from a training checkpoint (``best.pt``/``last.pt``) or a registered model with weights.

    Args:
        target: A checkpoint path or a registered model name.
        weights: For a model name: a registered weights name or a file (None: the model's default entry).

    Raises:
        KeyError: An unknown model name (with close matches).
        FileNotFoundError: A checkpoint that does not exist.
        WeightsError: Weights that cannot be read or do not fit, or a model without registered weights.
    """
    from convzoo.inference import load_classifier

    classifier = load_classifier(target, weights=weights)
    model = classifier.model.eval().requires_grad_(False)
    name = getattr(model, "model_name", type(model).__name__)
    if classifier.data is not None:  # a training checkpoint records its data
        data = classifier.data
        return Teacher(
            model=model,
            source=classifier.source,
            name=name,
            classes=list(data["classes"]),
            data=str(data.get("name")) if data.get("name") is not None else None,
            image_size=int(data["image_size"][-1]),
            in_chans=int(data["image_size"][0]),
            mean=tuple(float(m) for m in data["mean"]),
            std=tuple(float(s) for s in data["std"]),
        )
    entry = getattr(model, "weights_entry", None)
    spec = entry.preprocessing if entry is not None else None
    if entry is None:  # a file of unknown origin: nothing is known of its data or normalisation
        return Teacher(model, classifier.source, name, [], None, None, classifier.preprocessing.channels)
    return Teacher(
        model=model,
        source=classifier.source,
        name=name,
        classes=list(entry.classes),
        data=entry.dataset or None,
        image_size=spec.crop_size if spec is not None else None,
        in_chans=spec.channels if spec is not None else classifier.preprocessing.channels,
        mean=tuple(spec.mean) if spec is not None else None,
        std=tuple(spec.std) if spec is not None else None,
    )


def _data_key(name: str) -> str:
    """A data set's name as a comparable key: ``CIFAR-10``, ``cifar10`` and ``data/cifar10`` are the same set."""
    text = str(name).rstrip("/\\")
    if "/" in text or os.sep in text or text.endswith(".npz"):
        path = Path(text)
        # A set stored as train.npz/test.npz is named by its folder, as `load_dataset` reads it from either.
        text = path.parent.name if path.stem in ("train", "test") and path.parent.name else path.stem
    return re.sub(r"[^a-z0-9]", "", text.lower())


def check_teacher(teacher: Teacher, outputs: int, train_set: ArrayDataset, data: str) -> None:
    """Refuse a teacher whose outputs, classes or training data are not those of the data to distil on."""
    if outputs != train_set.num_classes:
        raise ValueError(
            f"the teacher {teacher.source} predicts {outputs} classes but {data} has {train_set.num_classes} (the "
            f"student's); teacher and student must predict the same classes"
        )
    if teacher.data is not None and _data_key(teacher.data) != _data_key(data):
        raise ValueError(
            f"the teacher {teacher.source} was trained on {teacher.data}, not on {data}; distil on the data set the "
            f"teacher learned (its soft targets describe those classes)"
        )
    if teacher.classes and list(teacher.classes) != list(train_set.classes):
        raise ValueError(
            f"the teacher {teacher.source} was trained on the classes {teacher.classes}, but {data} has "
            f"{train_set.classes}; its outputs would mean other classes"
        )
