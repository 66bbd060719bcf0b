"""FractalNet: depth from a self-similar expansion rule instead of residual connections.

Larsson, Maire and Shakhnarovich. FractalNet: Ultra-Deep Neural Networks without Residuals. ICLR 2017.

A fractal block of C columns is defined by f_1(z) = conv(z) and f_{C+1}(z) = join(f_C(f_C(z)), conv(z)), where join
is the element-wise mean of its inputs. Column c (1 = shallowest) holds 2^(c-1) convolutions, the block
2^C - 1 in all; B blocks with 2x2 max-pooling between them give a deepest column of B * 2^(C-1) convolutions. Every
signal passes through a convolution and a ReLU before the next layer sees it: there is no pass-through path.

Two regularisers act on the joins during training. Local drop-path drops each input of a join with probability
0.15, keeping at least one; global drop-path selects a single column for the whole network. The paper alternates
them per mini-batch, 50% each. At test time every join averages all its inputs, or ``column=c`` runs column c alone:
the "deepest column alone" of Table 1, and the shallower columns as fast "anytime" answers.

The layout follows the authors' generator (gustavla/fractalnet, ``generation/fractalnet.py``): each convolution is
3x3 with a bias, followed by dropout, batch normalisation without affine parameters and ReLU (their Caffe "conv"
macro); the last level of each block max-pools every column before the final join (the paper's figure draws one
pooling after the join, a different function with max-pooling); a fully connected layer classifies the 1x1 map left
after five poolings of a 32x32 image. Like the authors' join layer, drop-path masks the join inputs of a mini-batch
while every column is still computed, so batch norm statistics stay current for all of them.

Parameter counts: the CIFAR network (B=5, C=3, 64-128-256-512-512 channels) has 33,714,314 parameters with this
layout; Table 1 prints 38.6M, which no reading of the paper's description reaches (reimplementations count 33.7M
too), so the table's figure is not reproduced.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence, Set
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn as nn

from convzoo.models.base import ConvNet, FeatureInfo, HeadNames, run_taps
from convzoo.registry import CIFAR10_DEFAULTS, Paper, Variant, cifar_error, register_family


@dataclass(frozen=True)
class FractalNetConfig:
    """A FractalNet.

    Attributes:
        columns: Columns C of every block; the deepest has 2^(C-1) convolutions per block.
        channels: Filters of each block; their number is the number of blocks B.
        drop_rates: Dropout after every convolution of each block (0, 0.1, 0.2, 0.3, 0.4 in the paper).
        local_drop_rate: Probability that local drop-path drops an input of a join (at least one is kept).
        global_drop_ratio: Share of training mini-batches that use global drop-path (one column for the whole
            network) instead of local drop-path.
        column: Run only this column (1 = shallowest, C = deepest); None runs the whole fractal.
    """

    columns: int = 3
    channels: tuple[int, ...] = (64, 128, 256, 512, 512)
    drop_rates: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4)
    local_drop_rate: float = 0.15
    global_drop_ratio: float = 0.5
    column: int | None = None

    def validate(self, name: str) -> None:
        """Raise a ValueError naming ``name`` if this configuration cannot be built."""

        def fail(reason: str) -> None:
            raise ValueError(f"{name}: {reason}")

        if self.columns < 1:
            fail(f"a fractal block needs at least one column; got columns={self.columns}")
        if not self.channels or any(c < 1 for c in self.channels):
            fail(f"every block needs a positive number of filters; got channels={self.channels}")
        if len(self.drop_rates) != len(self.channels):
            fail(f"drop_rates has {len(self.drop_rates)} entries but there are {len(self.channels)} blocks")
        if any(not 0.0 <= p < 1.0 for p in self.drop_rates):
            fail(f"drop_rates must lie in [0, 1); got {self.drop_rates}")
        if not 0.0 <= self.local_drop_rate <= 1.0 or not 0.0 <= self.global_drop_ratio <= 1.0:
            fail("local_drop_rate and global_drop_ratio must lie in [0, 1]")
        check_column(name, self.column, self.columns)


def check_column(name: str, column: int | None, columns: int) -> None:
    """Raise a ValueError unless ``column`` is None or one of the columns 1..``columns``."""
    if column is not None and not (isinstance(column, int) and 1 <= column <= columns):
        raise ValueError(f"{name}: column must be None or an integer from 1 (shallowest) to {columns}; got {column!r}")


def fractal_join(inputs: Sequence[torch.Tensor], keep: Sequence[bool] | torch.Tensor | None = None) -> torch.Tensor:
    """The element-wise mean of the kept inputs (all of them when ``keep`` is None; ``keep`` may be a bool tensor).

    Dropped inputs enter with weight zero rather than being left out, so the columns behind them still receive
    a (zero) gradient and stay part of the graph, as in the authors' join layer.
    """
    stacked = torch.stack(list(inputs))
    if keep is None:
        return stacked.mean(0)
    if isinstance(keep, torch.Tensor):
        weights = keep.to(dtype=stacked.dtype, device=stacked.device)
    else:
        weights = torch.tensor(keep, dtype=stacked.dtype, device=stacked.device)
    return (stacked * weights.view(-1, *[1] * (stacked.dim() - 1))).sum(0) / weights.sum()


def sample_local_keep(num_inputs: int, drop_rate: float) -> list[bool]:
    """Local drop-path for one join: drop each input with probability ``drop_rate``, but keep at least one."""
    keep = (torch.rand(num_inputs) >= drop_rate).tolist()
    if not any(keep):
        keep[int(torch.randint(num_inputs, ()))] = True
    return keep


def sample_join_keep(active: Sequence[int], column: torch.Tensor, drop_rate: float) -> torch.Tensor:
    """Drop-path for one join, drawn without Python branches on random values, as compiled training needs.

    The draws follow the same distribution as `sample_local_keep` and `FractalNet`'s global draw, but not the same
    random stream: every draw is taken, and the mini-batch's mode decides which is used.

    Args:
        active: The (0-based) columns that meet at the join.
        column: A 0-d integer tensor: the column (1-based) of global drop-path for this mini-batch, or 0 for local
            drop-path.
        drop_rate: Local drop-path probability per input.

    Returns:
        A bool mask over ``active``: the inputs the join keeps (at least one).
    """
    n, device = len(active), column.device
    local = torch.rand(n, device=device) >= drop_rate
    fallback = torch.arange(n, device=device) == torch.randint(n, (), device=device)
    local = torch.where(local.any(), local, fallback)
    # A join that the chosen column does not reach only feeds joins that drop it: average its inputs, as eagerly.
    chosen = torch.tensor(list(active), device=device) == column - 1
    chosen = torch.where(chosen.any(), chosen, torch.ones_like(chosen))
    return torch.where(column > 0, chosen, local)


def expansion_joins(columns: int) -> list[int]:
    """How many inputs each successive join of f_C has (1: a level without a join), from the expansion rule.

    f_1 is one convolution; f_{C+1} runs f_C twice on the deep side and, at the end, joins the new shallow column.
    """
    if columns == 1:
        return [1]
    inner = expansion_joins(columns - 1)
    return inner + inner[:-1] + [inner[-1] + 1]


class ConvUnit(nn.Sequential):
    """3x3 convolution (with bias), dropout, batch norm without affine parameters, ReLU: the authors' Caffe unit."""

    def __init__(self, in_chs: int, out_chs: int, drop_rate: float) -> None:
        super().__init__(
            OrderedDict(
                conv=nn.Conv2d(in_chs, out_chs, 3, padding=1),
                drop=nn.Dropout(drop_rate) if drop_rate else nn.Identity(),
                norm=nn.BatchNorm2d(out_chs, affine=False),
                act=nn.ReLU(inplace=True),
            )
        )


class FractalBlock(nn.Module):
    """One fractal block f_C, followed by 2x2 max-pooling of every column before the last join.

    Args:
        in_chs: Input channels.
        out_chs: Filters of every convolution.
        columns: C.
        drop_rate: Dropout after each convolution.
        local_drop_rate: Local drop-path probability per join input.
    """

    def __init__(self, in_chs: int, out_chs: int, *, columns: int, drop_rate: float, local_drop_rate: float) -> None:
        super().__init__()
        # columns[c - 1] is column c, a chain of 2^(c-1) units.
        self.columns = nn.ModuleList(
            nn.Sequential(*[ConvUnit(in_chs if i == 0 else out_chs, out_chs, drop_rate) for i in range(2 ** (c - 1))])
            for c in range(1, columns + 1)
        )
        self.pool = nn.MaxPool2d(2, stride=2)
        self.local_drop_rate = local_drop_rate
        self.num_columns = columns
        # Level l (0-based) of the deepest column: column c convolves there when 2^(C-c) divides l + 1, and the
        # columns that just convolved are joined. The active columns are always the deepest ones.
        self.schedule: list[tuple[int, ...]] = [
            tuple(c for c in range(columns) if (level + 1) % 2 ** (columns - 1 - c) == 0)
            for level in range(2 ** (columns - 1))
        ]
        self.out_chs = out_chs

    def column_path(self, column: int) -> nn.Sequential:
        """Column ``column`` alone: its convolutions and the pooling, a plain network."""
        return nn.Sequential(*self.columns[column - 1], self.pool)

    def forward(self, x: torch.Tensor, column: int | torch.Tensor | None = None) -> torch.Tensor:
        """Run the block; ``column`` as in `FractalNet`, or in training a tensor drawn by `FractalNet.draw_column`."""
        if isinstance(column, int) and not self.training:
            x = self.columns[column - 1](x)
            return self.pool(x)
        states = [x] * self.num_columns
        used = [0] * self.num_columns
        last = len(self.schedule) - 1
        for level, active in enumerate(self.schedule):
            outs = []
            for c in active:
                out = self.columns[c][used[c]](states[c])
                outs.append(out)
                used[c] += 1
            if level == last:
                outs = [self.pool(o) for o in outs]
            joined = self._join(outs, active, column)
            for c in active:
                states[c] = joined
        return states[0]

    def _join(
        self, outs: list[torch.Tensor], active: tuple[int, ...], column: int | torch.Tensor | None
    ) -> torch.Tensor:
        if len(outs) == 1:
            return outs[0]
        if not self.training:
            return fractal_join(outs)
        if isinstance(column, torch.Tensor):
            return fractal_join(outs, sample_join_keep(active, column, self.local_drop_rate))
        if column is not None:
            # Global drop-path: only the selected column passes. Joins it does not take part in feed only joins
            # that will drop them, so what they average does not matter.
            keep = [c == column - 1 for c in active]
            return fractal_join(outs, keep if any(keep) else None)
        return fractal_join(outs, sample_local_keep(len(outs), self.local_drop_rate))


class FractalNet(ConvNet):
    """A FractalNet built from a `FractalNetConfig`; the constructor takes `ConvNet`'s arguments.

    ``model.column`` (or ``column=`` when building) restricts the network to one column: at evaluation only that
    column is computed; in training the whole fractal runs with global drop-path fixed to that column.
    """

    head_names = HeadNames(pool="global_pool", drop=None, fc="fc")

    def __init__(
        self, cfg: FractalNetConfig, *, num_classes: int = 10, in_chans: int = 3, model_name: str = "fractalnet"
    ) -> None:
        super().__init__(cfg, num_classes=num_classes, in_chans=in_chans, model_name=model_name)
        self._column = cfg.column

        self.block_names: list[str] = []
        self.feature_info: list[FeatureInfo] = []
        chs, reduction = in_chans, 1
        for i, (out_chs, drop_rate) in enumerate(zip(cfg.channels, cfg.drop_rates)):
            block = FractalBlock(
                chs, out_chs, columns=cfg.columns, drop_rate=drop_rate, local_drop_rate=cfg.local_drop_rate
            )
            name = f"block{i + 1}"
            self.add_module(name, block)
            self.block_names.append(name)
            chs, reduction = out_chs, reduction * 2
            self.feature_info.append(FeatureInfo(chs, reduction, name))
        # Every block halves with floor: 32x32 is the smallest image that keeps a pixel after five blocks.
        self.min_input_size = reduction
        # The paper's fully connected layer sees the 1x1 map of a 32x32 input; pooling first also takes larger ones.
        self.init_head(chs)
        self._init_weights()

    def _init_weights(self) -> None:
        if self.block1.columns[0][0].conv.weight.is_meta:
            return  # built on the meta device for analysis: there are no values to initialise
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                _xavier_(m)
        if isinstance(self.fc, nn.Linear):
            self.init_classifier(self.fc)

    def init_classifier(self, fc: nn.Linear) -> None:
        """The same filler as the convolutions."""
        _xavier_(fc)

    @property
    def column(self) -> int | None:
        """The single column the network runs (1 = shallowest), or None for the whole fractal."""
        return self._column

    @column.setter
    def column(self, column: int | None) -> None:
        check_column(self.model_name, column, self.cfg.columns)
        self._column = column

    def blocks(self) -> list[FractalBlock]:
        """The fractal blocks, from the input side."""
        return [getattr(self, name) for name in self.block_names]

    def draw_column(self, device: torch.device) -> int | torch.Tensor | None:
        """The column for one mini-batch: ``column`` if set or in evaluation, otherwise a drop-path draw.

        One draw per mini-batch decides between global drop-path (one column everywhere) and local drop-path
        (None). Under torch.compile and torch.export the draw stays in the graph: a 0-d tensor holding the column,
        or 0 for local drop-path, which the joins read with `sample_join_keep`.
        """
        if self._column is not None or not self.training:
            return self._column
        columns = self.cfg.columns
        if torch.compiler.is_compiling():
            is_global = torch.rand((), device=device) < self.cfg.global_drop_ratio
            column = torch.randint(1, columns + 1, (), device=device)
            return torch.where(is_global, column, torch.zeros_like(column))
        if float(torch.rand(())) < self.cfg.global_drop_ratio:
            return int(torch.randint(1, columns + 1, ()))
        return None

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        column = self.draw_column(x.device)
        for block in self.blocks():
            x = block(x, column)
        return x

    def forward_taps(self, x: torch.Tensor, names: Set[str], *, stop_early: bool = True) -> dict[str, torch.Tensor]:
        self.check_input(x)
        column = self.draw_column(x.device)
        blocks = [(name, partial(getattr(self, name), column=column)) for name in self.block_names]
        return run_taps(blocks, x, names, stop_early=stop_early, model_name=self.model_name)


def _xavier_(layer: nn.Conv2d | nn.Linear) -> None:
    # Caffe's "xavier" filler of the authors' files (uniform, variance 1 / fan-in) and a zero bias.
    nn.init.kaiming_uniform_(layer.weight, nonlinearity="linear")
    nn.init.zeros_(layer.bias)


# ----------------------------------------------------------------------------------------------------------------
# The registered variant.

_LARSSON_2017 = Paper(
    "Gustav Larsson, Michael Maire, Gregory Shakhnarovich",
    "FractalNet: Ultra-Deep Neural Networks without Residuals",
    2017,
    "ICLR",
    "https://arxiv.org/abs/1605.07648",
)

# Table 1, FractalNet (20 layers): C10+/C100+ are standard augmentation (translation, mirroring), C10/C100 none.
_REPORTED = (
    cifar_error(4.60, 23.73, "Table 1", "C10+/C100+, with drop-path and dropout")
    + cifar_error(4.68, 24.32, "Table 1", "C10+/C100+, deepest column alone (column=3)")
    + cifar_error(5.22, 23.30, "Table 1", "C10+/C100+, without drop-path or dropout")
    + cifar_error(7.33, 28.20, "Table 1", "no augmentation, with drop-path and dropout")
    + cifar_error(7.27, 29.05, "Table 1", "no augmentation, deepest column alone (column=3)")
    + cifar_error(10.18, 35.34, "Table 1", "no augmentation, without drop-path or dropout")
)

_VARIANTS = [
    Variant(
        "fractalnet_20",
        FractalNetConfig(),
        _LARSSON_2017,
        CIFAR10_DEFAULTS,
        _REPORTED,
        "B=5 blocks of C=3 columns (deepest column 5 x 4 = 20 convolutions), 64-128-256-512-512 filters, dropout "
        "0-0.4 by block, local drop-path 0.15 and global drop-path on half the mini-batches. 33,714,314 parameters "
        "with CIFAR-10's 10 classes; Table 1 prints 38.6M, which this layout (the authors' generator's) does not reach",
    ),
]

register_family("fractalnet", FractalNet, _VARIANTS)
