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

import itertools
import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from convzoo.layers.inception import ConvNormAct, Inception, adapt_aux_state, imagenet_to_unit_range, pad_to_size
from convzoo.models.base import AuxOutputs, ConvNet, FeatureInfo
from convzoo.registry import (
    IMAGENET_DEFAULTS,
    ModelCard,
    Paper,
    Reported,
    config_builder,
    register_model,
)

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
        self.conv = ConvNormAct(in_chs, 128, 1, norm=norm)
        self.fc1 = nn.Linear(128 * 4 * 4, 1024)
        self.fc2 = nn.Linear(1024, num_classes)
        self.dropout = nn.Dropout(drop_rate)

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool_mode == "adaptive":
            return F.adaptive_avg_pool2d(x, 4)
        # 14x14 -> 4x4 at the paper's 224x224 input; the adaptive pool then changes nothing.
        return F.adaptive_avg_pool2d(F.avg_pool2d(pad_to_size(x, 14), 5, stride=3), 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.conv(self.pool(x)), 1)
        x = self.dropout(F.relu(self.fc1(x), inplace=True))
        return self.fc2(x)


class GoogLeNet(ConvNet):
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

    def __init__(
        self, cfg: GoogLeNetConfig, *, num_classes: int = 1000, in_chans: int = 3, model_name: str = "googlenet"
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
        norm = cfg.batch_norm

        self.conv1 = ConvNormAct(in_chans, 64, 7, stride=2, padding=3, norm=norm)
        self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.norm1 = _lrn() if cfg.lrn else nn.Identity()
        self.conv2 = ConvNormAct(64, 64, 1, norm=norm)
        self.conv3 = ConvNormAct(64, 192, 3, padding=1, norm=norm)
        self.norm2 = _lrn() if cfg.lrn else nn.Identity()
        self.maxpool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.layer_names = ["conv1", "maxpool1", "norm1", "conv2", "conv3", "norm2", "maxpool2"]
        self.feature_info = [
            FeatureInfo(64, 2, "conv1"),
            FeatureInfo(192, 4, "norm2" if cfg.lrn else "conv3"),
        ]

        chs, reduction = 192, 8
        for i, group in enumerate(GOOGLENET_TABLE):
            if i > 0:
                kernel = cfg.last_pool_kernel if i == len(GOOGLENET_TABLE) - 1 else 3
                self._add(f"maxpool{i + 2}", nn.MaxPool2d(kernel, stride=2, ceil_mode=True))
                reduction *= 2
            for spec in group:
                block = Inception(chs, *spec[1:], ch5x5_kernel=cfg.ch5x5_kernel, norm=norm)
                self._add(f"inception{spec.name}", block)
                chs = block.out_chs
            self.feature_info.append(FeatureInfo(chs, reduction, f"inception{group[-1].name}"))
        self.num_features = chs
        self.min_input_size = min_input_size(cfg.last_pool_kernel)

        self.aux1: InceptionAux | None = None
        self.aux2: InceptionAux | None = None
        self._build_aux_heads()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(cfg.drop_rate)
        self.fc: nn.Module = nn.Linear(chs, num_classes) if num_classes else nn.Identity()
        self._init_weights()

    def _add(self, name: str, module: nn.Module) -> None:
        self.add_module(name, module)
        self.layer_names.append(name)

    def _build_aux_heads(self) -> None:
        build = self.cfg.aux_logits and self.num_classes > 0
        for tap, name in AUX_TAPS.items():
            head = None
            if build:
                like = self.conv1.conv.weight
                head = InceptionAux(
                    getattr(self, tap).out_chs,
                    self.num_classes,
                    pool=self.cfg.aux_pool,
                    norm=self.cfg.batch_norm,
                    drop_rate=self.cfg.aux_drop_rate,
                ).to(device=like.device, dtype=like.dtype)
            setattr(self, name, head)

    def _init_weights(self, root: nn.Module | None = None) -> None:
        """Initialise ``root`` (default: the whole network)."""
        root = self if root is None else root
        if self.conv1.conv.weight.is_meta:
            return  # built on the meta device for analysis: there are no values to initialise
        classifiers = {self.fc, *(h.fc2 for h in (self.aux1, self.aux2) if h is not None)}
        for m in root.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                if self.cfg.batch_norm:
                    # torchvision's initialisation (biases keep PyTorch's default).
                    nn.init.trunc_normal_(m.weight, mean=0.0, std=0.01, a=-2, b=2)
                else:
                    # Caffe's "xavier" filler: uniform with variance 1 / fan_in.
                    nn.init.kaiming_uniform_(m.weight, nonlinearity="linear")
                    nn.init.constant_(m.bias, 0.0 if m in classifiers else 0.2)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _forward_trunk(self, x: torch.Tensor, aux_out: list[torch.Tensor] | None) -> torch.Tensor:
        self.check_input(x)
        if self.cfg.transform_input:
            x = imagenet_to_unit_range(x)
        for name in self.layer_names:
            x = getattr(self, name)(x)
            if aux_out is not None and name in AUX_TAPS:
                aux_out.append(getattr(self, AUX_TAPS[name])(x))
        return x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward_trunk(x, None)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.dropout(torch.flatten(self.avgpool(x), 1))
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor | AuxOutputs:
        if not self.training or self.aux1 is None:
            return self.forward_head(self.forward_features(x))
        aux: list[torch.Tensor] = []
        logits = self.forward_head(self._forward_trunk(x, aux))
        return AuxOutputs(logits, tuple(aux), (self.cfg.aux_weight,) * len(aux))

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int) -> None:
        """Give the classifier and both auxiliary classifiers ``num_classes`` fresh outputs.

        The auxiliary heads keep their hidden layers; with ``num_classes=0`` they are removed along with the
        classifier, and a later reset with classes rebuilds them from scratch.
        """
        self.num_classes = num_classes
        like = self.conv1.conv.weight  # new layers live where the network lives, in its precision
        self.fc = (
            nn.Linear(self.num_features, num_classes, device=like.device, dtype=like.dtype)
            if num_classes
            else nn.Identity()
        )
        fresh = [self.fc]
        if not num_classes or not self.cfg.aux_logits:
            self.aux1 = self.aux2 = None
        elif self.aux1 is None:
            self._build_aux_heads()
            fresh += [self.aux1, self.aux2]
        else:
            for head in (self.aux1, self.aux2):
                head.fc2 = nn.Linear(head.fc2.in_features, num_classes, device=like.device, dtype=like.dtype)
                fresh.append(head.fc2)
        for module in fresh:
            self._init_weights(module)

    def remap_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Fit a checkpoint's auxiliary classifiers to this network (see `adapt_aux_state`)."""
        return adapt_aux_state(state, self, aux_prefixes=("aux1.", "aux2."), aux_out_layers=("aux1.fc2.", "aux2.fc2."))


def min_input_size(last_pool_kernel: int) -> int:
    """The smallest input side GoogLeNet accepts: every max-pool must keep at least one window.

    15 with torchvision's 2x2 pool before inception (5a), 31 with the paper's 3x3; the auxiliary heads adapt to any
    grid, so the same holds in training.
    """

    def pooled(size: int, kernel: int) -> int:
        # ceil_mode output size, less a last window that would start past the input (PyTorch's rule).
        out = math.ceil((size - kernel) / 2) + 1
        return out - 1 if (out - 1) * 2 >= size else out

    def trunk_output(size: int) -> int:
        size = (size - 1) // 2 + 1  # the 7x7/2 convolution with padding 3
        for kernel in (3, 3, 3, last_pool_kernel):
            size = pooled(size, kernel) if size > 0 else 0
        return size

    return next(size for size in itertools.count(1) if trunk_output(size) >= 1)


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
_VARIANTS: dict[str, tuple[GoogLeNetConfig, str]] = {
    "googlenet": (
        GoogLeNetConfig(),
        "torchvision's GoogLeNet, whose ImageNet weights were converted from TensorFlow: batch norm after every "
        "convolution, 3x3 kernels in the '#5x5' branches, no LRN, a 2x2 max-pool before inception (5a), adaptive "
        "4x4 pooling in the auxiliary heads, dropout 0.2. The reported results are the paper's, for googlenet_2014. "
        "Pass transform_input=True to feed ImageNet-normalised images to torchvision's ImageNet checkpoint",
    ),
    "googlenet_2014": (
        GoogLeNetConfig(
            batch_norm=False, ch5x5_kernel=5, lrn=True, last_pool_kernel=3, aux_pool="paper", drop_rate=0.4
        ),
        "Table 1 as published: 5x5 convolutions, no batch norm, LRN in the stem, 3x3/2 max-pools, 5x5/3 average "
        "pools in the auxiliary heads, dropout 0.4; Caffe replication's initialisation (the paper gives none)",
    ),
}


for _name, (_cfg, _notes) in _VARIANTS.items():
    register_model(
        ModelCard(_name, "googlenet", _SZEGEDY_2015, reported=_REPORTED, notes=_notes, **IMAGENET_DEFAULTS),
        config_builder(_name, _cfg, GoogLeNet),
    )
