"""The residual family: ResNet, its plain twins, pre-activation ResNet, Wide ResNet, ResNeXt and SENet.

One network, many papers; each variant is a row of data (`ResNetConfig`) fed to one builder:

- He, Zhang, Ren and Sun. Deep Residual Learning for Image Recognition. CVPR 2016. ImageNet ResNet-18..152 with
  basic and bottleneck blocks, CIFAR ResNet-20..1202 (section 4.2), shortcut options A/B/C, and the plain networks
  of the degradation experiment.
- He, Zhang, Ren and Sun. Identity Mappings in Deep Residual Networks. ECCV 2016. Pre-activation units.
- Zagoruyko and Komodakis. Wide Residual Networks. BMVC 2016.
- Xie, Girshick, Dollar, Tu and He. Aggregated Residual Transformations for Deep Neural Networks. CVPR 2017.
- Hu, Shen and Sun. Squeeze-and-Excitation Networks. CVPR 2018.

Module names follow torchvision's ResNet (conv1, bn1, layer1..layer4, fc; blocks conv1/bn1/.../downsample), so its
state_dicts, and timm's for the same networks, load without renaming; `convzoo.layouts` translates other names.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from convzoo.layers.conv import conv3x3
from convzoo.layers.residual import RESIDUAL_BLOCKS
from convzoo.layers.shortcuts import SHORTCUT_OPTIONS, ZeroPadShortcut, check_pad_channels
from convzoo.layers.weight_init import he_fan_out_init_
from convzoo.models.base import ConvNet, FeatureInfo, HeadNames
from convzoo.registry import (
    CIFAR10_DEFAULTS,
    IMAGENET_DEFAULTS,
    Paper,
    Reported,
    Variant,
    check_overrides,
    cifar_error,
    imagenet_error,
    register_family,
)

BLOCKS = ("basic", "bottleneck")
STEMS = ("imagenet", "cifar")
DEPTH_RULES = ("imagenet", "cifar", "wrn")


@dataclass(frozen=True)
class ResNetConfig:
    """Everything that distinguishes one member of the residual family from another.

    Attributes:
        block: ``"basic"`` (two 3x3 convolutions) or ``"bottleneck"`` (1x1, 3x3, 1x1; four times wider output).
        layers: Blocks per stage.
        planes: Base width of each stage; a bottleneck stage outputs four times this.
        stem: ``"imagenet"`` (7x7/2 convolution then 3x3/2 max-pool) or ``"cifar"`` (one 3x3 convolution).
        stem_width: Channels of the stem convolution.
        groups: Cardinality of the grouped 3x3 convolution (ResNeXt); bottleneck only.
        base_width: Width of each group at planes=64 (ResNeXt's "d"; 128 gives wide_resnet50_2).
        widen_factor: Multiplies every stage's planes (the "k" of CIFAR Wide ResNets).
        shortcut: ``"A"``, ``"B"``, ``"C"`` (He et al. section 3.3) or None for a plain network without shortcuts.
        pad_channels: Where option A's zero channels go: ``"after"`` the subsampled input's (Torch's original CIFAR
            code) or ``"split"`` evenly before and after them (the PyTorch CIFAR reimplementation whose checkpoints
            circulate widely). Parameter-free, but a trained network needs the convention it was trained with.
        preact: Pre-activation units (BN-ReLU-conv, identity after the addition) of "Identity Mappings".
        se_reduction: Squeeze-and-Excitation reduction ratio in every block; 0 disables SE.
        zero_init_residual: Start each residual branch at zero (last BN gamma, or last conv for pre-activation), so
            every block begins as the identity.
        drop_rate: Dropout before the classifier.
        block_drop_rate: Dropout between the convolutions of each block (Wide ResNet's dropout).
        depth_rule: How a ``depth=`` override maps to blocks per stage: ``"imagenet"`` (18/34/50/101/152/200),
            ``"cifar"`` (6n+2 basic, 9n+2 bottleneck) or ``"wrn"`` (6n+4).
    """

    block: str = "bottleneck"
    layers: tuple[int, ...] = (3, 4, 6, 3)
    planes: tuple[int, ...] = (64, 128, 256, 512)
    stem: str = "imagenet"
    stem_width: int = 64
    groups: int = 1
    base_width: int = 64
    widen_factor: int = 1
    shortcut: str | None = "B"
    pad_channels: str = "after"
    preact: bool = False
    se_reduction: int = 0
    zero_init_residual: bool = False
    drop_rate: float = 0.0
    block_drop_rate: float = 0.0
    depth_rule: str = "imagenet"

    def validate(self, name: str) -> None:
        """Raise a ValueError naming ``name`` if this configuration cannot be built."""

        def fail(reason: str) -> None:
            raise ValueError(f"{name}: {reason}")

        if self.block not in BLOCKS:
            fail(f"unknown block {self.block!r}; expected one of {BLOCKS}")
        if self.stem not in STEMS:
            fail(f"unknown stem {self.stem!r}; expected one of {STEMS}")
        if self.shortcut is not None and self.shortcut not in SHORTCUT_OPTIONS:
            fail(f"unknown shortcut option {self.shortcut!r}; expected one of {SHORTCUT_OPTIONS} or None (plain)")
        try:
            check_pad_channels(self.pad_channels)
        except ValueError as e:
            fail(str(e))
        if self.pad_channels != "after" and self.shortcut != "A":
            fail(f"pad_channels applies to shortcut option A only; this network has shortcut={self.shortcut!r}")
        if not self.layers or any(n < 1 for n in self.layers):
            fail(f"every stage needs at least one block; got layers={self.layers}")
        if len(self.planes) != len(self.layers):
            fail(f"layers has {len(self.layers)} stages but planes has {len(self.planes)}")
        if self.groups < 1 or self.base_width < 1 or self.widen_factor < 1 or self.stem_width < 1:
            fail("groups, base_width, widen_factor and stem_width must be positive")
        if self.block == "basic" and (self.groups != 1 or self.base_width != 64):
            fail(f"basic blocks support only groups=1 and base_width=64; got {self.groups} and {self.base_width}")
        if not 0.0 <= self.drop_rate < 1.0 or not 0.0 <= self.block_drop_rate < 1.0:
            fail("drop_rate and block_drop_rate must lie in [0, 1)")
        if self.block == "bottleneck":
            # ResNeXt's "C x d": each of the `groups` paths is d = planes * base_width / 64 channels wide, so the
            # grouped width always divides; it must not round down to zero.
            narrowest = min(self.planes) * self.widen_factor * self.base_width // 64
            if narrowest < 1:
                fail(
                    f"base_width={self.base_width} leaves the {min(self.planes)}-plane stage with "
                    f"{min(self.planes)} * {self.base_width} / 64 < 1 channel per group; raise base_width"
                )
        if self.se_reduction < 0:
            fail(f"se_reduction must be 0 (off) or a positive ratio; got {self.se_reduction}")
        if self.shortcut == "A":
            chs = [self.stem_width] + [p * self.widen_factor * self.expansion for p in self.planes]
            if any(b < a for a, b in zip(chs, chs[1:])):
                fail(f"shortcut option A can only add channels, but the widths go {chs}")

    @property
    def expansion(self) -> int:
        """Output channels of a block per base plane."""
        return 4 if self.block == "bottleneck" else 1


_IMAGENET_DEPTHS: dict[int, tuple[str, tuple[int, ...]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
    200: ("bottleneck", (3, 24, 36, 3)),
}


def layers_for_depth(cfg: ResNetConfig, depth: int, name: str) -> dict[str, Any]:
    """The ``block``/``layers`` fields that give a network of ``depth`` weighted layers under ``cfg.depth_rule``."""
    stages = len(cfg.planes)
    if cfg.depth_rule == "imagenet":
        if depth not in _IMAGENET_DEPTHS:
            raise ValueError(
                f"{name}: ImageNet residual networks come in depths {sorted(_IMAGENET_DEPTHS)}; got {depth}"
            )
        block, layers = _IMAGENET_DEPTHS[depth]
        return {"block": block, "layers": layers}
    # CIFAR networks: one stem convolution, `stages` stages of n blocks, one classifier (+2); a Wide ResNet also
    # counts its two projection shortcuts (+4, Zagoruyko and Komodakis section 2).
    per_block = 2 if cfg.block == "basic" else 3
    extra = 4 if cfg.depth_rule == "wrn" else 2
    n, rest = divmod(depth - extra, per_block * stages)
    if rest or n < 1:
        raise ValueError(
            f"{name}: with {cfg.block} blocks in {stages} stages the depth must be {per_block * stages}n+{extra} "
            f"for n >= 1 (e.g. {per_block * stages + extra}, {2 * per_block * stages + extra}); got {depth}"
        )
    return {"layers": (n,) * stages}


def make_stage(cfg: ResNetConfig, in_chs: int, planes: int, num_blocks: int, stride: int) -> tuple[nn.Sequential, int]:
    """One stage of ``num_blocks`` blocks, the first carrying the stride; returns it and its output channels."""
    block_type = RESIDUAL_BLOCKS[(cfg.block, cfg.preact)]
    # Only bottlenecks have the grouped 3x3 convolution that groups and base_width shape.
    grouped = {"groups": cfg.groups, "base_width": cfg.base_width} if cfg.block == "bottleneck" else {}
    blocks = []
    for i in range(num_blocks):
        block = block_type(
            in_chs,
            planes,
            stride=stride if i == 0 else 1,
            shortcut=cfg.shortcut,
            se_reduction=cfg.se_reduction,
            drop_rate=cfg.block_drop_rate,
            pad_channels=cfg.pad_channels,
            **grouped,
        )
        blocks.append(block)
        in_chs = block.out_chs
    return nn.Sequential(*blocks), in_chs


class ResNet(ConvNet):
    """A residual (or plain) network built from a `ResNetConfig`; the constructor takes `ConvNet`'s arguments."""

    head_names = HeadNames(pool="avgpool", drop="drop", fc="fc")

    def __init__(self, cfg: ResNetConfig, *, num_classes: int = 1000, in_chans: int = 3, model_name: str = "resnet"):
        super().__init__(cfg, num_classes=num_classes, in_chans=in_chans, model_name=model_name)
        imagenet_stem = cfg.stem == "imagenet"

        if imagenet_stem:
            self.conv1 = nn.Conv2d(in_chans, cfg.stem_width, 7, stride=2, padding=3, bias=False)
        else:
            self.conv1 = conv3x3(in_chans, cfg.stem_width)
        # A pre-activation network normalises inside its first block, so its stem is a bare convolution.
        self.bn1 = nn.Identity() if cfg.preact else nn.BatchNorm2d(cfg.stem_width)
        self.relu = nn.Identity() if cfg.preact else nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1) if imagenet_stem else nn.Identity()
        stem_reduction = 2 if imagenet_stem else 1
        self.feature_info = [FeatureInfo(cfg.stem_width, stem_reduction, "conv1" if cfg.preact else "relu")]

        chs, reduction = cfg.stem_width, stem_reduction * (2 if imagenet_stem else 1)
        self.stage_names: list[str] = []
        for i, (planes, num_blocks) in enumerate(zip(cfg.planes, cfg.layers)):
            stride = 1 if i == 0 else 2
            reduction *= stride
            stage, chs = make_stage(cfg, chs, planes * cfg.widen_factor, num_blocks, stride)
            name = f"layer{i + 1}"
            self.add_module(name, stage)
            self.stage_names.append(name)
            self.feature_info.append(FeatureInfo(chs, reduction, name))
        self.min_input_size = reduction

        if cfg.preact:
            # Pre-activation leaves the last stage's sum un-normalised: one more BN-ReLU before pooling.
            self.norm = nn.BatchNorm2d(chs)
            self.final_act = nn.ReLU(inplace=True)
            self.feature_info[-1] = FeatureInfo(chs, reduction, "final_act")
        self.init_head(chs, cfg.drop_rate)
        self._init_weights()

    def _init_weights(self) -> None:
        if self.conv1.weight.is_meta:
            return  # built on the meta device for analysis: there are no values to initialise
        he_fan_out_init_(self)
        if self.cfg.zero_init_residual:
            for m in self.modules():
                if isinstance(m, tuple(RESIDUAL_BLOCKS.values())) and m.residual:
                    nn.init.zeros_(m.last_norm().weight)

    def set_pad_channels(self, pad_channels: str) -> None:
        """Switch where the option A shortcuts put their zero channels (``"after"`` or ``"split"``), in place.

        The convention has no parameters, so a built (or trained) network can change it; ``cfg`` follows.
        """
        cfg = dataclasses.replace(self.cfg, pad_channels=pad_channels)
        cfg.validate(self.model_name)
        for m in self.modules():
            if isinstance(m, ZeroPadShortcut):
                m.pad_channels = pad_channels
        self.cfg = cfg

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        x = self.conv1(x)
        x = self.bn1(x)
        x = self.relu(x)
        x = self.maxpool(x)
        for name in self.stage_names:
            x = getattr(self, name)(x)
        if self.cfg.preact:
            x = self.norm(x)
            x = self.final_act(x)
        return x


# ----------------------------------------------------------------------------------------------------------------
# The registered variants: each is a configuration plus a model card.

_HE_2016 = Paper(
    "Kaiming He, Xiangyu Zhang, Shaoqing Ren, Jian Sun",
    "Deep Residual Learning for Image Recognition",
    2016,
    "CVPR",
    "https://arxiv.org/abs/1512.03385",
)
_HE_2016_ID = Paper(
    "Kaiming He, Xiangyu Zhang, Shaoqing Ren, Jian Sun",
    "Identity Mappings in Deep Residual Networks",
    2016,
    "ECCV",
    "https://arxiv.org/abs/1603.05027",
)
_WRN = Paper(
    "Sergey Zagoruyko, Nikos Komodakis", "Wide Residual Networks", 2016, "BMVC", "https://arxiv.org/abs/1605.07146"
)
_RESNEXT = Paper(
    "Saining Xie, Ross Girshick, Piotr Dollar, Zhuowen Tu, Kaiming He",
    "Aggregated Residual Transformations for Deep Neural Networks",
    2017,
    "CVPR",
    "https://arxiv.org/abs/1611.05431",
)
_SENET = Paper(
    "Jie Hu, Li Shen, Gang Sun", "Squeeze-and-Excitation Networks", 2018, "CVPR", "https://arxiv.org/abs/1709.01507"
)


_CIFAR_BASE = ResNetConfig(
    block="basic", planes=(16, 32, 64), stem="cifar", stem_width=16, shortcut="A", depth_rule="cifar"
)
_VARIANTS: list[Variant] = []


def _variant(
    name: str,
    cfg: ResNetConfig,
    paper: Paper,
    data: dict[str, Any],
    reported: tuple[Reported, ...] = (),
    notes: str = "",
) -> None:
    _VARIANTS.append(Variant(name, cfg, paper, data, reported, notes))


def _imagenet_cfg(depth: int, **kw: Any) -> ResNetConfig:
    block, layers = _IMAGENET_DEPTHS[depth]
    return ResNetConfig(block=block, layers=layers, **kw)


def _cifar_cfg(depth: int, **kw: Any) -> ResNetConfig:
    base = dataclasses.replace(_CIFAR_BASE, **kw)
    return dataclasses.replace(base, **layers_for_depth(base, depth, f"depth {depth}"))


# He et al. 2016: ImageNet (Table 2 for 18 layers; Table 3, 10-crop, for the others; ResNet-34 with option B).
_RESNET_IMAGENET = {
    18: imagenet_error(27.88, None, "Table 2"),
    34: imagenet_error(24.52, 7.46, "Table 3", "10-crop testing, option B"),
    50: imagenet_error(22.85, 6.71, "Table 3"),
    101: imagenet_error(21.75, 6.05, "Table 3"),
    152: imagenet_error(21.43, 5.71, "Table 3"),
}
_PLAIN_IMAGENET = {18: imagenet_error(27.94, None, "Table 2"), 34: imagenet_error(28.54, None, "Table 2")}
for _d, _rep in _RESNET_IMAGENET.items():
    _variant(f"resnet{_d}", _imagenet_cfg(_d), _HE_2016, IMAGENET_DEFAULTS, _rep)
    _variant(
        f"plain{_d}",
        _imagenet_cfg(_d, shortcut=None),
        _HE_2016,
        IMAGENET_DEFAULTS,
        _PLAIN_IMAGENET.get(_d, ()),
        "ResNet twin without shortcuts (section 4.1, plain networks)",
    )

# He et al. 2016, section 4.2 and Table 6: CIFAR-10, option A shortcuts.
_RESNET_CIFAR = {20: 8.75, 32: 7.51, 44: 7.17, 56: 6.97, 110: 6.43, 1202: 7.93}
for _d, _err in _RESNET_CIFAR.items():
    _note = "best of 5 runs; mean 6.61 +- 0.16" if _d == 110 else ""
    _variant(f"resnet{_d}", _cifar_cfg(_d), _HE_2016, CIFAR10_DEFAULTS, cifar_error(_err, None, "Table 6", _note))
    _variant(
        f"plain{_d}",
        _cifar_cfg(_d, shortcut=None),
        _HE_2016,
        CIFAR10_DEFAULTS,
        (),
        "ResNet twin without shortcuts; the paper plots its error (Figure 6) but tabulates none"
        + (
            ". At this depth the gradients overflow float32 at initialisation: without shortcuts it cannot train"
            if _d == 1202
            else ""
        ),
    )

# He et al. 2016 ("Identity Mappings"): pre-activation. ImageNet numbers are single 320x320 crops (Table 5);
# CIFAR ones from Table 3 (medians of 5 runs).
for _d in (18, 34, 50, 101, 152):
    _variant(
        f"preact_resnet{_d}",
        _imagenet_cfg(_d, preact=True),
        _HE_2016_ID,
        IMAGENET_DEFAULTS,
        imagenet_error(21.1, 5.5, "Table 5", "single 320x320 crop") if _d == 152 else (),
    )
_variant(
    "preact_resnet110",
    _cifar_cfg(110, preact=True, shortcut="B"),
    _HE_2016_ID,
    CIFAR10_DEFAULTS,
    cifar_error(6.37, None, "Table 3"),
)
_variant(
    "preact_resnet164",
    _cifar_cfg(164, preact=True, shortcut="B", block="bottleneck"),
    _HE_2016_ID,
    CIFAR10_DEFAULTS,
    cifar_error(5.46, 24.33, "Table 3"),
)
_variant(
    "preact_resnet1001",
    _cifar_cfg(1001, preact=True, shortcut="B", block="bottleneck"),
    _HE_2016_ID,
    CIFAR10_DEFAULTS,
    cifar_error(4.92, 22.71, "Table 3", "4.62 with mini-batch 64, Table 4"),
)

# Zagoruyko and Komodakis 2016: WRN-d-k on CIFAR (Table 5, mean/std preprocessing; Table 4 uses ZCA whitening and
# differs; with dropout in Table 6) and WRN-50-2 on ImageNet (Table 8; Table 9 gives 5.79 top-5 for the same net).
_WRN_BASE = dataclasses.replace(_CIFAR_BASE, preact=True, shortcut="B", depth_rule="wrn")
_WRN_CIFAR = {  # (depth, width): (CIFAR-10 error, CIFAR-100 error, table, note)
    (40, 1): (6.85, 30.89, "Table 4", "ZCA-whitened input; the paper tabulates this net with mean/std nowhere"),
    (40, 2): (5.33, 26.04, "Table 4", "ZCA-whitened input; the paper tabulates this net with mean/std nowhere"),
    (16, 8): (4.27, 20.43, "Table 5", "without dropout; use block_drop_rate=0.3 for the dropout runs"),
    (28, 10): (4.00, 19.25, "Table 5", "without dropout; use block_drop_rate=0.3 for the dropout runs"),
    (40, 4): (4.53, 21.18, "Table 5", "without dropout; use block_drop_rate=0.3 for the dropout runs"),
}
for (_d, _k), (_c10, _c100, _table, _note) in _WRN_CIFAR.items():
    _base = dataclasses.replace(_WRN_BASE, widen_factor=_k)
    _cfg = dataclasses.replace(_base, **layers_for_depth(_base, _d, f"wrn{_d}_{_k}"))
    _variant(f"wrn{_d}_{_k}", _cfg, _WRN, CIFAR10_DEFAULTS, cifar_error(_c10, _c100, _table, _note))
_variant(
    "wide_resnet50_2",
    _imagenet_cfg(50, base_width=128),
    _WRN,
    IMAGENET_DEFAULTS,
    imagenet_error(21.9, 6.03, "Table 8", "WRN-50-2-bottleneck, single crop"),
)
_variant(
    "wide_resnet101_2",
    _imagenet_cfg(101, base_width=128),
    _WRN,
    IMAGENET_DEFAULTS,
    (),
    "the paper reports no ImageNet result for this depth",
)

# Xie et al. 2017: ResNeXt (ImageNet Table 3 and Table 4, single 224x224 crop; CIFAR Table 7).
_RESNEXT_IMAGENET = {
    # name: (depth, cardinality, width per group, reported)
    "resnext50_32x4d": (50, 32, 4, imagenet_error(22.2, None, "Table 3", "single 224x224 crop")),
    "resnext101_32x4d": (101, 32, 4, imagenet_error(21.2, 5.6, "Table 4", "single 224x224 crop")),
    "resnext101_32x8d": (101, 32, 8, ()),
    "resnext101_64x4d": (101, 64, 4, imagenet_error(20.4, 5.3, "Table 4", "single 224x224 crop")),
}
for _name, (_d, _card, _width, _rep) in _RESNEXT_IMAGENET.items():
    _note = "" if _rep else "the 32x8d width is not tabulated in the paper"
    _variant(_name, _imagenet_cfg(_d, groups=_card, base_width=_width), _RESNEXT, IMAGENET_DEFAULTS, _rep, _note)
_RESNEXT_CIFAR = dataclasses.replace(
    _CIFAR_BASE, block="bottleneck", planes=(64, 128, 256), stem_width=64, shortcut="B"
)
for _card, (_c10, _c100) in {8: (3.65, 17.77), 16: (3.58, 17.31)}.items():
    _base = dataclasses.replace(_RESNEXT_CIFAR, groups=_card, base_width=64)
    _variant(
        f"resnext29_{_card}x64d",
        dataclasses.replace(_base, **layers_for_depth(_base, 29, "resnext29")),
        _RESNEXT,
        CIFAR10_DEFAULTS,
        cifar_error(_c10, _c100, "Table 7"),
    )

# Hu et al. 2018: SE blocks with r = 16 (Table 2, single 224x224 crop). The paper has no SE-ResNet-18/34 rows.
_SE_IMAGENET = {
    18: (),
    34: (),
    50: imagenet_error(23.29, 6.62, "Table 2", "single 224x224 crop"),
    101: imagenet_error(22.38, 6.07, "Table 2", "single 224x224 crop"),
    152: imagenet_error(21.57, 5.73, "Table 2", "single 224x224 crop"),
}
for _d, _rep in _SE_IMAGENET.items():
    _variant(f"se_resnet{_d}", _imagenet_cfg(_d, se_reduction=16), _SENET, IMAGENET_DEFAULTS, _rep)
for _d, (_top1, _top5) in {50: (21.10, 5.49), 101: (20.70, 5.01)}.items():
    _variant(
        f"se_resnext{_d}_32x4d",
        _imagenet_cfg(_d, groups=32, base_width=4, se_reduction=16),
        _SENET,
        IMAGENET_DEFAULTS,
        imagenet_error(_top1, _top5, "Table 2", "single 224x224 crop"),
    )

_ACCEPTED = [f.name for f in dataclasses.fields(ResNetConfig) if f.name != "depth_rule"] + ["depth"]


def _builder(name: str, cfg: ResNetConfig, model_cls: type[ResNet]):
    # The usual configuration builder, plus ``depth=``, which sets the blocks per stage by the depth rule.
    def build(*, num_classes: int, in_chans: int, **overrides: Any) -> ResNet:
        check_overrides(name, overrides, _ACCEPTED)
        depth = overrides.pop("depth", None)
        for key in ("layers", "planes"):
            if key in overrides:
                overrides[key] = tuple(overrides[key])
        arch = dataclasses.replace(cfg, **overrides)
        if depth is not None:
            if "layers" in overrides:
                raise TypeError(f"{name}: give either depth or layers, not both")
            arch = dataclasses.replace(arch, **layers_for_depth(arch, depth, name))
        return model_cls(arch, num_classes=num_classes, in_chans=in_chans, model_name=name)

    return build


register_family("resnet", ResNet, _VARIANTS, builder=_builder)
