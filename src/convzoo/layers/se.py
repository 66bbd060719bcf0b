"""Squeeze-and-Excitation (Hu, Shen and Sun, CVPR 2018): channel gates computed from global context."""

from __future__ import annotations

import torch
import torch.nn as nn


class SqueezeExcite(nn.Module):
    """Rescale each channel by a gate in (0, 1) computed from the globally pooled feature map.

    The two fully connected layers are 1x1 convolutions with bias, ``channels -> channels // reduction ->
    channels``, as in the paper's Figure 3 (reduction ratio r = 16 by default).

    Args:
        channels: Channels of the feature map to gate.
        reduction: The paper's reduction ratio r.
    """

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        if reduction < 1:
            raise ValueError(f"SE reduction ratio must be >= 1; got {reduction}")
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = x.mean((2, 3), keepdim=True)
        gate = self.fc1(gate)
        gate = self.act(gate)
        gate = self.fc2(gate)
        gate = torch.sigmoid(gate)
        return x * gate
