"""Parts the segmentation networks share: their base class, bilinear upsampling, cropping and the conv blocks."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn


class SegmentationNet(nn.Module):
    """Base class of the networks that label every pixel.

    ``forward(x)`` returns logits of shape (N, num_classes, h, w); `output_size` says what (h, w) an input of a
    given size gives (the input's own size for padded networks).

    Args:
        num_classes: Classes, the background included.
        in_chans: Input image channels.
        model_name: Name used in error messages.
    """

    min_input_size: int = 1

    def __init__(self, *, num_classes: int, in_chans: int, model_name: str) -> None:
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"{model_name}: num_classes must be a positive int; got {num_classes!r}")
        if isinstance(in_chans, bool) or not isinstance(in_chans, int) or in_chans < 1:
            raise ValueError(f"{model_name}: in_chans must be a positive int; got {in_chans!r}")
        self.model_name = model_name
        self.num_classes = num_classes
        self.in_chans = in_chans

    def output_size(self, input_hw: Sequence[int]) -> tuple[int, int]:
        """(h, w) of the logits for an input of ``input_hw`` pixels."""
        height, width = (int(v) for v in input_hw)
        return height, width

    def check_input(self, x: torch.Tensor) -> None:
        """Check that ``x`` is an (N, in_chans, H, W) floating-point batch of images large enough for the network.

        Raises:
            TypeError: If ``x`` is not a floating-point tensor.
            ValueError: If its shape is wrong or its images are too small.
        """
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{self.model_name} expects a torch.Tensor batch (N, {self.in_chans}, H, W); got {type(x)}")
        if x.dim() != 4 or x.shape[1] != self.in_chans:
            raise ValueError(
                f"{self.model_name} expects a batch of shape (N, {self.in_chans}, H, W); got {tuple(x.shape)}"
                + (" (add a batch dimension with x.unsqueeze(0))" if x.dim() == 3 else "")
            )
        if not x.is_floating_point():
            raise TypeError(f"{self.model_name} expects floating-point images; got {x.dtype}")
        height, width = x.shape[-2:]
        if min(height, width) < self.min_input_size:
            raise ValueError(
                f"{self.model_name} needs images of at least {self.min_input_size}x{self.min_input_size}; "
                f"got {height}x{width}"
            )


def bilinear_kernel(size: int) -> torch.Tensor:
    """The (size, size) kernel with which a transposed convolution upsamples by bilinear interpolation.

    For a factor ``f`` the kernel has ``size = 2f`` taps (``2f - 1`` for odd ones), each the product of the 1-D tents
    ``1 - |i - c| / f`` around the centre ``c`` (the filler of the FCN reference code). With stride ``f`` every output
    pixel is then the bilinear interpolation of its input neighbours.
    """
    if size < 1:
        raise ValueError(f"bilinear_kernel: size must be positive; got {size}")
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    tent = 1 - (torch.arange(size, dtype=torch.float64) - center).abs() / factor
    return torch.outer(tent, tent)


def bilinear_upsampling(channels: int, factor: int, *, padding: int = 0) -> nn.ConvTranspose2d:
    """A ``channels``-to-``channels`` transposed convolution without bias that upsamples each channel by ``factor``.

    Kernel ``2 * factor``, stride ``factor``, initialised to bilinear interpolation (channel ``c`` reads only channel
    ``c``); its weights may then be learned.
    """
    layer = nn.ConvTranspose2d(channels, channels, 2 * factor, stride=factor, padding=padding, bias=False)
    reset_bilinear(layer)
    return layer


def reset_bilinear(layer: nn.ConvTranspose2d) -> None:
    """Set a square transposed convolution's weights to per-channel bilinear interpolation (`bilinear_kernel`)."""
    weight = layer.weight
    if weight.is_meta:
        return
    with torch.no_grad():
        weight.zero_()
        kernel = bilinear_kernel(layer.kernel_size[0]).to(weight)
        for c in range(min(weight.shape[0], weight.shape[1])):
            weight[c, c] = kernel


def crop(x: torch.Tensor, offset: Sequence[int], size: Sequence[int]) -> torch.Tensor:
    """The ``size`` window of ``x``'s last two dimensions starting at ``offset`` (Caffe's crop layer).

    Raises:
        ValueError: If the window does not lie inside ``x``.
    """
    (top, left), (height, width) = offset, size
    if top < 0 or left < 0 or top + height > x.shape[-2] or left + width > x.shape[-1]:
        raise ValueError(
            f"cannot crop a {height}x{width} window at offset ({top}, {left}) from a {x.shape[-2]}x{x.shape[-1]} map"
        )
    return x[..., top : top + height, left : left + width]


def center_crop(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """The centre ``size`` window of ``x``'s last two dimensions (U-Net's cropping of the skip features)."""
    height, width = size
    return crop(x, ((x.shape[-2] - height) // 2, (x.shape[-1] - width) // 2), size)


def fit(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """``x`` cut or zero-padded at the bottom and right to ``size``, its top-left corner kept in place."""
    height, width = size
    x = x[..., :height, :width]
    pad_h, pad_w = height - x.shape[-2], width - x.shape[-1]
    if pad_h or pad_w:
        x = nn.functional.pad(x, (0, pad_w, 0, pad_h))
    return x


class DoubleConv(nn.Sequential):
    """Two 3x3 convolutions, each followed by batch normalisation (optional) and a ReLU: one U-Net stage.

    Args:
        in_chs: Input channels.
        out_chs: Output channels of both convolutions.
        padding: 1 keeps the map's size; 0 is the original U-Net's unpadded convolution, 2 pixels smaller each.
        batch_norm: Batch normalisation after each convolution (then without bias).
    """

    def __init__(self, in_chs: int, out_chs: int, *, padding: int = 1, batch_norm: bool = True) -> None:
        layers: list[nn.Module] = []
        for chs in (in_chs, out_chs):
            layers.append(nn.Conv2d(chs, out_chs, 3, padding=padding, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(out_chs))
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


__all__ = [
    "DoubleConv",
    "SegmentationNet",
    "bilinear_kernel",
    "bilinear_upsampling",
    "center_crop",
    "crop",
    "fit",
    "reset_bilinear",
]
