"""Residual blocks: basic and bottleneck, post-activation (He et al., CVPR 2016) and pre-activation (He et al., ECCV
2016), with optional grouped convolutions (ResNeXt), squeeze-and-excitation (SENet) and dropout between the
convolutions (Wide ResNet).

A block with ``shortcut=None`` is the plain twin of the degradation experiment: the same layers without the addition.
``pad_channels`` says where an option A shortcut puts its zero channels (see `convzoo.layers.shortcuts`).
Module names follow torchvision's ``BasicBlock`` and ``Bottleneck`` (conv1, bn1, ..., downsample).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from convzoo.layers.conv import conv1x1, conv3x3
from convzoo.layers.se import SqueezeExcite
from convzoo.layers.shortcuts import make_shortcut


def _dropout(rate: float) -> nn.Module:
    return nn.Dropout(rate) if rate else nn.Identity()


def _se(channels: int, reduction: int) -> nn.Module:
    return SqueezeExcite(channels, reduction) if reduction else nn.Identity()


def bottleneck_width(planes: int, groups: int, base_width: int) -> int:
    """Channels of a bottleneck's grouped 3x3 convolution: ``groups`` paths of ``planes * base_width / 64`` each."""
    return int(planes * (base_width / 64.0)) * groups


class BasicBlock(nn.Module):
    """Two 3x3 convolutions, each followed by batch norm; ReLU after the first and after the addition."""

    def __init__(
        self,
        in_chs: int,
        planes: int,
        *,
        stride: int = 1,
        shortcut: str | None = "B",
        se_reduction: int = 0,
        drop_rate: float = 0.0,
        pad_channels: str = "after",
    ) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_chs, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.drop = _dropout(drop_rate)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.se = _se(planes, se_reduction)
        self.residual = shortcut is not None
        self.downsample = (
            make_shortcut(shortcut, in_chs, planes, stride, pad_channels=pad_channels) if self.residual else None
        )
        self.out_chs = planes

    def last_norm(self) -> nn.Module:
        """The layer whose weight zero-initialisation turns the residual branch off."""
        return self.bn2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)
        out = self.drop(out)
        out = self.conv2(out)
        out = self.bn2(out)
        out = self.se(out)
        if self.residual:
            out += shortcut
        return self.relu(out)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (grouped for ResNeXt, strided as in torchvision's "ResNet v1.5"), 1x1 expand by 4."""

    expansion = 4

    def __init__(
        self,
        in_chs: int,
        planes: int,
        *,
        stride: int = 1,
        shortcut: str | None = "B",
        groups: int = 1,
        base_width: int = 64,
        se_reduction: int = 0,
        drop_rate: float = 0.0,
        pad_channels: str = "after",
    ) -> None:
        super().__init__()
        width = bottleneck_width(planes, groups, base_width)
        out_chs = planes * self.expansion
        self.conv1 = conv1x1(in_chs, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, stride, groups)
        self.bn2 = nn.BatchNorm2d(width)
        self.drop = _dropout(drop_rate)
        self.conv3 = conv1x1(width, out_chs)
        self.bn3 = nn.BatchNorm2d(out_chs)
        self.relu = nn.ReLU(inplace=True)
        self.se = _se(out_chs, se_reduction)
        self.residual = shortcut is not None
        self.downsample = (
            make_shortcut(shortcut, in_chs, out_chs, stride, pad_channels=pad_channels) if self.residual else None
        )
        self.out_chs = out_chs

    def last_norm(self) -> nn.Module:
        """The layer whose weight zero-initialisation turns the residual branch off."""
        return self.bn3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)
        out = self.conv2(out)
        out = self.bn2(out)
        out = self.relu(out)
        out = self.drop(out)
        out = self.conv3(out)
        out = self.bn3(out)
        out = self.se(out)
        if self.residual:
            out += shortcut
        return self.relu(out)


class PreActBasicBlock(nn.Module):
    """BN-ReLU-conv3x3, BN-ReLU-conv3x3, then a clean identity addition ("Identity Mappings", Figure 4e).

    A projection or subsampling shortcut reads the pre-activated input, as in the authors' code.
    """

    def __init__(
        self,
        in_chs: int,
        planes: int,
        *,
        stride: int = 1,
        shortcut: str | None = "B",
        se_reduction: int = 0,
        drop_rate: float = 0.0,
        pad_channels: str = "after",
    ) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_chs)
        self.relu = nn.ReLU(inplace=True)
        self.conv1 = conv3x3(in_chs, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.drop = _dropout(drop_rate)
        self.conv2 = conv3x3(planes, planes)
        self.se = _se(planes, se_reduction)
        self.residual = shortcut is not None
        self.downsample = (
            make_shortcut(shortcut, in_chs, planes, stride, norm=False, pad_channels=pad_channels)
            if self.residual
            else None
        )
        self.out_chs = planes

    def last_norm(self) -> nn.Module:
        """The layer whose weight zero-initialisation turns the residual branch off."""
        return self.conv2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_pre = self.bn1(x)
        x_pre = self.relu(x_pre)
        shortcut = x if self.downsample is None else self.downsample(x_pre)
        out = self.conv1(x_pre)
        out = self.bn2(out)
        out = self.relu(out)
        out = self.drop(out)
        out = self.conv2(out)
        out = self.se(out)
        return out + shortcut if self.residual else out


class PreActBottleneck(nn.Module):
    """BN-ReLU-conv1x1, BN-ReLU-conv3x3, BN-ReLU-conv1x1, then a clean identity addition."""

    expansion = 4

    def __init__(
        self,
        in_chs: int,
        planes: int,
        *,
        stride: int = 1,
        shortcut: str | None = "B",
        groups: int = 1,
        base_width: int = 64,
        se_reduction: int = 0,
        drop_rate: float = 0.0,
        pad_channels: str = "after",
    ) -> None:
        super().__init__()
        width = bottleneck_width(planes, groups, base_width)
        out_chs = planes * self.expansion
        self.bn1 = nn.BatchNorm2d(in_chs)
        self.relu = nn.ReLU(inplace=True)
        self.conv1 = conv1x1(in_chs, width)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, stride, groups)
        self.bn3 = nn.BatchNorm2d(width)
        self.drop = _dropout(drop_rate)
        self.conv3 = conv1x1(width, out_chs)
        self.se = _se(out_chs, se_reduction)
        self.residual = shortcut is not None
        self.downsample = (
            make_shortcut(shortcut, in_chs, out_chs, stride, norm=False, pad_channels=pad_channels)
            if self.residual
            else None
        )
        self.out_chs = out_chs

    def last_norm(self) -> nn.Module:
        """The layer whose weight zero-initialisation turns the residual branch off."""
        return self.conv3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_pre = self.bn1(x)
        x_pre = self.relu(x_pre)
        shortcut = x if self.downsample is None else self.downsample(x_pre)
        out = self.conv1(x_pre)
        out = self.bn2(out)
        out = self.relu(out)
        out = self.conv2(out)
        out = self.bn3(out)
        out = self.relu(out)
        out = self.drop(out)
        out = self.conv3(out)
        out = self.se(out)
        return out + shortcut if self.residual else out


RESIDUAL_BLOCKS: dict[tuple[str, bool], type[nn.Module]] = {
    ("basic", False): BasicBlock,
    ("bottleneck", False): Bottleneck,
    ("basic", True): PreActBasicBlock,
    ("bottleneck", True): PreActBottleneck,
}
"""Block class by (``"basic"`` or ``"bottleneck"``, pre-activation)."""
