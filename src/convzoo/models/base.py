"""The interface every convzoo classifier shares.

Transfer learning, probing, distillation and dense-prediction backbones build only on what is defined here:
`forward_features`, `forward_head`, `reset_classifier`, `feature_info` and `forward_intermediates`.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence, Set
from dataclasses import dataclass
from typing import ClassVar, NamedTuple, Protocol

import torch
import torch.nn as nn

from convzoo.layers.classifier import create_classifier


@dataclass(frozen=True)
class FeatureInfo:
    """One tap point of a network: the output of ``module``.

    Attributes:
        num_chs: Channels of the feature map.
        reduction: How many input pixels one feature-map step spans (the cumulative stride).
        module: Qualified name of the module whose output this is.
    """

    num_chs: int
    reduction: int
    module: str


class AuxOutputs(NamedTuple):
    """What a network with auxiliary classifiers (GoogLeNet, Inception v3) returns in training mode.

    In evaluation mode such a network returns the main logits alone, like every other classifier.

    Attributes:
        logits: The main classifier's output.
        aux_logits: The auxiliary classifiers' outputs, from the earliest tap to the latest.
        aux_weights: The weight of each auxiliary loss in the training objective (GoogLeNet: 0.3 each).
    """

    logits: torch.Tensor
    aux_logits: tuple[torch.Tensor, ...]
    aux_weights: tuple[float, ...]


def main_logits(output: torch.Tensor | AuxOutputs) -> torch.Tensor:
    """The main logits of a forward pass, whether or not it also returned auxiliary outputs."""
    return output.logits if isinstance(output, AuxOutputs) else output


def classification_loss(
    output: torch.Tensor | AuxOutputs, target: torch.Tensor, criterion: nn.Module | None = None
) -> torch.Tensor:
    """The training loss: the main loss plus the weighted auxiliary losses where the network returned them."""
    criterion = criterion or nn.CrossEntropyLoss()
    if not isinstance(output, AuxOutputs):
        return criterion(output, target)
    loss = criterion(output.logits, target)
    for logits, weight in zip(output.aux_logits, output.aux_weights):
        loss = loss + weight * criterion(logits, target)
    return loss


class ArchConfig(Protocol):
    """What every family's frozen configuration dataclass provides."""

    def validate(self, name: str) -> None:
        """Raise a ValueError naming ``name`` if the configuration cannot be built."""


@dataclass(frozen=True)
class HeadNames:
    """Attribute names of a pooled classifier head: the global pool, the dropout (None: none) and the output layer.

    Families keep the names of their peers (torchvision's ``avgpool``/``fc``, ``classifier``, ...), so state_dicts
    and module paths stay those of the peer while the head's behaviour is written once, in `ConvNet`.
    """

    pool: str = "global_pool"
    drop: str | None = "head_drop"
    fc: str = "fc"


class ConvNet(nn.Module, metaclass=abc.ABCMeta):
    """Base class of all convzoo classifiers.

    The constructor does what every family does first: validate the configuration, check ``in_chans`` and record
    the configuration, name and class count. A subclass then builds its layers and sets ``num_features``,
    ``feature_info`` (stem first, one entry per stage after it) and ``min_input_size``, and implements
    ``forward_features``.

    The head: a network whose head is global average pooling, optional dropout and a linear layer builds it with
    `init_head` and inherits ``forward_head``, ``get_classifier`` and ``reset_classifier``; ``head_names`` says what
    its layers are called and `init_classifier` how a fresh output layer starts. Networks with other heads (fully
    connected layers, a convolutional classifier) override those three methods.

    Args:
        cfg: The family's architecture configuration; its ``validate(model_name)`` runs first. None for a network
            without one.
        num_classes: Classifier outputs; 0 leaves the classifier out.
        in_chans: Input image channels.
        model_name: Name used in error messages.
    """

    model_name: str = "convnet"
    in_chans: int
    num_classes: int
    num_features: int
    feature_info: list[FeatureInfo]
    # The smallest square input side the network accepts, which `check_input` enforces. Families state it in one
    # of two ways: the total stride of a padded network (each stage halves with floor, so a 2^k-pixel input keeps
    # one pixel), or `smallest_input` of a trunk whose unpadded layers shrink the map (convzoo.layers.trunk).
    min_input_size: int = 1
    head_names: ClassVar[HeadNames] = HeadNames()

    def __init__(self, cfg: ArchConfig | None = None, *, num_classes: int, in_chans: int, model_name: str) -> None:
        super().__init__()
        if cfg is not None:
            cfg.validate(model_name)
        if in_chans < 1:
            raise ValueError(f"{model_name}: in_chans must be positive; got {in_chans}")
        self.cfg = cfg
        self.model_name = model_name
        self.in_chans = in_chans
        self.num_classes = num_classes

    def check_input(self, x: torch.Tensor) -> None:
        """Check that ``x`` is an (N, in_chans, H, W) batch of images large enough for this network.

        Raises:
            TypeError: If ``x`` is not a floating-point tensor of the network's precision (outside autocast, which
                casts for itself).
            ValueError: If its shape is wrong or its images too small.
        """
        if not isinstance(x, torch.Tensor):
            raise TypeError(
                f"{self.model_name} expects a torch.Tensor batch of shape (N, {self.in_chans}, H, W); got "
                f"{type(x).__name__} (convert with torch.as_tensor)"
            )
        if x.dim() != 4 or x.shape[1] != self.in_chans:
            raise ValueError(
                f"{self.model_name} expects a batch of shape (N, {self.in_chans}, H, W); got {tuple(x.shape)}"
                + (" (add a batch dimension with x.unsqueeze(0))" if x.dim() == 3 else "")
            )
        height, width = x.shape[-2:]
        if height < self.min_input_size or width < self.min_input_size:
            raise ValueError(
                f"{self.model_name} needs images of at least {self.min_input_size}x{self.min_input_size} "
                f"(it downsamples by {self.feature_info[-1].reduction}); got {height}x{width}. "
                f"Expected shape (N, {self.in_chans}, H, W) with H, W >= {self.min_input_size}"
            )
        if not x.is_floating_point():
            raise TypeError(
                f"{self.model_name} expects floating-point images; got {x.dtype} (convert and normalise first, e.g. "
                "x.float() / 255, then subtract the mean and divide by the std of the model card)"
            )
        weight = next(self.parameters(), None)
        if (
            weight is not None
            and x.dtype != weight.dtype
            and not weight.is_meta
            and not torch.is_autocast_enabled(x.device.type)
        ):
            raise TypeError(
                f"{self.model_name} holds {weight.dtype} weights but got a {x.dtype} batch; convert one to the other "
                f"(x.to({weight.dtype}) or model.to({x.dtype}))"
            )

    @abc.abstractmethod
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map, before pooling and the classifier."""

    # --- the pooled head: global average pool, dropout, linear layer ---------------------------------------------

    def init_head(self, num_features: int, drop_rate: float = 0.0) -> None:
        """Build the pooled head on ``num_features`` channels, under the attribute names of ``head_names``.

        The output layer keeps PyTorch's initialisation here; the family's own weight initialisation, which runs
        after its layers are built, decides how it starts (so random draws happen in the family's order).
        """
        names = self.head_names
        self.num_features = num_features
        setattr(self, names.pool, nn.AdaptiveAvgPool2d(1))
        if names.drop is not None:
            setattr(self, names.drop, nn.Dropout(drop_rate) if drop_rate else nn.Identity())
        setattr(self, names.fc, create_classifier(num_features, self.num_classes))

    def init_classifier(self, fc: nn.Module) -> None:
        """Initialise a fresh output layer as the family does (default: PyTorch's initialisation, left as it is)."""

    def check_num_classes(self, num_classes: object) -> None:
        """Raise a ValueError unless ``num_classes`` is a non-negative int (0: no classifier)."""
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f"{self.model_name}: num_classes must be a non-negative int; got {num_classes!r}")

    def new_classifier(self, in_features: int, num_classes: int) -> nn.Module:
        """A fresh ``num_classes``-way output layer (an identity for 0) where the network lives, initialised.

        It is built on the device and in the precision of the network's parameters, and `init_classifier` starts
        it as the family's own output layers start.
        """
        self.check_num_classes(num_classes)
        like = next(self.parameters())
        fc = create_classifier(in_features, num_classes, device=like.device, dtype=like.dtype)
        if isinstance(fc, nn.Linear) and not like.is_meta:
            self.init_classifier(fc)
        return fc

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool the last feature map and classify it; with ``pre_logits`` return the pooled vector."""
        names = self.head_names
        x = torch.flatten(getattr(self, names.pool)(x), 1)
        if names.drop is not None:
            x = getattr(self, names.drop)(x)
        return x if pre_logits else self.get_classifier()(x)

    def get_classifier(self) -> nn.Module:
        """The final classification layer."""
        return getattr(self, self.head_names.fc)

    @property
    def head_hidden_size(self) -> int:
        """Width of ``forward_head(x, pre_logits=True)``: the vector the output layer reads, the transferable feature.

        For a pooled head it is the pooled last feature map (``num_features``); networks with fully connected layers
        return their last hidden layer (AlexNet's and VGG's fc7, LeNet's F6).
        """
        return self.num_features

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier by a freshly initialised one with ``num_classes`` outputs (0: no classifier).

        The new layer lives where the network lives, on its device and in its precision.
        """
        self.check_num_classes(num_classes)
        self.num_classes = num_classes
        setattr(self, self.head_names.fc, self.new_classifier(self.num_features, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
        self, x: torch.Tensor, indices: int | Sequence[int] | None = None, *, stop_early: bool = True
    ) -> list[torch.Tensor]:
        """Feature maps at the tap points of ``feature_info``.

        The trunk runs as a plain sequence of layers (`forward_taps`), without hooks or exceptions, so
        ``torch.compile(fullgraph=True)`` and ``torch.export`` trace it as they trace ``forward``.

        Args:
            x: Input batch.
            indices: Positions in ``feature_info`` (negative counts from the end), an int ``n`` for the last ``n``,
                or None for all.
            stop_early: Skip the layers after the last requested tap point.

        Returns:
            The feature maps, in the order of ``indices``.
        """
        indices = resolve_indices(indices, len(self.feature_info))
        names = [self.feature_info[i].module for i in indices]
        captured = self.forward_taps(x, set(names), stop_early=stop_early)
        return [captured[name] for name in names]

    def forward_taps(self, x: torch.Tensor, names: Set[str], *, stop_early: bool = True) -> dict[str, torch.Tensor]:
        """Run the trunk on ``x`` and return the outputs of the modules ``names``, by name.

        The default checks the input and runs `trunk_layers` with `run_taps`; a network whose trunk is not a chain
        of single-input layers (NASNet's cells, FractalNet's column choice) overrides this.
        """
        self.check_input(x)
        return run_taps(self.trunk_layers(), x, names, stop_early=stop_early, model_name=self.model_name)

    def trunk_layers(self) -> list[tuple[str, nn.Module]]:
        """The layers `forward_features` runs after `check_input`, in order, as (name, module) pairs.

        The default, as timm's feature wrappers assume, is the network's children in the order they were
        registered, up to the one that holds the last tap of ``feature_info`` (the output of `forward_features`).
        A family whose forward does anything else overrides this or `forward_taps`; the interface tests compare
        `forward_intermediates` with the outputs that hooks capture from `forward_features`, for every model.
        """
        last = self.feature_info[-1].module
        layers = []
        for name, module in self.named_children():
            layers.append((name, module))
            if last == name or last.startswith(name + "."):
                return layers
        raise RuntimeError(f"{self.model_name}: feature_info names a module that does not exist: {last!r}")


def resolve_indices(indices: int | Sequence[int] | None, count: int) -> list[int]:
    """Normalise feature indices to a sorted list of non-negative positions below ``count``."""
    if indices is None:
        return list(range(count))
    if isinstance(indices, int):
        if not 0 < indices <= count:
            raise ValueError(f"asked for the last {indices} feature maps; the network has {count}")
        return list(range(count - indices, count))
    out = []
    for i in indices:
        if not -count <= i < count:
            raise ValueError(f"feature index {i} is out of range; the network has {count} tap points (0..{count - 1})")
        out.append(i % count)
    return out


def run_taps(
    layers: Sequence[tuple[str, Callable[[torch.Tensor], torch.Tensor]]],
    x: torch.Tensor,
    names: Set[str],
    *,
    stop_early: bool = True,
    model_name: str = "network",
) -> dict[str, torch.Tensor]:
    """Run ``layers`` (modules or other one-input callables) in turn on ``x``; collect the outputs named ``names``.

    A name inside one of the layers (``features.3`` in ``features``) opens that layer, which must then be an
    ``nn.Sequential``, into its children. With ``stop_early`` the run ends at the last requested output.

    Raises:
        RuntimeError: If a name is not one of the layers or lies inside a layer that is not a sequence.
    """
    captured: dict[str, torch.Tensor] = {}
    for name, layer in _open_layers(layers, names, model_name):
        x = layer(x)
        if name in names:
            captured[name] = x
            if stop_early and len(captured) == len(names):
                break
    if len(captured) != len(names):
        missing = sorted(set(names) - set(captured))
        raise RuntimeError(f"{model_name}: feature_info names modules that do not exist: {missing}")
    return captured


def _open_layers(
    layers: Sequence[tuple[str, Callable[[torch.Tensor], torch.Tensor]]], names: Set[str], model_name: str
) -> list[tuple[str, Callable[[torch.Tensor], torch.Tensor]]]:
    """``layers``, with every ``nn.Sequential`` that holds one of ``names`` replaced by its children (recursively)."""
    out: list[tuple[str, Callable[[torch.Tensor], torch.Tensor]]] = []
    for name, layer in layers:
        inner = [n for n in names if n.startswith(name + ".")]
        if not inner:
            out.append((name, layer))
        elif isinstance(layer, nn.Sequential):
            children = [(f"{name}.{child}", module) for child, module in layer.named_children()]
            out.extend(_open_layers(children, names, model_name))
        else:
            raise RuntimeError(
                f"{model_name}: the tap points {inner} lie inside {name} ({type(layer).__name__}), which is not a "
                "sequence of layers; the family must run its trunk in forward_taps"
            )
    return out


class FeatureExtractor(nn.Module):
    """A classifier without its head that returns a list of intermediate feature maps.

    Built by ``create_model(name, features_only=True, out_indices=...)``.
    """

    def __init__(self, model: ConvNet, out_indices: int | Sequence[int] | None = None) -> None:
        super().__init__()
        model.reset_classifier(0)
        self.model = model
        self.out_indices = resolve_indices(out_indices, len(model.feature_info))
        self.feature_info = [model.feature_info[i] for i in self.out_indices]
        self.model_name = model.model_name

    def channels(self) -> list[int]:
        """Channels of each returned feature map."""
        return [f.num_chs for f in self.feature_info]

    def reductions(self) -> list[int]:
        """Cumulative stride of each returned feature map."""
        return [f.reduction for f in self.feature_info]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.model.forward_intermediates(x, self.out_indices)
