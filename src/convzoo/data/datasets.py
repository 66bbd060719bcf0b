"""Data sets held in memory as uint8 tensors: the embedded ones, the classic ones on disk, .npz files and image folders.

Everything `load_dataset` returns is an `ArrayDataset`: one uint8 tensor of images (N, C, H, W) and one int64 tensor
of labels, small enough for the fast in-memory path of `convzoo.data.FastLoader`. Nothing is ever downloaded: the
embedded sets are built from what is installed (scikit-learn's digits) or generated (shapes), and a missing real
data set raises `FileNotFoundError` saying where it was looked for and how to obtain it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import os
import pickle
import warnings
import zipfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

# ITU-R BT.601 luma, the weights torchvision's rgb_to_grayscale uses.
LUMA = (0.299, 0.587, 0.114)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm")
_GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}
# Test split of sets that come without one; the split is fixed (independent of `seed`) so test sets stay comparable.
DEFAULT_TEST_FRACTION = 0.2
_SPLIT_SEED = 0


@contextmanager
def intra_op_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads (None: leave the setting alone), then restore the setting.

    Data preparation is a chain of small memory-bound ops; on a machine with few cores each parallel region costs
    more in thread wake-ups than it saves (milliseconds per op on a busy 2-core machine, against tens of
    microseconds of work), and the cores stay free for the model.
    """
    before = torch.get_num_threads()
    if n is None or n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def derive_seed(*parts: int | str) -> int:
    """A 64-bit seed mixed from ``parts`` (stable across runs, platforms and Python versions).

    Unlike ``seed + epoch``, distinct tuples never collide by accident, e.g. (seed 1, epoch 0) and (seed 0, epoch 1).
    """
    digest = hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1  # below 2**63: any torch.Generator accepts it


@dataclass(eq=False)  # tensors have no single truth value; compare fields with torch.equal
class ArrayDataset:
    """One split of a data set, held in memory.

    Attributes:
        images: uint8 images (N, C, H, W), contiguous.
        labels: int64 class indices (N,), each in ``[0, len(classes))``.
        classes: Class names in label order.
        name: Name of the data set (``"digits"``, ``"cifar10"``, a file or folder name, ...).
        extras: Further per-image tensors whose first dimension is N, e.g. the shapes set's ``"texture"`` labels,
            ``"boxes"`` (N, 4) and ``"masks"`` (N, H, W).
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    name: str
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.images, torch.Tensor) or self.images.dtype != torch.uint8:
            kind = self.images.dtype if isinstance(self.images, torch.Tensor) else type(self.images).__name__
            raise TypeError(f"{self.name}: images must be a uint8 tensor (N, C, H, W); got {kind}")
        if self.images.dim() != 4:
            raise ValueError(f"{self.name}: images must have shape (N, C, H, W); got {tuple(self.images.shape)}")
        labels = torch.as_tensor(self.labels)
        if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
            raise TypeError(f"{self.name}: labels must be integers; got {labels.dtype}")
        self.labels = labels.to(torch.int64).reshape(-1)
        if self.labels.numel() != self.images.shape[0]:
            raise ValueError(
                f"{self.name}: {self.images.shape[0]} images but {self.labels.numel()} labels; they must match"
            )
        self.classes = [str(c) for c in self.classes]
        if not self.classes:
            raise ValueError(f"{self.name}: no classes")
        _check_label_range(self.labels, len(self.classes), self.name)
        self.images = self.images.contiguous()
        for key, value in self.extras.items():
            if value.shape[0] != self.images.shape[0]:
                raise ValueError(
                    f"{self.name}: extras[{key!r}] has {value.shape[0]} rows for {self.images.shape[0]} images"
                )

    def __len__(self) -> int:
        return self.images.shape[0]

    def __repr__(self) -> str:
        c, h, w = self.image_size
        extras = f", extras={sorted(self.extras)}" if self.extras else ""
        return f"ArrayDataset({self.name!r}, {len(self)} images of {c}x{h}x{w}, {self.num_classes} classes{extras})"

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)

    @property
    def image_size(self) -> tuple[int, int, int]:
        """(channels, height, width) of every image."""
        _, c, h, w = self.images.shape
        return (c, h, w)

    def mean_std(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel mean and standard deviation of the pixels, in [0, 1] units (for normalisation).

        Computed exactly from each channel's histogram of the 256 grey levels.
        """
        if len(self) == 0:
            raise ValueError(f"{self.name}: mean and std of an empty data set")
        levels = torch.arange(256, dtype=torch.float64)
        means, stds = [], []
        for c in range(self.images.shape[1]):
            counts = torch.bincount(self.images[:, c].reshape(-1), minlength=256).cpu().to(torch.float64)
            p = counts / counts.sum()
            mean = float((p * levels).sum())
            var = max(0.0, float((p * (levels - mean).square()).sum()))
            means.append(mean / 255)
            # A constant channel would divide by zero when normalising.
            stds.append(math.sqrt(var) / 255 if var > 0 else 1.0)
        return tuple(means), tuple(stds)

    def subset(self, indices: Sequence[int] | torch.Tensor | np.ndarray) -> ArrayDataset:
        """The images at ``indices`` (integer positions or a boolean mask), with their labels and extras."""
        index = torch.as_tensor(np.asarray(indices) if not isinstance(indices, torch.Tensor) else indices)
        if index.dtype == torch.bool:
            if index.numel() != len(self):
                raise ValueError(f"{self.name}: a boolean mask of {index.numel()} entries for {len(self)} images")
            index = index.nonzero().flatten()
        index = index.to(torch.int64).reshape(-1)
        if index.numel() and (index.min() < -len(self) or index.max() >= len(self)):
            raise IndexError(f"{self.name}: subset index out of range for {len(self)} images")
        index = index.remainder(max(1, len(self))).to(self.images.device)
        return ArrayDataset(
            images=self.images.index_select(0, index),
            labels=self.labels.index_select(0, index.to(self.labels.device)),
            classes=list(self.classes),
            name=self.name,
            extras={k: v.index_select(0, index.to(v.device)) for k, v in self.extras.items()},
        )


def _check_label_range(labels: torch.Tensor, num_classes: int, source: str) -> None:
    if labels.numel() == 0:
        return
    bad = ((labels < 0) | (labels >= num_classes)).nonzero()
    if bad.numel():
        i = int(bad[0])
        raise ValueError(
            f"{source}: label {int(labels[i])} at position {i} is out of range for {num_classes} classes "
            f"(labels must lie in 0..{num_classes - 1}; {bad.numel()} label(s) out of range)"
        )


# -- image tensor helpers --------------------------------------------------------------------------------------------


def convert_channels(images: torch.Tensor, in_chans: int, source: str = "images") -> torch.Tensor:
    """Convert uint8 images (N, C, H, W) to ``in_chans`` channels: grey to RGB repeats, RGB to grey takes the luma."""
    c = images.shape[1]
    if c == in_chans:
        return images
    if c == 1 and in_chans == 3:
        return images.expand(-1, 3, -1, -1).contiguous()
    if c == 3 and in_chans == 1:
        weights = torch.tensor(LUMA, dtype=torch.float32, device=images.device).view(1, 3, 1, 1)
        out = torch.empty((images.shape[0], 1, *images.shape[2:]), dtype=torch.uint8, device=images.device)
        chunk = max(1, (1 << 22) // max(1, images[0].numel()))
        for s in range(0, images.shape[0], chunk):
            grey = (images[s : s + chunk].float() * weights).sum(1, keepdim=True)
            out[s : s + chunk] = grey.round_().clamp_(0, 255).to(torch.uint8)
        return out
    raise ValueError(f"{source} have {c} channel(s); cannot convert them to {in_chans} (only 1 <-> 3 is supported)")


def resize_images(images: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Resize uint8 images (N, C, H, W) to ``size`` with antialiased bilinear interpolation, rounding to uint8."""
    h, w = (size, size) if isinstance(size, int) else size
    if images.shape[-2:] == (h, w):
        return images
    if h < 1 or w < 1:
        raise ValueError(f"image size must be positive; got {h}x{w}")
    n, c = images.shape[:2]
    out = torch.empty((n, c, h, w), dtype=torch.uint8, device=images.device)
    per_image = c * max(images.shape[2] * images.shape[3], h * w)
    chunk = max(1, (1 << 23) // per_image)
    for s in range(0, n, chunk):
        x = images[s : s + chunk].float()
        y = F.interpolate(x, size=(h, w), mode="bilinear", antialias=True, align_corners=False)
        out[s : s + chunk] = y.round_().clamp_(0, 255).to(torch.uint8)
    return out


def to_nchw_uint8(array: Any, source: str) -> torch.Tensor:
    """Images as a uint8 tensor (N, C, H, W) from (N, H, W), (N, H, W, C) or (N, C, H, W) arrays with C in {1, 3}."""
    x = torch.as_tensor(np.asarray(array)) if not isinstance(array, torch.Tensor) else array
    if x.dtype != torch.uint8:
        hint = " (scale floats in [0, 1] by 255 and cast)" if x.is_floating_point() else ""
        raise TypeError(f"{source}: images must be uint8 in 0..255; got {x.dtype}{hint}")
    if x.dim() == 3:
        return x.unsqueeze(1).contiguous()
    if x.dim() == 4:
        if x.shape[-1] in (1, 3):
            return x.permute(0, 3, 1, 2).contiguous()
        if x.shape[1] in (1, 3):
            return x.contiguous()
        raise ValueError(
            f"{source}: images of shape {tuple(x.shape)} have {x.shape[-1]} channels; expected 1 (grey) or 3 (RGB), "
            f"as (N, H, W, C) or (N, C, H, W)"
        )
    raise ValueError(f"{source}: images must have shape (N, H, W) or (N, H, W, C); got {tuple(x.shape)}")


def stratified_split(
    labels: torch.Tensor, test_fraction: float = DEFAULT_TEST_FRACTION, seed: int = _SPLIT_SEED
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split positions into (train, test) index tensors with each class in the same proportion in both.

    The test set holds ``ceil(test_fraction * N)`` images (scikit-learn's rounding); each class gets its share by
    largest remainders, and a class of at least two images keeps at least one training image.
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must lie strictly between 0 and 1; got {test_fraction}")
    labels = labels.cpu()
    n = labels.numel()
    n_test = math.ceil(test_fraction * n)
    classes, counts = torch.unique(labels, return_counts=True)
    quota = counts.double() * test_fraction
    take = quota.floor().long()
    remainder = n_test - int(take.sum())
    if remainder > 0:
        order = torch.argsort(quota - take, descending=True, stable=True)
        for i in order.tolist():
            if remainder == 0:
                break
            if take[i] + 1 < counts[i] or counts[i] == 1:
                take[i] += 1
                remainder -= 1
    generator = torch.Generator().manual_seed(seed)
    train_parts, test_parts = [], []
    for cls, k in zip(classes.tolist(), take.tolist()):
        members = (labels == cls).nonzero().flatten()
        members = members[torch.randperm(members.numel(), generator=generator)]
        test_parts.append(members[:k])
        train_parts.append(members[k:])
    train = torch.cat(train_parts).sort().values if train_parts else torch.zeros(0, dtype=torch.long)
    test = torch.cat(test_parts).sort().values if test_parts else torch.zeros(0, dtype=torch.long)
    return train, test


def _split(full: ArrayDataset, test_fraction: float) -> tuple[ArrayDataset, ArrayDataset]:
    train_idx, test_idx = stratified_split(full.labels, test_fraction)
    return full.subset(train_idx), full.subset(test_idx)


# -- where real data sets live and how to get them --------------------------------------------------------------------


def default_data_root() -> Path:
    """``$CONVZOO_DATA`` if set, else ``~/.cache/convzoo/data``."""
    env = os.environ.get("CONVZOO_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "convzoo" / "data"


def _candidates(name: str, root: str | os.PathLike[str] | None) -> list[Path]:
    base = Path(root).expanduser() if root is not None else default_data_root()
    out = []
    for path in (base / name, base):
        if path not in out:
            out.append(path)
    return out


@dataclass(frozen=True)
class _RealSet:
    name: str
    title: str
    url: str
    files: tuple[str, ...]  # relative to the data set's folder; all must exist
    snippet: str  # obtains the files with torchvision on a machine with network; {root} is the target folder
    load: Callable[[Path, str], tuple[ArrayDataset, ArrayDataset]]


def _missing(spec: _RealSet, looked: list[Path]) -> FileNotFoundError:
    target = looked[0]
    places = ", ".join(str(p) for p in looked)
    layout = "\n".join(f"    {target / f}" for f in spec.files)
    return FileNotFoundError(
        f"data set {spec.name!r} ({spec.title}) not found: looked in {places}.\n"
        f"Expected files:\n{layout}\n"
        f"Obtain it from {spec.url} and unpack it there, or on a machine with network run\n"
        f'    python -c "{spec.snippet.format(root=target)}"\n'
        f"and copy the folder over. Another location: pass root=... (--data-root) or set CONVZOO_DATA."
    )


def _tv_error(spec_name: str, folder: Path, error: Exception) -> ValueError:
    return ValueError(f"{spec_name}: the files in {folder} cannot be read (truncated or corrupt?): {error}")


def _cifar(folder: Path, name: str) -> tuple[ArrayDataset, ArrayDataset]:
    from torchvision.datasets import CIFAR10, CIFAR100

    # torchvision checks the official archive's md5 sums, which rejects subsets and re-packed copies of the same
    # format; the shapes and labels are checked below instead.
    class _Cifar10(CIFAR10):
        train_list = [[f, None] for f, _ in CIFAR10.train_list]
        test_list = [[f, None] for f, _ in CIFAR10.test_list]
        meta = {**CIFAR10.meta, "md5": None}

    class _Cifar100(CIFAR100):
        train_list = [[f, None] for f, _ in CIFAR100.train_list]
        test_list = [[f, None] for f, _ in CIFAR100.test_list]
        meta = {**CIFAR100.meta, "md5": None}

    cls = _Cifar10 if name == "cifar10" else _Cifar100
    splits = []
    for train in (True, False):
        try:
            ds = cls(str(folder), train=train, download=False)
        except (pickle.UnpicklingError, EOFError, KeyError, ValueError, RuntimeError) as e:
            raise _tv_error(name, folder / cls.base_folder, e) from e
        splits.append(_from_arrays(ds.data, ds.targets, ds.classes, name, f"{folder / cls.base_folder}"))
    return splits[0], splits[1]


def _mnist(folder: Path, name: str) -> tuple[ArrayDataset, ArrayDataset]:
    from torchvision.datasets import MNIST, FashionMNIST

    cls = MNIST if name == "mnist" else FashionMNIST
    splits = []
    for train in (True, False):
        try:
            ds = cls(str(folder), train=train, download=False)
        except (AssertionError, TypeError, ValueError, RuntimeError) as e:
            raise _tv_error(name, folder / cls.__name__ / "raw", e) from e
        splits.append(_from_arrays(ds.data, ds.targets, ds.classes, name, str(folder)))
    return splits[0], splits[1]


def _svhn(folder: Path, name: str) -> tuple[ArrayDataset, ArrayDataset]:
    try:
        import scipy.io  # noqa: F401  (torchvision reads SVHN's .mat files with it)
    except ImportError as e:
        raise ImportError("SVHN's .mat files are read with scipy, which is not installed: pip install scipy") from e
    from torchvision.datasets import SVHN

    class _Svhn(SVHN):  # without the md5 check, like CIFAR above
        split_list = {k: [url, f, None] for k, (url, f, _) in SVHN.split_list.items()}

    splits = []
    for split in ("train", "test"):
        try:
            ds = _Svhn(str(folder), split=split, download=False)
        except (ValueError, RuntimeError, KeyError, OSError) as e:
            raise _tv_error(name, folder, e) from e
        # torchvision has already mapped the digit 0's label 10 to 0.
        splits.append(_from_arrays(ds.data, ds.labels, [str(d) for d in range(10)], name, str(folder)))
    return splits[0], splits[1]


def _stl10(folder: Path, name: str) -> tuple[ArrayDataset, ArrayDataset]:
    from torchvision.datasets import STL10

    class _Stl10(STL10):  # labelled splits only (no 2.6 GB unlabeled_X.bin needed), without md5 checks
        train_list = [[f, None] for f, _ in STL10.train_list[:2]]
        test_list = [[f, None] for f, _ in STL10.test_list]

    splits = []
    for split in ("train", "test"):
        try:
            ds = _Stl10(str(folder), split=split, download=False)
        except (ValueError, RuntimeError, OSError) as e:
            raise _tv_error(name, folder / "stl10_binary", e) from e
        if ds.labels is None or len(ds.labels) != len(ds.data):
            raise ValueError(f"{name}: {folder / 'stl10_binary'} holds images and labels of different lengths")
        classes = getattr(ds, "classes", None) or [str(i) for i in range(10)]
        splits.append(_from_arrays(ds.data, ds.labels, classes, name, str(folder / "stl10_binary")))
    return splits[0], splits[1]


_TV = "import torchvision.datasets as d; "
REAL_DATASETS: dict[str, _RealSet] = {
    s.name: s
    for s in (
        _RealSet(
            "cifar10",
            "CIFAR-10, Krizhevsky 2009, official python batches",
            "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
            tuple(f"cifar-10-batches-py/{f}" for f in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"])
            + ("cifar-10-batches-py/batches.meta",),
            _TV + "[d.CIFAR10('{root}', train=t, download=True) for t in (True, False)]",
            _cifar,
        ),
        _RealSet(
            "cifar100",
            "CIFAR-100, Krizhevsky 2009, official python batches",
            "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
            ("cifar-100-python/train", "cifar-100-python/test", "cifar-100-python/meta"),
            _TV + "[d.CIFAR100('{root}', train=t, download=True) for t in (True, False)]",
            _cifar,
        ),
        _RealSet(
            "mnist",
            "MNIST, LeCun et al. 1998, idx files, uncompressed",
            "https://yann.lecun.com/exdb/mnist/ (mirror: https://ossci-datasets.s3.amazonaws.com/mnist/)",
            tuple(
                f"MNIST/raw/{f}"
                for f in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")
                + ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
            ),
            _TV + "[d.MNIST('{root}', train=t, download=True) for t in (True, False)]",
            _mnist,
        ),
        _RealSet(
            "fashion-mnist",
            "Fashion-MNIST, Xiao et al. 2017, idx files, uncompressed",
            "https://github.com/zalandoresearch/fashion-mnist",
            tuple(
                f"FashionMNIST/raw/{f}"
                for f in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")
                + ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
            ),
            _TV + "[d.FashionMNIST('{root}', train=t, download=True) for t in (True, False)]",
            _mnist,
        ),
        _RealSet(
            "svhn",
            "SVHN, Netzer et al. 2011, cropped digits, .mat files",
            "http://ufldl.stanford.edu/housenumbers/ (train_32x32.mat, test_32x32.mat)",
            ("train_32x32.mat", "test_32x32.mat"),
            _TV + "[d.SVHN('{root}', split=s, download=True) for s in ('train', 'test')]",
            _svhn,
        ),
        _RealSet(
            "stl10",
            "STL-10, Coates et al. 2011, binary files",
            "https://cs.stanford.edu/~acoates/stl10/ (stl10_binary.tar.gz)",
            tuple(f"stl10_binary/{f}" for f in ("train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin")),
            _TV + "d.STL10('{root}', split='test', download=True)",
            _stl10,
        ),
    )
}
EMBEDDED_DATASETS = ("digits", "shapes")


def dataset_names() -> list[str]:
    """The names `load_dataset` knows: the embedded sets first, then the real ones read from disk."""
    return [*EMBEDDED_DATASETS, *REAL_DATASETS]


def _canonical(name: str) -> str | None:
    key = name.lower().replace("-", "").replace("_", "")
    for known in dataset_names():
        if known.replace("-", "") == key:
            return known
    return None


def _from_arrays(images: Any, labels: Any, classes: Sequence[str], name: str, source: str) -> ArrayDataset:
    x = to_nchw_uint8(images, source)
    y = torch.as_tensor(np.asarray(labels)).reshape(-1)
    _check_label_range(y, len(classes), source)
    return ArrayDataset(images=x, labels=y, classes=list(classes), name=name)


# -- embedded sets --------------------------------------------------------------------------------------------------


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 x 64 grey levels and the labels, read from the file scikit-learn ships.

    Reading ``sklearn/datasets/data/digits.csv.gz`` directly takes 20 ms; importing ``sklearn.datasets`` to call
    ``load_digits`` takes a second, which would be a tenth of a short training run. The same arrays either way.
    """
    spec = importlib.util.find_spec("sklearn")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the embedded digits come with scikit-learn: pip install scikit-learn")
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "digits.csv.gz"
    if path.is_file():
        table = np.loadtxt(path, delimiter=",")
        return table[:, :-1], table[:, -1]
    from sklearn.datasets import load_digits  # a layout other than the one known: ask scikit-learn

    digits = load_digits()
    return digits.data, digits.target


def load_digits_dataset() -> tuple[ArrayDataset, ArrayDataset]:
    """scikit-learn's handwritten digits (1,797 real 8x8 images, 16 grey levels) split 1,437 / 360, stratified.

    Grey levels 0..16 are scaled to 0..255. The split is fixed: the same images are in the test set on every run.
    """
    pixels, targets = _digits_arrays()
    images = torch.from_numpy(np.rint(pixels.reshape(-1, 8, 8) * (255 / 16)).astype(np.uint8)).unsqueeze(1)
    full = ArrayDataset(
        images=images,
        labels=torch.from_numpy(targets.astype(np.int64)),
        classes=[str(d) for d in range(10)],
        name="digits",
    )
    return _split(full, DEFAULT_TEST_FRACTION)


# -- numpy arrays -----------------------------------------------------------------------------------------------------

_TRAIN_KEYS = (("images", "labels"), ("x_train", "y_train"), ("train_images", "train_labels"), ("x", "y"))
_TEST_KEYS = (("test_images", "test_labels"), ("x_test", "y_test"))


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise ValueError(
                f"{path} holds Python objects; store class names as a string array, e.g. np.array(names, dtype=str)"
            ) from e
        raise ValueError(f"{path} is not a readable .npz file: {e}") from e
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path} is not a readable .npz file (truncated or corrupt?): {e}") from e


def _pick(arrays: dict[str, np.ndarray], options: tuple[tuple[str, str], ...]) -> tuple[np.ndarray, np.ndarray] | None:
    for xk, yk in options:
        if xk in arrays and yk in arrays:
            return arrays[xk], arrays[yk]
    return None


def _npz_labels(labels: np.ndarray, source: str) -> torch.Tensor:
    y = np.asarray(labels)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]  # Keras stores labels as (N, 1)
    if y.ndim != 1:
        raise ValueError(f"{source}: labels must have shape (N,); got {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise TypeError(f"{source}: labels must be integers (class indices); got {y.dtype}")
    return torch.from_numpy(y.astype(np.int64))


def _sibling_test_file(path: Path) -> Path | None:
    if "train" not in path.stem:
        return None
    for word in ("test", "val"):
        candidate = path.with_name(path.stem.replace("train", word) + path.suffix)
        if candidate.is_file():
            return candidate
    return None


def load_npz(
    path: str | os.PathLike[str], *, test_fraction: float = DEFAULT_TEST_FRACTION
) -> tuple[ArrayDataset, ArrayDataset]:
    """Read a data set stored as numpy arrays.

    Accepted format (``np.savez`` / ``np.savez_compressed``; loaded without unpickling):

    - images: uint8, (N, H, W) grey, or (N, H, W, C) / (N, C, H, W) with C = 1 or 3; under the key ``images``
      (or ``x_train``, ``train_images``, ``x``), with integer class indices (N,) or (N, 1) under ``labels``
      (or ``y_train``, ``train_labels``, ``y``);
    - optionally ``classes``: the class names as a string array; then every label must be below ``len(classes)``,
      otherwise the classes are ``"0" .. str(max label)``;
    - the test split: in the same file under ``test_images``/``test_labels`` (or ``x_test``/``y_test``); else in a
      sibling file named like this one with ``train`` replaced by ``test`` (or ``val``), e.g. ``train.npz`` and
      ``test.npz``; else a fixed stratified split holding ``test_fraction`` of the images. A folder holding
      ``train.npz`` may be given instead of the file.

    Raises:
        FileNotFoundError: No such file.
        ValueError: Unreadable file, missing keys, images of another shape or channel count, out-of-range labels.
        TypeError: Images not uint8 or labels not integers.
    """
    path = Path(path).expanduser()
    if path.is_dir() and (path / "train.npz").is_file():
        path = path / "train.npz"
    if not path.is_file():
        raise FileNotFoundError(f"no such .npz file: {path}")
    arrays = _read_npz(path)
    train_arrays = _pick(arrays, _TRAIN_KEYS)
    if train_arrays is None:
        expected = ", ".join(f"{x}/{y}" for x, y in _TRAIN_KEYS)
        raise ValueError(f"{path} holds the arrays {sorted(arrays)}; expected images and labels under {expected}")
    parts = [(train_arrays, str(path))]
    test_arrays = _pick(arrays, _TEST_KEYS)
    test_file = None if test_arrays is not None else _sibling_test_file(path)
    if test_arrays is not None:
        parts.append((test_arrays, f"{path} (test split)"))
    elif test_file is not None:
        other = _read_npz(test_file)
        picked = _pick(other, _TRAIN_KEYS) or _pick(other, _TEST_KEYS)
        if picked is None:
            raise ValueError(f"{test_file} holds the arrays {sorted(other)}; expected images and labels")
        parts.append((picked, str(test_file)))

    classes = [str(c) for c in arrays["classes"].tolist()] if "classes" in arrays else None
    loaded = []
    for (images, labels), source in parts:
        x = to_nchw_uint8(images, source)
        y = _npz_labels(labels, source)
        if y.numel() != x.shape[0]:
            raise ValueError(f"{source}: {x.shape[0]} images but {y.numel()} labels")
        loaded.append((x, y, source))
    if classes is None:
        top = max((int(y.max()) for _, y, _ in loaded if y.numel()), default=0)
        classes = [str(i) for i in range(top + 1)]
    for x, y, source in loaded:
        _check_label_range(y, len(classes), source)
        if x.shape[1:] != loaded[0][0].shape[1:]:
            raise ValueError(
                f"{source}: images of {tuple(x.shape[1:])} (C, H, W) differ from the training split's "
                f"{tuple(loaded[0][0].shape[1:])}"
            )
    name = path.parent.name if path.stem in ("train", "data") else path.stem
    sets = [ArrayDataset(images=x, labels=y, classes=classes, name=name) for x, y, _ in loaded]
    if len(sets) == 2:
        return sets[0], sets[1]
    return _split(sets[0], test_fraction)


# -- image folders ----------------------------------------------------------------------------------------------------


def _class_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _image_files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
    )


def _read_folder(
    root: Path, classes: list[str] | None, skip_corrupt: bool
) -> tuple[list[tuple[torch.Tensor, Path]], list[int], list[str], list[Path]]:
    from PIL import Image

    folders = _class_folders(root)
    names = [p.name for p in folders]
    if classes is None:
        classes = names
    else:
        unknown = sorted(set(names) - set(classes))
        if unknown:
            raise ValueError(f"{root} has class folders {unknown} that the training folder does not have")
    images: list[tuple[torch.Tensor, Path]] = []
    labels: list[int] = []
    corrupt: list[Path] = []
    index = {c: i for i, c in enumerate(classes)}
    for folder in folders:
        files = _image_files(folder)
        if not files:
            raise ValueError(f"class folder {folder} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        for file in files:
            try:
                with Image.open(file) as im:
                    im.load()
                    grey = im.mode in _GREY_MODES
                    im = im.convert("L" if grey else "RGB")
                    array = np.asarray(im, dtype=np.uint8)
            except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
                if not skip_corrupt:
                    raise ValueError(
                        f"cannot read image {file}: {e}. Remove it, or skip unreadable files with skip_corrupt=True "
                        f"(--skip-corrupt)"
                    ) from e
                corrupt.append(file)
                continue
            tensor = torch.from_numpy(array.copy())
            tensor = tensor.unsqueeze(0) if tensor.dim() == 2 else tensor.permute(2, 0, 1)
            images.append((tensor, file))
            labels.append(index[folder.name])
    return images, labels, classes, corrupt


def _stack(images: list[tuple[torch.Tensor, Path]], channels: int, image_size: int | None, root: Path) -> torch.Tensor:
    if not images:
        return torch.zeros((0, channels, image_size or 1, image_size or 1), dtype=torch.uint8)
    converted = [(convert_channels(x.unsqueeze(0), channels, str(f))[0], f) for x, f in images]
    sizes = {tuple(x.shape[1:]) for x, _ in converted}
    if len(sizes) > 1:
        if image_size is None:
            (a, fa), (b, fb) = converted[0], next(item for item in converted if item[0].shape != converted[0][0].shape)
            raise ValueError(
                f"images in {root} have different sizes ({a.shape[2]}x{a.shape[1]} in {fa.name}, {b.shape[2]}x"
                f"{b.shape[1]} in {fb.name}); pass image_size (--image-size) to resize them all"
            )
        return torch.cat([resize_images(x.unsqueeze(0), image_size) for x, _ in converted])
    return torch.stack([x for x, _ in converted])


def load_image_folder(
    root: str | os.PathLike[str],
    *,
    image_size: int | None = None,
    skip_corrupt: bool = False,
    test_fraction: float = DEFAULT_TEST_FRACTION,
) -> tuple[ArrayDataset, ArrayDataset]:
    """Read an image folder (``root/<class>/<image>``, torchvision's ImageFolder layout) into memory.

    With ``root/train`` and ``root/test`` (or ``root/val``) subfolders these are the splits; otherwise a fixed
    stratified split holds ``test_fraction`` of the images. Classes are the sorted folder names of the training
    split. Images are read with Pillow (PNG, JPEG, BMP, GIF, WebP, TIFF, PPM); if any is in colour all become RGB,
    otherwise grey. Images of different sizes need ``image_size``, to which each is resized.

    Raises:
        ValueError: An unreadable image (the error names the file) unless ``skip_corrupt``, which skips such files
            and reports their number with `warnings.warn`; an empty class folder; images of different sizes.
        FileNotFoundError: No such folder, or no class folders in it.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"no such image folder: {root}")
    test_dir = next((root / n for n in ("test", "val") if (root / n).is_dir()), None)
    split_dirs = [root / "train", test_dir] if (root / "train").is_dir() and test_dir is not None else [root]
    if not _class_folders(split_dirs[0]):
        raise FileNotFoundError(f"{split_dirs[0]} holds no class folders (expected {root}/<class>/<image files>)")
    read = []
    classes = None
    corrupt: list[Path] = []
    for folder in split_dirs:
        images, labels, classes, bad = _read_folder(folder, classes, skip_corrupt)
        read.append((images, labels))
        corrupt += bad
    if corrupt:
        warnings.warn(
            f"skipped {len(corrupt)} unreadable image file(s) in {root}, e.g. {corrupt[0]}",
            RuntimeWarning,
            stacklevel=3,
        )
    channels = 3 if any(x.shape[0] == 3 for images, _ in read for x, _f in images) else 1
    sets = [
        ArrayDataset(
            images=_stack(images, channels, image_size, root),
            labels=torch.tensor(labels, dtype=torch.int64),
            classes=classes,
            name=root.name,
        )
        for images, labels in read
    ]
    if len(sets[0]) == 0:
        raise ValueError(f"no readable images in {split_dirs[0]}")
    if len(sets) == 2:
        if sets[1].image_size[1:] != sets[0].image_size[1:] and image_size is None:
            raise ValueError(
                f"the test images in {split_dirs[1]} are {sets[1].image_size[1:]} but the training images "
                f"{sets[0].image_size[1:]}; pass image_size to resize them all"
            )
        return sets[0], sets[1]
    return _split(sets[0], test_fraction)


# -- the entry point ------------------------------------------------------------------------------------------------


def load_dataset(
    name_or_path: str | os.PathLike[str],
    *,
    root: str | os.PathLike[str] | None = None,
    image_size: int | None = None,
    in_chans: int | None = None,
    seed: int = 0,
    skip_corrupt: bool = False,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    n_train: int | None = None,
    n_test: int | None = None,
) -> tuple[ArrayDataset, ArrayDataset]:
    """Load a data set into memory as (train, test) splits.

    Args:
        name_or_path: One of `dataset_names` - the embedded ``digits`` and ``shapes``, or ``cifar10``, ``cifar100``,
            ``mnist``, ``fashion-mnist``, ``svhn``, ``stl10`` read from ``root`` - or a path to an .npz file (format
            in `load_npz`) or to an image folder (layout in `load_image_folder`).
        root: Folder holding the named real data set, either directly or in a subfolder named after it
            (default: ``$CONVZOO_DATA``, else ``~/.cache/convzoo/data``). Each set is read in its official
            format: CIFAR's python batches, the MNIST idx files, SVHN's .mat files (needs scipy), STL-10's binaries.
        image_size: Resize every image to ``image_size`` x ``image_size`` (antialiased bilinear); the shapes set is
            drawn at that size instead.
        in_chans: Convert to this many channels (grey to RGB repeats the channel, RGB to grey takes the luma).
        seed: Seed of generated data (shapes). Splits of sets without a test split are fixed and do not depend on it.
        skip_corrupt: In image folders, skip unreadable files (counted in a warning) instead of failing.
        test_fraction: Share of the images held out as the test split where a set comes without one.
        n_train: Number of training images of the shapes set (default 5,000).
        n_test: Number of test images of the shapes set (default 1,000).

    Returns:
        The training and test splits.

    Raises:
        FileNotFoundError: A real data set or path that is not there (the message says where it looked and how
            to obtain the set).
        ValueError: An unknown name, unreadable or inconsistent files, out-of-range labels, impossible conversions.
    """
    text = os.fspath(name_or_path)
    # A bare word is a name; anything that looks like a path is a path, even if it is also a name.
    known = None if ("/" in text or os.sep in text or text.endswith(".npz")) else _canonical(text)
    if (n_train is not None or n_test is not None) and known != "shapes":
        raise ValueError(f"n_train and n_test apply to the generated 'shapes' set only, not to {text!r}")
    if known is not None:
        if known == "digits":
            train, test = load_digits_dataset()
        elif known == "shapes":
            from convzoo.data.shapes import make_shapes

            size = image_size or 32
            train = make_shapes(5000 if n_train is None else n_train, image_size=size, seed=seed, split="train")
            test = make_shapes(1000 if n_test is None else n_test, image_size=size, seed=seed, split="test")
        else:
            spec = REAL_DATASETS[known]
            looked = _candidates(known, root)
            folder = next((p for p in looked if all((p / f).is_file() for f in spec.files)), None)
            if folder is None:
                raise _missing(spec, looked)
            train, test = spec.load(folder, known)
    else:
        path = Path(text).expanduser()
        if path.suffix.lower() == ".npz" or (path.is_dir() and (path / "train.npz").is_file()):
            train, test = load_npz(path, test_fraction=test_fraction)
        elif path.is_dir():
            train, test = load_image_folder(
                path, image_size=image_size, skip_corrupt=skip_corrupt, test_fraction=test_fraction
            )
        elif path.exists():
            raise ValueError(f"{path} is neither an .npz file nor an image folder")
        elif os.sep in text or "/" in text or path.suffix:
            raise FileNotFoundError(f"no such file or folder: {path}")
        else:
            raise ValueError(
                f"unknown data set {text!r}: known names are {', '.join(dataset_names())}; "
                f"or give a path to an .npz file or an image folder"
            )
    return _adapt(train, in_chans, image_size), _adapt(test, in_chans, image_size)


def _adapt(ds: ArrayDataset, in_chans: int | None, image_size: int | None) -> ArrayDataset:
    images = ds.images
    if in_chans is not None and in_chans < images.shape[1]:
        images = convert_channels(images, in_chans, ds.name)
    if image_size is not None:
        if image_size < 1:
            raise ValueError(f"image_size must be positive; got {image_size}")
        if images.shape[-2:] != (image_size, image_size) and ds.extras:
            raise ValueError(f"{ds.name}: resizing would not update its extras ({sorted(ds.extras)}); draw it anew")
        images = resize_images(images, image_size)
    if in_chans is not None and in_chans > images.shape[1]:
        images = convert_channels(images, in_chans, ds.name)
    if images is ds.images:
        return ds
    return ArrayDataset(images=images, labels=ds.labels, classes=ds.classes, name=ds.name, extras=ds.extras)
