"""What a training run learns and how it is measured, apart from the loop that runs it.

The `Trainer` runs one loop for every task: it feeds batches, steps the optimiser, checkpoints and writes the run
folder. A `Task` says what differs: how a batch becomes a loss, which metrics an epoch reports for training and
evaluation, and which evaluation metric picks ``best.pt``. `ClassificationTask` is the default; `task_for` gives
the task of a registered network's card (segmentation and detection register theirs with `register_task`).
"""

from __future__ import annotations

import importlib
import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn as nn

from convzoo.models.base import classification_loss, main_logits

__all__ = [
    "Batch",
    "ClassificationTask",
    "Curve",
    "Metrics",
    "StepOutput",
    "SumMetrics",
    "Task",
    "register_task",
    "task_for",
]

Batch = tuple[torch.Tensor, Any]
"""What a loader yields: images first, then the targets in whatever form the task reads them."""

Reduce = Callable[[list[float]], list[float]]
"""Sums numbers over the processes of a distributed run (the identity on one process)."""


def _unreduced(values: list[float]) -> list[float]:
    return values


@dataclass
class StepOutput:
    """What a training step's forward pass produced.

    Attributes:
        loss: The scalar the optimiser minimises.
        outputs: The model's outputs, as the task's training metrics read them.
    """

    loss: torch.Tensor
    outputs: Any


@dataclass(frozen=True)
class Curve:
    """One panel of ``curves.png``: the training and test values of a metric against epochs.

    Attributes:
        key: The metric, as in the ``train_<key>`` and ``test_<key>`` columns of metrics.csv.
        name: How the legend names it ("training <name>", "test <name>").
        ylabel: The y axis label.
        log: A logarithmic y axis; values below ``run_folder.LOG_FLOOR`` (a 0% error) are drawn at that floor.
    """

    key: str
    name: str
    ylabel: str
    log: bool = False


class Metrics(ABC):
    """Metrics of one epoch, accumulated batch by batch.

    ``compute`` takes a ``reduce`` that sums numbers over the processes of a distributed run, so a metric that keeps
    sums (see `SumMetrics`) reports the whole run's value on every process.
    """

    @abstractmethod
    def reset(self) -> None:
        """Forget every batch seen so far."""

    @abstractmethod
    def update(self, batch: Batch, outputs: Any, loss: float | None = None) -> None:
        """Account for one batch.

        Args:
            batch: The batch as the loader yielded it.
            outputs: What the task's step returned for it.
            loss: The training loss of the batch (None in evaluation).
        """

    @abstractmethod
    def compute(self, reduce: Reduce = _unreduced) -> dict[str, float]:
        """The epoch's metrics by name."""

    def progress(self) -> dict[str, str]:
        """Running values for the progress bar, already formatted."""
        return {}


class SumMetrics(Metrics):
    """Metrics derived from running sums, which add up over processes exactly as over batches.

    Subclasses name their sums in ``sums``, add to ``self.totals`` in ``update`` and turn the totals into metrics in
    ``summarise``.
    """

    sums: ClassVar[tuple[str, ...]]

    def __init__(self) -> None:
        self.totals: dict[str, float] = {}
        self.reset()

    def reset(self) -> None:
        self.totals = dict.fromkeys(self.sums, 0.0)

    def compute(self, reduce: Reduce = _unreduced) -> dict[str, float]:
        return self.summarise(dict(zip(self.sums, reduce(list(self.totals.values())))))

    @abstractmethod
    def summarise(self, totals: dict[str, float]) -> dict[str, float]:
        """The metrics of the summed ``totals``."""


class Task(ABC):
    """What a run learns: loss, metrics and the metric that picks the best checkpoint.

    Attributes:
        best_metric: The evaluation metric (a key of ``eval_metrics().compute()``) that picks ``best.pt``; a
            reduce-on-plateau schedule follows it too.
        higher_is_better: Whether a higher ``best_metric`` is better.
        curves: The panels of ``curves.png``.
        criterion: A loss of (logits, class labels) the network is timed with when the step format is measured;
            None times it with cross-entropy, which serves any network whose speed lies in its layers.
        extras: Per-image extras of the data set (``ArrayDataset.extras``) that the batches must carry after the
            labels, e.g. ``("masks",)`` for segmentation.
        measures_step_format: Whether the training step's precision and memory format may be chosen by timing a
            classification step; a task whose network takes other targets trains in float32 unless told otherwise.
    """

    best_metric: ClassVar[str]
    higher_is_better: ClassVar[bool] = True
    curves: ClassVar[tuple[Curve, ...]] = (Curve("loss", "loss", "loss"),)
    criterion: nn.Module | None = None
    extras: ClassVar[tuple[str, ...]] = ()
    measures_step_format: ClassVar[bool] = True

    @abstractmethod
    def train_step(self, model: nn.Module, batch: Batch) -> StepOutput:
        """The forward pass of a training batch (run under the step's autocast) and its loss."""

    @abstractmethod
    def eval_step(self, model: nn.Module, batch: Batch) -> Any:
        """The outputs of an evaluation batch (run under autocast and ``torch.no_grad``), for ``eval_metrics``."""

    @abstractmethod
    def train_metrics(self) -> Metrics:
        """Fresh metrics of a training epoch."""

    @abstractmethod
    def eval_metrics(self) -> Metrics:
        """Fresh metrics of an evaluation, which must include ``best_metric``."""

    def keep_frozen(self, model: nn.Module) -> None:
        """Put back in evaluation mode the parts of ``model`` that do not train, after the `Trainer` has put the whole
        network in training mode at the start of an epoch.

        A frozen part is a module whose parameters all have ``requires_grad`` off (and that has some): its batch norms
        keep the statistics they were trained with and its dropout stays off, as a frozen feature extractor must.
        Parameter-free layers inside a part that trains (activations, dropout between trained layers) keep training
        mode. The default does nothing to a network that trains whole.
        """
        params = list(model.parameters(recurse=True))
        if params and not any(p.requires_grad for p in params):
            model.eval()
            return
        for child in model.children():
            self.keep_frozen(child)

    def prepare_data(self, dataset: Any) -> Any:
        """The split ``dataset`` with whatever the task adds to it before training (e.g. region proposals of a
        detector without a proposal network); by default the split itself."""
        return dataset

    def lr_scale(self, name: str) -> float:
        """The factor of the recipe's learning rate for the parameter ``name`` (a name in ``model.named_parameters``);
        1 by default. Fine-tuning gives the pretrained backbone a lower rate than the new head."""
        return 1.0

    def is_better(self, value: float, best: float | None) -> bool:
        """Whether ``value`` of ``best_metric`` improves on the best so far (None: nothing yet)."""
        return best is None or (value > best if self.higher_is_better else value < best)

    def columns(self, train: dict[str, float], test: dict[str, float]) -> dict[str, float]:
        """The epoch's columns of metrics.csv: ``train_<name>`` and ``test_<name>`` for every metric but ``n``."""
        return {f"train_{k}": v for k, v in train.items()} | {f"test_{k}": v for k, v in test.items() if k != "n"}

    def describe(self, row: dict[str, Any]) -> str:
        """The metrics of an epoch's row of metrics.csv, for the log."""
        return "  ".join(f"{k.replace('_', ' ')} {v:.4g}" for k, v in row.items() if k.startswith(("train_", "test_")))

    def report(self, last: dict[str, Any], best: float) -> list[tuple[str, str]]:
        """Rows of report.md's results table, from the last row of metrics.csv and the best ``best_metric``."""
        rows = [(f"final {k.replace('_', ' ')}", f"{v:.4g}") for k, v in last.items() if k.startswith("test_")]
        return [*rows, (f"best test {self.best_metric}", f"{best:.4g}")]


class _TrainAccuracy(SumMetrics):
    sums = ("loss", "correct", "seen")

    def update(self, batch: Batch, outputs: Any, loss: float | None = None) -> None:
        y = batch[1]
        self.totals["loss"] += loss * y.numel()
        self.totals["correct"] += main_logits(outputs).detach().argmax(1).eq(y).sum().item()
        self.totals["seen"] += y.numel()

    def summarise(self, totals: dict[str, float]) -> dict[str, float]:
        seen = max(1, totals["seen"])
        return {"loss": totals["loss"] / seen, "err": 100 - 100 * totals["correct"] / seen}

    def progress(self) -> dict[str, str]:
        return {"err": f"{100 - 100 * self.totals['correct'] / self.totals['seen']:.1f}%"}


class _EvalAccuracy(SumMetrics):
    sums = ("correct1", "correct5", "loss", "n")

    def update(self, batch: Batch, outputs: Any, loss: float | None = None) -> None:
        y = batch[1]
        self.totals["loss"] += nn.functional.cross_entropy(outputs, y, reduction="sum").item()
        hits = outputs.topk(min(5, outputs.shape[1]), dim=1).indices.eq(y[:, None])
        self.totals["correct1"] += hits[:, 0].sum().item()
        self.totals["correct5"] += hits.any(dim=1).sum().item()
        self.totals["n"] += y.numel()

    def summarise(self, totals: dict[str, float]) -> dict[str, float]:
        n = totals["n"]
        return {
            "top1": 100.0 * totals["correct1"] / n,
            "top5": 100.0 * totals["correct5"] / n,
            "loss": totals["loss"] / n,
            "n": int(n),
        }


class ClassificationTask(Task):
    """Image classification: cross-entropy with the network's weighted auxiliary losses, top-1 and top-5 accuracy.

    Training reports the mean loss and the error of the main logits; evaluation the top-1 and top-5 accuracy in
    percent and the mean cross-entropy of the main logits, without label smoothing. The best top-1 accuracy picks
    ``best.pt``.

    With 5 classes or fewer every image is a top-5 hit, so the log and the report leave top-5 out; metrics.csv keeps
    its ``test_top5`` column (100) so that its columns are the same for every data set.

    Args:
        label_smoothing: Label smoothing of the training loss.
        num_classes: The number of classes (None: unknown; the `Trainer` sets it from the data).
    """

    best_metric = "top1"
    higher_is_better = True
    curves = (Curve("err", "error", "error (%)", log=True), Curve("loss", "loss", "cross-entropy"))

    def __init__(self, *, label_smoothing: float = 0.0, num_classes: int | None = None) -> None:
        self.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.num_classes = num_classes

    @property
    def shows_top5(self) -> bool:
        """Whether top-5 accuracy says anything: more than 5 classes (or an unknown number)."""
        return self.num_classes is None or self.num_classes > 5

    def train_step(self, model: nn.Module, batch: Batch) -> StepOutput:
        x, y = batch
        output = model(x)
        return StepOutput(classification_loss(output, y, self.criterion), output)

    def eval_step(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        return main_logits(model(batch[0])).float()

    def train_metrics(self) -> Metrics:
        return _TrainAccuracy()

    def eval_metrics(self) -> Metrics:
        return _EvalAccuracy()

    def columns(self, train: dict[str, float], test: dict[str, float]) -> dict[str, float]:
        return {
            "train_loss": train["loss"],
            "train_err": train["err"],
            "test_loss": test["loss"],
            "test_top1": test["top1"],
            "test_top5": test["top5"],
            "test_err": 100 - test["top1"],
        }

    def describe(self, row: dict[str, Any]) -> str:
        return (
            f"train loss {row['train_loss']:.4f} err {row['train_err']:5.2f}%  test loss {row['test_loss']:.4f} err "
            f"{row['test_err']:5.2f}%" + (f" (top-5 err {100 - row['test_top5']:.2f}%)" if self.shows_top5 else "")
        )

    def report(self, last: dict[str, Any], best: float) -> list[tuple[str, str]]:
        top5 = [("final test top-5 error", f"{100 - last['test_top5']:.2f}%")] if self.shows_top5 else []
        return [
            ("final test error", f"{last['test_err']:.2f}%"),
            *top5,
            ("best test accuracy", f"{best:.2f}%"),
            ("final training error", f"{last['train_err']:.2f}%"),
        ]


TaskFactory = Callable[..., Task]
"""Builds a task: called with ``label_smoothing`` (the recipe's) and ``num_classes`` (the data's), and with
``model`` (the registered name) when it has a parameter of that name."""

_TASKS: dict[str, TaskFactory] = {"classification": ClassificationTask}


def register_task(kind: str, factory: TaskFactory) -> None:
    """Make ``factory`` the training task of the networks whose model card says ``task=kind``.

    Raises:
        ValueError: ``kind`` already has a task.
    """
    if kind in _TASKS:
        raise ValueError(f"the {kind!r} task is already registered")
    _TASKS[kind] = factory


def task_for(model: str, *, label_smoothing: float = 0.0, num_classes: int | None = None) -> Task:
    """The training task of the registered network ``model``, from its card's ``task``.

    Raises:
        KeyError: An unknown model name (with close matches).
    """
    from convzoo.registry import get_model_card

    kind = get_model_card(model).task
    if kind not in _TASKS:
        importlib.import_module(f"convzoo.{kind}")  # the package registers its task when imported
    factory = _TASKS[kind]
    # A factory that takes the model's name may fit the task to it (a detector's extra inputs).
    named = {"model": model} if "model" in inspect.signature(factory).parameters else {}
    return factory(label_smoothing=label_smoothing, num_classes=num_classes, **named)
