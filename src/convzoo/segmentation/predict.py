"""Segmenting images with a trained network, and drawing the result: coloured masks over images, with a legend.

``segmenter = load_segmenter("runs/unet/best.pt")`` rebuilds a segmentation run's network with its classes, input
size and normalisation; ``segmenter.predict(image)`` gives the class of every pixel of an image of any size (the
image is resized to the network's input size and the prediction resized back). `overlay` and `draw_segmentation`
draw it in the fixed palette `PALETTE` (Pascal VOC's colour map, so VOC classes get their usual colours).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from convzoo.data.transforms import IGNORE_INDEX

__all__ = [
    "PALETTE",
    "Segmenter",
    "class_shares",
    "colorize",
    "describe_shares",
    "draw_segmentation",
    "load_segmenter",
    "overlay",
    "segment_image",
]


def _voc_colormap(n: int = 256) -> np.ndarray:
    # Pascal VOC's colour map: the bits of the class index spread over the high bits of R, G and B.
    cmap = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        cmap[i] = (r, g, b)
    return cmap


PALETTE = _voc_colormap()
"""(256, 3) uint8 colours of class indices: Pascal VOC's, black background, (224, 224, 192) for 255 (ignore)."""


@dataclass
class Segmenter:
    """A segmentation network in evaluation mode with what feeding it and naming its classes needs.

    Attributes:
        model: The network (eval mode).
        classes: Class names in output order, the background first.
        image_size: Side of the square images it was trained on.
        mean: Per-channel mean of its training images, in [0, 1] units.
        std: Per-channel standard deviation of its training images.
        source: What was loaded (a checkpoint's path).
    """

    model: nn.Module
    classes: list[str]
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str = ""

    @property
    def in_chans(self) -> int:
        return len(self.mean)

    @torch.no_grad()
    def predict(self, image: torch.Tensor) -> np.ndarray:
        """The class of every pixel of ``image`` as uint8 (H, W), at the image's own size.

        The image, uint8 (C, H, W) or (1, C, H, W), is resized to the network's input size and normalised; the
        logits are resized back (bilinear) before the most likely class is taken. A network of valid convolutions
        labels only the centre of its input: the border it does not label is `IGNORE_INDEX`.
        """
        from convzoo.data.arrays import convert_channels, resize_images

        x = image[None] if image.dim() == 3 else image
        if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[0] != 1:
            raise ValueError(f"predict takes one uint8 image (C, H, W); got {x.dtype} of shape {tuple(image.shape)}")
        height, width = x.shape[-2:]
        s = self.image_size
        x = resize_images(convert_channels(x, self.in_chans), s)
        mean = torch.tensor(self.mean).view(1, -1, 1, 1)
        std = torch.tensor(self.std).view(1, -1, 1, 1)
        device = next(self.model.parameters()).device
        logits = self.model(((x.float() / 255 - mean) / std).to(device)).float()
        h, w = logits.shape[-2:]
        if (h, w) == (s, s):
            logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
            return logits.argmax(1)[0].to(torch.uint8).cpu().numpy()
        labels = torch.full((1, 1, s, s), IGNORE_INDEX, dtype=torch.uint8, device=logits.device)
        top, left = (s - h) // 2, (s - w) // 2
        labels[..., top : top + h, left : left + w] = logits.argmax(1, keepdim=True).to(torch.uint8)
        labels = F.interpolate(labels.float(), size=(height, width), mode="nearest-exact").to(torch.uint8)
        return labels[0, 0].cpu().numpy()


def load_segmenter(path: str | os.PathLike[str], *, device: str | torch.device = "cpu") -> Segmenter:
    """The network of a segmentation training checkpoint (``best.pt``/``last.pt``), ready to `Segmenter.predict`.

    Raises:
        FileNotFoundError: No such checkpoint.
        ValueError: A checkpoint of a network that is not a segmentation network (or not a checkpoint).
    """
    from convzoo.registry import get_model_card
    from convzoo.train.checkpoint import load_trained

    model, data = load_trained(path)
    name = getattr(model, "model_name", None)
    kind = get_model_card(name).task if name is not None else "unknown"
    if kind != "segmentation":
        raise ValueError(
            f"{path} is a checkpoint of {name or 'a network'} ({kind}), not of a segmentation network; train one "
            f"with e.g. `convzoo train unet --data scenes --image-size 64`"
        )
    _, height, _ = data["image_size"]
    return Segmenter(
        model.to(device).eval(),
        [str(c) for c in data["classes"]],
        int(height),
        tuple(float(m) for m in data["mean"]),
        tuple(float(s) for s in data["std"]),
        os.fspath(path),
    )


def segment_image(segmenter: Segmenter | str | os.PathLike[str], image: Any) -> np.ndarray:
    """The class map uint8 (H, W) of one image: a file path or a uint8 tensor (C, H, W); ``segmenter`` may be the
    path of a checkpoint."""
    from convzoo.viz._load import read_image

    if not isinstance(segmenter, Segmenter):
        segmenter = load_segmenter(segmenter)
    if not isinstance(image, torch.Tensor):
        image = read_image(image)[0]
    return segmenter.predict(image)


def class_shares(mask: np.ndarray, num_classes: int) -> list[tuple[int, float]]:
    """(class, share of the labelled pixels) of the classes present in ``mask``, largest share first."""
    counts = np.bincount(mask[mask != IGNORE_INDEX].ravel().astype(np.int64), minlength=num_classes)
    total = max(1, int(counts.sum()))
    present = [(c, int(n) / total) for c, n in enumerate(counts) if n]
    return sorted(present, key=lambda item: -item[1])


def _percent(share: float) -> str:
    return "<0.1%" if 0 < share < 0.0005 else f"{share:.1%}"


def describe_shares(mask: np.ndarray, classes: list[str]) -> str:
    """The classes in ``mask`` with their share of the labelled pixels, e.g. ``"background 90.1%, car 9.9%"``."""
    return ", ".join(f"{classes[c]} {_percent(share)}" for c, share in class_shares(mask, len(classes)))


def colorize(mask: np.ndarray) -> np.ndarray:
    """A class map (H, W) as colours (H, W, 3) uint8 of `PALETTE`."""
    return PALETTE[np.asarray(mask, dtype=np.uint8)]


def _rgb(image: np.ndarray) -> np.ndarray:
    """(H, W), (H, W, 1), (H, W, 3) or (H, W, 4) uint8 as (H, W, 3)."""
    image = np.asarray(image, dtype=np.uint8)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    return np.repeat(image[..., None], 3, -1) if image.ndim == 2 else image[..., :3]


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """The coloured ``mask`` blended over ``image`` (H, W, 3), (H, W, 1) or (H, W) uint8 with weight ``alpha``; the
    background (class 0) and ignored pixels are left as they are."""
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1]; got {alpha}")
    rgb = _rgb(image)
    if rgb.shape[:2] != mask.shape:
        raise ValueError(f"a mask of {mask.shape} for an image of {rgb.shape[:2]}; they must be the same size")
    drawn = ((mask != 0) & (mask != IGNORE_INDEX))[..., None]
    blended = (1 - alpha) * rgb.astype(np.float32) + alpha * colorize(mask).astype(np.float32)
    return np.where(drawn, blended.round(), rgb).astype(np.uint8)


def draw_segmentation(
    image: np.ndarray, mask: np.ndarray, classes: list[str], path: str | os.PathLike[str], *, alpha: float = 0.5
) -> None:
    """Write a PNG: the image, the same with the coloured mask over it, and a legend of the classes present with
    their share of the pixels. Small images are enlarged (nearest neighbour) to about 256 pixels so that the legend
    fits."""
    from PIL import Image, ImageDraw, ImageFont

    rgb = _rgb(image)
    zoom = max(1, round(256 / max(rgb.shape[:2])))
    panels = [rgb, overlay(rgb, mask, alpha)]
    panels = [p.repeat(zoom, 0).repeat(zoom, 1) for p in panels]
    h, w = panels[0].shape[:2]
    font = ImageFont.load_default()
    shares = class_shares(mask, len(classes))
    row = 16
    legend_w = 12 + max((int(font.getlength(f"{classes[c]} {_percent(s)}")) for c, s in shares), default=60) + 28
    canvas = Image.new("RGB", (2 * w + 8 + legend_w, max(h, row * len(shares) + 16)), "white")
    canvas.paste(Image.fromarray(panels[0]), (0, 0))
    canvas.paste(Image.fromarray(panels[1]), (w + 4, 0))
    draw = ImageDraw.Draw(canvas)
    x = 2 * w + 16
    for i, (c, share) in enumerate(shares):
        y = 8 + i * row
        draw.rectangle((x, y, x + 12, y + 12), fill=tuple(int(v) for v in PALETTE[c]), outline="black")
        draw.text((x + 18, y), f"{classes[c]} {_percent(share)}", fill="black", font=font)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
