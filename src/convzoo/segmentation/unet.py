"""U-Net: a contracting path of convolutions and max-pools, an expanding path of up-convolutions fed with skips.

Ronneberger, Fischer and Brox. U-Net: Convolutional Networks for Biomedical Image Segmentation. MICCAI 2015
(arXiv:1505.04597). Section 2 and Figure 1: each contracting step is two unpadded 3x3 convolutions with ReLUs and a
2x2 max-pool at stride 2 that doubles the channels (64 to 1024); each expanding step a 2x2 up-convolution that halves
them, the concatenation with the centre crop of the contracting step's map ("cropping is necessary due to the loss of
border pixels in every convolution") and two 3x3 convolutions; a 1x1 convolution maps the 64 channels to the classes:
23 convolutional layers. A 572x572 tile gives 388x388 logits, and only sizes whose every 2x2 max-pool sees an even
map are valid (`valid_input_sizes`). Dropout ends the contracting path (section 3); weights start from a Gaussian
with standard deviation sqrt(2/N), N the inputs of a unit (section 3). With 2 classes on one-channel images the
network has 31,030,658 parameters (the count Keras ports print). Large images go through `predict_tiled`, the
overlap-tile strategy of Figure 2: the border mirrored, the image cut into tiles whose outputs stitch seamlessly.

Two padded variants return logits of the input's size: ``unet_small`` (the same layout with padded convolutions and
batch normalisation, a base width argument; it trains in minutes on 64x64 images on a CPU) and ``unet``, whose
contracting path is any registered classifier (``backbone=``, read through ``features_only``) and whose expanding
path upsamples, concatenates the backbone's map of that stride and applies two conv-BN-ReLU layers per stride.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn as nn

from convzoo.factory import create_model
from convzoo.models.base import ConvNet, FeatureExtractor
from convzoo.registry import IMAGENET_MEAN, IMAGENET_STD, ModelCard, Paper, Reported, check_overrides, register_model
from convzoo.segmentation._blocks import DoubleConv, SegmentationNet, center_crop


def unet_output_size(size: int, depth: int = 4) -> int | None:
    """Output side of the original (unpadded) U-Net of ``depth`` max-pools for an input side; None if invalid.

    Invalid: a max-pool would see an odd map, or a map would vanish.
    """
    for _ in range(depth):
        size -= 4
        if size < 2 or size % 2:
            return None
        size //= 2
    size -= 4
    for _ in range(depth):
        if size < 1:
            return None
        size = 2 * size - 4
    return size if size >= 1 else None


def valid_input_sizes(near: int, depth: int = 4) -> tuple[int | None, int]:
    """The valid input sides of the original U-Net nearest ``near``: (largest <= near or None, smallest >= near)."""
    below = next((s for s in range(near, 0, -1) if unet_output_size(s, depth) is not None), None)
    above = max(near, 1)
    while unet_output_size(above, depth) is None:
        above += 1
    return below, above


class UNet(SegmentationNet):
    """The U-Net of Ronneberger et al.; with ``padding=1`` and batch normalisation its same-size variant.

    Args:
        num_classes: Classes, the background included.
        in_chans: Input image channels (1 in the paper).
        width: Channels of the first stage (64); each max-pool doubles them.
        depth: Number of max-pools (4).
        padding: 0: the paper's unpadded convolutions; 1: padded ones, logits of the input's size.
        batch_norm: Batch normalisation after each 3x3 convolution (not in the paper).
        drop_rate: Dropout at the end of the contracting path.
        model_name: Name used in error messages.
    """

    def __init__(
        self,
        *,
        num_classes: int = 2,
        in_chans: int = 1,
        width: int = 64,
        depth: int = 4,
        padding: int = 0,
        batch_norm: bool = False,
        drop_rate: float = 0.5,
        model_name: str = "unet_original",
    ) -> None:
        super().__init__(num_classes=num_classes, in_chans=in_chans, model_name=model_name)
        if width < 1 or depth < 1 or padding not in (0, 1) or not 0.0 <= drop_rate < 1.0:
            raise ValueError(
                f"{model_name}: needs width >= 1, depth >= 1, padding 0 or 1 and drop_rate in [0, 1); got width="
                f"{width}, depth={depth}, padding={padding}, drop_rate={drop_rate}"
            )
        self.depth, self.padding = depth, padding
        widths = [width * 2**i for i in range(depth + 1)]
        chs = [in_chans, *widths[:-1]]
        self.down = nn.ModuleList(DoubleConv(c, w, padding=padding, batch_norm=batch_norm) for c, w in zip(chs, widths))
        self.pool = nn.MaxPool2d(2, 2)
        self.drop = nn.Dropout(drop_rate) if drop_rate else nn.Identity()
        self.up = nn.ModuleList(nn.ConvTranspose2d(w, w // 2, 2, stride=2) for w in widths[:0:-1])
        self.up_convs = nn.ModuleList(
            DoubleConv(w, w // 2, padding=padding, batch_norm=batch_norm) for w in widths[:0:-1]
        )
        self.head = nn.Conv2d(width, num_classes, 1)
        self.min_input_size = valid_input_sizes(1, depth)[1] if padding == 0 else 2**depth
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) and not m.weight.is_meta:
                # Section 3: N(0, sqrt(2/N)), N the inputs of one unit (9 * 64 for a 3x3 convolution of 64 channels;
                # one pixel of every channel for a 2x2 up-convolution at stride 2).
                if isinstance(m, nn.Conv2d):
                    fan_in = m.weight[0].numel()
                else:
                    fan_in = m.in_channels * math.prod(k // s for k, s in zip(m.kernel_size, m.stride))
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_in))
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def output_size(self, input_hw: Sequence[int]) -> tuple[int, int]:
        """(h, w) of the logits for an input of ``input_hw``; a ValueError names the nearest valid sizes."""
        height, width = (int(v) for v in input_hw)
        return self._side(height), self._side(width)

    def _side(self, size: int) -> int:
        if self.padding:
            if size % 2**self.depth or size < 1:
                step = 2**self.depth
                raise ValueError(
                    f"{self.model_name} needs image sides divisible by {step} (its {self.depth} max-pools); got "
                    f"{size}: try {max(step, size // step * step)} or {(size // step + 1) * step}"
                )
            return size
        out = unet_output_size(size, self.depth)
        if out is None:
            below, above = valid_input_sizes(size, self.depth)
            nearest = f"{below} or {above}" if below else f"{above} (the smallest)"
            raise ValueError(
                f"{self.model_name} cannot take an image side of {size}: its unpadded convolutions and 2x2 max-pools "
                f"need sides {self.min_input_size} + {2**self.depth}k (k >= 0); "
                f"the nearest valid sides are {nearest}"
            )
        return out

    def check_input(self, x: torch.Tensor) -> None:
        super().check_input(x)
        self.output_size(x.shape[-2:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        skips = []
        for i, stage in enumerate(self.down):
            if i:
                x = self.pool(x)
            x = stage(x)
            skips.append(x)
        x = self.drop(skips.pop())
        for up, conv in zip(self.up, self.up_convs):
            x = up(x)
            x = conv(torch.cat([center_crop(skips.pop(), x.shape[-2:]), x], dim=1))
        return self.head(x)


@torch.no_grad()
def predict_tiled(model: UNet, image: torch.Tensor, *, tile: int | None = None, batch_size: int = 4) -> torch.Tensor:
    """Logits for a whole image of any size by the overlap-tile strategy (Figure 2 of the paper).

    The image is mirrored at its border by the margin the unpadded convolutions eat and cut into overlapping input
    tiles of a valid size; their centre outputs are stitched together. Tiles start at multiples of ``2**depth``
    pixels, so every tile pools on the same grid as one pass over the whole mirrored image would, and the stitched
    logits equal that pass's exactly. Put the model in evaluation mode first (the call does not change its mode).

    Args:
        model: An original (unpadded) U-Net.
        image: (N, C, H, W) batch.
        tile: Input tile side, a valid size whose output is at least ``2**depth``; None: the smallest such size whose
            output covers the image, at most the paper's 572.
        batch_size: Tiles per forward pass.

    Returns:
        (N, num_classes, H, W) logits.

    Raises:
        ValueError: For a tile size the network cannot take or whose output is smaller than ``2**depth``.
    """
    height, width = image.shape[-2:]
    grid = 2**model.depth
    if tile is None:
        tile = _default_tile(model, max(height, width))
    out = model.output_size((tile, tile))[0]
    if out < grid:
        raise ValueError(
            f"predict_tiled: a {tile}-pixel tile gives {out} output pixels, fewer than {grid}; use a larger"
        )
    margin, step = (tile - out) // 2, out // grid * grid
    rows, cols = max(1, math.ceil((height - out) / step) + 1), max(1, math.ceil((width - out) / step) + 1)
    extra_h, extra_w = (rows - 1) * step + out - height, (cols - 1) * step + out - width
    padded = mirror_pad(image, (margin, margin + extra_h, margin, margin + extra_w))
    corners = [(r * step, c * step) for r in range(rows) for c in range(cols)]
    result: torch.Tensor | None = None
    for start in range(0, len(corners), batch_size):
        chunk = corners[start : start + batch_size]
        logits = model(torch.cat([padded[..., y : y + tile, x : x + tile] for y, x in chunk])).split(len(image))
        if result is None:
            result = logits[0].new_empty(len(image), logits[0].shape[1], height + extra_h, width + extra_w)
        for (y, x), part in zip(chunk, logits):
            result[..., y : y + out, x : x + out] = part  # overlaps get the same values again
    assert result is not None
    return result[..., :height, :width]


def _default_tile(model: UNet, side: int) -> int:
    cap = valid_input_sizes(572, model.depth)[1]
    size = model.min_input_size
    while size < cap:
        out = unet_output_size(size, model.depth)
        if out is not None and out >= max(side, 2**model.depth):
            return size
        size += 1
    return cap


def mirror_pad(x: torch.Tensor, pad: Sequence[int]) -> torch.Tensor:
    """Mirror ``x`` at its border by (top, bottom, left, right) pixels, repeating the reflection where the pad is
    wider than the image (the paper's extrapolation of the missing context)."""
    top, bottom, left, right = pad
    while top or bottom or left or right:
        h, w = x.shape[-2] - 1, x.shape[-1] - 1
        step = (min(top, h), min(bottom, h), min(left, w), min(right, w))
        if not any(step):
            x = nn.functional.pad(x, (left, right, top, bottom), mode="replicate")  # a one-pixel image
            break
        x = nn.functional.pad(x, (step[2], step[3], step[0], step[1]), mode="reflect")
        top, bottom, left, right = top - step[0], bottom - step[1], left - step[2], right - step[3]
    return x


class BackboneUNet(SegmentationNet):
    """A padded U-Net whose contracting path is a registered classifier.

    The backbone's last tap at each stride feeds the expanding path; each expanding stage upsamples (nearest) to the
    next finer tap, concatenates it and applies two conv-BN-ReLU layers; stages without a tap (below the backbone's
    first stride) upsample by 2 alone. The stage at stride ``r`` has ``min(decoder_width * r, 256)`` channels.

    Args:
        backbone: A registered classifier.
        num_classes: Classes, the background included.
        in_chans: Input image channels.
        decoder_width: Channels of the full-resolution stage (16: 256, 128, 64, 32, 16 on a ResNet).
        backbone_args: Architecture settings of the backbone, passed to ``create_model``.
        backbone_weights: Weights of the backbone (a file or registered name).
        model_name: Name used in error messages.
    """

    def __init__(
        self,
        backbone: str = "resnet18",
        *,
        num_classes: int = 2,
        in_chans: int = 3,
        decoder_width: int = 16,
        backbone_args: Mapping[str, Any] | None = None,
        backbone_weights: str | None = None,
        model_name: str = "unet",
    ) -> None:
        super().__init__(num_classes=num_classes, in_chans=in_chans, model_name=model_name)
        net = create_model(backbone, in_chans=in_chans, weights=backbone_weights, **dict(backbone_args or {}))
        if not isinstance(net, ConvNet):
            raise TypeError(f"{model_name}: backbone {backbone!r} is not a classifier")
        last = {info.reduction: i for i, info in enumerate(net.feature_info)}
        self.encoder = FeatureExtractor(net, [last[r] for r in sorted(last)])
        reductions = self.encoder.reductions()
        self.total_stride = reductions[-1]
        self.min_input_size = self.total_stride
        stages, chs = [], self.encoder.channels()[-1]
        targets = [*reductions[-2::-1], *self._halvings(reductions[0])]
        for r in targets:
            skip = self.encoder.channels()[reductions.index(r)] if r in reductions else 0
            out = min(decoder_width * r, 256)
            stages.append(DoubleConv(chs + skip, out))
            chs = out
        self.targets = targets
        self.decoder = nn.ModuleList(stages)
        self.head = nn.Conv2d(chs, num_classes, 1)

    @staticmethod
    def _halvings(reduction: int) -> list[int]:
        out = []
        while reduction > 1:
            reduction = max(1, reduction // 2)
            out.append(reduction)
        return out

    def check_input(self, x: torch.Tensor) -> None:
        super().check_input(x)
        height, width = x.shape[-2:]
        step = self.total_stride
        if height % step or width % step:
            raise ValueError(
                f"{self.model_name} needs image sides divisible by its encoder's total stride {step}; got "
                f"{height}x{width} (e.g. {math.ceil(height / step) * step}x{math.ceil(width / step) * step})"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        height, width = x.shape[-2:]
        maps = dict(zip(self.encoder.reductions(), self.encoder(x)))
        y = maps[self.total_stride]
        for r, stage in zip(self.targets, self.decoder):
            size = maps[r].shape[-2:] if r in maps else (height // r, width // r)
            y = nn.functional.interpolate(y, size=size, mode="nearest")
            if r in maps:
                y = torch.cat([y, maps[r]], dim=1)
            y = stage(y)
        return self.head(y)


# ----------------------------------------------------------------------------------------------------------------
# Registration.

RONNEBERGER_2015 = Paper(
    "Olaf Ronneberger, Philipp Fischer, Thomas Brox",
    "U-Net: Convolutional Networks for Biomedical Image Segmentation",
    2015,
    "MICCAI",
    "https://arxiv.org/abs/1505.04597",
)
_REPORTED = (
    Reported("ISBI 2015 cell tracking PhC-U373", "IOU", 92.03, "Table 2"),
    Reported("ISBI 2015 cell tracking DIC-HeLa", "IOU", 77.56, "Table 2"),
)


def _plain_builder(name: str, **fixed: Any):  # noqa: ANN202 - a closure over the registered name
    def build(*, num_classes: int, in_chans: int, **overrides: Any) -> UNet:
        check_overrides(name, overrides, ("width", "depth", "drop_rate"))
        return UNet(num_classes=num_classes, in_chans=in_chans, model_name=name, **{**fixed, **overrides})

    return build


def _build_unet(*, num_classes: int, in_chans: int, **overrides: Any) -> BackboneUNet:
    check_overrides("unet", overrides, ("backbone", "backbone_args", "backbone_weights", "decoder_width"))
    return BackboneUNet(num_classes=num_classes, in_chans=in_chans, model_name="unet", **overrides)


register_model(
    ModelCard(
        name="unet_original",
        family="unet",
        paper=RONNEBERGER_2015,
        input_size=(1, 572, 572),
        num_classes=2,
        mean=(0.5,),
        std=(0.5,),
        reported=_REPORTED,
        notes="the paper's network: unpadded 3x3 convolutions, 572x572 in, 388x388 out (output_size; valid sides "
        "188 + 16k), 23 convolutional layers, 31,030,658 parameters with 2 classes on 1-channel images; "
        "predict_tiled for larger images",
        task="segmentation",
    ),
    _plain_builder("unet_original", padding=0, batch_norm=False),
)
register_model(
    ModelCard(
        name="unet_small",
        family="unet",
        paper=RONNEBERGER_2015,
        input_size=(3, 64, 64),
        num_classes=2,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        notes="U-Net layout with padded convolutions and batch normalisation, base width 16 (width=), depth 4: "
        "logits of the input's size for sides divisible by 16; small enough to train on a CPU",
        task="segmentation",
    ),
    _plain_builder("unet_small", width=16, padding=1, batch_norm=True, drop_rate=0.0),
)
register_model(
    ModelCard(
        name="unet",
        family="unet",
        paper=RONNEBERGER_2015,
        input_size=(3, 224, 224),
        num_classes=2,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        notes="padded U-Net on a registered classifier (backbone=, default resnet18) through features_only; decoder "
        "of nearest upsampling, concatenation and two conv-BN-ReLU layers per stride; sides divisible by the "
        "encoder's total stride",
        task="segmentation",
    ),
    _build_unet,
)


__all__ = [
    "RONNEBERGER_2015",
    "BackboneUNet",
    "UNet",
    "mirror_pad",
    "predict_tiled",
    "unet_output_size",
    "valid_input_sizes",
]
