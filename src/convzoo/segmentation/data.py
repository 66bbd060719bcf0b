"""Segmentation data on disk: Pascal VOC and folders of image/mask pairs, read into `ArrayDataset` splits.

Each split holds the images (N, C, S, S) and, in ``extras["masks"]``, their class maps (N, S, S) uint8, the value
`IGNORE_INDEX` (255) marking pixels no loss or metric counts. Images and masks are brought to one size together
with ``torchvision.transforms.v2``: images resized bilinearly (antialiased), masks by nearest neighbour, so that a
mask only ever holds the classes it held. The embedded ``scenes`` set (`convzoo.data.make_scenes`) has masks too.

Two layouts are read:

- Pascal VOC 2012 (Everingham et al., "The PASCAL Visual Object Classes Challenge", IJCV 2010)::

      VOC2012/JPEGImages/<id>.jpg
      VOC2012/SegmentationClass/<id>.png          palette PNGs: classes 0-20, 255 on object outlines
      VOC2012/ImageSets/Segmentation/train.txt    ids of the 1,464 training images
      VOC2012/ImageSets/Segmentation/val.txt      ids of the 1,449 validation images (the test split here)

  The folder given may be ``VOC2012`` itself or one holding ``VOCdevkit/VOC2012`` or ``VOC2012``.
- A folder of pairs::

      root/images/<name>.png|jpg...   root/masks/<name>.png   [root/classes.txt]

  or ``root/train/{images,masks}`` and ``root/val/{images,masks}`` (or ``test``) for given splits. A mask is a
  greyscale or palette PNG whose values are class indices (255: ignore); ``classes.txt`` names the classes one per
  line, otherwise they are numbered up to the largest index found. Without a test split a fixed split holds out
  ``test_fraction`` of the images.

Each image's label (the `ArrayDataset` label, used for stratified splits) is its most frequent class other than 0.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from convzoo.data.arrays import DEFAULT_TEST_FRACTION, ArrayDataset, split_dataset
from convzoo.data.datasets import register_folder_reader
from convzoo.data.readers import IMAGE_EXTENSIONS
from convzoo.data.transforms import IGNORE_INDEX
from convzoo.segmentation.metrics import check_mask_values

__all__ = [
    "VOC_CLASSES",
    "VOC_URL",
    "is_segmentation_folder",
    "is_voc_folder",
    "load_pairs_folder",
    "load_segmentation_folder",
    "load_voc",
    "resize_pair",
]

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip
"""The 21 classes of Pascal VOC segmentation, in the order of the mask values (0 is the background)."""
VOC_URL = "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar"
"""The official VOC 2012 train/val archive (2 GB); unpack it and give the folder it makes."""
_VOC_DIRS = ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation")
_GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}
_TEST_SPLITS = ("val", "test")


def _voc_root(path: Path) -> Path | None:
    for candidate in (path, path / "VOCdevkit" / "VOC2012", path / "VOC2012"):
        if all((candidate / d).is_dir() for d in _VOC_DIRS):
            return candidate
    return None


def is_voc_folder(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` holds Pascal VOC 2012 in its own layout (see the module's docstring)."""
    return _voc_root(Path(path).expanduser()) is not None


def _paired(folder: Path) -> bool:
    return (folder / "images").is_dir() and (folder / "masks").is_dir()


def _pair_splits(root: Path) -> list[Path] | None:
    """The split folders of a pairs layout: [root] or [root/train, root/val|test]; None if it is not one."""
    if _paired(root):
        return [root]
    test = next((root / s for s in _TEST_SPLITS if _paired(root / s)), None)
    if _paired(root / "train") and test is not None:
        return [root / "train", test]
    return None


def is_segmentation_folder(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a folder of segmentation data: Pascal VOC or image/mask pairs (see the module)."""
    path = Path(path).expanduser()
    return path.is_dir() and (_voc_root(path) is not None or _pair_splits(path) is not None)


def _layouts_message(path: Path) -> str:
    return (
        f"{path} is not a segmentation folder. Expected either Pascal VOC 2012 (VOC2012/JPEGImages, "
        f"VOC2012/SegmentationClass, VOC2012/ImageSets/Segmentation/{{train,val}}.txt; get it from {VOC_URL} and "
        f"unpack it) or image/mask pairs: {path}/images/<name>.<ext> with {path}/masks/<name>.png holding class "
        f"indices (or train/ and val/ folders each holding images/ and masks/), optionally {path}/classes.txt"
    )


def resize_pair(image: torch.Tensor, mask: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """An image (C, H, W) uint8 and its mask (H, W) resized together to ``size`` x ``size``.

    The pair goes through one ``torchvision.transforms.v2.Resize`` as a ``tv_tensors.Image`` and a
    ``tv_tensors.Mask``: bilinear (antialiased) for the image, nearest neighbour for the mask.
    """
    from torchvision import tv_tensors
    from torchvision.transforms import v2

    if image.shape[-2:] == (size, size):
        return image, mask
    resized_image, resized_mask = v2.Resize((size, size), antialias=True)(
        tv_tensors.Image(image), tv_tensors.Mask(mask[None])
    )
    return resized_image.as_subclass(torch.Tensor), resized_mask.as_subclass(torch.Tensor)[0]


def _read_image(path: Path) -> torch.Tensor:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("L" if im.mode in _GREY_MODES else "RGB")
            array = np.array(im, dtype=np.uint8)
    except (OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"cannot read image {path}: {e}") from e
    x = torch.from_numpy(array)
    return x[None] if x.dim() == 2 else x.permute(2, 0, 1).contiguous()


def _read_mask(path: Path) -> torch.Tensor:
    """A mask PNG's class indices (H, W) int64: palette indices of a palette image, values of a grey one."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L", "1", "I", "I;16", "I;16B", "I;16L"):
                raise ValueError(
                    f"mask {path} is a {im.mode} image; a mask holds one class index per pixel (a greyscale or "
                    f"palette PNG), not colours"
                )
            array = np.array(im).astype(np.int64)
    except (OSError, SyntaxError) as e:
        raise ValueError(f"cannot read mask {path}: {e}") from e
    return torch.from_numpy(array)


def _label(mask: torch.Tensor, num_classes: int) -> int:
    counts = torch.bincount(mask[mask != IGNORE_INDEX].flatten(), minlength=num_classes)[1:num_classes]
    return int(counts.argmax()) + 1 if counts.numel() and int(counts.max()) > 0 else 0


def _assemble(
    pairs: list[tuple[Path, Path]], classes: list[str], image_size: int | None, name: str, channels: int | None = None
) -> ArrayDataset:
    """Read, check and resize ``pairs`` of (image file, mask file) into one split."""
    images, masks = [], []
    for image_file, mask_file in pairs:
        image, mask = _read_image(image_file), _read_mask(mask_file)
        if image.shape[-2:] != mask.shape:
            raise ValueError(
                f"mask {mask_file} is {mask.shape[1]}x{mask.shape[0]} but its image {image_file} is "
                f"{image.shape[2]}x{image.shape[1]}; a mask must be the size of its image"
            )
        check_mask_values(mask, len(classes), f"mask {mask_file}")
        if image_size is not None:
            image, mask = resize_pair(image, mask.to(torch.uint8), image_size)
        images.append(image)
        masks.append(mask.to(torch.uint8))
    channels = channels or (3 if any(x.shape[0] == 3 for x in images) else 1)
    images = [x.expand(channels, -1, -1) if x.shape[0] != channels else x for x in images]
    sizes = {tuple(x.shape[-2:]) for x in images}
    if len(sizes) > 1:
        raise ValueError(
            f"the images of {name} have different sizes (e.g. {sorted(sizes)[:2]}); pass image_size "
            f"(--image-size) to resize them all"
        )
    h, w = sizes.pop() if sizes else (image_size or 1, image_size or 1)
    stacked = torch.stack(images) if images else torch.zeros(0, channels, h, w, dtype=torch.uint8)
    mask_stack = torch.stack(masks) if masks else torch.zeros(0, h, w, dtype=torch.uint8)
    labels = torch.tensor([_label(m.long(), len(classes)) for m in masks], dtype=torch.int64)
    return ArrayDataset(images=stacked, labels=labels, classes=classes, name=name, extras={"masks": mask_stack})


def load_voc(path: str | os.PathLike[str], *, image_size: int | None = None) -> tuple[ArrayDataset, ArrayDataset]:
    """Read Pascal VOC 2012 segmentation: (train, val) with the 21 `VOC_CLASSES`, outlines kept as 255 (ignore).

    Args:
        path: ``VOC2012``, or a folder holding ``VOCdevkit/VOC2012`` or ``VOC2012``.
        image_size: Side every image and mask is resized to (VOC's images differ in size, so one is needed).

    Raises:
        FileNotFoundError: The folder or one of its parts is missing (the message says where VOC comes from).
        ValueError: Unreadable files, masks of another size than their images, classes out of range.
    """
    path = Path(path).expanduser()
    root = _voc_root(path)
    if root is None:
        raise FileNotFoundError(_layouts_message(path))
    splits = []
    for split in ("train", "val"):
        listing = root / "ImageSets" / "Segmentation" / f"{split}.txt"
        if not listing.is_file():
            raise FileNotFoundError(f"{listing} is missing: the VOC 2012 segmentation split lists come in {VOC_URL}")
        ids = [line.strip() for line in listing.read_text().splitlines() if line.strip()]
        pairs = [(root / "JPEGImages" / f"{i}.jpg", root / "SegmentationClass" / f"{i}.png") for i in ids]
        missing = [str(f) for pair in pairs for f in pair if not f.is_file()]
        if missing:
            raise FileNotFoundError(f"{len(missing)} files listed in {listing} are missing, e.g. {missing[0]}")
        splits.append(_assemble(pairs, list(VOC_CLASSES), image_size, "voc2012", channels=3))
    return splits[0], splits[1]


def _pairs_of(split: Path) -> list[tuple[Path, Path]]:
    images = {p.stem: p for p in sorted((split / "images").iterdir()) if p.suffix.lower() in IMAGE_EXTENSIONS}
    masks = {p.stem: p for p in sorted((split / "masks").iterdir()) if p.suffix.lower() == ".png"}
    without_mask = sorted(set(images) - set(masks))
    without_image = sorted(set(masks) - set(images))
    if without_mask or without_image:
        parts = []
        if without_mask:
            parts.append(f"{len(without_mask)} image(s) without a mask in {split / 'masks'} (e.g. {without_mask[0]})")
        if without_image:
            parts.append(f"{len(without_image)} mask(s) without an image in {split / 'images'} ({without_image[0]})")
        raise ValueError(f"{split}: " + "; ".join(parts) + "; each images/<name>.* needs masks/<name>.png")
    if not images:
        raise ValueError(f"{split / 'images'} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    return [(images[stem], masks[stem]) for stem in sorted(images)]


def _pair_classes(root: Path, pairs: list[tuple[Path, Path]]) -> list[str]:
    listing = root / "classes.txt"
    if listing.is_file():
        names = [line.strip() for line in listing.read_text().splitlines() if line.strip()]
        if not names:
            raise ValueError(f"{listing} names no classes (one name per line)")
        return names
    top = 0
    for _, mask_file in pairs:
        values = torch.unique(_read_mask(mask_file))
        values = values[values != IGNORE_INDEX]
        top = max(top, int(values.max()) if values.numel() else 0)
    return [str(i) for i in range(top + 1)]


def load_pairs_folder(
    path: str | os.PathLike[str], *, image_size: int | None = None, test_fraction: float = DEFAULT_TEST_FRACTION
) -> tuple[ArrayDataset, ArrayDataset]:
    """Read a folder of image/mask pairs (layout in the module's docstring) as (train, test) splits.

    Args:
        path: The folder.
        image_size: Side every image and mask is resized to; None keeps their size, which must be the same for all.
        test_fraction: Share of the images held out for testing when the folder has no val/ or test/ split.

    Raises:
        FileNotFoundError: No such folder, or not this layout (the message describes it).
        ValueError: Images without masks or the reverse, unreadable files, masks of another size than their
            images, class values out of range (naming the mask, the values and the valid range).
    """
    root = Path(path).expanduser()
    splits = _pair_splits(root) if root.is_dir() else None
    if splits is None:
        raise FileNotFoundError(_layouts_message(root))
    pairs = [_pairs_of(split) for split in splits]
    classes = _pair_classes(root, [p for split in pairs for p in split])
    sets = [_assemble(split_pairs, classes, image_size, root.name) for split_pairs in pairs]
    if len(sets) == 2:
        if sets[0].image_size != sets[1].image_size:
            raise ValueError(
                f"the test images of {root} are {sets[1].image_size} (C, H, W), the training images "
                f"{sets[0].image_size}; pass image_size (--image-size) to resize them all"
            )
        return sets[0], sets[1]
    return split_dataset(sets[0], test_fraction)


def load_segmentation_folder(
    path: str | os.PathLike[str], *, image_size: int | None = None, test_fraction: float = DEFAULT_TEST_FRACTION
) -> tuple[ArrayDataset, ArrayDataset]:
    """Read Pascal VOC 2012 or a folder of image/mask pairs, whichever ``path`` holds, as (train, test) splits.

    See `load_voc` and `load_pairs_folder`; ``test_fraction`` applies to a pairs folder without a test split.

    Raises:
        FileNotFoundError: ``path`` is neither layout; the message describes both and where VOC comes from.
    """
    root = Path(path).expanduser()
    if root.is_dir() and _voc_root(root) is not None:
        return load_voc(root, image_size=image_size)
    return load_pairs_folder(root, image_size=image_size, test_fraction=test_fraction)


register_folder_reader("segmentation", is_segmentation_folder, load_segmentation_folder)
