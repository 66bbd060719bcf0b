"""Detection data on disk, read into `ArrayDataset` splits with padded per-image objects.

Two layouts are read:

- COCO: ``annotations/instances_<split>.json`` (COCO's object-instance format) with the images in ``<split>/``
  (e.g. ``train2017/``), ``images/<split>/`` or ``images/``. The ``train`` file gives the training split and the
  ``val`` (or ``test``) file the test split; one file alone is split. Categories are renumbered 1..K in order of
  their ids (0 is the background). Crowd annotations (``iscrowd``) are left out, counted in a warning, since
  the evaluation does not handle them. Polygon and RLE masks are decoded with pycocotools when it is installed;
  without it only boxes are read, and a warning says so.
- Pascal VOC: ``Annotations/<id>.xml``, ``JPEGImages/<id>.jpg`` and ``ImageSets/Main/train.txt`` and ``val.txt``
  (``trainval.txt`` and ``test.txt`` stand in for them). VOC's 1-based inclusive corners become pixel edges.
  "Difficult" objects are kept and flagged in ``extras["difficult"]``, which `voc_evaluate` reads (as the VOC
  protocol: they count neither way). Classes are VOC's twenty when every name is one of them, else the names found,
  sorted.

Every image is resized to one size with torchvision's ``transforms.v2``, applied jointly to the image, its boxes
and its masks. The extras are those of the scenes: ``boxes`` (N, K, 4) x0 y0 x1 y1 in pixel edges, objects first
and zero rows after, ``box_labels`` (N, K) with -1 on padding rows, and where masks exist ``instance_masks``
(N, K, H, W) and ``masks`` (N, H, W), the class of every pixel. The image label is the class of the largest object
(0 without objects). Boxes partly outside the image are clipped; boxes of zero area, or wholly outside, are
dropped; both are counted in a warning.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from convzoo.data.arrays import ArrayDataset, split_dataset
from convzoo.data.datasets import register_folder_reader

__all__ = ["VOC_CLASSES", "is_detection_folder", "load_detection_folder", "read_coco", "read_image", "read_voc"]

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable", "dog",
    "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip
"""The twenty Pascal VOC classes, in the development kit's order."""


@dataclass
class _Image:
    """One image's file and objects before resizing: boxes in pixel edges, labels 1..K."""

    path: Path
    boxes: list[list[float]] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    difficult: list[bool] = field(default_factory=list)
    segmentations: list[Any] = field(default_factory=list)


@dataclass
class _Counts:
    clipped: int = 0
    dropped: int = 0
    crowd: int = 0

    def warn(self, source: str) -> None:
        if self.dropped or self.clipped:
            warnings.warn(
                f"{source}: dropped {self.dropped} box(es) of zero area or wholly outside their image, clipped "
                f"{self.clipped} box(es) to the image",
                stacklevel=3,
            )
        if self.crowd:
            warnings.warn(f"{source}: left out {self.crowd} crowd annotation(s) (iscrowd=1)", stacklevel=3)


def is_detection_folder(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a COCO-format or Pascal VOC folder that `load_detection_folder` reads."""
    return _coco_files(Path(path)) != [] or _is_voc(Path(path))


def _is_voc(root: Path) -> bool:
    return (root / "Annotations").is_dir() and (root / "JPEGImages").is_dir()


def _coco_files(root: Path) -> list[Path]:
    folder = root / "annotations"
    return sorted(folder.glob("instances_*.json")) if folder.is_dir() else []


def load_detection_folder(
    path: str | os.PathLike[str],
    *,
    image_size: int | tuple[int, int] | None = None,
    test_fraction: float = 0.2,
) -> tuple[ArrayDataset, ArrayDataset]:
    """The (train, test) splits of a COCO-format or Pascal VOC folder (layouts in the module docstring).

    Args:
        path: The folder.
        image_size: Resize every image (and its boxes and masks) to this side, or (height, width); None keeps the
            images' size when they all share one.
        test_fraction: Share of the images held out for testing when the folder has a single split.

    Raises:
        FileNotFoundError: No such folder, a missing image or split list.
        ValueError: Neither layout, unreadable annotations, unknown categories or class names, images of several
            sizes without ``image_size``.
    """
    root = Path(path).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"no such folder: {root}")
    if _is_voc(root):
        lists = root / "ImageSets" / "Main"
        train_list = next((lists / n for n in ("train.txt", "trainval.txt") if (lists / n).is_file()), None)
        test_list = next((lists / n for n in ("val.txt", "test.txt") if (lists / n).is_file()), None)
        if train_list is None:
            raise FileNotFoundError(f"{root}: no ImageSets/Main/train.txt (or trainval.txt) lists the training images")
        names = _voc_names(root, [train_list] + ([test_list] if test_list else []))
        train = read_voc(root, train_list.stem, image_size=image_size, classes=names)
        if test_list is None:
            return split_dataset(train, test_fraction)
        return train, read_voc(root, test_list.stem, image_size=image_size, classes=names)
    files = _coco_files(root)
    if not files:
        raise ValueError(
            f"{root} is not a detection folder: expected annotations/instances_*.json (COCO) or Annotations/ and "
            f"JPEGImages/ (Pascal VOC)"
        )
    train_file = next((f for f in files if "train" in f.stem), None)
    test_file = next((f for f in files if "val" in f.stem or "test" in f.stem), None)
    if train_file is None or test_file is None:
        return split_dataset(read_coco(files[0], root, image_size=image_size), test_fraction)
    return read_coco(train_file, root, image_size=image_size), read_coco(test_file, root, image_size=image_size)


# -- COCO -------------------------------------------------------------------------------------------------------------


def read_coco(
    annotations: str | os.PathLike[str],
    images: str | os.PathLike[str],
    *,
    image_size: int | tuple[int, int] | None = None,
) -> ArrayDataset:
    """One split in COCO's object-instance format.

    Args:
        annotations: The instances JSON file.
        images: The image folder, or the data set's root (then ``<split>/``, ``images/<split>/`` or ``images/``
            with ``<split>`` the file's name after ``instances_`` is searched).
        image_size: See `load_detection_folder`.
    """
    file = Path(annotations)
    if not file.is_file():
        raise FileNotFoundError(f"no such annotation file: {file}")
    try:
        data = json.loads(file.read_text())
        categories = sorted(data["categories"], key=lambda c: c["id"])
        image_rows, annotation_rows = data["images"], data.get("annotations", [])
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{file}: not a COCO instances file ({e})") from None
    folder = _coco_image_folder(Path(images), file.stem.removeprefix("instances_"))
    index = {c["id"]: i + 1 for i, c in enumerate(categories)}
    by_id = {row["id"]: _Image(folder / row["file_name"]) for row in image_rows}
    counts = _Counts()
    for ann in annotation_rows:
        if ann["category_id"] not in index:
            raise ValueError(
                f"{file}: annotation {ann.get('id')} has category_id {ann['category_id']}, which is not among the "
                f"categories {sorted(index)}"
            )
        if ann["image_id"] not in by_id:
            raise ValueError(f"{file}: annotation {ann.get('id')} refers to image_id {ann['image_id']}, not listed")
        if ann.get("iscrowd", 0):
            counts.crowd += 1
            continue
        x, y, w, h = (float(v) for v in ann["bbox"])
        image = by_id[ann["image_id"]]
        image.boxes.append([x, y, x + w, y + h])
        image.labels.append(index[ann["category_id"]])
        image.segmentations.append(ann.get("segmentation"))
    decode = _mask_decoder(file) if any(img.segmentations for img in by_id.values()) else None
    classes = ["background"] + [str(c["name"]) for c in categories]
    return _build(list(by_id.values()), classes, file.stem, image_size, counts, decode)


def _coco_image_folder(root: Path, split: str) -> Path:
    for candidate in (root / split, root / "images" / split, root / "images"):
        if candidate.is_dir():
            return candidate
    if any(p.suffix.lower() in (".jpg", ".jpeg", ".png") for p in root.iterdir()):
        return root
    raise FileNotFoundError(
        f"{root}: no image folder for split {split!r} (looked for {split}/, images/{split}/, images/)"
    )


def _mask_decoder(source: Path) -> Any:
    """A function (segmentation, height, width) -> bool mask, or None when pycocotools is missing."""
    try:
        from pycocotools import mask as mask_utils
    except ImportError:
        warnings.warn(
            f"{source}: pycocotools is not installed, so the masks are not read (boxes only); "
            f"`pip install pycocotools` reads them",
            stacklevel=3,
        )
        return None

    def decode(segmentation: Any, height: int, width: int) -> np.ndarray:
        if isinstance(segmentation, list):  # polygons
            rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
        elif isinstance(segmentation.get("counts"), list):  # uncompressed RLE
            rle = mask_utils.frPyObjects(segmentation, height, width)
        else:
            rle = segmentation
        with warnings.catch_warnings():  # pycocotools' own numpy 2 deprecation, not the caller's concern
            warnings.simplefilter("ignore", DeprecationWarning)
            return mask_utils.decode(rle).astype(bool)

    return decode


# -- Pascal VOC -------------------------------------------------------------------------------------------------------


def _voc_names(root: Path, lists: Sequence[Path]) -> list[str]:
    found: set[str] = set()
    for listing in lists:
        for image_id in _read_list(listing):
            found |= {obj[0] for obj in _parse_voc_xml(root / "Annotations" / f"{image_id}.xml")[1]}
    return list(VOC_CLASSES) if found <= set(VOC_CLASSES) else sorted(found)


def _read_list(listing: Path) -> list[str]:
    return [line.split()[0] for line in listing.read_text().splitlines() if line.strip()]


def _parse_voc_xml(file: Path) -> tuple[str | None, list[tuple[str, list[float], bool]]]:
    """The image file name and the (name, box in pixel edges, difficult) of each object of a VOC annotation."""
    import xml.etree.ElementTree as ET

    if not file.is_file():
        raise FileNotFoundError(f"missing annotation file {file}")
    try:
        tree = ET.parse(file).getroot()
        objects = []
        for obj in tree.iter("object"):
            bb = obj.find("bndbox")
            xmin, ymin, xmax, ymax = (float(bb.find(k).text) for k in ("xmin", "ymin", "xmax", "ymax"))
            difficult = obj.find("difficult")
            flag = difficult is not None and difficult.text is not None and difficult.text.strip() == "1"
            objects.append((obj.find("name").text.strip(), [xmin - 1, ymin - 1, xmax, ymax], flag))
    except (ET.ParseError, AttributeError, TypeError, ValueError) as e:
        raise ValueError(f"{file}: not a readable VOC annotation ({e})") from None
    name = tree.find("filename")
    return (name.text.strip() if name is not None and name.text else None), objects


def read_voc(
    root: str | os.PathLike[str],
    split: str = "train",
    *,
    image_size: int | tuple[int, int] | None = None,
    classes: Sequence[str] | None = None,
) -> ArrayDataset:
    """One split of a Pascal VOC folder: the images listed in ``ImageSets/Main/<split>.txt``.

    Args:
        root: The folder holding Annotations/, JPEGImages/ and ImageSets/.
        split: The list's name.
        image_size: See `load_detection_folder`.
        classes: Object class names (without the background); default: VOC's twenty.

    Raises:
        ValueError: An object whose class is not in ``classes``.
    """
    root = Path(root)
    listing = root / "ImageSets" / "Main" / f"{split}.txt"
    if not listing.is_file():
        raise FileNotFoundError(f"{root}: no split list {listing.relative_to(root)}")
    names = list(classes) if classes is not None else list(VOC_CLASSES)
    items = []
    for image_id in _read_list(listing):
        filename, objects = _parse_voc_xml(root / "Annotations" / f"{image_id}.xml")
        path = root / "JPEGImages" / f"{image_id}.jpg"
        if not path.is_file() and filename:
            path = root / "JPEGImages" / filename
        item = _Image(path)
        for name, box, difficult in objects:
            if name not in names:
                raise ValueError(f"{root / 'Annotations' / image_id}.xml: class {name!r} is not one of {names}")
            item.boxes.append(box)
            item.labels.append(names.index(name) + 1)
            item.difficult.append(difficult)
        items.append(item)
    return _build(items, ["background", *names], f"{root.name}-{split}", image_size, _Counts(), None, voc=True)


# -- shared -----------------------------------------------------------------------------------------------------------


def read_image(path: str | os.PathLike[str]) -> torch.Tensor:
    """An image file as a uint8 RGB tensor (3, H, W).

    Raises:
        FileNotFoundError: No such file.
        ValueError: Not a readable image.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing image file {path}")
    try:
        with Image.open(path) as img:
            array = np.asarray(img.convert("RGB"))
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"cannot read image {path}: {e}") from None
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def _clean_boxes(boxes: torch.Tensor, height: int, width: int, counts: _Counts) -> tuple[torch.Tensor, torch.Tensor]:
    """Boxes clipped to the image, and which to keep (positive area after clipping)."""
    clipped = torch.stack(
        [
            boxes[:, 0].clamp(0, width),
            boxes[:, 1].clamp(0, height),
            boxes[:, 2].clamp(0, width),
            boxes[:, 3].clamp(0, height),
        ],
        1,
    )
    keep = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    counts.dropped += int((~keep).sum())
    counts.clipped += int((keep & (clipped != boxes).any(1)).sum())
    return clipped, keep


def _build(
    items: list[_Image],
    classes: list[str],
    name: str,
    image_size: int | tuple[int, int] | None,
    counts: _Counts,
    decode: Any,
    voc: bool = False,
) -> ArrayDataset:
    """Read, clean and resize every image and its objects; pad them into an `ArrayDataset`."""
    from torchvision import tv_tensors
    from torchvision.transforms import v2

    size = (image_size, image_size) if isinstance(image_size, int) else image_size
    images, per_image = [], []
    for item in items:
        image = read_image(item.path)
        h, w = image.shape[-2:]
        boxes = torch.tensor(item.boxes, dtype=torch.float32).reshape(-1, 4)
        boxes, keep = _clean_boxes(boxes, h, w, counts)
        labels = torch.tensor(item.labels, dtype=torch.int64)[keep]
        difficult = torch.tensor(item.difficult or [False] * len(item.labels), dtype=torch.bool)[keep]
        masks = None
        if decode is not None:
            masks = torch.zeros(len(item.labels), h, w, dtype=torch.bool)
            for j, segmentation in enumerate(item.segmentations):
                if segmentation:
                    masks[j] = torch.from_numpy(decode(segmentation, h, w))
            masks = masks[keep]
        if size is None:
            size = (h, w)
        sample = [tv_tensors.Image(image), tv_tensors.BoundingBoxes(boxes[keep], format="XYXY", canvas_size=(h, w))]
        if masks is not None:
            sample.append(tv_tensors.Mask(masks))
        if (h, w) != tuple(size):
            if image_size is None:
                raise ValueError(f"{name}: images of several sizes ({tuple(size)}, {(h, w)}); give an image size")
            sample = v2.Resize(tuple(size), antialias=True)(*sample)
        images.append(sample[0].as_subclass(torch.Tensor))
        per_image.append(
            (sample[1].as_subclass(torch.Tensor), labels, difficult, masks if masks is None else sample[2])
        )
    counts.warn(name)
    k = max([1] + [len(labels) for _, labels, _, _ in per_image])
    n, (h, w) = len(items), size or (1, 1)
    boxes = torch.zeros(n, k, 4)
    box_labels = torch.full((n, k), -1, dtype=torch.int64)
    difficult = torch.zeros(n, k, dtype=torch.bool)
    instance = torch.zeros(n, k, h, w, dtype=torch.bool) if decode is not None else None
    for i, (b, labels, flags, masks) in enumerate(per_image):
        boxes[i, : len(b)], box_labels[i, : len(b)], difficult[i, : len(b)] = b, labels, flags
        if instance is not None:
            instance[i, : len(b)] = masks.as_subclass(torch.Tensor).bool()
    area = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1]) * (box_labels >= 0)
    largest = box_labels.gather(1, area.argmax(1, keepdim=True))[:, 0]
    extras = {"boxes": boxes, "box_labels": box_labels}
    if voc:
        extras["difficult"] = difficult
    if instance is not None:
        extras["instance_masks"] = instance
        if len(classes) <= 256:
            semantic = torch.zeros(n, h, w, dtype=torch.uint8)
            for j in range(k):  # where objects overlap, the later one is on top
                semantic = torch.where(
                    instance[:, j], box_labels[:, j, None, None].clamp(min=0).to(torch.uint8), semantic
                )
            extras["masks"] = semantic
    return ArrayDataset(
        images=torch.stack(images) if images else torch.zeros(0, 3, h, w, dtype=torch.uint8),
        labels=largest.clamp(min=0),
        classes=classes,
        name=name,
        extras=extras,
    )


register_folder_reader("detection", is_detection_folder, load_detection_folder)
