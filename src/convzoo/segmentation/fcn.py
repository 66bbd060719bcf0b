"""FCN: fully convolutional networks for semantic segmentation, with skips from the finer layers.

Long, Shelhamer and Darrell. Fully Convolutional Networks for Semantic Segmentation. CVPR 2015 (arXiv:1411.4038).
A classifier is convolutionalised (section 3.1, `convzoo.segmentation.convolutional`), a 1x1 convolution scores
every class on its stride-32 map, and transposed convolutions initialised to bilinear interpolation upsample the
scores to the image (section 3.3). FCN-32s upsamples the stride-32 scores in one step; FCN-16s first adds scores
computed from pool4 (stride 16) to the 2x upsampled stride-32 scores, FCN-8s then does the same with pool3 (stride
8) before the final 8x upsampling (section 4.2, Figure 3).

As in the reference code (``voc-fcn*s/net.py``): the new score layers (``score_fr``, ``score_pool4``,
``score_pool3``) start at zero; the transposed convolutions have no bias and start as bilinear interpolation, the
intermediate ones learned and the final one fixed (section 4.3: "the final layer deconvolutional filters are fixed to
bilinear interpolation, while intermediate upsampling layers are initialized to bilinear upsampling, and then
learned"). The staged FCN-16s/8s of the paper are built, without the "at-once" variant's scaling of the pool scores.

Two kinds of backbone, one scheme: ``fcn32s``, ``fcn16s`` and ``fcn8s`` take ``backbone=`` any registered
classifier with stride-32 (and, for the skips, stride-16 and stride-8) maps.

- A classifier with fully connected layers (VGG, AlexNet, ZFNet) is the paper's case. fc6 becomes a convolution whose
  kernel is the pooled grid (7x7x512x4096 on VGG16), fc7 a 1x1 convolution, both with their ReLU and dropout; the
  output layer is dropped for ``score_fr``. The paper's 100-pixel padding of the first convolution is kept, with
  Caffe's ceil-mode pooling: with it the stride-32 map is never too small for fc6's 7x7 kernel, so any image of at
  least the backbone's minimum size gives logits of its own size. The skips tap the pooling layers (pool3, pool4) and
  the crops use the offsets Caffe's ``coord_map`` derives from the layers (`trace_coordinates`): 5, 9 and 31 for
  FCN-8s on VGG16, as in the reference prototxt. Where an even 2f kernel would leave the maps half a pixel apart
  (AlexNet, ZFNet) the upsampling kernel is 2f - 1, as in the reference FCN-AlexNet (kernel 63, offset 18).
- Any other classifier (ResNet, DenseNet, MobileNet, ...) is read through ``create_model(..., features_only=True)``,
  the last tap at each of strides 8, 16 and 32. The image is zero-padded at the bottom and right to a multiple of 32,
  so a padded network's maps are exact fractions of it; upsampling by ``f`` uses kernel ``2f``, stride ``f`` and
  padding ``f/2`` (an exact ``f``-fold size, centred like bilinear interpolation) and the logits are cut back to the
  image's size.

Parameter counts with 21 classes on VGG16 (the reference Caffe nets and their PyTorch port, e.g. the 134,489,759 of
FCN-8s quoted for wkentaro/pytorch-fcn): FCN-32s 136,152,917, FCN-16s 134,815,994, FCN-8s 134,489,759.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import Any

import torch
import torch.nn as nn

from convzoo.factory import create_model
from convzoo.layers.classifier import FCHead
from convzoo.models._fchead import FCHeadNet
from convzoo.models.base import ConvNet, FeatureExtractor
from convzoo.registry import IMAGENET_MEAN, IMAGENET_STD, ModelCard, Paper, Reported, check_overrides, register_model
from convzoo.segmentation._blocks import SegmentationNet, bilinear_upsampling, crop, fit, reset_bilinear
from convzoo.segmentation.convolutional import convolutionalize_fc

FIRST_PADDING = 100
"""Padding of the first convolution of a fully connected backbone (the reference nets' ``conv1_1``)."""

Coord = tuple[Fraction, Fraction]  # input coordinate = scale * map coordinate + shift


def _window(layer: nn.Module) -> tuple[int, int, int, int] | None:
    kernel = getattr(layer, "kernel_size", None)
    if kernel is None:
        return None

    def first(v: Any) -> int:
        return int(v if isinstance(v, int) else v[0])

    stride = getattr(layer, "stride", None) or kernel
    return first(kernel), first(stride), first(getattr(layer, "padding", 0)), first(getattr(layer, "dilation", 1))


def trace_coordinates(layers: Sequence[nn.Module], start: Coord = (Fraction(1), Fraction(0))) -> Coord:
    """Where pixel ``y`` of the output of ``layers`` lies in the input: ``scale * y + shift`` (Caffe's ``coord_map``).

    A window of kernel ``k``, stride ``s``, padding ``p`` and dilation ``d`` centres output pixel ``y`` on input
    coordinate ``s * y + d * (k - 1) / 2 - p``; other layers keep coordinates.
    """
    scale, shift = start
    for layer in layers:
        if isinstance(layer, nn.Sequential):
            scale, shift = trace_coordinates(list(layer), (scale, shift))
            continue
        window = _window(layer)
        if window is None:
            continue
        kernel, stride, padding, dilation = window
        shift = scale * (Fraction(dilation * (kernel - 1), 2) - padding) + shift
        scale = scale * stride
    return scale, shift


def _upsampled(coord: Coord, layer: nn.ConvTranspose2d) -> Coord:
    # A transposed convolution maps input pixel x to output y = s * x + (k - 1) / 2 - p; invert and compose.
    kernel, stride, padding = layer.kernel_size[0], layer.stride[0], layer.padding[0]
    scale, shift = coord
    return scale / stride, shift - scale * (Fraction(kernel - 1, 2) - padding) / stride


def _offset(cropped: Coord, reference: Coord) -> int:
    # Caffe's crop: pixel y + offset of the cropped map lies where pixel y of the reference map lies.
    value = (reference[1] - cropped[1]) / cropped[0]
    if cropped[0] != reference[0] or value.denominator != 1 or value < 0:
        raise ValueError(f"the maps do not align on whole pixels (scales {cropped[0]}, {reference[0]}; offset {value})")
    return int(value)


_SKIPS = {32: (), 16: (16,), 8: (16, 8)}


class FCN(SegmentationNet):
    """FCN-32s, FCN-16s or FCN-8s on a registered classifier.

    Args:
        output_stride: 32, 16 or 8: the finest map the scores are fused from.
        backbone: A registered classifier (see the module docstring for the two kinds).
        num_classes: Classes, the background included (21 for PASCAL VOC).
        in_chans: Input image channels.
        backbone_args: Architecture settings of the backbone, passed to ``create_model``.
        backbone_weights: Weights of the backbone (a file or registered name), as ``create_model(weights=...)``.
        model_name: Name used in error messages.
    """

    def __init__(
        self,
        output_stride: int = 8,
        *,
        backbone: str = "vgg16",
        num_classes: int = 21,
        in_chans: int = 3,
        backbone_args: Mapping[str, Any] | None = None,
        backbone_weights: str | None = None,
        model_name: str = "fcn8s",
    ) -> None:
        super().__init__(num_classes=num_classes, in_chans=in_chans, model_name=model_name)
        if output_stride not in _SKIPS:
            raise ValueError(f"{model_name}: output_stride must be 32, 16 or 8; got {output_stride}")
        self.output_stride = output_stride
        self.backbone_name = backbone
        net = create_model(backbone, in_chans=in_chans, weights=backbone_weights, **dict(backbone_args or {}))
        if not isinstance(net, ConvNet):
            raise TypeError(f"{model_name}: backbone {backbone!r} is not a classifier")
        self.fully_connected = isinstance(net, FCHeadNet) and isinstance(net.classifier, FCHead)
        chs = self._build_fc_backbone(net) if self.fully_connected else self._build_feature_backbone(net)
        self.score_fr = nn.Conv2d(chs[32], num_classes, 1)
        for stride in _SKIPS[output_stride]:
            self.add_module(f"score_pool{int(math.log2(stride))}", nn.Conv2d(chs[stride], num_classes, 1))
        self._build_upsampling()
        for name in ("score_fr", "score_pool4", "score_pool3"):
            layer = getattr(self, name, None)
            if layer is not None and not layer.weight.is_meta:
                nn.init.zeros_(layer.weight)  # the reference nets start every new score layer at zero
                nn.init.zeros_(layer.bias)

    # --- backbones ------------------------------------------------------------------------------------------------

    def _build_fc_backbone(self, net: FCHeadNet) -> dict[int, int]:
        features = net.features
        names, chs, reduction, ch = {}, {}, 1, net.in_chans
        for index, layer in enumerate(features):
            window = _window(layer)
            ch = getattr(layer, "out_channels", ch)
            if window is not None:
                reduction *= window[1]
            if isinstance(layer, nn.MaxPool2d):
                layer.ceil_mode = True  # Caffe's pooling, which the offsets and the padding assume
            if reduction in (8, 16, 32) and reduction not in names:
                names[reduction], chs[reduction] = index, ch
        if reduction != 32 or 32 not in names or names[32] != len(features) - 1:
            raise ValueError(
                f"{self.model_name}: backbone {self.backbone_name!r} must end at stride 32 with taps at strides 8 "
                f"and 16; its trunk reaches stride {reduction}"
            )
        first = next(m for m in features.modules() if isinstance(m, nn.Conv2d))
        first.padding = (FIRST_PADDING, FIRST_PADDING)
        grid = net.avgpool.output_size
        grid = (grid, grid) if isinstance(grid, int) else tuple(grid)
        self.fc = convolutionalize_fc(net.classifier, net.num_features, grid, grid, keep_output=False)
        net.reset_classifier(0)  # fc6 and fc7 now live in ``self.fc``
        self.backbone = net
        self.tap_names = {r: f"features.{i}" for r, i in names.items()}
        widths = [m.out_channels for m in self.fc if isinstance(m, nn.Conv2d)]
        self.min_input_size = net.min_input_size
        return {8: chs[8], 16: chs[16], 32: widths[-1] if widths else chs[32]}

    def _build_feature_backbone(self, net: ConvNet) -> dict[int, int]:
        last = {info.reduction: i for i, info in enumerate(net.feature_info)}
        needed = (32, *_SKIPS[self.output_stride])
        if any(r not in last for r in needed):
            raise ValueError(
                f"{self.model_name} needs a backbone with feature maps at strides {', '.join(map(str, needed))}; "
                f"{self.backbone_name!r} has strides {', '.join(map(str, sorted(last)))}"
            )
        indices = [last[r] for r in sorted(needed)]
        self.backbone = FeatureExtractor(net, indices)
        self.fc = nn.Identity()
        return {info.reduction: info.num_chs for info in self.backbone.feature_info}

    def _build_upsampling(self) -> None:
        # Reference names: upscore2 and upscore_pool4 (2x), then upscore32/16/8 for the last step.
        steps = [(r, name) for r, name in ((16, "upscore2"), (8, "upscore_pool4")) if r in _SKIPS[self.output_stride]]
        last = self.output_stride
        if not self.fully_connected:
            for _, name in steps:
                setattr(self, name, bilinear_upsampling(self.num_classes, 2, padding=1))
            final = bilinear_upsampling(self.num_classes, last, padding=last // 2)
        else:
            # The crop offsets follow the layers (Caffe's coord_map). An even kernel 2f can leave the maps half a
            # pixel apart (AlexNet's trunk); the odd 2f - 1 of the reference FCN-AlexNet then aligns them.
            features = list(self.backbone.features)
            taps = {r: trace_coordinates(features[: int(n.split(".")[1]) + 1]) for r, n in self.tap_names.items()}
            coarse = trace_coordinates(list(self.fc), taps[32])
            self.offsets = {}
            for stride, name in steps:
                layer, coarse, self.offsets[stride] = self._aligned(coarse, 2, taps[stride], crop_upsampled=False)
                setattr(self, name, layer)
            final, _, self.offsets[1] = self._aligned(coarse, last, (Fraction(1), Fraction(0)), crop_upsampled=True)
        final.weight.requires_grad_(False)
        self.add_module(f"upscore{last}", final)

    def _aligned(
        self, coarse: Coord, factor: int, reference: Coord, *, crop_upsampled: bool
    ) -> tuple[nn.ConvTranspose2d, Coord, int]:
        for kernel in (2 * factor, 2 * factor - 1):
            layer = nn.ConvTranspose2d(self.num_classes, self.num_classes, kernel, stride=factor, bias=False)
            up = _upsampled(coarse, layer)
            try:
                offset = _offset(up, reference) if crop_upsampled else _offset(reference, up)
            except ValueError:
                continue
            reset_bilinear(layer)
            return layer, up, offset
        raise ValueError(f"{self.model_name}: the maps of backbone {self.backbone_name!r} do not align on whole pixels")

    # --- forward --------------------------------------------------------------------------------------------------

    def _features(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        if self.fully_connected:
            names = {r: self.tap_names[r] for r in (32, *_SKIPS[self.output_stride])}
            maps = self.backbone.forward_taps(x, set(names.values()))
            out = {r: maps[name] for r, name in names.items()}
            out[32] = self.fc(out[32])
            return out
        return {info.reduction: m for info, m in zip(self.backbone.feature_info, self.backbone(x))}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        height, width = x.shape[-2:]
        if not self.fully_connected:
            x = nn.functional.pad(x, (0, -width % 32, 0, -height % 32))
        maps = self._features(x)
        score = self.score_fr(maps[32])
        for stride, up in ((16, "upscore2"), (8, "upscore_pool4")):
            if stride not in _SKIPS[self.output_stride]:
                continue
            score = getattr(self, up)(score)
            skip = getattr(self, f"score_pool{int(math.log2(stride))}")(maps[stride])
            score = score + self._align(skip, score.shape[-2:], self.offsets.get(stride) if self.fully_connected else 0)
        score = getattr(self, f"upscore{self.output_stride}")(score)
        return self._align(score, (height, width), self.offsets[1] if self.fully_connected else 0)

    def _align(self, x: torch.Tensor, size: Sequence[int], offset: int | None) -> torch.Tensor:
        if not self.fully_connected:
            return fit(x, size)
        try:
            return crop(x, (offset, offset), size)
        except ValueError as e:
            raise ValueError(f"{self.model_name}: {e}") from None


# ----------------------------------------------------------------------------------------------------------------
# Registration.

LONG_2015 = Paper(
    "Jonathan Long, Evan Shelhamer, Trevor Darrell",
    "Fully Convolutional Networks for Semantic Segmentation",
    2015,
    "CVPR",
    "https://arxiv.org/abs/1411.4038",
)

# Table 2: a subset of PASCAL VOC 2011 val, VGG16 backbone; FCN-8s's 62.7 on VOC 2011 test in Table 3 too.
_MEAN_IU = {32: 59.4, 16: 62.4, 8: 62.7}
_PIXEL_ACC = {32: 89.1, 16: 90.0, 8: 90.3}
_PARAMS = {32: "136,152,917", 16: "134,815,994", 8: "134,489,759"}
_ACCEPTED = ("backbone", "backbone_args", "backbone_weights")


def _builder(name: str, output_stride: int):  # noqa: ANN202 - a closure over the registered name
    def build(*, num_classes: int, in_chans: int, **overrides: Any) -> FCN:
        check_overrides(name, overrides, _ACCEPTED)
        return FCN(output_stride, num_classes=num_classes, in_chans=in_chans, model_name=name, **overrides)

    return build


for _stride in (32, 16, 8):
    _name = f"fcn{_stride}s"
    register_model(
        ModelCard(
            name=_name,
            family="fcn",
            paper=LONG_2015,
            input_size=(3, 500, 500),
            num_classes=21,
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            reported=(
                Reported("PASCAL VOC 2011 val subset", "mean IU", _MEAN_IU[_stride], "Table 2", "VGG16 backbone"),
                Reported("PASCAL VOC 2011 val subset", "pixel accuracy", _PIXEL_ACC[_stride], "Table 2"),
            ),
            notes=(
                f"FCN-{_stride}s; backbone= any registered classifier with stride-32 maps (default vgg16, the paper's: "
                f"{_PARAMS[_stride]} parameters with 21 classes, fc6 a 7x7x512x4096 convolution, conv1_1 padded by "
                "100 as in the reference nets); logits of the input's size for any input size"
            ),
            task="segmentation",
        ),
        _builder(_name, _stride),
    )


__all__ = ["FCN", "FIRST_PADDING", "LONG_2015", "trace_coordinates"]
