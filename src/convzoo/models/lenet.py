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

LeNet set the layout its descendants (AlexNet, ZFNet, VGG) share, a convolutional trunk feeding fully connected
layers: `FCHeadNet`. Its ``min_input_size`` and ``feature_info`` follow from the layers themselves
(`convzoo.layers.trunk`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from convzoo.layers.classifier import FCHead
from convzoo.models._fchead import FCHeadNet
from convzoo.registry import Paper, Variant, register_family

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
        super().__init__(cfg, num_classes=num_classes, in_chans=in_chans, model_name=model_name)
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
        features = nn.Sequential(
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
        # C5 is 1x1 on the paper's 32x32 input; a larger input is averaged down to it.
        self._add_trunk_and_head(features, c5, pool_size=1)
        self._init_weights()

    def _make_classifier(self, num_classes: int) -> FCHead:
        act = ScaledTanh if self.cfg.activation == "scaled_tanh" else nn.ReLU
        return FCHead(self.fc_in_features, self.cfg.widths[3:], num_classes, act=act)

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
        self._init_fc_layers(self.classifier)


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
register_family(
    "lenet",
    LeNet,
    [
        Variant(
            "lenet5",
            LeNetConfig(),
            _LECUN_1998,
            _MNIST_32,
            notes=(
                "MNIST test error 0.95% without and 0.8% with artificial distortions of the training set (section "
                "III-C and Figure 9; the paper gives these in its text and figures, in no table). C1 to F6 hold the "
                "paper's 60,000 trainable parameters; the output is a linear layer in place of the hand-designed "
                "Euclidean RBF units (60,850 parameters in all). Inputs are 28x28 digits centred in 32x32, "
                "normalised to -0.1 (background) and 1.175 (ink)"
            ),
        )
    ],
)
