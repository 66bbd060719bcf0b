"""Detections on image files: a trained detector loaded from what training left (`load_detector`), run on images
of any size, and its detections drawn on them: boxes, class names, scores and masks (torchvision's drawing
utilities)."""

from __future__ import annotations

import colorsys
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["Detector", "class_colors", "draw_detections", "load_detector", "save_png"]


def class_colors(num_classes: int) -> list[tuple[int, int, int]]:
    """One bright colour per class, evenly spaced in hue (class 0, the background, is grey)."""
    colors = [(128, 128, 128)]
    for c in range(1, num_classes):
        r, g, b = colorsys.hsv_to_rgb((c - 1) / max(1, num_classes - 1), 0.85, 1.0)
        colors.append((round(255 * r), round(255 * g), round(255 * b)))
    return colors


def draw_detections(
    image: torch.Tensor,
    detections: dict[str, torch.Tensor],
    classes: Sequence[str],
    *,
    score_threshold: float = 0.5,
    min_side: int = 256,
    mask_alpha: float = 0.4,
) -> torch.Tensor:
    """The detections of ``image`` drawn on a copy of it.

    Args:
        image: uint8 image (3, H, W) (a grey one is repeated to RGB).
        detections: ``boxes`` (K, 4) in the image's pixels, ``labels`` (K,), ``scores`` (K,) and optionally
            ``masks`` (K, H, W) or (K, 1, H, W) in [0, 1].
        classes: Class names by label.
        score_threshold: Draw only detections scoring at least this.
        min_side: Small images are enlarged (nearest neighbour, by a whole factor) until their shorter side reaches
            this, so that the labels stay legible.
        mask_alpha: Opacity of the masks.

    Returns:
        uint8 image (3, H * f, W * f), f the enlargement factor.
    """
    from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

    if image.dtype != torch.uint8 or image.dim() != 3:
        raise ValueError(f"expected a uint8 image (C, H, W); got {image.dtype} of shape {tuple(image.shape)}")
    image = image.cpu().expand(3, -1, -1) if image.shape[0] == 1 else image.cpu()
    h, w = image.shape[-2:]
    factor = max(1, math.ceil(min_side / max(1, min(h, w))))
    canvas = image.repeat_interleave(factor, 1).repeat_interleave(factor, 2) if factor > 1 else image.clone()
    keep = detections["scores"].detach().cpu() >= score_threshold
    boxes = detections["boxes"].detach().cpu().float()[keep] * factor
    labels = detections["labels"].detach().cpu()[keep].tolist()
    scores = detections["scores"].detach().cpu()[keep].tolist()
    palette = class_colors(len(classes))
    colors = [palette[c % len(palette)] for c in labels]
    if "masks" in detections and keep.any():
        masks = detections["masks"].detach().cpu().float()[keep]
        masks = masks[:, 0] if masks.dim() == 4 else masks
        masks = F.interpolate(masks[:, None], size=canvas.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        canvas = draw_segmentation_masks(canvas, masks > 0.5, alpha=mask_alpha, colors=colors)
    if not labels:
        return canvas
    names = [f"{classes[c] if 0 <= c < len(classes) else c} {s:.2f}" for c, s in zip(labels, scores)]
    return draw_bounding_boxes(canvas, boxes, labels=names, colors=colors, width=max(1, factor // 2))


def save_png(image: torch.Tensor, path: str | os.PathLike[str]) -> Path:
    """Write a uint8 image (3, H, W) as a PNG file (its folder is made if need be)."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image.permute(1, 2, 0).contiguous().numpy()).save(path)
    return path


@dataclass
class Detector:
    """A trained detector that takes images as they are: a CNN detector's training checkpoint or a saved R-CNN.

    Attributes:
        source: What was loaded.
        classes: Class names by label, the background first.
        image_size: (height, width) the detector was trained at; images are resized to it and the detections
            mapped back.
        model: The network (None for an R-CNN).
        rcnn: The R-CNN (None for a network).
        mean: Per-channel mean of the network's inputs, in [0, 1] units.
        std: Per-channel standard deviation.
    """

    source: str
    classes: list[str]
    image_size: tuple[int, int]
    model: nn.Module | None = None
    rcnn: Any = None
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()

    @torch.no_grad()
    def detect(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """Detections in a uint8 image (3, H, W) of any size: boxes in its pixels, masks (if any) at its size."""
        from convzoo.data.arrays import resize_images
        from convzoo.detection.selective_search import selective_search

        h, w = image.shape[-2:]
        small = resize_images(image[None].expand(-1, 3, -1, -1), self.image_size)
        if self.rcnn is not None:
            out = self.rcnn.predict(small)[0]
        else:
            device = next(self.model.parameters()).device
            mean = torch.tensor(self.mean).view(1, -1, 1, 1)
            x = ((small.float() / 255 - mean) / torch.tensor(self.std).view(1, -1, 1, 1)).to(device)
            extra = (
                {"proposals": [selective_search(small[0])]} if "proposals" in getattr(self.model, "needs", ()) else {}
            )
            out = {k: v.cpu() for k, v in self.model(x, **extra)[0].items()}
        scale = torch.tensor([w / self.image_size[1], h / self.image_size[0]] * 2)
        out = {**out, "boxes": out["boxes"].float() * scale}
        if "masks" in out:
            masks = out["masks"].float()
            masks = masks[:, None] if masks.dim() == 3 else masks
            out["masks"] = F.interpolate(masks, size=(h, w), mode="bilinear", align_corners=False)[:, 0]
        return out


def load_detector(path: str | os.PathLike[str], *, device: str = "auto") -> Detector:
    """A detection training checkpoint (``best.pt``/``last.pt``, or the run folder holding ``best.pt``) or a folder
    written by `RCNN.save`.

    Raises:
        FileNotFoundError: Nothing there.
        ValueError: A checkpoint of a network that is not a detector.
    """
    from convzoo.detection.rcnn import RCNN, is_rcnn_folder
    from convzoo.registry import get_model_card
    from convzoo.train import load_checkpoint, load_trained

    target = Path(path)
    if is_rcnn_folder(target):
        rcnn = RCNN.load(target, device=device)
        if rcnn.image_size is None:
            raise ValueError(f"{target}: the saved R-CNN does not record its training image size")
        return Detector(str(target), rcnn.classes, tuple(rcnn.image_size), rcnn=rcnn)
    if target.is_dir():
        if not (target / "best.pt").is_file():
            raise FileNotFoundError(f"{target} holds neither a saved R-CNN (rcnn.json) nor a run's best.pt")
        target = target / "best.pt"
    name = load_checkpoint(target)["model"]["name"]
    task = get_model_card(name).task
    if task != "detection":
        raise ValueError(
            f"{target} is a {task} checkpoint ({name}); `detect` takes a detection checkpoint (a run of "
            f"fast_rcnn, faster_rcnn, mask_rcnn, ...) or a saved R-CNN folder"
        )
    model, data = load_trained(target)
    if device != "auto" or torch.cuda.is_available():
        model = model.to("cuda" if device == "auto" else device)
    size = tuple(data["image_size"][-2:])
    return Detector(
        str(target), list(data["classes"]), size, model=model.eval(), mean=tuple(data["mean"]), std=tuple(data["std"])
    )
