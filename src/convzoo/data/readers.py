"""Readers of the formats users keep their own data sets in: numpy ``.npz`` files and image folders.

Both return (train, test) `ArrayDataset` splits: the file's or folder's own test split where it has one, else a fixed
stratified split. Errors name the file or folder they are about.
"""

from __future__ import annotations

import os
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch

from convzoo.data.arrays import (
    DEFAULT_TEST_FRACTION,
    ArrayDataset,
    check_label_range,
    convert_channels,
    resize_images,
    split_dataset,
    to_nchw_uint8,
)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm")
_GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}


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
        check_label_range(y, len(classes), source)
        if x.shape[1:] != loaded[0][0].shape[1:]:
            raise ValueError(
                f"{source}: images of {tuple(x.shape[1:])} (C, H, W) differ from the training split's "
                f"{tuple(loaded[0][0].shape[1:])}"
            )
    name = path.parent.name if path.stem in ("train", "data") else path.stem
    sets = [ArrayDataset(images=x, labels=y, classes=classes, name=name) for x, y, _ in loaded]
    if len(sets) == 2:
        return sets[0], sets[1]
    return split_dataset(sets[0], test_fraction)


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
    return split_dataset(sets[0], test_fraction)
