"""The feature pyramid network neck (Lin et al. 2017): a top-down path with lateral connections.

Each backbone map goes through a 1x1 lateral convolution to a common width; from the deepest map down, the coarser
result is upsampled (nearest, 2x) and added to the lateral of the next finer map, and a 3x3 convolution smooths each
sum. Extra levels on top are a stride-2 subsampling of the coarsest output (the paper's P6), which only the RPN reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["FPNConfig", "FeaturePyramid"]


@dataclass(frozen=True)
class FPNConfig:
    """Settings of the feature pyramid.

    Attributes:
        out_channels: Width of every pyramid level (the paper: 256).
        extra_levels: Levels added above the coarsest map by stride-2 subsampling (the paper: 1, P6).
    """

    out_channels: int = 64
    extra_levels: int = 1

    def validate(self) -> None:
        """Raise a ValueError for an impossible configuration."""
        if self.out_channels < 1 or self.extra_levels < 0:
            raise ValueError(f"FPN needs out_channels >= 1 and extra_levels >= 0; got {self}")


class FeaturePyramid(nn.Module):
    """Backbone maps (fine to coarse) -> pyramid maps of ``cfg.out_channels`` channels.

    Args:
        in_channels: Channels of each backbone map, fine to coarse.
        strides: Their strides.
        cfg: Width and extra levels.

    Attributes:
        channels: Channels of each output level.
        strides: Stride of each output level, the extra ones last.
    """

    def __init__(self, in_channels: Sequence[int], strides: Sequence[int], cfg: FPNConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or FPNConfig()
        self.cfg.validate()
        c = self.cfg.out_channels
        self.lateral = nn.ModuleList(nn.Conv2d(ch, c, 1) for ch in in_channels)
        self.output = nn.ModuleList(nn.Conv2d(c, c, 3, padding=1) for _ in in_channels)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, a=1)
                nn.init.zeros_(m.bias)
        self.strides = [*strides, *(strides[-1] * 2 ** (i + 1) for i in range(self.cfg.extra_levels))]
        self.channels = [c] * len(self.strides)

    def forward(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        top = self.lateral[-1](features[-1])
        outs = [self.output[-1](top)]
        for x, lateral, output in zip(features[-2::-1], self.lateral[-2::-1], self.output[-2::-1]):
            top = lateral(x) + F.interpolate(top, size=x.shape[-2:], mode="nearest")
            outs.insert(0, output(top))
        for _ in range(self.cfg.extra_levels):
            outs.append(F.max_pool2d(outs[-1], kernel_size=1, stride=2))
        return outs
