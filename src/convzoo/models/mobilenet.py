"""The MobileNet family: networks built from depthwise separable convolutions.

- Howard, Zhu, Chen, Kalenichenko, Wang, Weyand, Andreetto and Adam. MobileNets: Efficient Convolutional Neural
  Networks for Mobile Vision Applications. arXiv 2017. The body of Table 1, the width multiplier alpha (section 3.3)
  and the resolution multiplier rho (section 3.4).
- Sandler, Howard, Zhu, Zhmoginov and Chen. MobileNetV2: Inverted Residuals and Linear Bottlenecks. CVPR 2018.
  The body of Table 2 and the width multiplier.

The resolution multiplier changes no layer of the network, only the image it is fed (224 * rho pixels square), so
its settings are model cards: ``mobilenet_v1_100_192``, ``_160`` and ``_128`` are the 1.0 MobileNet of Table 7 at
rho = 192/224, 160/224 and 128/224; ``mobilenet_v1_050_160`` is the 0.50 MobileNet-160 of Table 9. Their
multiply-adds, counted at the card's input size, fall with rho squared.

MobileNet v2 keeps torchvision's module names (``features.N``, ``classifier.1``), so torchvision's state_dicts load
as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NoReturn

import torch
import torch.nn as nn

from convzoo.layers.classifier import create_classifier
from convzoo.layers.conv import ConvNormAct
from convzoo.layers.mobile import DepthwiseSeparable, InvertedResidual, make_divisible
from convzoo.models.base import ConvNet, FeatureInfo, HeadNames
from convzoo.registry import IMAGENET_DEFAULTS, Paper, Reported, Variant, register_family


def _fail(name: str, reason: str) -> NoReturn:
    raise ValueError(f"{name}: {reason}")


@dataclass(frozen=True)
class MobileNetV1Config:
    """A MobileNet v1.

    Attributes:
        stages: Per stage, at width 1.0: (output channels, depthwise separable blocks, stride of the first block).
            The default is Table 1 grouped by resolution. Table 1 prints "s2" for the last depthwise layer, but its
            input and output are both 7x7: that layer has stride 1, as in the authors' released model.
        stem_width: Output channels of the full 3x3/2 convolution that opens the network, at width 1.0.
        width_multiplier: The paper's alpha; every layer has ``int(alpha * channels)`` channels.
        drop_rate: Dropout before the classifier (the paper uses little regularisation and names none).
    """

    stages: tuple[tuple[int, int, int], ...] = ((64, 1, 1), (128, 2, 2), (256, 2, 2), (512, 6, 2), (1024, 2, 2))
    stem_width: int = 32
    width_multiplier: float = 1.0
    drop_rate: float = 0.0

    def width(self, channels: int) -> int:
        """Channels of a layer that has ``channels`` at width 1.0."""
        return int(channels * self.width_multiplier)

    def validate(self, name: str) -> None:
        """Raise a ValueError naming ``name`` if this configuration cannot be built."""
        if not self.width_multiplier > 0:
            _fail(name, f"width_multiplier (alpha) must be positive; got {self.width_multiplier}")
        if not self.stages:
            _fail(name, "stages must not be empty")
        for chs, blocks, stride in self.stages:
            if blocks < 1 or stride not in (1, 2):
                _fail(name, f"every stage needs >= 1 block and stride 1 or 2; got {(chs, blocks, stride)}")
        narrowest = min(self.stem_width, *(chs for chs, _, _ in self.stages))
        if self.width(narrowest) < 1:
            _fail(
                name,
                f"width_multiplier={self.width_multiplier} leaves the {narrowest}-channel layer with no channels",
            )
        if not 0.0 <= self.drop_rate < 1.0:
            _fail(name, f"drop_rate must lie in [0, 1); got {self.drop_rate}")


@dataclass(frozen=True)
class MobileNetV2Config:
    """A MobileNet v2.

    Attributes:
        blocks: Rows of Table 2: (expansion factor t, output channels c, repeats n, stride s of the first repeat).
        stem_width: Output channels of the 3x3/2 stem convolution, at width 1.0.
        head_width: Output channels of the final 1x1 convolution. The width multiplier only widens it: the paper
            keeps it at 1280 for alpha < 1 because small models suffer most from a narrow last layer.
        width_multiplier: Scales every other layer, each rounded to a multiple of ``round_nearest``.
        round_nearest: The channel granularity.
        drop_rate: Dropout before the classifier (0.2, as in torchvision).
    """

    blocks: tuple[tuple[int, int, int, int], ...] = (
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    )
    stem_width: int = 32
    head_width: int = 1280
    width_multiplier: float = 1.0
    round_nearest: int = 8
    drop_rate: float = 0.2

    def width(self, channels: int) -> int:
        """Channels of a layer that has ``channels`` at width 1.0."""
        return make_divisible(channels * self.width_multiplier, self.round_nearest)

    def validate(self, name: str) -> None:
        """Raise a ValueError naming ``name`` if this configuration cannot be built."""
        if not self.width_multiplier > 0:
            _fail(name, f"width_multiplier must be positive; got {self.width_multiplier}")
        if self.round_nearest < 1:
            _fail(name, f"round_nearest must be >= 1; got {self.round_nearest}")
        if not self.blocks:
            _fail(name, "blocks must not be empty")
        for t, c, n, s in self.blocks:
            if t <= 0 or c < 1 or n < 1 or s not in (1, 2):
                _fail(name, f"a block row needs t > 0, c >= 1, n >= 1 and s in (1, 2); got {(t, c, n, s)}")
        if not 0.0 <= self.drop_rate < 1.0:
            _fail(name, f"drop_rate must lie in [0, 1); got {self.drop_rate}")


class _MobileNet(ConvNet):
    """What both MobileNets share: torchvision's initialisation, He (fan-out) convolutions, unit batch norm and a
    small classifier, which a fresh classifier from `reset_classifier` gets too."""

    def init_classifier(self, fc: nn.Linear) -> None:
        nn.init.normal_(fc.weight, 0, 0.01)
        nn.init.zeros_(fc.bias)

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                self.init_classifier(m)


class MobileNetV1(_MobileNet):
    """MobileNet v1: a full 3x3/2 convolution, 13 depthwise separable blocks, global average pooling, one FC layer.

    The constructor takes `ConvNet`'s arguments.
    """

    head_names = HeadNames(drop="drop")

    def __init__(
        self, cfg: MobileNetV1Config, *, num_classes: int = 1000, in_chans: int = 3, model_name: str = "mobilenet_v1"
    ) -> None:
        super().__init__(cfg, num_classes=num_classes, in_chans=in_chans, model_name=model_name)

        chs = cfg.width(cfg.stem_width)
        self.stem = ConvNormAct(in_chans, chs, 3, stride=2)
        reduction = 2
        self.feature_info = [FeatureInfo(chs, reduction, "stem")]
        stages = []
        for i, (width, num_blocks, stride) in enumerate(cfg.stages):
            out_chs = cfg.width(width)
            blocks = [DepthwiseSeparable(chs, out_chs, stride=stride)]
            blocks += [DepthwiseSeparable(out_chs, out_chs) for _ in range(num_blocks - 1)]
            stages.append(nn.Sequential(*blocks))
            chs, reduction = out_chs, reduction * stride
            self.feature_info.append(FeatureInfo(chs, reduction, f"stages.{i}"))
        self.stages = nn.Sequential(*stages)
        # Padded convolutions accept any size, but below the total stride the last layers see only padding;
        # like every ImageNet network of the zoo (and Keras' MobileNet) the network asks for at least that much.
        self.min_input_size = reduction

        self.init_head(chs, cfg.drop_rate)
        if not self.stem[0].weight.is_meta:  # on the meta device there are no values to initialise
            self._init_weights()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        x = self.stem(x)
        return self.stages(x)


class MobileNetV2(_MobileNet):
    """MobileNet v2: a 3x3/2 convolution, 17 inverted residual blocks, a 1x1 convolution to 1280 channels, global
    average pooling, dropout and one FC layer. The constructor takes `ConvNet`'s arguments.
    """

    def __init__(
        self, cfg: MobileNetV2Config, *, num_classes: int = 1000, in_chans: int = 3, model_name: str = "mobilenet_v2"
    ) -> None:
        super().__init__(cfg, num_classes=num_classes, in_chans=in_chans, model_name=model_name)

        chs = cfg.width(cfg.stem_width)
        features: list[nn.Module] = [ConvNormAct(in_chans, chs, 3, stride=2, act=nn.ReLU6)]
        reduction = 2
        self.feature_info = [FeatureInfo(chs, reduction, "features.0")]
        for t, c, n, s in cfg.blocks:
            out_chs = cfg.width(c)
            for i in range(n):
                stride = s if i == 0 else 1
                last = f"features.{len(features) - 1}"
                if stride > 1 and self.feature_info[-1].module != last:
                    # One tap per resolution: the last block before the map shrinks.
                    self.feature_info.append(FeatureInfo(chs, reduction, last))
                features.append(InvertedResidual(chs, out_chs, stride=stride, expand_ratio=t))
                chs, reduction = out_chs, reduction * stride
        head_chs = make_divisible(cfg.head_width * max(1.0, cfg.width_multiplier), cfg.round_nearest)
        features.append(ConvNormAct(chs, head_chs, 1, act=nn.ReLU6))
        self.feature_info.append(FeatureInfo(head_chs, reduction, f"features.{len(features) - 1}"))
        self.features = nn.Sequential(*features)
        self.num_features = head_chs
        # As for MobileNet v1: the zoo's convention for padded networks, the total stride.
        self.min_input_size = reduction

        # torchvision's layout: the pool is functional, dropout and the output layer are ``classifier.0`` and
        # ``classifier.1``, so the pooled head of `ConvNet` is written out here.
        self.classifier = nn.Sequential(nn.Dropout(cfg.drop_rate), create_classifier(head_chs, num_classes))
        if not self.features[0][0].weight.is_meta:
            self._init_weights()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        drop, fc = self.classifier
        x = nn.functional.adaptive_avg_pool2d(x, 1)
        x = torch.flatten(x, 1)
        x = drop(x)
        return x if pre_logits else fc(x)

    def get_classifier(self) -> nn.Module:
        return self.classifier[1]

    def reset_classifier(self, num_classes: int) -> None:
        self.check_num_classes(num_classes)
        self.num_classes = num_classes
        self.classifier[1] = self.new_classifier(self.num_features, num_classes)


# ----------------------------------------------------------------------------------------------------------------
# The registered variants.

_HOWARD_2017 = Paper(
    "Andrew G. Howard, Menglong Zhu, Bo Chen, Dmitry Kalenichenko, Weijun Wang, Tobias Weyand, Marco Andreetto, "
    "Hartwig Adam",
    "MobileNets: Efficient Convolutional Neural Networks for Mobile Vision Applications",
    2017,
    "arXiv",
    "https://arxiv.org/abs/1704.04861",
)
_SANDLER_2018 = Paper(
    "Mark Sandler, Andrew Howard, Menglong Zhu, Andrey Zhmoginov, Liang-Chieh Chen",
    "MobileNetV2: Inverted Residuals and Linear Bottlenecks",
    2018,
    "CVPR",
    "https://arxiv.org/abs/1801.04381",
)


def _top1(value: float, source: str) -> tuple[Reported, ...]:
    return (Reported("ImageNet", "top-1 accuracy", value, source),)


def _v1(name: str, alpha: float, res: int, acc: float, table: str, macs: int, params: float) -> Variant:
    """A MobileNet v1 row of Tables 6, 7 and 9: alpha, resolution, top-1 accuracy, the paper's million multiply-adds
    and parameters."""
    return Variant(
        name,
        MobileNetV1Config(width_multiplier=alpha),
        _HOWARD_2017,
        {**IMAGENET_DEFAULTS, "input_size": (3, res, res)},
        _top1(acc, table),
        f"{alpha:.2f} MobileNet-{res}: alpha = {alpha:g}, rho = {res}/224. {table} counts {macs}M multiply-adds and "
        f"{params}M parameters (convolution and FC weights, without batch norm)",
    )


register_family(
    "mobilenet",
    MobileNetV1,
    [
        _v1("mobilenet_v1", 1.0, 224, 70.6, "Table 6", 569, 4.2),
        _v1("mobilenet_v1_075", 0.75, 224, 68.4, "Table 6", 325, 2.6),
        _v1("mobilenet_v1_050", 0.5, 224, 63.7, "Table 6", 149, 1.3),
        _v1("mobilenet_v1_025", 0.25, 224, 50.6, "Table 6", 41, 0.5),
        _v1("mobilenet_v1_100_192", 1.0, 192, 69.1, "Table 7", 418, 4.2),
        _v1("mobilenet_v1_100_160", 1.0, 160, 67.2, "Table 7", 290, 4.2),
        _v1("mobilenet_v1_100_128", 1.0, 128, 64.4, "Table 7", 186, 4.2),
        _v1("mobilenet_v1_050_160", 0.5, 160, 60.2, "Table 9", 76, 1.32),
    ],
)
register_family(
    "mobilenet",
    MobileNetV2,
    [
        Variant(
            "mobilenet_v2",
            MobileNetV2Config(),
            _SANDLER_2018,
            IMAGENET_DEFAULTS,
            _top1(72.0, "Table 4"),
            "Table 4 counts 300M multiply-adds and 3.4M parameters (3.47M without batch norm); width_multiplier=1.4 "
            "builds the 74.7% network of the same table (6.06M parameters and 582M multiply-adds as built and "
            "released, where the table prints 6.9M and 585M)",
        )
    ],
)
