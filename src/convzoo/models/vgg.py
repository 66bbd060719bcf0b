"""VGG: stacks of 3x3 convolutions between five 2x2 max-pools, then AlexNet's three fully connected layers.

Simonyan and Zisserman. Very Deep Convolutional Networks for Large-Scale Image Recognition. ICLR 2015. Table 1
defines configurations A to E, which `CFGS` holds as data in torchvision's style: a number is a 3x3 convolution
(stride 1, padding 1) with that many filters and a ReLU, ``(filters, 1)`` a 1x1 convolution (configuration C's
extra layers, a linear projection followed by a ReLU, section 2.2), ``"LRN"`` local response normalisation with
Krizhevsky et al.'s constants (A-LRN) and ``"M"`` a 2x2 max-pool at stride 2. The fully connected layers are
FC-4096, FC-4096 and the output layer, with dropout 0.5 after the first two.

Table 2's parameter counts hold: A and A-LRN 133M (132,863,336), B 133M (133,047,848), C 134M (133,638,952),
D 138M (138,357,544), E 144M (143,667,240). Networks A, B, D and E are torchvision's vgg11, vgg13, vgg16 and vgg19,
with the same module names, so their state_dicts load as they are; the ``_bn`` variants add batch normalisation
after every convolution, as torchvision's do (the paper has none). ``batch_norm=True`` does the same for any
configuration, e.g. ``create_model("vgg_c", batch_norm=True)``.

Initialisation follows torchvision (He et al. 2015 for the convolutions, N(0, 0.01) for the fully connected
layers), which trains every configuration from scratch; the paper drew from N(0, 10^-2) and had to start the
deeper networks from the layers of a trained net A (section 3.1).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn as nn

from convzoo.layers.classifier import FCHead
from convzoo.layers.lrn import LocalResponseNorm
from convzoo.models._fchead import FCHeadNet
from convzoo.registry import IMAGENET_DEFAULTS, Paper, Variant, imagenet_error, register_family

VGGLayer = int | tuple[int, int] | str

# Table 1 of the paper, one entry per layer.
CFGS: dict[str, tuple[VGGLayer, ...]] = {
    "A": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "A-LRN": (64, "LRN", "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "B": (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "C": (64, 64, "M", 128, 128, "M", 256, 256, (256, 1), "M", 512, 512, (512, 1), "M", 512, 512, (512, 1), "M"),
    "D": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    "E": (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"),
}


def _conv_spec(entry: VGGLayer) -> tuple[int, int] | None:
    """(filters, kernel) of a convolution entry; None for "M" and "LRN"."""
    if isinstance(entry, str):
        return None
    if isinstance(entry, int):
        return entry, 3
    return int(entry[0]), int(entry[1])


@dataclass(frozen=True)
class VGGConfig:
    """A VGG network.

    Attributes:
        layers: The layers in order: filters (3x3 convolution), ``(filters, kernel)``, ``"LRN"`` or ``"M"``.
        batch_norm: Batch normalisation between each convolution and its ReLU.
        hidden: Widths of the hidden fully connected layers.
        drop_rate: Dropout probability after each hidden fully connected layer.
        pool_size: Side of the grid the last map is average-pooled to before the first fully connected layer.
    """

    layers: tuple[VGGLayer, ...] = CFGS["D"]
    batch_norm: bool = False
    hidden: tuple[int, ...] = (4096, 4096)
    drop_rate: float = 0.5
    pool_size: int = 7

    def validate(self, name: str) -> None:
        """Raise a ValueError naming ``name`` if this configuration cannot be built."""
        convs = []
        for entry in self.layers:
            if entry in ("M", "LRN"):
                continue
            ok = isinstance(entry, int) or (
                isinstance(entry, tuple) and len(entry) == 2 and all(isinstance(v, int) for v in entry)
            )
            spec = _conv_spec(entry) if ok else None
            if spec is None or spec[0] < 1 or spec[1] < 1 or spec[1] % 2 == 0:
                raise ValueError(
                    f"{name}: each entry of layers is 'M', 'LRN', a filter count or (filters, odd kernel size); "
                    f"got {entry!r}"
                )
            convs.append(spec)
        if not convs:
            raise ValueError(f"{name}: layers holds no convolution")
        if not self.hidden or min(self.hidden) < 1:
            raise ValueError(f"{name}: hidden needs one or more positive widths; got {self.hidden}")
        if not 0.0 <= self.drop_rate < 1.0:
            raise ValueError(f"{name}: drop_rate must lie in [0, 1); got {self.drop_rate}")
        if self.pool_size < 1:
            raise ValueError(f"{name}: pool_size must be positive; got {self.pool_size}")


class VGG(FCHeadNet):
    """A VGG network built from a `VGGConfig`.

    ``feature_info`` taps the last layer before each max-pool and the last max-pool (reductions 1, 2, 4, 8, 16 and
    32; on 224x224 images the maps of Table 1's blocks, 224 down to 14, and the 7x7 map the classifier reads).
    ``num_features`` is the width of the last convolution.

    Args:
        cfg: The architecture.
        num_classes: Outputs of the last fully connected layer; 0 leaves out the fully connected layers.
        in_chans: Input image channels.
        model_name: Name used in error messages.
    """

    def __init__(self, cfg: VGGConfig, *, num_classes: int = 1000, in_chans: int = 3, model_name: str = "vgg") -> None:
        super().__init__(cfg, num_classes=num_classes, in_chans=in_chans, model_name=model_name)

        with self._allocate_once():
            layers: list[nn.Module] = []
            chs = in_chans
            for entry in cfg.layers:
                if entry == "M":
                    layers.append(nn.MaxPool2d(2, 2))
                elif entry == "LRN":
                    layers.append(LocalResponseNorm(5, 1e-4, 0.75, 2.0))
                else:
                    filters, kernel = _conv_spec(entry)
                    layers.append(nn.Conv2d(chs, filters, kernel, padding=kernel // 2))
                    if cfg.batch_norm:
                        layers.append(nn.BatchNorm2d(filters))
                    layers.append(nn.ReLU(inplace=True))
                    chs = filters
            self._add_trunk_and_head(nn.Sequential(*layers), chs, cfg.pool_size)

    def _make_classifier(self, num_classes: int) -> FCHead:
        return FCHead(self.fc_in_features, self.cfg.hidden, num_classes, drop_rate=self.cfg.drop_rate)

    def _init_fc(self, layer: nn.Linear, *, output: bool) -> None:
        nn.init.normal_(layer.weight, 0.0, 0.01)
        nn.init.zeros_(layer.bias)

    def _init_weights(self) -> None:
        if self.features[0].weight.is_meta:
            return  # built on the meta device for analysis: there are no values to initialise
        for m in self.features.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                m.reset_running_stats()  # built on the meta device: the statistics hold no values yet
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        self._init_fc_layers(self.classifier)


# ----------------------------------------------------------------------------------------------------------------
# The registered variants.

_SIMONYAN_2015 = Paper(
    "Karen Simonyan, Andrew Zisserman",
    "Very Deep Convolutional Networks for Large-Scale Image Recognition",
    2015,
    "ICLR",
    "https://arxiv.org/abs/1409.1556",
)

# Table 3: single test scale, top-1 and top-5 validation error, networks trained and tested at S = Q = 256, the one
# setting every configuration was run at. With scale jittering (S in [256, 512], Q = 384) Table 3 gives C 27.3 / 8.8,
# D 25.6 / 8.1 and E 25.5 / 8.0.
_TABLE3 = {
    "A": (29.6, 10.4),
    "A-LRN": (29.7, 10.5),
    "B": (28.7, 9.9),
    "C": (28.1, 9.4),
    "D": (27.0, 8.8),
    "E": (27.3, 9.0),
}
_NAMES = {"A": "vgg11", "A-LRN": "vgg_a_lrn", "B": "vgg13", "C": "vgg_c", "D": "vgg16", "E": "vgg19"}
_VARIANTS: list[Variant] = []
for _cfg_name, _name in _NAMES.items():
    _top1, _top5 = _TABLE3[_cfg_name]
    _VARIANTS.append(
        Variant(
            _name,
            VGGConfig(layers=CFGS[_cfg_name]),
            _SIMONYAN_2015,
            IMAGENET_DEFAULTS,
            imagenet_error(
                _top1, _top5, "Table 3", "single scale, trained and tested at 256, ILSVRC-2012 validation set"
            ),
            f"configuration {_cfg_name} of Table 1",
        )
    )
    # torchvision's batch-norm networks; vgg_c with batch_norm=True builds the same for configuration C.
    if _cfg_name in ("A", "B", "D", "E"):
        _VARIANTS.append(
            Variant(
                f"{_name}_bn",
                VGGConfig(layers=CFGS[_cfg_name], batch_norm=True),
                _SIMONYAN_2015,
                IMAGENET_DEFAULTS,
                notes=f"configuration {_cfg_name} with batch normalisation after every convolution, as torchvision "
                "builds it; not in the paper, so no reported result",
            )
        )
register_family("vgg", VGG, _VARIANTS)
