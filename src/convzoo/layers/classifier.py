"""Classifier heads: the output layer of a pooled head, and the fully connected head of LeNet, AlexNet and VGG."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn as nn


def create_classifier(
    in_features: int,
    num_classes: int,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> nn.Module:
    """A ``num_classes``-way linear output layer, or an identity when ``num_classes`` is 0 (no classifier)."""
    if not num_classes:
        return nn.Identity()
    return nn.Linear(in_features, num_classes, device=device, dtype=dtype)


def relu() -> nn.Module:
    """An in-place ReLU, the activation of AlexNet's and VGG's hidden fully connected layers."""
    return nn.ReLU(inplace=True)


class FCHead(nn.Sequential):
    """Fully connected layers: ``hidden`` layers with activations, then the ``num_classes``-way output layer.

    Children are numbered as in torchvision's ``classifier`` blocks (AlexNet, VGG), so their state_dicts load by name.

    Args:
        in_features: Width of the flattened input.
        hidden: Widths of the hidden layers.
        num_classes: Outputs of the last layer.
        act: Builds the activation that follows each hidden layer; by default `relu`.
        drop_rate: Dropout probability; None for no dropout layers at all. A rate of 0 keeps (inert) dropout layers,
            so the layer indices, and with them the state_dict keys, do not depend on the rate.
        drop_inputs: Drop each hidden layer's input (torchvision's AlexNet) rather than its output (Krizhevsky et al.,
            VGG); one dropout layer per hidden layer either way.
    """

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int],
        num_classes: int,
        *,
        act: Callable[[], nn.Module] = relu,
        drop_rate: float | None = None,
        drop_inputs: bool = False,
    ) -> None:
        layers: list[nn.Module] = []
        for width in hidden:
            if drop_rate is not None and drop_inputs:
                layers.append(nn.Dropout(drop_rate))
            layers += [nn.Linear(in_features, width), act()]
            if drop_rate is not None and not drop_inputs:
                layers.append(nn.Dropout(drop_rate))
            in_features = width
        layers.append(nn.Linear(in_features, num_classes))
        super().__init__(*layers)

    @property
    def output(self) -> nn.Linear:
        """The output layer."""
        return self[-1]

    def forward_hidden(self, x: torch.Tensor) -> torch.Tensor:
        """The last hidden layer's output (after its activation and dropout): what the output layer reads."""
        for layer in list(self)[:-1]:
            x = layer(x)
        return x

    @property
    def hidden_size(self) -> int:
        """Width of the last hidden layer (the input of the output layer)."""
        return self[-1].in_features

    def reset(self, num_classes: int) -> nn.Linear:
        """Replace the output layer by one with ``num_classes`` outputs on the same device and in the same dtype.

        Returns the new layer with its memory allocated but not initialised, for the network to initialise as its
        paper does (a default initialisation first would only spend time and random draws).
        """
        like = self[-1].weight
        with torch.device("meta"):
            layer = nn.Linear(self.hidden_size, num_classes, dtype=like.dtype)
        if not like.is_meta:
            layer = layer.to_empty(device=like.device)
        self[-1] = layer
        return layer
