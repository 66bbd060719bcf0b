"""Reading, checking and writing network weights.

Nothing is unpickled beyond tensors: PyTorch checkpoints are read with ``torch.load(..., weights_only=True)``, and
weights are written as safetensors.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import pickle
import re
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn as nn

from convzoo._files import convzoo_home, write_atomically
from convzoo.layouts import apply_settings, describe_state_dict, detect_layout, get_layout, guess_architecture
from convzoo.pretrained.entries import WeightsEntry, find_weights, list_weights, package_file

# Wrappers that training scripts commonly put around a state_dict, tried in this order.
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "module", "net", "weights")
# Prefixes that DataParallel/DistributedDataParallel and torch.compile add to every key.
_PREFIXES = ("module.", "_orig_mod.")


class WeightsError(ValueError):
    """A weights file could not be read, or does not fit the model."""


class WeightsDownloadError(WeightsError, OSError):
    """Weights could not be downloaded."""


def cache_dir() -> Path:
    """Where downloaded weights are kept: ``$CONVZOO_HOME/weights``, default ``~/.cache/convzoo/weights``."""
    return convzoo_home() / "weights"


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def resolve_weights(weights: str | os.PathLike[str], model_name: str | None = None) -> Path:
    """Turn ``weights=`` (a path, a URL or a registered name) into a local file, checking its SHA-256 where known.

    A registered entry's file is looked for in the package (weights shipped with convzoo), then in `cache_dir` and
    torch hub's cache (where torchvision keeps the files it downloaded), and only then downloaded. A ``file://`` URL
    is read where it lies; an ``http(s)://`` one is downloaded once into `cache_dir`, in a folder named after a hash
    of the whole URL, so two URLs ending in the same file name never share a cached file. The expected SHA-256 comes
    from a registered entry, a ``#sha256=<hex>`` fragment of the URL, or the hash prefix that torchvision puts in its
    file names (``resnet50-0676ba61.pth``: the first hex digits of the file's SHA-256). A file that fails the check
    is refused, and a downloaded one deleted.

    Raises:
        FileNotFoundError: If there is no such file or registered name.
        WeightsDownloadError: If a download fails.
        WeightsError: If the file's SHA-256 is not the expected one.
    """
    if not isinstance(weights, (str, os.PathLike)):
        raise TypeError(
            f"weights must be a file path, a URL or a registered weights name (or, for load_weights, a state_dict); "
            f"got {type(weights).__name__}"
        )
    text = os.fspath(weights)
    entry = find_weights(text)
    if entry is not None:
        if model_name is not None and entry.model != model_name:
            raise WeightsError(
                f"weights {text!r} are registered for {entry.model}, not for {model_name}; weights registered for "
                f"{model_name}: {', '.join(w.name for w in list_weights(model_name)) or 'none'}"
            )
        return _entry_file(entry)
    if text.startswith(_URL_SCHEMES):
        url, fragment = urllib.parse.urldefrag(text)
        expected = _expected_sha256(url, fragment)
        path = _fetch(url)
        if expected is not None:
            _check_sha256(path, url, *expected, downloaded=not url.startswith("file:"))
        return path
    if re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", text):
        raise WeightsError(f"weights {text!r}: only http://, https:// and file:// URLs are supported")
    path = Path(text).expanduser()
    if not path.is_file():
        known = [w.name for w in list_weights(model_name)] if model_name else []
        hint = f"; weights registered for {model_name}: {', '.join(known)}" if known else ""
        close = difflib.get_close_matches(text, [w.name for w in list_weights()], n=3, cutoff=0.6)
        hint += f"; did you mean {', '.join(close)}?" if close else ""
        raise FileNotFoundError(f"weights {text!r} is neither an existing file nor a registered weights name{hint}")
    return path


def _entry_file(entry: WeightsEntry) -> Path:
    """The checked local file of a registered entry: shipped in the package, cached, or downloaded now."""
    origin = f"registered weights {entry.name!r}"
    if entry.shipped:
        path = package_file(entry)
        if not path.is_file():
            raise FileNotFoundError(
                f"{origin}: the package's file {path} is missing (a damaged install?); reinstall convzoo"
            )
        _check_sha256(path, os.fspath(path), (entry.sha256 or "").lower(), origin, downloaded=False)
        return path
    if not entry.source.startswith(_URL_SCHEMES):
        path = Path(entry.source).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"{origin}: its file {path} does not exist")
    else:
        url = urllib.parse.urldefrag(entry.source)[0]
        path = find_local_copy(url, entry.file_name) or _fetch(url)
    if entry.sha256 is not None:
        downloaded = cache_dir() in path.parents  # only convzoo's own downloads are deleted on a mismatch
        _check_sha256(path, os.fspath(path), entry.sha256.lower(), origin, downloaded=downloaded)
    return path


def find_local_copy(url: str, file_name: str) -> Path | None:
    """A copy of a URL's file already on this machine: convzoo's cache, or torch hub's (where torchvision keeps it)."""
    if url.startswith("file:"):
        return None
    for path in (cached_path(url), Path(torch.hub.get_dir()) / "checkpoints" / file_name):
        if file_name and path.is_file():
            return path
    return None


_URL_SCHEMES = ("http://", "https://", "file://")
# torchvision's file names end in "-<first 8 or more hex digits of the file's SHA-256>" before the suffix.
_HASH_IN_NAME = re.compile(r"-([0-9a-f]{8,64})\.[A-Za-z0-9.]+$")


def _expected_sha256(url: str, fragment: str) -> tuple[str, str] | None:
    """The expected SHA-256 (or its first digits) of a URL's file, and where that expectation comes from."""
    if fragment:
        key, _, value = fragment.partition("=")
        if key != "sha256" or not re.fullmatch(r"[0-9a-fA-F]{8,64}", value):
            raise WeightsError(f"{url}#{fragment}: the only fragment understood is '#sha256=<hex digits>'")
        return value.lower(), "the URL's '#sha256=' fragment"
    match = _HASH_IN_NAME.search(_url_file_name(url))
    return (match.group(1), "the hash prefix in the file name") if match else None


def _check_sha256(path: Path, origin: str, expected: str, source: str, *, downloaded: bool) -> None:
    actual = file_sha256(path)
    if actual.startswith(expected):
        return
    what = "a shorter or damaged download, or another file than the one meant" if downloaded else "another file"
    if downloaded:
        path.unlink(missing_ok=True)
        what += "; the downloaded copy was deleted, so the next call downloads it again"
    raise WeightsError(
        f"{origin}: SHA-256 mismatch: the file has {actual}, but {source} expects {expected}; refusing to load it "
        f"({what})"
    )


def _url_file_name(url: str) -> str:
    name = Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path)).name
    return name or "weights"


def cached_path(url: str) -> Path:
    """Where the file of an http(s) URL is kept: ``cache_dir()/<hash of the URL>/<file name>``."""
    url = urllib.parse.urldefrag(url)[0]
    key = hashlib.sha256(url.encode()).hexdigest()[:16]
    return cache_dir() / key / _url_file_name(url)


def _fetch(url: str) -> Path:
    if url.startswith("file:"):
        path = Path(urllib.request.url2pathname(urllib.parse.urlsplit(url).path))
        if not path.is_file():
            raise FileNotFoundError(f"weights URL {url} names {path}, which is not an existing file")
        return path
    target = cached_path(url)
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(url, os.fspath(target), progress=True)
    except (urllib.error.URLError, OSError) as e:
        reason = e.reason if isinstance(e, urllib.error.URLError) else e
        status = f"HTTP {e.code} " if isinstance(e, urllib.error.HTTPError) else ""
        raise WeightsDownloadError(
            f"could not download weights from {url}: {status}{reason}. Check the URL and the network; or fetch the "
            f"file another way (a browser, `curl -L -o {target} {url}`) and either put it at {target}, where it is "
            f"looked for first, or pass its local path as weights="
        ) from e
    return target


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
    with path.open("rb") as f:
        head = f.read(64)
    if _is_safetensors(head):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            obj: object = load_file(os.fspath(path))
        except (SafetensorError, OSError) as e:
            raise WeightsError(f"{path} is not a readable safetensors file (truncated or corrupt?): {e}") from e
    elif is_torch_save_file(head):
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            raise WeightsError(
                f"{path} holds Python objects other than tensors and plain containers; refusing to unpickle it. "
                f"Re-save only the state_dict (torch.save(model.state_dict(), path)) or use safetensors. ({e})"
            ) from e
        except Exception as e:  # a damaged file can fail anywhere inside the unpickler
            raise WeightsError(f"{path} is not a readable PyTorch checkpoint (truncated or corrupt?): {e}") from e
    else:
        raise WeightsError(
            f"{path} is neither a safetensors file nor a PyTorch checkpoint: {describe_file_start(head)}"
        )
    return _unwrap(obj, path)


# A PyTorch checkpoint is a zip archive (torch.save's format since 1.6) or, older, a pickle (protocol 2 or later).
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_MAGIC = b"\x80"


def is_torch_save_file(head: bytes) -> bool:
    """Whether a file starting with ``head`` can be a ``torch.save`` file: a zip archive or a pickle."""
    return head.startswith(_ZIP_MAGIC) or head.startswith(_PICKLE_MAGIC)


def _is_safetensors(head: bytes) -> bool:
    # 8 bytes of little-endian header length, then the JSON header.
    return len(head) > 8 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 1 << 32


def describe_file_start(head: bytes) -> str:
    """What the first bytes of a file look like, for an error message."""
    if not head:
        return "the file is empty"
    text = head.decode("utf-8", errors="replace")
    if "\ufffd" not in text[:-4] and all(c.isprintable() or c.isspace() for c in text[:-4]):
        return f"it holds text, starting {text[:40]!r}"
    if head.startswith(b"\x89HDF"):
        return "it is an HDF5 file (Keras weights?)"
    return f"it starts with the bytes {head[:16].hex(' ')}"


def _unwrap(obj: object, path: Path) -> dict[str, torch.Tensor]:
    # Descend into a wrapper while the level above holds no weights: no tensors, or only scalars such as a training
    # script's saved best accuracy (torch.save({"state_dict": ..., "best_prec1": tensor(91.2)})).
    while isinstance(obj, Mapping) and all(v.ndim == 0 for v in obj.values() if isinstance(v, torch.Tensor)):
        inner = next(
            (
                obj[k]
                for k in _WRAPPER_KEYS
                if isinstance(obj.get(k), Mapping) and any(isinstance(v, torch.Tensor) for v in obj[k].values())
            ),
            None,
        )
        if inner is None:
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
    layout: str | None = "auto",
) -> nn.Module:
    """Load weights into ``model`` in place and return it.

    Args:
        model: The network.
        source: A state_dict, a file path, a URL or a registered weights name.
        strict: Require every key to match in name and shape.
        skip_classifier: Leave the model's classifier as it is (for a checkpoint trained on other classes);
            ``"auto"`` does so, with a warning, only when the checkpoint's classifier has another shape.
        layout: How to read the checkpoint's key names (see `convzoo.layouts`). ``"auto"`` keeps them when they
            are the model's and otherwise translates them from the known layout that recognises them, if any; a
            layout's name translates from that layout; None never translates. A layout whose networks use a
            parameter-free setting (option A's ``pad_channels``) switches the model to it, with a warning.

    Raises:
        ValueError: If ``layout`` names no known layout.
        WeightsError: Listing all missing, unexpected and wrongly shaped keys at once; when no layout translated
            them, with what the checkpoint looks like (its size, key prefixes, sample keys, a guess).
    """
    forced = None if layout in (None, "auto") else get_layout(layout)
    if isinstance(source, Mapping):
        state = dict(source)
        origin = "the given state_dict"
    else:
        path = resolve_weights(source, getattr(model, "model_name", None))
        state = read_state_dict(path)
        origin = os.fspath(path)
    own = model.state_dict()
    name = getattr(model, "model_name", type(model).__name__)
    as_read = state
    used = detect_layout(state) if layout == "auto" and state.keys() != own.keys() else forced
    if used is not None:
        state = used.translate(state, own)
    # A family whose module names differ from a peer's (torchvision's, say) translates the peer's keys here.
    remap = getattr(model, "remap_state_dict", None)
    if remap is not None:
        state = remap(state)
    translated = state

    def mismatch(missing: list[str], unexpected: list[str], shapes: list[str], architecture: bool = False) -> str:
        report = _mismatch_report(name, origin, missing, unexpected, shapes, architecture=architecture)
        if used is not None:
            guess = guess_architecture(translated)
            looks = f"\n  Translated, the checkpoint looks like {guess}." if guess else ""
            return f"{report}\n  The keys were translated from the {used.name!r} layout: {used.description}.{looks}"
        return f"{report}\n  {describe_state_dict(as_read)}"

    head = classifier_prefix(model) if skip_classifier else None
    if head is not None:
        body_state = {k: v for k, v in state.items() if not k.startswith(head + ".")}
        body_own = {k: v for k, v in own.items() if not k.startswith(head + ".")}
        missing, unexpected, shapes = _compare(body_state, body_own)
        if shapes or (strict and (missing or unexpected)):
            # The network itself does not fit, not only its classifier: report every key, the classifier's too.
            raise WeightsError(mismatch(*_compare(state, own), architecture=True))
        if skip_classifier == "auto":
            in_head = (k for k in state if k not in body_state)
            if any(k not in own or own[k].shape != state[k].shape for k in in_head):
                warnings.warn(
                    f"{name}: the checkpoint's classifier has another number of classes; it was left out and the "
                    f"model's classifier keeps its fresh initialisation",
                    stacklevel=3,
                )
            else:
                head = None
    if head is not None:
        state, own = body_state, body_own
    missing, unexpected, shapes = _compare(state, own)
    if shapes or (strict and (missing or unexpected)):
        raise WeightsError(mismatch(missing, unexpected, shapes))
    if used is not None:
        try:
            changed = apply_settings(model, used)
        except ValueError as e:
            raise WeightsError(f"weights from {origin} do not fit {name}: {e}") from None
        if changed:
            warnings.warn(
                f"{name}: the checkpoint is in the {used.name!r} layout, whose networks differ from this one only in "
                f"a parameter-free setting; the model was switched to it ({'; '.join(changed)}). Build the model "
                f"with {', '.join(f'{k}={v!r}' for k, v in used.settings.items())} to ask for it explicitly",
                stacklevel=2,
            )
    model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    if not strict and (missing or unexpected):
        warnings.warn(f"loaded with {len(missing)} missing and {len(unexpected)} unexpected keys", stacklevel=2)
    return model


def _compare(
    state: Mapping[str, torch.Tensor], own: Mapping[str, torch.Tensor]
) -> tuple[list[str], list[str], list[str]]:
    """Keys missing from ``state``, keys ``own`` lacks, and the shape differences of the keys both hold."""
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    return missing, unexpected, shapes


def _mismatch_report(
    name: str,
    origin: str,
    missing: list[str],
    unexpected: list[str],
    shapes: list[str],
    *,
    architecture: bool = False,
) -> str:
    def block(title: str, items: list[str]) -> str:
        if not items:
            return ""
        shown = "\n    ".join(items[:20])
        more = f"\n    ... and {len(items) - 20} more" if len(items) > 20 else ""
        return f"\n  {title} ({len(items)}):\n    {shown}{more}"

    if architecture:
        hint = (
            f"\n  The checkpoint is of another architecture or configuration than {name} (depth, width, block type, "
            f"in_chans): not only its classifier differs."
        )
    else:
        hint = "\n  Is the checkpoint for another model or configuration (depth, width, num_classes, in_chans)?"
    return (
        f"weights from {origin} do not fit {name}:"
        + block("missing from the checkpoint", missing)
        + block("unexpected in the checkpoint", unexpected)
        + block("wrong shape", shapes)
        + hint
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
    blocker = next((parent for parent in path.parents if parent.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise NotADirectoryError(f"cannot save weights to {path}: {blocker} is a file, not a folder")
    return write_atomically(path, lambda tmp: save_file(state, tmp, metadata=meta))
