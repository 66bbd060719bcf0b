"""Detection backbones: any registered classifier, cut at its `feature_info` tap points."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

__all__ = ["Backbone", "BackboneConfig"]


@dataclass(frozen=True)
class BackboneConfig:
    """Which classifier a detector is built on, and where its feature maps are taken.

    Attributes:
        name: A registered classifier (``convzoo.list_models()``). The default, the CIFAR ResNet-20, keeps a
            stride-4 map of 64 channels at its last stage: a 16x16 map of 64-pixel images.
        out_indices: Positions in the classifier's ``feature_info`` (negative from the end) of the maps to return,
            shallow to deep: one for a single-level detector, several for a feature pyramid.
        weights: Weights of the classifier (a registered weights name such as ``"resnet20.cifar10"`` or a path);
            None starts from a random initialisation.
    """

    name: str = "resnet20"
    out_indices: tuple[int, ...] = (-1,)
    weights: str | None = None


class Backbone(nn.Module):
    """The feature maps of a classifier built with ``create_model(name, features_only=True, out_indices=...)``.

    The images reach it normalised as its training data was (the training engine's loaders normalise with the
    training set's mean and std), so the detector does no normalisation of its own.

    Args:
        cfg: The classifier, its tap points and weights.
        in_chans: Input image channels.

    Attributes:
        channels: Channels of each returned map.
        strides: Cumulative stride of each returned map.
    """

    def __init__(self, cfg: BackboneConfig | None = None, *, in_chans: int = 3) -> None:
        super().__init__()
        from convzoo.factory import create_model

        self.cfg = cfg or BackboneConfig()
        self.body = create_model(
            self.cfg.name,
            in_chans=in_chans,
            weights=self.cfg.weights,
            features_only=True,
            out_indices=list(self.cfg.out_indices),
        )
        self.channels: list[int] = self.body.channels()
        self.strides: list[int] = self.body.reductions()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.body(x)
