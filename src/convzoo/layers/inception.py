"""Inception modules (Szegedy et al., "Going Deeper with Convolutions", CVPR 2015, section 4 and Figure 2).

- `NaiveInception` (Figure 2a): 1x1, 3x3 and 5x5 convolutions and a 3x3 max-pool read the same input and their
  outputs are concatenated. The pool branch passes every input channel through, so the module can only widen, and
  the 3x3 and 5x5 convolutions run on the full input width.
- `Inception` (Figure 2b, "with dimension reductions"): 1x1 convolutions shrink the input before the 3x3 and 5x5
  convolutions and project the pooled branch. This is the module GoogLeNet stacks nine times (Table 1).

On a 28x28x256 input with 128 1x1, 192 3x3 and 96 5x5 filters the naive module costs 854,196,224 multiply-adds;
with 64-wide reductions before the 3x3 and 5x5 convolutions and a 64-wide pool projection it costs 271,351,808
(tests/test_googlenet.py works both out with `convzoo.count_macs`).

`ConvNormAct` is the convolution unit both Inception networks are built from; its state_dict keys (``conv.*``,
``bn.*``) are those of torchvision's ``BasicConv2d``.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from convzoo.registry import IMAGENET_MEAN, IMAGENET_STD


class ConvNormAct(nn.Module):
    """Convolution, optional batch norm, ReLU.

    Args:
        in_chs: Input channels.
        out_chs: Output channels.
        kernel_size: Kernel size, an int or (height, width) for the factorised 1xn / nx1 convolutions.
        stride: Stride.
        padding: Zero padding, an int or (height, width).
        norm: Batch norm after the convolution, which then has no bias. Without it the convolution has a bias, as
            in the 2014 GoogLeNet, which predates batch normalisation.
        eps: Batch-norm epsilon. 1e-3 is TensorFlow's default, kept by the TensorFlow-trained Inception weights
            that torchvision converted.
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel_size: int | tuple[int, int],
        *,
        stride: int = 1,
        padding: int | tuple[int, int] = 0,
        norm: bool = True,
        eps: float = 1e-3,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride=stride, padding=padding, bias=not norm)
        self.bn = nn.BatchNorm2d(out_chs, eps=eps) if norm else nn.Identity()
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class NaiveInception(nn.Module):
    """The Inception module without dimension reductions (Figure 2a).

    Output channels: ``ch1x1 + ch3x3 + ch5x5 + in_chs`` (the max-pool branch keeps every input channel).

    Args:
        in_chs: Input channels.
        ch1x1: Filters of the 1x1 branch.
        ch3x3: Filters of the 3x3 branch.
        ch5x5: Filters of the 5x5 branch.
        norm: Batch norm after each convolution (see `ConvNormAct`).
    """

    def __init__(self, in_chs: int, ch1x1: int, ch3x3: int, ch5x5: int, *, norm: bool = True) -> None:
        super().__init__()
        self.branch1 = ConvNormAct(in_chs, ch1x1, 1, norm=norm)
        self.branch2 = ConvNormAct(in_chs, ch3x3, 3, padding=1, norm=norm)
        self.branch3 = ConvNormAct(in_chs, ch5x5, 5, padding=2, norm=norm)
        self.branch4 = nn.MaxPool2d(3, stride=1, padding=1)
        self.out_chs = ch1x1 + ch3x3 + ch5x5 + in_chs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class Inception(nn.Module):
    """The Inception module with dimension reductions (Figure 2b): one row of GoogLeNet's Table 1.

    Output channels: ``ch1x1 + ch3x3 + ch5x5 + pool_proj``. Branch names follow torchvision's ``Inception``
    (``branch1`` .. ``branch4``), so its state_dicts load unchanged.

    Args:
        in_chs: Input channels.
        ch1x1: Filters of the 1x1 branch ("#1x1").
        ch3x3_reduce: 1x1 filters before the 3x3 convolution ("#3x3 reduce").
        ch3x3: Filters of the 3x3 convolution ("#3x3").
        ch5x5_reduce: 1x1 filters before the 5x5 convolution ("#5x5 reduce").
        ch5x5: Filters of the 5x5 convolution ("#5x5").
        pool_proj: 1x1 filters after the 3x3 max-pool ("pool proj").
        ch5x5_kernel: Kernel of the "5x5" convolution. The paper's is 5; torchvision's GoogLeNet uses 3, which its
            converted weights need (pytorch/vision issue 906).
        norm: Batch norm after each convolution (see `ConvNormAct`).
    """

    def __init__(
        self,
        in_chs: int,
        ch1x1: int,
        ch3x3_reduce: int,
        ch3x3: int,
        ch5x5_reduce: int,
        ch5x5: int,
        pool_proj: int,
        *,
        ch5x5_kernel: int = 5,
        norm: bool = True,
    ) -> None:
        super().__init__()
        if ch5x5_kernel % 2 == 0 or ch5x5_kernel < 1:
            raise ValueError(f"the 5x5 branch needs an odd kernel to keep the grid size; got {ch5x5_kernel}")
        self.branch1 = ConvNormAct(in_chs, ch1x1, 1, norm=norm)
        self.branch2 = nn.Sequential(
            ConvNormAct(in_chs, ch3x3_reduce, 1, norm=norm),
            ConvNormAct(ch3x3_reduce, ch3x3, 3, padding=1, norm=norm),
        )
        self.branch3 = nn.Sequential(
            ConvNormAct(in_chs, ch5x5_reduce, 1, norm=norm),
            ConvNormAct(ch5x5_reduce, ch5x5, ch5x5_kernel, padding=ch5x5_kernel // 2, norm=norm),
        )
        self.branch4 = nn.Sequential(
            nn.MaxPool2d(3, stride=1, padding=1),
            ConvNormAct(in_chs, pool_proj, 1, norm=norm),
        )
        self.out_chs = ch1x1 + ch3x3 + ch5x5 + pool_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


def pad_to_size(x: torch.Tensor, size: int) -> torch.Tensor:
    """Zero-pad a feature map evenly on all sides up to at least ``size`` x ``size``; larger maps pass unchanged.

    An auxiliary classifier is laid out for the grid of the network's design input (14x14 in GoogLeNet, 17x17 in
    Inception v3), and its fixed pooling windows and kernels do not fit a smaller grid. Padding treats the missing
    border as zero (post-ReLU: inactive) units, so the head is defined for every input the trunk accepts and is
    unchanged at and above the design size.
    """
    height, width = x.shape[-2:]
    pad_h, pad_w = max(0, size - height), max(0, size - width)
    if not pad_h and not pad_w:
        return x
    return F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))


def adapt_aux_state(
    state: dict[str, torch.Tensor],
    model: nn.Module,
    *,
    aux_prefixes: tuple[str, ...],
    aux_out_layers: tuple[str, ...],
    classifier: str = "fc",
) -> dict[str, torch.Tensor]:
    """Fit a checkpoint's auxiliary classifiers to a model, for ``remap_state_dict``.

    - A model built without auxiliary heads drops them from the checkpoint (torchvision's checkpoints carry them).
    - When the checkpoint's main classifier has another number of classes than the model's, the auxiliary heads'
      output layers keep the model's fresh initialisation, as the main classifier does under
      ``load_weights(..., skip_classifier="auto")``; their hidden layers still load.

    Args:
        state: The checkpoint.
        model: The network it is loaded into.
        aux_prefixes: Qualified names of the auxiliary heads, each ending in ``"."``.
        aux_out_layers: Qualified names of the heads' final linear layers, each ending in ``"."``.
        classifier: Qualified name of the main classifier.
    """
    own = model.state_dict()
    if not any(k.startswith(aux_prefixes) for k in own):
        return {k: v for k, v in state.items() if not k.startswith(aux_prefixes)}
    weight = f"{classifier}.weight"
    if weight in state and weight in own and state[weight].shape != own[weight].shape:
        return {k: (own[k] if k.startswith(aux_out_layers) and k in own else v) for k, v in state.items()}
    return state


__all__ = ["ConvNormAct", "Inception", "NaiveInception", "adapt_aux_state", "pad_to_size"]


def imagenet_to_unit_range(x: torch.Tensor) -> torch.Tensor:
    """Undo ImageNet mean/std normalisation and rescale to [-1, 1]: ``(x * std + mean - 0.5) / 0.5``.

    The input convention of the TensorFlow-trained Inception weights that torchvision converted ("transform_input").
    The constants are worked out in double precision, as torchvision does, so converted weights see the same input.
    """
    scale = x.new_tensor([s / 0.5 for s in IMAGENET_STD]).view(1, 3, 1, 1)
    shift = x.new_tensor([(m - 0.5) / 0.5 for m in IMAGENET_MEAN]).view(1, 3, 1, 1)
    return x * scale + shift
