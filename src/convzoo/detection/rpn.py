"""The region proposal network of Faster R-CNN (Ren et al. 2015, section 3.1).

A small network slides over the feature maps: a 3x3 convolution, then two sibling 1x1 convolutions giving, for each
of the k anchors of a position, an objectness score and four box deltas. Training labels anchors by their IoU with
the ground truth, samples a balanced mini-batch and adds a binary cross-entropy and a smooth L1 loss; every pass
turns the best-scoring anchors into proposals (top-k, clip, drop tiny boxes, NMS, top-k).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.ops import batched_nms

from convzoo.detection.anchors import AnchorGenerator
from convzoo.detection.boxes import BoxCoder, Matcher, clip_boxes, match_boxes, remove_small_boxes, sample_balanced

__all__ = ["RPNConfig", "RPNHead", "RegionProposalNetwork"]


@dataclass(frozen=True)
class RPNConfig:
    """Settings of the region proposal network.

    Attributes:
        fg_iou: IoU from which an anchor is an object (0.7 in the paper).
        bg_iou: IoU below which an anchor is background (0.3); anchors in between do not train.
        batch_size_per_image: Anchors sampled per image for the loss (256).
        positive_fraction: Largest share of objects in that sample (half).
        pre_nms_top_n_train: Best-scoring anchors kept per level before NMS in training.
        pre_nms_top_n_test: The same in evaluation.
        post_nms_top_n_train: Proposals kept per image after NMS in training (the paper: 2000 of 600-pixel images).
        post_nms_top_n_test: The same in evaluation (the paper: 300).
        nms_thresh: IoU of NMS between proposals (0.7).
        min_size: Smallest proposal side in pixels.
        score_thresh: Smallest objectness probability of a proposal.
        box_weights: Weights of the (dx, dy, dw, dh) coding.
        smooth_l1_beta: Where the box loss turns from quadratic to linear (torchvision: 1/9).
    """

    fg_iou: float = 0.7
    bg_iou: float = 0.3
    batch_size_per_image: int = 256
    positive_fraction: float = 0.5
    pre_nms_top_n_train: int = 600
    pre_nms_top_n_test: int = 300
    post_nms_top_n_train: int = 200
    post_nms_top_n_test: int = 100
    nms_thresh: float = 0.7
    min_size: float = 1e-3
    score_thresh: float = 0.0
    box_weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    smooth_l1_beta: float = 1 / 9

    def validate(self) -> None:
        """Raise a ValueError for an impossible configuration."""
        if not 0 <= self.bg_iou <= self.fg_iou <= 1:
            raise ValueError(f"RPN thresholds need 0 <= bg_iou <= fg_iou <= 1; got {self.bg_iou}, {self.fg_iou}")
        if self.batch_size_per_image < 1 or not 0 < self.positive_fraction <= 1:
            raise ValueError("RPN batch_size_per_image must be positive and positive_fraction in (0, 1]")


class RPNHead(nn.Module):
    """The sliding network: 3x3 conv and ReLU, then objectness (k) and box-delta (4k) 1x1 convs, shared by levels."""

    def __init__(self, in_channels: int, num_anchors: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, in_channels, 3, padding=1)
        self.cls_logits = nn.Conv2d(in_channels, num_anchors, 1)
        self.bbox_pred = nn.Conv2d(in_channels, 4 * num_anchors, 1)
        for layer in (self.conv, self.cls_logits, self.bbox_pred):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.zeros_(layer.bias)

    def forward(self, features: Sequence[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Objectness logits (N, k, H, W) and deltas (N, 4k, H, W) of every level."""
        logits, deltas = [], []
        for x in features:
            t = F.relu(self.conv(x))
            logits.append(self.cls_logits(t))
            deltas.append(self.bbox_pred(t))
        return logits, deltas


def _flatten(logits: list[torch.Tensor], deltas: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, A_total) logits and (N, A_total, 4) deltas, in the anchors' order (position-major, anchor-minor)."""
    flat_logits, flat_deltas = [], []
    for lg, dt in zip(logits, deltas):
        n, a, h, w = lg.shape
        flat_logits.append(lg.permute(0, 2, 3, 1).reshape(n, -1))
        flat_deltas.append(dt.view(n, a, 4, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, 4))
    return torch.cat(flat_logits, 1), torch.cat(flat_deltas, 1)


class RegionProposalNetwork(nn.Module):
    """Proposals and (in training) the RPN losses, from the feature maps.

    Args:
        anchors: The anchor generator; its levels are the feature maps the RPN reads.
        head: The sliding network.
        cfg: Thresholds, sample sizes and proposal counts.
    """

    def __init__(self, anchors: AnchorGenerator, head: RPNHead, cfg: RPNConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or RPNConfig()
        self.cfg.validate()
        self.anchors = anchors
        self.head = head
        self.coder = BoxCoder(self.cfg.box_weights)
        self.matcher = Matcher(self.cfg.fg_iou, self.cfg.bg_iou, keep_best=True)

    def forward(
        self,
        image_size: Sequence[int],
        features: Sequence[torch.Tensor],
        targets: Sequence[dict[str, torch.Tensor]] | None = None,
        *,
        training: bool | None = None,
    ) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
        """Proposals per image, and the losses when ``targets`` are given.

        Args:
            image_size: (H, W) of the batch's images.
            features: The feature maps, one per anchor level.
            targets: Per image, ``boxes`` (M, 4) and ``labels``.
            training: Use the training proposal counts (default: the module's mode).

        Returns:
            A list of (P, 4) proposals, and a dict with ``loss_objectness`` and ``loss_rpn_box_reg`` (empty without
            targets).
        """
        training = self.training if training is None else training
        logits, deltas = self.head(features)
        anchors = self.anchors(image_size, features)
        levels = torch.cat(
            [torch.full((lg[0].numel(),), i, device=anchors.device) for i, lg in enumerate(logits)]
        )  # level of each anchor, for per-level top-k and NMS
        flat_logits, flat_deltas = _flatten(logits, deltas)
        n = flat_logits.shape[0]
        boxes = self.coder.decode(flat_deltas.detach().reshape(-1, 4), anchors.repeat(n, 1)).view(n, -1, 4)
        proposals = self._select(boxes, flat_logits.detach(), levels, image_size, training)
        losses = {} if targets is None else self._losses(anchors, flat_logits, flat_deltas, targets)
        return proposals, losses

    def _select(
        self, boxes: torch.Tensor, logits: torch.Tensor, levels: torch.Tensor, size: Sequence[int], training: bool
    ) -> list[torch.Tensor]:
        cfg = self.cfg
        pre = cfg.pre_nms_top_n_train if training else cfg.pre_nms_top_n_test
        post = cfg.post_nms_top_n_train if training else cfg.post_nms_top_n_test
        # The best `pre` anchors of each level, so that a level with many positions does not crowd out the others.
        top = []
        for lvl in range(int(levels.max()) + 1):
            idx = torch.nonzero(levels == lvl).flatten()
            k = min(pre, idx.numel())
            top.append(idx[logits[:, idx].topk(k, dim=1).indices])
        top = torch.cat(top, 1)  # (N, K)
        out = []
        for b in range(boxes.shape[0]):
            sel = top[b]
            bx, score, lvl = clip_boxes(boxes[b, sel], size), torch.sigmoid(logits[b, sel]), levels[sel]
            keep = remove_small_boxes(bx, cfg.min_size)
            keep = keep[score[keep] >= cfg.score_thresh]
            bx, score, lvl = bx[keep], score[keep], lvl[keep]
            keep = batched_nms(bx, score, lvl, cfg.nms_thresh)[:post]
            out.append(bx[keep])
        return out

    def _losses(
        self,
        anchors: torch.Tensor,
        logits: torch.Tensor,
        deltas: torch.Tensor,
        targets: Sequence[dict[str, torch.Tensor]],
    ) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        sampled_pos, sampled_neg, box_targets = [], [], []
        for b, t in enumerate(targets):
            matches = match_boxes(self.matcher, t["boxes"], anchors)
            labels = torch.where(matches >= 0, 1, torch.where(matches == -1, 0, -1))
            pos, neg = sample_balanced(labels, cfg.batch_size_per_image, cfg.positive_fraction)
            base = b * anchors.shape[0]
            sampled_pos.append(pos + base)
            sampled_neg.append(neg + base)
            box_targets.append(self.coder.encode(t["boxes"][matches[pos]], anchors[pos]))
        pos, neg = torch.cat(sampled_pos), torch.cat(sampled_neg)
        sampled = torch.cat([pos, neg])
        flat_logits = logits.reshape(-1)
        labels = torch.cat([torch.ones_like(pos), torch.zeros_like(neg)]).to(flat_logits.dtype)
        loss_obj = F.binary_cross_entropy_with_logits(flat_logits[sampled], labels)
        box_loss = F.smooth_l1_loss(
            deltas.reshape(-1, 4)[pos], torch.cat(box_targets), beta=cfg.smooth_l1_beta, reduction="sum"
        ) / max(1, sampled.numel())
        return {"loss_objectness": loss_obj, "loss_rpn_box_reg": box_loss}
