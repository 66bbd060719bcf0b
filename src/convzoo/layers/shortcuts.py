"""Residual shortcuts and the three options of He et al. (CVPR 2016, section 3.3).

- A: parameter-free. Identity where shapes match; where they change, subsample by the stride and pad the new
  channels with zeros.
- B: identity where shapes match; a 1x1 projection (with batch norm) where they change.
- C: a 1x1 projection on every shortcut.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from convzoo.layers.conv import conv1x1

SHORTCUT_OPTIONS = ("A", "B", "C")


class ZeroPadShortcut(nn.Module):
    """Option A: take every ``stride``-th pixel and append zero channels up to ``out_chs``."""

    def __init__(self, in_chs: int, out_chs: int, stride: int) -> None:
        super().__init__()
        if out_chs < in_chs:
            raise ValueError(f"shortcut option A can only add channels; asked for {in_chs} -> {out_chs}")
        self.stride = stride
        self.extra = out_chs - in_chs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra))

    def extra_repr(self) -> str:
        return f"stride={self.stride}, zero_channels={self.extra}"


def make_shortcut(option: str, in_chs: int, out_chs: int, stride: int, *, norm: bool = True) -> nn.Module | None:
    """The shortcut module for one residual block, or None for the identity.

    Args:
        option: ``"A"``, ``"B"`` or ``"C"``.
        in_chs: Channels entering the block.
        out_chs: Channels leaving the block.
        stride: Spatial stride of the block.
        norm: Follow a projection by batch norm (post-activation blocks) or not (pre-activation blocks, whose
            shortcut reads an already normalised input).
    """
    if option not in SHORTCUT_OPTIONS:
        raise ValueError(f"unknown shortcut option {option!r}; expected one of {SHORTCUT_OPTIONS} or None (plain)")
    same_shape = stride == 1 and in_chs == out_chs
    if option == "A":
        return None if same_shape else ZeroPadShortcut(in_chs, out_chs, stride)
    if option == "B" and same_shape:
        return None
    layers: list[nn.Module] = [conv1x1(in_chs, out_chs, stride)]
    if norm:
        layers.append(nn.BatchNorm2d(out_chs))
    return nn.Sequential(*layers)
