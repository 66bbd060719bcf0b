"""The training task of the detectors: padded box rows in, summed losses out, COCO mAP to pick the best checkpoint.

Batches carry the data set's padded extras (``boxes`` (N, K, 4) with ``box_labels`` (N, K), -1 on padding rows;
``instance_masks`` (N, K, H, W) for mask models; ``proposals`` (N, P, 4), zero rows as padding, for detectors without
an RPN). The task turns them into torchvision-style per-image targets, trains on the sum of the detector's loss dict
(logging each loss) and evaluates with `convzoo.detection.evaluate.DetectionEvaluator`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn

from convzoo.train.tasks import Batch, Curve, Metrics, Reduce, StepOutput, Task, register_task

__all__ = ["DetectionTask", "detection_task", "split_targets"]

DEFAULT_NEEDS = ("boxes", "box_labels")


def split_targets(
    boxes: torch.Tensor, labels: torch.Tensor, masks: torch.Tensor | None = None
) -> list[dict[str, torch.Tensor]]:
    """Per-image target dicts from padded rows: the rows with a label of 0 or more are objects.

    Args:
        boxes: (N, K, 4) boxes.
        labels: (N, K) classes, -1 on padding rows.
        masks: (N, K, H, W) instance masks, or None.
    """
    if boxes.dim() != 3 or labels.shape != boxes.shape[:2]:
        raise ValueError(
            f"boxes must be (N, K, 4) and box_labels (N, K); got {tuple(boxes.shape)}, {tuple(labels.shape)}"
        )
    out = []
    for i in range(boxes.shape[0]):
        keep = labels[i] >= 0
        target = {"boxes": boxes[i][keep].float(), "labels": labels[i][keep].long()}
        if masks is not None:
            target["masks"] = masks[i][keep].bool()
        out.append(target)
    return out


def split_proposals(proposals: torch.Tensor) -> list[torch.Tensor]:
    """Per-image (P_i, 4) proposals from zero-padded (N, P, 4) rows (a row without area is padding)."""
    keep = (proposals[..., 2] > proposals[..., 0]) & (proposals[..., 3] > proposals[..., 1])
    return [p[k].float() for p, k in zip(proposals, keep)]


class _Losses(Metrics):
    """Image-weighted means of every loss of the detector's loss dict, and of their sum (``loss``)."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = {}
        self.images = 0

    def reset(self) -> None:
        self.totals, self.images = {}, 0

    def add(self, losses: dict[str, float], n: int) -> None:
        for k, v in {"loss": sum(losses.values()), **losses}.items():
            self.totals[k] = self.totals.get(k, 0.0) + v * n
        self.images += n

    def update(self, batch: Batch, outputs: Any, loss: float | None = None) -> None:
        self.add(outputs, len(batch[0]))

    def compute(self, reduce: Reduce = lambda v: v) -> dict[str, float]:
        keys = sorted(self.totals)
        values = reduce([self.totals[k] for k in keys] + [float(self.images)])
        n = max(1.0, values[-1])
        return {k: v / n for k, v in zip(keys, values[:-1])}

    def progress(self) -> dict[str, str]:
        return {}


class _Detections(Metrics):
    """COCO box mAP (and mask mAP for mask models) over the evaluation set, with the mean test losses.

    The evaluator keeps every image's matches, which do not add up over processes: a distributed evaluation reports
    each process's share.
    """

    def __init__(self, task: DetectionTask) -> None:
        self.task = task
        self.losses = _Losses()
        self.evaluators: dict[str, Any] = {}

    def reset(self) -> None:
        self.losses.reset()
        self.evaluators = {}

    def _evaluators(self, masks: bool) -> dict[str, Any]:
        if not self.evaluators:
            from convzoo.detection.evaluate import DetectionEvaluator

            if self.task.num_classes is None:
                raise ValueError("the detection task does not know the number of classes; evaluate with eval_step")
            self.evaluators["box"] = DetectionEvaluator(self.task.num_classes, iou_type="bbox")
            if masks:
                self.evaluators["mask"] = DetectionEvaluator(self.task.num_classes, iou_type="segm")
        return self.evaluators

    def update(self, batch: Batch, outputs: Any, loss: float | None = None) -> None:
        detections, losses = outputs
        targets = self.task.targets(batch)
        masks = "masks" in targets[0] if targets else False
        for evaluator in self._evaluators(masks and all("masks" in d for d in detections)).values():
            evaluator.update(detections, targets)
        if losses:
            self.losses.add(losses, len(batch[0]))

    def compute(self, reduce: Reduce = lambda v: v) -> dict[str, float]:
        out: dict[str, float] = {}
        if self.losses.images:
            out |= self.losses.compute(reduce)
        for kind, evaluator in self.evaluators.items():
            evaluator.gather()  # a distributed run: every process's images, so all report the whole test set
            result = evaluator.compute()
            prefix = "" if kind == "box" else "mask_"
            out |= {f"{prefix}{k}": result[k] for k in ("map", "ap50", "ap75")}
            if kind == "box":
                out |= {f"ap_class{c + 1}": v for c, v in enumerate(result["ap_per_class"])}
                out["n"] = result["n_images"]
        return out


class DetectionTask(Task):
    """Detection: the sum of the detector's losses; COCO mAP@[.5:.95] picks the best checkpoint.

    Args:
        needs: The data set extras the batches carry after the labels, in this order: ``boxes`` and ``box_labels``,
            then ``instance_masks`` (mask models) and/or ``proposals`` (detectors without an RPN). A detector class
            states its own as ``needs`` (see `DetectionTask.for_model`).
        num_classes: Classes including the background; None: read from the model at the first evaluation step.
    """

    best_metric = "map"
    higher_is_better = True
    curves = (
        Curve("loss", "loss", "sum of the detection losses"),
        Curve("map", "mAP@[.5:.95]", "COCO mAP@[.5:.95] (test set)"),
        Curve("ap50", "AP50", "AP at IoU 0.5 (test set)"),
    )
    measures_step_format = False
    max_proposals = 2000  # R-CNN's and Fast R-CNN's selective-search boxes per image (Girshick 2015: about 2,000)

    def __init__(self, needs: Sequence[str] = DEFAULT_NEEDS, *, num_classes: int | None = None) -> None:
        needs = tuple(needs)
        if needs[:2] != DEFAULT_NEEDS or not set(needs[2:]) <= {"instance_masks", "proposals"}:
            raise ValueError(
                f"a detection task needs ('boxes', 'box_labels') first, then optionally 'instance_masks' and "
                f"'proposals'; got {needs}"
            )
        self.extras = needs  # the Trainer asks the loaders for these
        self.num_classes = num_classes

    @classmethod
    def for_model(cls, model: nn.Module | str, *, num_classes: int | None = None) -> DetectionTask:
        """The task of a detector (or of a registered detector's name), with the extras its class ``needs``."""
        if isinstance(model, str):
            from convzoo.factory import create_model

            with torch.device("meta"):  # only the class matters; no weights are made
                model = create_model(model)
        return cls(getattr(model, "needs", DEFAULT_NEEDS), num_classes=num_classes)

    def prepare_data(self, dataset: Any) -> Any:
        """The split with selective-search proposals (``extras["proposals"]``) when the detector needs them and the
        data has none: Fast R-CNN takes its regions from outside, computed once here, with a progress bar."""
        if "proposals" in self.extras and "proposals" not in dataset.extras:
            from convzoo.detection.selective_search import add_proposals

            print(f"computing selective-search proposals for {len(dataset)} images of {dataset.name}", flush=True)
            return add_proposals(dataset, max_proposals=self.max_proposals)
        return dataset

    # -- batches ---------------------------------------------------------------------------------------------------

    def _extra(self, batch: Batch, name: str) -> torch.Tensor | None:
        return batch[2 + self.extras.index(name)] if name in self.extras else None

    def targets(self, batch: Batch) -> list[dict[str, torch.Tensor]]:
        """Per-image targets of a batch (images, labels, *extras)."""
        if len(batch) != 2 + len(self.extras):
            raise ValueError(
                f"a detection batch holds images, labels and the extras {self.extras}; got {len(batch)} tensors"
            )
        return split_targets(batch[2], batch[3], self._extra(batch, "instance_masks"))

    def proposals(self, batch: Batch) -> list[torch.Tensor] | None:
        """Per-image proposals of a batch, or None when the task has none."""
        padded = self._extra(batch, "proposals")
        return None if padded is None else split_proposals(padded)

    def _kwargs(self, batch: Batch) -> dict[str, Any]:
        proposals = self.proposals(batch)
        return {} if proposals is None else {"proposals": proposals}

    # -- steps -----------------------------------------------------------------------------------------------------

    def check_model(self, model: nn.Module) -> None:
        """Raise a ValueError if ``model`` needs extras the task does not load."""
        inner = getattr(model, "module", model)  # DistributedDataParallel, torch.compile
        inner = getattr(inner, "_orig_mod", inner)
        missing = [n for n in getattr(inner, "needs", DEFAULT_NEEDS) if n not in self.extras]
        if missing:
            name = getattr(inner, "model_name", type(inner).__name__)
            raise ValueError(
                f"{name} trains on the data set extras {list(missing)}, which this task does not load (it loads "
                f"{list(self.extras)}); use DetectionTask.for_model({name!r})"
            )

    def train_step(self, model: nn.Module, batch: Batch) -> StepOutput:
        self.check_model(model)
        losses = model(batch[0], self.targets(batch), **self._kwargs(batch))
        if not isinstance(losses, dict) or not losses:
            raise TypeError(f"a detector in training mode must return a dict of losses; got {type(losses).__name__}")
        loss = sum(losses.values())
        return StepOutput(loss, {k: v.detach().item() for k, v in losses.items()})

    def eval_step(self, model: nn.Module, batch: Batch) -> tuple[list[dict[str, torch.Tensor]], dict[str, float]]:
        if self.num_classes is None:
            self.num_classes = getattr(model, "num_classes", None)
        kwargs = self._kwargs(batch)
        run = getattr(model, "run", None)
        if run is not None:
            detections, losses = run(batch[0], self.targets(batch), **kwargs)
        else:
            detections, losses = model(batch[0], **kwargs), {}
        detections = [{k: v.detach().float().cpu() for k, v in d.items()} for d in detections]
        for d in detections:
            d["labels"] = d["labels"].long()
        return detections, {k: v.item() for k, v in losses.items()}

    def train_metrics(self) -> Metrics:
        return _Losses()

    def eval_metrics(self) -> Metrics:
        return _Detections(self)

    # -- reporting -------------------------------------------------------------------------------------------------

    def describe(self, row: dict[str, Any]) -> str:
        parts = [f"train loss {row.get('train_loss', math.nan):.4f}"]
        if "test_loss" in row:
            parts.append(f"test loss {row['test_loss']:.4f}")
        for key, name in (("map", "mAP"), ("ap50", "AP50"), ("ap75", "AP75"), ("mask_map", "mask mAP")):
            if f"test_{key}" in row:
                parts.append(f"{name} {row[f'test_{key}']:.3f}")
        return "  ".join(parts)

    def report(self, last: dict[str, Any], best: float) -> list[tuple[str, str]]:
        rows = [
            (f"final test {name}", f"{last[f'test_{key}']:.4f}")
            for key, name in (("map", "mAP@[.5:.95]"), ("ap50", "AP50"), ("ap75", "AP75"), ("mask_map", "mask mAP"))
            if f"test_{key}" in last
        ]
        return [*rows, ("best test mAP@[.5:.95]", f"{best:.4f}"), ("final training loss", f"{last['train_loss']:.4f}")]


def detection_task(
    *, label_smoothing: float = 0.0, num_classes: int | None = None, model: str | None = None
) -> DetectionTask:
    """The factory `convzoo.train.tasks.task_for` calls for a model card with ``task="detection"``.

    Label smoothing does not apply to detection and is ignored. With ``model`` (a registered name) the task asks
    for the extras that detector needs; without it, boxes and labels only.
    """
    del label_smoothing
    if model is not None:
        return DetectionTask.for_model(model, num_classes=num_classes)
    return DetectionTask(num_classes=num_classes)


register_task("detection", detection_task)
