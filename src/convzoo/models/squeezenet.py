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

from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn as nn

from convzoo.models.base import ConvNet, FeatureInfo
from convzoo.registry import (
    IMAGENET_DEFAULTS,
    ModelCard,
    Paper,
    Reported,
    config_builder,
    register_model,
)

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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        squeezed = self.act(self.squeeze(x))
        out = torch.cat([self.act(self.expand1x1(squeezed)), self.act(self.expand3x3(squeezed))], 1)
        return out + x if self.bypass else out


def _pool() -> nn.MaxPool2d:
    # Caffe's pooling rounds the output size up; ceil_mode reproduces its map sizes.
    return nn.MaxPool2d(3, stride=2, ceil_mode=True)


def output_size(modules: Iterable[nn.Module], size: int) -> int:
    """Side length of the map after ``modules`` for a square input of ``size`` (below 1: the input is too small).

    Size-preserving modules (activations, Fire modules) pass the size through; convolutions and max-pools follow
    PyTorch's formula, including ceil mode's rule that the last window must start inside the input.
    """
    for m in modules:
        if not isinstance(m, (nn.Conv2d, nn.MaxPool2d)):
            continue
        k, s, p, d = (v if isinstance(v, int) else v[0] for v in (m.kernel_size, m.stride, m.padding, m.dilation))
        span = size + 2 * p - d * (k - 1) - 1
        ceil = getattr(m, "ceil_mode", False)
        out = (-(-span // s) if ceil else span // s) + 1
        if ceil and (out - 1) * s >= size + p:
            out -= 1
        if out < 1:
            return out
        size = out
    return size


class SqueezeNet(ConvNet):
    """A SqueezeNet built from a `SqueezeNetConfig`.

    ``forward_head`` applies dropout, conv10, ReLU and global average pooling. Its ``pre_logits`` output, and the
    output without a classifier, is the globally pooled last feature map (``num_features`` = 512 channels), the
    vector a linear probe or a new classifier reads.

    Args:
        cfg: The architecture.
        num_classes: Outputs of conv10; 0 leaves it out.
        in_chans: Input image channels.
        model_name: Name used in error messages.
    """

    def __init__(
        self, cfg: SqueezeNetConfig, *, num_classes: int = 1000, in_chans: int = 3, model_name: str = "squeezenet"
    ) -> None:
        super().__init__()
        cfg.validate(model_name)
        if in_chans < 1:
            raise ValueError(f"{model_name}: in_chans must be positive; got {in_chans}")
        self.cfg = cfg
        self.model_name = model_name
        self.in_chans = in_chans
        self.num_classes = num_classes

        chs = cfg.stem_width
        features: list[nn.Module] = [nn.Conv2d(in_chans, chs, cfg.stem_kernel, stride=2), nn.ReLU(inplace=True)]
        self.feature_info = [FeatureInfo(chs, 2, "features.1")]
        features.append(_pool())
        reduction = 4
        for spec in cfg.layers:
            if spec == "M":
                # One tap per resolution: the last Fire module before the map shrinks.
                self.feature_info.append(FeatureInfo(chs, reduction, f"features.{len(features) - 1}"))
                features.append(_pool())
                reduction *= 2
                continue
            fire = Fire(chs, *spec, bypass=cfg.bypass and chs == spec[1] + spec[2])
            features.append(fire)
            chs = fire.out_chs
        self.feature_info.append(FeatureInfo(chs, reduction, f"features.{len(features) - 1}"))
        self.features = nn.Sequential(*features)
        self.num_features = chs
        # Unpadded conv1 and the pools need a real minimum: the smallest image for which every map keeps a pixel.
        self.min_input_size = next(n for n in range(1, 4096) if output_size(self.features, n) >= 1)

        self.head_drop = nn.Dropout(cfg.drop_rate) if cfg.drop_rate else nn.Identity()
        self.final_conv: nn.Module = nn.Conv2d(chs, num_classes, 1) if num_classes else nn.Identity()
        self.head_act = nn.ReLU(inplace=True)
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self._init_weights()

    def _init_weights(self) -> None:
        if self.features[0].weight.is_meta:
            return  # built on the meta device for analysis: there are no values to initialise
        # torchvision's initialisation: He-uniform convolutions, zero biases, a small Gaussian conv10.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                if m is self.final_conv:
                    nn.init.normal_(m.weight, mean=0.0, std=0.01)
                else:
                    nn.init.kaiming_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def remap_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Translate torchvision's key for conv10 (``classifier.1``) to ``final_conv``; other keys already match."""
        prefix = "classifier.1."
        return {(f"final_conv.{k[len(prefix) :]}" if k.startswith(prefix) else k): v for k, v in state.items()}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_drop(x)
        if pre_logits:
            return torch.flatten(self.global_pool(x), 1)
        # Without a classifier the ReLU changes nothing: the Fire modules' outputs are already non-negative.
        return torch.flatten(self.global_pool(self.head_act(self.final_conv(x))), 1)

    def get_classifier(self) -> nn.Module:
        return self.final_conv

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        like = self.features[0].weight
        if not num_classes:
            self.final_conv = nn.Identity()
            return
        self.final_conv = nn.Conv2d(self.num_features, num_classes, 1, device=like.device, dtype=like.dtype)
        if not like.is_meta:
            nn.init.normal_(self.final_conv.weight, mean=0.0, std=0.01)
            nn.init.zeros_(self.final_conv.bias)


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
_VARIANTS: dict[str, tuple[SqueezeNetConfig, tuple[Reported, ...], str]] = {
    "squeezenet1_0": (
        SqueezeNetConfig(),
        (
            Reported("ImageNet", "top-1 accuracy", 57.5, "Table 2", "uncompressed 32-bit model, 4.8MB"),
            Reported("ImageNet", "top-5 accuracy", 80.3, "Table 2", "uncompressed 32-bit model, 4.8MB"),
        ),
        "Table 1 of the paper; 227x227 crops as in the authors' Caffe model. Simple bypass (bypass=True) reaches "
        "60.4% top-1 and 82.5% top-5 in Table 3",
    ),
    "squeezenet1_1": (
        _V1_1,
        (),
        "SqueezeNet v1.1 from the authors' repository: conv1 with 64 3x3 filters and max-pools after conv1, fire3 "
        "and fire5, for 2.4x less computation than v1.0 'without sacrificing accuracy'; the paper has no table row",
    ),
}


for _name, (_cfg, _reported, _notes) in _VARIANTS.items():
    register_model(
        ModelCard(_name, "squeezenet", _IANDOLA_2016, reported=_reported, notes=_notes, **_INPUT),
        config_builder(_name, _cfg, SqueezeNet),
    )
