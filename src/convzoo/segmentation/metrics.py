"""Segmentation metrics, all read off one confusion matrix of pixel counts.

The confusion matrix counts, for every pair (true class i, predicted class j), the labelled pixels of class i that a
network put in class j; pixels labelled `IGNORE_INDEX` are left out. Pixel accuracy is its trace over its sum, the
intersection over union of class c is ``C[c, c] / (row c + column c - C[c, c])`` and the mean IoU (Long et al.,
"Fully Convolutional Networks for Semantic Segmentation", CVPR 2015) averages it over the classes that occur in the
truth or the prediction: a class absent from both has no IoU (0 / 0) and is left out of the mean, as in the Pascal
VOC and Cityscapes evaluations. Since the matrix is a sum, the matrices of batches, or of the processes of a
distributed run, add up to that of the whole set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from convzoo.data.transforms import IGNORE_INDEX
from convzoo.train.tasks import Batch, Metrics, Reduce

__all__ = [
    "SegmentationMetrics",
    "SegmentationScores",
    "check_mask_values",
    "confusion_matrix",
    "scores_from_confusion",
]


def _unreduced(values: list[float]) -> list[float]:
    return values


def check_mask_values(
    masks: torch.Tensor, num_classes: int, source: str = "masks", *, ignore_index: int = IGNORE_INDEX
) -> None:
    """Check that every pixel of ``masks`` is a class in ``[0, num_classes)`` or ``ignore_index``.

    Raises:
        ValueError: Other values, naming them (the first few) and the valid range.
    """
    if masks.is_floating_point() or masks.is_complex():
        raise TypeError(f"{source}: masks must hold integer class indices; got {masks.dtype}")
    bad = (masks < 0) | ((masks >= num_classes) & (masks != ignore_index))
    if bool(bad.any()):
        values = torch.unique(masks[bad]).tolist()
        shown = ", ".join(map(str, values[:10])) + (", ..." if len(values) > 10 else "")
        raise ValueError(
            f"{source}: class values {shown} are out of range; a mask holds classes 0..{num_classes - 1} "
            f"({num_classes} classes) and {ignore_index} for pixels to ignore"
        )


def confusion_matrix(
    predictions: torch.Tensor, targets: torch.Tensor, num_classes: int, *, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """Pixel counts (num_classes, num_classes) int64: row = true class, column = predicted class.

    Args:
        predictions: Predicted classes, any shape.
        targets: True classes, the same shape; pixels equal to ``ignore_index`` are not counted.
        num_classes: Number of classes.
        ignore_index: The label of pixels to leave out.

    Raises:
        ValueError: Shapes that differ, or target classes out of range (see `check_mask_values`).
    """
    if predictions.shape != targets.shape:
        raise ValueError(f"predictions of shape {tuple(predictions.shape)} for targets of {tuple(targets.shape)}")
    targets = targets.long()
    check_mask_values(targets, num_classes, "targets", ignore_index=ignore_index)
    valid = targets != ignore_index
    index = targets[valid] * num_classes + predictions.long()[valid]
    return torch.bincount(index, minlength=num_classes * num_classes).view(num_classes, num_classes)


@dataclass(frozen=True)
class SegmentationScores:
    """The scores of a confusion matrix.

    Attributes:
        pixel_accuracy: Correct labelled pixels over labelled pixels, in [0, 1] (NaN without labelled pixels).
        mean_iou: Mean of ``iou`` over the classes present in the truth or the prediction (NaN if none is).
        iou: Intersection over union of every class; NaN for a class absent from both truth and prediction.
        confusion: The matrix (row = true class, column = predicted class), int64 on the CPU.
    """

    pixel_accuracy: float
    mean_iou: float
    iou: tuple[float, ...]
    confusion: torch.Tensor

    @property
    def num_classes(self) -> int:
        return len(self.iou)


def scores_from_confusion(confusion: torch.Tensor) -> SegmentationScores:
    """Pixel accuracy, per-class and mean IoU of a confusion matrix (row = true class, column = predicted)."""
    cm = confusion.detach().to("cpu", torch.float64)
    if cm.dim() != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"a confusion matrix is square; got shape {tuple(cm.shape)}")
    hits = cm.diagonal()
    union = cm.sum(0) + cm.sum(1) - hits
    iou = [float(h / u) if u > 0 else math.nan for h, u in zip(hits, union)]
    present = [v for v in iou if not math.isnan(v)]
    total = float(cm.sum())
    return SegmentationScores(
        pixel_accuracy=float(hits.sum()) / total if total else math.nan,
        mean_iou=sum(present) / len(present) if present else math.nan,
        iou=tuple(iou),
        confusion=confusion.detach().to("cpu", torch.int64),
    )


class SegmentationMetrics(Metrics):
    """Loss, pixel accuracy and IoU of an epoch, from a confusion matrix summed batch by batch.

    The sums (loss, labelled pixels, the matrix) are added over the processes of a distributed run by ``compute``'s
    ``reduce``, so every process reports the whole set's scores, as with `SumMetrics`. The matrix stays on the batches'
    device until then. Its size is the network's number of output channels, read off the first batch unless given.

    ``outputs`` of a step are ``(logits, targets)``: logits (N, C, h, w) and the target classes (N, h, w) they are
    scored against (already cropped to the logits).

    Args:
        num_classes: Number of classes (None: the logits' channels).
        per_class: Report the IoU of each class as ``iou_<class index>`` (evaluation).
        ignore_index: The label of pixels to leave out.
    """

    def __init__(
        self, num_classes: int | None = None, *, per_class: bool = True, ignore_index: int = IGNORE_INDEX
    ) -> None:
        self.num_classes = num_classes
        self.per_class = per_class
        self.ignore_index = ignore_index
        self.reset()

    def reset(self) -> None:
        self.loss_sum = 0.0
        self.loss_pixels = 0.0
        self.confusion: torch.Tensor | None = None

    def update(self, batch: Batch, outputs: Any, loss: float | None = None) -> None:
        logits, targets = outputs
        logits = logits.detach()
        if self.num_classes is None:
            self.num_classes = logits.shape[1]
        predictions = logits.argmax(1)
        cm = confusion_matrix(predictions, targets, self.num_classes, ignore_index=self.ignore_index)
        self.confusion = cm if self.confusion is None else self.confusion + cm
        pixels = float(cm.sum())
        if loss is None:  # evaluation: the plain cross-entropy, whatever the training loss adds to it
            loss = F.cross_entropy(logits.float(), targets.long(), ignore_index=self.ignore_index, reduction="sum")
            self.loss_sum += float(loss)
        else:
            self.loss_sum += loss * pixels
        self.loss_pixels += pixels

    def scores(self, reduce: Reduce = _unreduced) -> tuple[SegmentationScores, float]:
        """The scores of the summed confusion matrix and the mean loss per labelled pixel."""
        n = self.num_classes or 0
        cm = self.confusion if self.confusion is not None else torch.zeros(n, n, dtype=torch.int64)
        summed = reduce([self.loss_sum, self.loss_pixels, *map(float, cm.flatten().tolist())])
        confusion = torch.tensor([round(v) for v in summed[2:]], dtype=torch.int64).view(n, n)
        return scores_from_confusion(confusion), summed[0] / max(1.0, summed[1])

    def compute(self, reduce: Reduce = _unreduced) -> dict[str, float]:
        """``loss`` (mean cross-entropy per labelled pixel), ``pixel_acc`` and ``pixel_err`` (percent), ``miou`` and,
        with ``per_class``, ``iou_<c>`` (in [0, 1])."""
        scores, loss = self.scores(reduce)
        acc = 100 * scores.pixel_accuracy
        out = {"loss": loss, "pixel_acc": acc, "pixel_err": 100 - acc, "miou": scores.mean_iou}
        if self.per_class:
            out |= {f"iou_{c}": v for c, v in enumerate(scores.iou)}
        return out

    def progress(self) -> dict[str, str]:
        if self.confusion is None:
            return {}
        total = max(1, int(self.confusion.sum()))
        return {"pixel_acc": f"{100 * int(self.confusion.diagonal().sum()) / total:.1f}%"}
