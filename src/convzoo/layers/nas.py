"""Operations of the NASNet search space (Zoph et al., CVPR 2018), with TensorFlow's padding semantics.

The NASNet cells were searched and trained in TensorFlow, whose "SAME" padding differs from PyTorch's symmetric
padding whenever a stride-2 window meets an even-sized input: TensorFlow puts the odd padding pixel at the bottom and
right only. These layers reproduce that exactly (padding computed from the input at run time), so an image of any
size keeps the same alignment as in the reference implementation, and its published weights give its outputs.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

# TensorFlow-slim's NASNet normalises with epsilon 1e-3; the published weights depend on it.
BN_EPS = 1e-3


def batch_norm(chs: int) -> nn.BatchNorm2d:
    """Batch norm with NASNet's epsilon."""
    return nn.BatchNorm2d(chs, eps=BN_EPS)


def same_padding(size: int, kernel_size: int, stride: int) -> tuple[int, int]:
    """TensorFlow "SAME" padding (before, after) of one spatial dimension: the output has ceil(size / stride) steps."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel_size - size, 0)
    return total // 2, total - total // 2


def _pads(x: torch.Tensor, kernel_size: int, stride: int) -> tuple[int, int, int, int]:
    top, bottom = same_padding(x.shape[-2], kernel_size, stride)
    left, right = same_padding(x.shape[-1], kernel_size, stride)
    return left, right, top, bottom


class SamePool2d(nn.Module):
    """3x3 max or average pooling with TensorFlow "SAME" padding.

    As in TensorFlow, padded pixels never win a max and are left out of an average, on whichever side they fall.

    Args:
        kind: ``"max"`` or ``"avg"``.
        kernel_size: Window size.
        stride: Window step.
    """

    def __init__(self, kind: str, kernel_size: int = 3, stride: int = 1) -> None:
        super().__init__()
        if kind not in ("max", "avg"):
            raise ValueError(f"unknown pooling {kind!r}; expected 'max' or 'avg'")
        self.kind = kind
        self.kernel_size = kernel_size
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s = self.kernel_size, self.stride
        left, right, top, bottom = _pads(x, k, s)
        if left == right and top == bottom:
            # Symmetric padding: PyTorch's own padding has exactly TensorFlow's semantics here.
            if self.kind == "max":
                return F.max_pool2d(x, k, s, padding=(top, left))
            return F.avg_pool2d(x, k, s, padding=(top, left), count_include_pad=False)
        if self.kind == "max":
            return F.max_pool2d(F.pad(x, (left, right, top, bottom), value=float("-inf")), k, s)
        # Lopsided padding: average over the real pixels only, by dividing window sums by window counts.
        ones = torch.ones(1, 1, *x.shape[-2:], dtype=x.dtype, device=x.device)
        sums = F.avg_pool2d(F.pad(x, (left, right, top, bottom)), k, s)
        counts = F.avg_pool2d(F.pad(ones, (left, right, top, bottom)), k, s)
        return sums / counts

    def extra_repr(self) -> str:
        return f"{self.kind}, kernel_size={self.kernel_size}, stride={self.stride}, padding=SAME"


class SeparableConv2d(nn.Module):
    """A depthwise k x k convolution (one filter per channel) then a pointwise 1x1 convolution, no bias.

    Args:
        in_chs: Input channels (and depthwise filters).
        out_chs: Output channels of the pointwise convolution.
        kernel_size: Depthwise kernel size.
        stride: Depthwise stride; TensorFlow "SAME" padding either way.
    """

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, stride: int = 1) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride
        # At stride 1 an odd kernel's "SAME" padding is symmetric and fixed; at stride 2 it depends on the input size.
        padding = kernel_size // 2 if stride == 1 else 0
        self.depthwise_conv2d = nn.Conv2d(
            in_chs, in_chs, kernel_size, stride=stride, padding=padding, groups=in_chs, bias=False
        )
        self.pointwise_conv2d = nn.Conv2d(in_chs, out_chs, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = F.pad(x, _pads(x, self.kernel_size, self.stride))
        return self.pointwise_conv2d(self.depthwise_conv2d(x))


class SeparableStack(nn.Module):
    """NASNet's "sep k x k" operation: ReLU-separable-BN applied twice (Zoph et al., appendix A.4).

    The first separable convolution carries the stride and maps ``in_chs`` to ``out_chs``; the second keeps both.
    """

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, stride: int = 1) -> None:
        super().__init__()
        # Not in place: a cell feeds the same hidden state to several operations.
        self.act_1 = nn.ReLU()
        self.separable_1 = SeparableConv2d(in_chs, out_chs, kernel_size, stride)
        self.bn_sep_1 = batch_norm(out_chs)
        self.act_2 = nn.ReLU(inplace=True)
        self.separable_2 = SeparableConv2d(out_chs, out_chs, kernel_size)
        self.bn_sep_2 = batch_norm(out_chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn_sep_1(self.separable_1(self.act_1(x)))
        return self.bn_sep_2(self.separable_2(self.act_2(x)))


class ReLUConvBN(nn.Module):
    """ReLU, 1x1 convolution, batch norm: how a NASNet cell brings an input to its own width."""

    def __init__(self, in_chs: int, out_chs: int) -> None:
        super().__init__()
        self.act = nn.ReLU()  # not in place: the cell's input is also read by the next cell
        self.conv = nn.Conv2d(in_chs, out_chs, 1, bias=False)
        self.bn = batch_norm(out_chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(self.act(x)))


class FactorizedReduction(nn.Module):
    """Halve the resolution without discarding three of every four pixels (Zoph et al., appendix A.4).

    Two stride-2 1x1 convolutions, each giving half of ``out_chs``, read the (ReLU'd) input at offsets (0, 0) and
    (1, 1); their outputs are concatenated and normalised. Used where a cell's previous input is twice as large as
    its current one.

    Raises:
        ValueError: If ``out_chs`` is odd.
    """

    def __init__(self, in_chs: int, out_chs: int) -> None:
        super().__init__()
        if out_chs % 2:
            raise ValueError(f"a factorized reduction splits its output in two halves; got {out_chs} channels")
        self.act = nn.ReLU()
        self.path_1 = nn.Conv2d(in_chs, out_chs // 2, 1, stride=2, bias=False)
        self.path_2 = nn.Conv2d(in_chs, out_chs // 2, 1, stride=2, bias=False)
        self.bn = batch_norm(out_chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(x)
        # The second path sees the input shifted up and left by one pixel, zero-filled at the bottom and right.
        shifted = F.pad(x[:, :, 1:, 1:], (0, 1, 0, 1))
        return self.bn(torch.cat([self.path_1(x), self.path_2(shifted)], 1))


def drop_path(x: torch.Tensor, drop_prob: float, training: bool) -> torch.Tensor:
    """Zero the whole of ``x`` for a random subset of the batch (probability ``drop_prob`` per sample).

    The kept samples are scaled by 1 / (1 - drop_prob), so the expected value is unchanged; evaluation is a no-op.
    """
    if not training or drop_prob <= 0.0:
        return x
    keep = 1.0 - drop_prob
    mask = x.new_empty(x.shape[0], *([1] * (x.dim() - 1))).bernoulli_(keep)
    return x * mask / keep
