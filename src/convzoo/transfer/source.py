"""The trained network an experiment starts from: a training checkpoint, or a registered model with weights."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

__all__ = ["Source", "load_source"]


@dataclass
class Source:
    """A trained network and what rebuilding its architecture needs.

    Attributes:
        model: The network (eval mode), with the weights and output layer it was trained with.
        arch: Its registered model name.
        model_args: The architecture settings it was built with (besides classes and channels).
        label: What was loaded: a checkpoint's path, or a weights entry's name or file.
        in_chans: Input channels it takes.
        image_size: Side of the images it was trained on.
        classes: The classes a training checkpoint records it was trained on; None for registered weights, whose
            data set is the entry's.
    """

    model: nn.Module
    arch: str
    model_args: dict[str, Any]
    label: str
    in_chans: int
    image_size: int
    classes: list[str] | None

    def untrained(self, seed: int) -> nn.Module:
        """The same architecture with fresh weights drawn from ``seed`` (the process's random stream untouched)."""
        from convzoo.factory import create_model

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return create_model(
                self.arch, num_classes=self.model.num_classes, in_chans=self.in_chans, **self.model_args
            )


def load_source(source: str | os.PathLike[str], *, weights: str | os.PathLike[str] | None = None) -> Source:
    """A trained network: a training checkpoint (``best.pt``/``last.pt``), or a registered model name with
    ``weights`` (a registered name, or a file in convzoo's or torchvision's format; None: the model's default entry).

    Raises:
        FileNotFoundError: A checkpoint or weights file that is not there.
        KeyError: An unknown model name (with close matches).
        ValueError: A registered model without weights and no ``weights``; ``weights`` given with a checkpoint.
        WeightsError: Weights that cannot be read or do not fit.
    """
    from convzoo.inference import is_training_checkpoint, load_classifier
    from convzoo.train import load_checkpoint
    from convzoo.weights import WeightsError

    text = os.fspath(source)
    checkpoint = is_training_checkpoint(text)
    try:
        loaded = load_classifier(text, weights=weights)
    except WeightsError as e:
        if weights is not None or checkpoint:
            raise
        raise ValueError(
            f"{text} has no registered weights, and this needs a trained network: give its weights "
            "(--weights FILE_OR_NAME) or a training checkpoint (runs/NAME/last.pt)"
        ) from e
    model = loaded.model
    if checkpoint:
        info = load_checkpoint(text)["model"]
        arch, model_args, classes = info["name"], dict(info["model_args"]), list(loaded.classes)
    else:
        entry = getattr(model, "weights_entry", None)
        arch, model_args, classes = text, dict(entry.model_args) if entry is not None else {}, None
    return Source(model, arch, model_args, loaded.source, model.in_chans, loaded.preprocessing.crop_size, classes)
