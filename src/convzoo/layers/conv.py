"""Convolution units: bias-free convolutions for networks that normalise after them, and conv-norm-activation."""

from __future__ import annotations

from collections import OrderedDict

import torch.nn as nn


def conv3x3(in_chs: int, out_chs: int, stride: int = 1, groups: int = 1, dilation: int = 1) -> nn.Conv2d:
    """3x3 convolution with 'same' padding and no bias (a following norm layer supplies the shift)."""
    return nn.Conv2d(in_chs, out_chs, 3, stride=stride, padding=dilation, groups=groups, bias=False, dilation=dilation)


def conv1x1(in_chs: int, out_chs: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution without bias."""
    return nn.Conv2d(in_chs, out_chs, 1, stride=stride, bias=False)


class ConvNormAct(nn.Sequential):
    """A convolution, batch norm and an activation, in that order.

    Two layouts of the same layers, so that the peers' state_dicts load by name: children numbered ``0``, ``1``,
    ``2`` as in torchvision's ``Conv2dNormActivation`` (the MobileNets), or named ``conv``, ``bn``, ``act`` as in
    its ``BasicConv2d`` (the Inception networks).

    Args:
        in_chs: Input channels.
        out_chs: Output channels.
        kernel_size: Kernel size, an int or (height, width) for the factorised 1xn / nx1 convolutions.
        stride: Stride.
        padding: Zero padding, an int or (height, width). None pads ``(k - 1) // 2``, which keeps the map size at
            stride 1 for odd kernels.
        groups: Convolution groups; ``groups == in_chs == out_chs`` makes it depthwise.
        norm: Batch norm after the convolution, which then has no bias. Without it the convolution has a bias, as
            in the 2014 GoogLeNet, which predates batch normalisation.
        eps: Batch-norm epsilon.
        act: Activation class, instantiated in place; None for a linear output.
        named: Name the children ``conv``, ``bn`` and ``act`` rather than number them. A left-out norm or activation
            is then an identity, so that the names do not depend on the options.
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel_size: int | tuple[int, int] = 3,
        *,
        stride: int = 1,
        padding: int | tuple[int, int] | None = None,
        groups: int = 1,
        norm: bool = True,
        eps: float = 1e-5,
        act: type[nn.Module] | None = nn.ReLU,
        named: bool = False,
    ) -> None:
        if padding is None:
            kernel = (kernel_size,) * 2 if isinstance(kernel_size, int) else kernel_size
            padding = tuple((k - 1) // 2 for k in kernel)
        conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride=stride, padding=padding, groups=groups, bias=not norm)
        layers = OrderedDict(conv=conv)
        if norm or named:
            layers["bn"] = nn.BatchNorm2d(out_chs, eps=eps) if norm else nn.Identity()
        if act is not None or named:
            layers["act"] = act(inplace=True) if act is not None else nn.Identity()
        if named:
            super().__init__(layers)
        else:
            super().__init__(*layers.values())
        self.out_chs = out_chs
