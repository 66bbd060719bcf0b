"""SqueezeNet: AlexNet-level accuracy from Fire modules and 50x fewer parameters.

Iandola, Han, Moskewicz, Ashraf, Dally and Keutzer. SqueezeNet: AlexNet-level accuracy with 50x fewer parameters and
<0.5MB model size. arXiv 2016. Version 1.0 is Table 1 of the paper; version 1.1 comes from the authors' repository
(64 3x3 filters in conv1 and earlier pooling, for 2.4x less computation at the same accuracy).

A Fire module squeezes its input with 1x1 convolutions, then expands it with a mix of 1x1 and 3x3 convolutions
whose outputs are concatenated (section 3.2). There is no fully connected layer: a 1x1 convolution (conv10) gives
one map per class, followed by ReLU and global average pooling.

Convolutions outside the Fire modules are unpadded and the max-pools round up, as in the authors' Caffe model; a
227x227 crop gives Table 1's 111, 55, 27 and 13 pixel maps. The ``features`` modules keep torchvision's names, and
torchvision's ``classifier.1`` (conv10) loads as ``final_conv``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from convzoo.layers.trunk import smallest_input, stage_taps
from convzoo.models.base import ConvNet, HeadNames
from convzoo.registry import IMAGENET_DEFAULTS, Paper, Reported, Variant, register_family

FireSpec = tuple[int, int, int]


@dataclass(frozen=True)
class SqueezeNetConfig:
    """A SqueezeNet.

    Attributes:
        stem_width: Filters of conv1 (stride 2, unpadded, followed by ReLU and a 3x3/2 max-pool).
        stem_kernel: Kernel size of conv1.
        layers: What follows the first max-pool, in order: a Fire module as (squeeze 1x1, expand 1x1, expand 3x3)
            filters, the columns s1x1, e1x1 and e3x3 of Table 1; or ``"M"`` for a 3x3/2 max-pool.
        bypass: The simple bypass of section 6: an identity shortcut around every Fire module whose input and
            output widths match (fire3, fire5, fire7 and fire9).
        drop_rate: Dropout before conv10 (50% after fire9, section 3.3).
    """

    stem_width: int = 96
    stem_kernel: int = 7
    layers: tuple[FireSpec | str, ...] = (
        (16, 64, 64),
        (16, 64, 64),
        (32, 128, 128),
        "M",
        (32, 128, 128),
        (48, 192, 192),
        (48, 192, 192),
        (64, 256, 256),
        "M",
        (64, 256, 256),
    )
    bypass: bool = False
    drop_rate: float = 0.5

    def validate(self, name: str) -> None:
        """Raise a ValueError naming ``name`` if this configuration cannot be built."""
        if self.stem_width < 1 or self.stem_kernel < 1:
            raise ValueError(f"{name}: stem_width and stem_kernel must be positive")
        fires = [spec for spec in self.layers if spec != "M"]
        if not fires:
            raise ValueError(f"{name}: layers holds no Fire module")
        for spec in self.layers:
            if spec == "M":
                continue
            if isinstance(spec, str) or len(spec) != 3 or min(spec) < 1:
                raise ValueError(
                    f"{name}: each entry of layers is 'M' or (squeeze, expand1x1, expand3x3) positive widths; "
                    f"got {spec!r}"
                )
        if not 0.0 <= self.drop_rate < 1.0:
            raise ValueError(f"{name}: drop_rate must lie in [0, 1); got {self.drop_rate}")


class Fire(nn.Module):
    """Squeeze with 1x1 filters, expand with 1x1 and 3x3 filters, concatenate (each convolution has bias and ReLU).

    Args:
        in_chs: Input channels.
        squeeze: Filters of the squeeze layer (s1x1).
        expand1x1: 1x1 filters of the expand layer (e1x1).
        expand3x3: 3x3 filters of the expand layer (e3x3), padded to keep the map size.
        bypass: Add the input to the output (section 6's simple bypass); needs in_chs == expand1x1 + expand3x3.
    """

    def __init__(self, in_chs: int, squeeze: int, expand1x1: int, expand3x3: int, *, bypass: bool = False) -> None:
        super().__init__()
        self.out_chs = expand1x1 + expand3x3
        if bypass and in_chs != self.out_chs:
            raise ValueError(f"a bypass needs equal input and output widths; got {in_chs} -> {self.out_chs}")
        self.squeeze = nn.Conv2d(in_chs, squeeze, 1)
        self.expand1x1 = nn.Conv2d(squeeze, expand1x1, 1)
        self.expand3x3 = nn.Conv2d(squeeze, expand3x3, 3, padding=1)
        self.act = nn.ReLU(inplace=True)
        self.bypass = bypass

    @property
    def out_channels(self) -> int:
        """Output channels, under the name convolutions give them, which trunk tracing reads."""
        return self.out_chs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        squeezed = self.squeeze(x)
        squeezed = self.act(squeezed)
        left = self.expand1x1(squeezed)
        left = self.act(left)
        right = self.expand3x3(squeezed)
        right = self.act(right)
        out = torch.cat([left, right], 1)
        return out + x if self.bypass else out


def _pool() -> nn.MaxPool2d:
    # Caffe's pooling rounds the output size up; ceil_mode reproduces its map sizes.
    return nn.MaxPool2d(3, stride=2, ceil_mode=True)


class SqueezeNet(ConvNet):
    """A SqueezeNet built from a `SqueezeNetConfig`; the constructor takes `ConvNet`'s arguments.

    The classifier is a convolution, conv10 with ``num_classes`` filters, not ConvNet's pooled linear head:
    ``forward_head`` applies dropout, conv10, ReLU and global average pooling. Its ``pre_logits`` output, and the
    output without a classifier, is the globally pooled last feature map (``num_features`` = 512 channels), the
    vector a linear probe or a new classifier reads.
    """

    head_names = HeadNames(pool="global_pool", drop="head_drop", fc="final_conv")

    def __init__(
        self, cfg: SqueezeNetConfig, *, num_classes: int = 1000, in_chans: int = 3, model_name: str = "squeezenet"
    ) -> None:
        super().__init__(cfg, num_classes=num_classes, in_chans=in_chans, model_name=model_name)
        chs = cfg.stem_width
        features: list[nn.Module] = [
            nn.Conv2d(in_chans, chs, cfg.stem_kernel, stride=2),
            nn.ReLU(inplace=True),
            _pool(),
        ]
        for spec in cfg.layers:
            if spec == "M":
                features.append(_pool())
                continue
            fire = Fire(chs, *spec, bypass=cfg.bypass and chs == spec[1] + spec[2])
            features.append(fire)
            chs = fire.out_chs
        self.features = nn.Sequential(*features)
        # One tap per resolution: conv1's ReLU and the last Fire module before each pool, then the last one.
        self.feature_info = stage_taps(self.features, in_chans)
        self.num_features = chs
        # Unpadded conv1 and the pools need a real minimum: the smallest image for which every map keeps a pixel.
        self.min_input_size = smallest_input(self.features)

        self.head_drop = nn.Dropout(cfg.drop_rate) if cfg.drop_rate else nn.Identity()
        self.final_conv = self._conv10(num_classes)
        self.head_act = nn.ReLU(inplace=True)
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self._init_weights()

    def _conv10(
        self, num_classes: int, *, device: torch.device | None = None, dtype: torch.dtype | None = None
    ) -> nn.Module:
        if not num_classes:
            return nn.Identity()
        return nn.Conv2d(self.num_features, num_classes, 1, device=device, dtype=dtype)

    def _init_weights(self) -> None:
        if self.features[0].weight.is_meta:
            return  # built on the meta device for analysis: there are no values to initialise
        # torchvision's initialisation: He-uniform convolutions, zero biases, a small Gaussian conv10.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                if m is self.final_conv:
                    self.init_classifier(m)
                else:
                    nn.init.kaiming_uniform_(m.weight)
                    nn.init.zeros_(m.bias)

    def init_classifier(self, fc: nn.Conv2d | nn.Linear) -> None:
        """conv10 starts as a Gaussian of std 0.01 with zero bias."""
        nn.init.normal_(fc.weight, mean=0.0, std=0.01)
        nn.init.zeros_(fc.bias)

    def remap_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Translate torchvision's key for conv10 (``classifier.1``) to ``final_conv``; other keys already match."""
        prefix = "classifier.1."
        return {(f"final_conv.{k[len(prefix) :]}" if k.startswith(prefix) else k): v for k, v in state.items()}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_drop(x)
        if not pre_logits:
            # Without a classifier the ReLU changes nothing: the Fire modules' outputs are already non-negative.
            x = self.final_conv(x)
            x = self.head_act(x)
        x = self.global_pool(x)
        return torch.flatten(x, 1)

    def reset_classifier(self, num_classes: int) -> None:
        self.check_num_classes(num_classes)
        self.num_classes = num_classes
        like = self.features[0].weight
        self.final_conv = self._conv10(num_classes, device=like.device, dtype=like.dtype)
        if num_classes and not like.is_meta:
            self.init_classifier(self.final_conv)


# ----------------------------------------------------------------------------------------------------------------
# The registered variants.

_IANDOLA_2016 = Paper(
    "Forrest N. Iandola, Song Han, Matthew W. Moskewicz, Khalid Ashraf, William J. Dally, Kurt Keutzer",
    "SqueezeNet: AlexNet-level accuracy with 50x fewer parameters and <0.5MB model size",
    2016,
    "arXiv",
    "https://arxiv.org/abs/1602.07360",
)

_V1_1 = SqueezeNetConfig(
    stem_width=64,
    stem_kernel=3,
    layers=(
        (16, 64, 64),
        (16, 64, 64),
        "M",
        (32, 128, 128),
        (32, 128, 128),
        "M",
        (48, 192, 192),
        (48, 192, 192),
        (64, 256, 256),
        (64, 256, 256),
    ),
)
_INPUT = {**IMAGENET_DEFAULTS, "input_size": (3, 227, 227)}
_V1_0_REPORTED = (
    Reported("ImageNet", "top-1 accuracy", 57.5, "Table 2", "uncompressed 32-bit model, 4.8MB"),
    Reported("ImageNet", "top-5 accuracy", 80.3, "Table 2", "uncompressed 32-bit model, 4.8MB"),
)
_VARIANTS = [
    Variant(
        "squeezenet1_0",
        SqueezeNetConfig(),
        _IANDOLA_2016,
        _INPUT,
        _V1_0_REPORTED,
        "Table 1 of the paper; 227x227 crops as in the authors' Caffe model. Simple bypass (bypass=True) reaches "
        "60.4% top-1 and 82.5% top-5 in Table 3",
    ),
    Variant(
        "squeezenet1_1",
        _V1_1,
        _IANDOLA_2016,
        _INPUT,
        notes="SqueezeNet v1.1 from the authors' repository: conv1 with 64 3x3 filters and max-pools after conv1, "
        "fire3 and fire5, for 2.4x less computation than v1.0 'without sacrificing accuracy'; the paper has no table "
        "row",
    ),
]

register_family("squeezenet", SqueezeNet, _VARIANTS)
