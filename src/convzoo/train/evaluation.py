"""Evaluating a model over a loader with a task's metrics."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from convzoo.train.tasks import Batch, ClassificationTask, Reduce, Task
from convzoo.train.tuning import autocast

__all__ = ["evaluate", "to_channels_last"]


def to_channels_last(batch: Batch) -> Batch:
    """The batch with its images in the channels-last memory format."""
    x, *rest = batch
    return (x.contiguous(memory_format=torch.channels_last), *rest)


def evaluate(
    model: nn.Module,
    loader: Any,
    *,
    device: torch.device,
    amp: str = "off",
    channels_last: bool = False,
    task: Task | None = None,
    reduce: Reduce | None = None,
) -> dict[str, float]:
    """The evaluation metrics of ``task`` for ``model`` over ``loader``.

    For the default `ClassificationTask`: top-1 and top-5 accuracy (percent), mean cross-entropy and the number of
    images, as ``top1``, ``top5``, ``loss`` and ``n``.

    Args:
        model: The network.
        loader: The evaluation batches (of a distributed run: this process's share of them).
        device: Where the batches are.
        amp: Autocast precision: ``"off"``, ``"bf16"`` or ``"fp16"``.
        channels_last: Feed the images in the channels-last memory format.
        task: What the metrics are; default: classification.
        reduce: Sums numbers over the processes of a distributed run, each of which evaluated its own share, so
            every process gets the metrics of the whole set; None: this process's batches only.

    Raises:
        ValueError: The loader (of every process) yields no images.
    """
    task = task or ClassificationTask()
    metrics = task.eval_metrics()
    was_training = model.training
    model.eval()
    images = 0
    with torch.no_grad():
        for batch in loader:
            if channels_last:
                batch = to_channels_last(batch)
            with autocast(device, amp):
                outputs = task.eval_step(model, batch)
            metrics.update(batch, outputs)
            images += len(batch[0])
    model.train(was_training)
    reduce = reduce or _unreduced
    (images,) = reduce([images])
    if images == 0:
        raise ValueError("the evaluation data set is empty")
    return metrics.compute(reduce)


def _unreduced(values: list[float]) -> list[float]:
    return values
