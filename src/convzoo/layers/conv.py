"""Bias-free convolutions, the building unit of every network that normalises after its convolutions."""

from __future__ import annotations

import torch.nn as nn


def conv3x3(in_chs: int, out_chs: int, stride: int = 1, groups: int = 1, dilation: int = 1) -> nn.Conv2d:
    """3x3 convolution with 'same' padding and no bias (a following norm layer supplies the shift)."""
    return nn.Conv2d(in_chs, out_chs, 3, stride=stride, padding=dilation, groups=groups, bias=False, dilation=dilation)


def conv1x1(in_chs: int, out_chs: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution without bias."""
    return nn.Conv2d(in_chs, out_chs, 1, stride=stride, bias=False)
