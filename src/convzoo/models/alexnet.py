"""AlexNet and ZFNet: five convolutions, three fully connected layers; one family, its variants rows of data.

- ``alexnet_2012``: Krizhevsky, Sutskever and Hinton. ImageNet Classification with Deep Convolutional Neural
  Networks. NIPS 2012, section 3 and Figure 2. A 227x227 input; 96 11x11 filters at stride 4 (55x55x96 maps,
  34,944 parameters); local response normalisation (k = 2, n = 5, alpha = 1e-4, beta = 0.75) after the ReLUs of
  conv1 and conv2; overlapping 3x3/2 max-pooling after both normalisations and after conv5; dropout 0.5 on the
  outputs of fc6 and fc7. The network ran on two GPUs, half of every layer's kernels on each. conv2, conv4 and conv5
  read only the maps of their own GPU, which is a grouped convolution with two groups; conv3 and the fully connected
  layers read both. Each GPU also normalised only its own maps. All of it holds 60,965,224 parameters (the paper's
  "60 million"). Weights start from N(0, 0.01); the biases of conv2, conv4, conv5 and the hidden fully connected
  layers from 1, the others from 0 (section 5).
- ``alexnet``: the one-tower network torchvision ships (64, 192, 384, 256, 256 filters, as in Krizhevsky's "One
  weird trick for parallelizing convolutional neural networks", 2014), with torchvision's module names, padding,
  dropout placement and default initialisation: its state_dicts load as they are, and its 61,100,840 parameters
  and outputs are torchvision's.
- ``zfnet``: Zeiler and Fergus. Visualizing and Understanding Convolutional Networks. ECCV 2014, Figure 3 and
  Table 2. AlexNet on one GPU (dense connections throughout) with 7x7 stride-2 filters in conv1, conv2 at stride 2,
  contrast normalisation after pooling in layers 1 and 2, and 512, 1024 and 512 filters in conv3-5: model (b) of
  Table 2. ``widths=(96, 256, 384, 384, 256)`` gives the Figure 3 model. A 224x224 input gives Figure 3's maps,
  110x110, 55x55, 26x26, 13x13 and 6x6 (conv1 padded by 1, pooling rounding up as in cuda-convnet). The paper
  leaves the normalisation constants to Krizhevsky et al., whose values are used, and starts every weight at
  N(0, 0.01) and every bias at 0. Its renormalisation of conv filters whose RMS exceeds 0.1 is part of training,
  not of the network.

Module names follow torchvision's AlexNet: ``features`` (convolutions, activations, normalisation, pooling, in the
order they run), ``avgpool`` (adaptive average pooling to 6x6, an identity at the papers' input sizes) and
``classifier`` (the fully connected layers). See `FCHeadNet` for how the shared interface treats the fully connected
layers.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch.nn as nn

from convzoo.layers.classifier import FCHead
from convzoo.layers.lrn import LocalResponseNorm
from convzoo.models._fchead import FCHeadNet
from convzoo.registry import (
    IMAGENET_DEFAULTS,
    Paper,
    Reported,
    Variant,
    check_overrides,
    imagenet_error,
    register_family,
)


@dataclass(frozen=True)
class ConvLayer:
    """One convolution of the trunk and what follows it.

    Attributes:
        out_chs: Filters.
        kernel: Side of the square kernels.
        stride: Stride.
        padding: Zero padding on each side.
        tower_local: Read only the maps of the layer's own tower (a grouped convolution, one group per tower).
        lrn: Local response normalisation after the ReLU.
        pool: 3x3 max-pooling at stride 2 after the ReLU.
        init_bias: Starting value of the biases when the family initialises with ``weight_std``.
    """

    out_chs: int
    kernel: int
    stride: int = 1
    padding: int = 0
    tower_local: bool = False
    lrn: bool = False
    pool: bool = False
    init_bias: float = 0.0


@dataclass(frozen=True)
class AlexNetConfig:
    """A member of the AlexNet family.

    Attributes:
        layers: The convolutions, in order.
        towers: Towers the network is split into (2 for the original two-GPU AlexNet). Every layer's maps split
            evenly across the towers; normalisation stays within a tower.
        lrn: Apply the normalisation the layers ask for; False gives the paper's ablation without it (section 3.3).
        lrn_after_pool: Normalise after pooling (Zeiler and Fergus) rather than before it (Krizhevsky et al.).
        ceil_mode: Pooling windows round the map size up, as cuda-convnet's do.
        hidden: Widths of the hidden fully connected layers (fc6, fc7).
        drop_rate: Dropout probability in the fully connected layers.
        drop_inputs: Drop the inputs of fc6 and fc7 (torchvision) rather than the outputs of fc6 and fc7 (the paper).
        pool_size: Side of the grid the last map is average-pooled to before fc6.
        weight_std: Initialise weights from N(0, weight_std**2) and biases from ``init_bias`` (conv) and ``fc_bias``
            (hidden fully connected layers; the output layer's start at 0); None keeps PyTorch's default
            initialisation, as torchvision's AlexNet does.
        fc_bias: Starting value of the hidden fully connected layers' biases.
    """

    layers: tuple[ConvLayer, ...]
    towers: int = 1
    lrn: bool = True
    lrn_after_pool: bool = False
    ceil_mode: bool = False
    hidden: tuple[int, ...] = (4096, 4096)
    drop_rate: float = 0.5
    drop_inputs: bool = False
    pool_size: int = 6
    weight_std: float | None = 0.01
    fc_bias: float = 0.0

    def validate(self, name: str) -> None:
        """Raise a ValueError naming ``name`` if this configuration cannot be built."""

        def fail(reason: str) -> None:
            raise ValueError(f"{name}: {reason}")

        if not self.layers:
            fail("layers holds no convolution")
        for i, layer in enumerate(self.layers):
            if min(layer.out_chs, layer.kernel, layer.stride) < 1 or layer.padding < 0:
                fail(f"convolution {i + 1} needs positive filters, kernel and stride and padding >= 0; got {layer}")
        if self.towers < 1:
            fail(f"towers must be positive; got {self.towers}")
        if self.towers > 1:
            uneven = [layer.out_chs for layer in self.layers if layer.out_chs % self.towers]
            if uneven:
                fail(f"every layer's filters must split evenly into {self.towers} towers; {uneven} do not")
        if not self.hidden or min(self.hidden) < 1:
            fail(f"hidden needs one or more positive widths; got {self.hidden}")
        if not 0.0 <= self.drop_rate < 1.0:
            fail(f"drop_rate must lie in [0, 1); got {self.drop_rate}")
        if self.pool_size < 1:
            fail(f"pool_size must be positive; got {self.pool_size}")


class AlexNet(FCHeadNet):
    """An AlexNet-family network built from an `AlexNetConfig`.

    ``feature_info`` taps the last layer at each resolution and the last pooling layer: for ``alexnet_2012`` on a
    227x227 input, 55x55x96 (conv1, normalised), 27x27x256 (conv2), 13x13x256 (conv5) and 6x6x256 (pool5).
    ``num_features`` is the number of conv5 filters.

    Args:
        cfg: The architecture.
        num_classes: Outputs of fc8; 0 leaves out the fully connected layers.
        in_chans: Input image channels.
        model_name: Name used in error messages.
    """

    def __init__(
        self, cfg: AlexNetConfig, *, num_classes: int = 1000, in_chans: int = 3, model_name: str = "alexnet"
    ) -> None:
        super().__init__(cfg, num_classes=num_classes, in_chans=in_chans, model_name=model_name)
        if cfg.layers[0].tower_local and in_chans % cfg.towers:
            raise ValueError(f"{model_name}: {in_chans} input channels do not split into {cfg.towers} towers")

        with self._allocate_once():
            layers: list[nn.Module] = []
            chs = in_chans
            for spec in cfg.layers:
                groups = cfg.towers if spec.tower_local else 1
                layers += [
                    nn.Conv2d(chs, spec.out_chs, spec.kernel, spec.stride, spec.padding, groups=groups),
                    nn.ReLU(inplace=True),
                ]
                pool = [nn.MaxPool2d(3, 2, ceil_mode=cfg.ceil_mode)] if spec.pool else []
                norm = [LocalResponseNorm(5, 1e-4, 0.75, 2.0, groups=cfg.towers)] if spec.lrn and cfg.lrn else []
                layers += pool + norm if cfg.lrn_after_pool else norm + pool
                chs = spec.out_chs
            self._add_trunk_and_head(nn.Sequential(*layers), chs, cfg.pool_size)

    def _make_classifier(self, num_classes: int) -> FCHead:
        cfg = self.cfg
        return FCHead(
            self.fc_in_features, cfg.hidden, num_classes, drop_rate=cfg.drop_rate, drop_inputs=cfg.drop_inputs
        )

    def _init_fc(self, layer: nn.Linear, *, output: bool) -> None:
        if self.cfg.weight_std is None:
            layer.reset_parameters()
            return
        nn.init.normal_(layer.weight, 0.0, self.cfg.weight_std)
        nn.init.constant_(layer.bias, 0.0 if output else self.cfg.fc_bias)

    def _init_weights(self) -> None:
        if self.features[0].weight.is_meta:
            return  # built on the meta device for analysis: there are no values to initialise
        convs = [m for m in self.features if isinstance(m, nn.Conv2d)]
        for conv, spec in zip(convs, self.cfg.layers):
            if self.cfg.weight_std is None:
                conv.reset_parameters()
            else:
                nn.init.normal_(conv.weight, 0.0, self.cfg.weight_std)
                nn.init.constant_(conv.bias, spec.init_bias)
        self._init_fc_layers(self.classifier)


# ----------------------------------------------------------------------------------------------------------------
# The registered variants.

_KRIZHEVSKY_2012 = Paper(
    "Alex Krizhevsky, Ilya Sutskever, Geoffrey E. Hinton",
    "ImageNet Classification with Deep Convolutional Neural Networks",
    2012,
    "NIPS",
    "https://papers.nips.cc/paper/4824-imagenet-classification-with-deep-convolutional-neural-networks",
)
_KRIZHEVSKY_2014 = Paper(
    "Alex Krizhevsky",
    "One weird trick for parallelizing convolutional neural networks",
    2014,
    "arXiv",
    "https://arxiv.org/abs/1404.5997",
)
_ZEILER_FERGUS = Paper(
    "Matthew D. Zeiler, Rob Fergus",
    "Visualizing and Understanding Convolutional Networks",
    2014,
    "ECCV",
    "https://arxiv.org/abs/1311.2901",
)

_TORCHVISION = AlexNetConfig(
    layers=(
        ConvLayer(64, 11, stride=4, padding=2, pool=True),
        ConvLayer(192, 5, padding=2, pool=True),
        ConvLayer(384, 3, padding=1),
        ConvLayer(256, 3, padding=1),
        ConvLayer(256, 3, padding=1, pool=True),
    ),
    drop_inputs=True,
    weight_std=None,
)
_ORIGINAL = AlexNetConfig(
    layers=(
        ConvLayer(96, 11, stride=4, lrn=True, pool=True),
        ConvLayer(256, 5, padding=2, tower_local=True, lrn=True, pool=True, init_bias=1.0),
        ConvLayer(384, 3, padding=1),
        ConvLayer(384, 3, padding=1, tower_local=True, init_bias=1.0),
        ConvLayer(256, 3, padding=1, tower_local=True, pool=True, init_bias=1.0),
    ),
    towers=2,
    fc_bias=1.0,
)
_ZFNET = AlexNetConfig(
    layers=(
        ConvLayer(96, 7, stride=2, padding=1, lrn=True, pool=True),
        ConvLayer(256, 5, stride=2, lrn=True, pool=True),
        ConvLayer(512, 3, padding=1),
        ConvLayer(1024, 3, padding=1),
        ConvLayer(512, 3, padding=1, pool=True),
    ),
    lrn_after_pool=True,
    ceil_mode=True,
)

_ALEXNET_INPUT = {**IMAGENET_DEFAULTS, "input_size": (3, 227, 227)}
_VARIANTS = [
    Variant(
        "alexnet",
        _TORCHVISION,
        _KRIZHEVSKY_2014,
        IMAGENET_DEFAULTS,
        (),
        "torchvision's one-tower AlexNet (64-192-384-256-256 filters, 61,100,840 parameters), the single-GPU "
        "network of 'One weird trick'; that paper reports training speed-ups, not a table of this network's "
        "errors. torchvision's ImageNet weights reach 56.522% top-1 and 79.066% top-5 accuracy",
    ),
    Variant(
        "alexnet_2012",
        _ORIGINAL,
        _KRIZHEVSKY_2012,
        _ALEXNET_INPUT,
        imagenet_error(40.7, 18.2, "Table 2", "one CNN, ILSVRC-2012 validation set, 10-patch testing")
        + imagenet_error(37.5, 17.0, "Table 1", "ILSVRC-2010 test set"),
        "the two-GPU network of the paper as grouped convolutions: 60,965,224 parameters. Section 4.1 crops 224x224 "
        "patches; the layer arithmetic (conv1 (227 - 11) / 4 + 1 = 55) needs 227x227",
    ),
    Variant(
        "zfnet",
        _ZFNET,
        _ZEILER_FERGUS,
        IMAGENET_DEFAULTS,
        imagenet_error(
            37.5,
            16.0,
            "Table 2",
            "model (b): Figure 3 with 512, 1024, 512 maps in layers 3-5, ILSVRC-2012 validation set",
        )
        + (Reported("ImageNet", "top-5 error", 16.1, "Table 2", "model (b), ILSVRC-2012 test set"),),
        "one tower with dense connections; widths=(96, 256, 384, 384, 256) gives the Figure 3 model (38.4% top-1, "
        "16.5% top-5 validation error in Table 2). Normalisation constants are Krizhevsky et al.'s",
    ),
]

_ACCEPTED = ["widths", "towers", "lrn", "hidden", "drop_rate"]


def _configure(name: str, cfg: AlexNetConfig, overrides: dict[str, Any]) -> AlexNetConfig:
    check_overrides(name, overrides, _ACCEPTED)
    widths = overrides.pop("widths", None)
    if widths is not None:
        widths = tuple(widths)
        if len(widths) != len(cfg.layers):
            raise ValueError(
                f"{name}: widths needs one filter count per convolution ({len(cfg.layers)}); got {len(widths)}"
            )
        overrides["layers"] = tuple(dataclasses.replace(layer, out_chs=w) for layer, w in zip(cfg.layers, widths))
    if "hidden" in overrides:
        overrides["hidden"] = tuple(overrides["hidden"])
    return dataclasses.replace(cfg, **overrides)


def _builder(name: str, cfg: AlexNetConfig, model_cls: type[AlexNet]):
    # Overrides name the filters of each convolution (widths) rather than whole layer specifications.
    def build(*, num_classes: int, in_chans: int, **overrides: Any) -> AlexNet:
        arch = _configure(name, cfg, overrides)
        return model_cls(arch, num_classes=num_classes, in_chans=in_chans, model_name=name)

    return build


register_family("alexnet", AlexNet, _VARIANTS, builder=_builder)
