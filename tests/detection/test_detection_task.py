"""The detection task: padded rows to targets, summed losses, COCO metrics, and a run through the engine."""

import math

import pytest
import torch

from convzoo.data.scenes import make_scenes
from convzoo.detection.task import DetectionTask, detection_task, split_proposals, split_targets
from convzoo.factory import create_model
from convzoo.train.tasks import task_for


def test_padded_rows_become_per_image_targets():
    boxes = torch.tensor([[[1.0, 2, 5, 6], [0, 0, 0, 0]], [[0, 0, 0, 0], [0, 0, 0, 0]]])
    labels = torch.tensor([[3, -1], [-1, -1]])
    masks = torch.zeros(2, 2, 8, 8, dtype=torch.bool)
    first, second = split_targets(boxes, labels, masks)
    assert first["boxes"].tolist() == [[1.0, 2, 5, 6]] and first["labels"].tolist() == [3]
    assert first["masks"].shape == (1, 8, 8)
    assert second["boxes"].shape == (0, 4) and second["labels"].shape == (0,) and second["masks"].shape == (0, 8, 8)
    proposals = split_proposals(torch.tensor([[[1.0, 1, 4, 4], [0, 0, 0, 0]], [[0, 0, 0, 0], [2, 2, 3, 3]]]))
    assert [p.tolist() for p in proposals] == [[[1.0, 1, 4, 4]], [[2.0, 2, 3, 3]]]


def test_the_task_asks_for_what_the_detector_needs():
    assert isinstance(task_for("faster_rcnn"), DetectionTask)
    assert task_for("faster_rcnn").extras == ("boxes", "box_labels")
    assert detection_task(model="mask_rcnn").extras == ("boxes", "box_labels", "instance_masks")
    assert DetectionTask.for_model("fast_rcnn").extras == ("boxes", "box_labels", "proposals")
    assert DetectionTask.for_model(create_model("mask_rcnn")).extras[-1] == "instance_masks"
    assert not DetectionTask.measures_step_format
    with pytest.raises(ValueError, match="boxes"):
        DetectionTask(("masks",))
    with pytest.raises(ValueError, match=r"extras \['instance_masks'\].*for_model\('mask_rcnn'\)"):
        DetectionTask().train_step(create_model("mask_rcnn"), (torch.zeros(1, 3, 64, 64), torch.zeros(1)))


def _batch(task: DetectionTask, n: int = 4):
    data = make_scenes(n, image_size=64, seed=3)
    x = (data.images.float() / 255 - 0.24) / 0.18
    return (x, data.labels, *(data.extras[name] for name in task.extras)), data


def test_train_step_sums_the_losses_and_logs_each():
    torch.manual_seed(0)
    task = DetectionTask.for_model("mask_rcnn")
    model = create_model("mask_rcnn").train()
    batch, _ = _batch(task)
    out = task.train_step(model, batch)
    assert set(out.outputs) == {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg", "loss_mask"}
    assert out.loss.item() == pytest.approx(sum(out.outputs.values()), rel=1e-5)
    metrics = task.train_metrics()
    metrics.update(batch, out.outputs, out.loss.item())
    logged = metrics.compute()
    assert logged["loss"] == pytest.approx(out.loss.item(), rel=1e-5) and "loss_mask" in logged


def test_eval_metrics_come_from_the_coco_evaluator():
    task = DetectionTask()
    batch, data = _batch(task, n=6)
    targets = task.targets(batch)
    perfect = [{"boxes": t["boxes"], "labels": t["labels"], "scores": torch.ones(len(t["labels"]))} for t in targets]
    task.num_classes = 7
    metrics = task.eval_metrics()
    metrics.update(batch, (perfect, {"loss_classifier": 0.5}))
    result = metrics.compute()
    assert result["map"] == pytest.approx(1.0) and result["ap50"] == pytest.approx(1.0) and result["n"] == 6
    assert result["loss"] == pytest.approx(0.5)
    present = set(data.extras["box_labels"][data.extras["box_labels"] >= 0].tolist())
    assert all(math.isnan(result[f"ap_class{c}"]) != (c in present) for c in range(1, 7))
    # Detections shifted off their objects score zero.
    metrics = task.eval_metrics()
    missed = [{**p, "boxes": (p["boxes"] + 32) % 64 + torch.tensor([0.0, 0, 1, 1])} for p in perfect]
    metrics.update(batch, (missed, {}))
    assert metrics.compute()["ap50"] < 0.2


def test_one_epoch_through_the_engine(tmp_path):
    from convzoo.train import TrainConfig, Trainer, load_trained

    torch.manual_seed(0)
    train, test = make_scenes(32, image_size=64, seed=1), make_scenes(8, image_size=64, seed=1, split="test")
    config = TrainConfig(
        model="faster_rcnn",
        data="scenes",
        image_size=64,
        recipe_overrides={"epochs": 1, "batch_size": 8, "lr": 0.01},
        out=str(tmp_path / "run"),
        progress=False,
        device="cpu",
        amp="off",
    )
    result = Trainer(config, datasets=(train, test)).run()
    row = result.history[-1]
    for key in ("train_loss", "train_loss_objectness", "test_loss", "test_map", "test_ap50", "test_ap75"):
        assert key in row and math.isfinite(row[key]), key
    assert (tmp_path / "run" / "report.md").exists() and (tmp_path / "run" / "curves.png").exists()
    model, info = load_trained(tmp_path / "run" / "last.pt")
    assert type(model).__name__ == "FasterRCNN" and list(info["image_size"])[-1] == 64
    assert set(model(test.images[:1].float() / 255)[0]) == {"boxes", "labels", "scores"}


def test_fast_rcnn_trains_from_the_engine_with_proposals_it_computes(tmp_path):
    from convzoo.train import TrainConfig, Trainer

    torch.manual_seed(0)
    train, test = make_scenes(8, image_size=64, seed=2), make_scenes(4, image_size=64, seed=2, split="test")
    config = TrainConfig(
        model="fast_rcnn",
        data="scenes",
        image_size=64,
        recipe_overrides={"epochs": 1, "batch_size": 4, "lr": 0.01},
        out=str(tmp_path / "run"),
        progress=False,
        device="cpu",
        amp="off",
    )
    trainer = Trainer(config, datasets=(train, test))
    assert trainer.task.extras == ("boxes", "box_labels", "proposals")  # the task fitted itself to the model
    proposals = trainer.data.train_set.extras["proposals"]
    assert proposals.shape[0] == 8 and (proposals.abs().sum(-1) > 0).sum(1).min() >= 10
    row = trainer.run().history[-1]
    assert math.isfinite(row["train_loss"]) and 0 <= row["test_map"] <= 1
