"""Region-of-interest heads: RoI pooling, the Fast R-CNN box head and the Mask R-CNN mask head.

Fast R-CNN (Girshick 2015) pools every region of interest from one shared feature map to a fixed grid (RoI max
pooling), runs two fully connected layers and predicts class scores and class-specific box deltas, trained jointly
with the multi-task loss on mini-batches of sampled RoIs (25% objects with IoU >= 0.5, background in [0.1, 0.5)).
Mask R-CNN (He et al. 2017) replaces the quantising RoIPool by RoIAlign (bilinear sampling, no rounding) and adds a
small fully convolutional head predicting a binary mask per class, trained only on the ground-truth class's mask.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.ops import batched_nms, box_iou, roi_align, roi_pool

from convzoo.detection.boxes import BoxCoder, clip_boxes, remove_small_boxes

__all__ = [
    "MaskHead",
    "MaskHeadConfig",
    "RoIHeadConfig",
    "RoIHeads",
    "RoIPooler",
    "TwoMLPHead",
    "FastRCNNPredictor",
    "paste_masks",
]

POOLINGS = ("pool", "align")


class RoIPooler(nn.Module):
    """Pools each region of interest from the feature maps to a fixed ``output_size`` grid.

    ``"pool"`` is Fast R-CNN's RoI max pooling (`torchvision.ops.roi_pool`: the box is rounded to feature cells and
    each bin takes the maximum of the cells it covers); ``"align"`` is Mask R-CNN's RoIAlign
    (`torchvision.ops.roi_align` with ``aligned=True``: each bin averages ``sampling_ratio``**2 bilinear samples at
    exact positions, pixel centres at +0.5). With several maps (a feature pyramid) a box of side
    sqrt(w h) is pooled from the level of stride ``canonical_stride * 2**floor(log2(sqrt(w h) / canonical_size))``,
    clamped to the levels there are (Lin et al. 2017, eq. 1, with 224 and level 4 scaled to small images).

    Args:
        strides: The stride of each feature map the pooler reads.
        output_size: Side of the pooled grid.
        kind: ``"pool"`` or ``"align"``.
        sampling_ratio: Bilinear samples per bin side of RoIAlign (0: adaptive, as torchvision).
        canonical_size: Box side that maps to ``canonical_stride``.
        canonical_stride: Stride of the level a box of ``canonical_size`` is pooled from.
    """

    def __init__(
        self,
        strides: Sequence[int],
        output_size: int,
        *,
        kind: str = "align",
        sampling_ratio: int = 2,
        canonical_size: float = 16.0,
        canonical_stride: int = 4,
    ) -> None:
        super().__init__()
        if kind not in POOLINGS:
            raise ValueError(f"RoI pooling must be one of {POOLINGS}; got {kind!r}")
        self.strides = list(strides)
        self.output_size = output_size
        self.kind = kind
        self.sampling_ratio = sampling_ratio
        self.canonical_size = canonical_size
        self.canonical_stride = canonical_stride

    def extra_repr(self) -> str:
        return f"strides={self.strides}, output_size={self.output_size}, kind={self.kind!r}"

    def level_of(self, boxes: torch.Tensor) -> torch.Tensor:
        """Index into ``strides`` of the level each (K, 4) box is pooled from."""
        side = torch.sqrt((boxes[:, 2] - boxes[:, 0]).clamp(min=1e-6) * (boxes[:, 3] - boxes[:, 1]).clamp(min=1e-6))
        target = math.log2(self.canonical_stride) + torch.floor(torch.log2(side / self.canonical_size))
        logs = torch.tensor([math.log2(s) for s in self.strides], device=boxes.device)
        return (target[:, None] - logs[None, :]).abs().argmin(dim=1)

    def _pool(self, x: torch.Tensor, rois: torch.Tensor, stride: int) -> torch.Tensor:
        size = (self.output_size, self.output_size)
        if self.kind == "pool":
            return roi_pool(x, rois, size, spatial_scale=1.0 / stride)
        return roi_align(x, rois, size, spatial_scale=1.0 / stride, sampling_ratio=self.sampling_ratio, aligned=True)

    def forward(self, features: Sequence[torch.Tensor], boxes: Sequence[torch.Tensor]) -> torch.Tensor:
        """(sum of K_i, C, S, S) pooled regions of the per-image ``boxes`` (K_i, 4) in input pixels."""
        rois = torch.cat([torch.cat([b.new_full((b.shape[0], 1), i), b], 1) for i, b in enumerate(boxes)])
        rois = rois.to(features[0].dtype)
        if len(self.strides) == 1:
            return self._pool(features[0], rois, self.strides[0])
        levels = self.level_of(rois[:, 1:])
        c = features[0].shape[1]
        out = rois.new_zeros((rois.shape[0], c, self.output_size, self.output_size))
        for i, (x, stride) in enumerate(zip(features, self.strides)):
            idx = torch.nonzero(levels == i).flatten()
            if idx.numel():
                out[idx] = self._pool(x, rois[idx], stride).to(out.dtype)
        return out


class TwoMLPHead(nn.Module):
    """Fast R-CNN's two fully connected layers (fc6, fc7) with ReLU on the flattened pooled region."""

    def __init__(self, in_features: int, representation_size: int) -> None:
        super().__init__()
        self.fc6 = nn.Linear(in_features, representation_size)
        self.fc7 = nn.Linear(representation_size, representation_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.fc6(x.flatten(1)))
        return F.relu(self.fc7(x))


class FastRCNNPredictor(nn.Module):
    """The sibling outputs: class scores (K+1 with the background) and class-specific box deltas (4 per class)."""

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.cls_score = nn.Linear(in_features, num_classes)
        self.bbox_pred = nn.Linear(in_features, 4 * num_classes)
        nn.init.normal_(self.cls_score.weight, std=0.01)  # the paper's initialisation of the two new layers
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.cls_score.bias)
        nn.init.zeros_(self.bbox_pred.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cls_score(x), self.bbox_pred(x)


@dataclass(frozen=True)
class MaskHeadConfig:
    """Settings of the Mask R-CNN mask branch.

    Attributes:
        output_size: Side of the RoIAlign grid the mask head reads (the paper: 14).
        sampling_ratio: Bilinear samples per bin side.
        channels: Width of each 3x3 conv of the head (the paper: four of 256).
        upsample: Double the resolution with a 2x2 transposed conv before the mask logits (14 -> 28).
    """

    output_size: int = 14
    sampling_ratio: int = 2
    channels: tuple[int, ...] = (64, 64)
    upsample: bool = True

    @property
    def mask_size(self) -> int:
        """Side of the predicted masks."""
        return self.output_size * (2 if self.upsample else 1)


class MaskHead(nn.Module):
    """A small FCN: 3x3 convs with ReLU, optionally a 2x transposed conv, then one mask logit map per class."""

    def __init__(self, in_channels: int, num_classes: int, cfg: MaskHeadConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for width in cfg.channels:
            layers += [nn.Conv2d(c, width, 3, padding=1), nn.ReLU(inplace=True)]
            c = width
        if cfg.upsample:
            layers += [nn.ConvTranspose2d(c, c, 2, stride=2), nn.ReLU(inplace=True)]
        self.body = nn.Sequential(*layers)
        self.scale = 2 if cfg.upsample else 1  # mask side / pooled side
        self.mask_logits = nn.Conv2d(c, num_classes, 1)
        for m in self.body.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.mask_logits.weight, std=0.01)  # start near p = 0.5 everywhere
        nn.init.zeros_(self.mask_logits.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mask_logits(self.body(x))


def paste_masks(masks: torch.Tensor, boxes: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Paste (K, M, M) box-relative mask probabilities into (K, H, W) image-sized maps, zero outside the boxes.

    Each image pixel centre is mapped into its box and the mask is sampled there bilinearly (the inverse of the
    RoIAlign that made the mask targets).
    """
    h, w = size
    k = masks.shape[0]
    if k == 0:
        return masks.new_zeros((0, h, w))
    boxes = boxes.to(masks.dtype)
    xs = torch.arange(w, device=masks.device, dtype=masks.dtype) + 0.5
    ys = torch.arange(h, device=masks.device, dtype=masks.dtype) + 0.5
    bw = (boxes[:, 2] - boxes[:, 0]).clamp(min=1e-6)
    bh = (boxes[:, 3] - boxes[:, 1]).clamp(min=1e-6)
    gx = 2 * (xs[None, :] - boxes[:, 0:1]) / bw[:, None] - 1  # (K, W)
    gy = 2 * (ys[None, :] - boxes[:, 1:2]) / bh[:, None] - 1  # (K, H)
    grid = torch.stack([gx[:, None, :].expand(k, h, w), gy[:, :, None].expand(k, h, w)], dim=-1)
    return F.grid_sample(masks[:, None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[:, 0]


@dataclass(frozen=True)
class RoIHeadConfig:
    """Settings of the Fast R-CNN head: pooling, sampling, loss and post-processing.

    Attributes:
        pooling: ``"pool"`` (Fast R-CNN's RoI max pooling) or ``"align"`` (RoIAlign).
        output_size: Side of the pooled grid (7 for VGG-16's 7x7 pool5).
        sampling_ratio: Bilinear samples per bin side of RoIAlign.
        representation_size: Width of fc6 and fc7.
        fg_iou: IoU from which a RoI is an object (0.5).
        bg_iou: [low, high) IoU range of background RoIs; Fast R-CNN uses [0.1, 0.5) as a hard-example heuristic,
            torchvision's Faster R-CNN [0, 0.5). When an image has too few RoIs in the range (an image without
            objects has none above 0), the sample is filled with RoIs below it.
        rois_per_image: RoIs sampled per image (Fast R-CNN: R / N = 128 / 2 = 64).
        positive_fraction: Largest share of objects among them (25%).
        add_gt_boxes: Add the ground-truth boxes to the proposals in training.
        box_weights: Weights of the (dx, dy, dw, dh) coding.
        smooth_l1_beta: Where the box loss turns from quadratic to linear.
        score_thresh: Smallest class probability of a detection.
        nms_thresh: IoU of the per-class NMS of detections.
        detections_per_image: Most detections kept per image.
        min_proposal_size: Proposals narrower or lower than this (pixels) are dropped.
        canonical_size: With a feature pyramid, the box side pooled from ``canonical_stride`` (see `RoIPooler`).
        canonical_stride: The stride of that level.
    """

    pooling: str = "align"
    output_size: int = 7
    sampling_ratio: int = 2
    representation_size: int = 256
    fg_iou: float = 0.5
    bg_iou: tuple[float, float] = (0.0, 0.5)
    rois_per_image: int = 64
    positive_fraction: float = 0.25
    add_gt_boxes: bool = True
    box_weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0)
    smooth_l1_beta: float = 1 / 9
    score_thresh: float = 0.05
    nms_thresh: float = 0.5
    detections_per_image: int = 100
    min_proposal_size: float = 1e-2
    canonical_size: float = 16.0
    canonical_stride: int = 4

    def validate(self) -> None:
        """Raise a ValueError for an impossible configuration."""
        if self.pooling not in POOLINGS:
            raise ValueError(f"RoI pooling must be one of {POOLINGS}; got {self.pooling!r}")
        lo, hi = self.bg_iou
        if not 0 <= lo <= hi <= self.fg_iou <= 1:
            raise ValueError(
                f"RoI thresholds need 0 <= bg low <= bg high <= fg_iou <= 1; got {self.bg_iou}, {self.fg_iou}"
            )
        if self.rois_per_image < 1 or not 0 < self.positive_fraction <= 1:
            raise ValueError("rois_per_image must be positive and positive_fraction in (0, 1]")


class RoIHeads(nn.Module):
    """The per-region part of a detector: box classification and regression, and optionally masks.

    Args:
        pooler: Pools the regions for the box head.
        box_head: Pooled region -> feature vector (fc6, fc7).
        predictor: Feature vector -> class logits and class-specific box deltas.
        cfg: Sampling, loss and post-processing settings.
        mask_pooler: Pools the regions for the mask head (RoIAlign); None for a detector without masks.
        mask_head: Pooled region -> (num_classes, M, M) mask logits.
    """

    def __init__(
        self,
        pooler: RoIPooler,
        box_head: nn.Module,
        predictor: FastRCNNPredictor,
        cfg: RoIHeadConfig | None = None,
        *,
        mask_pooler: RoIPooler | None = None,
        mask_head: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.cfg = cfg or RoIHeadConfig()
        self.cfg.validate()
        if (mask_pooler is None) != (mask_head is None):
            raise ValueError("a mask branch needs both mask_pooler and mask_head")
        self.pooler = pooler
        self.box_head = box_head
        self.predictor = predictor
        self.mask_pooler = mask_pooler
        self.mask_head = mask_head
        self.coder = BoxCoder(self.cfg.box_weights)

    @property
    def has_masks(self) -> bool:
        """Whether the heads predict masks."""
        return self.mask_head is not None

    def forward(
        self,
        features: Sequence[torch.Tensor],
        proposals: Sequence[torch.Tensor],
        image_size: Sequence[int],
        targets: Sequence[dict[str, torch.Tensor]] | None = None,
        *,
        detect: bool = True,
    ) -> tuple[list[dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
        """Detections (when ``detect``) and, with ``targets``, the losses.

        Args:
            features: The maps the poolers read.
            proposals: Per image, (P, 4) candidate boxes in input pixels (P may be 0).
            image_size: (H, W) of the images.
            targets: Per image ``boxes``, ``labels`` (and ``masks`` for the mask branch).
            detect: Also post-process the proposals into detections.

        Returns:
            Per-image detection dicts (empty list when not ``detect``), and the loss dict ``loss_classifier``,
            ``loss_box_reg`` (and ``loss_mask``); empty without targets.
        """
        proposals = [self._clean(p, image_size) for p in proposals]
        losses: dict[str, torch.Tensor] = {}
        if targets is not None:
            losses = self._losses(features, proposals, targets)
        detections = self._detect(features, proposals, image_size) if detect else []
        return detections, losses

    def _clean(self, proposals: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        boxes = clip_boxes(proposals.float(), size)
        return boxes[remove_small_boxes(boxes, self.cfg.min_proposal_size)]

    # -- training --------------------------------------------------------------------------------------------------

    def _sample(self, proposals: torch.Tensor, target: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """Sampled RoIs of one image: boxes, class labels (0: background) and the matched ground-truth index."""
        cfg = self.cfg
        gt = target["boxes"].to(proposals.dtype)
        boxes = torch.cat([proposals, gt]) if cfg.add_gt_boxes else proposals
        if gt.numel():
            best, matched = box_iou(gt, boxes).max(dim=0)
        else:
            best = boxes.new_zeros(boxes.shape[0])
            matched = torch.zeros(boxes.shape[0], dtype=torch.long, device=boxes.device)
        lo, hi = cfg.bg_iou
        fg = torch.nonzero(best >= cfg.fg_iou).flatten()
        bg = torch.nonzero((best >= lo) & (best < hi)).flatten()
        below = torch.nonzero(best < lo).flatten()
        n_fg = min(fg.numel(), int(cfg.rois_per_image * cfg.positive_fraction))
        fg = fg[torch.randperm(fg.numel(), device=fg.device)[:n_fg]]
        bg = bg[torch.randperm(bg.numel(), device=bg.device)]
        below = below[torch.randperm(below.numel(), device=below.device)]
        bg = torch.cat([bg, below])[: cfg.rois_per_image - n_fg]
        keep = torch.cat([fg, bg])
        labels = torch.cat([target["labels"][matched[fg]], torch.zeros_like(bg)])
        return boxes[keep], labels, matched[keep]

    def _losses(
        self,
        features: Sequence[torch.Tensor],
        proposals: Sequence[torch.Tensor],
        targets: Sequence[dict[str, torch.Tensor]],
    ) -> dict[str, torch.Tensor]:
        sampled = [self._sample(p, t) for p, t in zip(proposals, targets)]
        boxes = [s[0] for s in sampled]
        labels = torch.cat([s[1] for s in sampled])
        pooled = self.pooler(features, boxes)
        logits, deltas = self.predictor(self.box_head(pooled))
        if labels.numel() == 0:  # no RoI in the whole batch: nothing to learn, but no NaN either
            zero = logits.sum() * 0 + deltas.sum() * 0
            losses = {"loss_classifier": zero, "loss_box_reg": zero}
            if self.has_masks:
                losses["loss_mask"] = zero
            return losses
        loss_cls = F.cross_entropy(logits, labels)
        pos = torch.nonzero(labels > 0).flatten()
        # The ground truth of each positive RoI (an image without objects has none).
        matched_gt = torch.cat([t["boxes"].to(s[0].dtype)[s[2][s[1] > 0]] for s, t in zip(sampled, targets)])
        box_targets = self.coder.encode(matched_gt, torch.cat(boxes)[pos])
        deltas = deltas.view(deltas.shape[0], -1, 4)[pos, labels[pos]]
        loss_box = F.smooth_l1_loss(deltas, box_targets, beta=self.cfg.smooth_l1_beta, reduction="sum")
        losses = {"loss_classifier": loss_cls, "loss_box_reg": loss_box / labels.numel()}
        if self.has_masks:
            losses["loss_mask"] = self._mask_loss(features, sampled, targets)
        return losses

    def _mask_loss(
        self,
        features: Sequence[torch.Tensor],
        sampled: list[tuple[torch.Tensor, ...]],
        targets: Sequence[dict[str, torch.Tensor]],
    ) -> torch.Tensor:
        """Per-pixel binary cross-entropy of the ground-truth class's mask on the positive RoIs."""
        assert self.mask_pooler is not None and self.mask_head is not None
        size = (self.mask_size, self.mask_size)
        pos_boxes, pos_labels, mask_targets = [], [], []
        for (boxes, labels, matched), t in zip(sampled, targets):
            pos = torch.nonzero(labels > 0).flatten()
            pos_boxes.append(boxes[pos])
            pos_labels.append(labels[pos])
            # The target is the ground-truth mask RoIAligned to the RoI at the head's resolution (soft at edges).
            gt = t["masks"][matched[pos]][:, None].to(boxes.dtype)
            rois = torch.cat([torch.arange(pos.numel(), device=boxes.device)[:, None].to(boxes.dtype), boxes[pos]], 1)
            mask_targets.append(roi_align(gt, rois, size, 1.0, sampling_ratio=2, aligned=True)[:, 0])
        logits = self.mask_head(self.mask_pooler(features, pos_boxes))
        labels = torch.cat(pos_labels)
        if labels.numel() == 0:
            return logits.sum() * 0
        picked = logits[torch.arange(labels.numel(), device=labels.device), labels]
        return F.binary_cross_entropy_with_logits(picked, torch.cat(mask_targets))

    @property
    def mask_size(self) -> int:
        """Side of the masks the mask head predicts (0 without a mask branch)."""
        if self.mask_pooler is None:
            return 0
        return self.mask_pooler.output_size * getattr(self.mask_head, "scale", 1)

    # -- inference -------------------------------------------------------------------------------------------------

    def _detect(
        self, features: Sequence[torch.Tensor], proposals: Sequence[torch.Tensor], size: Sequence[int]
    ) -> list[dict[str, torch.Tensor]]:
        cfg = self.cfg
        logits, deltas = self.predictor(self.box_head(self.pooler(features, proposals)))
        scores = F.softmax(logits.float(), dim=-1)
        boxes = clip_boxes(self.coder.decode(deltas.float(), torch.cat(proposals).float()), size)
        out = []
        start = 0
        num_classes = scores.shape[1]
        for p in proposals:
            sl = slice(start, start + p.shape[0])
            start = sl.stop
            b, s = boxes[sl, 1:].reshape(-1, 4), scores[sl, 1:].reshape(-1)
            lab = torch.arange(1, num_classes, device=s.device).repeat(p.shape[0])
            keep = torch.nonzero(s > cfg.score_thresh).flatten()
            keep = keep[remove_small_boxes(b[keep], 1e-2)]
            b, s, lab = b[keep], s[keep], lab[keep]
            keep = batched_nms(b, s, lab, cfg.nms_thresh)[: cfg.detections_per_image]
            out.append({"boxes": b[keep], "labels": lab[keep], "scores": s[keep]})
        if self.has_masks:
            self._add_masks(features, out, size)
        return out

    def _add_masks(
        self, features: Sequence[torch.Tensor], detections: list[dict[str, torch.Tensor]], size: Sequence[int]
    ) -> None:
        assert self.mask_pooler is not None and self.mask_head is not None
        boxes = [d["boxes"] for d in detections]
        logits = self.mask_head(self.mask_pooler(features, boxes))
        labels = torch.cat([d["labels"] for d in detections])
        probs = torch.sigmoid(logits[torch.arange(labels.numel(), device=labels.device), labels].float())
        start = 0
        for d in detections:
            k = d["boxes"].shape[0]
            d["masks"] = paste_masks(probs[start : start + k], d["boxes"], size)
            start += k
