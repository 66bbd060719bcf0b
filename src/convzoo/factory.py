"""`create_model`: registered name in, ready network out."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch.nn as nn

from convzoo.models.base import FeatureExtractor
from convzoo.pretrained import default_weights, find_weights
from convzoo.registry import get_builder, get_model_card
from convzoo.weights import WeightsError, load_weights


def create_model(
    name: str,
    *,
    num_classes: int | None = None,
    in_chans: int | None = None,
    weights: str | os.PathLike[str] | None = None,
    pretrained: bool = False,
    features_only: bool = False,
    out_indices: int | Sequence[int] | None = None,
    **arch_overrides: Any,
) -> nn.Module:
    """Build a registered network.

    Args:
        name: A registered name (see ``list_models()``).
        num_classes: Classifier outputs; None means the model card's default (1000 for ImageNet networks, 10 for
            CIFAR-10 ones); 0 builds the network without a classifier.
        in_chans: Input image channels; None means the model card's (3 for colour images, 1 for LeNet-5's digits).
        weights: A weights file (safetensors or PyTorch checkpoint), an http(s)/file URL, or a registered weights
            name. A checkpoint whose classifier has another number of classes loads everything but the classifier.
            A registered entry also sets the architecture settings it needs and is kept as ``model.weights_entry``
            (its ``transforms()`` prepares images for it).
        pretrained: Load the model's default registered weights (``convzoo.pretrained.default_weights(name)``: for
            the CIFAR networks the weights shipped with the package), as ``weights=`` that entry's name would; False
            loads nothing.
        features_only: Return a `FeatureExtractor` that outputs the feature maps at ``out_indices``.
        out_indices: Which ``feature_info`` tap points a feature extractor returns (default: all).
        **arch_overrides: Architecture settings of the model's family, e.g. ``zero_init_residual=True``,
            ``shortcut="B"`` or ``depth=110``; an unknown key raises a TypeError listing the accepted ones.

    Raises:
        KeyError: Unknown model name (the message lists the closest names).
        TypeError: Unknown keyword.
        ValueError: An impossible configuration.
        WeightsError: Weights that cannot be read or do not fit, or ``pretrained=True`` for a model without
            registered weights.
    """
    card = get_model_card(name)
    if pretrained:
        weights = _default_weights(name, weights, pretrained)
    entry = find_weights(os.fspath(weights)) if isinstance(weights, (str, os.PathLike)) else None
    if entry is not None:
        # What the weights were trained with (classes, input channels, e.g. transform_input), unless chosen here.
        arch_overrides = {**entry.model_args, **arch_overrides}
        num_classes = entry.num_classes if num_classes is None else num_classes
        if in_chans is None and entry.preprocessing is not None:
            in_chans = entry.preprocessing.channels
    if num_classes is None:
        num_classes = card.num_classes
    if in_chans is None:
        in_chans = card.input_size[0]
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
        raise ValueError(f"{name}: num_classes must be a non-negative int; got {num_classes!r}")
    if not isinstance(in_chans, int) or in_chans < 1:
        raise ValueError(f"{name}: in_chans must be a positive int; got {in_chans!r}")
    if features_only and card.task != "classification":
        raise TypeError(
            f"{name} is a {card.task} network; features_only=True applies to the classifiers it can be built on "
            f"(pass one of them as its backbone)"
        )
    if out_indices is not None and not features_only:
        raise TypeError(f"{name}: out_indices only applies with features_only=True")
    model = get_builder(name)(num_classes=num_classes, in_chans=in_chans, **arch_overrides)
    model.model_name = name
    model.card = card
    model.weights_entry = entry
    if weights is not None:
        _load_pretrained(model, weights, name)
    if features_only:
        return FeatureExtractor(model, out_indices)
    return model


def _load_pretrained(model: nn.Module, weights: str | os.PathLike[str], name: str) -> None:
    try:
        load_weights(model, weights, skip_classifier="auto")
    except WeightsError as e:
        raise type(e)(f"{e}\n  (loading {os.fspath(weights)!r} into {name})") from None


def _default_weights(name: str, weights: str | os.PathLike[str] | None, pretrained: object) -> str:
    """The registered weights name that ``pretrained=True`` stands for."""
    if pretrained is not True:
        raise TypeError(f"{name}: pretrained must be True or False; got {pretrained!r}")
    if weights is not None:
        raise TypeError(f"{name}: give pretrained=True or weights={os.fspath(weights)!r}, not both")
    entry = default_weights(name)
    if entry is None:
        raise WeightsError(
            f"{name}: no weights are registered for it, so pretrained=True has nothing to load. Load a file "
            f"instead: create_model({name!r}, weights='path/to/file.safetensors'), or weights= the path of a PyTorch "
            f"checkpoint (torchvision's load as they are for the families that share its module names). "
            f"convzoo.register_weights(name, model={name!r}, source=...) makes a file the one pretrained=True loads"
        )
    return entry.name
