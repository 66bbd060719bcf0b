"""Knowledge distillation: the loss by hand, the teacher's logits and state, the experiment's report and command."""

import csv
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from convzoo.cli import main
from convzoo.data import load_dataset
from convzoo.distill import (
    TEACHER_LOGITS,
    DistillationTask,
    distillation_loss,
    prepare_distillation,
    run_distillation,
    soft_target_loss,
)
from convzoo.inference import load_classifier
from convzoo.train import ClassificationTask, TrainConfig, train

# A ResNet-8 student on 8x8 digits, three optimiser steps per run: seconds, on two busy cores.
STUDENT = "resnet20"
STUDENT_ARGS = {"depth": 8}
FAST = {"iterations": 3, "batch_size": 64}
RUN = {"progress": False, "deterministic": True}


@pytest.fixture(scope="module")
def teacher_checkpoint(tmp_path_factory):
    """The last.pt of a barely trained ResNet-14 on 8x8 digits: a teacher the engine wrote, bigger than the student."""
    out = tmp_path_factory.mktemp("teacher") / "run"
    config = TrainConfig(
        model="resnet20",
        model_args={"depth": 14},
        data="digits",
        image_size=8,
        recipe_overrides=FAST,
        out=str(out),
        **RUN,
    )
    train(config)
    return out / "last.pt"


def _kl_by_hand(student, teacher, temperature):
    p_teacher = torch.softmax(teacher / temperature, dim=1)
    log_student = torch.log_softmax(student / temperature, dim=1)
    return (p_teacher * (p_teacher.log() - log_student)).sum() / student.shape[0]


# -- the loss -------------------------------------------------------------------------------------------------------


def test_loss_by_hand_keeps_t_squared_and_reduces_to_cross_entropy():
    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(6, 5, generator=g) * 3, torch.randn(6, 5, generator=g) * 3
    labels = torch.tensor([0, 1, 2, 3, 4, 0])
    t = 3.0
    kl = _kl_by_hand(student, teacher, t)
    ce = F.cross_entropy(student, labels)
    # alpha = 1: the labels weigh nothing, and the soft term still carries T^2.
    pure = distillation_loss(student, teacher, labels, temperature=t, alpha=1.0)
    torch.testing.assert_close(pure, t * t * kl)
    assert not math.isclose(pure.item(), kl.item(), rel_tol=0.1)
    torch.testing.assert_close(soft_target_loss(student, teacher, t), t * t * kl)
    # alpha = 0 is plain cross-entropy; in between, the weighted sum.
    torch.testing.assert_close(distillation_loss(student, teacher, labels, temperature=t, alpha=0.0), ce)
    mixed = distillation_loss(student, teacher, labels, temperature=t, alpha=0.3)
    torch.testing.assert_close(mixed, 0.3 * t * t * kl + 0.7 * ce)
    smoothed = distillation_loss(student, teacher, labels, temperature=t, alpha=0.0, label_smoothing=0.1)
    torch.testing.assert_close(smoothed, F.cross_entropy(student, labels, label_smoothing=0.1))


@pytest.mark.parametrize("temperature", [1.0, 4.0, 20.0])
def test_soft_gradient_scale_is_t_times_probability_difference(temperature):
    """d(T^2 KL)/d(student logits) = T (softmax(s/T) - softmax(t/T)) / N: without T^2 it would shrink by T^2."""
    g = torch.Generator().manual_seed(1)
    student = (torch.randn(4, 10, generator=g) * 5).requires_grad_()
    teacher = (torch.randn(4, 10, generator=g) * 5).requires_grad_()
    labels = torch.zeros(4, dtype=torch.long)
    distillation_loss(student, teacher, labels, temperature=temperature, alpha=1.0).backward()
    expected = temperature * (torch.softmax(student / temperature, 1) - torch.softmax(teacher / temperature, 1)) / 4
    torch.testing.assert_close(student.grad, expected.detach())
    assert teacher.grad is None  # the teacher's logits are targets, never trained


def test_task_step_matches_the_loss_by_hand():
    """The task's loss, with the logits carried by the batch: T^2 kept at alpha 1, the recipe's loss at alpha 0."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 5))
    x, y = torch.randn(8, 3, 2, 2), torch.randint(0, 5, (8,))
    teacher_logits = torch.randn(8, 5) * 4
    logits = model(x)
    pure = DistillationTask(temperature=5.0, alpha=1.0).train_step(model, (x, y, teacher_logits))
    torch.testing.assert_close(pure.loss, 25.0 * _kl_by_hand(logits, teacher_logits, 5.0))
    hard = DistillationTask(temperature=5.0, alpha=0.0, label_smoothing=0.1).train_step(model, (x, y, teacher_logits))
    normal = ClassificationTask(label_smoothing=0.1).train_step(model, (x, y))
    torch.testing.assert_close(hard.loss, normal.loss)
    # A teacher held by the task gives the same loss as its logits carried by the batch.
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(12, 5))
    online = DistillationTask(teacher, temperature=2.0, alpha=0.5).train_step(model, (x, y))
    carried = DistillationTask(temperature=2.0, alpha=0.5).train_step(model, (x, y, teacher(x).detach()))
    torch.testing.assert_close(online.loss, carried.loss)
    with pytest.raises(ValueError, match="teacher's logits"):
        DistillationTask(alpha=0.5).train_step(model, (x, y))


def test_soft_term_is_float32_under_bfloat16_autocast():
    g = torch.Generator().manual_seed(2)
    student, teacher = torch.randn(4, 10, generator=g), torch.randn(4, 10, generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = soft_target_loss(student.bfloat16(), teacher.bfloat16(), 4.0)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, soft_target_loss(student.bfloat16().float(), teacher.bfloat16().float(), 4.0))


@pytest.mark.parametrize(("temperature", "alpha"), [(0.0, 0.5), (-2.0, 0.5), (math.nan, 0.5), (4.0, -0.1), (4.0, 1.5)])
def test_impossible_settings_are_refused(temperature, alpha):
    with pytest.raises(ValueError, match="temperature|alpha"):
        DistillationTask(temperature=temperature, alpha=alpha)
    with pytest.raises(ValueError, match="temperature|alpha"):
        distillation_loss(
            torch.zeros(1, 2), torch.zeros(1, 2), torch.zeros(1, dtype=torch.long), temperature=temperature, alpha=alpha
        )


# -- the teacher ------------------------------------------------------------------------------------------------------


def test_precomputed_logits_are_the_teachers_outputs_on_the_students_batches(teacher_checkpoint, tmp_path):
    out = tmp_path / "exp"
    plan = prepare_distillation(
        teacher_checkpoint,
        STUDENT,
        "digits",
        student_args=STUDENT_ARGS,
        out=out,
        recipe_overrides={**FAST, "crop_padding": 0},
        **RUN,
    )
    assert plan.teacher_logits == "precomputed" and plan.task.teacher is None
    assert not out.exists()  # everything is prepared, nothing written
    loader = plan.distilled.data.train_loader
    assert loader.shuffle
    order = loader.indices()
    with torch.no_grad():
        for i, (x, y, logits) in zip(range(3), loader):  # the shuffled, normalised batches the student trains on
            torch.testing.assert_close(logits, plan.teacher_net(x), rtol=1e-5, atol=1e-5)
            assert torch.equal(y, plan.distilled.data.train_set.labels[order[i * 64 : (i + 1) * 64]])
    # The teacher sees what it was trained on: its checkpoint's normalisation is the student's.
    assert plan.teacher_net is plan.teacher.model
    x, y, logits = next(iter(plan.distilled.data.test_loader))
    torch.testing.assert_close(logits, plan.teacher_net(x).detach(), rtol=1e-5, atol=1e-5)
    assert plan.distilled.data.train_set.extras[TEACHER_LOGITS].shape == (len(plan.distilled.data.train_set), 10)


@pytest.fixture(scope="module")
def online_run(teacher_checkpoint, tmp_path_factory):
    """A distillation with the quick recipe (it crops: the teacher runs on each augmented batch), its teacher watched.

    Returns the prepared experiment, its result, the teacher's state before the run and the teacher's mode at each
    of its forward passes.
    """
    out = tmp_path_factory.mktemp("online") / "exp"
    plan = prepare_distillation(
        teacher_checkpoint,
        STUDENT,
        "digits",
        temperature=3.0,
        alpha=0.7,
        student_args=STUDENT_ARGS,
        out=out,
        recipe_overrides=FAST,
        **RUN,
    )
    teacher = plan.task.teacher
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    calls = []
    teacher.register_forward_hook(lambda module, inputs, output: calls.append(module.training))
    teacher.train()  # whoever switches it to training mode, its batch norms must not learn the student's batches
    return plan, plan.run(), before, calls


def test_online_teacher_gets_no_gradient_or_optimizer_state_and_stays_in_eval(online_run):
    plan, result, before, calls = online_run
    assert plan.teacher_logits == "online" and result.teacher_logits == "online"
    teacher = plan.task.teacher
    assert calls == [False] * result.distilled.steps_done  # once per training batch, always in evaluation mode
    assert not any(m.training for m in teacher.modules())
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    after = teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and running statistics untouched
    optimizer = plan.distilled.optimizer
    trained = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert not trained & {id(p) for p in teacher.parameters()}
    assert trained == {id(p) for p in plan.distilled.model.parameters()}
    assert optimizer.state and all(id(p) in trained for p in optimizer.state)


# -- the experiment ---------------------------------------------------------------------------------------------------


def _teacher_accuracy_by_hand(checkpoint):
    classifier = load_classifier(checkpoint)
    _, test = load_dataset("digits", image_size=8)
    mean = torch.tensor(classifier.data["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(classifier.data["std"]).view(1, -1, 1, 1)
    with torch.no_grad():
        logits = classifier.model((test.images.float() / 255 - mean) / std)
    return 100.0 * logits.argmax(1).eq(test.labels).float().mean().item()


def test_report_has_the_three_rows_the_verdict_and_the_chart(teacher_checkpoint, online_run):
    result = online_run[1]
    out = result.out
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["System"] for r in rows] == [
        "Small model (normal training)",
        "Big model (teacher)",
        "Small model (distillation)",
    ]
    accuracy = [float(r["Test accuracy (%)"]) for r in rows]
    assert [float(r["Test error (%)"]) for r in rows] == pytest.approx([100 - a for a in accuracy])
    assert accuracy == pytest.approx([result.normal_top1, result.teacher_top1, result.distilled_top1])
    assert result.teacher_top1 == pytest.approx(_teacher_accuracy_by_hand(teacher_checkpoint), abs=1e-6)
    assert result.normal_top1 == pytest.approx(result.normal.history[-1]["test_top1"])
    assert result.gain == pytest.approx(result.distilled_top1 - result.normal_top1)
    assert rows[0]["Parameters"] == rows[2]["Parameters"] != rows[1]["Parameters"]
    report = (out / "report.md").read_text()
    for header in ("**Experiment:**", "**Data:**", "**Runs:**", "**Hardware:**", "**Date:**", "**Settings:**"):
        assert header in report
    assert "temperature 3, alpha 0.7" in report and "teacher logits online" in report
    gain = result.gain
    if gain > 0:
        assert f"distillation beat normal training by {gain:.2f} points" in report
    elif gain < 0:
        assert f"distillation did not beat normal training, falling {-gain:.2f} points" in report
    else:
        assert "distillation tied with normal training" in report
    assert (out / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for run in ("student-normal", "student-distilled"):
        assert (out / run / "last.pt").is_file() and (out / run / "metrics.csv").is_file()
    assert "teacher logits | computed on every batch" in (out / "student-distilled" / "report.md").read_text()


def test_command_end_to_end_alpha_zero_is_normal_training(teacher_checkpoint, tmp_path, capsys):
    """With the labels alone the distilled run must repeat the normal one exactly: same recipe, start and batches.

    The experiment was interrupted after its normal run (here: a plain training run in its folder); the command
    continues it rather than training that student again.
    """
    out = tmp_path / "exp"
    normal_config = TrainConfig(
        model=STUDENT,
        model_args=STUDENT_ARGS,
        data="digits",
        image_size=8,
        recipe_overrides={**FAST, "crop_padding": 0},
        out=str(out / "student-normal"),
        **RUN,
    )
    train(normal_config)
    checkpoint = (out / "student-normal" / "last.pt").read_bytes()
    code = main(
        [
            "distill",
            "--teacher",
            str(teacher_checkpoint),
            "--student",
            STUDENT,
            "--student-arch",
            "depth=8",
            "--data",
            "digits",
            "--alpha",
            "0",
            "--iterations",
            "3",
            "--batch-size",
            "64",
            "--crop-padding",
            "0",
            "--deterministic",
            "--no-progress",
            "--out",
            str(out),
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0
    assert "distillation tied with normal training" in printed and f"report: {out / 'report.md'}" in printed
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["Test accuracy (%)"] == rows[2]["Test accuracy (%)"]
    assert rows[2]["Network"] == "resnet20 (depth=8)"
    normal = (out / "student-normal" / "metrics.csv").read_text().splitlines()
    distilled = (out / "student-distilled" / "metrics.csv").read_text().splitlines()
    losses = [[line.split(",")[3] for line in lines[1:]] for lines in (normal, distilled)]
    assert losses[0] == losses[1]  # the training loss too, not only the accuracy
    assert "teacher logits precomputed" in (out / "report.md").read_text()
    assert (out / "student-normal" / "last.pt").read_bytes() == checkpoint  # continued, not trained again


# -- bad input --------------------------------------------------------------------------------------------------------


@pytest.fixture
def other_data(tmp_path):
    """Digits saved under another name (same ten classes) and a three-class subset of them."""
    train_set, test_set = load_dataset("digits")
    np.savez(
        tmp_path / "letters.npz",
        images=train_set.images.numpy(),
        labels=train_set.labels.numpy(),
        test_images=test_set.images.numpy(),
        test_labels=test_set.labels.numpy(),
        classes=np.array(train_set.classes),
    )
    three = train_set.select_classes([0, 1, 2])
    np.savez(tmp_path / "three.npz", images=three.images.numpy(), labels=three.labels.numpy())
    return tmp_path


@pytest.mark.parametrize(
    ("teacher", "data", "kwargs", "error", "message"),
    [
        ("checkpoint", "three.npz", {}, ValueError, "predicts 10 classes but .*three.npz has 3"),
        ("checkpoint", "letters.npz", {}, ValueError, "was trained on digits, not on .*letters.npz"),
        ("resnet20", "digits", {}, ValueError, "was trained on CIFAR-10, not on digits"),
        ("checkpoint", "digits", {"image_size": 16}, ValueError, "trained on 8x8 images"),
        ("checkpoint", "digits", {"student": "resnet2"}, KeyError, "resnet20"),
        ("checkpoint", "digits", {"temperature": 0.0}, ValueError, "temperature must be a positive number"),
        ("checkpoint", "digits", {"alpha": 1.2}, ValueError, r"alpha, the weight .* must lie in \[0, 1\]"),
        ("missing.pt", "digits", {}, FileNotFoundError, "missing.pt"),
    ],
)
def test_bad_input_is_refused_before_anything_is_written(
    teacher_checkpoint, other_data, teacher, data, kwargs, error, message
):
    out = other_data / "exp"
    teacher = (
        str(teacher_checkpoint)
        if teacher == "checkpoint"
        else str(other_data / teacher)
        if teacher.endswith(".pt")
        else teacher
    )
    data = str(other_data / data) if data.endswith(".npz") else data
    kwargs = {"student": STUDENT, **kwargs}
    with pytest.raises(error, match=message):
        run_distillation(teacher, data=data, out=out, recipe_overrides=FAST, **kwargs, **RUN)
    assert not out.exists()


def test_command_reports_bad_input_as_an_error(teacher_checkpoint, online_run, tmp_path, capsys):
    out = tmp_path / "exp"
    args = [
        "distill",
        "--teacher",
        str(teacher_checkpoint),
        "--student",
        STUDENT,
        "--data",
        "digits",
        "--out",
        str(out),
    ]
    assert main([*args, "--alpha", "-0.5"]) == 2
    assert "alpha" in capsys.readouterr().err
    assert main([*args[:4], "resnet9", *args[5:]]) == 2
    err = capsys.readouterr().err
    assert "convzoo: error:" in err and "resnet" in err
    assert not out.exists()
    finished = online_run[1].out
    report = (finished / "report.md").read_text()
    assert main([*args[:-1], str(finished)]) == 2  # a finished experiment is never overwritten
    assert "already holds a finished distill experiment" in capsys.readouterr().err
    assert (finished / "report.md").read_text() == report
