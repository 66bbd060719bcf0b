"""The interface every convzoo classifier shares.

Transfer learning, probing, distillation and dense-prediction backbones build only on what is defined here:
`forward_features`, `forward_head`, `reset_classifier`, `feature_info` and `forward_intermediates`.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn as nn


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


class _StopForward(Exception):
    """Raised by a hook once every requested feature map is captured, to skip the rest of the network."""


class ConvNet(nn.Module, metaclass=abc.ABCMeta):
    """Base class of all convzoo classifiers.

    Subclasses set ``in_chans``, ``num_classes``, ``num_features``, ``feature_info`` (stem first, one entry per
    stage after it) and implement ``forward_features``, ``forward_head`` and ``reset_classifier``.
    """

    model_name: str = "convnet"
    in_chans: int
    num_classes: int
    num_features: int
    feature_info: list[FeatureInfo]
    min_input_size: int = 1

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a ValueError if ``x`` is not an (N, in_chans, H, W) batch large enough for this network."""
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

    @abc.abstractmethod
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map, before pooling and the classifier."""

    @abc.abstractmethod
    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool the last feature map and classify it; with ``pre_logits`` return the pooled vector."""

    @abc.abstractmethod
    def get_classifier(self) -> nn.Module:
        """The final classification layer."""

    @abc.abstractmethod
    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier by a freshly initialised one with ``num_classes`` outputs (0: no classifier)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
        self, x: torch.Tensor, indices: int | Sequence[int] | None = None, *, stop_early: bool = True
    ) -> list[torch.Tensor]:
        """Feature maps at the tap points of ``feature_info``.

        Args:
            x: Input batch.
            indices: Positions in ``feature_info`` (negative counts from the end), an int ``n`` for the last ``n``,
                or None for all.
            stop_early: Skip the layers after the last requested tap point.

        Returns:
            The feature maps, in the order of ``indices``.
        """
        indices = resolve_indices(indices, len(self.feature_info))
        wanted = {self.feature_info[i].module for i in indices}
        captured: dict[str, torch.Tensor] = {}
        modules = dict(self.named_modules())
        missing = wanted - set(modules)
        if missing:
            raise RuntimeError(f"{self.model_name}: feature_info names modules that do not exist: {sorted(missing)}")

        def make_hook(name: str):
            def hook(_module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
                captured[name] = output
                if stop_early and len(captured) == len(wanted):
                    raise _StopForward

            return hook

        handles = [modules[name].register_forward_hook(make_hook(name)) for name in wanted]
        try:
            self.forward_features(x)
        except _StopForward:
            pass
        finally:
            for handle in handles:
                handle.remove()
        return [captured[self.feature_info[i].module] for i in indices]


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
