"""The distillation experiment of the lecture's model-compression slides (Hinton, Vinyals and Dean 2015).

A small network is trained twice with the same recipe, epochs and seed: normally, on the labels, and distilled, on a
big network's soft targets mixed with the labels. The big network (the teacher) is evaluated on the same test set.
The report repeats the lecture's three-row table - small model trained normally, big model, small model distilled,
with test accuracy and error - and says whether distillation beat normal training, and by how much.

Teacher logits are precomputed once when the recipe does not augment the training images (no crop, flip or colour
jitter), on exactly the batches the student sees, through the engine's own augmentation (normalisation and size),
and fed with each batch as a per-image extra of the training set. With augmentation the teacher runs on every
augmented batch, in evaluation mode and without gradients.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from convzoo.data.arrays import ArrayDataset
from convzoo.distill.task import TEACHER_LOGITS, DistillationTask, check_distillation_settings
from convzoo.distill.teacher import Teacher, check_teacher, load_teacher
from convzoo.experiments.report import Evidence, ExperimentFolder, Table
from convzoo.models.base import main_logits
from convzoo.train import ClassificationTask, RunResult, TrainConfig, Trainer

__all__ = ["Distillation", "DistillationResult", "Teacher", "load_teacher", "prepare_distillation", "run_distillation"]

# TrainConfig fields the experiment sets itself for each of its runs.
_OWN_SETTINGS = ("model", "data", "out", "resume", "weights", "model_args")


@dataclass
class DistillationResult:
    """What a distillation experiment found.

    Attributes:
        out: The experiment folder.
        report: Its report.md.
        teacher_top1: The teacher's test accuracy (percent).
        normal_top1: The student's final test accuracy trained normally.
        distilled_top1: The student's final test accuracy distilled.
        gain: ``distilled_top1 - normal_top1`` in points (negative: distillation did worse).
        teacher_logits: ``"precomputed"`` or ``"online"`` (computed on every augmented batch).
        normal: The normal run.
        distilled: The distilled run.
    """

    out: Path
    report: Path
    teacher_top1: float
    normal_top1: float
    distilled_top1: float
    gain: float
    teacher_logits: str
    normal: RunResult
    distilled: RunResult


@dataclass
class Distillation:
    """A distillation experiment checked and built, nothing written yet; `run` trains both students and reports.

    Attributes:
        folder: The experiment folder.
        teacher: The teacher.
        teacher_net: The teacher as the student's batches feed it (renormalised where its statistics differ).
        teacher_test: The teacher's test metrics (top1, top5, loss, n).
        normal: The engine run of the student trained normally.
        distilled: The engine run of the distilled student.
        task: The distilled run's task.
        temperature: T.
        alpha: Weight of the soft targets.
        settings: The experiment's settings for the evidence header.
    """

    folder: ExperimentFolder
    teacher: Teacher
    teacher_net: nn.Module
    teacher_test: dict[str, float]
    normal: Trainer
    distilled: Trainer
    task: DistillationTask
    temperature: float
    alpha: float
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def teacher_logits(self) -> str:
        """``"precomputed"`` when the batches carry the teacher's logits, else ``"online"``."""
        return "precomputed" if self.task.teacher is None else "online"

    def run(self) -> DistillationResult:
        """Train the student normally, then distilled, and write the report."""
        normal = self.normal.run()
        distilled = self.distilled.run()
        report = self._write_report(normal, distilled)
        t = self.teacher_test["top1"]
        n, d = normal.test_top1, distilled.test_top1
        return DistillationResult(
            self.folder.path, report, t, n, d, d - n, self.teacher_logits, normal=normal, distilled=distilled
        )

    # -- the report ---------------------------------------------------------------------------------------------------

    def _write_report(self, normal: RunResult, distilled: RunResult) -> Path:
        from convzoo.analysis import count_params

        cfg = self.normal.config
        student = _describe_model(cfg.model, cfg.model_args)
        t_acc, n_acc, d_acc = self.teacher_test["top1"], normal.test_top1, distilled.test_top1
        table = Table(["System", "Network", "Parameters", "Test accuracy (%)", "Test error (%)"])
        params = count_params(self.normal.model)
        table.add("Small model (normal training)", student, params, n_acc, 100 - n_acc)
        table.add("Big model (teacher)", self.teacher.name, count_params(self.teacher.model), t_acc, 100 - t_acc)
        table.add("Small model (distillation)", student, params, d_acc, 100 - d_acc)
        data = self.normal.data
        epochs = self.normal.epochs
        evidence = Evidence(
            experiment=(
                f"Knowledge distillation (Hinton et al. 2015): {student} trained normally and distilled from "
                f"{self.teacher.name} ({self.teacher.source})"
            ),
            data=(
                f"{cfg.data}: {len(data.train_set)} training and {len(data.test_set)} test images of "
                f"{'x'.join(map(str, data.train_set.image_size))}, {data.num_classes} classes"
            ),
            runs=f"2 (the student trained normally and distilled), {epochs} epochs each; the teacher is only evaluated",
            seeds=[cfg.seed],
            settings=self.settings,
            device=str(self.normal.device),
        )
        self.folder.write(
            title=f"Knowledge distillation: {student} taught by {self.teacher.name} on {cfg.data}",
            evidence=evidence,
            table=table,
            findings=self._findings(t_acc, n_acc, d_acc, epochs),
            chart=lambda path: self._chart(path, normal, distilled, t_acc),
            notes=[
                "Accuracies are those of the final epoch's weights (best epoch: normal "
                f"{normal.best_top1:.2f}%, distilled {distilled.best_top1:.2f}%). Loss: alpha * T^2 * "
                "KL(softmax(teacher/T) || softmax(student/T)) + (1 - alpha) * CE(student, labels), with alpha the "
                f"weight of the teacher's soft targets (here T = {self.temperature:g}, alpha = {self.alpha:g}); the "
                "hard-label term is the recipe's own loss, so alpha = 0 reproduces the normal run.",
                f"Teacher logits: {self._logits_note()}",
                "One run per student: differences of a few tenths of a point can come from the seed alone; repeat "
                "with other seeds before quoting a small gain.",
            ],
        )
        return self.folder.path / "report.md"

    def _logits_note(self) -> str:
        if self.task.teacher is None:
            return (
                "precomputed once (the recipe does not augment the training images), on the very images the student "
                "sees, and fed with each batch."
            )
        return "computed on every augmented training batch, the teacher in evaluation mode without gradients."

    def _findings(self, t_acc: float, n_acc: float, d_acc: float, epochs: int) -> list[str]:
        gain = d_acc - n_acc
        if gain > 0:
            verdict = f"distillation beat normal training by {gain:.2f} points of accuracy"
        elif gain < 0:
            verdict = f"distillation did not beat normal training, falling {-gain:.2f} points of accuracy short"
        else:
            verdict = "distillation tied with normal training"
        findings = [
            f"The distilled student reached {d_acc:.2f}% test accuracy ({100 - d_acc:.2f}% error) against "
            f"{n_acc:.2f}% ({100 - n_acc:.2f}% error) for the same student trained normally with the same recipe, "
            f"{epochs} epochs and seed; {verdict}."
        ]
        gap = t_acc - n_acc
        if gap > 0:
            recovered = f"recovered {100 * gain / gap:.0f}% of that gap" if gain > 0 else "recovered none of that gap"
            findings.append(
                f"The teacher ({t_acc:.2f}%) leads the normally trained student by {gap:.2f} points; distillation "
                f"{recovered} (the lecture's table: 58.9% to 60.8% of the big model's 61.1%, 86% of the gap)."
            )
        else:
            findings.append(
                f"The teacher ({t_acc:.2f}%) is no more accurate than the student trained normally, so its soft "
                f"targets hold no accuracy the student lacks; any gain comes from their regularising effect alone."
            )
        return findings

    def _chart(self, path: Path, normal: RunResult, distilled: RunResult, teacher_top1: float) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator

        fig, ax = plt.subplots(figsize=(6.5, 4.2))
        for run, label in ((normal, "student, normal training"), (distilled, "student, distilled")):
            ax.plot([h["epoch"] for h in run.history], [h["test_err"] for h in run.history], marker="o", label=label)
        ax.axhline(100 - teacher_top1, color="black", linestyle="--", label="teacher")
        ax.set_xlabel("epoch")
        ax.set_ylabel("test error (%)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(f"Distillation at T = {self.temperature:g}, alpha = {self.alpha:g}")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(path, format="png", dpi=120)
        plt.close(fig)


def _describe_model(name: str, args: dict[str, Any]) -> str:
    return name + (f" ({', '.join(f'{k}={v}' for k, v in args.items())})" if args else "")


@torch.no_grad()
def _predict(net: nn.Module, loader: Any, device: torch.device) -> tuple[torch.Tensor, dict[str, float]]:
    """The float32 logits of ``net`` over ``loader``'s batches in order (on the CPU) and their test metrics."""
    metrics = ClassificationTask().eval_metrics()
    parts = []
    net.eval()
    for batch in loader:
        logits = main_logits(net(batch[0].to(device))).float()
        metrics.update(batch, logits)
        parts.append(logits.cpu())
    return torch.cat(parts), metrics.compute()


def _with_logits(dataset: ArrayDataset, logits: torch.Tensor) -> ArrayDataset:
    """``dataset`` (its tensors shared, not copied) with the teacher's logits as a per-image extra."""
    return ArrayDataset(
        images=dataset.images,
        labels=dataset.labels,
        classes=list(dataset.classes),
        name=dataset.name,
        extras={**dataset.extras, TEACHER_LOGITS: logits},
    )


def prepare_distillation(
    teacher: str | os.PathLike[str] | Teacher,
    student: str,
    data: str,
    *,
    temperature: float = 4.0,
    alpha: float = 0.9,
    teacher_weights: str | os.PathLike[str] | None = None,
    student_args: dict[str, Any] | None = None,
    out: str | os.PathLike[str] | None = None,
    **settings: Any,
) -> Distillation:
    """Check everything, load the teacher and the data, evaluate the teacher and build both runs; write nothing.

    Arguments as `run_distillation`.
    """
    from convzoo.data import FastLoader, load_dataset
    from convzoo.registry import get_model_card

    check_distillation_settings(temperature, alpha)
    get_model_card(student)  # an unknown name raises KeyError with the closest registered names
    own = sorted(set(settings) & set(_OWN_SETTINGS))
    if own:
        raise TypeError(f"run_distillation sets {own} itself; pass the teacher, student and data as its arguments")
    base = TrainConfig(**settings)  # an unknown setting raises a TypeError naming it
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError("distillation runs on one process; start it without torchrun")
    if not isinstance(teacher, Teacher):
        teacher = load_teacher(teacher, weights=teacher_weights)
    elif teacher_weights is not None:
        raise ValueError("teacher_weights applies to a teacher given by name, not to a loaded Teacher")
    size = base.image_size or teacher.image_size
    if base.image_size and teacher.image_size and base.image_size != teacher.image_size:
        raise ValueError(
            f"the teacher {teacher.source} was trained on {teacher.image_size}x{teacher.image_size} images; distil "
            f"at that size (image_size {teacher.image_size}), not at {base.image_size}"
        )
    if size is None:
        size = get_model_card(student).input_size[-1]
    train_set, test_set = load_dataset(
        data, root=base.data_root, image_size=size, in_chans=teacher.in_chans, seed=base.seed
    )
    param = next(teacher.model.parameters(), None)
    blank = torch.zeros(1, teacher.in_chans, size, size, device=param.device if param is not None else None)
    with torch.no_grad():  # the number of outputs, from the network itself rather than from what was recorded
        probe = teacher.model(blank)
    check_teacher(teacher, main_logits(probe).shape[1], train_set, data)
    folder = ExperimentFolder(out, "distill")  # refuses a finished experiment; writes nothing yet
    student_args = dict(student_args or {})

    def config(label: str) -> TrainConfig:
        run_dir = folder.run_dir(label)
        return dataclasses.replace(
            base,
            model=student,
            model_args=student_args,
            data=data,
            image_size=size,
            out=str(run_dir),
            resume=(run_dir / "last.pt").is_file(),  # an interrupted experiment continues its runs
        )

    normal = Trainer(config("student-normal"), datasets=(train_set, test_set))
    recipe = normal.recipe
    device = normal.device
    teacher_net = teacher.for_inputs(normal.data.mean, normal.data.std).to(device).eval()
    test_logits, teacher_test = _predict(teacher_net, normal.data.test_loader, device)
    augment = normal.data.train_loader.augment
    if augment.augments:
        task = DistillationTask(
            teacher_net, temperature=temperature, alpha=alpha, label_smoothing=recipe.label_smoothing
        )
        distilled = Trainer(config("student-distilled"), task=task, datasets=(train_set, test_set))
    else:
        # Unaugmented training images are the same every epoch: the teacher sees each once, through the engine's own
        # augmentation (the normalisation and size the student's batches have), and the loader hands each batch
        # the rows of its images.
        loader = FastLoader(train_set, batch_size=base.eval_batch_size, shuffle=False, augment=augment, device=device)
        train_logits, _ = _predict(teacher_net, loader, device)
        task = DistillationTask(None, temperature=temperature, alpha=alpha, label_smoothing=recipe.label_smoothing)
        distilled = Trainer(
            config("student-distilled"),
            task=task,
            datasets=(_with_logits(train_set, train_logits), _with_logits(test_set, test_logits)),
            extras=(TEACHER_LOGITS,),
        )
    overrides = dict(base.recipe_overrides)
    settings_text = {
        "teacher": teacher.source,
        "student": _describe_model(student, student_args),
        "temperature": f"{temperature:g}",
        "alpha": f"{alpha:g}",
        "recipe": recipe.name + (f" with {overrides}" if overrides else ""),
        "epochs": normal.epochs,
        "image size": size,
        "teacher logits": "precomputed" if task.teacher is None else "online",
    }
    return Distillation(
        folder=folder,
        teacher=teacher,
        teacher_net=teacher_net,
        teacher_test=teacher_test,
        normal=normal,
        distilled=distilled,
        task=task,
        temperature=float(temperature),
        alpha=float(alpha),
        settings=settings_text,
    )


def run_distillation(
    teacher: str | os.PathLike[str] | Teacher,
    student: str,
    data: str,
    *,
    temperature: float = 4.0,
    alpha: float = 0.9,
    teacher_weights: str | os.PathLike[str] | None = None,
    student_args: dict[str, Any] | None = None,
    out: str | os.PathLike[str] | None = None,
    **settings: Any,
) -> DistillationResult:
    """Train ``student`` normally and distilled from ``teacher`` with the same recipe, and report the three rows.

    Everything is checked, and the teacher evaluated, before anything is written: teacher and data must have the
    same classes, a teacher that records its data (a checkpoint, a registered entry) must have learned ``data``,
    and the student must be a registered model.

    Args:
        teacher: A training checkpoint (``best.pt``/``last.pt``), a registered model name with weights, or a
            loaded `Teacher`.
        student: The registered name of the student network.
        data: The data set (name or path) the teacher learned.
        temperature: T of the soft targets (positive).
        alpha: Weight of the teacher's soft targets in [0, 1]; ``1 - alpha`` weighs the hard labels (0 is normal
            training, 1 learns from the teacher alone).
        teacher_weights: For a teacher model name: a registered weights name or a file (None: its default entry).
        student_args: Architecture settings of the student, e.g. ``{"depth": 8}`` for a ResNet-8.
        out: The experiment folder (default ``runs/distill-<time>``); the runs go to ``student-normal`` and
            ``student-distilled`` inside it, and an interrupted experiment continues them.
        **settings: `TrainConfig` settings of both runs: ``recipe``, ``recipe_overrides``, ``image_size`` (default:
            the teacher's), ``data_root``, ``seed``, ``device``, ``amp``, ``deterministic``, ``progress``, ...

    Returns:
        The accuracies, the gain of distillation and the runs.

    Raises:
        ValueError: A temperature that is not positive, alpha outside [0, 1], a teacher for other classes or another
            data set, or an image size other than the teacher's.
        KeyError: An unknown student or teacher name (with close matches).
        FileNotFoundError: A teacher checkpoint or data set that is not there.
        FileExistsError: ``out`` already holds a finished experiment.
    """
    return prepare_distillation(
        teacher,
        student,
        data,
        temperature=temperature,
        alpha=alpha,
        teacher_weights=teacher_weights,
        student_args=student_args,
        out=out,
        **settings,
    ).run()
