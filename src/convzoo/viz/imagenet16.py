"""The 16 entry-level categories of Geirhos et al.'s human experiments, and ImageNet's 1000 classes mapped onto them.

Geirhos et al. ("Generalisation in humans and deep neural networks", NeurIPS 2018; "ImageNet-trained CNNs are
biased towards texture", ICLR 2019) let people and networks choose among 16 categories. A network's probability of
a category is the mean of the probabilities of the ImageNet classes in it (the aggregation of their
model-vs-human toolbox); its decision is the most probable category. The class lists are the papers' (WordNet
hyponyms of each category among ILSVRC-2012's classes, ambiguous ones removed), indices in the usual sorted-WNID
order of torchvision's ImageNet weights.

Their cue-conflict stimuli are named ``<shape><n>-<texture><m>.png`` (``airplane1-bicycle2.png``) in one folder per
shape category.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

__all__ = [
    "CATEGORIES",
    "IMAGENET_INDICES",
    "category_probabilities",
    "find_stimuli",
    "parse_stimulus_name",
]

CATEGORIES = (
    "airplane", "bear", "bicycle", "bird", "boat", "bottle", "car", "cat",
    "chair", "clock", "dog", "elephant", "keyboard", "knife", "oven", "truck",
)  # fmt: skip

# ImageNet class indices of each category (Geirhos et al. 2018, 2019).
IMAGENET_INDICES: dict[str, tuple[int, ...]] = {
    "airplane": (404,),
    "bear": (294, 295, 296, 297),
    "bicycle": (444, 671),
    "bird": (8, 10, 11, 12, 13, 14, 15, 16, 18, 19, 20, 22, 23, 24, 80, 81, 82, 83, 87, 88, 89, 90, 91, 92, 93, 94,
             95, 96, 98, 99, 100, 127, 128, 129, 130, 131, 132, 133, 135, 136, 137, 138, 139, 140, 141, 142, 143,
             144, 145),
    "boat": (472, 554, 625, 814, 914),
    "bottle": (440, 720, 737, 898, 899, 901, 907),
    "car": (436, 511, 817),
    "cat": (281, 282, 283, 284, 285, 286),
    "chair": (423, 559, 765, 857),
    "clock": (409, 530, 892),
    "dog": (152, 153, 154, 155, 156, 157, 158, 159, 160, 161, 162, 163, 164, 165, 166, 167, 168, 169, 170, 171, 172,
            173, 174, 175, 176, 177, 178, 179, 180, 181, 182, 183, 184, 185, 186, 187, 188, 189, 190, 191, 193, 194,
            195, 196, 197, 198, 199, 200, 201, 202, 203, 205, 206, 207, 208, 209, 210, 211, 212, 213, 214, 215, 216,
            217, 218, 219, 220, 221, 222, 223, 224, 225, 226, 228, 229, 230, 231, 232, 233, 234, 235, 236, 237, 238,
            239, 240, 241, 243, 244, 245, 246, 247, 248, 249, 250, 252, 253, 254, 255, 256, 257, 259, 261, 262, 263,
            265, 266, 267, 268),
    "elephant": (385, 386),
    "keyboard": (508, 878),
    "knife": (499,),
    "oven": (766,),
    "truck": (555, 569, 656, 675, 717, 734, 864, 867),
}  # fmt: skip

_STIMULUS_NAME = re.compile(r"^(?P<shape>[a-z]+)\d+-(?P<texture>[a-z]+)\d+$")
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def category_probabilities(probabilities: torch.Tensor) -> torch.Tensor:
    """(N, 16) probabilities of `CATEGORIES`: the mean over each category's ImageNet classes.

    Args:
        probabilities: (N, 1000) softmax outputs over ImageNet's classes.

    Raises:
        ValueError: Not 1000 classes.
    """
    if probabilities.dim() != 2 or probabilities.shape[1] != 1000:
        raise ValueError(
            f"expected probabilities over ImageNet's 1000 classes (N, 1000); got {tuple(probabilities.shape)}"
        )
    return torch.stack([probabilities[:, list(IMAGENET_INDICES[c])].mean(1) for c in CATEGORIES], 1)


def parse_stimulus_name(name: str | os.PathLike[str]) -> tuple[str, str]:
    """(shape, texture) categories from a stimulus file name such as ``airplane1-bicycle2.png``.

    Raises:
        ValueError: A name that does not carry two categories of `CATEGORIES`.
    """
    stem = Path(name).stem.lower()
    match = _STIMULUS_NAME.match(stem)
    if match is None:
        raise ValueError(
            f"{Path(name).name}: a cue-conflict stimulus is named <shape><n>-<texture><m> (e.g. airplane1-bicycle2.png)"
        )
    shape, texture = match["shape"], match["texture"]
    for cue, category in (("shape", shape), ("texture", texture)):
        if category not in CATEGORIES:
            raise ValueError(f"{Path(name).name}: {cue} {category!r} is not one of the 16 categories {CATEGORIES}")
    return shape, texture


def find_stimuli(folder: str | os.PathLike[str]) -> list[tuple[Path, str, str]]:
    """The images under ``folder`` (searched recursively) with their (shape, texture) categories, sorted by path.

    Raises:
        FileNotFoundError: No such folder.
        ValueError: No images, or an image whose name carries no categories (the message names it).
    """
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"no such stimulus folder: {root}")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in _IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"{root} holds no images ({', '.join(_IMAGE_SUFFIXES)})")
    stimuli = []
    for path in files:
        try:
            shape, texture = parse_stimulus_name(path)
        except ValueError as e:
            raise ValueError(f"{root}: the file names must carry shape and texture: {e}") from None
        stimuli.append((path, shape, texture))
    return stimuli
