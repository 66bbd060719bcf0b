"""NASNet-A: the convolutional cells found by neural architecture search, stacked into ImageNet networks.

Zoph, Vasudevan, Shlens and Le. Learning Transferable Architectures for Scalable Image Recognition. CVPR 2018.

The search found two cells on CIFAR-10 (Figure 4): a normal cell that keeps the resolution and a reduction cell that
halves it. Each cell reads two hidden states, its input h_i and the previous cell's output h_{i-1}, and builds five
blocks; a block applies one operation to each of two hidden states it picks and adds the results, and its output
becomes a new hidden state. The cell's output concatenates its "unused" hidden states, a fixed list per cell (the
published normal cell also keeps h_{i-1}). Here each cell is a table (`CellSpec`) interpreted by one `Cell` class
(both in convzoo.layers.nas), and a network is a `NASNetConfig`:

- the stem: a 3x3 stride-2 convolution without padding, then two reduction cells (the "stem cells") at a quarter
  and half of the network's width;
- three stacks of N normal cells, separated by reduction cells, each stack twice as wide as the one before;
- ReLU, global average pooling, dropout and the classifier.

"NASNet-A (N @ P)" names the network by N and P, the channels of the penultimate layer (24 times the first stack's
cell width F: six concatenated states of 4F channels in the last stack). The structural details the paper leaves to
its appendix follow the authors' TensorFlow-slim code (nets/nasnet): separable convolutions applied twice,
TensorFlow's "SAME" padding, the factorized reduction of a previous input twice the current one's size, the
auxiliary head and the scheduled drop-path. Module names follow timm's and Cadene's ports of those weights, whose
state_dicts (NASNet-A Large from either, NASNet-A Mobile from Cadene's) load through `NASNet.remap_state_dict`.
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from collections.abc import Set
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from convzoo.layers.classifier import create_classifier
from convzoo.layers.nas import Cell, CellSpec, batch_norm
from convzoo.models.base import AuxOutputs, ConvNet, FeatureInfo, HeadNames
from convzoo.registry import Paper, Reported, Variant, register_family

# Zoph et al. Figure 4 (left), in the order of TensorFlow-slim's NasNetANormalCell.
NORMAL_CELL = CellSpec(
    blocks=(
        (("sep5x5", 0), ("sep3x3", 1)),
        (("sep5x5", 1), ("sep3x3", 1)),
        (("avg3x3", 0), ("identity", 1)),
        (("avg3x3", 1), ("avg3x3", 1)),
        (("sep3x3", 0), ("identity", 0)),
    ),
    # The paper's figure feeds h_{i-1} into the concatenation too, so the cell is six states wide.
    concat=(1, 2, 3, 4, 5, 6),
)

# Zoph et al. Figure 4 (right). Block 0's output feeds blocks 3 and 4 and is left out of the concatenation; block
# 1's feeds block 3 but is concatenated all the same (TensorFlow-slim's used_hiddenstates).
REDUCTION_CELL = CellSpec(
    blocks=(
        (("sep5x5", 0), ("sep7x7", 1)),
        (("max3x3", 0), ("sep7x7", 1)),
        (("avg3x3", 0), ("sep5x5", 1)),
        (("identity", 3), ("avg3x3", 2)),
        (("sep3x3", 2), ("max3x3", 0)),
    ),
    concat=(3, 4, 5, 6),
)

# TensorFlow-slim's training notes weight the auxiliary loss by 0.4.
AUX_WEIGHT = 0.4
STEM_KERNEL = 3
TOTAL_STRIDE = 32


def feature_size(image_size: int, reduction: int) -> int:
    """Side of the feature map at ``reduction`` (2, 4, ..., 32) for an image of side ``image_size``.

    The stem convolution is unpadded; every later stride-2 operation pads ("SAME") and rounds up.
    """
    size = (image_size - STEM_KERNEL) // 2 + 1
    for _ in range(int(math.log2(reduction)) - 1):
        size = -(-size // 2)
    return size


# The auxiliary head starts with an unpadded 5x5 average pool on the stride-16 map.
_AUX_POOL, _AUX_STRIDE = 5, 3
AUX_MIN_INPUT = next(s for s in range(STEM_KERNEL, 4096) if feature_size(s, 16) >= _AUX_POOL)


@dataclass(frozen=True)
class NASNetConfig:
    """A NASNet-A network for ImageNet.

    Attributes:
        cells_per_stack: N, the normal cells in each of the three stacks.
        penultimate_filters: P, the channels of the last feature map (24 times the first stack's cell width).
        stem_filters: Output channels of the stem convolution (32 times TensorFlow's stem multiplier).
        skip_reduction_input: Feed the first normal cell after a reduction cell with the output of the cell two
            before the reduction instead of one before, as TensorFlow-slim's NASNet-A Large does.
        drop_rate: Dropout before the classifier (TensorFlow-slim keeps each unit with probability 0.5).
        drop_path_rate: ScheduledDropPath's final drop probability for the last cell; cell c of C drops each
            operation's output with probability drop_path_rate * (c + 1) / C * progress (see
            `NASNet.set_training_progress`). 0 disables it.
        aux_head: Add the auxiliary classifier on the last cell of the second stack (active in training mode).
        image_size: The resolution the auxiliary head is built for: its 768 filters span the whole pooled map.
    """

    cells_per_stack: int = 4
    penultimate_filters: int = 1056
    stem_filters: int = 32
    skip_reduction_input: bool = False
    drop_rate: float = 0.5
    drop_path_rate: float = 0.0
    aux_head: bool = False
    image_size: int = 224

    def validate(self, name: str) -> None:
        """Raise a ValueError naming ``name`` if this configuration cannot be built."""

        def fail(reason: str) -> None:
            raise ValueError(f"{name}: {reason}")

        if self.cells_per_stack < 1:
            fail(f"every stack needs at least one normal cell; got cells_per_stack={self.cells_per_stack}")
        if self.penultimate_filters < 1 or self.penultimate_filters % 24:
            fail(
                f"penultimate_filters must be a positive multiple of 24 (6 concatenated states, each 4 times the "
                f"first stack's width); got {self.penultimate_filters}"
            )
        width = self.penultimate_filters // 24
        if width % 4:
            nearest = 96 * max(1, round(self.penultimate_filters / 96))
            fail(
                f"penultimate_filters={self.penultimate_filters} gives cells {width} wide; the factorized reductions "
                f"of the second stem cell ({width}/2 wide) and of the first stack need even widths, so the width "
                f"must be a multiple of 4: use a multiple of 96 (e.g. {nearest})"
            )
        if self.stem_filters < 1:
            fail(f"stem_filters must be positive; got {self.stem_filters}")
        if not 0.0 <= self.drop_rate < 1.0 or not 0.0 <= self.drop_path_rate < 1.0:
            fail("drop_rate and drop_path_rate must lie in [0, 1)")
        if self.aux_head and self.image_size < AUX_MIN_INPUT:
            fail(
                f"the auxiliary head's {_AUX_POOL}x{_AUX_POOL} pool needs a stride-16 map of at least "
                f"{_AUX_POOL}x{_AUX_POOL}, i.e. image_size >= {AUX_MIN_INPUT}; got {self.image_size}"
            )

    @property
    def width(self) -> int:
        """F, the cell width of the first stack."""
        return self.penultimate_filters // 24


class AuxHead(nn.Module):
    """TensorFlow-slim's NASNet auxiliary classifier.

    ReLU, 5x5/3 average pool, 1x1 convolution to 128 channels, BN-ReLU, a convolution to 768 channels whose kernel
    spans the pooled map, BN-ReLU and a linear classifier. At another resolution than the one it was built for, the
    pooled map is resampled to that size first.
    """

    def __init__(self, in_chs: int, num_classes: int, pooled_size: int) -> None:
        super().__init__()
        self.pooled_size = pooled_size
        self.act = nn.ReLU()
        self.pool = nn.AvgPool2d(_AUX_POOL, stride=_AUX_STRIDE)
        self.proj = nn.Conv2d(in_chs, 128, 1, bias=False)
        self.bn0 = batch_norm(128)
        self.conv = nn.Conv2d(128, 768, pooled_size, bias=False)
        self.bn1 = batch_norm(768)
        self.fc = create_classifier(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(x)
        x = self.pool(x)
        x = self.proj(x)
        x = self.bn0(x)
        x = F.relu(x)
        x = F.adaptive_avg_pool2d(x, self.pooled_size)  # the identity at the design resolution
        x = self.conv(x)
        x = self.bn1(x)
        x = F.relu(x)
        x = torch.flatten(x, 1)
        return self.fc(x)


def tf_variance_scaling_(module: nn.Conv2d | nn.Linear) -> None:
    """He initialisation on the fan-out, as TensorFlow-slim's NASNet (variance 2 / fan-out; per group for depthwise).

    Slim draws from a normal truncated at two standard deviations and rescaled to the same variance; an
    untruncated normal keeps that variance and builds NASNet-A Large in a fraction of the time.
    """
    if isinstance(module, nn.Conv2d):
        fan_out = module.out_channels // module.groups * math.prod(module.kernel_size)
    else:
        fan_out = module.out_features
    with torch.no_grad():
        module.weight.normal_(0.0, math.sqrt(2.0 / fan_out))
        if module.bias is not None:
            module.bias.zero_()


class NASNet(ConvNet):
    """NASNet-A for ImageNet, built from a `NASNetConfig`; the constructor takes `ConvNet`'s arguments.

    In training mode a network with the auxiliary head returns `AuxOutputs` (main and auxiliary logits, the latter
    weighted 0.4 in the loss); otherwise the logits.
    """

    head_names = HeadNames(pool="global_pool", drop="head_drop", fc="last_linear")

    def __init__(self, cfg: NASNetConfig, *, num_classes: int = 1000, in_chans: int = 3, model_name: str = "nasnet"):
        super().__init__(cfg, num_classes=num_classes, in_chans=in_chans, model_name=model_name)
        # Every stride-2 operation after the stem pads, so even a 3x3 image runs; but below the total stride the
        # last stacks see a single padded pixel and batch norm there normalises over a handful of values.
        self.min_input_size = max(TOTAL_STRIDE, AUX_MIN_INPUT if cfg.aux_head else 0)

        self.conv0 = nn.Sequential(
            OrderedDict(
                conv=nn.Conv2d(in_chans, cfg.stem_filters, STEM_KERNEL, stride=2, bias=False),
                bn=batch_norm(cfg.stem_filters),
            )
        )
        # Outputs are numbered in the order computed; 0 is the stem convolution's.
        chs, reductions = [cfg.stem_filters], [2]
        self.wiring: list[tuple[str, int, int]] = []  # (cell, its input h_i, its previous input h_{i-1})
        cell_outputs = [0]

        def add_cell(name: str, spec: CellSpec, filters: int, stride: int, prev: int | None) -> None:
            cur = cell_outputs[-1]
            cell = Cell(
                spec,
                chs[cur],
                None if prev is None else chs[prev],
                filters,
                stride=stride,
                prev_stride=1 if prev is None else reductions[cur] // reductions[prev],
            )
            self.add_module(name, cell)
            self.wiring.append((name, cur, cur if prev is None else prev))
            chs.append(cell.out_chs)
            reductions.append(reductions[cur] * stride)
            cell_outputs.append(len(chs) - 1)

        width, n = cfg.width, cfg.cells_per_stack
        add_cell("cell_stem_0", REDUCTION_CELL, width // 4, 2, None)
        add_cell("cell_stem_1", REDUCTION_CELL, width // 2, 2, cell_outputs[-2])
        stack_ends = []
        for cell_num in range(3 * n):
            stack = cell_num // n
            prev = cell_outputs[-2]
            if cell_num in (n, 2 * n):
                stack_ends.append(cell_outputs[-1])
                add_cell(f"reduction_cell_{stack - 1}", REDUCTION_CELL, width * 2**stack, 2, cell_outputs[-2])
                # TensorFlow-slim's skip_reduction_layer_input: the first cell after a reduction reads, besides the
                # reduction cell, the cell two before it (Large) rather than the one just before it (Mobile).
                if not cfg.skip_reduction_input:
                    prev = cell_outputs[-2]
            add_cell(f"cell_{cell_num}", NORMAL_CELL, width * 2**stack, 1, prev)
        self.cell_names = [name for name, _, _ in self.wiring]

        # Tap points: the ReLU with which the next cell reads each output, so every map is taken after activation.
        self.feature_info = [FeatureInfo(chs[1], reductions[1], "cell_stem_1.conv_1x1.act")]
        for k, end in enumerate(stack_ends):
            self.feature_info.append(FeatureInfo(chs[end], reductions[end], f"reduction_cell_{k}.conv_1x1.act"))
        self.final_act = nn.ReLU()
        self.feature_info.append(FeatureInfo(chs[-1], reductions[-1], "final_act"))

        self.aux_tap = f"cell_{2 * n - 1}"  # the last normal cell before the second reduction (TensorFlow-slim)
        self.aux_head: AuxHead | None = None
        if cfg.aux_head:
            pooled = (feature_size(cfg.image_size, 16) - _AUX_POOL) // _AUX_STRIDE + 1
            self.aux_head = AuxHead(chs[stack_ends[1]], num_classes, pooled)
        self.init_head(chs[-1], cfg.drop_rate)
        self.set_training_progress(1.0)
        self._init_weights()

    def _init_weights(self) -> None:
        if self.conv0.conv.weight.is_meta:
            return  # built on the meta device for analysis: there are no values to initialise
        # One filler for every convolution and linear layer, the classifiers included.
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                tf_variance_scaling_(m)

    def init_classifier(self, fc: nn.Linear) -> None:
        """TensorFlow-slim's variance scaling, as for every other layer."""
        tf_variance_scaling_(fc)

    def set_training_progress(self, progress: float) -> None:
        """Set ScheduledDropPath's schedule to ``progress`` (0 at the start of training, 1 at its end).

        The paper's ScheduledDropPath raises each cell's drop probability linearly over training, and (in
        TensorFlow-slim) with the cell's depth: cell c of C drops with probability
        drop_path_rate * (c + 1) / C * progress. Until this is called, progress is 1 (plain DropPath).
        """
        if not 0.0 <= progress <= 1.0:
            raise ValueError(f"{self.model_name}: training progress must lie in [0, 1]; got {progress}")
        total = len(self.cell_names)
        for c, name in enumerate(self.cell_names):
            getattr(self, name).drop_prob = self.cfg.drop_path_rate * (c + 1) / total * progress

    def _forward_cells(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        outputs = [self.conv0(x)]
        aux_input = None
        for name, cur, prev in self.wiring:
            out = getattr(self, name)(outputs[cur], outputs[prev])
            outputs.append(out)
            if name == self.aux_tap:
                aux_input = out
        return self.final_act(outputs[-1]), aux_input

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self._forward_cells(x)[0]

    def forward_taps(self, x: torch.Tensor, names: Set[str], *, stop_early: bool = True) -> dict[str, torch.Tensor]:
        """The cells read two inputs, so the trunk runs here; a cell's tap is the ReLU with which it reads h_i."""
        self.check_input(x)
        outputs = [self.conv0(x)]
        captured: dict[str, torch.Tensor] = {}
        for name, cur, prev in self.wiring:
            cell = getattr(self, name)
            tap = f"{name}.conv_1x1.act"
            if tap in names:
                captured[tap] = cell.conv_1x1.act(outputs[cur])
                if stop_early and len(captured) == len(names):
                    return captured
            outputs.append(cell(outputs[cur], outputs[prev]))
        if "final_act" in names:
            captured["final_act"] = self.final_act(outputs[-1])
        if len(captured) != len(names):
            missing = sorted(set(names) - set(captured))
            raise RuntimeError(f"{self.model_name}: feature_info names modules that are not tap points: {missing}")
        return captured

    def forward(self, x: torch.Tensor) -> torch.Tensor | AuxOutputs:
        self.check_input(x)
        features, aux_input = self._forward_cells(x)
        logits = self.forward_head(features)
        if self.training and self.aux_head is not None and self.num_classes and aux_input is not None:
            return AuxOutputs(logits, (self.aux_head(aux_input),), (AUX_WEIGHT,))
        return logits

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier, and the auxiliary head's, by fresh ones with ``num_classes`` outputs."""
        super().reset_classifier(num_classes)
        if self.aux_head is None:
            return
        self.aux_head.fc = self.new_classifier(768, num_classes)

    def remap_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Translate timm's and Cadene's NASNet keys (ports of the TensorFlow-slim weights) to these modules' names.

        They keep a cell's previous-input projection in the cell itself (``conv_prev_1x1``, or ``path_1``,
        ``path_2`` and ``final_path_bn`` for a factorized reduction); here it is one module, ``prev_proj``. Cadene's
        NASNet-A Mobile also numbers its normal cells as if every stack held six (cell_0-3, 6-9, 12-15); here they
        are numbered in order, as in TensorFlow-slim. Everything else has the same name; keys already in this form
        pass unchanged.
        """
        rules = [
            (re.compile(r"^(\w+)\.conv_prev_1x1\."), r"\1.prev_proj."),
            (re.compile(r"^(\w+)\.(path_[12])\.conv\."), r"\1.prev_proj.\2."),
            (re.compile(r"^(\w+)\.final_path_bn\."), r"\1.prev_proj.bn."),
        ]
        n = self.cfg.cells_per_stack
        cell_key = re.compile(r"^cell_(\d+)\.")
        numbers = {int(m.group(1)) for key in state if (m := cell_key.match(key))}
        if numbers and max(numbers) >= 3 * n and n < 6:
            renumber = {6 * stack + j: n * stack + j for stack in range(3) for j in range(n)}
            rules.append((cell_key, lambda m: f"cell_{renumber.get(int(m.group(1)), int(m.group(1)))}."))
        out = {}
        for key, value in state.items():
            for pattern, replacement in rules:
                key = pattern.sub(replacement, key)
            out[key] = value
        return out


# ----------------------------------------------------------------------------------------------------------------
# The registered variants.

_ZOPH_2018 = Paper(
    "Barret Zoph, Vijay Vasudevan, Jonathon Shlens, Quoc V. Le",
    "Learning Transferable Architectures for Scalable Image Recognition",
    2018,
    "CVPR",
    "https://arxiv.org/abs/1707.07012",
)
# The TensorFlow-slim weights expect Inception preprocessing: pixels scaled to [-1, 1].
_INCEPTION_NORM: dict[str, Any] = {"num_classes": 1000, "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}


def _accuracy(top1: float, top5: float, source: str, note: str) -> tuple[Reported, ...]:
    return (
        Reported("ImageNet", "top-1 accuracy", top1, source, note),
        Reported("ImageNet", "top-5 accuracy", top5, source, note),
    )


_VARIANTS = [
    # TensorFlow-slim's mobile_imagenet_config: 44 filters per cell, stem multiplier 1.
    Variant(
        "nasnet_a_mobile",
        NASNetConfig(cells_per_stack=4, penultimate_filters=1056, stem_filters=32, image_size=224),
        _ZOPH_2018,
        {**_INCEPTION_NORM, "input_size": (3, 224, 224)},
        _accuracy(74.0, 91.6, "Table 3", "single crop, 224x224"),
        "NASNet-A (4 @ 1056): 5.3M parameters and 564M multiply-adds in the paper. Trained with the auxiliary head "
        "(aux_head=True, loss weight 0.4) and no drop-path.",
    ),
    # TensorFlow-slim's large_imagenet_config: 168 filters per cell, stem multiplier 3, skip_reduction_layer_input.
    Variant(
        "nasnet_a_large",
        NASNetConfig(
            cells_per_stack=6, penultimate_filters=4032, stem_filters=96, skip_reduction_input=True, image_size=331
        ),
        _ZOPH_2018,
        {**_INCEPTION_NORM, "input_size": (3, 331, 331)},
        _accuracy(82.7, 96.2, "Table 2", "single crop, 331x331"),
        "NASNet-A (6 @ 4032): 88.9M parameters and 23.8B multiply-adds in the paper. Trained with the auxiliary "
        "head (aux_head=True, loss weight 0.4) and ScheduledDropPath with drop_path_rate=0.3 (keep probability 0.7).",
    ),
]

register_family("nasnet", NASNet, _VARIANTS)
