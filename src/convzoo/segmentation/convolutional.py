"""Convolutionalising a classifier: its fully connected layers become convolutions and its output a class heat map.

Long, Shelhamer and Darrell. Fully Convolutional Networks for Semantic Segmentation. CVPR 2015, section 3.1: "fully
connected layers can also be viewed as convolutions with kernels that cover their entire input regions". The first
fully connected layer becomes a convolution whose kernel spans the feature map it read (its weights reshaped, the
same values), the later ones 1x1 convolutions. On the classifier's own input size the network then returns its logits
as a 1x1 map; on a larger image it slides the classifier over the image and returns a coarse heat map, one score map
per class (stride 32 for AlexNet and VGG).

The fully connected head of LeNet, AlexNet, ZFNet and VGG reads the last feature map through an adaptive average
pool (torchvision's ``avgpool``, an identity at the paper's input size). Where the pool does average, at an input
size other than the one the classifier was made for, its averaging is folded into the first convolution's kernel
(`fold_adaptive_pool`), so the convolution still equals pool plus layer exactly at that size.

A network whose head is global average pooling and a linear layer (ResNet, DenseNet, GoogLeNet, ...) is already
convolutional up to the pool: the pool is dropped and the output layer applied at every position as a 1x1
convolution, so the heat map's spatial mean is the classifier's logits. Its head's dropout, which acts only in
training, is not carried over.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn as nn

from convzoo.layers.classifier import FCHead
from convzoo.layers.trunk import map_size
from convzoo.models._fchead import FCHeadNet
from convzoo.models.base import ConvNet


def _pair(value: int | Sequence[int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def fold_adaptive_pool(weight: torch.Tensor, grid: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """The kernel of a convolution equal to adaptive average pooling to ``grid`` followed by a linear layer.

    Args:
        weight: The linear layer's weight, (out, C * grid_h * grid_w), read in the order ``torch.flatten`` gives.
        grid: The pooled grid (the layer's input map).
        size: The size of the map the pool reads.

    Returns:
        A (out, C, size_h, size_w) kernel: each map pixel's share of every pooled cell's weight.
    """
    out = weight.shape[0]
    kernel = weight.reshape(out, -1, *grid)
    if tuple(size) == tuple(grid):
        return kernel
    pixels = size[0] * size[1]
    basis = torch.eye(pixels, dtype=weight.dtype, device=weight.device).reshape(pixels, 1, *size)
    shares = nn.functional.adaptive_avg_pool2d(basis, grid).reshape(*size, *grid)
    return torch.einsum("ocij,xyij->ocxy", kernel, shares)


def linear_to_conv(linear: nn.Linear, kernel: torch.Tensor | None = None) -> nn.Conv2d:
    """A convolution with the weights of ``linear``: ``kernel`` (out, C, kh, kw) if given, else 1x1.

    The weights are views of the layer's own tensors where no folding changed them, so no memory is copied.
    """
    weight = linear.weight.detach()
    kernel = weight.reshape(*weight.shape, 1, 1) if kernel is None else kernel.detach()
    out, in_chs, kh, kw = kernel.shape
    with torch.device("meta"):
        conv = nn.Conv2d(in_chs, out, (kh, kw), bias=linear.bias is not None, dtype=weight.dtype)
    conv.weight = nn.Parameter(kernel, requires_grad=linear.weight.requires_grad)
    if linear.bias is not None:
        conv.bias = nn.Parameter(linear.bias.detach(), requires_grad=linear.bias.requires_grad)
    return conv


def convolutionalize_fc(
    head: FCHead, in_chs: int, grid: tuple[int, int], map_hw: tuple[int, int], *, keep_output: bool = True
) -> nn.Sequential:
    """The layers of a fully connected head as convolutions: the first with a ``map_hw`` kernel, the rest 1x1.

    Args:
        head: The fully connected layers (activations and dropout between them are kept).
        in_chs: Channels of the feature map the head reads.
        grid: The grid the head's adaptive pool makes of that map (the first layer's input).
        map_hw: The size of the map the first layer is to read (``grid`` where the pool is an identity).
        keep_output: Convert the output layer too; False stops after the last hidden layer (FCN's fc7).
    """
    layers: list[nn.Module] = []
    children = list(head) if keep_output else list(head)[:-1]
    first = True
    for layer in children:
        if isinstance(layer, nn.Linear):
            if first:
                if layer.in_features != in_chs * grid[0] * grid[1]:
                    raise ValueError(
                        f"the first fully connected layer reads {layer.in_features} values, not the {in_chs}x"
                        f"{grid[0]}x{grid[1]} pooled map"
                    )
                kernel = fold_adaptive_pool(layer.weight.detach(), grid, map_hw).reshape(
                    layer.out_features, in_chs, *map_hw
                )
                layers.append(linear_to_conv(layer, kernel))
                first = False
            else:
                layers.append(linear_to_conv(layer))
        else:
            layers.append(layer)  # activations and dropout act elementwise on maps as on vectors
    return nn.Sequential(*layers)


class ConvolutionalClassifier(nn.Module):
    """A classifier's trunk followed by its head as convolutions: ``forward(x)`` is a (N, classes, h, w) heat map.

    Built by `convolutionalize`.

    Attributes:
        trunk: The classifier without its head; its ``forward_features`` runs first.
        head: The convolutional head.
    """

    def __init__(self, trunk: ConvNet, head: nn.Sequential, num_classes: int) -> None:
        super().__init__()
        self.trunk = trunk
        self.head = head
        self.num_classes = num_classes
        self.in_chans = trunk.in_chans
        self.model_name = f"{trunk.model_name} (convolutionalised)"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk.forward_features(x))

    def output_size(self, input_hw: Sequence[int]) -> tuple[int, int]:
        """(h, w) of the heat map for an input of ``input_hw`` pixels, traced on the meta device (nothing runs)."""
        params = {name: p.to("meta") for name, p in self.named_parameters()}
        params.update({name: b.to("meta") for name, b in self.named_buffers()})
        x = torch.zeros(1, self.in_chans, *input_hw, device="meta", dtype=next(iter(params.values())).dtype)
        with torch.no_grad():
            return tuple(torch.func.functional_call(self, params, (x,)).shape[-2:])


def _pooled_head(model: ConvNet) -> nn.Sequential:
    """The output layer of a pooled-head classifier as a 1x1 convolution (with the activation a NiN head has)."""
    fc = model.get_classifier()
    if isinstance(fc, nn.Linear) and fc.in_features == model.num_features:
        layers: list[nn.Module] = [linear_to_conv(fc)]
    elif isinstance(fc, nn.Conv2d) and fc.kernel_size == (1, 1) and fc.stride == (1, 1):
        layers = [fc]
        act = getattr(model, "head_act", None)  # NiN and SqueezeNet rectify their class maps before pooling
        if isinstance(act, nn.Module):
            layers.append(act)
    else:
        raise ValueError(
            f"cannot convolutionalise {model.model_name}: its output layer is a {type(fc).__name__}, not a linear "
            "layer or 1x1 convolution reading the pooled feature map"
        )
    head = nn.Sequential(*layers)
    _check_pooled_head(model, head)
    return head


def _check_pooled_head(model: ConvNet, head: nn.Sequential) -> None:
    # The heat map's spatial mean must be the classifier's logits; a head that is not global pooling followed by
    # per-position layers fails this on a random map.
    like = next(model.parameters())
    if like.is_meta:
        return
    was_training = model.training
    model.eval()
    try:
        gen = torch.Generator().manual_seed(0)
        features = torch.randn(2, model.num_features, 3, 3, generator=gen).to(like)
        with torch.no_grad():
            expected = model.forward_head(features)
            got = head(features).mean((2, 3))
    finally:
        model.train(was_training)
    if expected.shape != got.shape or not torch.allclose(expected, got, atol=1e-4, rtol=1e-4):
        raise ValueError(
            f"cannot convolutionalise {model.model_name}: its head is not global average pooling followed by its "
            "output layer, so there is no per-position classifier to slide over the image"
        )


def _fc_input_map(model: FCHeadNet, input_size: Sequence[int] | None) -> tuple[int, int]:
    grid = _pair(model.avgpool.output_size)
    if input_size is None:
        card = getattr(model, "card", None)
        if card is None:
            return grid
        input_size = card.input_size[1:]
    height, width = _pair(tuple(input_size)[-2:] if not isinstance(input_size, int) else input_size)
    size = (map_size(model.features, height), map_size(model.features, width))
    if min(size) < 1:
        raise ValueError(f"{model.model_name}: an input of {height}x{width} is too small for its trunk")
    return size


def convolutionalize(
    model: ConvNet, *, input_size: int | Sequence[int] | None = None, inplace: bool = False
) -> ConvolutionalClassifier:
    """Turn a classifier into a fully convolutional network whose output is a class heat map (N, C, h, w).

    Args:
        model: A classifier with a head: fully connected layers (LeNet-5, AlexNet, ZFNet, VGG) or global average
            pooling and a linear layer or 1x1 convolution (ResNet, DenseNet, NiN, ...).
        input_size: The image size, (H, W) or a side, the fully connected layers are taken to read at: the first
            becomes a convolution whose kernel is the feature map at that size. None: the model card's input size
            (``create_model`` attaches the card), or the head's pooled grid if the model has no card.
        inplace: Take ``model`` over (its classifier is removed and its weights move into the convolutions, no
            memory copied) instead of working on a copy.

    Returns:
        A `ConvolutionalClassifier`. For a fully connected head its output at ``input_size`` is a 1x1 map equal to
        the logits; for a pooled head the heat map's spatial mean equals the logits.

    Raises:
        TypeError: If ``model`` is not a convzoo classifier.
        ValueError: If it has no classifier, or a head that cannot be applied position by position.
    """
    if not isinstance(model, ConvNet):
        raise TypeError(f"convolutionalize expects a convzoo classifier (ConvNet); got {type(model).__name__}")
    if not model.num_classes:
        raise ValueError(
            f"cannot convolutionalise {model.model_name}: it has no classifier (num_classes=0); build it with classes "
            "or call reset_classifier(n) first"
        )
    if not inplace:
        model = copy.deepcopy(model)
    if isinstance(model, FCHeadNet) and isinstance(model.classifier, FCHead):
        grid = _pair(model.avgpool.output_size)
        map_hw = _fc_input_map(model, input_size)
        head = convolutionalize_fc(model.classifier, model.num_features, grid, map_hw)
    else:
        head = _pooled_head(model)
    num_classes = model.num_classes
    if head[0] is not model.get_classifier():
        model.reset_classifier(0)  # its weights now live in ``head``
    else:
        # The output layer is already a 1x1 convolution the head holds; unregister it from the trunk without
        # discarding it (reset_classifier would build an empty replacement the head does not use).
        setattr(model, _classifier_attr(model), nn.Identity())
        model.num_classes = 0
    return ConvolutionalClassifier(model, head, num_classes)


def _classifier_attr(model: ConvNet) -> str:
    fc = model.get_classifier()
    for name, child in model.named_children():
        if child is fc:
            return name
    raise ValueError(f"{model.model_name}: its output layer is not a direct child of the network")


__all__ = [
    "ConvolutionalClassifier",
    "convolutionalize",
    "convolutionalize_fc",
    "fold_adaptive_pool",
    "linear_to_conv",
]
