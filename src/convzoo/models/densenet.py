"""DenseNet: every layer of a block reads the feature maps of all layers before it.

Huang, Liu, van der Maaten and Weinberger. Densely Connected Convolutional Networks. CVPR 2017.

- ImageNet (Table 1): DenseNet-BC with four dense blocks, a 7x7/2 convolution of 2k filters and a 3x3/2 max-pool as
  stem, bottleneck layers of 4k channels and compression 0.5 at the transitions. DenseNet-121/169/201/264 use growth
  rate k = 32, DenseNet-161 k = 48. Module names follow torchvision (``features.conv0`` ... ``features.norm5``,
  ``classifier``), so its state_dicts load as they are; the ``norm.1``-style keys of its older checkpoints are
  translated on loading.
- CIFAR (section 3, "Implementation Details"; Table 2): three dense blocks of equal length after a single 3x3
  convolution of 16 filters (2k for DenseNet-BC), 32x32, 16x16 and 8x8 maps. A depth L counts the stem, the
  classifier and the two transitions: a basic DenseNet has (L - 4) / 3 layers per block, a DenseNet-BC (whose
  layers hold two convolutions) (L - 4) / 6.

Growth rate, bottleneck width, compression and block configuration are arguments; the named variants are rows of
data. ``memory_efficient=True`` checkpoints each layer's concatenation and first BN-ReLU-convolution (as torchvision
does), giving the same outputs and gradients with memory linear rather than quadratic in depth; unlike a plain
checkpoint it updates each batch norm's running statistics once per step, not twice.
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn as nn

from convzoo.layers.dense import DenseBlock, Transition
from convzoo.layers.weight_init import he_fan_out_init_
from convzoo.models.base import ConvNet, FeatureInfo, HeadNames
from convzoo.registry import (
    CIFAR10_DEFAULTS,
    IMAGENET_DEFAULTS,
    Paper,
    Variant,
    cifar_error,
    imagenet_error,
    register_family,
)

STEMS = ("imagenet", "cifar")


@dataclass(frozen=True)
class DenseNetConfig:
    """Everything that distinguishes one DenseNet from another.

    Attributes:
        growth_rate: Maps each dense layer adds (k).
        block_config: Dense layers per block.
        stem: ``"imagenet"`` (7x7/2 convolution, BN, ReLU, 3x3/2 max-pool) or ``"cifar"`` (one 3x3 convolution).
        stem_width: Filters of the stem convolution (2k for DenseNet-BC, 16 for the basic CIFAR DenseNet).
        bn_size: The bottleneck 1x1 convolution has ``bn_size * growth_rate`` filters (4 in the paper, the "B" of
            DenseNet-BC); 0 leaves the bottleneck out.
        compression: A transition turns m maps into floor(compression * m) (theta, the "C"; 1 keeps them all).
        drop_rate: Dropout after every convolution but the stem (0.2 for the paper's runs without augmentation).
        memory_efficient: Recompute concatenations in the backward pass instead of storing them.
    """

    growth_rate: int = 32
    block_config: tuple[int, ...] = (6, 12, 24, 16)
    stem: str = "imagenet"
    stem_width: int = 64
    bn_size: int = 4
    compression: float = 0.5
    drop_rate: float = 0.0
    memory_efficient: bool = False

    def validate(self, name: str) -> None:
        """Raise a ValueError naming ``name`` if this configuration cannot be built."""

        def fail(reason: str) -> None:
            raise ValueError(f"{name}: {reason}")

        if self.stem not in STEMS:
            fail(f"unknown stem {self.stem!r}; expected one of {STEMS}")
        if self.growth_rate < 1 or self.stem_width < 1:
            fail(f"growth_rate and stem_width must be positive; got {self.growth_rate} and {self.stem_width}")
        if not self.block_config or any(n < 1 for n in self.block_config):
            fail(f"every dense block needs at least one layer; got block_config={self.block_config}")
        if self.bn_size < 0:
            fail(f"bn_size must be 0 (no bottleneck) or positive; got {self.bn_size}")
        if not 0.0 < self.compression <= 1.0:
            fail(f"compression (theta) must lie in (0, 1]; got {self.compression}")
        if not 0.0 <= self.drop_rate < 1.0:
            fail(f"drop_rate must lie in [0, 1); got {self.drop_rate}")
        chs = self.stem_width
        for i, n in enumerate(self.block_config[:-1]):
            chs = math.floor((chs + n * self.growth_rate) * self.compression)
            if chs < 1:
                fail(f"compression {self.compression} leaves transition {i + 1} with no channels")


class DenseNet(ConvNet):
    """A DenseNet built from a `DenseNetConfig`; the constructor takes `ConvNet`'s arguments."""

    head_names = HeadNames(pool="global_pool", drop=None, fc="classifier")

    def __init__(
        self, cfg: DenseNetConfig, *, num_classes: int = 1000, in_chans: int = 3, model_name: str = "densenet"
    ) -> None:
        super().__init__(cfg, num_classes=num_classes, in_chans=in_chans, model_name=model_name)
        chs = cfg.stem_width
        if cfg.stem == "imagenet":
            stem: list[tuple[str, nn.Module]] = [
                ("conv0", nn.Conv2d(in_chans, chs, 7, stride=2, padding=3, bias=False)),
                ("norm0", nn.BatchNorm2d(chs)),
                ("relu0", nn.ReLU(inplace=True)),
                ("pool0", nn.MaxPool2d(3, stride=2, padding=1)),
            ]
            self.feature_info = [FeatureInfo(chs, 2, "features.relu0")]
            reduction = 4
        else:
            # Each CIFAR dense layer begins with its own BN-ReLU, so the stem is a bare convolution.
            stem = [("conv0", nn.Conv2d(in_chans, chs, 3, padding=1, bias=False))]
            self.feature_info = [FeatureInfo(chs, 1, "features.conv0")]
            reduction = 1
        self.features = nn.Sequential(OrderedDict(stem))

        last = len(cfg.block_config) - 1
        for i, num_layers in enumerate(cfg.block_config):
            block = DenseBlock(
                num_layers,
                chs,
                cfg.growth_rate,
                bn_size=cfg.bn_size,
                drop_rate=cfg.drop_rate,
                memory_efficient=cfg.memory_efficient,
            )
            self.features.add_module(f"denseblock{i + 1}", block)
            chs = block.out_chs
            if i == last:
                break
            self.feature_info.append(FeatureInfo(chs, reduction, f"features.denseblock{i + 1}"))
            out_chs = math.floor(chs * cfg.compression)
            self.features.add_module(f"transition{i + 1}", Transition(chs, out_chs, drop_rate=cfg.drop_rate))
            chs, reduction = out_chs, reduction * 2
        # The last block's output is normalised and rectified once more before pooling.
        self.features.add_module("norm5", nn.BatchNorm2d(chs))
        self.features.add_module("relu5", nn.ReLU(inplace=True))
        self.feature_info.append(FeatureInfo(chs, reduction, "features.relu5"))
        # The three average pools halve with floor; like ResNet's, the minimum is the total stride.
        self.min_input_size = reduction
        self.init_head(chs)
        self._init_weights()

    def _init_weights(self) -> None:
        if self.features.conv0.weight.is_meta:
            return  # built on the meta device for analysis: there are no values to initialise
        # He initialisation (the paper's reference [10]) as in the authors' fb.resnet.torch code: fan-out normal.
        he_fan_out_init_(self)
        if isinstance(self.classifier, nn.Linear):
            self.init_classifier(self.classifier)

    def init_classifier(self, fc: nn.Linear) -> None:
        """PyTorch's default weights and a zero bias, as in fb.resnet.torch and torchvision."""
        nn.init.zeros_(fc.bias)

    def remap_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Translate the ``denselayerN.norm.1.weight`` keys of torchvision's older checkpoints to ``norm1.weight``."""
        return {_LEGACY_KEY.sub(r"\1\2", k): v for k, v in state.items()}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.features(x)


# Dots were once allowed in module names: torchvision's first DenseNet checkpoints say "norm.1" for "norm1".
_LEGACY_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.([12]\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$"
)


# ----------------------------------------------------------------------------------------------------------------
# The registered variants.

_HUANG_2017 = Paper(
    "Gao Huang, Zhuang Liu, Laurens van der Maaten, Kilian Q. Weinberger",
    "Densely Connected Convolutional Networks",
    2017,
    "CVPR",
    "https://arxiv.org/abs/1608.06993",
)

_VARIANTS: list[Variant] = []

# Table 1 (architectures) and Table 3 (ImageNet validation top-1 / top-5 error, single 224x224 crop and 10 crops).
_IMAGENET = {
    "densenet121": (32, (6, 12, 24, 16), (25.02, 7.71), (23.61, 6.66)),
    "densenet169": (32, (6, 12, 32, 32), (23.80, 6.85), (22.08, 5.92)),
    "densenet201": (32, (6, 12, 48, 32), (22.58, 6.34), (21.46, 5.54)),
    "densenet264": (32, (6, 12, 64, 48), (22.15, 6.12), (20.80, 5.29)),
    "densenet161": (48, (6, 12, 36, 24), None, None),
}
for _name, (_k, _blocks, _single, _ten) in _IMAGENET.items():
    _VARIANTS.append(
        Variant(
            _name,
            DenseNetConfig(growth_rate=_k, block_config=_blocks, stem_width=2 * _k),
            _HUANG_2017,
            IMAGENET_DEFAULTS,
            imagenet_error(*_single, "Table 3", "single 224x224 crop")
            + imagenet_error(*_ten, "Table 3", "10-crop testing")
            if _single
            else (),
            f"DenseNet-BC (k={_k}) of Table 1"
            if _single
            else "DenseNet-BC with k=48 and 96 stem filters, released with the paper's code and shipped by "
            "torchvision; Table 3 has no row for it (the authors' repository reports 22.2% top-1, single crop, for "
            "their Torch model)",
        )
    )

# Table 2: CIFAR-10/100 error with standard augmentation (C10+/C100+) and, with dropout 0.2, without (C10/C100).
_CIFAR = {
    # name: (L, k, BC, C10+, C100+, C10, C100)
    "densenet_40_12": (40, 12, False, 5.24, 24.42, 7.00, 27.55),
    "densenet_100_12": (100, 12, False, 4.10, 20.20, 5.77, 23.79),
    "densenet_100_24": (100, 24, False, 3.74, 19.25, 5.83, 23.42),
    "densenet_bc_100_12": (100, 12, True, 4.51, 22.27, 5.92, 24.15),
    "densenet_bc_250_24": (250, 24, True, 3.62, 17.60, 5.19, 19.64),
    "densenet_bc_190_40": (190, 40, True, 3.46, 17.18, None, None),
}
for _name, (_depth, _k, _bc, _c10p, _c100p, _c10, _c100) in _CIFAR.items():
    _per_block = (_depth - 4) // (6 if _bc else 3)
    _reported = cifar_error(_c10p, _c100p, "Table 2", "standard augmentation (C10+, C100+), no dropout")
    if _c10 is not None:
        _reported += cifar_error(_c10, _c100, "Table 2", "no augmentation, drop_rate=0.2")
    _cfg = DenseNetConfig(
        growth_rate=_k,
        block_config=(_per_block,) * 3,
        stem="cifar",
        stem_width=2 * _k if _bc else 16,
        bn_size=4 if _bc else 0,
        compression=0.5 if _bc else 1.0,
    )
    _notes = f"{'DenseNet-BC' if _bc else 'DenseNet'} (L={_depth}, k={_k}): three blocks of {_per_block} layers"
    if _c10 is None:
        _notes += "; the paper has no run without augmentation for this network"
    _VARIANTS.append(Variant(_name, _cfg, _HUANG_2017, CIFAR10_DEFAULTS, _reported, _notes))

register_family("densenet", DenseNet, _VARIANTS)
