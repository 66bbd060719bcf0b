"""The base of the networks whose convolutional trunk feeds fully connected layers: LeNet, AlexNet, ZFNet and VGG."""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Iterator

import torch
import torch.nn as nn

from convzoo.layers.classifier import FCHead
from convzoo.layers.trunk import smallest_input, stage_taps
from convzoo.models.base import ConvNet


class FCHeadNet(ConvNet):
    """A convolutional trunk, ``features``, followed by fully connected layers, ``classifier`` (an `FCHead`): the
    layout of LeNet, AlexNet, ZFNet and VGG.

    The head average-pools the last feature map to a fixed grid (``avgpool``, an identity at the paper's input size,
    as in torchvision), flattens it and applies the fully connected layers, the last of which is the output layer.

    How the shared interface maps onto this layout:

    - ``get_classifier()`` is the output layer. ``reset_classifier(n)`` replaces it and keeps the hidden fully
      connected layers: the usual fine-tuning recipe, a fresh last layer on trained fc6 and fc7.
    - ``reset_classifier(0)`` removes every fully connected layer: without an output layer they are only half a
      classifier. What remains is the convolutional network, whose forward returns the globally averaged last
      feature map, ``num_features`` values per image. A later ``reset_classifier(n)`` builds fresh hidden layers.
    - ``forward_head(x, pre_logits=True)`` returns the last hidden layer's activations, the vector the output layer
      reads (fc7 of AlexNet and VGG, F6 of LeNet): the feature the transfer-learning recipes of the lectures
      take from these networks. Its width is ``head_hidden_size``. Without fully connected layers it is the globally
      averaged last feature map, as the forward pass returns then.

    Subclasses build ``features`` and hand it to `_add_trunk_and_head`, and implement `_make_classifier`, `_init_fc`
    and `_init_weights`. The trunks are unpadded or partly so: ``min_input_size`` and ``feature_info`` are read off
    their layers (`convzoo.layers.trunk`).
    """

    features: nn.Sequential
    avgpool: nn.AdaptiveAvgPool2d
    classifier: nn.Module

    @abc.abstractmethod
    def _make_classifier(self, num_classes: int) -> FCHead:
        """The fully connected layers, ending in a ``num_classes``-way output layer."""

    @abc.abstractmethod
    def _init_fc(self, layer: nn.Linear, *, output: bool) -> None:
        """Initialise one fully connected layer; ``output`` marks the output layer."""

    @abc.abstractmethod
    def _init_weights(self) -> None:
        """Initialise every parameter (and reset buffers) as the paper or the peer does."""

    def _add_trunk_and_head(self, features: nn.Sequential, num_features: int, pool_size: int) -> None:
        """Install the trunk, whose last layer has ``num_features`` channels, then the head: ``avgpool`` to a
        ``pool_size`` grid and, if the network has classes, the fully connected layers."""
        self.features = features
        self.num_features = num_features
        self.avgpool = nn.AdaptiveAvgPool2d(pool_size)
        self.classifier = self._make_classifier(self.num_classes) if self.num_classes else nn.Identity()
        self.feature_info = stage_taps(features, self.in_chans)
        self.min_input_size = smallest_input(features)

    @property
    def fc_in_features(self) -> int:
        """Width of the pooled grid, flattened: the input of the first fully connected layer."""
        return self.num_features * self.avgpool.output_size**2

    def _init_fc_layers(self, classifier: nn.Module) -> None:
        fcs = [m for m in classifier.modules() if isinstance(m, nn.Linear)]
        for i, layer in enumerate(fcs):
            self._init_fc(layer, output=i + 1 == len(fcs))

    @contextlib.contextmanager
    def _allocate_once(self) -> Iterator[None]:
        """Build the layers of the ``with`` block on the meta device, then allocate and initialise them once.

        PyTorch initialises every layer as it is built; for 10^8 fully connected weights that default initialisation,
        overwritten at once by the network's own, costs as much as the real one. Buffers come out of it without
        values too, so `_init_weights` must set them (batch-norm statistics).
        """
        device = torch.get_default_device()
        with torch.device("meta"):
            yield
        self.to_empty(device=device)
        self._init_weights()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if not self.num_classes:
            return x.mean((2, 3))
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        if pre_logits:
            return self.classifier.forward_hidden(x)
        return self.classifier(x)

    @property
    def head_hidden_size(self) -> int:
        return self.classifier.hidden_size if self.num_classes else self.num_features

    def get_classifier(self) -> nn.Module:
        return self.classifier.output if self.num_classes else self.classifier

    def reset_classifier(self, num_classes: int) -> None:
        self.check_num_classes(num_classes)
        if num_classes and self.num_classes:
            layer = self.classifier.reset(num_classes)
            if not layer.weight.is_meta:
                self._init_fc(layer, output=True)
        elif num_classes:
            # New hidden layers too: built on the meta device and allocated once, like the network's own.
            like = next(self.features.parameters())
            with torch.device("meta"):
                classifier = self._make_classifier(num_classes).to(dtype=like.dtype)
            if not like.is_meta:
                classifier = classifier.to_empty(device=like.device)
                self._init_fc_layers(classifier)
            self.classifier = classifier
        else:
            self.classifier = nn.Identity()
        self.num_classes = num_classes
