"""Boxes for the region-based detectors: the (dx, dy, dw, dh) coding, IoU matching and balanced sampling.

Boxes are (x0, y0, x1, y1) in input pixels with x1, y1 exclusive, so a box's width is ``x1 - x0`` (torchvision's
convention). The IoU and NMS kernels are torchvision's (`torchvision.ops.box_iou`, `batched_nms`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torchvision.ops import box_iou

__all__ = [
    "BoxCoder",
    "Matcher",
    "check_targets",
    "clip_boxes",
    "match_boxes",
    "remove_small_boxes",
    "sample_balanced",
]

BACKGROUND = -1
"""What `Matcher` assigns to a box whose best IoU lies below the background threshold."""
BETWEEN = -2
"""What `Matcher` assigns to a box whose best IoU lies between the thresholds (neither object nor background)."""

DEFAULT_CLAMP = math.log(1000.0 / 16)
"""The largest dw, dh a decoded box may use (torchvision's ``bbox_xform_clip``): exp(dw) stays below 62.5."""


@dataclass(frozen=True)
class BoxCoder:
    """Encodes a box relative to a reference box as (dx, dy, dw, dh) and decodes it again (Girshick et al. 2014,
    appendix C): the shift of the centre in units of the reference's size and the log ratio of the sizes.

    Attributes:
        weights: Multipliers of (dx, dy, dw, dh); (1, 1, 1, 1) for the RPN and (10, 10, 5, 5) for the Fast R-CNN head,
            which scale the targets to a unit-like spread as the papers' normalisation by their standard deviation.
        clamp: Upper bound of the decoded dw and dh, so that exp() never overflows on an untrained network.
    """

    weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    clamp: float = DEFAULT_CLAMP

    def encode(self, boxes: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """The (N, 4) codes of ``boxes`` (N, 4) relative to ``reference`` (N, 4)."""
        wx, wy, ww, wh = self.weights
        rw, rh = reference[:, 2] - reference[:, 0], reference[:, 3] - reference[:, 1]
        rx, ry = reference[:, 0] + 0.5 * rw, reference[:, 1] + 0.5 * rh
        bw, bh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        bx, by = boxes[:, 0] + 0.5 * bw, boxes[:, 1] + 0.5 * bh
        return torch.stack(
            [wx * (bx - rx) / rw, wy * (by - ry) / rh, ww * torch.log(bw / rw), wh * torch.log(bh / rh)], dim=1
        )

    def decode(self, codes: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """Boxes from ``codes`` (N, 4k: k boxes per reference, e.g. one per class) and ``reference`` (N, 4).

        Returns:
            (N, k, 4) boxes.
        """
        reference = reference.to(codes.dtype)
        wx, wy, ww, wh = self.weights
        codes = codes.reshape(codes.shape[0], codes.shape[-1] // 4, 4)
        rw, rh = reference[:, 2:3] - reference[:, 0:1], reference[:, 3:4] - reference[:, 1:2]
        rx, ry = reference[:, 0:1] + 0.5 * rw, reference[:, 1:2] + 0.5 * rh
        cx = codes[..., 0] / wx * rw + rx
        cy = codes[..., 1] / wy * rh + ry
        half_w = 0.5 * torch.exp((codes[..., 2] / ww).clamp(max=self.clamp)) * rw
        half_h = 0.5 * torch.exp((codes[..., 3] / wh).clamp(max=self.clamp)) * rh
        return torch.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], dim=-1)


@dataclass(frozen=True)
class Matcher:
    """Assigns each candidate box (anchor or proposal) the ground-truth box it overlaps most.

    A candidate whose best IoU is at least ``high`` matches that box; below ``low`` it is background
    (`BACKGROUND`); in between it is ignored (`BETWEEN`). With ``keep_best`` every ground-truth box also keeps the
    candidates that overlap it most, even below ``high`` (Ren et al. 2015: "the anchor with the highest IoU"), so
    no object is left without a positive anchor.
    """

    high: float
    low: float
    keep_best: bool = False

    def __call__(self, iou: torch.Tensor) -> torch.Tensor:
        """Matches of an (M ground truth, N candidates) IoU matrix: (N,) indices into the M boxes, or a negative code.

        With M = 0 (an image without objects) every candidate is background.
        """
        if iou.shape[0] == 0:
            return torch.full((iou.shape[1],), BACKGROUND, dtype=torch.long, device=iou.device)
        best, matches = iou.max(dim=0)
        out = matches.clone()
        out[best < self.high] = BETWEEN
        out[best < self.low] = BACKGROUND
        if self.keep_best:
            best_per_gt = iou.max(dim=1, keepdim=True).values
            _, candidate = torch.nonzero((iou == best_per_gt) & (best_per_gt > 0), as_tuple=True)
            out[candidate] = matches[candidate]
        return out


def sample_balanced(
    labels: torch.Tensor, size: int, positive_fraction: float, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample up to ``size`` candidates, at most ``positive_fraction`` of them positive, the rest negatives.

    Args:
        labels: (N,) 1 for a positive, 0 for a negative, -1 for a candidate to leave out.
        size: Candidates to draw.
        positive_fraction: The largest share of positives; fewer positives leave room for more negatives.
        generator: Source of the random choice.

    Returns:
        Indices of the sampled positives and negatives.
    """
    positive = torch.nonzero(labels == 1).flatten()
    negative = torch.nonzero(labels == 0).flatten()
    n_pos = min(positive.numel(), int(size * positive_fraction))
    n_neg = min(negative.numel(), size - n_pos)
    device = labels.device
    pos = positive[torch.randperm(positive.numel(), generator=generator).to(device)[:n_pos]]
    neg = negative[torch.randperm(negative.numel(), generator=generator).to(device)[:n_neg]]
    return pos, neg


def match_boxes(matcher: Matcher, gt_boxes: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """`Matcher` codes of ``candidates`` (N, 4) against ``gt_boxes`` (M, 4), M possibly 0."""
    iou = box_iou(gt_boxes, candidates) if gt_boxes.numel() else candidates.new_zeros((0, candidates.shape[0]))
    return matcher(iou)


def clip_boxes(boxes: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """``boxes`` (..., 4) clipped to an image of ``size`` (H, W)."""
    h, w = size
    return torch.stack(
        [boxes[..., 0].clamp(0, w), boxes[..., 1].clamp(0, h), boxes[..., 2].clamp(0, w), boxes[..., 3].clamp(0, h)],
        dim=-1,
    )


def remove_small_boxes(boxes: torch.Tensor, min_size: float) -> torch.Tensor:
    """Indices of the (N, 4) ``boxes`` whose width and height are both at least ``min_size``."""
    keep = (boxes[:, 2] - boxes[:, 0] >= min_size) & (boxes[:, 3] - boxes[:, 1] >= min_size)
    return torch.nonzero(keep).flatten()


def check_targets(
    targets: Sequence[dict[str, torch.Tensor]],
    *,
    num_classes: int,
    image_size: Sequence[int],
    masks: bool = False,
    name: str = "detector",
) -> list[dict[str, torch.Tensor]]:
    """Validate training targets and clip their boxes to the image.

    A box reaching past the image is clipped to it; a box with no area inside the image (degenerate or outside it),
    a non-finite coordinate or a class outside 1..num_classes-1 raises, since any of them would otherwise train on
    nonsense or turn the loss into NaN. An image may have no boxes at all.

    Returns:
        The targets with clipped, floating-point boxes and int64 labels.

    Raises:
        ValueError: Naming the image and the offending box or label.
    """
    out = []
    for i, t in enumerate(targets):
        if "boxes" not in t or "labels" not in t:
            raise ValueError(f"{name}: target {i} must hold 'boxes' and 'labels'; got {sorted(t)}")
        boxes, labels = t["boxes"], t["labels"]
        if boxes.dim() != 2 or boxes.shape[-1] != 4 or labels.shape != boxes.shape[:1]:
            raise ValueError(
                f"{name}: target {i} needs boxes (M, 4) and labels (M,); got {tuple(boxes.shape)} and "
                f"{tuple(labels.shape)}"
            )
        boxes = boxes.float()
        if not torch.isfinite(boxes).all():
            raise ValueError(f"{name}: target {i} has non-finite box coordinates")
        clipped = clip_boxes(boxes, image_size)
        bad = (clipped[:, 2] <= clipped[:, 0]) | (clipped[:, 3] <= clipped[:, 1])
        if bad.any():
            j = int(bad.nonzero()[0])
            raise ValueError(
                f"{name}: target {i} box {j} {boxes[j].tolist()} has no area inside the {tuple(image_size)} image "
                "(x1 must exceed x0 and y1 exceed y0); drop such boxes (padding rows carry the label -1)"
            )
        if labels.numel() and (labels.min() < 1 or labels.max() >= num_classes):
            raise ValueError(
                f"{name}: target {i} has class ids {sorted(set(labels.tolist()))}; objects must be classes "
                f"1..{num_classes - 1} (0 is the background, num_classes={num_classes})"
            )
        checked = {**t, "boxes": clipped, "labels": labels.long()}
        if masks:
            if "masks" not in t:
                raise ValueError(f"{name}: target {i} needs 'masks' (M, H, W) for the mask head")
            m = t["masks"]
            if m.shape != (boxes.shape[0], *image_size):
                raise ValueError(
                    f"{name}: target {i} masks are {tuple(m.shape)}; expected {(boxes.shape[0], *image_size)}"
                )
        out.append(checked)
    return out
