"""A network ready to classify images: its weights, class names and preprocessing, from one argument.

``load_classifier("runs/cifar/last.pt")`` rebuilds a training run's network; ``load_classifier("resnet20")`` loads
the model's default registered weights; ``load_classifier("resnet50", weights="resnet50.tv_imagenet1k_v2")`` or
``weights="path/to/file"`` loads those. The preprocessing follows the weights: a registered entry's own, a training
run's data statistics, or the model card's for a file of unknown origin. `predict` and `eval` are built on this.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from convzoo.pretrained import Preprocessing, default_weights
from convzoo.registry import get_model_card, list_models


@dataclass
class Classifier:
    """A network in eval mode with what is needed to feed it and read its outputs.

    Attributes:
        model: The network (eval mode).
        classes: Class names in output order.
        preprocessing: How images are prepared (``preprocessing.transforms()`` builds the transform).
        source: What was loaded: a checkpoint path, a weights entry's name or a file.
        data: The training run's data description (name, classes, image size, mean, std), for checkpoints.
    """

    model: nn.Module
    classes: list[str]
    preprocessing: Preprocessing
    source: str
    data: dict[str, Any] | None = None

    def transforms(self) -> nn.Module:
        return self.preprocessing.transforms()

    @torch.no_grad()
    def probabilities(self, images: Any) -> torch.Tensor:
        """Class probabilities (N, classes) of a PIL image, an image tensor or a batch, preprocessed here."""
        x = self.transforms()(images)
        x = x[None] if x.ndim == 3 else x
        device = next(self.model.parameters()).device
        return self.model(x.to(device)).softmax(dim=1).cpu()


def is_training_checkpoint(target: str) -> bool:
    return Path(target).suffix == ".pt" or (Path(target).is_file() and target not in list_models(task=None))


def load_classifier(target: str | os.PathLike[str], *, weights: str | os.PathLike[str] | None = None) -> Classifier:
    """A training checkpoint, or a registered model with weights, ready to classify.

    Args:
        target: A run's ``best.pt``/``last.pt``, or a registered model name.
        weights: For a model name: a registered weights name, a file or a URL; None loads the model's default
            entry. Not allowed with a checkpoint, which holds its own weights.

    Raises:
        KeyError: An unknown model name (with close matches).
        FileNotFoundError: A checkpoint path that does not exist.
        WeightsError: Weights that cannot be read or do not fit; a model name without registered weights and no
            ``weights=``.
    """
    from convzoo.factory import create_model

    text = os.fspath(target)
    if is_training_checkpoint(text):
        if weights is not None:
            raise ValueError(f"{text} is a training checkpoint and holds its weights; --weights applies to model names")
        from convzoo.train import load_trained

        model, data = load_trained(text)
        channels, size = data["image_size"][0], data["image_size"][-1]
        spec = Preprocessing(
            crop_size=size, resize_size=size, mean=tuple(data["mean"]), std=tuple(data["std"]), channels=channels
        )
        return Classifier(model, list(data["classes"]), spec, text, data)
    card = get_model_card(text)  # an unknown name raises KeyError with the closest names
    if weights is None:
        entry = default_weights(text)
        model = create_model(text, pretrained=True)  # raises, saying what to do, when nothing is registered
    else:
        model = create_model(text, weights=weights)
        entry = getattr(model, "weights_entry", None)
    model.eval()
    if entry is not None:
        spec = entry.preprocessing or Preprocessing.for_card(card)
        classes = list(entry.classes) or [str(i) for i in range(entry.num_classes or card.num_classes)]
        return Classifier(model, classes, spec, entry.name)
    classes = [str(i) for i in range(card.num_classes)]
    return Classifier(model, classes, Preprocessing.for_card(card), os.fspath(weights))
