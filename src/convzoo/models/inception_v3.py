"""Inception v3.

Szegedy, Vanhoucke, Ioffe, Shlens and Wojna. Rethinking the Inception Architecture for Computer Vision. CVPR 2016.

The network of the paper's section 6 and Table 1, at 299x299 input: a stem of unpadded convolutions, three
35x35 modules in which the 5x5 convolution is factorised into two 3x3 (Figure 5), an efficient grid reduction to
17x17 (Figure 10: stride-2 convolutions beside a stride-2 pool), four 17x17 modules in which a 7x7 is factorised
into 1x7 and 7x1 convolutions (Figure 6), a second grid reduction to 8x8 and two 8x8 modules with expanded filter
banks (Figure 7), all convolutions batch-normalised. One batch-normalised auxiliary classifier reads the last 17x17
layer (section 4 and Figure 8: the paper finds the lower one of GoogLeNet useless and treats this one as a
regulariser).

The paper defers the filter counts to a model file it does not print; the layers here are those of the network
Google released in TensorFlow-Slim, as torchvision ships it, module for module, so torchvision's state_dicts (and its
ImageNet checkpoint, converted from TensorFlow) load unchanged and give the same outputs. That network differs from
the paper's text in two visible ways: the 35x35 modules keep a 5x5 branch next to the factorised double-3x3 one
(pytorch/vision issue 798), and the stem ends with a 1x1 and a 3x3 convolution and a max-pool where Table 1 lists
three 3x3 convolutions. The auxiliary head normalises its convolutions, the 768-unit 5x5 one included, but not its
final classifier.

The auxiliary loss weighs 0.4, the weight of the authors' TensorFlow-Slim training script
(tensorflow/models, research/slim/train_image_classifier.py); the paper states none. In training mode the forward
returns `AuxOutputs`; in evaluation mode the head is not run and the forward returns the main logits.

The trunk accepts inputs from 75x75. The auxiliary head is laid out for the 17x17 grid of a 299x299 input (its 5x5/3
average pool and unpadded 5x5 convolution need it): for smaller inputs it zero-pads its grid to 17x17, where
torchvision's head fails, and at 299x299 and above it is torchvision's.

``transform_input=True`` maps ImageNet-normalised images to the [-1, 1] range the TensorFlow-trained weights expect,
as torchvision does when it loads them; the default is False, as in torchvision without pretrained weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from convzoo.layers.inception import AuxHeadNet, inception_conv, pad_to_size
from convzoo.layers.trunk import smallest_input
from convzoo.models.base import FeatureInfo
from convzoo.registry import IMAGENET_DEFAULTS, Paper, Variant, imagenet_error, register_family

# A 299x299 input leaves a 17x17 grid at the auxiliary head.
AUX_GRID = 17


class InceptionA(nn.Module):
    """35x35 module (Figure 5): 1x1; 1x1 then 5x5; 1x1 then two 3x3 (the factorised 5x5); 3x3 average pool then 1x1."""

    def __init__(self, in_chs: int, *, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = inception_conv(in_chs, 64, 1)
        self.branch5x5_1 = inception_conv(in_chs, 48, 1)
        self.branch5x5_2 = inception_conv(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = inception_conv(in_chs, 64, 1)
        self.branch3x3dbl_2 = inception_conv(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = inception_conv(96, 96, 3, padding=1)
        self.branch_pool = inception_conv(in_chs, pool_features, 1)
        self.out_chs = 64 + 64 + 96 + pool_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch1x1 = self.branch1x1(x)
        branch5x5 = self.branch5x5_1(x)
        branch5x5 = self.branch5x5_2(branch5x5)
        branch3x3dbl = self.branch3x3dbl_1(x)
        branch3x3dbl = self.branch3x3dbl_2(branch3x3dbl)
        branch3x3dbl = self.branch3x3dbl_3(branch3x3dbl)
        branch_pool = F.avg_pool2d(x, 3, stride=1, padding=1)
        branch_pool = self.branch_pool(branch_pool)
        return torch.cat([branch1x1, branch5x5, branch3x3dbl, branch_pool], 1)


class InceptionB(nn.Module):
    """Grid reduction 35x35 -> 17x17 (Figure 10): stride-2 3x3 and double-3x3 branches beside a stride-2 max-pool.

    Every branch ends in an unpadded 3x3 window at stride 2, which ``kernel_size`` and ``stride`` state for the
    trunk's size arithmetic (`convzoo.layers.trunk`).
    """

    kernel_size = 3
    stride = 2

    def __init__(self, in_chs: int) -> None:
        super().__init__()
        self.branch3x3 = inception_conv(in_chs, 384, 3, stride=2, padding=0)
        self.branch3x3dbl_1 = inception_conv(in_chs, 64, 1)
        self.branch3x3dbl_2 = inception_conv(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = inception_conv(96, 96, 3, stride=2, padding=0)
        self.out_chs = 384 + 96 + in_chs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch3x3 = self.branch3x3(x)
        branch3x3dbl = self.branch3x3dbl_1(x)
        branch3x3dbl = self.branch3x3dbl_2(branch3x3dbl)
        branch3x3dbl = self.branch3x3dbl_3(branch3x3dbl)
        branch_pool = F.max_pool2d(x, 3, stride=2)
        return torch.cat([branch3x3, branch3x3dbl, branch_pool], 1)


class InceptionC(nn.Module):
    """17x17 module (Figure 6, n = 7): each 7x7 convolution factorised into 1x7 and 7x1.

    Args:
        in_chs: Input channels.
        channels_7x7: Width of the factorised branches before their last convolution.
    """

    def __init__(self, in_chs: int, *, channels_7x7: int) -> None:
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = inception_conv(in_chs, 192, 1)
        self.branch7x7_1 = inception_conv(in_chs, c7, 1)
        self.branch7x7_2 = inception_conv(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = inception_conv(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = inception_conv(in_chs, c7, 1)
        self.branch7x7dbl_2 = inception_conv(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = inception_conv(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = inception_conv(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = inception_conv(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = inception_conv(in_chs, 192, 1)
        self.out_chs = 4 * 192

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch1x1 = self.branch1x1(x)
        branch7x7 = self.branch7x7_1(x)
        branch7x7 = self.branch7x7_2(branch7x7)
        branch7x7 = self.branch7x7_3(branch7x7)
        branch7x7dbl = self.branch7x7dbl_1(x)
        branch7x7dbl = self.branch7x7dbl_2(branch7x7dbl)
        branch7x7dbl = self.branch7x7dbl_3(branch7x7dbl)
        branch7x7dbl = self.branch7x7dbl_4(branch7x7dbl)
        branch7x7dbl = self.branch7x7dbl_5(branch7x7dbl)
        branch_pool = F.avg_pool2d(x, 3, stride=1, padding=1)
        branch_pool = self.branch_pool(branch_pool)
        return torch.cat([branch1x1, branch7x7, branch7x7dbl, branch_pool], 1)


class InceptionD(nn.Module):
    """Grid reduction 17x17 -> 8x8: 1x1 then stride-2 3x3; 1x1, 1x7, 7x1 then stride-2 3x3; a stride-2 max-pool.

    Every branch ends in an unpadded 3x3 window at stride 2, stated as for `InceptionB`.
    """

    kernel_size = 3
    stride = 2

    def __init__(self, in_chs: int) -> None:
        super().__init__()
        self.branch3x3_1 = inception_conv(in_chs, 192, 1)
        self.branch3x3_2 = inception_conv(192, 320, 3, stride=2, padding=0)
        self.branch7x7x3_1 = inception_conv(in_chs, 192, 1)
        self.branch7x7x3_2 = inception_conv(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = inception_conv(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = inception_conv(192, 192, 3, stride=2, padding=0)
        self.out_chs = 320 + 192 + in_chs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch3x3 = self.branch3x3_1(x)
        branch3x3 = self.branch3x3_2(branch3x3)
        branch7x7x3 = self.branch7x7x3_1(x)
        branch7x7x3 = self.branch7x7x3_2(branch7x7x3)
        branch7x7x3 = self.branch7x7x3_3(branch7x7x3)
        branch7x7x3 = self.branch7x7x3_4(branch7x7x3)
        branch_pool = F.max_pool2d(x, 3, stride=2)
        return torch.cat([branch3x3, branch7x7x3, branch_pool], 1)


class InceptionE(nn.Module):
    """8x8 module with expanded filter banks (Figure 7): the 3x3 branches split into parallel 1x3 and 3x1."""

    def __init__(self, in_chs: int) -> None:
        super().__init__()
        self.branch1x1 = inception_conv(in_chs, 320, 1)
        self.branch3x3_1 = inception_conv(in_chs, 384, 1)
        self.branch3x3_2a = inception_conv(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = inception_conv(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = inception_conv(in_chs, 448, 1)
        self.branch3x3dbl_2 = inception_conv(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = inception_conv(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = inception_conv(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = inception_conv(in_chs, 192, 1)
        self.out_chs = 320 + 2 * 384 + 2 * 384 + 192

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch1x1 = self.branch1x1(x)
        branch3x3 = self.branch3x3_1(x)
        branch3x3 = torch.cat([self.branch3x3_2a(branch3x3), self.branch3x3_2b(branch3x3)], 1)
        branch3x3dbl = self.branch3x3dbl_1(x)
        branch3x3dbl = self.branch3x3dbl_2(branch3x3dbl)
        branch3x3dbl = torch.cat([self.branch3x3dbl_3a(branch3x3dbl), self.branch3x3dbl_3b(branch3x3dbl)], 1)
        branch_pool = F.avg_pool2d(x, 3, stride=1, padding=1)
        branch_pool = self.branch_pool(branch_pool)
        return torch.cat([branch1x1, branch3x3, branch3x3dbl, branch_pool], 1)


class InceptionAux(nn.Module):
    """The auxiliary classifier on the last 17x17 layer (Figure 8): 5x5/3 average pool, 1x1 convolution to 128,
    unpadded 5x5 convolution to 768 (a fully connected layer over the 5x5 grid), global average, linear classifier.

    Args:
        in_chs: Channels of the 17x17 layer it reads.
        num_classes: Classifier outputs.
    """

    def __init__(self, in_chs: int, num_classes: int) -> None:
        super().__init__()
        self.conv0 = inception_conv(in_chs, 128, 1)
        self.conv1 = inception_conv(128, 768, 5, padding=0)
        self.fc = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = pad_to_size(x, AUX_GRID)
        x = F.avg_pool2d(x, 5, stride=3)
        x = self.conv0(x)
        x = self.conv1(x)
        x = F.adaptive_avg_pool2d(x, 1)
        x = torch.flatten(x, 1)
        return self.fc(x)


# The stem as released: name, output channels (None for a max-pool), kernel, stride, padding. No padding but in
# Conv2d_2b_3x3: 299x299 -> 149, 147, 147, 73, 73, 71, 35.
STEM: tuple[tuple[str, int | None, int, int, int], ...] = (
    ("Conv2d_1a_3x3", 32, 3, 2, 0),
    ("Conv2d_2a_3x3", 32, 3, 1, 0),
    ("Conv2d_2b_3x3", 64, 3, 1, 1),
    ("maxpool1", None, 3, 2, 0),
    ("Conv2d_3b_1x1", 80, 1, 1, 0),
    ("Conv2d_4a_3x3", 192, 3, 1, 0),
    ("maxpool2", None, 3, 2, 0),
)
# The Inception modules: name, block type, keyword arguments. Mixed_6a and Mixed_7a halve the grid.
MIXED: tuple[tuple[str, type[nn.Module], dict[str, int]], ...] = (
    ("Mixed_5b", InceptionA, {"pool_features": 32}),
    ("Mixed_5c", InceptionA, {"pool_features": 64}),
    ("Mixed_5d", InceptionA, {"pool_features": 64}),
    ("Mixed_6a", InceptionB, {}),
    ("Mixed_6b", InceptionC, {"channels_7x7": 128}),
    ("Mixed_6c", InceptionC, {"channels_7x7": 160}),
    ("Mixed_6d", InceptionC, {"channels_7x7": 160}),
    ("Mixed_6e", InceptionC, {"channels_7x7": 192}),
    ("Mixed_7a", InceptionD, {}),
    ("Mixed_7b", InceptionE, {}),
    ("Mixed_7c", InceptionE, {}),
)
AUX_TAP = "Mixed_6e"
# The last layer at each grid size, and its cumulative stride.
TAPS = {"Conv2d_2b_3x3": 2, "Conv2d_4a_3x3": 4, "Mixed_5d": 8, "Mixed_6e": 16, "Mixed_7c": 32}


@dataclass(frozen=True)
class InceptionV3Config:
    """Settings of Inception v3.

    Attributes:
        aux_logits: Build the auxiliary classifier.
        aux_weight: Weight of the auxiliary loss in the training objective (0.4, TensorFlow-Slim's).
        transform_input: Map ImageNet-normalised input to [-1, 1] first (for torchvision's ImageNet checkpoint).
        drop_rate: Dropout before the classifier (torchvision's 0.5).
    """

    aux_logits: bool = True
    aux_weight: float = 0.4
    transform_input: bool = False
    drop_rate: float = 0.5

    def validate(self, name: str) -> None:
        """Raise a ValueError naming ``name`` if this configuration cannot be built."""
        if not 0.0 <= self.drop_rate < 1.0:
            raise ValueError(f"{name}: drop_rate must lie in [0, 1); got {self.drop_rate}")
        if self.aux_weight < 0:
            raise ValueError(f"{name}: aux_weight must be non-negative; got {self.aux_weight}")


class InceptionV3(AuxHeadNet):
    """Inception v3 with torchvision's module names (``Conv2d_1a_3x3`` .. ``Mixed_7c``, ``AuxLogits``, ``fc``).

    Args:
        cfg: The settings.
        num_classes: Classifier outputs; 0 leaves out the classifier and the auxiliary classifier.
        in_chans: Input image channels.
        model_name: Name used in error messages.
    """

    aux_taps = {AUX_TAP: "AuxLogits"}
    aux_classifier = "fc"

    def __init__(
        self, cfg: InceptionV3Config, *, num_classes: int = 1000, in_chans: int = 3, model_name: str = "inception_v3"
    ) -> None:
        super().__init__(cfg, num_classes=num_classes, in_chans=in_chans, model_name=model_name)
        self.feature_info: list[FeatureInfo] = []
        chs = in_chans
        for name, out_chs, kernel, stride, padding in STEM:
            if out_chs is None:
                module: nn.Module = nn.MaxPool2d(kernel, stride=stride)
            else:
                module = inception_conv(chs, out_chs, kernel, stride=stride, padding=padding)
                chs = out_chs
            self._add(name, module, chs)
        for name, block_type, kwargs in MIXED:
            block = block_type(chs, **kwargs)
            chs = block.out_chs
            self._add(name, block, chs)
        # The unpadded stem and the two unpadded grid reductions need 75x75 (3x3 at Mixed_7a's input), as
        # torchvision states for its weights; the auxiliary head pads smaller grids, so training needs no more.
        self.min_input_size = smallest_input([getattr(self, name) for name in self.layer_names])

        self._build_aux_heads()
        self.init_head(chs, cfg.drop_rate)
        self._init_weights()

    def _add(self, name: str, module: nn.Module, chs: int) -> None:
        self.add_layer(name, module)
        if name in TAPS:
            self.feature_info.append(FeatureInfo(chs, TAPS[name], name))

    def _make_aux_head(self, in_chs: int) -> InceptionAux:
        return InceptionAux(in_chs, self.num_classes)

    def init_classifier(self, fc: nn.Linear) -> None:
        nn.init.trunc_normal_(fc.weight, mean=0.0, std=0.1, a=-2, b=2)

    def _init_weights(self, root: nn.Module | None = None) -> None:
        root = self if root is None else root
        if self.Conv2d_1a_3x3.conv.weight.is_meta:
            return  # built on the meta device for analysis: there are no values to initialise
        # torchvision's: truncated normal, std 0.1, but 0.01 for the auxiliary 5x5 convolution and 0.001 for the
        # auxiliary classifier; linear biases keep PyTorch's default.
        aux = self.AuxLogits
        small = {} if aux is None else {aux.conv1.conv: 0.01, aux.fc: 0.001}
        for m in root.modules():
            if isinstance(m, nn.Linear) and m is self.fc:
                self.init_classifier(m)
            elif isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, mean=0.0, std=small.get(m, 0.1), a=-2, b=2)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)


_SZEGEDY_2016 = Paper(
    "Christian Szegedy, Vincent Vanhoucke, Sergey Ioffe, Jonathon Shlens, Zbigniew Wojna",
    "Rethinking the Inception Architecture for Computer Vision",
    2016,
    "CVPR",
    "https://arxiv.org/abs/1512.00567",
)
register_family(
    "inception_v3",
    InceptionV3,
    [
        Variant(
            "inception_v3",
            InceptionV3Config(),
            _SZEGEDY_2016,
            {**IMAGENET_DEFAULTS, "input_size": (3, 299, 299)},
            # Table 3, last row ("Inception-v2 BN-auxiliary", which the paper calls Inception-v3).
            imagenet_error(
                21.2, 5.6, "Table 3", "single 299x299 crop; the 48,238 non-blacklisted ILSVRC 2012 validation images"
            ),
            "the released network, as torchvision ships it: a 5x5 branch beside the factorised double 3x3 in the "
            "35x35 modules, and a 1x1-3x3-pool end of the stem, where the paper's Table 1 shows three 3x3 "
            "convolutions. Auxiliary loss weight 0.4 (TensorFlow-Slim's training script; the paper states none). "
            "Pass transform_input=True to feed ImageNet-normalised images to torchvision's ImageNet checkpoint",
        )
    ],
)
