"""The classic named data sets: scikit-learn's digits, embedded, and CIFAR, MNIST, SVHN and STL-10 read from disk.

Nothing is ever downloaded: the digits come from the file scikit-learn installs, and a missing real data set raises
`FileNotFoundError` saying where it was looked for and how to obtain it. Real sets are read in their official formats
through torchvision's readers, without its archive checksums, so subsets and re-packed copies load too.
"""

from __future__ import annotations

import importlib.util
import os
import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from convzoo._files import convzoo_home
from convzoo.data.arrays import DEFAULT_TEST_FRACTION, ArrayDataset, check_label_range, split_dataset, to_nchw_uint8

# -- where real data sets live and how to get them --------------------------------------------------------------------


def default_data_root() -> Path:
    """``$CONVZOO_DATA`` if set, else ``$CONVZOO_HOME/data`` (``~/.cache/convzoo/data`` without either)."""
    env = os.environ.get("CONVZOO_DATA")
    return Path(env).expanduser() if env else convzoo_home().expanduser() / "data"


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


def _from_arrays(images: Any, labels: Any, classes: Sequence[str], name: str, source: str) -> ArrayDataset:
    x = to_nchw_uint8(images, source)
    y = torch.as_tensor(np.asarray(labels)).reshape(-1)
    check_label_range(y, len(classes), source)
    return ArrayDataset(images=x, labels=y, classes=list(classes), name=name)


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


def load_real_dataset(name: str, root: str | os.PathLike[str] | None = None) -> tuple[ArrayDataset, ArrayDataset]:
    """Read the real data set ``name`` (a key of `REAL_DATASETS`) as (train, test) splits.

    Args:
        name: The data set's name.
        root: Folder holding the set, either directly or in a subfolder named after it (default: `default_data_root`).

    Raises:
        FileNotFoundError: Neither folder holds all of the set's files; the message lists the files and how to
            obtain them.
        ValueError: The files cannot be read or hold inconsistent images and labels.
    """
    spec = REAL_DATASETS[name]
    looked = _candidates(name, root)
    folder = next((p for p in looked if all((p / f).is_file() for f in spec.files)), None)
    if folder is None:
        raise _missing(spec, looked)
    return spec.load(folder, name)


# -- the embedded digits -----------------------------------------------------------------------------------------------


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
    return split_dataset(full, DEFAULT_TEST_FRACTION)
