"""Key layouts of well-known checkpoint families, and their translation to convzoo's module names.

A checkpoint trained elsewhere holds the same tensors as a convzoo network under other names: the PyTorch CIFAR
ResNets of github.com/akamaster/pytorch_resnet_cifar10 call the classifier ``linear``; timm's pre-activation
``ResNetV2`` calls its blocks ``stages.{i}.blocks.{j}`` with ``norm1..3``. A `KeyLayout` describes one such family
as data: how to recognise its keys, how to rename them, and the parameter-free settings (such as option A's
``pad_channels``) that its networks were trained with. `convzoo.load_weights` uses them (``layout="auto"`` by
default).

timm's ``ResNet`` (resnet*, resnext*, wide_resnet*, seresnet*, seresnext* in timm's resnet.py) needs no layout: its
names are torchvision's (conv1, bn1, layer1..4, fc; blocks conv1/bn1/.../downsample.0/1, se.fc1/se.fc2), which are
convzoo's too.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import torch
import torch.nn as nn

Replacement = str | Callable[[re.Match[str]], str]


@dataclass(frozen=True)
class KeyLayout:
    """The state_dict keys of one family of checkpoints, and how they become convzoo's.

    Attributes:
        name: What ``load_weights(..., layout=name)`` calls it.
        description: Where such checkpoints come from.
        marker_keys: Keys every checkpoint of the family holds.
        key_pattern: A regular expression every key of the family matches in full; with ``marker_keys``, how the
            layout is recognised.
        renames: ``(pattern, replacement)`` pairs applied in order to each key with `re.sub`.
        linear_from_conv: Keys (after renaming) that the family stores as 1x1 convolution weights and convzoo
            as a linear layer's.
        settings: Parameter-free architecture settings the family's networks use, e.g. ``{"pad_channels":
            "split"}``; a model built otherwise is switched to them (see `apply_settings`).
    """

    name: str
    description: str
    marker_keys: tuple[str, ...]
    key_pattern: str
    renames: tuple[tuple[str, Replacement], ...]
    linear_from_conv: tuple[str, ...] = ()
    settings: Mapping[str, object] = field(default_factory=dict)

    def recognises(self, keys: Iterable[str]) -> bool:
        """Whether ``keys`` are those of a checkpoint in this layout."""
        keys = set(keys)
        pattern = re.compile(self.key_pattern)
        return all(k in keys for k in self.marker_keys) and all(pattern.fullmatch(k) for k in keys)

    def rename(self, key: str) -> str:
        """The convzoo name of one key."""
        for pattern, replacement in self.renames:
            key = re.sub(pattern, replacement, key)
        return key

    def translate(self, state: Mapping[str, torch.Tensor], own: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``state`` under convzoo's names, fitted to ``own`` (the model's state_dict).

        Batch-norm step counters (``num_batches_tracked``, absent from checkpoints older than PyTorch 0.4) that the
        model holds and the checkpoint lacks are filled from the model: they play no part in the outputs.
        """
        out = {self.rename(k): v for k, v in state.items()}
        for key in self.linear_from_conv:
            if key in out and out[key].dim() == 4 and out[key].shape[2:] == (1, 1):
                out[key] = out[key].flatten(1)
        for key, value in own.items():
            stem = key.removesuffix("num_batches_tracked")
            if stem != key and key not in out and f"{stem}running_mean" in out:
                out[key] = value.clone()
        return out


_LAYOUTS: dict[str, KeyLayout] = {}


def register_layout(layout: KeyLayout) -> KeyLayout:
    """Make ``layout`` known to `get_layout` and to ``load_weights(..., layout="auto")``."""
    if layout.name in _LAYOUTS or layout.name == "auto":
        raise ValueError(f"a key layout named {layout.name!r} is already registered")
    _LAYOUTS[layout.name] = layout
    return layout


def list_layouts() -> list[KeyLayout]:
    """The registered key layouts."""
    return list(_LAYOUTS.values())


def get_layout(name: str) -> KeyLayout:
    """The registered layout called ``name``.

    Raises:
        ValueError: If there is none; the message lists the known ones.
    """
    if name not in _LAYOUTS:
        known = "; ".join(f"{lay.name!r} ({lay.description})" for lay in _LAYOUTS.values())
        raise ValueError(f"unknown key layout {name!r}; known layouts: {known}. Or pass 'auto' or None")
    return _LAYOUTS[name]


def detect_layout(keys: Iterable[str]) -> KeyLayout | None:
    """The registered layout that recognises ``keys``, or None."""
    keys = set(keys)
    return next((lay for lay in _LAYOUTS.values() if lay.recognises(keys)), None)


register_layout(
    KeyLayout(
        name="pytorch-resnet-cifar10",
        description="Yerlan Idelbayev's PyTorch CIFAR ResNets, github.com/akamaster/pytorch_resnet_cifar10: "
        "classifier 'linear', option A shortcuts padding zero channels on both sides",
        marker_keys=("conv1.weight", "layer1.0.conv1.weight", "linear.weight"),
        key_pattern=r"(conv1|bn1|linear|layer\d+\.\d+\.(conv[12]|bn[12]|shortcut\.[01]))\.\w+",
        # Its option B shortcut is an nn.Sequential named `shortcut`: conv then batch norm, as convzoo's downsample.
        renames=((r"^linear\.", "fc."), (r"\.shortcut\.", ".downsample.")),
        settings={"pad_channels": "split"},
    )
)
register_layout(
    KeyLayout(
        name="timm-resnetv2",
        description="timm's pre-activation ResNetV2 (resnetv2_50, resnetv2_101, ...; 7x7 stem, batch norm): "
        "'stem.conv', 'stages.{i}.blocks.{j}' with norm1..3, 'head.fc' a 1x1 convolution",
        marker_keys=("stem.conv.weight", "stages.0.blocks.0.conv1.weight", "norm.weight"),
        key_pattern=r"(stem\.conv|norm|head\.fc|stages\.\d+\.blocks\.\d+\.(conv[123]|norm[123]|downsample\.conv))\.\w+",
        renames=(
            (r"^stem\.conv\.", "conv1."),
            (r"^stages\.(\d+)\.blocks\.", lambda m: f"layer{int(m[1]) + 1}."),
            (r"\.norm([123])\.", r".bn\1."),
            (r"\.downsample\.conv\.", ".downsample.0."),
            (r"^head\.fc\.", "fc."),
        ),
        linear_from_conv=("fc.weight",),
    )
)


def apply_settings(model: nn.Module, layout: KeyLayout) -> list[str]:
    """Switch ``model`` to the parameter-free settings of its checkpoint's layout; return what changed.

    A setting concerns the modules that hold an attribute of its name (option A's `ZeroPadShortcut` holds
    ``pad_channels``); a model without such modules (a ResNet with projection shortcuts) has nothing to switch. The
    model switches them with its ``set_<name>(value)`` method, which keeps its ``cfg`` in step.

    Raises:
        ValueError: If the model's modules use another value and the model has no way to switch them.
    """
    changed = []
    for key, value in layout.settings.items():
        current = {getattr(m, key) for m in model.modules() if hasattr(m, key) and m is not model}
        if current <= {value}:
            continue
        setter = getattr(model, f"set_{key}", None)
        if setter is None:
            raise ValueError(
                f"checkpoints in the {layout.name!r} layout need {key}={value!r}, but the model uses "
                f"{key}={', '.join(sorted(map(repr, current - {value})))}; build it with {key}={value!r}"
            )
        setter(value)
        changed.append(f"{key}: {', '.join(sorted(map(repr, current - {value})))} -> {value!r}")
    return changed


def describe_state_dict(state: Mapping[str, torch.Tensor], *, samples: int = 5) -> str:
    """What a state_dict looks like, for an error message: its size, top-level prefixes, sample keys, a guess."""
    prefixes: dict[str, int] = {}
    for key in state:
        top = key.split(".", 1)[0]
        prefixes[top] = prefixes.get(top, 0) + 1
    tops = ", ".join(f"{p} ({n})" for p, n in list(prefixes.items())[:12])
    more = f", ... ({len(prefixes) - 12} more)" if len(prefixes) > 12 else ""
    shown = [f"{k} {tuple(v.shape)}" for k, v in list(state.items())[:samples]]
    last = [f"{k} {tuple(v.shape)}" for k, v in list(state.items())[samples:][-2:]]
    lines = [
        f"The checkpoint holds {len(state)} tensors; top-level prefixes: {tops}{more}",
        "Sample keys: " + ", ".join(shown + (["..."] if len(state) > samples + 2 else []) + last),
    ]
    guess = guess_architecture(state)
    if guess:
        lines.append(f"It looks like {guess}.")
    found = detect_layout(state)
    if found is not None:
        lines.append(f"These are keys of the {found.name!r} layout: load with layout='auto' or {found.name!r}.")
    else:
        known = ", ".join(repr(lay.name) for lay in _LAYOUTS.values())
        lines.append(f"No known key layout ({known}) recognises these keys.")
    return "\n  ".join(lines)


def guess_architecture(state: Mapping[str, torch.Tensor]) -> str | None:
    """A guess at the network behind a state_dict with torchvision's ResNet names, e.g. ``a ResNet-50 (...)``."""
    blocks: dict[int, set[int]] = {}
    for key in state:
        match = re.match(r"layer(\d+)\.(\d+)\.conv1\.weight$", key)
        if match:
            blocks.setdefault(int(match[1]), set()).add(int(match[2]))
    stem = state.get("conv1.weight")
    if not blocks or stem is None or stem.dim() != 4:
        return None
    layers = [len(blocks[i]) for i in sorted(blocks)]
    bottleneck = any(k.startswith("layer1.0.conv3.") for k in state)
    preact = "bn1.weight" not in state and "norm.weight" in state  # no batch norm in the stem, one at the end
    depth = (3 if bottleneck else 2) * sum(layers) + 2
    details = [
        f"{'bottleneck' if bottleneck else 'basic'} blocks {'-'.join(map(str, layers))}",
        f"{stem.shape[-1]}x{stem.shape[-2]} stem",
    ]
    conv2 = state.get("layer1.0.conv2.weight")
    if bottleneck and conv2 is not None and conv2.dim() == 4 and conv2.shape[0] != conv2.shape[1]:
        details.append(f"grouped 3x3 convolutions, {conv2.shape[0] // conv2.shape[1]} groups")
    head = next((k for k in ("fc.weight", "linear.weight") if k in state and state[k].dim() == 2), None)
    if head is not None:
        details.append(f"{head.split('.')[0]} {state[head].shape[1]}->{state[head].shape[0]}")
    kind = "pre-activation ResNet" if preact else "ResNet"
    return f"a torchvision-style {kind}-{depth} ({', '.join(details)})"
