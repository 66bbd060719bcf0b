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

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from convzoo.layers.inception import ConvNormAct, adapt_aux_state, imagenet_to_unit_range, pad_to_size
from convzoo.models.base import AuxOutputs, ConvNet, FeatureInfo
from convzoo.registry import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ModelCard,
    Paper,
    check_overrides,
    imagenet_error,
    register_model,
)

# A 299x299 input leaves a 17x17 grid at the auxiliary head.
AUX_GRID = 17


class InceptionA(nn.Module):
    """35x35 module (Figure 5): 1x1; 1x1 then 5x5; 1x1 then two 3x3 (the factorised 5x5); 3x3 average pool then 1x1."""

    def __init__(self, in_chs: int, *, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = ConvNormAct(in_chs, 64, 1)
        self.branch5x5_1 = ConvNormAct(in_chs, 48, 1)
        self.branch5x5_2 = ConvNormAct(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = ConvNormAct(in_chs, 64, 1)
        self.branch3x3dbl_2 = ConvNormAct(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvNormAct(96, 96, 3, padding=1)
        self.branch_pool = ConvNormAct(in_chs, pool_features, 1)
        self.out_chs = 64 + 64 + 96 + pool_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch1x1 = self.branch1x1(x)
        branch5x5 = self.branch5x5_2(self.branch5x5_1(x))
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        branch_pool = self.branch_pool(F.avg_pool2d(x, 3, stride=1, padding=1))
        return torch.cat([branch1x1, branch5x5, branch3x3dbl, branch_pool], 1)


class InceptionB(nn.Module):
    """Grid reduction 35x35 -> 17x17 (Figure 10): stride-2 3x3 and double-3x3 branches beside a stride-2 max-pool."""

    def __init__(self, in_chs: int) -> None:
        super().__init__()
        self.branch3x3 = ConvNormAct(in_chs, 384, 3, stride=2)
        self.branch3x3dbl_1 = ConvNormAct(in_chs, 64, 1)
        self.branch3x3dbl_2 = ConvNormAct(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvNormAct(96, 96, 3, stride=2)
        self.out_chs = 384 + 96 + in_chs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch3x3 = self.branch3x3(x)
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
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
        self.branch1x1 = ConvNormAct(in_chs, 192, 1)
        self.branch7x7_1 = ConvNormAct(in_chs, c7, 1)
        self.branch7x7_2 = ConvNormAct(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = ConvNormAct(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = ConvNormAct(in_chs, c7, 1)
        self.branch7x7dbl_2 = ConvNormAct(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = ConvNormAct(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = ConvNormAct(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = ConvNormAct(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = ConvNormAct(in_chs, 192, 1)
        self.out_chs = 4 * 192

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch1x1 = self.branch1x1(x)
        branch7x7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        branch7x7dbl = self.branch7x7dbl_2(self.branch7x7dbl_1(x))
        branch7x7dbl = self.branch7x7dbl_5(self.branch7x7dbl_4(self.branch7x7dbl_3(branch7x7dbl)))
        branch_pool = self.branch_pool(F.avg_pool2d(x, 3, stride=1, padding=1))
        return torch.cat([branch1x1, branch7x7, branch7x7dbl, branch_pool], 1)


class InceptionD(nn.Module):
    """Grid reduction 17x17 -> 8x8: 1x1 then stride-2 3x3; 1x1, 1x7, 7x1 then stride-2 3x3; a stride-2 max-pool."""

    def __init__(self, in_chs: int) -> None:
        super().__init__()
        self.branch3x3_1 = ConvNormAct(in_chs, 192, 1)
        self.branch3x3_2 = ConvNormAct(192, 320, 3, stride=2)
        self.branch7x7x3_1 = ConvNormAct(in_chs, 192, 1)
        self.branch7x7x3_2 = ConvNormAct(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = ConvNormAct(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = ConvNormAct(192, 192, 3, stride=2)
        self.out_chs = 320 + 192 + in_chs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch3x3 = self.branch3x3_2(self.branch3x3_1(x))
        branch7x7x3 = self.branch7x7x3_2(self.branch7x7x3_1(x))
        branch7x7x3 = self.branch7x7x3_4(self.branch7x7x3_3(branch7x7x3))
        branch_pool = F.max_pool2d(x, 3, stride=2)
        return torch.cat([branch3x3, branch7x7x3, branch_pool], 1)


class InceptionE(nn.Module):
    """8x8 module with expanded filter banks (Figure 7): the 3x3 branches split into parallel 1x3 and 3x1."""

    def __init__(self, in_chs: int) -> None:
        super().__init__()
        self.branch1x1 = ConvNormAct(in_chs, 320, 1)
        self.branch3x3_1 = ConvNormAct(in_chs, 384, 1)
        self.branch3x3_2a = ConvNormAct(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = ConvNormAct(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = ConvNormAct(in_chs, 448, 1)
        self.branch3x3dbl_2 = ConvNormAct(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = ConvNormAct(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = ConvNormAct(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = ConvNormAct(in_chs, 192, 1)
        self.out_chs = 320 + 2 * 384 + 2 * 384 + 192

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch1x1 = self.branch1x1(x)
        branch3x3 = self.branch3x3_1(x)
        branch3x3 = torch.cat([self.branch3x3_2a(branch3x3), self.branch3x3_2b(branch3x3)], 1)
        branch3x3dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        branch3x3dbl = torch.cat([self.branch3x3dbl_3a(branch3x3dbl), self.branch3x3dbl_3b(branch3x3dbl)], 1)
        branch_pool = self.branch_pool(F.avg_pool2d(x, 3, stride=1, padding=1))
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
        self.conv0 = ConvNormAct(in_chs, 128, 1)
        self.conv1 = ConvNormAct(128, 768, 5)
        self.fc = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.avg_pool2d(pad_to_size(x, AUX_GRID), 5, stride=3)
        x = self.conv1(self.conv0(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


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


class InceptionV3(ConvNet):
    """Inception v3 with torchvision's module names (``Conv2d_1a_3x3`` .. ``Mixed_7c``, ``AuxLogits``, ``fc``).

    Args:
        cfg: The settings.
        num_classes: Classifier outputs; 0 leaves out the classifier and the auxiliary classifier.
        in_chans: Input image channels.
        model_name: Name used in error messages.
    """

    # The unpadded stem and the two unpadded stride-2 grid reductions need 75x75 (3x3 at Mixed_7a's input); the
    # auxiliary head pads smaller grids, so training needs no more.
    min_input_size = 75

    def __init__(
        self, cfg: InceptionV3Config, *, num_classes: int = 1000, in_chans: int = 3, model_name: str = "inception_v3"
    ) -> None:
        super().__init__()
        cfg.validate(model_name)
        if in_chans < 1:
            raise ValueError(f"{model_name}: in_chans must be positive; got {in_chans}")
        if cfg.transform_input and in_chans != 3:
            raise ValueError(f"{model_name}: transform_input maps RGB ImageNet statistics and needs in_chans=3")
        self.cfg = cfg
        self.model_name = model_name
        self.in_chans = in_chans
        self.num_classes = num_classes

        self.layer_names: list[str] = []
        self.feature_info: list[FeatureInfo] = []
        chs = in_chans
        for name, out_chs, kernel, stride, padding in STEM:
            if out_chs is None:
                module: nn.Module = nn.MaxPool2d(kernel, stride=stride)
            else:
                module = ConvNormAct(chs, out_chs, kernel, stride=stride, padding=padding)
                chs = out_chs
            self._add(name, module, chs)
        for name, block_type, kwargs in MIXED:
            block = block_type(chs, **kwargs)
            chs = block.out_chs
            self._add(name, block, chs)
        self.num_features = chs

        self.AuxLogits: InceptionAux | None = None
        if cfg.aux_logits and num_classes:
            self.AuxLogits = InceptionAux(getattr(self, AUX_TAP).out_chs, num_classes)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(cfg.drop_rate)
        self.fc: nn.Module = nn.Linear(chs, num_classes) if num_classes else nn.Identity()
        self._init_weights(self)

    def _add(self, name: str, module: nn.Module, chs: int) -> None:
        self.add_module(name, module)
        self.layer_names.append(name)
        if name in TAPS:
            self.feature_info.append(FeatureInfo(chs, TAPS[name], name))

    def _init_weights(self, root: nn.Module) -> None:
        if self.Conv2d_1a_3x3.conv.weight.is_meta:
            return  # built on the meta device for analysis: there are no values to initialise
        # torchvision's: truncated normal, std 0.1, but 0.01 for the auxiliary 5x5 convolution and 0.001 for the
        # auxiliary classifier; linear biases keep PyTorch's default.
        aux = self.AuxLogits
        small = {} if aux is None else {aux.conv1.conv: 0.01, aux.fc: 0.001}
        for m in root.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, mean=0.0, std=small.get(m, 0.1), a=-2, b=2)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _forward_trunk(self, x: torch.Tensor, aux_out: list[torch.Tensor] | None) -> torch.Tensor:
        self.check_input(x)
        if self.cfg.transform_input:
            x = imagenet_to_unit_range(x)
        for name in self.layer_names:
            x = getattr(self, name)(x)
            if aux_out is not None and name == AUX_TAP:
                aux_out.append(self.AuxLogits(x))
        return x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward_trunk(x, None)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.dropout(torch.flatten(self.avgpool(x), 1))
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor | AuxOutputs:
        if not self.training or self.AuxLogits is None:
            return self.forward_head(self.forward_features(x))
        aux: list[torch.Tensor] = []
        logits = self.forward_head(self._forward_trunk(x, aux))
        return AuxOutputs(logits, tuple(aux), (self.cfg.aux_weight,))

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int) -> None:
        """Give the classifier and the auxiliary classifier ``num_classes`` fresh outputs.

        The auxiliary head keeps its convolutions; with ``num_classes=0`` it is removed along with the classifier,
        and a later reset with classes rebuilds it from scratch.
        """
        self.num_classes = num_classes
        like = self.Conv2d_1a_3x3.conv.weight  # new layers live where the network lives, in its precision
        self.fc = (
            nn.Linear(self.num_features, num_classes, device=like.device, dtype=like.dtype)
            if num_classes
            else nn.Identity()
        )
        fresh = [self.fc]
        if not num_classes or not self.cfg.aux_logits:
            self.AuxLogits = None
        elif self.AuxLogits is None:
            in_chs = getattr(self, AUX_TAP).out_chs
            self.AuxLogits = InceptionAux(in_chs, num_classes).to(device=like.device, dtype=like.dtype)
            fresh.append(self.AuxLogits)
        else:
            head = self.AuxLogits
            head.fc = nn.Linear(head.fc.in_features, num_classes, device=like.device, dtype=like.dtype)
            fresh.append(head.fc)
        for module in fresh:
            self._init_weights(module)

    def remap_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Fit a checkpoint's auxiliary classifier to this network (see `adapt_aux_state`)."""
        return adapt_aux_state(state, self, aux_prefixes=("AuxLogits.",), aux_out_layers=("AuxLogits.fc.",))


_SZEGEDY_2016 = Paper(
    "Christian Szegedy, Vincent Vanhoucke, Sergey Ioffe, Jonathon Shlens, Zbigniew Wojna",
    "Rethinking the Inception Architecture for Computer Vision",
    2016,
    "CVPR",
    "https://arxiv.org/abs/1512.00567",
)
_ACCEPTED = [f.name for f in dataclasses.fields(InceptionV3Config)]


def _build(*, num_classes: int, in_chans: int, **overrides: Any) -> InceptionV3:
    check_overrides("inception_v3", overrides, _ACCEPTED)
    cfg = dataclasses.replace(InceptionV3Config(), **overrides)
    return InceptionV3(cfg, num_classes=num_classes, in_chans=in_chans, model_name="inception_v3")


register_model(
    ModelCard(
        "inception_v3",
        "inception_v3",
        _SZEGEDY_2016,
        input_size=(3, 299, 299),
        num_classes=1000,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        # Table 3, last row ("Inception-v2 BN-auxiliary", which the paper calls Inception-v3).
        reported=imagenet_error(
            21.2, 5.6, "Table 3", "single 299x299 crop; the 48,238 non-blacklisted ILSVRC 2012 validation images"
        ),
        notes=(
            "the released network, as torchvision ships it: a 5x5 branch beside the factorised double 3x3 in the "
            "35x35 modules, and a 1x1-3x3-pool end of the stem, where the paper's Table 1 shows three 3x3 "
            "convolutions. Auxiliary loss weight 0.4 (TensorFlow-Slim's training script; the paper states none). "
            "Pass transform_input=True to feed ImageNet-normalised images to torchvision's ImageNet checkpoint"
        ),
    ),
    _build,
)
