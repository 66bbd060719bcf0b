"""Tracing a convolutional trunk: map sizes, strides and channels, read off the layers themselves.

Networks whose unpadded convolutions and pools shrink the map (LeNet-5, AlexNet, VGG, NiN, SqueezeNet, GoogLeNet)
derive their smallest accepted input and their feature taps from these, instead of stating numbers by hand.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch.nn as nn

from convzoo.models.base import FeatureInfo


def _first(value: int | Sequence[int]) -> int:
    return value if isinstance(value, int) else value[0]


def _window(layer: nn.Module) -> tuple[int, int, int, int, bool] | None:
    """(kernel, stride, padding, dilation, ceil_mode) of a layer that slides a square window; None for other layers."""
    kernel = getattr(layer, "kernel_size", None)
    if kernel is None:
        return None
    padding = getattr(layer, "padding", 0)
    if isinstance(padding, str):  # a convolution's "same" keeps the size, "valid" pads nothing
        return (1, 1, 0, 1, False) if padding == "same" else (_first(kernel), _first(layer.stride), 0, 1, False)
    stride = getattr(layer, "stride", None) or kernel
    return (
        _first(kernel),
        _first(stride),
        _first(padding),
        _first(getattr(layer, "dilation", 1)),
        bool(getattr(layer, "ceil_mode", False)),
    )


def map_size(layers: Iterable[nn.Module], size: int) -> int:
    """Side of the square map after ``layers`` for a square input of ``size`` pixels; below 1: too small an input.

    Follows PyTorch's output-size rule for convolutions and pooling, including ceil mode's rule that the last window
    must start inside the input or its left padding. Layers without a window keep the size; nested ``nn.Sequential``
    blocks are traced through.
    """
    for layer in layers:
        window = _window(layer)
        if window is None:
            if isinstance(layer, nn.Sequential):
                size = map_size(layer, size)
                if size < 1:
                    return size
            continue
        kernel, stride, padding, dilation, ceil = window
        span = size + 2 * padding - dilation * (kernel - 1) - 1
        out = (span + (stride - 1 if ceil else 0)) // stride + 1
        if ceil and (out - 1) * stride >= size + padding:
            out -= 1
        if out < 1:
            return out
        size = out
    return size


def smallest_input(layers: Sequence[nn.Module]) -> int:
    """The smallest square input for which every map of ``layers`` keeps at least one pixel.

    Map sizes never shrink as the input grows, so a doubling search and a bisection find it.
    """
    high = 1
    while map_size(layers, high) < 1:
        high *= 2
        if high > 1 << 20:
            raise ValueError("no input of up to 2^20 pixels leaves these layers a pixel")
    low = high // 2  # too small, or 0 when a single pixel is enough
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if map_size(layers, middle) >= 1 else (middle, high)
    return high


def _stride(layer: nn.Module) -> int:
    window = _window(layer)
    if window is not None:
        return window[1]
    if isinstance(layer, nn.Sequential):
        return math.prod(_stride(child) for child in layer)
    return 1


def stage_taps(features: nn.Sequential, in_chans: int, prefix: str = "features") -> list[FeatureInfo]:
    """One tap per resolution: the last layer before each stride, and the last layer of ``features``.

    Channels follow the ``out_channels`` of the layers that change them. A tap's ``reduction`` is the cumulative
    stride; unpadded layers make the map a few pixels smaller than ``size / reduction``.
    """
    trace: list[tuple[str, int, int]] = []
    chs, reduction = in_chans, 1
    for name, layer in features.named_children():
        chs = getattr(layer, "out_channels", chs)
        reduction *= _stride(layer)
        trace.append((name, chs, reduction))
    return [
        FeatureInfo(chs, reduction, f"{prefix}.{name}")
        for i, (name, chs, reduction) in enumerate(trace)
        if i + 1 == len(trace) or trace[i + 1][2] != reduction
    ]
