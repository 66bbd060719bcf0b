"""Selective search: class-agnostic region proposals by hierarchical grouping (Uijlings et al., IJCV 2013).

An image is over-segmented with Felzenszwalb and Huttenlocher's graph-based method (scikit-image's
``felzenszwalb``); then the two most similar neighbouring regions are merged, again and again, until one region
covers the image. Similarity adds up to four measures in [0, 1]: colour (intersection of 25-bin histograms per
channel), texture (intersection of histograms of Gaussian derivatives in 8 orientations, 10 bins per orientation and
channel), size (small regions merge first) and fill (regions whose box they would fill merge first). The box of every
region of the hierarchy is a proposal. Several strategies (colour spaces times similarity combinations) diversify
the proposals, and the boxes are ranked as the paper ranks them: a region's position in its hierarchy (1 for the
last, whole-image region) times a random number, so large regions come first but every strategy contributes early.

`add_proposals` runs it over a whole `ArrayDataset` and stores ``extras["proposals"]`` for R-CNN and Fast R-CNN.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from convzoo.data.arrays import ArrayDataset

__all__ = ["COLOR_SPACES", "SIMILARITIES", "add_proposals", "selective_search"]

COLOR_SPACES = ("rgb", "hsv", "lab")
"""Colour spaces the over-segmentation and the colour histograms may work in."""
SIMILARITIES = "CTSF"
"""The similarity measures a strategy combines: Colour, Texture, Size, Fill (e.g. ``"CTSF"``, ``"TSF"``, ``"F"``)."""
_COLOR_BINS = 25
_TEXTURE_BINS = 10
_ORIENTATIONS = 8


def selective_search(
    image: Any,
    *,
    scale: float | Sequence[float] = 100.0,
    sigma: float = 0.8,
    min_size: int = 10,
    strategies: Sequence[str] = ("CTSF", "TSF"),
    color_spaces: Sequence[str] = ("rgb", "hsv"),
    max_proposals: int | None = None,
    seed: int = 0,
) -> torch.Tensor:
    """Region proposals of one image.

    Args:
        image: An RGB (or grey) image: a uint8 or [0, 1] float tensor (C, H, W), or an array (H, W, C).
        scale: Felzenszwalb's k (on a 0..255 scale; larger gives larger initial regions); several values run one
            grouping each (the paper's "fast" mode uses 50 and 100).
        sigma: Gaussian smoothing before the over-segmentation.
        min_size: Smallest initial region in pixels.
        strategies: Similarity combinations, each a string of the letters of `SIMILARITIES`.
        color_spaces: Colour spaces (of `COLOR_SPACES`); every scale, colour space and strategy is one grouping.
        max_proposals: Keep at most this many of the best-ranked boxes (None: all).
        seed: Seed of the random part of the ranking.

    Returns:
        Boxes (P, 4) float32, x0 y0 x1 y1 in pixel edges (x1, y1 exclusive), best-ranked first, without duplicates.
    """
    from skimage.segmentation import felzenszwalb

    rgb = _as_rgb_float(image)
    scales = [float(scale)] if isinstance(scale, int | float) else [float(s) for s in scale]
    for s in strategies:
        if not s or set(s) - set(SIMILARITIES):
            raise ValueError(f"a strategy is a combination of the letters {SIMILARITIES!r}; got {s!r}")
    for space in color_spaces:
        if space not in COLOR_SPACES:
            raise ValueError(f"color spaces are {COLOR_SPACES}; got {space!r}")
    rng = np.random.default_rng(seed)
    ranked: list[tuple[float, tuple[int, int, int, int]]] = []
    for space in color_spaces:
        converted = _convert(rgb, space)
        texture = _texture_bins(converted)
        for k in scales:
            labels = np.unique(felzenszwalb(converted, scale=k, sigma=sigma, min_size=min_size), return_inverse=True)[1]
            labels = labels.reshape(converted.shape[:2])
            regions = _initial_regions(labels, converted, texture)
            for strategy in strategies:
                boxes = _group(regions, strategy, labels.size)
                positions = np.arange(len(boxes), 0, -1)  # the last merge (whole image) is position 1
                ranked += zip((rng.random(len(boxes)) * positions).tolist(), boxes)
    ranked.sort(key=lambda item: item[0])
    unique = list(dict.fromkeys(box for _, box in ranked))
    if max_proposals is not None:
        unique = unique[:max_proposals]
    return torch.tensor(unique, dtype=torch.float32).reshape(-1, 4)


def _as_rgb_float(image: Any) -> np.ndarray:
    """(H, W, 3) float64 in [0, 1] from a (C, H, W) tensor or an (H, W, C) / (H, W) array."""
    if isinstance(image, torch.Tensor):
        x = image.detach().cpu()
        if x.dim() != 3:
            raise ValueError(f"selective search takes one image (C, H, W); got shape {tuple(x.shape)}")
        x = (x.float() / 255 if x.dtype == torch.uint8 else x.double()).permute(1, 2, 0).numpy()
    else:
        x = np.asarray(image)
        x = x / 255.0 if x.dtype == np.uint8 else x.astype(np.float64)
        if x.ndim == 2:
            x = x[..., None]
    if x.ndim != 3 or x.shape[-1] not in (1, 3):
        raise ValueError(f"selective search takes an RGB or grey image; got shape {x.shape}")
    return np.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else np.asarray(x, dtype=np.float64)


def _convert(rgb: np.ndarray, space: str) -> np.ndarray:
    """The image in ``space``, every channel scaled to [0, 1]."""
    from skimage import color

    if space == "hsv":
        return color.rgb2hsv(rgb)
    if space == "lab":
        lab = color.rgb2lab(rgb)
        return np.stack([lab[..., 0] / 100, (lab[..., 1] + 128) / 255, (lab[..., 2] + 128) / 255], -1).clip(0, 1)
    return rgb


def _texture_bins(image: np.ndarray) -> np.ndarray:
    """Per pixel, the texture bin of each (channel, orientation): (H, W, 3 * 8) int in 0..9.

    Gaussian first derivatives (sigma 1) steered to 8 orientations, as in the paper; each orientation's positive
    response is binned over [0, its largest value in the image] of that channel.
    """
    from scipy.ndimage import gaussian_filter

    out = []
    for c in range(image.shape[-1]):
        gx = gaussian_filter(image[..., c], 1.0, order=(0, 1))
        gy = gaussian_filter(image[..., c], 1.0, order=(1, 0))
        for theta in np.arange(_ORIENTATIONS) * 2 * np.pi / _ORIENTATIONS:
            response = np.maximum(np.cos(theta) * gx + np.sin(theta) * gy, 0)
            top = response.max()
            scaled = response / top if top > 0 else response
            out.append(np.minimum((scaled * _TEXTURE_BINS).astype(np.int64), _TEXTURE_BINS - 1))
    return np.stack(out, -1)


def _histograms(labels: np.ndarray, bins: np.ndarray, num_bins: int, num_regions: int) -> np.ndarray:
    """L1-normalised histograms (R, F * num_bins) of per-pixel bin indices ``bins`` (H, W, F), one per region."""
    features = bins.shape[-1]
    index = (labels[..., None] * features + np.arange(features)) * num_bins + bins
    counts = np.bincount(index.ravel(), minlength=num_regions * features * num_bins)
    hist = counts.reshape(num_regions, features * num_bins).astype(np.float64)
    return hist / hist.sum(1, keepdims=True)


def _initial_regions(labels: np.ndarray, image: np.ndarray, texture: np.ndarray) -> dict[str, Any]:
    """Size, box, histograms and neighbours of the over-segmentation's regions."""
    num = int(labels.max()) + 1
    ys, xs = np.indices(labels.shape)
    flat = labels.ravel()
    size = np.bincount(flat, minlength=num).astype(np.float64)
    box = np.stack(
        [
            np.full(num, labels.shape[1]),
            np.full(num, labels.shape[0]),
            np.zeros(num, dtype=np.int64),
            np.zeros(num, dtype=np.int64),
        ],
        1,
    )
    np.minimum.at(box[:, 0], flat, xs.ravel())
    np.minimum.at(box[:, 1], flat, ys.ravel())
    np.maximum.at(box[:, 2], flat, xs.ravel() + 1)
    np.maximum.at(box[:, 3], flat, ys.ravel() + 1)
    color_bins = np.minimum((image * _COLOR_BINS).astype(np.int64), _COLOR_BINS - 1)
    pairs = np.concatenate(
        [
            np.stack([labels[:, :-1].ravel(), labels[:, 1:].ravel()], 1),
            np.stack([labels[:-1].ravel(), labels[1:].ravel()], 1),
        ]
    )
    pairs = np.unique(np.sort(pairs[pairs[:, 0] != pairs[:, 1]], 1), axis=0)
    return {
        "size": size,
        "box": box,
        "color": _histograms(labels, color_bins, _COLOR_BINS, num),
        "texture": _histograms(labels, texture, _TEXTURE_BINS, num),
        "pairs": pairs,
    }


def _group(regions: dict[str, Any], strategy: str, image_size: int) -> list[tuple[int, int, int, int]]:
    """Hierarchical grouping: merge the most similar neighbours until one region is left.

    Returns the boxes of every region of the hierarchy in order of creation (initial regions first).
    """
    size = list(regions["size"])
    box = [tuple(b) for b in regions["box"].tolist()]
    color = list(regions["color"])
    texture = list(regions["texture"])
    neighbours: list[set[int]] = [set() for _ in size]
    for a, b in regions["pairs"].tolist():
        neighbours[a].add(b)
        neighbours[b].add(a)

    def similarity(a: int, b: int) -> float:
        s = 0.0
        if "C" in strategy:
            s += np.minimum(color[a], color[b]).sum()
        if "T" in strategy:
            s += np.minimum(texture[a], texture[b]).sum()
        if "S" in strategy:
            s += 1 - (size[a] + size[b]) / image_size
        if "F" in strategy:
            (x0, y0, x1, y1), (u0, v0, u1, v1) = box[a], box[b]
            bb = (max(x1, u1) - min(x0, u0)) * (max(y1, v1) - min(y0, v0))
            s += 1 - (bb - size[a] - size[b]) / image_size
        return float(s)

    heap = [(-similarity(a, b), a, b) for a, b in regions["pairs"].tolist()]
    heapq.heapify(heap)
    alive = [True] * len(size)
    while heap:
        _, a, b = heapq.heappop(heap)
        if not (alive[a] and alive[b]):
            continue  # a pair whose region has since been merged
        alive[a] = alive[b] = False
        total = size[a] + size[b]
        size.append(total)
        box.append(tuple(map(min, box[a][:2], box[b][:2])) + tuple(map(max, box[a][2:], box[b][2:])))
        color.append((size[a] * color[a] + size[b] * color[b]) / total)
        texture.append((size[a] * texture[a] + size[b] * texture[b]) / total)
        new = len(size) - 1
        neighbours.append((neighbours[a] | neighbours[b]) - {a, b})
        alive.append(True)
        for n in neighbours[new]:
            neighbours[n] -= {a, b}
            neighbours[n].add(new)
            heapq.heappush(heap, (-similarity(new, n), n, new))
    return box


def add_proposals(
    dataset: ArrayDataset, *, max_proposals: int = 2000, progress: bool = True, **options: Any
) -> ArrayDataset:
    """``dataset`` with ``extras["proposals"]``: selective-search boxes of every image, (N, P, 4) float.

    Each image's boxes come best-ranked first; images with fewer than P boxes are padded with rows of zeros (P is
    the largest count, at most ``max_proposals``). The images, labels and other extras are shared, not copied.

    Args:
        dataset: The images.
        max_proposals: Most boxes kept per image.
        progress: Show a progress bar.
        **options: Passed to `selective_search` (scale, sigma, min_size, strategies, color_spaces, seed).
    """
    from tqdm import tqdm

    found = [
        selective_search(image, max_proposals=max_proposals, **options)
        for image in tqdm(dataset.images, desc="selective search", unit="image", disable=not progress, leave=False)
    ]
    width = max((len(b) for b in found), default=0)
    proposals = torch.zeros(len(dataset), width, 4)
    for i, boxes in enumerate(found):
        proposals[i, : len(boxes)] = boxes
    return ArrayDataset(
        images=dataset.images,
        labels=dataset.labels,
        classes=list(dataset.classes),
        name=dataset.name,
        extras={**dataset.extras, "proposals": proposals},
    )
