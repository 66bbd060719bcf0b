"""Residual shortcuts and the three options of He et al. (CVPR 2016, section 3.3).

- A: parameter-free. Identity where shapes match; where they change, subsample by the stride and pad the new
  channels with zeros.
- B: identity where shapes match; a 1x1 projection (with batch norm) where they change.
- C: a 1x1 projection on every shortcut.

Option A's zero channels go where ``pad_channels`` says. ``"after"`` appends them after the input's channels, as the
original Torch CIFAR code does (a concatenation with zeros); ``"split"`` puts half before and half after, as the
widely used PyTorch reimplementation (github.com/akamaster/pytorch_resnet_cifar10) does. Neither adds parameters,
but a trained network only works with the convention it was trained with.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from convzoo.layers.conv import conv1x1

SHORTCUT_OPTIONS = ("A", "B", "C")
PAD_CHANNELS = ("after", "split")


def check_pad_channels(pad_channels: str) -> str:
    """Return ``pad_channels`` if it names a convention of `PAD_CHANNELS`; raise a ValueError otherwise."""
    if pad_channels not in PAD_CHANNELS:
        raise ValueError(
            f"unknown pad_channels {pad_channels!r}; expected 'after' (zero channels after the input's, as in "
            f"Torch's CIFAR ResNets) or 'split' (half before, half after, as in the PyTorch CIFAR reimplementation)"
        )
    return pad_channels


class ZeroPadShortcut(nn.Module):
    """Option A: take every ``stride``-th pixel and pad with zero channels up to ``out_chs``.

    Args:
        in_chs: Channels of the input.
        out_chs: Channels of the output.
        stride: Spatial subsampling.
        pad_channels: Where the zero channels go: ``"after"`` the input's, or ``"split"`` evenly before and after
            them (the odd one after, when their number is odd).
    """

    def __init__(self, in_chs: int, out_chs: int, stride: int, *, pad_channels: str = "after") -> None:
        super().__init__()
        if out_chs < in_chs:
            raise ValueError(f"shortcut option A can only add channels; asked for {in_chs} -> {out_chs}")
        self.stride = stride
        self.extra = out_chs - in_chs
        self.pad_channels = check_pad_channels(pad_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        before = self.extra // 2 if self.pad_channels == "split" else 0
        return F.pad(x, (0, 0, 0, 0, before, self.extra - before))

    def extra_repr(self) -> str:
        return f"stride={self.stride}, zero_channels={self.extra}, pad_channels={self.pad_channels!r}"


def make_shortcut(
    option: str, in_chs: int, out_chs: int, stride: int, *, norm: bool = True, pad_channels: str = "after"
) -> nn.Module | None:
    """The shortcut module for one residual block, or None for the identity.

    Args:
        option: ``"A"``, ``"B"`` or ``"C"``.
        in_chs: Channels entering the block.
        out_chs: Channels leaving the block.
        stride: Spatial stride of the block.
        norm: Follow a projection by batch norm (post-activation blocks) or not (pre-activation blocks, whose
            shortcut reads an already normalised input).
        pad_channels: Where option A puts its zero channels (see `ZeroPadShortcut`); other options ignore it.
    """
    if option not in SHORTCUT_OPTIONS:
        raise ValueError(f"unknown shortcut option {option!r}; expected one of {SHORTCUT_OPTIONS} or None (plain)")
    same_shape = stride == 1 and in_chs == out_chs
    if option == "A":
        return None if same_shape else ZeroPadShortcut(in_chs, out_chs, stride, pad_channels=pad_channels)
    if option == "B" and same_shape:
        return None
    layers: list[nn.Module] = [conv1x1(in_chs, out_chs, stride)]
    if norm:
        layers.append(nn.BatchNorm2d(out_chs))
    return nn.Sequential(*layers)
