"""Detection metrics: COCO's mean average precision and the Pascal VOC average precision.

`DetectionEvaluator` follows COCO's evaluation (Lin et al. 2014; pycocotools' ``COCOeval``) step for step, and
agrees with it to 1e-3: per image and class the detections are sorted by score and cut to the best 100; at each IoU
threshold 0.50:0.05:0.95 every detection in turn takes the unmatched ground truth it overlaps most (ground truth
outside the area range is taken only when nothing else is left, and the detection is then ignored); precision is
made monotone and read at 101 recall points. Areas are the box area for boxes and the mask area for masks: small
below 32², medium up to 96², large above. Crowd annotations (``iscrowd``) are not supported: every ground-truth
object counts.

`voc_evaluate` is the Pascal VOC protocol of the R-CNN and Fast R-CNN papers: one IoU threshold (0.5), detections
of a class ranked over all images, "difficult" objects neither rewarded nor penalised, and `voc_ap` the area under
the monotone precision-recall curve (or VOC 2007's 11-point average).

Boxes are x0, y0, x1, y1 in continuous pixel coordinates (x1, y1 exclusive), so a box's area is (x1 - x0)(y1 - y0)
with no "+1" (as pycocotools, unlike the original VOC code).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = [
    "AREA_RANGES",
    "IOU_THRESHOLDS",
    "RECALL_THRESHOLDS",
    "DetectionEvaluator",
    "box_iou",
    "voc_ap",
    "voc_evaluate",
]

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
"""COCO's IoU thresholds 0.50:0.05:0.95 (the same floats as pycocotools)."""
RECALL_THRESHOLDS = np.linspace(0.0, 1.0, 101)
"""The 101 recall points at which COCO reads the interpolated precision."""
AREA_RANGES = {"all": (0.0, 1e10), "small": (0.0, 32.0**2), "medium": (32.0**2, 96.0**2), "large": (96.0**2, 1e10)}
"""Object area ranges in square pixels, bounds included as in pycocotools."""
IOU_TYPES = ("bbox", "segm")


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` (N, 4) with every box in ``b`` (M, 4), x0 y0 x1 y1: an (N, M) array."""
    a, b = np.asarray(a, dtype=np.float64).reshape(-1, 4), np.asarray(b, dtype=np.float64).reshape(-1, 4)
    w = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    h = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.clip(w, 0, None) * np.clip(h, 0, None)
    union = _box_area(a)[:, None] + _box_area(b)[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def _box_area(boxes: np.ndarray) -> np.ndarray:
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


def _mask_iou(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """IoU of boolean masks (N, H, W) and (M, H, W), counted exactly in float32 (exact below 2**24 pixels)."""
    a, b = a.flatten(1).float(), b.flatten(1).float()
    inter = a @ b.T
    union = a.sum(1)[:, None] + b.sum(1)[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1), 0.0).double().cpu().numpy()


@dataclass
class _Matches:
    """One image and class, already matched: detections sorted by score, per area range (A) and IoU threshold (T).

    Attributes:
        scores: (D,) scores, highest first.
        matched: (A, T, D) whether each detection matched a ground-truth object.
        ignored: (A, T, D) whether it counts neither way (matched an out-of-range object, or unmatched and itself
            out of range).
        num_gt: (A,) ground-truth objects in each area range.
        image: The image's place in the test set, which orders tied scores as pycocotools does.
    """

    scores: np.ndarray
    matched: np.ndarray
    ignored: np.ndarray
    num_gt: np.ndarray
    image: int = 0


def _greedy_match(ious: np.ndarray, gt_ignored: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """COCO's greedy matching of score-sorted detections to ground truth sorted with ignored objects last.

    Returns (T, D) arrays: whether each detection matched, and whether what it matched is ignored.
    """
    num_dt, num_gt = ious.shape
    matched = np.zeros((len(IOU_THRESHOLDS), num_dt), dtype=bool)
    to_ignored = np.zeros_like(matched)
    if num_gt == 0 or num_dt == 0:
        return matched, to_ignored
    rows, ignored = ious.tolist(), gt_ignored.tolist()
    for t, threshold in enumerate(IOU_THRESHOLDS.tolist()):
        taken = [False] * num_gt
        for d, row in enumerate(rows):
            best, m = min(threshold, 1 - 1e-10), -1
            for g in range(num_gt):
                if taken[g]:
                    continue
                if m > -1 and not ignored[m] and ignored[g]:
                    break  # a match in range beats any out-of-range object, which come last
                if row[g] < best:
                    continue
                best, m = row[g], g
            if m > -1:
                taken[m] = True
                matched[t, d] = True
                to_ignored[t, d] = ignored[m]
    return matched, to_ignored


def _match_image_class(ious: np.ndarray, scores: np.ndarray, dt_area: np.ndarray, gt_area: np.ndarray) -> _Matches:
    """Match one image's detections of one class (sorted by score) in every area range."""
    ranges = list(AREA_RANGES.values())
    shape = (len(ranges), len(IOU_THRESHOLDS), len(scores))
    matched, ignored = np.zeros(shape, dtype=bool), np.zeros(shape, dtype=bool)
    num_gt = np.zeros(len(ranges), dtype=np.int64)
    done: dict[bytes, tuple[np.ndarray, np.ndarray]] = {}
    for a, (lo, hi) in enumerate(ranges):
        gt_ignored = (gt_area < lo) | (gt_area > hi)
        num_gt[a] = int((~gt_ignored).sum())
        key = gt_ignored.tobytes()
        if key not in done:
            order = np.argsort(gt_ignored, kind="stable")
            done[key] = _greedy_match(ious[:, order], gt_ignored[order])
        m, to_ignored = done[key]
        dt_outside = (dt_area < lo) | (dt_area > hi)
        matched[a] = m
        ignored[a] = to_ignored | (~m & dt_outside[None, :])
    return _Matches(scores, matched, ignored, num_gt)


def _as_numpy(x: Any, dtype: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        return (x.float() if x.is_floating_point() else x).numpy().astype(dtype)
    return np.asarray(x, dtype=dtype)


def _binary_masks(masks: Any, n: int, what: str) -> torch.Tensor:
    """(n, H, W) boolean masks from bool or [0, 1] float masks, (n, H, W) or torchvision's (n, 1, H, W)."""
    m = torch.as_tensor(masks)
    if m.dim() == 4 and m.shape[1] == 1:
        m = m[:, 0]
    if m.dim() != 3 or m.shape[0] != n:
        raise ValueError(f"{what}: masks must have shape ({n}, H, W); got {tuple(m.shape)}")
    return m if m.dtype == torch.bool else m > 0.5


class DetectionEvaluator:
    """COCO mean average precision of detections (boxes) or instance segmentations (masks).

    Feed it batches with `update` and read the metrics with `compute`; `reset` starts over. Predictions and targets
    follow the detection contract: per image a dict of ``boxes`` (K, 4) x0 y0 x1 y1, ``labels`` (K,) in
    1..num_classes-1, ``scores`` (K,) for predictions, and ``masks`` ((K, H, W) bool or float in [0, 1], binarised
    at 0.5) when ``iou_type="segm"``. Tensors may live on any device.

    Args:
        num_classes: Number of classes, counting the background (class 0, never evaluated).
        iou_type: ``"bbox"`` to compare boxes, ``"segm"`` to compare masks.
        max_detections: Detections kept per image and class, the best-scoring ones (COCO's maxDets, 100).
    """

    def __init__(self, num_classes: int, *, iou_type: str = "bbox", max_detections: int = 100) -> None:
        if num_classes < 2:
            raise ValueError(f"num_classes counts the background and must be at least 2; got {num_classes}")
        if iou_type not in IOU_TYPES:
            raise ValueError(f"iou_type must be one of {IOU_TYPES}; got {iou_type!r}")
        if max_detections < 1:
            raise ValueError(f"max_detections must be positive; got {max_detections}")
        self.num_classes = num_classes
        self.iou_type = iou_type
        self.max_detections = max_detections
        self.reset()

    def __repr__(self) -> str:
        return f"DetectionEvaluator(num_classes={self.num_classes}, iou_type={self.iou_type!r}, {self.n_images} images)"

    def reset(self) -> None:
        """Forget every image seen so far."""
        self.n_images = 0
        self._matches: list[list[_Matches]] = [[] for _ in range(self.num_classes)]
        self._gathered = False

    def update(self, preds: Sequence[dict[str, Any]], targets: Sequence[dict[str, Any]]) -> None:
        """Account for a batch of images: ``preds[i]`` are the detections in the image of ``targets[i]``.

        Raises:
            ValueError: Different numbers of predictions and targets, a label outside 1..num_classes-1, masks
                missing (``"segm"``) or of the wrong shape.
        """
        if len(preds) != len(targets):
            raise ValueError(f"{len(preds)} predictions for {len(targets)} targets; give one per image")
        for pred, target in zip(preds, targets):
            self._update_image(pred, target, self.n_images)
            self.n_images += 1

    def merge(self, others: Sequence[DetectionEvaluator]) -> None:
        """Add the images ``others`` have seen (other shards of the same test set), as if this one had seen them
        after its own (in the order of ``others``)."""
        for other in others:
            if (other.num_classes, other.iou_type, other.max_detections) != (
                self.num_classes,
                self.iou_type,
                self.max_detections,
            ):
                raise ValueError(f"cannot merge {other!r} into {self!r}: their settings differ")
            for c in range(self.num_classes):
                self._matches[c] += [dataclasses.replace(m, image=m.image + self.n_images) for m in other._matches[c]]
            self.n_images += other.n_images

    def gather(self) -> None:
        """In a distributed evaluation (torch.distributed initialised, several processes, each evaluating every
        world-size-th image from its rank on, as the engine's test loaders do), add every other process's images,
        so that `compute` gives each process the metrics of the whole test set; else nothing. A second call adds
        nothing.

        COCO's precision is not a sum over images, so unlike the losses it cannot be reduced number by number: the
        per-image matches travel instead (a few numbers per detection).
        """
        import torch.distributed as dist

        if self._gathered or not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return
        world = dist.get_world_size()
        shards: list[Any] = [None] * world
        dist.all_gather_object(shards, self)
        # The engine's shards are interleaved (process r evaluates images r, r + world, ...): image j of process r is
        # image j * world + r of the set.
        merged = [[] for _ in range(self.num_classes)]
        for r, shard in enumerate(shards):
            for c in range(self.num_classes):
                merged[c] += [dataclasses.replace(m, image=m.image * world + r) for m in shard._matches[c]]
        self._matches, self.n_images = merged, sum(shard.n_images for shard in shards)
        self._gathered = True

    def _labels(self, x: Any, what: str) -> np.ndarray:
        labels = _as_numpy(x, np.int64).reshape(-1)
        bad = (labels < 1) | (labels >= self.num_classes)
        if bad.any():
            raise ValueError(
                f"{what}: label {int(labels[bad][0])} is outside 1..{self.num_classes - 1} "
                f"(class 0 is the background; {self.num_classes} classes)"
            )
        return labels

    def _update_image(self, pred: dict[str, Any], target: dict[str, Any], index: int) -> None:
        what = f"image {index}"
        dt_labels = self._labels(pred["labels"], f"{what} predictions")
        gt_labels = self._labels(target["labels"], f"{what} targets")
        dt_scores = _as_numpy(pred["scores"], np.float64).reshape(-1)
        dt_boxes = _as_numpy(pred["boxes"], np.float64).reshape(-1, 4)
        gt_boxes = _as_numpy(target["boxes"], np.float64).reshape(-1, 4)
        if not len(dt_labels) == len(dt_scores) == len(dt_boxes) or len(gt_labels) != len(gt_boxes):
            raise ValueError(f"{what}: boxes, labels and scores must have one row per object")
        if self.iou_type == "segm":
            if "masks" not in pred or "masks" not in target:
                raise ValueError(f"{what}: iou_type='segm' needs 'masks' in predictions and targets")
            dt_masks = _binary_masks(pred["masks"], len(dt_labels), f"{what} predictions")
            gt_masks = _binary_masks(target["masks"], len(gt_labels), f"{what} targets").to(dt_masks.device)
            if len(dt_labels) and len(gt_labels) and dt_masks.shape[1:] != gt_masks.shape[1:]:
                raise ValueError(
                    f"{what}: predicted masks of {tuple(dt_masks.shape[1:])} pixels, targets of "
                    f"{tuple(gt_masks.shape[1:])}; they must be the same size"
                )
            dt_area = dt_masks.flatten(1).sum(1).double().cpu().numpy()
            gt_area = gt_masks.flatten(1).sum(1).double().cpu().numpy()
        else:
            dt_area, gt_area = _box_area(dt_boxes), _box_area(gt_boxes)
        for c in np.union1d(dt_labels, gt_labels).tolist():
            dt = np.flatnonzero(dt_labels == c)
            dt = dt[np.argsort(-dt_scores[dt], kind="stable")][: self.max_detections]
            gt = np.flatnonzero(gt_labels == c)
            if self.iou_type == "segm":
                ious = _mask_iou(dt_masks[torch.as_tensor(dt)], gt_masks[torch.as_tensor(gt)])
            else:
                ious = box_iou(dt_boxes[dt], gt_boxes[gt])
            matches = _match_image_class(ious, dt_scores[dt], dt_area[dt], gt_area[gt])
            matches.image = index
            self._matches[c].append(matches)

    def precision(self) -> np.ndarray:
        """COCO's interpolated precision, (T=10 IoU thresholds, R=101 recall points, num_classes, A=4 area ranges);
        NaN where a class has no ground truth in an area range (class 0 always)."""
        shape = (len(IOU_THRESHOLDS), len(RECALL_THRESHOLDS), self.num_classes, len(AREA_RANGES))
        out = np.full(shape, np.nan)
        for c in range(1, self.num_classes):
            results = sorted(self._matches[c], key=lambda r: r.image)  # merged shards back in the set's order
            if not results:
                continue
            scores = np.concatenate([r.scores for r in results])
            order = np.argsort(-scores, kind="mergesort")  # pycocotools' sort, so ties rank as there
            for a in range(len(AREA_RANGES)):
                num_gt = int(sum(r.num_gt[a] for r in results))
                if num_gt == 0:
                    continue
                matched = np.concatenate([r.matched[a] for r in results], axis=1)[:, order]
                ignored = np.concatenate([r.ignored[a] for r in results], axis=1)[:, order]
                out[:, :, c, a] = _interpolated_precision(matched, ignored, num_gt)
        return out

    def compute(self) -> dict[str, Any]:
        """The metrics of every image seen, as fractions in [0, 1].

        Returns:
            ``map`` (AP averaged over IoU 0.50:0.05:0.95 and the classes with ground truth), ``ap50``, ``ap75``,
            ``ap_small``, ``ap_medium``, ``ap_large`` (NaN when no ground truth falls in the range),
            ``ap_per_class`` (a list of num_classes - 1 APs, of classes 1, 2, ...; NaN for a class without ground
            truth) and ``n_images``.
        """
        p = self.precision()

        def mean(x: np.ndarray) -> float:
            return float(np.nanmean(x)) if not np.isnan(x).all() else math.nan

        per_class = [mean(p[:, :, c, 0]) for c in range(1, self.num_classes)]
        return {
            "map": mean(p[:, :, :, 0]),
            "ap50": mean(p[0, :, :, 0]),
            "ap75": mean(p[5, :, :, 0]),
            "ap_small": mean(p[:, :, :, 1]),
            "ap_medium": mean(p[:, :, :, 2]),
            "ap_large": mean(p[:, :, :, 3]),
            "ap_per_class": per_class,
            "n_images": self.n_images,
        }


def _interpolated_precision(matched: np.ndarray, ignored: np.ndarray, num_gt: int) -> np.ndarray:
    """(T, 101) precision at COCO's recall points from (T, D) score-sorted matches (pycocotools' accumulate)."""
    tp = np.cumsum(matched & ~ignored, axis=1, dtype=np.float64)
    fp = np.cumsum(~matched & ~ignored, axis=1, dtype=np.float64)
    recall = tp / num_gt
    precision = tp / (tp + fp + np.spacing(1))
    precision = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]  # the monotone envelope
    out = np.zeros((matched.shape[0], len(RECALL_THRESHOLDS)))
    for t in range(matched.shape[0]):
        index = np.searchsorted(recall[t], RECALL_THRESHOLDS, side="left")
        valid = index < precision.shape[1]
        out[t, valid] = precision[t, index[valid]]
    return out


# -- Pascal VOC --------------------------------------------------------------------------------------------------------


def voc_ap(recall: Any, precision: Any, *, use_07_metric: bool = False) -> float:
    """Average precision of a precision-recall curve, as the Pascal VOC development kit computes it.

    Args:
        recall: Recall after each detection, ranked by score (non-decreasing).
        precision: Precision after each detection.
        use_07_metric: VOC 2007's 11-point average (the mean of the best precision at recall >= 0, 0.1, ..., 1),
            as the R-CNN and Fast R-CNN papers report; else the area under the monotone envelope (VOC 2010 on).
    """
    rec, prec = np.asarray(recall, dtype=np.float64), np.asarray(precision, dtype=np.float64)
    if use_07_metric:
        return float(sum(prec[rec >= t].max() if (rec >= t).any() else 0.0 for t in np.arange(0.0, 1.1, 0.1)) / 11.0)
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    steps = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


def voc_evaluate(
    preds: Sequence[dict[str, Any]],
    targets: Sequence[dict[str, Any]],
    num_classes: int,
    *,
    iou_threshold: float = 0.5,
    use_07_metric: bool = False,
) -> dict[str, Any]:
    """Pascal VOC average precision per class at one IoU threshold.

    Detections of a class are ranked by score over all images; each is a true positive when its best-overlapping
    ground-truth box of that class (in its image) overlaps it by more than ``iou_threshold`` and was not taken by a
    higher-scoring detection, else a false positive. Objects flagged in the target's optional ``difficult`` (M,)
    bool entry count neither way, nor do the detections that hit them.

    Args:
        preds: Per image, a dict of ``boxes``, ``labels``, ``scores``.
        targets: Per image, a dict of ``boxes``, ``labels`` and optionally ``difficult``.
        num_classes: Number of classes counting the background (class 0).
        iou_threshold: Overlap a true positive must exceed.
        use_07_metric: VOC 2007's 11-point AP (see `voc_ap`).

    Returns:
        ``map`` (mean over classes with ground truth), ``ap_per_class`` (num_classes - 1 values for classes 1, 2,
        ...; NaN without ground truth), ``n_images``.
    """
    if len(preds) != len(targets):
        raise ValueError(f"{len(preds)} predictions for {len(targets)} targets; give one per image")
    per_class = []
    for c in range(1, num_classes):
        image, scores, boxes = [], [], []
        gts, num_pos = [], 0
        for i, (pred, target) in enumerate(zip(preds, targets)):
            keep = _as_numpy(pred["labels"], np.int64).reshape(-1) == c
            image += [i] * int(keep.sum())
            scores.append(_as_numpy(pred["scores"], np.float64).reshape(-1)[keep])
            boxes.append(_as_numpy(pred["boxes"], np.float64).reshape(-1, 4)[keep])
            mine = _as_numpy(target["labels"], np.int64).reshape(-1) == c
            difficult = _as_numpy(target.get("difficult", np.zeros(mine.shape, bool)), bool).reshape(-1)[mine]
            gts.append((_as_numpy(target["boxes"], np.float64).reshape(-1, 4)[mine], difficult))
            num_pos += int((~difficult).sum())
        if num_pos == 0:
            per_class.append(math.nan)
            continue
        all_scores, all_boxes = np.concatenate(scores), np.concatenate(boxes)
        order = np.argsort(-all_scores, kind="stable")
        taken = [np.zeros(len(g[0]), dtype=bool) for g in gts]
        tp, fp = np.zeros(len(order)), np.zeros(len(order))
        for rank, d in enumerate(order):
            gt_boxes, difficult = gts[image[d]]
            overlaps = box_iou(all_boxes[d : d + 1], gt_boxes)[0]
            if len(overlaps) and overlaps.max() > iou_threshold:
                j = int(overlaps.argmax())
                if difficult[j]:
                    continue
                if taken[image[d]][j]:
                    fp[rank] = 1
                else:
                    tp[rank], taken[image[d]][j] = 1, True
            else:
                fp[rank] = 1
        tp, fp = np.cumsum(tp), np.cumsum(fp)
        recall = tp / num_pos
        precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
        per_class.append(voc_ap(recall, precision, use_07_metric=use_07_metric))
    valid = [ap for ap in per_class if not math.isnan(ap)]
    return {"map": float(np.mean(valid)) if valid else math.nan, "ap_per_class": per_class, "n_images": len(preds)}
