"""Reading, checking and writing network weights.

Nothing is unpickled beyond tensors: PyTorch checkpoints are read with ``torch.load(..., weights_only=True)``, and
weights are written as safetensors.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from convzoo._files import convzoo_home, write_atomically

# Wrappers that training scripts commonly put around a state_dict, tried in this order.
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "module", "net", "weights")
# Prefixes that DataParallel/DistributedDataParallel and torch.compile add to every key.
_PREFIXES = ("module.", "_orig_mod.")


class WeightsError(ValueError):
    """A weights file could not be read, or does not fit the model."""


@dataclass(frozen=True)
class WeightsEntry:
    """Weights registered under a name: where they live and how to check them."""

    name: str
    model: str
    source: str
    sha256: str | None = None
    num_classes: int | None = None
    description: str = ""


_WEIGHTS: dict[str, WeightsEntry] = {}


def register_weights(
    name: str,
    *,
    model: str,
    source: str | os.PathLike[str],
    sha256: str | None = None,
    num_classes: int | None = None,
    description: str = "",
) -> WeightsEntry:
    """Register a weights file (a path, or an http(s)/file URL) under ``name`` for use as ``weights=name``.

    Args:
        name: The name to register, e.g. ``"resnet50.my_imagenet_run"``.
        model: The registered model these weights belong to.
        source: Path or URL of the file.
        sha256: Expected SHA-256 of the file, checked before loading.
        num_classes: Classes of the stored classifier, if known.
        description: Free text.
    """
    if name in _WEIGHTS:
        raise ValueError(f"weights name {name!r} is already registered (for {_WEIGHTS[name].model})")
    entry = WeightsEntry(name, model, os.fspath(source), sha256, num_classes, description)
    _WEIGHTS[name] = entry
    return entry


def list_weights(model: str | None = None) -> list[WeightsEntry]:
    """Registered weights, optionally only those of one model."""
    return [w for w in _WEIGHTS.values() if model is None or w.model == model]


def cache_dir() -> Path:
    """Where downloaded weights are kept: ``$CONVZOO_HOME/weights``, default ``~/.cache/convzoo/weights``."""
    return convzoo_home() / "weights"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def resolve_weights(weights: str | os.PathLike[str], model_name: str | None = None) -> Path:
    """Turn ``weights=`` (a path, a URL or a registered name) into a local file, checking its hash if known."""
    text = os.fspath(weights)
    entry = _WEIGHTS.get(text)
    if entry is not None:
        if model_name is not None and entry.model != model_name:
            raise WeightsError(f"weights {text!r} are registered for {entry.model}, not for {model_name}")
        text = entry.source
    if text.startswith(("http://", "https://", "file://")):
        target = cache_dir() / Path(text.split("?")[0]).name
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(text, os.fspath(target), progress=True)
        path = target
    else:
        path = Path(text).expanduser()
    if not path.is_file():
        known = [w.name for w in list_weights(model_name)]
        hint = f"; weights registered for {model_name}: {', '.join(known)}" if known else ""
        raise FileNotFoundError(f"weights {text!r} is neither an existing file nor a registered weights name{hint}")
    if entry is not None and entry.sha256 is not None:
        actual = _sha256(path)
        if actual != entry.sha256:
            raise WeightsError(f"{path} has SHA-256 {actual}, but {entry.name!r} expects {entry.sha256}")
    return path


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a state_dict from a safetensors file or a PyTorch checkpoint, without unpickling arbitrary objects.

    Accepts a bare state_dict, the common ``{"state_dict": ...}`` / ``{"model": ...}`` wrappers, and keys carrying
    the ``module.`` (DataParallel) or ``_orig_mod.`` (torch.compile) prefix.

    Raises:
        FileNotFoundError: If there is no such file.
        WeightsError: If the file is corrupt, truncated, holds arbitrary objects or no tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            obj: object = load_file(os.fspath(path))
        except (SafetensorError, OSError) as e:
            raise WeightsError(f"{path} is not a readable safetensors file (truncated or corrupt?): {e}") from e
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            raise WeightsError(
                f"{path} holds Python objects other than tensors and plain containers; refusing to unpickle it. "
                f"Re-save only the state_dict (torch.save(model.state_dict(), path)) or use safetensors. ({e})"
            ) from e
        except Exception as e:  # a damaged file can fail anywhere inside the unpickler
            raise WeightsError(f"{path} is not a readable PyTorch checkpoint (truncated or corrupt?): {e}") from e
    return _unwrap(obj, path)


def _unwrap(obj: object, path: Path) -> dict[str, torch.Tensor]:
    while isinstance(obj, Mapping) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{path} does not hold a state_dict (found {type(obj).__name__})")
    state = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise WeightsError(f"{path} holds no tensors; top-level keys: {sorted(map(str, obj))[:10]}")
    for prefix in _PREFIXES:
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def classifier_prefix(model: nn.Module) -> str | None:
    """Qualified name of the model's classifier module, if it has one."""
    get = getattr(model, "get_classifier", None)
    if get is None:
        return None
    head = get()
    return next((name for name, m in model.named_modules() if m is head and name), None)


def load_weights(
    model: nn.Module,
    source: str | os.PathLike[str] | Mapping[str, torch.Tensor],
    *,
    strict: bool = True,
    skip_classifier: bool | str = False,
) -> nn.Module:
    """Load weights into ``model`` in place and return it.

    Args:
        model: The network.
        source: A state_dict, a file path, a URL or a registered weights name.
        strict: Require every key to match in name and shape.
        skip_classifier: Leave the model's classifier as it is (for a checkpoint trained on other classes);
            ``"auto"`` does so, with a warning, only when the checkpoint's classifier has another shape.

    Raises:
        WeightsError: Listing all missing, unexpected and wrongly shaped keys at once.
    """
    if isinstance(source, Mapping):
        state = dict(source)
        origin = "the given state_dict"
    else:
        path = resolve_weights(source, getattr(model, "model_name", None))
        state = read_state_dict(path)
        origin = os.fspath(path)
    # A family whose module names differ from a peer's (torchvision's, say) translates the peer's keys here.
    remap = getattr(model, "remap_state_dict", None)
    if remap is not None:
        state = remap(state)
    own = model.state_dict()
    head = classifier_prefix(model) if skip_classifier else None
    if head is not None and skip_classifier == "auto":
        differs = any(k.startswith(head + ".") and (k not in own or own[k].shape != v.shape) for k, v in state.items())
        if differs:
            warnings.warn(
                f"{getattr(model, 'model_name', type(model).__name__)}: the checkpoint's classifier has another "
                f"number of classes; it was left out and the model's classifier keeps its fresh initialisation",
                stacklevel=3,
            )
        else:
            head = None
    if head is not None:
        state = {k: v for k, v in state.items() if not k.startswith(head + ".")}
        own = {k: v for k, v in own.items() if not k.startswith(head + ".")}
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if shapes or (strict and (missing or unexpected)):
        name = getattr(model, "model_name", type(model).__name__)
        raise WeightsError(_mismatch_report(name, origin, missing, unexpected, shapes))
    model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    if not strict and (missing or unexpected):
        warnings.warn(f"loaded with {len(missing)} missing and {len(unexpected)} unexpected keys", stacklevel=2)
    return model


def _mismatch_report(name: str, origin: str, missing: list[str], unexpected: list[str], shapes: list[str]) -> str:
    def block(title: str, items: list[str]) -> str:
        if not items:
            return ""
        shown = "\n    ".join(items[:20])
        more = f"\n    ... and {len(items) - 20} more" if len(items) > 20 else ""
        return f"\n  {title} ({len(items)}):\n    {shown}{more}"

    return (
        f"weights from {origin} do not fit {name}:"
        + block("missing from the checkpoint", missing)
        + block("unexpected in the checkpoint", unexpected)
        + block("wrong shape", shapes)
        + "\n  Is the checkpoint for another model or configuration (depth, width, num_classes, in_chans)?"
    )


def save_weights(model: nn.Module, path: str | os.PathLike[str], *, metadata: dict[str, str] | None = None) -> Path:
    """Write the model's state_dict as safetensors, atomically (a temporary file, then a rename).

    Returns:
        The path written.
    """
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"weights are saved as safetensors; give a path ending in .safetensors, not {path.name!r}")
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    meta = {"format": "pt", "model_name": str(getattr(model, "model_name", type(model).__name__))}
    meta.update(metadata or {})
    return write_atomically(path, lambda tmp: save_file(state, tmp, metadata=meta))
