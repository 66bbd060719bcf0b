"""What a training run reports: its result, the state passed to callbacks after each step, one epoch's outcome."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from convzoo.train.tasks import Metrics

__all__ = ["EpochResult", "RunResult", "StepState", "TrainingDiverged"]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass
class RunResult:
    """What a finished (or stopped) run produced.

    Attributes:
        out: The run folder.
        epochs_done: Epochs finished.
        steps_done: Optimiser steps done.
        test_top1: Top-1 accuracy (percent) after the last epoch, when the task measures it.
        test_top5: Top-5 accuracy (percent) after the last epoch, when the task measures it.
        best_top1: The best top-1 accuracy of any epoch, when the task measures it.
        seconds: Wall time of the loop.
        stopped_early: Whether Ctrl-C or a callback stopped the run (resume it with ``resume=True``).
        history: One row of metrics.csv per epoch.
        best: The best value of the task's ``best_metric``, the one ``best.pt`` holds.
        is_main: Whether this is the process that writes and prints (rank 0 of a distributed run; the metrics are
            the same on every process, reduced over all of them).
    """

    out: Path
    epochs_done: int
    steps_done: int
    test_top1: float | None
    test_top5: float | None
    best_top1: float | None
    seconds: float
    stopped_early: bool
    history: list[dict[str, Any]]
    best: float | None = None
    is_main: bool = True


@dataclass
class StepState:
    """Passed to callbacks after every optimiser step."""

    epoch: int
    step: int
    loss: float
    lr: float
    trainer: Any  # the `convzoo.train.Trainer` running the step

    def request_stop(self) -> None:
        """Save a checkpoint at this step and stop, as Ctrl-C does."""
        self.trainer.stop_requested = True


@dataclass(frozen=True)
class EpochResult:
    """One pass over the training data, whole or cut short by a stop request.

    Attributes:
        step: Optimiser steps done in the run after the pass.
        step_in_epoch: Batches of the epoch done, those a resumed pass skipped included.
        finished: Whether the epoch (or the run) reached its end; False when stopped mid-epoch.
        samples: Training images this process saw.
        seconds: Wall time of the pass.
        metrics: The task's training metrics of the pass, not yet reduced over processes.
    """

    step: int
    step_in_epoch: int
    finished: bool
    samples: int
    seconds: float
    metrics: Metrics
