"""The distillation loss and the task that trains a student on it (Hinton, Vinyals and Dean 2015).

The student learns from the teacher's soft targets at temperature T, mixed with the hard labels:

    loss = alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE(student, labels)

``alpha`` is the weight of the soft (teacher) term and ``1 - alpha`` that of the hard labels: ``alpha=1`` learns from
the teacher alone, ``alpha=0`` is normal training. The soft term always keeps its T^2 factor, also when the hard term
is switched off: the gradient of the KL term with respect to the student's logits is ``(p_student - p_teacher) / T``
per image, so without T^2 raising the temperature would shrink the teacher's signal by 1/T^2 (Hinton et al.,
section 2). Implementations that apply T^2 only inside the mixed branch silently train a pure distillation run with a
learning rate T^2 too small.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from convzoo.models.base import classification_loss, main_logits
from convzoo.train.tasks import Batch, ClassificationTask, Curve, StepOutput

__all__ = ["TEACHER_LOGITS", "DistillationTask", "check_distillation_settings", "distillation_loss", "soft_target_loss"]

TEACHER_LOGITS = "teacher_logits"
"""The name of the per-image extra of a training set that holds the teacher's precomputed logits."""


def check_distillation_settings(temperature: float, alpha: float) -> None:
    """Refuse a temperature or a soft-target weight that has no meaning.

    Raises:
        ValueError: ``temperature`` is not a positive number, or ``alpha`` lies outside [0, 1].
    """
    if not isinstance(temperature, (int, float)) or not temperature > 0 or temperature == float("inf"):
        raise ValueError(f"the temperature must be a positive number (Hinton et al. use 1 to 20); got {temperature}")
    if not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
        raise ValueError(
            f"alpha, the weight of the teacher's soft targets, must lie in [0, 1] (1 - alpha weighs the hard labels; "
            f"0 is normal training, 1 learns from the teacher alone); got {alpha}"
        )


def soft_target_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 * KL(softmax(teacher / T) || softmax(student / T))``, averaged over the batch, in float32.

    Computed outside autocast: in bfloat16 the softmax of logits divided by a large T rounds the small differences
    between classes that the soft targets are made of.

    Args:
        student_logits: The student's logits (N, classes).
        teacher_logits: The teacher's logits (N, classes) for the same images.
        temperature: T; the T^2 factor keeps the gradient's scale independent of it.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and teacher logits {tuple(teacher_logits.shape)} differ in "
            f"shape; teacher and student must predict the same classes"
        )
    with torch.autocast(student_logits.device.type, enabled=False):
        log_student = F.log_softmax(student_logits.float() / temperature, dim=1)
        log_teacher = F.log_softmax(teacher_logits.detach().float() / temperature, dim=1)
        kl = F.kl_div(log_student, log_teacher, reduction="batchmean", log_target=True)
    return temperature * temperature * kl


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    temperature: float = 4.0,
    alpha: float = 0.9,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """``alpha * T^2 * KL(teacher || student at T) + (1 - alpha) * CE(student, labels)``, in float32.

    Args:
        student_logits: The student's logits (N, classes).
        teacher_logits: The teacher's logits (N, classes).
        labels: The class labels (N,).
        temperature: T of the soft targets.
        alpha: Weight of the soft targets; ``1 - alpha`` weighs the hard labels.
        label_smoothing: Label smoothing of the hard-label cross-entropy.
    """
    check_distillation_settings(temperature, alpha)
    soft = soft_target_loss(student_logits, teacher_logits, temperature)
    hard = F.cross_entropy(student_logits.float(), labels, label_smoothing=label_smoothing)
    return alpha * soft + (1.0 - alpha) * hard


class DistillationTask(ClassificationTask):
    """Train a student on a teacher's soft targets mixed with the hard labels; measure it as a classifier.

    The teacher's logits come either with each batch, as the third element (precomputed once when the training
    images are not augmented: the `TEACHER_LOGITS` extra of the training set), or from ``teacher``, which then runs
    on every training batch in evaluation mode without gradients (the batch-norm statistics it was trained with stay
    as they are). The teacher is not part of the trained network: the optimiser never sees its parameters.

    The hard-label term is the classification loss the same recipe trains a student with normally (label smoothing
    and auxiliary classifiers included), so ``alpha=0`` reproduces normal training step for step; the soft term is
    `soft_target_loss` of the main logits. Evaluation is plain classification (top-1, top-5, cross-entropy), so the
    distilled student is measured exactly as one trained normally.

    Args:
        teacher: The teacher network, taking the student's input batches; None: the batches carry its logits.
        temperature: T of the soft targets.
        alpha: Weight of the soft targets; ``1 - alpha`` weighs the hard labels.
        label_smoothing: Label smoothing of the hard-label term.
        num_classes: The number of classes (None: the `Trainer` sets it from the data).

    Raises:
        ValueError: A temperature that is not positive, or ``alpha`` outside [0, 1].
    """

    curves = (
        Curve("err", "error", "error (%)", log=True),
        Curve("loss", "loss", "loss (training: distillation loss; test: cross-entropy)"),
    )

    def __init__(
        self,
        teacher: nn.Module | None = None,
        *,
        temperature: float = 4.0,
        alpha: float = 0.9,
        label_smoothing: float = 0.0,
        num_classes: int | None = None,
    ) -> None:
        check_distillation_settings(temperature, alpha)
        super().__init__(label_smoothing=label_smoothing, num_classes=num_classes)
        self.temperature = float(temperature)
        self.alpha = float(alpha)
        self.teacher = teacher.eval().requires_grad_(False) if teacher is not None else None

    def teacher_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The teacher's logits for a batch of student inputs (evaluation mode, no gradients, on the batch's device).

        Raises:
            RuntimeError: The task holds no teacher (its batches carry the logits).
        """
        teacher = self.teacher
        if teacher is None:
            raise RuntimeError("this task reads the teacher's logits from its batches; it holds no teacher network")
        if teacher.training:  # a caller that switched every module to training mode must not reach the teacher's BN
            teacher.eval()
        param = next(teacher.parameters(), None)
        if param is not None and param.device != x.device:
            teacher.to(x.device)
        with torch.no_grad():
            return main_logits(teacher(x))

    def train_step(self, model: nn.Module, batch: Batch) -> StepOutput:
        x, y, *extras = batch
        if self.teacher is not None:
            target = self.teacher_logits(x)
        elif extras:
            target = extras[0]
        else:
            raise ValueError(
                f"a distillation batch needs the teacher's logits after the labels (the {TEACHER_LOGITS!r} extra of "
                f"the training set) or a task that holds the teacher"
            )
        output = model(x)
        soft = soft_target_loss(main_logits(output), target, self.temperature)
        hard = classification_loss(output, y, self.criterion).float()
        return StepOutput(self.alpha * soft + (1.0 - self.alpha) * hard, output)

    def report(self, last: dict[str, Any], best: float) -> list[tuple[str, str]]:
        return [
            *super().report(last, best),
            ("temperature T", f"{self.temperature:g}"),
            ("alpha (weight of the soft targets; 1 - alpha weighs the labels)", f"{self.alpha:g}"),
            ("teacher logits", "precomputed, with each batch" if self.teacher is None else "computed on every batch"),
        ]
