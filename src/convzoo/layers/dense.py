"""Building blocks of densely connected networks (Huang, Liu, van der Maaten and Weinberger, CVPR 2017).

A dense layer reads the concatenation of every earlier feature map of its block and adds ``growth_rate`` new ones;
a transition layer between blocks compresses the channels and halves the resolution. Module names follow
torchvision's DenseNet (``norm1``, ``relu1``, ``conv1``, ... ``denselayer1``, ...), so its state_dicts load as they are.

The memory-efficient mode (Pleiss, Chen, Huang, Li, van der Maaten and Weinberger, "Memory-Efficient Implementation of
DenseNets", 2017) recomputes each layer's concatenation and first BN-ReLU-convolution during the backward pass instead
of keeping them: the memory of the concatenations grows quadratically with depth, the recomputation only linearly.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint


def _norm_without_update(norm: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    """``norm(x)`` that leaves the running statistics alone.

    The recomputation of a checkpointed segment runs its batch norm a second time; in training mode that would
    update the running statistics twice per step. Here the update goes to copies, which are dropped: the output
    and the tensors kept for the backward pass are those of the first run, and the statistics are updated once.
    """
    if not norm.training or norm.running_mean is None or norm.running_var is None:
        return norm(x)
    running_mean, running_var = norm.running_mean.clone(), norm.running_var.clone()
    return F.batch_norm(x, running_mean, running_var, norm.weight, norm.bias, True, 0.0, norm.eps)


class DenseLayer(nn.Module):
    """BN-ReLU-Conv(1x1)-BN-ReLU-Conv(3x3) producing ``growth_rate`` maps (DenseNet-B), or BN-ReLU-Conv(3x3).

    Args:
        in_chs: Channels of the concatenated input.
        growth_rate: Maps this layer adds (the paper's k).
        bn_size: The bottleneck 1x1 convolution produces ``bn_size * growth_rate`` maps (4k in the paper); 0 leaves
            the bottleneck out (the basic DenseNet, whose layer is a single 3x3 convolution).
        drop_rate: Dropout after each convolution (the paper's 0.2 for data sets without augmentation).
        memory_efficient: Recompute the concatenation and the first BN-ReLU-convolution in the backward pass.
    """

    def __init__(
        self, in_chs: int, growth_rate: int, *, bn_size: int = 4, drop_rate: float = 0.0, memory_efficient: bool = False
    ) -> None:
        super().__init__()
        mid_chs = bn_size * growth_rate if bn_size else growth_rate
        self.norm1 = nn.BatchNorm2d(in_chs)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_chs, mid_chs, 1 if bn_size else 3, padding=0 if bn_size else 1, bias=False)
        self.bottleneck = bool(bn_size)
        if self.bottleneck:
            self.norm2 = nn.BatchNorm2d(mid_chs)
            self.relu2 = nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(mid_chs, growth_rate, 3, padding=1, bias=False)
        # Section 4.2 puts dropout after every convolution; torchvision only after the 3x3 one.
        self.drop = nn.Dropout(drop_rate) if drop_rate else nn.Identity()
        self.memory_efficient = memory_efficient
        self.out_chs = growth_rate

    def concat_norm_act_conv(self, *features: torch.Tensor) -> torch.Tensor:
        """The first step: concatenate the block's maps, then BN, ReLU and the first convolution."""
        x = torch.cat(features, 1)
        x = self.norm1(x)
        x = self.relu1(x)
        return self.conv1(x)

    def _checkpointed(self, features: list[torch.Tensor]) -> torch.Tensor:
        recomputing = False

        def run(*tensors: torch.Tensor) -> torch.Tensor:
            nonlocal recomputing
            x = torch.cat(tensors, 1)
            x = _norm_without_update(self.norm1, x) if recomputing else self.norm1(x)
            recomputing = True
            x = self.relu1(x)
            return self.conv1(x)

        return checkpoint(run, *features, use_reentrant=False)

    def forward(self, features: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
        features = [features] if isinstance(features, torch.Tensor) else features
        if self.memory_efficient and torch.is_grad_enabled() and any(t.requires_grad for t in features):
            x = self._checkpointed(features)
        else:
            x = self.concat_norm_act_conv(*features)
        x = self.drop(x)
        if self.bottleneck:
            x = self.norm2(x)
            x = self.relu2(x)
            x = self.conv2(x)
            x = self.drop(x)
        return x


class DenseBlock(nn.ModuleDict):
    """``num_layers`` dense layers, each reading all maps before it; outputs the concatenation of them all.

    Args:
        num_layers: Layers in the block.
        in_chs: Channels entering the block.
        growth_rate: Maps each layer adds.
        bn_size: Bottleneck width factor (0: no bottleneck).
        drop_rate: Dropout after each convolution.
        memory_efficient: Checkpoint each layer's concatenation and first BN-ReLU-convolution.
    """

    def __init__(
        self,
        num_layers: int,
        in_chs: int,
        growth_rate: int,
        *,
        bn_size: int = 4,
        drop_rate: float = 0.0,
        memory_efficient: bool = False,
    ) -> None:
        super().__init__()
        for i in range(num_layers):
            layer = DenseLayer(
                in_chs + i * growth_rate,
                growth_rate,
                bn_size=bn_size,
                drop_rate=drop_rate,
                memory_efficient=memory_efficient,
            )
            self.add_module(f"denselayer{i + 1}", layer)
        self.out_chs = in_chs + num_layers * growth_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)


class Transition(nn.Sequential):
    """BN-ReLU-Conv(1x1) to ``out_chs`` maps, then 2x2 average pooling, between two dense blocks."""

    def __init__(self, in_chs: int, out_chs: int, *, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.add_module("norm", nn.BatchNorm2d(in_chs))
        self.add_module("relu", nn.ReLU(inplace=True))
        self.add_module("conv", nn.Conv2d(in_chs, out_chs, 1, bias=False))
        if drop_rate:
            self.add_module("drop", nn.Dropout(drop_rate))
        self.add_module("pool", nn.AvgPool2d(2, stride=2))


__all__ = ["DenseBlock", "DenseLayer", "Transition"]
