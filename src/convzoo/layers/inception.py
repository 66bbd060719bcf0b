"""Inception modules (Szegedy et al., "Going Deeper with Convolutions", CVPR 2015, section 4 and Figure 2), and what
both Inception networks (GoogLeNet, Inception v3) share.

- `NaiveInception` (Figure 2a): 1x1, 3x3 and 5x5 convolutions and a 3x3 max-pool read the same input and their
  outputs are concatenated. The pool branch passes every input channel through, so the module can only widen, and
  the 3x3 and 5x5 convolutions run on the full input width.
- `Inception` (Figure 2b, "with dimension reductions"): 1x1 convolutions shrink the input before the 3x3 and 5x5
  convolutions and project the pooled branch. This is the module GoogLeNet stacks nine times (Table 1).

On a 28x28x256 input with 128 1x1, 192 3x3 and 96 5x5 filters the naive module costs 854,196,224 multiply-adds;
with 64-wide reductions before the 3x3 and 5x5 convolutions and a 64-wide pool projection it costs 271,351,808
(tests/test_googlenet.py works both out with `convzoo.count_macs`).

`inception_conv` is the convolution unit both Inception networks are built from, a `ConvNormAct` whose state_dict
keys (``conv.*``, ``bn.*``) are those of torchvision's ``BasicConv2d``. `AuxHeadNet` is the base of both networks:
a trunk with auxiliary classifiers on intermediate layers.
"""

from __future__ import annotations

import abc
from collections.abc import Set
from typing import Any, ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F

from convzoo.layers.classifier import create_classifier
from convzoo.layers.conv import ConvNormAct
from convzoo.models.base import AuxOutputs, ConvNet, HeadNames, run_taps
from convzoo.registry import IMAGENET_MEAN, IMAGENET_STD


def inception_conv(
    in_chs: int,
    out_chs: int,
    kernel_size: int | tuple[int, int],
    *,
    stride: int = 1,
    padding: int | tuple[int, int] | None = None,
    norm: bool = True,
) -> ConvNormAct:
    """Convolution, optional batch norm, ReLU, with children named ``conv``, ``bn``, ``act``.

    The batch-norm epsilon is 1e-3, TensorFlow's default, kept by the TensorFlow-trained Inception weights that
    torchvision converted. Arguments are those of `ConvNormAct`: padding None keeps the map size.
    """
    return ConvNormAct(in_chs, out_chs, kernel_size, stride=stride, padding=padding, norm=norm, eps=1e-3, named=True)


class FourBranches(nn.Module):
    """Four branches, ``branch1`` .. ``branch4``, read the same input; their outputs are concatenated channel-wise."""

    branch1: nn.Module
    branch2: nn.Module
    branch3: nn.Module
    branch4: nn.Module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch1 = self.branch1(x)
        branch2 = self.branch2(x)
        branch3 = self.branch3(x)
        branch4 = self.branch4(x)
        return torch.cat([branch1, branch2, branch3, branch4], 1)


class NaiveInception(FourBranches):
    """The Inception module without dimension reductions (Figure 2a).

    Output channels: ``ch1x1 + ch3x3 + ch5x5 + in_chs`` (the max-pool branch keeps every input channel).

    Args:
        in_chs: Input channels.
        ch1x1: Filters of the 1x1 branch.
        ch3x3: Filters of the 3x3 branch.
        ch5x5: Filters of the 5x5 branch.
        norm: Batch norm after each convolution (see `inception_conv`).
    """

    def __init__(self, in_chs: int, ch1x1: int, ch3x3: int, ch5x5: int, *, norm: bool = True) -> None:
        super().__init__()
        self.branch1 = inception_conv(in_chs, ch1x1, 1, norm=norm)
        self.branch2 = inception_conv(in_chs, ch3x3, 3, padding=1, norm=norm)
        self.branch3 = inception_conv(in_chs, ch5x5, 5, padding=2, norm=norm)
        self.branch4 = nn.MaxPool2d(3, stride=1, padding=1)
        self.out_chs = ch1x1 + ch3x3 + ch5x5 + in_chs


class Inception(FourBranches):
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
        norm: Batch norm after each convolution (see `inception_conv`).
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
        self.branch1 = inception_conv(in_chs, ch1x1, 1, norm=norm)
        self.branch2 = nn.Sequential(
            inception_conv(in_chs, ch3x3_reduce, 1, norm=norm),
            inception_conv(ch3x3_reduce, ch3x3, 3, padding=1, norm=norm),
        )
        self.branch3 = nn.Sequential(
            inception_conv(in_chs, ch5x5_reduce, 1, norm=norm),
            inception_conv(ch5x5_reduce, ch5x5, ch5x5_kernel, padding=ch5x5_kernel // 2, norm=norm),
        )
        self.branch4 = nn.Sequential(
            nn.MaxPool2d(3, stride=1, padding=1),
            inception_conv(in_chs, pool_proj, 1, norm=norm),
        )
        self.out_chs = ch1x1 + ch3x3 + ch5x5 + pool_proj


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


def imagenet_to_unit_range(x: torch.Tensor) -> torch.Tensor:
    """Undo ImageNet mean/std normalisation and rescale to [-1, 1]: ``(x * std + mean - 0.5) / 0.5``.

    The input convention of the TensorFlow-trained Inception weights that torchvision converted ("transform_input").
    The constants are worked out in double precision, as torchvision does, so converted weights see the same input.
    """
    scale = x.new_tensor([s / 0.5 for s in IMAGENET_STD]).view(1, 3, 1, 1)
    shift = x.new_tensor([(m - 0.5) / 0.5 for m in IMAGENET_MEAN]).view(1, 3, 1, 1)
    return x * scale + shift


class AuxHeadNet(ConvNet):
    """A network with auxiliary classifiers on intermediate layers of its trunk: GoogLeNet and Inception v3.

    The trunk runs the modules of ``layer_names`` in order; ``aux_taps`` maps a trunk layer to the attribute of the
    auxiliary classifier that reads its output, and ``aux_classifier`` names each head's output layer. In training
    mode the forward returns `AuxOutputs`; in evaluation mode the heads are not run and the forward returns the main
    logits. The main head is `ConvNet`'s pooled head under torchvision's names, ``avgpool``, ``dropout`` and ``fc``.

    The configuration holds ``aux_logits``, ``aux_weight`` and ``transform_input``. Subclasses build the trunk with
    `add_layer`, then the heads with `_build_aux_heads` and `init_head`, and implement `_make_aux_head` and
    `_init_weights`.

    Args:
        cfg: The architecture.
        num_classes: Classifier outputs; 0 leaves out the classifier and the auxiliary classifiers.
        in_chans: Input image channels.
        model_name: Name used in error messages.
    """

    head_names = HeadNames(pool="avgpool", drop="dropout", fc="fc")
    aux_taps: ClassVar[dict[str, str]]
    aux_classifier: ClassVar[str]

    def __init__(self, cfg: Any, *, num_classes: int, in_chans: int, model_name: str) -> None:
        super().__init__(cfg, num_classes=num_classes, in_chans=in_chans, model_name=model_name)
        if cfg.transform_input and in_chans != 3:
            raise ValueError(f"{model_name}: transform_input maps RGB ImageNet statistics and needs in_chans=3")
        self.layer_names: list[str] = []

    @abc.abstractmethod
    def _make_aux_head(self, in_chs: int) -> nn.Module:
        """An auxiliary classifier with ``num_classes`` outputs on a trunk layer of ``in_chs`` channels."""

    @abc.abstractmethod
    def _init_weights(self, root: nn.Module | None = None) -> None:
        """Initialise the modules of ``root`` (default: the whole network) as the paper or the peer does."""

    def add_layer(self, name: str, module: nn.Module) -> None:
        """Append ``module`` to the trunk under ``name``."""
        self.add_module(name, module)
        self.layer_names.append(name)

    def aux_heads(self) -> list[nn.Module]:
        """The auxiliary classifiers the network has, from the earliest tap to the latest."""
        heads = (getattr(self, name) for name in self.aux_taps.values())
        return [head for head in heads if head is not None]

    def _build_aux_heads(self) -> None:
        """Build every auxiliary classifier, on the network's device and in its dtype, or set it to None where the
        network has no classes or is configured without them."""
        like = next(self.parameters())
        for tap, name in self.aux_taps.items():
            head = None
            if self.cfg.aux_logits and self.num_classes:
                head = self._make_aux_head(getattr(self, tap).out_chs).to(device=like.device, dtype=like.dtype)
            setattr(self, name, head)

    def _forward_trunk(self, x: torch.Tensor, aux_out: list[torch.Tensor] | None) -> torch.Tensor:
        self.check_input(x)
        if self.cfg.transform_input:
            x = imagenet_to_unit_range(x)
        for name in self.layer_names:
            x = getattr(self, name)(x)
            if aux_out is not None and name in self.aux_taps:
                aux_out.append(getattr(self, self.aux_taps[name])(x))
        return x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward_trunk(x, None)

    def trunk_layers(self) -> list[tuple[str, nn.Module]]:
        return [(name, getattr(self, name)) for name in self.layer_names]

    def forward_taps(self, x: torch.Tensor, names: Set[str], *, stop_early: bool = True) -> dict[str, torch.Tensor]:
        self.check_input(x)
        if self.cfg.transform_input:
            x = imagenet_to_unit_range(x)
        return run_taps(self.trunk_layers(), x, names, stop_early=stop_early, model_name=self.model_name)

    def forward(self, x: torch.Tensor) -> torch.Tensor | AuxOutputs:
        if not self.training or not self.aux_heads():
            return super().forward(x)
        aux: list[torch.Tensor] = []
        x = self._forward_trunk(x, aux)
        logits = self.forward_head(x)
        return AuxOutputs(logits, tuple(aux), (self.cfg.aux_weight,) * len(aux))

    def reset_classifier(self, num_classes: int) -> None:
        """Give the classifier and the auxiliary classifiers ``num_classes`` fresh outputs.

        The auxiliary heads keep their hidden layers; with ``num_classes=0`` they are removed along with the
        classifier, and a later reset with classes rebuilds them from scratch. Every new layer is built before any
        is initialised, so the random draws follow the order of construction.
        """
        self.check_num_classes(num_classes)
        self.num_classes = num_classes
        like = next(self.parameters())
        fc = create_classifier(self.num_features, num_classes, device=like.device, dtype=like.dtype)
        setattr(self, self.head_names.fc, fc)
        fresh: list[nn.Module] = []
        heads = self.aux_heads()
        if not heads or not num_classes:
            self._build_aux_heads()
            fresh += self.aux_heads()
        else:
            for head in heads:
                in_features = getattr(head, self.aux_classifier).in_features
                layer = create_classifier(in_features, num_classes, device=like.device, dtype=like.dtype)
                setattr(head, self.aux_classifier, layer)
                fresh.append(layer)
        if isinstance(fc, nn.Linear) and not like.is_meta:
            self.init_classifier(fc)
        for module in fresh:
            self._init_weights(module)

    def remap_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Fit a checkpoint's auxiliary classifiers to this network (see `adapt_aux_state`)."""
        names = self.aux_taps.values()
        return adapt_aux_state(
            state,
            self,
            aux_prefixes=tuple(f"{name}." for name in names),
            aux_out_layers=tuple(f"{name}.{self.aux_classifier}." for name in names),
            classifier=self.head_names.fc,
        )


__all__ = [
    "AuxHeadNet",
    "FourBranches",
    "Inception",
    "NaiveInception",
    "adapt_aux_state",
    "imagenet_to_unit_range",
    "inception_conv",
    "pad_to_size",
]
