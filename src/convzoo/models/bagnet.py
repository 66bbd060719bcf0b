"""BagNet: a ResNet-50 whose every output unit sees only a small patch, so that its decision is a bag of local
features.

Brendel and Bethge. Approximating CNNs with Bag-of-local-Features models works surprisingly well on ImageNet.
ICLR 2019.

BagNet-q is ResNet-50 with most 3x3 convolutions replaced by 1x1 convolutions, so that the topmost features see
q x q pixels at most (q = 9, 17 or 33). A linear classifier turns each patch's 2048 features into class evidence,
and the logits are the spatial average of that evidence map: ``patch_logits(x)`` returns the map, whose mean over
positions is ``model(x)``.

The structure follows the authors' released PyTorch code: a 1x1 then an unpadded 3x3 convolution as the stem (no
max-pool); stride 2 in the first block of stages 1 to 3 and none in stage 4, so that patches lie 8 pixels apart;
only the first block of a stage may keep a 3x3 convolution, and every convolution is unpadded. Where an unpadded
3x3 convolution shrinks the map, the shortcut keeps its leading rows and columns. Module names are the authors'
(``conv1``, ``conv2``, ``bn1``, ``layer1``..``layer4``, ``fc``), so their checkpoints load as they are.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from convzoo.layers.conv import conv1x1
from convzoo.layers.shortcuts import make_shortcut
from convzoo.layers.weight_init import he_fan_out_init_
from convzoo.models.base import ConvNet, FeatureInfo, HeadNames
from convzoo.registry import IMAGENET_DEFAULTS, Paper, Variant, register_family


@dataclass(frozen=True)
class BagNetConfig:
    """A BagNet.

    Attributes:
        layers: Bottleneck blocks per stage (ResNet-50's 3, 4, 6, 3).
        planes: Base width of each stage; a stage outputs four times this.
        strides: Stride of each stage's first block.
        blocks_3x3: How many leading blocks of each stage keep a 3x3 convolution; the others use 1x1. Every 3x3
            convolution widens the receptive field by 2 times the stride accumulated before it.
        stem_width: Channels of the two stem convolutions.
    """

    layers: tuple[int, ...] = (3, 4, 6, 3)
    planes: tuple[int, ...] = (64, 128, 256, 512)
    strides: tuple[int, ...] = (2, 2, 2, 1)
    blocks_3x3: tuple[int, ...] = (1, 1, 1, 1)
    stem_width: int = 64

    def validate(self, name: str) -> None:
        """Raise a ValueError naming ``name`` if this configuration cannot be built."""
        stages = len(self.layers)
        if not stages or any(len(t) != stages for t in (self.planes, self.strides, self.blocks_3x3)):
            raise ValueError(
                f"{name}: layers, planes, strides and blocks_3x3 need one entry per stage; got {self.layers}, "
                f"{self.planes}, {self.strides}, {self.blocks_3x3}"
            )
        if any(n < 1 for n in self.layers) or any(p < 1 for p in self.planes) or self.stem_width < 1:
            raise ValueError(f"{name}: every stage needs at least one block and positive widths")
        if any(s < 1 for s in self.strides):
            raise ValueError(f"{name}: strides must be positive; got {self.strides}")
        if any(not 0 <= k <= n for k, n in zip(self.blocks_3x3, self.layers)):
            raise ValueError(
                f"{name}: blocks_3x3 counts blocks of each stage, between 0 and {self.layers}; got {self.blocks_3x3}"
            )

    @property
    def receptive_field(self) -> int:
        """Input pixels one evidence unit sees along each axis: the patch size q."""
        size, jump = 3, 1  # the stem's unpadded 3x3 convolution (after a 1x1)
        for stride, k3 in zip(self.strides, self.blocks_3x3):
            # The first block's convolution carries the stride, so it widens the field at the incoming jump;
            # later 3x3 blocks act after the stride.
            if k3:
                size += 2 * jump
            jump *= stride
            size += 2 * jump * max(k3 - 1, 0)
        return size

    @property
    def patch_stride(self) -> int:
        """Input pixels between neighbouring evidence units."""
        jump = 1
        for stride in self.strides:
            jump *= stride
        return jump


class BagNetBottleneck(nn.Module):
    """ResNet's bottleneck (1x1, kxk with the stride, 1x1 expanding by 4) with an unpadded middle convolution.

    Where the kxk convolution shrinks the map, the shortcut is cropped to its leading ``h x w`` positions: output
    position i then sees input positions ``stride * i`` to ``stride * i + k - 1``, and the shortcut's
    ``stride * i`` lies inside that window, so the block's receptive field stays k.
    """

    expansion = 4

    def __init__(self, in_chs: int, planes: int, *, stride: int = 1, kernel_size: int = 1) -> None:
        super().__init__()
        out_chs = planes * self.expansion
        self.conv1 = conv1x1(in_chs, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size, stride=stride, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, out_chs)
        self.bn3 = nn.BatchNorm2d(out_chs)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = make_shortcut("B", in_chs, out_chs, stride)
        self.out_chs = out_chs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)
        out = self.conv2(out)
        out = self.bn2(out)
        out = self.relu(out)
        out = self.conv3(out)
        out = self.bn3(out)
        out += shortcut[:, :, : out.shape[-2], : out.shape[-1]]
        return self.relu(out)


class BagNet(ConvNet):
    """A BagNet built from a `BagNetConfig`; the constructor takes `ConvNet`'s arguments.

    Attributes:
        receptive_field: The patch size q: input pixels one evidence unit sees along each axis.
        patch_stride: Input pixels between neighbouring patches (8).
    """

    head_names = HeadNames(pool="avgpool", drop=None, fc="fc")

    def __init__(self, cfg: BagNetConfig, *, num_classes: int = 1000, in_chans: int = 3, model_name: str = "bagnet"):
        super().__init__(cfg, num_classes=num_classes, in_chans=in_chans, model_name=model_name)
        self.receptive_field = cfg.receptive_field
        self.patch_stride = cfg.patch_stride

        self.conv1 = conv1x1(in_chans, cfg.stem_width)
        self.conv2 = nn.Conv2d(cfg.stem_width, cfg.stem_width, 3, bias=False)
        # The authors' released code gives the stem's batch norm a running-average momentum of 0.001 (PyTorch's
        # default is 0.1); kept, so that training updates the running statistics as theirs does.
        self.bn1 = nn.BatchNorm2d(cfg.stem_width, momentum=0.001)
        self.relu = nn.ReLU(inplace=True)
        self.feature_info = [FeatureInfo(cfg.stem_width, 1, "relu")]

        chs, reduction = cfg.stem_width, 1
        self.stage_names: list[str] = []
        for i, (planes, num_blocks, stride, k3) in enumerate(zip(cfg.planes, cfg.layers, cfg.strides, cfg.blocks_3x3)):
            blocks = []
            for j in range(num_blocks):
                block = BagNetBottleneck(chs, planes, stride=stride if j == 0 else 1, kernel_size=3 if j < k3 else 1)
                blocks.append(block)
                chs = block.out_chs
            reduction *= stride
            name = f"layer{i + 1}"
            self.add_module(name, nn.Sequential(*blocks))
            self.stage_names.append(name)
            self.feature_info.append(FeatureInfo(chs, reduction, name))
        # With unpadded convolutions one evidence unit needs one whole patch: the smallest image is q x q.
        self.min_input_size = self.receptive_field
        self.init_head(chs)
        self._init_weights()

    def _init_weights(self) -> None:
        if self.conv1.weight.is_meta:
            return  # built on the meta device for analysis: there are no values to initialise
        # The authors' initialisation: He-normal (fan-out) convolutions, unit batch norm, PyTorch's default FC.
        he_fan_out_init_(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        x = self.conv1(x)
        x = self.conv2(x)
        x = self.bn1(x)
        x = self.relu(x)
        for name in self.stage_names:
            x = getattr(self, name)(x)
        return x

    def patch_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The class evidence of every patch: (N, num_classes, h, w), one position per ``patch_stride`` pixels.

        Position (i, j) sees the input rows ``patch_stride * i`` to ``patch_stride * i + receptive_field - 1`` and
        the same columns. The classifier is linear, so the mean of this map over positions equals ``model(x)``.

        Raises:
            RuntimeError: If the network has no classifier (``num_classes`` = 0).
        """
        if not isinstance(self.fc, nn.Linear):
            raise RuntimeError(f"{self.model_name} has no classifier (num_classes=0): there is no class evidence")
        features = self.forward_features(x)
        return nn.functional.conv2d(features, self.fc.weight[:, :, None, None], self.fc.bias)


# ----------------------------------------------------------------------------------------------------------------
# The registered variants.

_BRENDEL_2019 = Paper(
    "Wieland Brendel, Matthias Bethge",
    "Approximating CNNs with Bag-of-local-Features models works surprisingly well on ImageNet",
    2019,
    "ICLR",
    "https://openreview.net/forum?id=SkfMWhAqYQ",
)

# name: (3x3 blocks per stage, what the paper says of its accuracy)
_ROWS = {
    "bagnet9": ((1, 1, 0, 0), "ImageNet top-5 accuracy plotted in Figure 1; the paper tabulates none"),
    "bagnet17": (
        (1, 1, 1, 0),
        "ImageNet top-5 accuracy at AlexNet's level (abstract; plotted in Figure 1); the paper tabulates none",
    ),
    "bagnet33": (
        (1, 1, 1, 1),
        "ImageNet top-5 accuracy 87.6% (abstract; plotted in Figure 1); the paper tabulates none",
    ),
}


def _bagnet_variant(name: str, blocks_3x3: tuple[int, ...], accuracy: str) -> Variant:
    cfg = BagNetConfig(blocks_3x3=blocks_3x3)
    q = cfg.receptive_field
    notes = f"patches of {q}x{q} pixels, {cfg.patch_stride} pixels apart; {accuracy}"
    return Variant(name, cfg, _BRENDEL_2019, IMAGENET_DEFAULTS, notes=notes)


register_family("bagnet", BagNet, [_bagnet_variant(name, *row) for name, row in _ROWS.items()])
