"""GoogLeNet, the Inception network of ILSVRC 2014.

Szegedy, Liu, Jia, Sermanet, Reed, Anguelov, Erhan, Vanhoucke and Rabinovich. Going Deeper with Convolutions.
CVPR 2015. Table 1 is `GOOGLENET_TABLE`; both registered variants build it:

- ``googlenet``: torchvision's GoogLeNet, module for module, so its state_dicts (and its ImageNet checkpoint,
  converted from TensorFlow) load unchanged and give the same outputs. It departs from the paper where the
  TensorFlow model it was converted from does: batch norm (eps 1e-3) after every convolution, which therefore has no
  bias; a 3x3 kernel where Table 1 has the "#5x5" convolution (torchvision keeps this "known bug" for weight
  compatibility, pytorch/vision issue 906); no local response normalisation; a 2x2 instead of a 3x3 max-pool
  before inception (5a) (both give 7x7 at 224x224); auxiliary heads that pool to 4x4 adaptively instead of with a
  5x5/3 average pool; dropout 0.2 instead of 0.4 before the classifier. Without its auxiliary heads it has
  6,624,904 parameters, with them 13,004,888.
- ``googlenet_2014``: the network of the paper's Table 1 and section 5: biased convolutions without batch norm,
  5x5 convolutions, local response normalisation after the first max-pool and after the stem's 3x3 convolution
  (size 5, alpha 1e-4, beta 0.75, as in the BVLC Caffe replication), 3x3/2 max-pools, auxiliary heads with a 5x5/3
  average pool, dropout 0.4. The paper gives no initialisation; this uses the Caffe replication's (Xavier weights,
  0.2 conv and hidden-layer biases, zero classifier biases), without which 22 unnormalised layers barely pass a
  signal. 6,998,552 parameters without the auxiliary heads, 13,378,280 with them.

Both attach the paper's two auxiliary classifiers to inception (4a) and (4d). In training mode the forward returns
`AuxOutputs` whose losses weigh 0.3 each (section 5); in evaluation mode the heads are not run and the forward
returns the main logits. ``aux_logits=False`` builds the network without them.

``transform_input=True`` does what torchvision does when it loads its ImageNet checkpoint: it maps images normalised
with the ImageNet mean and std to the [-1, 1] range the TensorFlow-trained weights expect. The default is False, as
in torchvision without pretrained weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from convzoo.layers.inception import AuxHeadNet, Inception, inception_conv, pad_to_size
from convzoo.layers.trunk import smallest_input
from convzoo.models.base import FeatureInfo
from convzoo.registry import IMAGENET_DEFAULTS, Paper, Reported, Variant, register_family

AUX_POOLS = ("adaptive", "paper")


class InceptionSpec(NamedTuple):
    """One inception row of Table 1: its name and filter counts."""

    name: str
    ch1x1: int
    ch3x3_reduce: int
    ch3x3: int
    ch5x5_reduce: int
    ch5x5: int
    pool_proj: int


# Table 1, grouped by grid size (28x28, 14x14, 7x7 at 224x224); a 3x3/2 max-pool precedes the second and third group.
GOOGLENET_TABLE: tuple[tuple[InceptionSpec, ...], ...] = (
    (
        InceptionSpec("3a", 64, 96, 128, 16, 32, 32),
        InceptionSpec("3b", 128, 128, 192, 32, 96, 64),
    ),
    (
        InceptionSpec("4a", 192, 96, 208, 16, 48, 64),
        InceptionSpec("4b", 160, 112, 224, 24, 64, 64),
        InceptionSpec("4c", 128, 128, 256, 24, 64, 64),
        InceptionSpec("4d", 112, 144, 288, 32, 64, 64),
        InceptionSpec("4e", 256, 160, 320, 32, 128, 128),
    ),
    (
        InceptionSpec("5a", 256, 160, 320, 32, 128, 128),
        InceptionSpec("5b", 384, 192, 384, 48, 128, 128),
    ),
)
# Section 5: the auxiliary classifiers sit on the outputs of inception (4a) and (4d).
AUX_TAPS = {"inception4a": "aux1", "inception4d": "aux2"}


@dataclass(frozen=True)
class GoogLeNetConfig:
    """What distinguishes torchvision's GoogLeNet from the paper's.

    Attributes:
        aux_logits: Build the two auxiliary classifiers.
        aux_weight: Weight of each auxiliary loss in the training objective (section 5: 0.3).
        transform_input: Map ImageNet-normalised input to [-1, 1] first (for torchvision's ImageNet checkpoint).
        batch_norm: Batch norm after every convolution (torchvision); without it, biased convolutions (the paper).
            It also picks the initialisation: torchvision's truncated normal (std 0.01) with batch norm, the Caffe
            replication's Xavier weights and 0.2 biases without.
        ch5x5_kernel: Kernel of the "#5x5" convolutions: 5 (the paper) or 3 (torchvision).
        lrn: Local response normalisation in the stem (the paper).
        last_pool_kernel: Kernel of the stride-2 max-pool before inception (5a): 3 (Table 1) or 2 (torchvision).
        aux_pool: How an auxiliary head shrinks its 14x14 input to 4x4: ``"adaptive"`` (torchvision) or
            ``"paper"`` (a 5x5 average pool with stride 3; for other input sizes, zero-padded to 14x14 below and
            adaptively pooled to 4x4 above).
        drop_rate: Dropout before the classifier (0.4 in the paper, 0.2 in torchvision).
        aux_drop_rate: Dropout in the auxiliary heads (0.7).
    """

    aux_logits: bool = True
    aux_weight: float = 0.3
    transform_input: bool = False
    batch_norm: bool = True
    ch5x5_kernel: int = 3
    lrn: bool = False
    last_pool_kernel: int = 2
    aux_pool: str = "adaptive"
    drop_rate: float = 0.2
    aux_drop_rate: float = 0.7

    def validate(self, name: str) -> None:
        """Raise a ValueError naming ``name`` if this configuration cannot be built."""

        def fail(reason: str) -> None:
            raise ValueError(f"{name}: {reason}")

        if self.ch5x5_kernel not in (3, 5):
            fail(f"ch5x5_kernel must be 5 (the paper) or 3 (torchvision); got {self.ch5x5_kernel}")
        if self.last_pool_kernel not in (2, 3):
            fail(f"last_pool_kernel must be 3 (the paper) or 2 (torchvision); got {self.last_pool_kernel}")
        if self.aux_pool not in AUX_POOLS:
            fail(f"unknown aux_pool {self.aux_pool!r}; expected one of {AUX_POOLS}")
        if not 0.0 <= self.drop_rate < 1.0 or not 0.0 <= self.aux_drop_rate < 1.0:
            fail("drop_rate and aux_drop_rate must lie in [0, 1)")
        if self.aux_weight < 0:
            fail(f"aux_weight must be non-negative; got {self.aux_weight}")


class InceptionAux(nn.Module):
    """An auxiliary classifier (section 5): average pool to 4x4, 1x1 convolution to 128 channels, a 1024-unit fully
    connected layer with ReLU, dropout, and a linear classifier. Names follow torchvision's ``InceptionAux``.

    Args:
        in_chs: Channels of the inception output it reads.
        num_classes: Classifier outputs.
        pool: ``"adaptive"`` or ``"paper"`` (see `GoogLeNetConfig.aux_pool`).
        norm: Batch norm after the 1x1 convolution.
        drop_rate: Dropout after the hidden layer.
    """

    def __init__(self, in_chs: int, num_classes: int, *, pool: str, norm: bool, drop_rate: float) -> None:
        super().__init__()
        self.pool_mode = pool
        self.conv = inception_conv(in_chs, 128, 1, norm=norm)
        self.fc1 = nn.Linear(128 * 4 * 4, 1024)
        self.fc2 = nn.Linear(1024, num_classes)
        self.dropout = nn.Dropout(drop_rate)

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool_mode == "adaptive":
            return F.adaptive_avg_pool2d(x, 4)
        # 14x14 -> 4x4 at the paper's 224x224 input; the adaptive pool then changes nothing.
        x = pad_to_size(x, 14)
        x = F.avg_pool2d(x, 5, stride=3)
        return F.adaptive_avg_pool2d(x, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(x)
        x = self.conv(x)
        x = torch.flatten(x, 1)
        x = self.fc1(x)
        x = F.relu(x, inplace=True)
        x = self.dropout(x)
        return self.fc2(x)


class GoogLeNet(AuxHeadNet):
    """GoogLeNet built from a `GoogLeNetConfig` and `GOOGLENET_TABLE`.

    Module names are torchvision's: ``conv1``, ``maxpool1``, ``conv2``, ``conv3``, ``maxpool2``,
    ``inception3a`` .. ``inception5b`` with ``maxpool3`` and ``maxpool4`` between the groups, ``aux1``, ``aux2``,
    ``avgpool``, ``dropout``, ``fc``; the paper's local response normalisations are ``norm1`` and ``norm2``.

    Args:
        cfg: The architecture.
        num_classes: Classifier outputs; 0 leaves out the classifier and the auxiliary classifiers.
        in_chans: Input image channels.
        model_name: Name used in error messages.
    """

    aux_taps = AUX_TAPS
    aux_classifier = "fc2"

    def __init__(
        self, cfg: GoogLeNetConfig, *, num_classes: int = 1000, in_chans: int = 3, model_name: str = "googlenet"
    ) -> None:
        super().__init__(cfg, num_classes=num_classes, in_chans=in_chans, model_name=model_name)
        norm = cfg.batch_norm

        self.add_layer("conv1", inception_conv(in_chans, 64, 7, stride=2, padding=3, norm=norm))
        self.add_layer("maxpool1", nn.MaxPool2d(3, stride=2, ceil_mode=True))
        self.add_layer("norm1", _lrn() if cfg.lrn else nn.Identity())
        self.add_layer("conv2", inception_conv(64, 64, 1, norm=norm))
        self.add_layer("conv3", inception_conv(64, 192, 3, padding=1, norm=norm))
        self.add_layer("norm2", _lrn() if cfg.lrn else nn.Identity())
        self.add_layer("maxpool2", nn.MaxPool2d(3, stride=2, ceil_mode=True))
        self.feature_info = [
            FeatureInfo(64, 2, "conv1"),
            FeatureInfo(192, 4, "norm2" if cfg.lrn else "conv3"),
        ]

        chs, reduction = 192, 8
        for i, group in enumerate(GOOGLENET_TABLE):
            if i > 0:
                kernel = cfg.last_pool_kernel if i == len(GOOGLENET_TABLE) - 1 else 3
                self.add_layer(f"maxpool{i + 2}", nn.MaxPool2d(kernel, stride=2, ceil_mode=True))
                reduction *= 2
            for spec in group:
                block = Inception(chs, *spec[1:], ch5x5_kernel=cfg.ch5x5_kernel, norm=norm)
                self.add_layer(f"inception{spec.name}", block)
                chs = block.out_chs
            self.feature_info.append(FeatureInfo(chs, reduction, f"inception{group[-1].name}"))
        # The convolutions are padded but the max-pools are not: even rounding up, a 3x3/2 pool needs a 2x2 map.
        # The trunk needs 15 pixels with torchvision's 2x2 pool before inception (5a), 31 with the paper's 3x3 (not
        # the total stride, 32); the auxiliary heads adapt to any grid, so the same holds in training.
        self.min_input_size = smallest_input([getattr(self, name) for name in self.layer_names])

        self._build_aux_heads()
        self.init_head(chs, cfg.drop_rate)
        self._init_weights()

    def _make_aux_head(self, in_chs: int) -> InceptionAux:
        cfg = self.cfg
        return InceptionAux(
            in_chs, self.num_classes, pool=cfg.aux_pool, norm=cfg.batch_norm, drop_rate=cfg.aux_drop_rate
        )

    def _init_layer(self, layer: nn.Conv2d | nn.Linear, bias: float) -> None:
        if self.cfg.batch_norm:
            # torchvision's initialisation (biases keep PyTorch's default).
            nn.init.trunc_normal_(layer.weight, mean=0.0, std=0.01, a=-2, b=2)
        else:
            # Caffe's "xavier" filler: uniform with variance 1 / fan_in.
            nn.init.kaiming_uniform_(layer.weight, nonlinearity="linear")
            nn.init.constant_(layer.bias, bias)

    def init_classifier(self, fc: nn.Linear) -> None:
        self._init_layer(fc, bias=0.0)

    def _init_weights(self, root: nn.Module | None = None) -> None:
        root = self if root is None else root
        if self.conv1.conv.weight.is_meta:
            return  # built on the meta device for analysis: there are no values to initialise
        classifiers = {self.fc, *(head.fc2 for head in self.aux_heads())}
        for m in root.modules():
            if isinstance(m, nn.Linear) and m in classifiers:
                self.init_classifier(m)
            elif isinstance(m, (nn.Conv2d, nn.Linear)):
                self._init_layer(m, bias=0.2)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)


def _lrn() -> nn.LocalResponseNorm:
    # Caffe's LRN (local_size 5, alpha 1e-4, beta 0.75) divides alpha by the size, as PyTorch's does.
    return nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0)


# ----------------------------------------------------------------------------------------------------------------
# The registered variants.

_SZEGEDY_2015 = Paper(
    "Christian Szegedy, Wei Liu, Yangqing Jia, Pierre Sermanet, Scott Reed, Dragomir Anguelov, Dumitru Erhan, "
    "Vincent Vanhoucke, Andrew Rabinovich",
    "Going Deeper with Convolutions",
    2015,
    "CVPR",
    "https://arxiv.org/abs/1409.4842",
)
# Table 3 is on the validation set; Table 2 on the ILSVRC 2014 test set (the same 6.67% held on validation).
_REPORTED = (
    Reported("ImageNet", "top-5 error", 10.07, "Table 3", "one model, one 224x224 crop, validation set"),
    Reported("ImageNet", "top-5 error", 6.67, "Table 2", "ILSVRC 2014 test set; 7 models, 144 crops each (Table 3)"),
)
_VARIANTS = [
    Variant(
        "googlenet",
        GoogLeNetConfig(),
        _SZEGEDY_2015,
        IMAGENET_DEFAULTS,
        _REPORTED,
        "torchvision's GoogLeNet, whose ImageNet weights were converted from TensorFlow: batch norm after every "
        "convolution, 3x3 kernels in the '#5x5' branches, no LRN, a 2x2 max-pool before inception (5a), adaptive "
        "4x4 pooling in the auxiliary heads, dropout 0.2. The reported results are the paper's, for googlenet_2014. "
        "Pass transform_input=True to feed ImageNet-normalised images to torchvision's ImageNet checkpoint",
    ),
    Variant(
        "googlenet_2014",
        GoogLeNetConfig(
            batch_norm=False, ch5x5_kernel=5, lrn=True, last_pool_kernel=3, aux_pool="paper", drop_rate=0.4
        ),
        _SZEGEDY_2015,
        IMAGENET_DEFAULTS,
        _REPORTED,
        "Table 1 as published: 5x5 convolutions, no batch norm, LRN in the stem, 3x3/2 max-pools, 5x5/3 average "
        "pools in the auxiliary heads, dropout 0.4; Caffe replication's initialisation (the paper gives none)",
    ),
]
register_family("googlenet", GoogLeNet, _VARIANTS)
