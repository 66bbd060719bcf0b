"""The training task of semantic segmentation: a class for every pixel.

`SegmentationTask` is what `convzoo.train.Trainer` runs for every network whose model card says
``task="segmentation"``: ``convzoo train unet --data scenes --image-size 64`` trains one with checkpoints, curves and
report like any classifier. Its batches carry the data set's ``masks`` extra (N, H, W): the class of every pixel,
`IGNORE_INDEX` (255) where a pixel is unlabelled or was padded in by a random crop.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn

from convzoo.data.transforms import IGNORE_INDEX
from convzoo.segmentation.losses import center_crop_mask, segmentation_loss
from convzoo.segmentation.metrics import SegmentationMetrics, check_mask_values
from convzoo.train.tasks import Batch, Curve, Metrics, StepOutput, Task, register_task

__all__ = ["SegmentationTask"]


class SegmentationTask(Task):
    """Semantic segmentation: per-pixel cross-entropy plus a soft Dice loss, pixel accuracy and IoU.

    The network returns logits (N, C, h, w). For padded networks (FCN, the padded U-Net) h, w are the input's size;
    for networks of valid convolutions (the original U-Net) they are smaller, and the target mask is cropped to its
    centre region of that size.

    Training reports the mean loss, the pixel error and the mean IoU of the training batches as they were trained
    on; evaluation the plain cross-entropy per labelled pixel, pixel accuracy and error (percent), the mean IoU and the
    IoU of every class (``iou_<class index>``, in [0, 1]), all from a confusion matrix summed over the test set (and
    over processes). A class absent from both the truth and the prediction has no IoU (NaN) and is left out of the
    mean. The best mean IoU picks ``best.pt``.

    The loss is the mean cross-entropy of the labelled pixels plus ``dice_weight`` (1 by default, as nnU-Net's
    default loss) times the soft multi-class Dice loss (`convzoo.segmentation.losses.dice_loss`). Cross-entropy alone
    is dominated by the large classes, the background above all; the Dice term weighs every class alike. On the
    scenes (shapes cover a tenth of the pixels) it made a small U-Net reach a mean IoU of 0.97 in 10 epochs where
    cross-entropy alone was at 0.71 after 12 (docs/segmentation.md). ``dice_weight=0`` gives cross-entropy alone.

    The recipe's label smoothing applies to the cross-entropy of training, as for classification (the ``quick``
    recipe's 0.1 keeps the training loss above the test loss); the Dice term and every evaluation metric use the
    hard labels.

    Args:
        label_smoothing: Label smoothing of the training cross-entropy.
        num_classes: The number of classes, background included (None: the logits' channels).
        dice_weight: Weight of the soft Dice loss added to the cross-entropy (0: cross-entropy alone).
        ignore_index: The label of pixels that count in neither loss nor metrics.
        classes: Class names, to name the per-class IoU in the report (None: class indices).
    """

    best_metric = "miou"
    higher_is_better = True
    curves = (
        Curve("loss", "loss", "cross-entropy per pixel"),
        Curve("miou", "mean IoU", "mean IoU"),
        Curve("pixel_err", "pixel error", "pixel error (%)", log=True),
    )
    extras = ("masks",)
    measures_step_format = False

    def __init__(
        self,
        *,
        label_smoothing: float = 0.0,
        num_classes: int | None = None,
        dice_weight: float = 1.0,
        ignore_index: int = IGNORE_INDEX,
        classes: Sequence[str] | None = None,
    ) -> None:
        if dice_weight < 0 or not math.isfinite(dice_weight):
            raise ValueError(f"dice_weight must be a non-negative number; got {dice_weight}")
        if not 0 <= label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1); got {label_smoothing}")
        self.label_smoothing = float(label_smoothing)
        self.num_classes = num_classes
        self.dice_weight = float(dice_weight)
        self.ignore_index = ignore_index
        self.classes = list(classes) if classes is not None else None
        if self.dice_weight:
            loss = Curve("loss", "loss", f"loss (training: CE + {self.dice_weight:g} x Dice; test: CE)")
            self.curves = (loss, *type(self).curves[1:])

    def targets(self, images: torch.Tensor, masks: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """The masks of a batch checked against its images and the logits, and cropped to the logits' size.

        Raises:
            TypeError: Logits that are not a tensor (N, C, h, w).
            ValueError: Masks of another size than their images, class values out of range, or logits that are
                neither the input's size nor a centre crop of it.
        """
        if not isinstance(logits, torch.Tensor) or logits.dim() != 4:
            shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise TypeError(f"a segmentation network must return logits (N, classes, H, W); got {shape}")
        if masks.dim() != 3 or masks.shape[0] != images.shape[0] or masks.shape[-2:] != images.shape[-2:]:
            raise ValueError(
                f"masks of shape {tuple(masks.shape)} for images of {tuple(images.shape)}: each mask must be the "
                f"size of its image, (N, H, W)"
            )
        num_classes = self.num_classes or logits.shape[1]
        if logits.shape[1] != num_classes:
            raise ValueError(f"the network returns {logits.shape[1]} classes; the task has {num_classes}")
        check_mask_values(masks, num_classes, "masks", ignore_index=self.ignore_index)
        return center_crop_mask(masks, tuple(logits.shape[-2:]))

    def train_step(self, model: nn.Module, batch: Batch) -> StepOutput:
        x, _, masks = batch
        logits = model(x)
        targets = self.targets(x, masks, logits)
        loss = segmentation_loss(
            logits,
            targets,
            dice_weight=self.dice_weight,
            label_smoothing=self.label_smoothing,
            ignore_index=self.ignore_index,
        )
        return StepOutput(loss, (logits.detach(), targets))

    def eval_step(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        x, _, masks = batch
        logits = model(x)
        return logits.float(), self.targets(x, masks, logits)

    def train_metrics(self) -> Metrics:
        return SegmentationMetrics(self.num_classes, per_class=False, ignore_index=self.ignore_index)

    def eval_metrics(self) -> Metrics:
        return SegmentationMetrics(self.num_classes, ignore_index=self.ignore_index)

    def columns(self, train: dict[str, float], test: dict[str, float]) -> dict[str, float]:
        per_class = {f"test_{k}": v for k, v in test.items() if k.startswith("iou_")}
        return {
            "train_loss": train["loss"],
            "train_pixel_err": train["pixel_err"],
            "train_miou": train["miou"],
            "test_loss": test["loss"],
            "test_pixel_acc": test["pixel_acc"],
            "test_pixel_err": test["pixel_err"],
            "test_miou": test["miou"],
            **per_class,
        }

    def describe(self, row: dict[str, Any]) -> str:
        return (
            f"train loss {row['train_loss']:.4f} pixel err {row['train_pixel_err']:5.2f}%  test loss "
            f"{row['test_loss']:.4f} pixel acc {row['test_pixel_acc']:5.2f}% mIoU {row['test_miou']:.4f}"
        )

    def report(self, last: dict[str, Any], best: float) -> list[tuple[str, str]]:
        per_class = [
            (f"final test IoU of {self._class_name(int(k.removeprefix('test_iou_')))}", f"{v:.4f}")
            for k, v in last.items()
            if k.startswith("test_iou_")
        ]
        return [
            ("final test mean IoU", f"{last['test_miou']:.4f}"),
            ("best test mean IoU", f"{best:.4f}"),
            ("final test pixel accuracy", f"{last['test_pixel_acc']:.2f}%"),
            *per_class,
            ("final training loss", f"{last['train_loss']:.4f}"),
        ]

    def _class_name(self, index: int) -> str:
        if self.classes is not None and index < len(self.classes):
            return f"{self.classes[index]} ({index})"
        return f"class {index}"


register_task("segmentation", SegmentationTask)
