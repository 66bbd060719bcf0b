"""Named weights: what each file is, where it comes from, how it was measured and how to feed it images.

An entry is to convzoo what a member of a torchvision ``Weights`` enum is: a file name with its SHA-256, the model
and configuration it belongs to, the data set and class names it was trained on, its measured accuracy and how that
was measured, its preprocessing (`Preprocessing`, whose `transforms` builds the matching transform), its recipe and
its licence. The built-in entries are read from the JSON files beside this module on first use: ``convzoo.json``
(weights trained for and shipped with the package, in ``files/``) and ``torchvision.json`` (torchvision's ImageNet
weights for the networks both packages share, as torchvision publishes them).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
PACKAGE_FILES = _HERE / "files"
_BUILTIN = ("convzoo.json", "torchvision.json")
INTERPOLATIONS = ("nearest", "bilinear", "bicubic")


@dataclass(frozen=True)
class Preprocessing:
    """How images are prepared for a network: resize the shorter side, centre-crop, scale to [0, 1], normalise.

    Attributes:
        crop_size: Side of the square centre crop the network sees.
        resize_size: The shorter side is resized to this first (None: resize straight to ``crop_size``).
        interpolation: ``"nearest"``, ``"bilinear"`` or ``"bicubic"``.
        mean: Per-channel mean subtracted after scaling to [0, 1].
        std: Per-channel standard deviation divided by.
        channels: 3 for colour (images are converted to RGB), 1 for grey.
    """

    crop_size: int
    resize_size: int | None = None
    interpolation: str = "bilinear"
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    channels: int = 3

    def __post_init__(self) -> None:
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {INTERPOLATIONS}; got {self.interpolation!r}")
        if self.crop_size < 1 or (self.resize_size is not None and self.resize_size < self.crop_size):
            raise ValueError(
                f"crop_size must be positive and resize_size (if given) at least crop_size; got crop {self.crop_size}, "
                f"resize {self.resize_size}"
            )
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ValueError(f"mean and std need {self.channels} values each; got {self.mean} and {self.std}")

    def transforms(self) -> Any:
        """The transform that turns a PIL image or an image tensor (uint8 or float in [0, 1]) into the network's input.

        Like torchvision's ``weights.transforms()``: a module applying resize, centre crop, scaling and normalisation
        to one image (C, H, W) or a batch (N, C, H, W).
        """
        from convzoo.pretrained.preprocess import ClassificationPreprocess

        return ClassificationPreprocess(self)

    def as_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Preprocessing:
        values = dict(values)
        for key in ("mean", "std"):
            if key in values:
                values[key] = tuple(float(v) for v in values[key])
        return cls(**values)

    @classmethod
    def for_card(cls, card: Any, crop_pct: float = 0.875) -> Preprocessing:
        """The usual preprocessing for a model card's input: at ImageNet sizes resize to ``crop / crop_pct`` (256 for
        224, as torchvision and timm do), at small sizes (CIFAR's 32) resize straight to the input size."""
        channels, height, _ = card.input_size
        resize = int(height / crop_pct) if height >= 64 else height
        return cls(crop_size=height, resize_size=resize, mean=tuple(card.mean), std=tuple(card.std), channels=channels)


@dataclass(frozen=True)
class WeightsEntry:
    """Weights registered under a name, with what a user needs to trust and use them.

    Attributes:
        name: Unique name, ``"<model>.<tag>"`` (``"resnet20.cifar10"``, ``"resnet50.tv_imagenet1k_v2"``).
        model: The registered model the weights belong to.
        source: Where the file is fetched from: an http(s)/file URL, or a local path. Empty for files shipped in the
            package (``files/<file_name>``).
        file_name: The file's name in the package, the download cache or torch hub's cache.
        sha256: The file's SHA-256, or its first hex digits when only those are published (torchvision's file
            names carry 8 of them); checked before every load.
        model_args: Architecture settings the weights need (e.g. ``{"transform_input": True}``).
        dataset: What they were trained on.
        num_classes: Classes of the stored classifier.
        classes: Class names in output order (may be empty when unknown).
        metrics: Measured results, e.g. ``{"top1": 91.3}``.
        evaluation: How ``metrics`` were measured (test set, views, who measured them).
        preprocessing: How images are prepared for these weights.
        recipe: How they were trained (a recipe description or a URL).
        license: Licence of the weights.
        description: Free text.
        default: Whether ``pretrained=True`` picks this entry for its model.
    """

    name: str
    model: str
    source: str = ""
    file_name: str = ""
    sha256: str | None = None
    model_args: dict[str, Any] = field(default_factory=dict)
    dataset: str = ""
    num_classes: int | None = None
    classes: tuple[str, ...] = ()
    metrics: dict[str, float] = field(default_factory=dict)
    evaluation: str = ""
    preprocessing: Preprocessing | None = None
    recipe: str = ""
    license: str = ""
    description: str = ""
    default: bool = False

    @property
    def shipped(self) -> bool:
        """Whether the file comes with the package."""
        return not self.source

    def transforms(self) -> Any:
        """The preprocessing transform of these weights (see `Preprocessing.transforms`)."""
        if self.preprocessing is None:
            raise ValueError(f"weights {self.name!r} state no preprocessing")
        return self.preprocessing.transforms()

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["classes"] = list(self.classes)
        out["preprocessing"] = self.preprocessing.as_dict() if self.preprocessing else None
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> WeightsEntry:
        values = dict(values)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"weights entry {values.get('name')!r}: unknown fields {unknown}; known: {sorted(known)}")
        values["classes"] = tuple(values.get("classes") or ())
        if values.get("preprocessing") is not None:
            values["preprocessing"] = Preprocessing.from_dict(values["preprocessing"])
        return cls(**values)


_WEIGHTS: dict[str, WeightsEntry] = {}
_loaded = False


def _builtin() -> dict[str, WeightsEntry]:
    """The registry, with the built-in entries read in on first use."""
    global _loaded
    if not _loaded:
        _loaded = True
        for file in _BUILTIN:
            path = _HERE / file
            if path.is_file():
                document = json.loads(path.read_text())
                lists = document.get("class_lists", {})
                for row in document["weights"]:
                    if isinstance(row.get("classes"), str):  # a class list stored once in the file, by name
                        row = {**row, "classes": lists[row["classes"]]}
                    _add(WeightsEntry.from_dict(row))
    return _WEIGHTS


def _add(entry: WeightsEntry) -> WeightsEntry:
    registry = _WEIGHTS
    if entry.name in registry:
        raise ValueError(f"weights name {entry.name!r} is already registered (for {registry[entry.name].model})")
    registry[entry.name] = entry
    return entry


def register_weights(
    name: str,
    *,
    model: str,
    source: str | os.PathLike[str],
    sha256: str | None = None,
    num_classes: int | None = None,
    description: str = "",
    **details: Any,
) -> WeightsEntry:
    """Register a weights file (a path, or an http(s)/file URL) under ``name`` for use as ``weights=name``.

    Args:
        name: The name to register, e.g. ``"resnet50.my_imagenet_run"``.
        model: The registered model these weights belong to.
        source: Path or URL of the file.
        sha256: Expected SHA-256 of the file (or its first hex digits), checked before loading.
        num_classes: Classes of the stored classifier, if known.
        description: Free text.
        **details: Further `WeightsEntry` fields (``dataset``, ``classes``, ``metrics``, ``preprocessing``,
            ``model_args``, ``default`` ...).
    """
    _builtin()
    text = os.fspath(source)
    if not text:
        raise ValueError(f"weights {name!r}: source must name a file or a URL")
    try:
        entry = WeightsEntry(
            name=name,
            model=model,
            source=text,
            file_name=details.pop("file_name", "") or Path(text).name,
            sha256=sha256,
            num_classes=num_classes,
            description=description,
            **details,
        )
    except TypeError as e:
        known = sorted(f.name for f in dataclasses.fields(WeightsEntry))
        raise TypeError(f"register_weights({name!r}): {e}; accepted fields: {', '.join(known)}") from None
    return _add(entry)


def list_weights(model: str | None = None) -> list[WeightsEntry]:
    """Registered weights, optionally only those of one model; a model's default entry comes first."""
    entries = [w for w in _builtin().values() if model is None or w.model == model]
    return sorted(entries, key=lambda w: (w.model, not w.default)) if model is not None else entries


def find_weights(name: str) -> WeightsEntry | None:
    """The entry registered under ``name``, or None."""
    return _builtin().get(name)


def get_weights(name: str) -> WeightsEntry:
    """The entry registered under ``name``.

    Raises:
        KeyError: For an unknown name, listing the closest registered ones.
    """
    entry = find_weights(name)
    if entry is None:
        close = difflib.get_close_matches(name, list(_WEIGHTS), n=5, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise KeyError(f"unknown weights {name!r}{hint} (`convzoo weights list` shows them all)")
    return entry


def default_weights(model: str) -> WeightsEntry | None:
    """The entry ``pretrained=True`` loads for ``model``: the one marked default, else the first registered."""
    entries = list_weights(model)
    return entries[0] if entries else None


def package_file(entry: WeightsEntry) -> Path:
    """Where a shipped entry's file lies inside the installed package."""
    return PACKAGE_FILES / entry.file_name
