"""Network in Network: mlpconv layers and global average pooling in place of fully connected layers.

Lin, Chen and Yan. Network In Network. ICLR 2014. An mlpconv layer slides a small multilayer perceptron over the
input: a convolution followed by 1x1 convolutions, each with a ReLU (section 3.1, "cascaded cross channel parametric
pooling"). The last mlpconv layer outputs one map per class, and the classifier is the global average of each map
(section 3.2), with no fully connected layer to overfit.

``nin`` is the CIFAR-10 network of the authors' released model (cuda-convnet definition ``NIN/cifar-10_def``):

- mlpconv 1: 192 5x5 filters (padding 2), then 160 and 96 1x1 filters; 3x3/2 max-pooling; dropout 0.5;
- mlpconv 2: 192 5x5 filters, then 192 and 192 1x1 filters; 3x3/2 max-pooling; dropout 0.5;
- mlpconv 3: 192 3x3 filters (padding 1), then 192 and ``num_classes`` 1x1 filters;
- the global average of each class map (8x8 on a 32x32 image).

Pooling rounds the map size up, as cuda-convnet does: 32x32 images give 16x16 and 8x8 maps. Weights start from
N(0, 0.05) and biases from 0, as in the released definition. The network holds 966,986 parameters for 10 classes.
The paper preprocesses CIFAR with global contrast normalisation and ZCA whitening.

The last 1x1 convolution, with its ReLU and the global average, is the classifier: ``get_classifier()`` returns it,
``reset_classifier(n)`` replaces it by one with ``n`` output maps, and ``reset_classifier(0)`` leaves the global
average of the 192 maps before it (``num_features``). ``forward_features`` ends with those 192 maps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn

from convzoo.layers.trunk import smallest_input, stage_taps
from convzoo.models.base import ConvNet
from convzoo.registry import CIFAR10_DEFAULTS, Paper, Reported, Variant, cifar_error, register_family

MlpConvSpec = tuple[int, tuple[int, ...]]


class MlpConv(nn.Sequential):
    """A convolution then 1x1 convolutions, each followed by a ReLU: a multilayer perceptron slid over the input.

    Args:
        in_chs: Input channels.
        kernel_size: Side of the first convolution's kernels (odd; padded to keep the map size).
        widths: Filters of the first convolution, then of each 1x1 convolution.
    """

    def __init__(self, in_chs: int, kernel_size: int, widths: Sequence[int]) -> None:
        layers: list[nn.Module] = []
        for i, width in enumerate(widths):
            k = kernel_size if i == 0 else 1
            layers += [nn.Conv2d(in_chs, width, k, padding=k // 2), nn.ReLU(inplace=True)]
            in_chs = width
        super().__init__(*layers)
        self.out_channels = in_chs


@dataclass(frozen=True)
class NiNConfig:
    """A Network in Network.

    Attributes:
        blocks: Each mlpconv layer as (kernel size, widths). The last layer's final 1x1 convolution, one map per
            class, is not listed: it is the classifier and takes ``num_classes`` filters.
        drop_rate: Dropout after each pooling layer between mlpconv layers.
    """

    blocks: tuple[MlpConvSpec, ...] = ((5, (192, 160, 96)), (5, (192, 192, 192)), (3, (192, 192)))
    drop_rate: float = 0.5

    def validate(self, name: str) -> None:
        """Raise a ValueError naming ``name`` if this configuration cannot be built."""
        if not self.blocks:
            raise ValueError(f"{name}: blocks holds no mlpconv layer")
        for i, (kernel, widths) in enumerate(self.blocks):
            if kernel < 1 or kernel % 2 == 0 or not widths or min(widths) < 1:
                raise ValueError(
                    f"{name}: mlpconv layer {i + 1} needs an odd kernel size and one or more positive widths; "
                    f"got ({kernel}, {widths})"
                )
        if not 0.0 <= self.drop_rate < 1.0:
            raise ValueError(f"{name}: drop_rate must lie in [0, 1); got {self.drop_rate}")


class NiN(ConvNet):
    """A Network in Network built from a `NiNConfig`.

    ``feature_info`` taps each mlpconv layer (reductions 1, 2 and 4); the last tap is what ``forward_features``
    returns, the maps the class-map convolution reads.

    Args:
        cfg: The architecture.
        num_classes: Class maps of the last 1x1 convolution; 0 leaves it out.
        in_chans: Input image channels.
        model_name: Name used in error messages.
    """

    def __init__(self, cfg: NiNConfig, *, num_classes: int = 10, in_chans: int = 3, model_name: str = "nin") -> None:
        super().__init__(cfg, num_classes=num_classes, in_chans=in_chans, model_name=model_name)

        layers: list[nn.Module] = []
        chs = in_chans
        for i, (kernel, widths) in enumerate(cfg.blocks):
            if i:
                # cuda-convnet's pooling rounds up: 32 -> 16 -> 8 on CIFAR, where rounding down would give 15 and 7.
                layers += [nn.MaxPool2d(3, 2, ceil_mode=True), nn.Dropout(cfg.drop_rate)]
            block = MlpConv(chs, kernel, widths)
            layers.append(block)
            chs = block.out_channels
        self.features = nn.Sequential(*layers)
        self.num_features = chs
        self.feature_info = stage_taps(self.features, in_chans)
        self.min_input_size = smallest_input(self.features)
        self.final_conv: nn.Module = nn.Conv2d(chs, num_classes, 1) if num_classes else nn.Identity()
        self.head_act = nn.ReLU(inplace=True)
        self._init_weights()

    @staticmethod
    def _init_conv(conv: nn.Conv2d) -> None:
        nn.init.normal_(conv.weight, 0.0, 0.05)
        nn.init.zeros_(conv.bias)

    def _init_weights(self) -> None:
        if self.features[0][0].weight.is_meta:
            return  # built on the meta device for analysis: there are no values to initialise
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                self._init_conv(m)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.num_classes and not pre_logits:
            # One map per class, rectified as in the released model, whose average over the image is the logit.
            x = self.final_conv(x)
            x = self.head_act(x)
        return x.mean((2, 3))

    def class_maps(self, x: torch.Tensor) -> torch.Tensor:
        """The per-class confidence maps whose averages are the logits (section 3.2), shape (N, classes, H, W)."""
        if not self.num_classes:
            raise RuntimeError(f"{self.model_name} has no classifier; call reset_classifier(n) first")
        x = self.forward_features(x)
        x = self.final_conv(x)
        return self.head_act(x)

    def get_classifier(self) -> nn.Module:
        return self.final_conv

    def reset_classifier(self, num_classes: int) -> None:
        self.check_num_classes(num_classes)
        self.num_classes = num_classes
        like = self.features[0][0].weight  # the new head lives where the network lives, in its precision
        if not num_classes:
            self.final_conv = nn.Identity()
            return
        self.final_conv = nn.Conv2d(self.num_features, num_classes, 1, device=like.device, dtype=like.dtype)
        if not like.is_meta:
            self._init_conv(self.final_conv)


_LIN_2014 = Paper(
    "Min Lin, Qiang Chen, Shuicheng Yan", "Network In Network", 2014, "ICLR", "https://arxiv.org/abs/1312.4400"
)
register_family(
    "nin",
    NiN,
    [
        Variant(
            "nin",
            NiNConfig(),
            _LIN_2014,
            CIFAR10_DEFAULTS,
            cifar_error(10.41, None, "Table 1", "with dropout, without data augmentation")
            + (
                Reported(
                    "CIFAR-10", "top-1 error", 8.81, "Table 1", "with dropout and translation and flipping augmentation"
                ),
                Reported(
                    "CIFAR-100", "top-1 error", 35.68, "Table 2", "num_classes=100, with dropout, no augmentation"
                ),
            ),
            "the CIFAR-10 network of the authors' released model: three mlpconv layers (192-160-96, 192-192-192, "
            "192-192-classes), global average pooling; 966,986 parameters. Inputs are globally contrast-normalised "
            "and ZCA-whitened in the paper",
        )
    ],
)
