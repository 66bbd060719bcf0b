"""The segmentation task: loss, ignore index, centre crops, metrics from a confusion matrix, and a run of the engine."""

import csv
import math

import pytest
import torch
import torch.nn as nn

from convzoo.data import load_dataset
from convzoo.data.transforms import IGNORE_INDEX
from convzoo.factory import create_model
from convzoo.segmentation.losses import center_crop_mask, dice_loss, segmentation_loss
from convzoo.segmentation.metrics import (
    check_mask_values,
    confusion_matrix,
    scores_from_confusion,
)
from convzoo.segmentation.task import SegmentationTask
from convzoo.train import TrainConfig, Trainer
from convzoo.train.tasks import task_for


def tiny_net(num_classes: int = 7, padding: int = 1) -> nn.Module:
    """Two convolutions; ``padding=0`` makes it a network of valid convolutions (output 2 pixels smaller)."""
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, num_classes, 3, padding=padding))


def batch(n: int = 2, size: int = 8, num_classes: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, size, size, generator=g)
    masks = torch.randint(num_classes, (n, size, size), generator=g, dtype=torch.uint8)
    return x, torch.zeros(n, dtype=torch.int64), masks


def test_iou_of_a_hand_made_confusion_matrix():
    # rows: truth, columns: prediction
    cm = torch.tensor([[5, 1, 0], [2, 3, 0], [0, 0, 4]])
    scores = scores_from_confusion(cm)
    assert scores.pixel_accuracy == pytest.approx(12 / 15)
    assert scores.iou == pytest.approx((5 / 8, 3 / 6, 4 / 4))
    assert scores.mean_iou == pytest.approx((5 / 8 + 3 / 6 + 1) / 3)


def test_confusion_matrix_counts_pixels_and_leaves_out_ignored_ones():
    pred = torch.tensor([[0, 1, 1, 2]])
    truth = torch.tensor([[0, 1, 2, IGNORE_INDEX]])
    cm = confusion_matrix(pred, truth, 3)
    assert cm.tolist() == [[1, 0, 0], [0, 1, 0], [0, 1, 0]]


def test_a_class_absent_from_truth_and_prediction_is_left_out_of_the_mean():
    cm = torch.tensor([[3, 1, 0], [1, 3, 0], [0, 0, 0]])
    scores = scores_from_confusion(cm)
    assert math.isnan(scores.iou[2])
    assert scores.mean_iou == pytest.approx(3 / 5)
    # predicted but never true: IoU 0, and it counts
    assert scores_from_confusion(torch.tensor([[3, 1], [0, 0]])).iou == pytest.approx((0.75, 0.0))


def test_out_of_range_classes_name_the_values_and_the_range():
    masks = torch.tensor([[0, 1, 9], [IGNORE_INDEX, 7, 2]], dtype=torch.uint8)
    with pytest.raises(ValueError, match=r"class values 7, 9 are out of range.*0\.\.6 \(7 classes\) and 255"):
        check_mask_values(masks, 7)
    check_mask_values(masks, 10)  # 255 is the ignore label, never out of range
    task = SegmentationTask()
    x, y, m = batch(num_classes=3)
    m[0, 0, 0] = 5
    with pytest.raises(ValueError, match="class values 5"):
        task.train_step(tiny_net(3), (x, y, m))


def test_a_mask_of_another_size_than_its_image_is_refused():
    task = SegmentationTask()
    x, y, m = batch(size=8)
    with pytest.raises(ValueError, match="each mask must be the size of its image"):
        task.train_step(tiny_net(3), (x, y, m[:, :6, :6]))


def test_the_ignore_index_is_really_ignored():
    x, y, m = batch(n=2, size=8, num_classes=3)
    logits = torch.randn(2, 3, 8, 8)
    m[:, :4] = IGNORE_INDEX
    other = logits.clone()
    other[:, :, :4] = torch.randn(2, 3, 4, 8) * 10  # change only the ignored pixels
    for dice_weight in (0.0, 1.0):
        a = segmentation_loss(logits, m, dice_weight=dice_weight)
        b = segmentation_loss(other, m, dice_weight=dice_weight)
        assert a.item() == pytest.approx(b.item(), abs=1e-6)
    expected = nn.functional.cross_entropy(logits[:, :, 4:], m[:, 4:].long())
    assert segmentation_loss(logits, m).item() == pytest.approx(expected.item(), rel=1e-6)
    every_pixel_ignored = torch.full_like(m, IGNORE_INDEX)
    assert segmentation_loss(logits, every_pixel_ignored).item() == 0.0


def test_dice_loss_is_zero_for_a_perfect_prediction_and_near_one_for_a_wrong_one():
    m = torch.randint(3, (2, 8, 8))
    perfect = nn.functional.one_hot(m, 3).permute(0, 3, 1, 2).float() * 50
    wrong = nn.functional.one_hot((m + 1) % 3, 3).permute(0, 3, 1, 2).float() * 50
    assert dice_loss(perfect, m).item() < 0.01
    assert dice_loss(wrong, m).item() > 0.95
    with_dice = segmentation_loss(wrong, m, dice_weight=0.5).item()
    assert with_dice == pytest.approx(segmentation_loss(wrong, m).item() + 0.5 * dice_loss(wrong, m).item())


def test_label_smoothing_applies_to_training_only():
    x, y, m = batch(num_classes=7)
    net = tiny_net()
    plain = SegmentationTask(dice_weight=0).train_step(net, (x, y, m)).loss
    smoothed = SegmentationTask(label_smoothing=0.1, dice_weight=0).train_step(net, (x, y, m)).loss
    assert smoothed.item() != pytest.approx(plain.item())
    with_dice = SegmentationTask().train_step(net, (x, y, m)).loss  # cross-entropy + 1 x Dice by default
    logits, targets = SegmentationTask().eval_step(net, (x, y, m))
    assert with_dice.item() == pytest.approx(plain.item() + dice_loss(logits, targets).item(), rel=1e-5)
    task = SegmentationTask(label_smoothing=0.1)
    metrics = task.eval_metrics()
    metrics.update((x, y, m), task.eval_step(net, (x, y, m)))
    assert metrics.compute()["loss"] == pytest.approx(plain.item(), rel=1e-5)


def test_masks_are_centre_cropped_to_the_logits_of_valid_convolutions():
    x, y, m = batch(size=8, num_classes=7)
    task = SegmentationTask()
    logits, targets = task.eval_step(tiny_net(padding=0), (x, y, m))
    assert logits.shape[-2:] == (6, 6)
    assert torch.equal(targets, m[:, 1:7, 1:7])
    assert task.train_step(tiny_net(padding=0), (x, y, m)).loss.isfinite()
    with pytest.raises(ValueError, match="logits are 10x10 for masks of 8x8"):
        center_crop_mask(m, (10, 10))
    with pytest.raises(ValueError, match="centre crop"):
        center_crop_mask(m, (7, 7))  # a margin of 1/2 pixel on each side: not a centre crop


def test_metrics_add_up_over_processes_as_over_batches():
    task = SegmentationTask()
    net = tiny_net()
    batches = [batch(n=2, size=8, num_classes=7, seed=s) for s in range(2)]
    whole = task.eval_metrics()
    parts = [task.eval_metrics(), task.eval_metrics()]
    for b, part in zip(batches, parts):
        outputs = task.eval_step(net, b)
        whole.update(b, outputs)
        part.update(b, outputs)
    # A reduce that adds the sums of both "processes", as all_reduce does.
    other = parts[1].scores()[0].confusion.flatten().tolist()

    def reduce(values):
        return [a + b for a, b in zip(values, [parts[1].loss_sum, parts[1].loss_pixels, *other])]

    assert parts[0].compute(reduce) == pytest.approx(whole.compute(), nan_ok=True)
    assert torch.equal(whole.scores()[0].confusion, parts[0].confusion + parts[1].confusion)


def test_registered_networks_get_the_task_through_their_cards():
    task = task_for("unet_small")
    assert isinstance(task, SegmentationTask) and task.extras == ("masks",) and not task.measures_step_format
    assert task.best_metric == "miou" and task.higher_is_better


def test_the_original_unet_is_scored_on_the_centre_of_its_input():
    net = create_model("unet_original", num_classes=3, in_chans=3, width=4)
    x, y, m = batch(n=1, size=188, num_classes=3)
    task = SegmentationTask()
    logits, targets = task.eval_step(net, (x, y, m))
    assert logits.shape[-2:] == net.output_size((188, 188)) == (4, 4)
    assert torch.equal(targets, m[:, 92:96, 92:96])
    assert task.train_step(net, (x, y, m)).loss.isfinite()


def test_one_epoch_of_the_engine_on_scenes(tmp_path):
    train, test = load_dataset("scenes", image_size=32, n_train=64, n_test=32)
    config = TrainConfig(
        model="tiny-segmenter",
        data="scenes",
        image_size=32,
        out=str(tmp_path / "run"),
        recipe_overrides={"epochs": 1, "batch_size": 16},
        progress=False,
        amp="off",
        channels_last=False,
    )
    task = SegmentationTask()  # the trainer tells it the classes, which name the IoUs in the report
    result = Trainer(config, task=task, model=tiny_net(padding=0), datasets=(train, test)).run()
    row = result.history[-1]
    assert 0 <= row["test_miou"] <= 1 and 0 <= row["test_pixel_acc"] <= 100
    assert {f"test_iou_{c}" for c in range(7)} <= set(row)
    with open(tmp_path / "run" / "metrics.csv") as f:
        header = next(csv.reader(f))
    assert {"train_loss", "train_pixel_err", "train_miou", "test_miou", "test_pixel_acc"} <= set(header)
    report = (tmp_path / "run" / "report.md").read_text()
    assert "final test mean IoU" in report and "IoU of circle (1)" in report
    assert result.best == pytest.approx(row["test_miou"])
    assert (tmp_path / "run" / "curves.png").stat().st_size > 0
