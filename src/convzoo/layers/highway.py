"""The convolutional highway layer (Srivastava, Greff and Schmidhuber, "Training Very Deep Networks", NIPS 2015).

y = H(x) T(x) + x (1 - T(x)): a learned transform gate T = sigmoid(conv_T(x)) decides, per unit, how much of the
transformed signal H(x) = ReLU(conv_H(x)) replaces the carried input. Both convolutions have the same receptive field
and keep the map size, so input and output have the same shape (section 2.1).
"""

from __future__ import annotations

import torch
import torch.nn as nn


class HighwayConv2d(nn.Module):
    """A convolutional highway layer of ``chs`` channels.

    Args:
        chs: Channels in and out (a highway layer cannot change the width; a plain layer does that).
        kernel_size: Receptive field of both the transform H and the gate T.
        gate_bias: Initial bias of the transform gate. Negative values (section 2.2 suggests -1, -3, ...; the
            authors' CIFAR networks use -2) make the layer start close to the identity, "biased towards carry".
    """

    def __init__(self, chs: int, *, kernel_size: int = 3, gate_bias: float = -2.0) -> None:
        super().__init__()
        self.transform = nn.Conv2d(chs, chs, kernel_size, padding=kernel_size // 2)
        self.act = nn.ReLU()
        self.gate = nn.Conv2d(chs, chs, kernel_size, padding=kernel_size // 2)
        self.gate_bias = gate_bias

    def reset_parameters(self) -> None:
        """Caffe's "xavier" filler (uniform, variance 1 / fan-in) for both kernels; zero H bias, ``gate_bias`` for T."""
        for conv in (self.transform, self.gate):
            nn.init.kaiming_uniform_(conv.weight, nonlinearity="linear")
        nn.init.zeros_(self.transform.bias)
        nn.init.constant_(self.gate.bias, self.gate_bias)

    def transform_gate(self, x: torch.Tensor) -> torch.Tensor:
        """T(x): the share of each output unit taken from the transform rather than carried from the input."""
        return torch.sigmoid(self.gate(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.transform(x)
        h = self.act(h)
        t = self.transform_gate(x)
        return h * t + x * (1.0 - t)


__all__ = ["HighwayConv2d"]
