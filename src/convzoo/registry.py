"""Model registry: names, model cards and the builders behind `create_model`.

The families register themselves when `convzoo.models` is imported, which importing `convzoo` does.

Every network is registered under one lower_snake name together with a `ModelCard` that says where it comes from
(paper, year, venue), what it expects (input size, normalisation, number of classes) and what its paper reported.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch.nn as nn

from convzoo.data.stats import CIFAR10_MEAN, CIFAR10_STD, IMAGENET_MEAN, IMAGENET_STD
from convzoo.pretrained import list_weights


@dataclass(frozen=True)
class Paper:
    """A publication a model comes from."""

    authors: str
    title: str
    year: int
    venue: str
    url: str = ""

    def cite(self) -> str:
        """One-line citation: authors, title, venue and year."""
        return f"{self.authors}. {self.title}. {self.venue} {self.year}."


@dataclass(frozen=True)
class Reported:
    """A result the paper reports for this network.

    Attributes:
        dataset: Data set the number was measured on, e.g. ``"ImageNet"`` or ``"CIFAR-10"``.
        metric: What the number is, e.g. ``"top-1 error"``.
        value: The number, in percent for errors and accuracies.
        source: Where in the paper it stands, e.g. ``"Table 3"``.
        note: Evaluation protocol details (crops, test size).
    """

    dataset: str
    metric: str
    value: float
    source: str
    note: str = ""

    def __str__(self) -> str:
        note = f", {self.note}" if self.note else ""
        return f"{self.dataset} {self.metric} {self.value:g}% ({self.source}{note})"


TASKS = ("classification", "segmentation", "detection")
"""What a registered network does: its outputs and the training task (`convzoo.train.tasks.task_for`) that fits it."""


@dataclass(frozen=True)
class ModelCard:
    """What a registered model is, what it expects, and what its paper reported."""

    name: str
    family: str
    paper: Paper
    input_size: tuple[int, int, int]
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    reported: tuple[Reported, ...] = ()
    notes: str = ""
    task: str = "classification"

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"model card {self.name!r}: task must be one of {TASKS}; got {self.task!r}")

    @property
    def dataset(self) -> str:
        """The data set the default head is sized for."""
        return "ImageNet" if self.num_classes == 1000 else f"{self.num_classes}-class"

    def top1_accuracy(self) -> float | None:
        """The paper's top-1 accuracy (100 - top-1 error) on its main data set, if it reported one."""
        for result in self.reported:
            if result.metric == "top-1 error":
                return 100.0 - result.value
            if result.metric == "top-1 accuracy":
                return result.value
        return None


IMAGENET_DEFAULTS: dict[str, Any] = {
    "input_size": (3, 224, 224),
    "num_classes": 1000,
    "mean": IMAGENET_MEAN,
    "std": IMAGENET_STD,
}
CIFAR10_DEFAULTS: dict[str, Any] = {
    "input_size": (3, 32, 32),
    "num_classes": 10,
    "mean": CIFAR10_MEAN,
    "std": CIFAR10_STD,
}


def imagenet_error(top1: float, top5: float | None, source: str, note: str = "10-crop testing") -> tuple[Reported, ...]:
    """Reported ImageNet top-1 (and top-5) error of a paper's table."""
    out = [Reported("ImageNet", "top-1 error", top1, source, note)]
    if top5 is not None:
        out.append(Reported("ImageNet", "top-5 error", top5, source, note))
    return tuple(out)


def cifar_error(c10: float | None, c100: float | None, source: str, note: str = "") -> tuple[Reported, ...]:
    """Reported CIFAR-10 (and CIFAR-100) test error of a paper's table."""
    out = []
    if c10 is not None:
        out.append(Reported("CIFAR-10", "top-1 error", c10, source, note))
    if c100 is not None:
        out.append(Reported("CIFAR-100", "top-1 error", c100, source, note))
    return tuple(out)


@dataclass(frozen=True)
class _Entry:
    card: ModelCard
    builder: Callable[..., nn.Module]


_REGISTRY: dict[str, _Entry] = {}


def register_model(card: ModelCard, builder: Callable[..., nn.Module]) -> None:
    """Register a model builder under ``card.name``.

    Args:
        card: The model card; its ``name`` is the registered name.
        builder: Called as ``builder(num_classes=..., in_chans=..., **arch_overrides)``; returns the model.

    Raises:
        ValueError: If the name is already registered.
    """
    if card.name in _REGISTRY:
        raise ValueError(f"model name {card.name!r} is already registered (family {_REGISTRY[card.name].card.family})")
    _REGISTRY[card.name] = _Entry(card, builder)


def list_models(
    pattern: str | Sequence[str] = "*",
    *,
    family: str | None = None,
    pretrained: bool = False,
    task: str | None = "classification",
) -> list[str]:
    """Registered model names matching a shell-style pattern, sorted.

    Args:
        pattern: fnmatch pattern such as ``"resnet*"``; a list of patterns is also accepted.
        family: Only models of this family (``"resnet"``, ...).
        pretrained: Only models with registered weights (see ``convzoo.list_weights``), which
            ``create_model(name, pretrained=True)`` can load.
        task: Only models of this task (one of `TASKS`): the classifiers by default, which share the classifier
            interface (``forward_features``, ``forward_head``, ``feature_info``); ``"segmentation"`` and
            ``"detection"`` list the networks built on them; None lists every registered network.
    """
    if task is not None and task not in TASKS:
        raise ValueError(f"list_models: task must be one of {TASKS} or None; got {task!r}")
    patterns = [pattern] if isinstance(pattern, str) else list(pattern) if _iterable(pattern) else [pattern]
    if not all(isinstance(p, str) for p in patterns):
        raise TypeError(f"list_models: pattern must be a shell-style pattern or a list of them; got {pattern!r}")
    with_weights = {w.model for w in list_weights()} if pretrained else None
    names = [
        n
        for n, e in _REGISTRY.items()
        if any(fnmatch.fnmatchcase(n, p) for p in patterns)
        and (family is None or e.card.family == family)
        and (task is None or e.card.task == task)
        and (with_weights is None or n in with_weights)
    ]
    return sorted(names, key=_natural_key)


def _iterable(value: object) -> bool:
    return isinstance(value, Iterable) and not isinstance(value, bytes)


def _natural_key(name: str) -> list[Any]:
    # resnet20 < resnet110 < resnet1202, not lexicographic.
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _lookup(name: str) -> _Entry:
    if name in _REGISTRY:
        return _REGISTRY[name]
    close = difflib.get_close_matches(name, list(_REGISTRY), n=5, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else "; see convzoo.list_models() or `convzoo models`"
    raise KeyError(f"unknown model name {name!r}{hint}")


def get_model_card(name: str) -> ModelCard:
    """The model card of a registered name.

    Raises:
        KeyError: For an unknown name, listing the closest registered names.
    """
    return _lookup(name).card


def get_builder(name: str) -> Callable[..., nn.Module]:
    """The builder function of a registered name."""
    return _lookup(name).builder


# Keywords create_model takes itself, before the family's architecture settings.
_FACTORY_KEYS = ("num_classes", "in_chans", "weights", "pretrained", "features_only", "out_indices")


def check_overrides(model_name: str, overrides: dict[str, Any], accepted: Sequence[str]) -> None:
    """Raise a TypeError naming the model and the accepted keys if ``overrides`` holds an unknown keyword."""
    unknown = sorted(set(overrides) - set(accepted))
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, [*accepted, *_FACTORY_KEYS], n=1)
            hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise TypeError(
            f"{model_name} got unexpected keyword argument(s) {', '.join(hints)}; "
            f"accepted keys: num_classes, in_chans, weights, pretrained, features_only, out_indices, "
            f"{', '.join(sorted(accepted))}"
        )


def _as_tuples(value: Any) -> Any:
    # Configurations are frozen dataclasses of tuples; overrides given as (nested) lists are converted to match.
    return tuple(_as_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def config_builder(name: str, cfg: Any, model_cls: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """The usual builder of a family: ``model_cls(cfg with overrides, num_classes=, in_chans=, model_name=name)``.

    Unknown override keys raise a TypeError naming the model and the configuration's fields; lists are turned
    into the tuples a frozen configuration holds.
    """
    accepted = [f.name for f in dataclasses.fields(cfg)]

    def build(*, num_classes: int, in_chans: int, **overrides: Any) -> nn.Module:
        check_overrides(name, overrides, accepted)
        arch = dataclasses.replace(cfg, **{k: _as_tuples(v) for k, v in overrides.items()})
        return model_cls(arch, num_classes=num_classes, in_chans=in_chans, model_name=name)

    return build


@dataclass(frozen=True)
class Variant:
    """One registered member of a family: its configuration and what its model card says.

    Attributes:
        name: The registered name.
        cfg: The family's architecture configuration.
        paper: The publication it comes from.
        defaults: The card's input size, class count and normalisation (``IMAGENET_DEFAULTS``, ...).
        reported: What the paper reported for it.
        notes: Anything else a user should know.
    """

    name: str
    cfg: Any
    paper: Paper
    defaults: Mapping[str, Any]
    reported: tuple[Reported, ...] = ()
    notes: str = ""


def register_family(
    family: str,
    model_cls: Callable[..., nn.Module],
    variants: Iterable[Variant],
    *,
    builder: Callable[[str, Any, Callable[..., nn.Module]], Callable[..., nn.Module]] = config_builder,
) -> None:
    """Register every variant of a family, each with its model card and ``builder(name, cfg, model_cls)``."""
    for v in variants:
        card = ModelCard(v.name, family, v.paper, reported=v.reported, notes=v.notes, **v.defaults)
        register_model(card, builder(v.name, v.cfg, model_cls))


__all__ = [
    "CIFAR10_DEFAULTS",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "IMAGENET_DEFAULTS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ModelCard",
    "Paper",
    "Reported",
    "TASKS",
    "Variant",
    "check_overrides",
    "cifar_error",
    "config_builder",
    "get_builder",
    "get_model_card",
    "imagenet_error",
    "list_models",
    "register_family",
    "register_model",
]
