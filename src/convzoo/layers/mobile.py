"""Building blocks of the mobile networks: depthwise separable convolution and the inverted residual with a linear
bottleneck, both built from `ConvNormAct` units in torchvision's numbered layout.

- Howard et al. MobileNets: Efficient Convolutional Neural Networks for Mobile Vision Applications. 2017 (Figure 3).
- Sandler et al. MobileNetV2: Inverted Residuals and Linear Bottlenecks. CVPR 2018 (Table 1, Figure 4d).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from convzoo.layers.conv import ConvNormAct


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round a scaled channel count to the nearest multiple of ``divisor``, never dropping more than 10%.

    MobileNetV2's width multiplier rounds every layer this way (as its reference implementation and torchvision
    do), so that channel counts stay friendly to vectorised hardware.
    """
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


class DepthwiseSeparable(nn.Module):
    """MobileNet v1's unit (Figure 3, right): 3x3 depthwise conv-BN-ReLU, then 1x1 pointwise conv-BN-ReLU.

    The depthwise convolution filters each channel on its own and carries the stride; the pointwise convolution
    mixes channels. Together they cost ``1/N + 1/9`` of a full 3x3 convolution (section 3.1).
    """

    def __init__(self, in_chs: int, out_chs: int, *, stride: int = 1, act: type[nn.Module] = nn.ReLU) -> None:
        super().__init__()
        self.dw = ConvNormAct(in_chs, in_chs, 3, stride=stride, groups=in_chs, act=act)
        self.pw = ConvNormAct(in_chs, out_chs, 1, act=act)
        self.out_chs = out_chs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.dw(x)
        return self.pw(out)


class InvertedResidual(nn.Module):
    """MobileNetV2's bottleneck (Table 1): 1x1 expansion by ``expand_ratio`` (ReLU6), 3x3 depthwise (ReLU6), and a
    linear 1x1 projection back to a narrow output; an identity shortcut joins the narrow ends where shapes match.

    The projection has no activation: section 3.2 shows that a ReLU in the low-dimensional bottleneck destroys
    information. The layers sit in one Sequential ``conv`` in torchvision's order, so its state_dicts load by name.

    Args:
        in_chs: Input channels.
        out_chs: Output channels.
        stride: Stride of the depthwise convolution.
        expand_ratio: The expansion factor t; with t = 1 the expansion layer is left out.
    """

    def __init__(self, in_chs: int, out_chs: int, *, stride: int = 1, expand_ratio: float = 6) -> None:
        super().__init__()
        hidden = int(round(in_chs * expand_ratio))
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvNormAct(in_chs, hidden, 1, act=nn.ReLU6))
        layers += [
            ConvNormAct(hidden, hidden, 3, stride=stride, groups=hidden, act=nn.ReLU6),
            nn.Conv2d(hidden, out_chs, 1, bias=False),
            nn.BatchNorm2d(out_chs),
        ]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and in_chs == out_chs
        self.out_chs = out_chs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.residual else out
