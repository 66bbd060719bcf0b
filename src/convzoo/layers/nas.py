"""Operations of the NASNet search space (Zoph et al., CVPR 2018), with TensorFlow's padding semantics, and the cell
that a searched table (`CellSpec`) turns into a module (`Cell`).

The NASNet cells were searched and trained in TensorFlow, whose "SAME" padding differs from PyTorch's symmetric
padding whenever a stride-2 window meets an even-sized input: TensorFlow puts the odd padding pixel at the bottom and
right only. These layers reproduce that exactly (padding computed from the input at run time), so an image of any
size keeps the same alignment as in the reference implementation, and its published weights give its outputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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
        x = self.depthwise_conv2d(x)
        return self.pointwise_conv2d(x)


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
        x = self.act_1(x)
        x = self.separable_1(x)
        x = self.bn_sep_1(x)
        x = self.act_2(x)
        x = self.separable_2(x)
        return self.bn_sep_2(x)


class ReLUConvBN(nn.Module):
    """ReLU, 1x1 convolution, batch norm: how a NASNet cell brings an input to its own width."""

    def __init__(self, in_chs: int, out_chs: int) -> None:
        super().__init__()
        self.act = nn.ReLU()  # not in place: the cell's input is also read by the next cell
        self.conv = nn.Conv2d(in_chs, out_chs, 1, bias=False)
        self.bn = batch_norm(out_chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(x)
        x = self.conv(x)
        return self.bn(x)


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
        x = torch.cat([self.path_1(x), self.path_2(shifted)], 1)
        return self.bn(x)


def drop_path(x: torch.Tensor, drop_prob: float, training: bool) -> torch.Tensor:
    """Zero the whole of ``x`` for a random subset of the batch (probability ``drop_prob`` per sample).

    The kept samples are scaled by 1 / (1 - drop_prob), so the expected value is unchanged; evaluation is a no-op.
    """
    if not training or drop_prob <= 0.0:
        return x
    keep = 1.0 - drop_prob
    mask = x.new_empty(x.shape[0], *([1] * (x.dim() - 1))).bernoulli_(keep)
    return x * mask / keep


OPERATIONS = ("sep3x3", "sep5x5", "sep7x7", "avg3x3", "max3x3", "identity")

# One input of a block: (operation, hidden state it reads). Hidden state 0 is the cell's input h_i (after its 1x1
# projection), 1 the previous cell's output h_{i-1} (brought to h_i's shape), and 2 + b the output of block b.
Operation = tuple[str, int]


@dataclass(frozen=True)
class CellSpec:
    """A searched cell: five blocks of two (operation, hidden state) pairs each, and the states it concatenates.

    Attributes:
        blocks: Per block, its left and right input; the block outputs their sum.
        concat: The hidden states concatenated into the cell's output, in order.
    """

    blocks: tuple[tuple[Operation, Operation], ...]
    concat: tuple[int, ...]


def make_operation(op: str, in_chs: int, filters: int, stride: int) -> nn.Module:
    """The module of one table entry, reading ``in_chs`` channels and giving ``filters``."""
    if op not in OPERATIONS:
        raise ValueError(f"unknown operation {op!r}; expected one of {OPERATIONS}")
    if op.startswith("sep"):
        return SeparableStack(in_chs, filters, int(op[3]), stride)
    if in_chs != filters or (op == "identity" and stride != 1):
        # TensorFlow would add a 1x1 projection here; NASNet-A's tables never need one.
        raise ValueError(f"{op} cannot change the width or resolution (reads {in_chs} channels at stride {stride})")
    return nn.Identity() if op == "identity" else SamePool2d(op[:3], 3, stride)


class Cell(nn.Module):
    """A NASNet cell built from a `CellSpec`.

    Args:
        spec: The cell table.
        in_chs: Channels of the cell's input h_i.
        prev_chs: Channels of the previous cell's output h_{i-1}; None where there is none (the first stem cell),
            in which case the cell reads its raw input in its place.
        filters: The cell's width: channels of every block output.
        stride: 2 for a reduction cell; operations on h_i and h_{i-1} carry it.
        prev_stride: 2 where h_{i-1} is twice the size of h_i (then a factorized reduction matches it).
    """

    def __init__(
        self,
        spec: CellSpec,
        in_chs: int,
        prev_chs: int | None,
        filters: int,
        *,
        stride: int = 1,
        prev_stride: int = 1,
    ) -> None:
        super().__init__()
        self.spec = spec
        self.stride = stride
        self.drop_prob = 0.0  # set by the network (ScheduledDropPath)
        self.conv_1x1 = ReLUConvBN(in_chs, filters)
        self.prev_proj: nn.Module
        if prev_stride not in (1, 2):
            raise ValueError(f"h_(i-1) can be at most twice the size of h_i; got a factor of {prev_stride}")
        if prev_chs is None:
            self.prev_proj, prev_out = nn.Identity(), in_chs
        elif prev_stride == 2:
            self.prev_proj, prev_out = FactorizedReduction(prev_chs, filters), filters
        elif prev_chs != filters:
            self.prev_proj, prev_out = ReLUConvBN(prev_chs, filters), filters
        else:
            self.prev_proj, prev_out = nn.Identity(), prev_chs
        chs = [filters, prev_out] + [filters] * len(spec.blocks)

        self.op_names: list[tuple[str, str]] = []
        for b, pair in enumerate(spec.blocks):
            names = []
            for side, (op, state) in zip(("left", "right"), pair):
                if not 0 <= state < 2 + b:
                    raise ValueError(f"block {b} reads hidden state {state}, which does not exist yet")
                op_stride = stride if state < 2 else 1  # block outputs already have the cell's resolution
                name = f"comb_iter_{b}_{side}"
                self.add_module(name, make_operation(op, chs[state], filters, op_stride))
                names.append(name)
            self.op_names.append((names[0], names[1]))
        if any(chs[i] != filters or (i < 2 and stride != 1) for i in spec.concat):
            raise ValueError(f"the concatenated states {spec.concat} do not all have the cell's shape")
        self.out_chs = len(spec.concat) * filters

    def _branch(self, name: str, op: str, x: torch.Tensor) -> torch.Tensor:
        out = getattr(self, name)(x)
        # DropPath drops operations, not the identity connections (TensorFlow-slim's _apply_conv_operation).
        return out if op == "identity" else drop_path(out, self.drop_prob, self.training)

    def forward(self, x: torch.Tensor, x_prev: torch.Tensor) -> torch.Tensor:
        states = [self.conv_1x1(x), self.prev_proj(x_prev)]
        for (left, right), (name_l, name_r) in zip(self.spec.blocks, self.op_names):
            out_l = self._branch(name_l, left[0], states[left[1]])
            out_r = self._branch(name_r, right[0], states[right[1]])
            states.append(out_l + out_r)
        return torch.cat([states[i] for i in self.spec.concat], 1)
