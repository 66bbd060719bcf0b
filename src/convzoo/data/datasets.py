"""`load_dataset`, the one way in to every data set: by name or by path, as (train, test) `ArrayDataset` splits.

`dataset_names` lists the names: the embedded digits and the classic real sets (`convzoo.data.classic`), the
generated shapes (`convzoo.data.shapes`) and the generated scenes of several shapes with masks and boxes
(`convzoo.data.scenes`, for segmentation and detection). Paths lead to .npz files and image folders
(`convzoo.data.readers`). Any of them can be resized and converted to another number of channels on the way.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from convzoo.data.arrays import DEFAULT_TEST_FRACTION, ArrayDataset, convert_channels, resize_images
from convzoo.data.classic import REAL_DATASETS, load_digits_dataset, load_real_dataset
from convzoo.data.readers import load_image_folder, load_npz
from convzoo.data.scenes import make_scenes
from convzoo.data.shapes import make_shapes

EMBEDDED_DATASETS = ("digits", "shapes", "scenes")
GENERATED = {"shapes": (make_shapes, 32, 5000, 1000), "scenes": (make_scenes, 64, 2000, 500)}
"""The generated sets: drawing function, default image size and default numbers of training and test images."""


FolderReader = Callable[..., tuple[ArrayDataset, ArrayDataset]]
_FOLDER_READERS: dict[str, tuple[Callable[[Path], bool], FolderReader]] = {}


def register_folder_reader(task: str, recognises: Callable[[Path], bool], load: FolderReader) -> None:
    """Let `load_dataset` read folders of another task's layout (Pascal VOC, COCO, image/mask pairs).

    Args:
        task: The task whose targets the layout holds (``"segmentation"``, ``"detection"``).
        recognises: Whether a folder has the layout.
        load: Called as ``load(path, image_size=..., test_fraction=...)``; returns (train, test) splits with the
            targets as extras.

    Raises:
        ValueError: The task has a reader already.
    """
    if task in _FOLDER_READERS:
        raise ValueError(f"the {task!r} task has a folder reader already")
    _FOLDER_READERS[task] = (recognises, load)


def dataset_names() -> list[str]:
    """The names `load_dataset` knows: the embedded sets first, then the real ones read from disk."""
    return [*EMBEDDED_DATASETS, *REAL_DATASETS]


def _canonical(name: str) -> str | None:
    key = name.lower().replace("-", "").replace("_", "")
    for known in dataset_names():
        if known.replace("-", "") == key:
            return known
    return None


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
    task: str | None = None,
) -> tuple[ArrayDataset, ArrayDataset]:
    """Load a data set into memory as (train, test) splits.

    Args:
        name_or_path: One of `dataset_names` - the embedded ``digits``, ``shapes`` and ``scenes``, or ``cifar10``,
            ``cifar100``, ``mnist``, ``fashion-mnist``, ``svhn``, ``stl10`` read from ``root`` - or a path to an .npz
            file (format in `load_npz`) or to an image folder (layout in `load_image_folder`).
        root: Folder holding the named real data set, either directly or in a subfolder named after it
            (default: ``$CONVZOO_DATA``, else ``$CONVZOO_HOME/data``, else ``~/.cache/convzoo/data``). Each set is
            read in its official format: CIFAR's python batches, the MNIST idx files, SVHN's .mat files (needs
            scipy), STL-10's binaries.
        image_size: Resize every image to ``image_size`` x ``image_size`` (antialiased bilinear); the shapes set is
            drawn at that size instead, and so are the scenes.
        in_chans: Convert to this many channels (grey to RGB repeats the channel, RGB to grey takes the luma).
        seed: Seed of generated data (shapes, scenes). Splits of sets without a test split are fixed and do not
            depend on it.
        skip_corrupt: In image folders, skip unreadable files (counted in a warning) instead of failing.
        test_fraction: Share of the images held out as the test split where a set comes without one.
        n_train: Number of training images of a generated set (default: 5,000 shapes, 2,000 scenes).
        n_test: Number of test images of a generated set (default: 1,000 shapes, 500 scenes).
        task: The task the data is for (a registered network's ``task``): a folder is read with that task's
            reader (Pascal VOC holds both segmentation masks and detection boxes). None: a folder of a layout a
            segmentation or detection reader recognises is read with it, any other folder as class folders.

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
    if (n_train is not None or n_test is not None) and known not in GENERATED:
        raise ValueError(f"n_train and n_test apply to the generated sets {sorted(GENERATED)} only, not to {text!r}")
    if known is not None:
        if known == "digits":
            train, test = load_digits_dataset()
        elif known in GENERATED:
            draw, size, default_train, default_test = GENERATED[known]
            size = image_size or size
            train = draw(default_train if n_train is None else n_train, image_size=size, seed=seed, split="train")
            test = draw(default_test if n_test is None else n_test, image_size=size, seed=seed, split="test")
        else:
            train, test = load_real_dataset(known, root)
    else:
        path = Path(text).expanduser()
        if path.suffix.lower() == ".npz" or (path.is_dir() and (path / "train.npz").is_file()):
            train, test = load_npz(path, test_fraction=test_fraction)
        elif path.is_dir() and (reader := _folder_reader(path, task)) is not None:
            train, test = reader(path, image_size=image_size, test_fraction=test_fraction)
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


def _folder_reader(path: Path, task: str | None) -> FolderReader | None:
    if task is not None:
        return _FOLDER_READERS[task][1] if task in _FOLDER_READERS else None
    return next((load for recognises, load in _FOLDER_READERS.values() if recognises(path)), None)


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
