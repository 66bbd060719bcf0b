"""Knowledge distillation (Hinton, Vinyals and Dean 2015): a small student learns a big teacher's soft targets.

`DistillationTask` is the engine's task for it (``alpha * T^2 * KL + (1 - alpha) * CE``, see `distillation_loss`);
`run_distillation` is the lecture's experiment: the student trained normally and distilled with the same recipe,
the teacher evaluated, and a report with the three-row table.
"""

from convzoo.distill.experiment import (
    Distillation,
    DistillationResult,
    Teacher,
    load_teacher,
    prepare_distillation,
    run_distillation,
)
from convzoo.distill.task import (
    TEACHER_LOGITS,
    DistillationTask,
    check_distillation_settings,
    distillation_loss,
    soft_target_loss,
)

__all__ = [
    "TEACHER_LOGITS",
    "Distillation",
    "DistillationResult",
    "DistillationTask",
    "Teacher",
    "check_distillation_settings",
    "distillation_loss",
    "load_teacher",
    "prepare_distillation",
    "run_distillation",
    "soft_target_loss",
]
