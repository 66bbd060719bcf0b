"""LeNet-5, and the layout it set: a convolutional trunk followed by fully connected layers.

LeCun, Bottou, Bengio and Haffner. Gradient-Based Learning Applied to Document Recognition. Proceedings of the IEEE
86(11), 1998, section II-B and Figure 2.

LeNet-5 reads a 32x32 single-channel image (a 28x28 MNIST digit centred in a 32x32 field):

- C1: 6 maps of 28x28, 5x5 convolutions (156 trainable parameters);
- S2: 6 maps of 14x14, 2x2 subsampling: each unit adds its four inputs, multiplies the sum by a trainable coefficient
  and adds a trainable bias, one pair per map (12 parameters);
- C3: 16 maps of 10x10, 5x5 convolutions, each map reading only the S2 maps its column of Table I names
  (1,516 parameters instead of 2,416 for full connections);
- S4: 16 maps of 5x5, as S2 (32 parameters);
- C5: 120 maps, 5x5 convolutions that leave 1x1 maps on a 32x32 input (48,120 parameters);
- F6: 84 units fully connected to C5 (10,164 parameters).

Every layer up to F6 is followed by the squashing function ``f(a) = A tanh(S a)`` with A = 1.7159 and S = 2/3
(Appendix A), and starts from weights drawn uniformly from +-2.4 / fan-in (Appendix C). C1 to F6 hold exactly the
paper's "60,000 trainable parameters".

One simplification: the paper's output layer is ten Euclidean radial basis function units whose parameter vectors
were fixed by hand to stylised 7x12 bitmaps of the digits, trained with a maximum a posteriori criterion. Here the
output is a linear layer (84 x 10 weights and 10 biases, 850 parameters), read as logits for the cross-entropy loss
every other network in the zoo uses; the network holds 60,850 parameters in all.

The module also holds what LeNet's descendants share: `FCHeadNet`, the base of every network whose convolutional
trunk feeds fully connected layers (AlexNet, ZFNet, VGG), and helpers that trace map sizes, strides and channels
through a trunk, so that `min_input_size` and `feature_info` follow from the layers themselves.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import math
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from convzoo.models.base import ConvNet, FeatureInfo
from convzoo.registry import ModelCard, Paper, check_overrides, register_model

# ----------------------------------------------------------------------------------------------------------------
# Tracing a convolutional trunk: map sizes, strides, channels.


def _first(value: int | Sequence[int]) -> int:
    return value if isinstance(value, int) else value[0]


def _window(layer: nn.Module) -> tuple[int, int, int, int, bool] | None:
    """(kernel, stride, padding, dilation, ceil_mode) of a layer that slides a square window; None for other layers."""
    kernel = getattr(layer, "kernel_size", None)
    if kernel is None:
        return None
    padding = getattr(layer, "padding", 0)
    if isinstance(padding, str):  # a convolution's "same" keeps the size, "valid" pads nothing
        return (1, 1, 0, 1, False) if padding == "same" else (_first(kernel), _first(layer.stride), 0, 1, False)
    stride = getattr(layer, "stride", None) or kernel
    return (
        _first(kernel),
        _first(stride),
        _first(padding),
        _first(getattr(layer, "dilation", 1)),
        bool(getattr(layer, "ceil_mode", False)),
    )


def map_size(layers: Iterable[nn.Module], size: int) -> int:
    """Side of the square map after ``layers`` for a square input of ``size`` pixels; below 1: too small an input.

    Follows PyTorch's output-size rule for convolutions and pooling, including ceil mode's rule that the last window
    must start inside the input or its left padding. Layers without a window keep the size; nested ``nn.Sequential``
    blocks are traced through.
    """
    for layer in layers:
        window = _window(layer)
        if window is None:
            if isinstance(layer, nn.Sequential):
                size = map_size(layer, size)
                if size < 1:
                    return size
            continue
        kernel, stride, padding, dilation, ceil = window
        span = size + 2 * padding - dilation * (kernel - 1) - 1
        out = (span + (stride - 1 if ceil else 0)) // stride + 1
        if ceil and (out - 1) * stride >= size + padding:
            out -= 1
        if out < 1:
            return out
        size = out
    return size


def smallest_input(layers: Sequence[nn.Module]) -> int:
    """The smallest square input for which every map of ``layers`` keeps at least one pixel.

    Map sizes never shrink as the input grows, so a doubling search and a bisection find it.
    """
    high = 1
    while map_size(layers, high) < 1:
        high *= 2
        if high > 1 << 20:
            raise ValueError("no input of up to 2^20 pixels leaves these layers a pixel")
    low = high // 2  # too small, or 0 when a single pixel is enough
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if map_size(layers, middle) >= 1 else (middle, high)
    return high


def _stride(layer: nn.Module) -> int:
    window = _window(layer)
    if window is not None:
        return window[1]
    if isinstance(layer, nn.Sequential):
        return math.prod(_stride(child) for child in layer)
    return 1


def stage_taps(features: nn.Sequential, in_chans: int, prefix: str = "features") -> list[FeatureInfo]:
    """One tap per resolution: the last layer before each stride, and the last layer of ``features``.

    Channels follow the ``out_channels`` of the layers that change them. A tap's ``reduction`` is the cumulative
    stride; unpadded layers make the map a few pixels smaller than ``size / reduction``.
    """
    trace: list[tuple[str, int, int]] = []
    chs, reduction = in_chans, 1
    for name, layer in features.named_children():
        chs = getattr(layer, "out_channels", chs)
        reduction *= _stride(layer)
        trace.append((name, chs, reduction))
    return [
        FeatureInfo(chs, reduction, f"{prefix}.{name}")
        for i, (name, chs, reduction) in enumerate(trace)
        if i + 1 == len(trace) or trace[i + 1][2] != reduction
    ]


def fc_layers(
    in_features: int,
    hidden: Sequence[int],
    num_classes: int,
    *,
    act: Callable[[], nn.Module],
    drop_rate: float | None = None,
    drop_inputs: bool = False,
) -> nn.Sequential:
    """Fully connected layers: ``hidden`` layers with activations, then the ``num_classes``-way output layer.

    Args:
        in_features: Width of the flattened input.
        hidden: Widths of the hidden layers.
        num_classes: Outputs of the last layer.
        act: Builds the activation that follows each hidden layer.
        drop_rate: Dropout probability; None for no dropout layers at all. A rate of 0 keeps (inert) dropout layers,
            so the layer indices, and with them the state_dict keys, do not depend on the rate.
        drop_inputs: Drop each hidden layer's input (torchvision's AlexNet) rather than its output (Krizhevsky et al.,
            VGG); one dropout layer per hidden layer either way.
    """
    layers: list[nn.Module] = []
    for width in hidden:
        if drop_rate is not None and drop_inputs:
            layers.append(nn.Dropout(drop_rate))
        layers += [nn.Linear(in_features, width), act()]
        if drop_rate is not None and not drop_inputs:
            layers.append(nn.Dropout(drop_rate))
        in_features = width
    layers.append(nn.Linear(in_features, num_classes))
    return nn.Sequential(*layers)


# ----------------------------------------------------------------------------------------------------------------
# The shared base of LeNet, AlexNet, ZFNet and VGG.


class FCHeadNet(ConvNet):
    """A convolutional trunk, ``features``, followed by fully connected layers, ``classifier``.

    The head average-pools the last feature map to a fixed grid (``avgpool``, an identity at the paper's input size,
    as in torchvision), flattens it and applies the fully connected layers, the last of which is the output layer.

    How the shared interface maps onto this layout:

    - ``get_classifier()`` is the output layer. ``reset_classifier(n)`` replaces it and keeps the hidden fully
      connected layers: the usual fine-tuning recipe, a fresh last layer on trained fc6 and fc7.
    - ``reset_classifier(0)`` removes every fully connected layer: without an output layer they are only half a
      classifier. What remains is the convolutional network, whose forward returns the globally averaged last
      feature map, ``num_features`` values per image. A later ``reset_classifier(n)`` builds fresh hidden layers.
    - ``forward_head(x, pre_logits=True)`` returns that globally averaged vector too. (The fully connected layers
      read the whole pooled grid, not this vector; forward hooks on ``classifier`` reach their activations.)

    Subclasses build ``features``, ``avgpool`` and ``classifier`` and implement `_make_classifier`, `_init_fc` and
    `_init_weights`.
    """

    features: nn.Sequential
    avgpool: nn.Module
    classifier: nn.Module

    @abc.abstractmethod
    def _make_classifier(self, num_classes: int) -> nn.Sequential:
        """The fully connected layers, ending in a ``num_classes``-way output layer."""

    @abc.abstractmethod
    def _init_fc(self, layer: nn.Linear, *, output: bool) -> None:
        """Initialise one fully connected layer; ``output`` marks the output layer."""

    @abc.abstractmethod
    def _init_weights(self) -> None:
        """Initialise every parameter (and reset buffers) as the paper or the peer does."""

    def _init_classifier(self, classifier: nn.Module) -> None:
        fcs = [m for m in classifier.modules() if isinstance(m, nn.Linear)]
        for i, layer in enumerate(fcs):
            self._init_fc(layer, output=i + 1 == len(fcs))

    @contextlib.contextmanager
    def _allocate_once(self) -> Iterator[None]:
        """Build the layers of the ``with`` block on the meta device, then allocate and initialise them once.

        PyTorch initialises every layer as it is built; for 10^8 fully connected weights that default initialisation,
        overwritten at once by the network's own, costs as much as the real one. Buffers come out of it without
        values too, so `_init_weights` must set them (batch-norm statistics).
        """
        device = torch.get_default_device()
        with torch.device("meta"):
            yield
        self.to_empty(device=device)
        self._init_weights()

    def _fresh(self, build: Callable[[], nn.Module]) -> nn.Module:
        """A new head module on the network's device and in its dtype, not yet initialised."""
        like = next(self.features.parameters())
        with torch.device("meta"):
            module = build()
        if not like.is_meta:
            module = module.to_empty(device=like.device)
        return module.to(dtype=like.dtype)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if pre_logits or not self.num_classes:
            return x.mean((2, 3))
        return self.classifier(torch.flatten(self.avgpool(x), 1))

    def get_classifier(self) -> nn.Module:
        return self.classifier[-1] if self.num_classes else self.classifier

    def reset_classifier(self, num_classes: int) -> None:
        if num_classes and self.num_classes:
            in_features = self.classifier[-1].in_features
            layer = self._fresh(lambda: nn.Linear(in_features, num_classes))
            if not layer.weight.is_meta:
                self._init_fc(layer, output=True)
            self.classifier[-1] = layer
        elif num_classes:
            classifier = self._fresh(lambda: self._make_classifier(num_classes))
            if not next(classifier.parameters()).is_meta:
                self._init_classifier(classifier)
            self.classifier = classifier
        else:
            self.classifier = nn.Identity()
        self.num_classes = num_classes


# ----------------------------------------------------------------------------------------------------------------
# LeNet-5's layers.

# Table I of the paper: the S2 maps each C3 map reads. The first six take every contiguous subset of three maps, the
# next six every contiguous subset of four, the next three some discontinuous subsets of four, the last all six.
LECUN_C3_TABLE: tuple[tuple[int, ...], ...] = (
    (0, 1, 2),
    (1, 2, 3),
    (2, 3, 4),
    (3, 4, 5),
    (0, 4, 5),
    (0, 1, 5),
    (0, 1, 2, 3),
    (1, 2, 3, 4),
    (2, 3, 4, 5),
    (0, 3, 4, 5),
    (0, 1, 4, 5),
    (0, 1, 2, 5),
    (0, 1, 3, 4),
    (1, 2, 4, 5),
    (0, 2, 3, 5),
    (0, 1, 2, 3, 4, 5),
)


class ScaledTanh(nn.Module):
    """LeNet's squashing function ``A tanh(S a)``; A = 1.7159 and S = 2/3 make f(1) = 1 and f(-1) = -1 (Appendix A)."""

    def __init__(self, amplitude: float = 1.7159, slope: float = 2.0 / 3.0) -> None:
        super().__init__()
        self.amplitude = amplitude
        self.slope = slope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.amplitude * torch.tanh(self.slope * x)

    def extra_repr(self) -> str:
        return f"amplitude={self.amplitude}, slope={self.slope:.4f}"


class Subsampling(nn.Module):
    """LeNet's S-layer: the sum of each non-overlapping ``kernel_size`` square, times a trainable coefficient, plus a
    trainable bias; one coefficient and one bias per map.

    Args:
        chs: Maps in and out.
        kernel_size: Side of the summed square, which is also the stride.
    """

    def __init__(self, chs: int, kernel_size: int = 2) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = kernel_size
        self.weight = nn.Parameter(torch.empty(chs))
        self.bias = nn.Parameter(torch.empty(chs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        area = self.kernel_size**2
        summed = F.avg_pool2d(x, self.kernel_size) * area
        return summed * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)

    def extra_repr(self) -> str:
        return f"{self.weight.numel()}, kernel_size={self.kernel_size}"


class ConnectionTableConv2d(nn.Module):
    """A convolution in which output map ``j`` reads only the input maps ``table[j]`` (LeNet-5's C3, Table I).

    The output maps with the same number of inputs form one grouped convolution over their gathered inputs, so the
    layer holds exactly the connected weights: for Table I, 6 x 3 + 9 x 4 + 1 x 6 kernels of 5x5 and 16 biases,
    1,516 parameters.

    Args:
        in_chs: Input maps.
        table: For each output map, the input maps it reads.
        kernel_size: Side of the square kernels (unpadded, stride 1, as in LeNet).
    """

    def __init__(self, in_chs: int, table: Sequence[Sequence[int]], kernel_size: int) -> None:
        super().__init__()
        if not table or any(not row or len(set(row)) != len(row) for row in table):
            raise ValueError("every output map of a connection table needs one or more distinct input maps")
        if any(not 0 <= i < in_chs for row in table for i in row):
            raise ValueError(f"a connection table names input maps outside 0..{in_chs - 1}")
        self.table = tuple(tuple(row) for row in table)
        self.in_channels = in_chs
        self.out_channels = len(self.table)
        self.kernel_size = kernel_size
        self.stride = 1
        by_fan_in: dict[int, list[int]] = {}
        for j, row in enumerate(self.table):
            by_fan_in.setdefault(len(row), []).append(j)
        self.convs = nn.ModuleList()
        order: list[int] = []
        for i, (fan_in, maps) in enumerate(by_fan_in.items()):
            gathered = [c for j in maps for c in self.table[j]]
            self.register_buffer(f"inputs{i}", torch.tensor(gathered, dtype=torch.long), persistent=False)
            self.convs.append(nn.Conv2d(fan_in * len(maps), len(maps), kernel_size, groups=len(maps)))
            order += maps
        # The groups come out ordered by fan-in; this puts every map back at its place in the table.
        self.register_buffer("order", torch.tensor(order, dtype=torch.long).argsort(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [conv(x.index_select(1, getattr(self, f"inputs{i}"))) for i, conv in enumerate(self.convs)]
        return torch.cat(outs, 1).index_select(1, self.order)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, connections=table"


# ----------------------------------------------------------------------------------------------------------------
# LeNet-5.

SUBSAMPLING = ("trainable", "avg", "max")
ACTIVATIONS = ("scaled_tanh", "relu")


@dataclass(frozen=True)
class LeNetConfig:
    """A LeNet.

    Attributes:
        widths: Maps of C1, C3 and C5, and units of F6.
        kernel_size: Side of the C1, C3 and C5 kernels.
        connection_table: C3 reads the S2 maps of Table I; False connects every S2 map to every C3 map. The table
            needs 6 C1 maps and 16 C3 maps.
        subsampling: ``"trainable"`` (the paper's S-layers: coefficient and bias per map, then the squashing
            function), ``"avg"`` or ``"max"`` (parameter-free 2x2 pooling, no activation after it).
        activation: ``"scaled_tanh"`` (the paper's 1.7159 tanh(2a/3)) or ``"relu"``.
    """

    widths: tuple[int, int, int, int] = (6, 16, 120, 84)
    kernel_size: int = 5
    connection_table: bool = True
    subsampling: str = "trainable"
    activation: str = "scaled_tanh"

    def validate(self, name: str) -> None:
        """Raise a ValueError naming ``name`` if this configuration cannot be built."""
        if len(self.widths) != 4 or min(self.widths) < 1:
            raise ValueError(f"{name}: widths are four positive numbers (C1, C3, C5, F6); got {self.widths}")
        if self.kernel_size < 1:
            raise ValueError(f"{name}: kernel_size must be positive; got {self.kernel_size}")
        if self.connection_table and self.widths[:2] != (6, 16):
            raise ValueError(
                f"{name}: the connection table of Table I joins 6 S2 maps to 16 C3 maps; got {self.widths[0]} and "
                f"{self.widths[1]} (use connection_table=False for other widths)"
            )
        if self.subsampling not in SUBSAMPLING:
            raise ValueError(f"{name}: unknown subsampling {self.subsampling!r}; expected one of {SUBSAMPLING}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"{name}: unknown activation {self.activation!r}; expected one of {ACTIVATIONS}")


class LeNet(FCHeadNet):
    """LeNet-5 built from a `LeNetConfig`: C1-S2-C3-S4-C5 in ``features`` (named as in the paper), F6 and the output
    layer in ``classifier``.

    ``feature_info`` taps C1, C3 and C5 (reductions 1, 2 and 4); ``num_features`` is the number of C5 maps.

    Args:
        cfg: The architecture.
        num_classes: Outputs; 0 leaves out F6 and the output layer.
        in_chans: Input image channels.
        model_name: Name used in error messages.
    """

    def __init__(
        self, cfg: LeNetConfig, *, num_classes: int = 10, in_chans: int = 1, model_name: str = "lenet5"
    ) -> None:
        super().__init__()
        cfg.validate(model_name)
        if in_chans < 1:
            raise ValueError(f"{model_name}: in_chans must be positive; got {in_chans}")
        self.cfg = cfg
        self.model_name = model_name
        self.in_chans = in_chans
        self.num_classes = num_classes
        c1, c3, c5, _ = cfg.widths
        k = cfg.kernel_size

        def act() -> nn.Module:
            return ScaledTanh() if cfg.activation == "scaled_tanh" else nn.ReLU()

        def subsample(chs: int) -> tuple[nn.Module, nn.Module]:
            if cfg.subsampling == "trainable":
                return Subsampling(chs), act()
            pool = nn.AvgPool2d(2) if cfg.subsampling == "avg" else nn.MaxPool2d(2)
            return pool, nn.Identity()

        s2, act2 = subsample(c1)
        s4, act4 = subsample(c3)
        c3_layer = ConnectionTableConv2d(c1, LECUN_C3_TABLE, k) if cfg.connection_table else nn.Conv2d(c1, c3, k)
        self.features = nn.Sequential(
            OrderedDict(
                c1=nn.Conv2d(in_chans, c1, k),
                act1=act(),
                s2=s2,
                act2=act2,
                c3=c3_layer,
                act3=act(),
                s4=s4,
                act4=act4,
                c5=nn.Conv2d(c3, c5, k),
                act5=act(),
            )
        )
        self.feature_info = stage_taps(self.features, in_chans)
        self.num_features = c5
        self.min_input_size = smallest_input(self.features)
        # C5 is 1x1 on the paper's 32x32 input; a larger input is averaged down to it.
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = self._make_classifier(num_classes) if num_classes else nn.Identity()
        self._init_weights()

    def _make_classifier(self, num_classes: int) -> nn.Sequential:
        act = ScaledTanh if self.cfg.activation == "scaled_tanh" else nn.ReLU
        return fc_layers(self.num_features, self.cfg.widths[3:], num_classes, act=act)

    @staticmethod
    def _uniform(tensor: torch.Tensor, fan_in: int) -> None:
        # Appendix C: uniform in +-2.4 / F_i, F_i the number of inputs of the unit. Biases are weights on a constant
        # input in the paper's formulation and are drawn the same way.
        bound = 2.4 / fan_in
        nn.init.uniform_(tensor, -bound, bound)

    def _init_fc(self, layer: nn.Linear, *, output: bool) -> None:
        self._uniform(layer.weight, layer.in_features)
        self._uniform(layer.bias, layer.in_features)

    def _init_weights(self) -> None:
        if self.features.c1.weight.is_meta:
            return  # built on the meta device for analysis: there are no values to initialise
        for m in self.features.modules():
            if isinstance(m, nn.Conv2d):
                fan_in = m.weight[0].numel()  # per output map: its own inputs only in a grouped convolution
                self._uniform(m.weight, fan_in)
                self._uniform(m.bias, fan_in)
            elif isinstance(m, Subsampling):
                self._uniform(m.weight, m.kernel_size**2)
                self._uniform(m.bias, m.kernel_size**2)
        self._init_classifier(self.classifier)


# ----------------------------------------------------------------------------------------------------------------
# The registered variant.

_LECUN_1998 = Paper(
    "Yann LeCun, Leon Bottou, Yoshua Bengio, Patrick Haffner",
    "Gradient-Based Learning Applied to Document Recognition",
    1998,
    "Proceedings of the IEEE",
    "https://doi.org/10.1109/5.726791",
)
# Section II-A: white background at -0.1, black ink at 1.175, "which makes the mean input roughly 0, and the variance
# roughly 1". As a normalisation of ink intensities p in [0, 1]: (p - 0.1/1.275) / (1/1.275).
_MNIST_32 = {"input_size": (1, 32, 32), "num_classes": 10, "mean": (0.1 / 1.275,), "std": (1 / 1.275,)}
_ACCEPTED = [f.name for f in dataclasses.fields(LeNetConfig)]


def _build_lenet5(*, num_classes: int, in_chans: int, **overrides: Any) -> LeNet:
    check_overrides("lenet5", overrides, _ACCEPTED)
    if "widths" in overrides:
        overrides["widths"] = tuple(overrides["widths"])
    cfg = dataclasses.replace(LeNetConfig(), **overrides)
    return LeNet(cfg, num_classes=num_classes, in_chans=in_chans, model_name="lenet5")


register_model(
    ModelCard(
        "lenet5",
        "lenet",
        _LECUN_1998,
        notes=(
            "MNIST test error 0.95% without and 0.8% with artificial distortions of the training set (section III-C "
            "and Figure 9; the paper gives these in its text and figures, in no table). C1 to F6 hold the paper's "
            "60,000 trainable parameters; the output is a linear layer in place of the hand-designed Euclidean RBF "
            "units (60,850 parameters in all). Inputs are 28x28 digits centred in 32x32, normalised to -0.1 "
            "(background) and 1.175 (ink)"
        ),
        **_MNIST_32,
    ),
    _build_lenet5,
)
