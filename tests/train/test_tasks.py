"""The task interface: what a run learns and measures is a `Task`, and the one loop honours it."""

import json
import math

import pytest
import torch
import torch.nn as nn

from convzoo.models.base import AuxOutputs
from convzoo.train import (
    ClassificationTask,
    Metrics,
    StepOutput,
    Task,
    TrainConfig,
    Trainer,
    evaluate,
    load_checkpoint,
    train,
)
from convzoo.train.tasks import Curve, SumMetrics

# Two batches of 512 digits per epoch: a few seconds per run.
TINY = {"batch_size": 512, "optimizer": "adamw", "lr": 0.003, "label_smoothing": 0.0}


def tiny_config(tmp_path, name, *, epochs=3):
    overrides = {**TINY, "iterations": 2 * epochs}
    return TrainConfig(
        model="resnet20",
        data="digits",
        image_size=8,
        recipe_overrides=overrides,
        out=str(tmp_path / name),
        progress=False,
        deterministic=True,
    )


class _SquaredError(SumMetrics):
    sums = ("squares", "absolute", "n")

    def update(self, batch, outputs, loss=None):
        error = outputs.detach().float() - batch[1].float() / 9
        self.totals["squares"] += error.square().sum().item()
        self.totals["absolute"] += error.abs().sum().item()
        self.totals["n"] += error.numel()

    def summarise(self, totals):
        n = max(1.0, totals["n"])
        return {"loss": totals["squares"] / n, "mae": totals["absolute"] / n}


class DigitValue(Task):
    """Regresses the digit's value, scaled to [0, 1], from the network's first output; counts the loop's calls."""

    best_metric = "mae"
    higher_is_better = False
    curves = (Curve("loss", "squared error", "squared error"),)

    def __init__(self):
        self.calls = {"train_step": 0, "eval_step": 0, "train_metrics": 0, "eval_metrics": 0}

    def train_step(self, model, batch):
        self.calls["train_step"] += 1
        x, y = batch
        value = model(x)[:, 0]
        return StepOutput(nn.functional.mse_loss(value.float(), y.float() / 9), value)

    def eval_step(self, model, batch):
        self.calls["eval_step"] += 1
        return model(batch[0])[:, 0].float()

    def train_metrics(self):
        self.calls["train_metrics"] += 1
        return _SquaredError()

    def eval_metrics(self):
        self.calls["eval_metrics"] += 1
        return _SquaredError()


def test_a_custom_task_trains_through_the_same_loop(tmp_path):
    task = DigitValue()
    result = train(tiny_config(tmp_path, "regression"), task=task)
    assert result.epochs_done == 3 and result.steps_done == 6 and not result.stopped_early
    eval_batches = math.ceil(360 / 256)
    assert task.calls == {"train_step": 6, "eval_step": 3 * eval_batches, "train_metrics": 3, "eval_metrics": 3}
    rows = [json.loads(line) for line in (result.out / "metrics.jsonl").read_text().splitlines()]
    assert list(rows[0]) == [
        "epoch",
        "step",
        "lr",
        "train_loss",
        "train_mae",
        "test_loss",
        "test_mae",
        "evaluated",
        "images_per_s",
        "seconds",
        "is_best",
    ]
    assert rows[-1]["test_loss"] < rows[0]["test_loss"]  # the network learns the regression
    best_mae = min(row["test_mae"] for row in rows)
    assert result.best == best_mae and result.best_top1 is None and result.test_top1 is None
    assert load_checkpoint(result.out / "best.pt")["best_mae"] == best_mae
    report = (result.out / "report.md").read_text()
    assert f"| best test mae | {best_mae:.4g} |" in report and "| final test mae |" in report
    assert (result.out / "curves.png").stat().st_size > 0


class _Scripted(Metrics):
    """Reports the next of a fixed list of scores, one per evaluation."""

    def __init__(self, scores):
        self.scores = scores

    def reset(self):
        pass

    def update(self, batch, outputs, loss=None):
        pass

    def compute(self, reduce=None):
        score = self.scores.pop(0)
        return {"score": score, "loss": -score}


class ScriptedScore(ClassificationTask):
    """Classification whose evaluation reports a fixed score per epoch, to pin down which epoch is best.

    Its columns, log line and report are the defaults every task gets.
    """

    best_metric = "score"
    curves = (Curve("loss", "loss", "loss"),)
    columns = Task.columns
    describe = Task.describe
    report = Task.report

    def __init__(self, scores, higher_is_better):
        super().__init__()
        self.scores = list(scores)
        self.higher_is_better = higher_is_better

    def eval_metrics(self):
        return _Scripted(self.scores)


@pytest.mark.parametrize(("higher_is_better", "best_epoch", "flags"), [(True, 3, [1, 0, 1]), (False, 2, [1, 1, 0])])
def test_the_best_checkpoint_follows_the_tasks_metric_and_direction(tmp_path, higher_is_better, best_epoch, flags):
    scores = [2.0, 1.0, 3.0]
    task = ScriptedScore(scores, higher_is_better)
    result = Trainer(tiny_config(tmp_path, "scripted"), task=task).run()
    assert [row["test_score"] for row in result.history] == scores
    assert [int(row["is_best"]) for row in result.history] == flags
    best = load_checkpoint(result.out / "best.pt")
    assert best["epoch"] == best_epoch and best["best_score"] == scores[best_epoch - 1] == result.best
    assert load_checkpoint(result.out / "last.pt")["epoch"] == 3
    assert list(result.history[0])[3:7] == ["train_loss", "train_err", "test_score", "test_loss"]
    assert f"| best test score | {scores[best_epoch - 1]:.4g} |" in (result.out / "report.md").read_text()


def test_a_best_metric_the_evaluation_lacks_is_named(tmp_path):
    class Misnamed(ClassificationTask):
        best_metric = "accuracy"

    with pytest.raises(KeyError, match=r"Misnamed.best_metric 'accuracy' is none of its evaluation metrics"):
        train(tiny_config(tmp_path, "misnamed", epochs=1), task=Misnamed())


class _Fixed(nn.Module):
    """Returns the logits it is given for each batch, in order."""

    def __init__(self, outputs):
        super().__init__()
        self.outputs = list(outputs)

    def forward(self, x):
        return self.outputs.pop(0)


def test_classification_metrics_by_hand():
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0, -1.0, -2.0], [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]])
    labels = torch.tensor([0, 0])  # the first ranked first, the second ranked last
    loader = [(torch.zeros(2, 1, 4, 4), labels)]
    result = evaluate(_Fixed([logits]), loader, device=torch.device("cpu"))
    expected_loss = nn.functional.cross_entropy(logits, labels).item()
    assert result == {"top1": 50.0, "top5": 50.0, "loss": pytest.approx(expected_loss), "n": 2}
    with pytest.raises(ValueError, match="the evaluation data set is empty"):
        evaluate(_Fixed([]), [], device=torch.device("cpu"))

    task = ClassificationTask()
    metrics = task.train_metrics()
    metrics.update(loader[0], logits, loss=2.0)
    assert metrics.progress() == {"err": "50.0%"}
    twice = metrics.compute(lambda values: [2 * v for v in values])  # two processes that saw the same
    assert twice == metrics.compute() == {"loss": 2.0, "err": 50.0}
    metrics.reset()
    assert metrics.compute() == {"loss": 0.0, "err": 100.0}
    assert task.columns({"loss": 1.0, "err": 5.0}, result)["test_err"] == 50.0


def test_classification_trains_on_auxiliary_outputs_with_label_smoothing():
    logits, aux = torch.randn(4, 10), torch.randn(4, 10)
    labels = torch.randint(0, 10, (4,))
    model = _Fixed([AuxOutputs(logits, (aux,), (0.3,))])
    out = ClassificationTask(label_smoothing=0.1).train_step(model, (torch.zeros(4, 1, 8, 8), labels))
    smoothed = nn.CrossEntropyLoss(label_smoothing=0.1)
    torch.testing.assert_close(out.loss, smoothed(logits, labels) + 0.3 * smoothed(aux, labels))
    assert out.outputs.logits is logits


def test_the_direction_and_the_default_reporting_of_a_task():
    lower = DigitValue()
    assert lower.is_better(1.0, None) and lower.is_better(1.0, 2.0) and not lower.is_better(2.0, 1.0)
    assert ClassificationTask().is_better(2.0, 1.0) and not ClassificationTask().is_better(1.0, 1.0)
    columns = lower.columns({"loss": 1.0, "mae": 0.5}, {"loss": 2.0, "mae": 1.5, "n": 10})
    assert columns == {"train_loss": 1.0, "train_mae": 0.5, "test_loss": 2.0, "test_mae": 1.5}
    assert lower.describe({"epoch": 1, **columns}) == "train loss 1  train mae 0.5  test loss 2  test mae 1.5"
    assert lower.report(columns, 1.25) == [
        ("final test loss", "2"),
        ("final test mae", "1.5"),
        ("best test mae", "1.25"),
    ]


def test_a_curve_measured_on_the_test_set_only_is_drawn(tmp_path):
    from convzoo.train.run_folder import plot_curves

    history = [{"epoch": e, "train_loss": 1 / e, "test_loss": 1.2 / e, "test_map": 0.1 * e} for e in (1, 2, 3)]
    curves = (Curve("loss", "loss", "loss"), Curve("map", "mAP", "mAP"))
    plot_curves(history, tmp_path / "curves.png", curves=curves)
    assert (tmp_path / "curves.png").stat().st_size > 1000
