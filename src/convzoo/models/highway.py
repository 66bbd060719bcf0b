"""Convolutional highway networks: deep plain stacks made trainable by gated carry connections.

Srivastava, Greff and Schmidhuber. Training Very Deep Networks. NIPS 2015 (arXiv:1507.06228; the extended version of
"Highway Networks", arXiv:1505.00387).

Each highway layer computes y = H(x) T(x) + x (1 - T(x)) with a transform gate T whose bias starts negative, so a
fresh stack behaves nearly like the identity and trains by plain SGD at depths where a plain stack stalls
(section 2.2, Figure 1). A highway layer cannot change the width; as in the paper, a plain convolution does that at
the start of each stage.

The registered network is the authors' released 19-layer CIFAR model (``examples/highways/cifar10-19layers`` in
their Caffe repository, flukeskywalker/highway-networks), the network of Table 3: section 3.3.2 takes the networks
of Table 2 (this one is Highway B, "based on Fitnet B") and replaces their fully connected layer with a 1x1
convolution and global average pooling:

    dropout 0.2 on the input
    conv3x3 32 + ReLU, 4 highway layers 32, max-pool 2, dropout 0.2
    conv3x3 80 + ReLU, 5 highway layers 80, max-pool 2, dropout 0.2
    conv3x3 128 + ReLU, 5 highway layers 128
    conv1x1 100 + ReLU, global average pool, dropout 0.2, fully connected

3 plain + 14 highway + 1x1 + classifier = 19 layers; with 100 classes 2,265,928 parameters, the count the authors'
training log prints ("~2.3M" in Table 2). The other networks of Table 2 (Highway A, 11 layers, ~236K; Highway C, 32
layers of alternating 3x3 and 1x1 receptive fields, ~1.25M) are described only by depth and parameter count, which
does not determine them; they are not registered.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn as nn

from convzoo.layers.highway import HighwayConv2d
from convzoo.models.base import ConvNet, FeatureInfo
from convzoo.registry import CIFAR10_DEFAULTS, Paper, Reported, Variant, register_family


@dataclass(frozen=True)
class HighwayConfig:
    """A convolutional highway network.

    Attributes:
        widths: Channels of each stage; stages after the first begin with a 2x2 max-pool.
        layers: Highway layers per stage, after the stage's plain convolution.
        kernel_size: Receptive field of the plain and highway convolutions.
        gate_bias: Initial transform-gate bias of every highway layer (negative: start close to the identity).
        head_width: Filters of the 1x1 convolution before global average pooling (100 in the authors' model).
        input_drop_rate: Dropout on the input image.
        drop_rate: Dropout after each max-pool and before the classifier.
        gated: False replaces every highway layer by its transform H alone: the plain network of the same depth
            that the paper compares against (Figure 1).
    """

    widths: tuple[int, ...] = (32, 80, 128)
    layers: tuple[int, ...] = (4, 5, 5)
    kernel_size: int = 3
    gate_bias: float = -2.0
    head_width: int = 100
    input_drop_rate: float = 0.2
    drop_rate: float = 0.2
    gated: bool = True

    def validate(self, name: str) -> None:
        """Raise a ValueError naming ``name`` if this configuration cannot be built."""

        def fail(reason: str) -> None:
            raise ValueError(f"{name}: {reason}")

        if not self.widths or len(self.widths) != len(self.layers):
            fail(f"widths and layers need one entry per stage; got {len(self.widths)} and {len(self.layers)}")
        if any(w < 1 for w in self.widths) or self.head_width < 1:
            fail(f"widths and head_width must be positive; got {self.widths} and {self.head_width}")
        if any(n < 0 for n in self.layers):
            fail(f"a stage cannot have a negative number of highway layers; got layers={self.layers}")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            fail(f"kernel_size must be odd so that a highway layer keeps the map size; got {self.kernel_size}")
        if not math.isfinite(self.gate_bias):
            fail(f"gate_bias must be finite; got {self.gate_bias}")
        if not 0.0 <= self.input_drop_rate < 1.0 or not 0.0 <= self.drop_rate < 1.0:
            fail("input_drop_rate and drop_rate must lie in [0, 1)")


class PlainConv2d(nn.Sequential):
    """Convolution and ReLU: a plain layer, as used to change the width or as a highway layer's ungated twin."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int) -> None:
        super().__init__(
            OrderedDict(
                conv=nn.Conv2d(in_chs, out_chs, kernel_size, padding=kernel_size // 2), act=nn.ReLU(inplace=True)
            )
        )


class HighwayNet(ConvNet):
    """A convolutional highway network built from a `HighwayConfig`; the constructor takes `ConvNet`'s arguments."""

    def __init__(
        self, cfg: HighwayConfig, *, num_classes: int = 10, in_chans: int = 3, model_name: str = "highway"
    ) -> None:
        super().__init__(cfg, num_classes=num_classes, in_chans=in_chans, model_name=model_name)
        self.input_drop = _dropout(cfg.input_drop_rate)
        self.feature_info: list[FeatureInfo] = []
        self.stage_names: list[str] = []
        chs, reduction = in_chans, 1
        for i, (width, num_layers) in enumerate(zip(cfg.widths, cfg.layers)):
            stage: list[tuple[str, nn.Module]] = []
            if i:
                stage += [("pool", nn.MaxPool2d(2, stride=2)), ("drop", _dropout(cfg.drop_rate))]
                reduction *= 2
            stage.append(("plain", PlainConv2d(chs, width, cfg.kernel_size)))
            for j in range(num_layers):
                layer: nn.Module = (
                    HighwayConv2d(width, kernel_size=cfg.kernel_size, gate_bias=cfg.gate_bias)
                    if cfg.gated
                    else PlainConv2d(width, width, cfg.kernel_size)
                )
                stage.append((f"highway{j + 1}" if cfg.gated else f"layer{j + 1}", layer))
            name = f"stage{i + 1}"
            self.add_module(name, nn.Sequential(OrderedDict(stage)))
            self.stage_names.append(name)
            self.feature_info.append(FeatureInfo(width, reduction, name))
            chs = width
        # Network-in-network style head (Lin et al.): a 1x1 convolution, then global average pooling.
        self.head_conv = nn.Conv2d(chs, cfg.head_width, 1)
        self.head_act = nn.ReLU(inplace=True)
        self.feature_info.append(FeatureInfo(cfg.head_width, reduction, "head_act"))
        self.min_input_size = reduction
        self.init_head(cfg.head_width, cfg.drop_rate)
        self._init_weights()

    def _init_weights(self) -> None:
        if self.head_conv.weight.is_meta:
            return  # built on the meta device for analysis: there are no values to initialise
        # The authors' fillers: Caffe's "xavier" (uniform, variance 1 / fan-in) and zero biases for convolutions, the
        # gate biases at gate_bias, a Gaussian of std 0.05 for the classifier. Their first convolution asks for a
        # Gaussian with "value: 0.05", a field that filler ignores (it then draws std 1); it gets xavier here too.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, nonlinearity="linear")
                nn.init.zeros_(m.bias)
        for m in self.highway_layers():
            m.reset_parameters()
        if isinstance(self.fc, nn.Linear):
            self.init_classifier(self.fc)

    def init_classifier(self, fc: nn.Linear) -> None:
        """The authors' classifier filler: a Gaussian of std 0.05, zero bias."""
        nn.init.normal_(fc.weight, std=0.05)
        nn.init.zeros_(fc.bias)

    def highway_layers(self) -> list[HighwayConv2d]:
        """Every highway layer, from the input side to the output side."""
        return [m for m in self.modules() if isinstance(m, HighwayConv2d)]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        x = self.input_drop(x)
        for name in self.stage_names:
            x = getattr(self, name)(x)
        x = self.head_conv(x)
        return self.head_act(x)


def _dropout(rate: float) -> nn.Module:
    return nn.Dropout(rate) if rate else nn.Identity()


# ----------------------------------------------------------------------------------------------------------------
# The registered variant.

_SRIVASTAVA_2015 = Paper(
    "Rupesh Kumar Srivastava, Klaus Greff, Juergen Schmidhuber",
    "Training Very Deep Networks",
    2015,
    "NIPS",
    "https://arxiv.org/abs/1507.06228",
)

_VARIANTS = [
    Variant(
        "highway_cifar_19",
        HighwayConfig(),
        _SRIVASTAVA_2015,
        CIFAR10_DEFAULTS,
        (
            Reported("CIFAR-10", "top-1 accuracy", 92.40, "Table 3", "best of 5 runs (mean 92.31 +- 0.12)"),
            Reported("CIFAR-100", "top-1 accuracy", 67.76, "Table 3", "best of 5 runs (mean 67.61 +- 0.15)"),
        ),
        "The authors' released 19-layer model: 3 plain and 14 highway 3x3 layers of 32/80/128 channels, gate bias -2, "
        "a 1x1 convolution of 100 filters, global average pooling and a classifier (Table 3: global contrast "
        "normalisation, mirroring and small translations). Section 3.3.2 derives it from the networks of Table 2 by "
        "replacing their fully connected layer with the 1x1 convolution and pooling; Highway B there (19 layers, "
        "~2.3M parameters) reached 92.46% on CIFAR-10 (mean 92.28 +- 0.16)",
    ),
]

register_family("highway", HighwayNet, _VARIANTS)
