"""COCO and VOC detection metrics: agreement with pycocotools, edge cases, and a VOC example worked by hand."""

import contextlib
import io
import math

import numpy as np
import pytest
import torch

from convzoo.detection.evaluate import DetectionEvaluator, box_iou, voc_ap, voc_evaluate

SIZE = 160  # large enough for objects in all three COCO area ranges


def _random_scene(g: torch.Generator, num_classes: int, with_gt: bool, with_preds: bool) -> tuple[dict, dict]:
    m = int(torch.randint(1, 7, (), generator=g)) if with_gt else 0
    xy = torch.rand(m, 2, generator=g) * (SIZE - 20)
    wh = 4 + torch.rand(m, 2, generator=g) * 150  # areas from 16 to ~20,000 square pixels
    gt_boxes = torch.cat([xy, (xy + wh).clamp(max=SIZE)], 1).round()
    gt_labels = torch.randint(1, num_classes - 2, (m,), generator=g)  # the last class has no ground truth
    # Detections: jittered copies of the objects (some relabelled, some duplicated) and random boxes.
    copies = gt_boxes.repeat(2, 1) + torch.randn(2 * m, 4, generator=g) * 6
    labels = gt_labels.repeat(2)
    flip = torch.rand(2 * m, generator=g) < 0.2
    labels = torch.where(flip, torch.randint(1, num_classes, (2 * m,), generator=g), labels)
    k = int(torch.randint(0, 8, (), generator=g))
    rxy = torch.rand(k, 2, generator=g) * (SIZE - 20)
    rand = torch.cat([rxy, rxy + 4 + torch.rand(k, 2, generator=g) * 80], 1)
    boxes = torch.cat([copies, rand]).clamp(0, SIZE)
    boxes[:, 2:] = torch.maximum(boxes[:, 2:], boxes[:, :2] + 1)
    labels = torch.cat([labels, torch.randint(1, num_classes, (k,), generator=g)])
    scores = torch.rand(len(boxes), generator=g)
    scores[:3] = 0.5  # ties, ranked as pycocotools ranks them
    if not with_preds:
        boxes, labels, scores = boxes[:0], labels[:0], scores[:0]
    return {"boxes": boxes, "labels": labels, "scores": scores}, {"boxes": gt_boxes, "labels": gt_labels}


def _mask_of(box: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """The ellipse inscribed in ``box`` as float scores: above 0.5 inside, random below 0.5 outside."""
    ys, xs = torch.meshgrid(torch.arange(SIZE) + 0.5, torch.arange(SIZE) + 0.5, indexing="ij")
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    rx, ry = ((box[2] - box[0]) / 2).clamp(min=1), ((box[3] - box[1]) / 2).clamp(min=1)
    inside = ((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2 <= 1
    return torch.where(inside, 0.6, 0.45) * torch.rand(SIZE, SIZE, generator=g) + inside.float() * 0.4


def _stack(masks: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack(masks) if masks else torch.zeros(0, SIZE, SIZE)


def _dataset(seed: int, num_classes: int = 5, n: int = 7, masks: bool = False) -> tuple[list, list]:
    g = torch.Generator().manual_seed(seed)
    preds, targets = [], []
    for i in range(n):
        pred, target = _random_scene(g, num_classes, with_gt=i != 1, with_preds=i != 2)
        if masks:
            target["masks"] = _stack([_mask_of(b, g) > 0.5 for b in target["boxes"]])
            pred["masks"] = _stack([_mask_of(b, g) for b in pred["boxes"]])
        preds.append(pred)
        targets.append(target)
    return preds, targets


def _pycocotools(preds: list, targets: list, num_classes: int, iou_type: str) -> np.ndarray:
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    def rle(m: torch.Tensor) -> dict:
        return mask_utils.encode(np.asfortranarray(m.numpy().astype(np.uint8)))

    images, annotations, results = [], [], []
    for i, (pred, target) in enumerate(zip(preds, targets)):
        images.append({"id": i, "width": SIZE, "height": SIZE})
        for j, (box, label) in enumerate(zip(target["boxes"].tolist(), target["labels"].tolist())):
            xywh = [box[0], box[1], box[2] - box[0], box[3] - box[1]]
            ann = {"id": len(annotations) + 1, "image_id": i, "category_id": label, "bbox": xywh, "iscrowd": 0}
            if iou_type == "segm":
                ann |= {"segmentation": rle(target["masks"][j]), "area": float(target["masks"][j].sum())}
            else:
                ann["area"] = xywh[2] * xywh[3]
            annotations.append(ann)
        for j, (box, label, score) in enumerate(zip(*(pred[k].tolist() for k in ("boxes", "labels", "scores")))):
            res = {"image_id": i, "category_id": label, "score": score}
            if iou_type == "segm":
                res["segmentation"] = rle(pred["masks"][j] > 0.5)
            else:
                res["bbox"] = [box[0], box[1], box[2] - box[0], box[3] - box[1]]
            results.append(res)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {
            "images": images,
            "annotations": annotations,
            "categories": [{"id": c, "name": str(c)} for c in range(1, num_classes)],
        }
        gt.createIndex()
        coco = COCOeval(gt, gt.loadRes(results), iou_type)
        coco.evaluate()
        coco.accumulate()
        coco.summarize()
    return coco.stats, coco.eval["precision"]


@pytest.mark.parametrize(("iou_type", "seed"), [("bbox", 0), ("bbox", 3), ("segm", 6)])
def test_agrees_with_pycocotools(iou_type, seed):
    pytest.importorskip("pycocotools")
    num_classes = 5
    preds, targets = _dataset(seed, num_classes, masks=iou_type == "segm")
    stats, precision = _pycocotools(preds, targets, num_classes, iou_type)
    evaluator = DetectionEvaluator(num_classes, iou_type=iou_type)
    evaluator.update(preds[:3], targets[:3])  # in two batches
    evaluator.update(preds[3:], targets[3:])
    out = evaluator.compute()
    ours = [out[k] for k in ("map", "ap50", "ap75", "ap_small", "ap_medium", "ap_large")]
    theirs = [s if s >= 0 else math.nan for s in stats[:6]]
    np.testing.assert_allclose(ours, theirs, atol=1e-3)
    assert not math.isnan(out["ap_small"]) and not math.isnan(out["ap_large"])  # every range is exercised
    per_class = precision[:, :, :, 0, -1]
    theirs_per_class = [per_class[:, :, k].mean() if (per_class[:, :, k] > -1).all() else math.nan for k in range(4)]
    np.testing.assert_allclose(out["ap_per_class"], theirs_per_class, atol=1e-3)
    assert math.isnan(out["ap_per_class"][-1])  # a class with detections but no ground truth
    assert out["n_images"] == len(preds)
    assert 0 < out["map"] < 1


def test_perfect_and_missing_detections():
    targets = [{"boxes": torch.tensor([[0.0, 0, 10, 10], [20, 20, 40, 50]]), "labels": torch.tensor([1, 2])}]
    perfect = [{"boxes": targets[0]["boxes"], "labels": targets[0]["labels"], "scores": torch.tensor([0.9, 0.8])}]
    evaluator = DetectionEvaluator(3)
    evaluator.update(perfect, targets)
    out = evaluator.compute()
    assert out["map"] == pytest.approx(1.0) and out["ap_per_class"] == pytest.approx([1.0, 1.0])
    assert math.isnan(out["ap_medium"]) and math.isnan(out["ap_large"])  # no object of those sizes

    empty = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long), "scores": torch.zeros(0)}]
    evaluator.reset()
    evaluator.update(empty, targets)
    assert evaluator.compute()["map"] == 0.0

    # An image without ground truth: its detections are all false positives of their class.
    no_gt = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}
    stray = {"boxes": torch.tensor([[0.0, 0, 10, 10]]), "labels": torch.tensor([1]), "scores": torch.tensor([0.95])}
    evaluator.reset()
    evaluator.update([perfect[0], stray], [targets[0], no_gt])
    out = evaluator.compute()
    assert out["ap_per_class"][1] == pytest.approx(1.0)
    assert 0.4 < out["ap_per_class"][0] < 0.6  # precision 1/2 at full recall
    assert out["n_images"] == 2


def test_nothing_to_evaluate_is_nan_and_bad_labels_raise():
    evaluator = DetectionEvaluator(3)
    assert math.isnan(evaluator.compute()["map"])
    bad = [{"boxes": torch.zeros(1, 4), "labels": torch.tensor([3]), "scores": torch.ones(1)}]
    with pytest.raises(ValueError, match="outside 1..2"):
        evaluator.update(bad, [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}])
    good = [{"boxes": torch.zeros(1, 4), "labels": torch.tensor([2]), "scores": torch.ones(1)}]
    with pytest.raises(ValueError, match="needs 'masks'"):
        DetectionEvaluator(3, iou_type="segm").update(good, good)
    with pytest.raises(ValueError, match="iou_type"):
        DetectionEvaluator(3, iou_type="keypoints")


def test_box_iou():
    iou = box_iou(np.array([[0, 0, 10, 10]]), np.array([[5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 10, 10]]))
    np.testing.assert_allclose(iou, [[1 / 3, 0.0, 1.0]])


def test_voc_ap_by_hand():
    # Detections ranked: TP, FP, TP, of 4 objects -> recall .25 .25 .5, precision 1 .5 .667
    recall, precision = [0.25, 0.25, 0.5], [1.0, 0.5, 2 / 3]
    assert voc_ap(recall, precision) == pytest.approx(0.25 * 1 + 0.25 * 2 / 3)
    # 11-point: recall >= 0, .1, .2 -> 1; >= .3, .4, .5 -> 2/3; above -> 0
    assert voc_ap(recall, precision, use_07_metric=True) == pytest.approx((3 * 1 + 3 * 2 / 3) / 11)


def test_voc_evaluate_by_hand():
    targets = [
        {"boxes": torch.tensor([[0.0, 0, 10, 10], [50, 50, 60, 60]]), "labels": torch.tensor([1, 1])},
        {
            "boxes": torch.tensor([[0.0, 0, 20, 20], [30, 30, 40, 40]]),
            "labels": torch.tensor([1, 2]),
            "difficult": torch.tensor([False, True]),
        },
    ]
    preds = [
        # 0.9 hits object 0; 0.8 duplicates it (FP); 0.3 misses everything (FP)
        {
            "boxes": torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 9], [80, 80, 90, 90]]),
            "labels": torch.tensor([1, 1, 1]),
            "scores": torch.tensor([0.9, 0.8, 0.3]),
        },
        # 0.7 hits image 1's object; the class-2 detection hits a difficult object and counts neither way
        {
            "boxes": torch.tensor([[1.0, 1, 20, 20], [30, 30, 40, 40]]),
            "labels": torch.tensor([1, 2]),
            "scores": torch.tensor([0.7, 0.6]),
        },
    ]
    out = voc_evaluate(preds, targets, num_classes=3)
    # class 1 ranked TP FP TP FP of 3 objects: recall 1/3 1/3 2/3 2/3, precision 1 .5 .667 .5
    assert out["ap_per_class"][0] == pytest.approx(1 / 3 * 1 + 1 / 3 * 2 / 3)
    assert math.isnan(out["ap_per_class"][1])  # only a difficult object
    assert out["map"] == pytest.approx(out["ap_per_class"][0])


def test_a_match_in_range_beats_a_better_one_out_of_range():
    # In the small range the medium object B is ignored: COCO matches the detection to the small A (IoU 0.83)
    # although it overlaps B more (IoU 0.94), so A counts as found up to IoU 0.8.
    pytest.importorskip("pycocotools")
    targets = [{"boxes": torch.tensor([[0.0, 0, 30, 30], [0, 0, 34, 34]]), "labels": torch.tensor([1, 1])}]
    preds = [{"boxes": torch.tensor([[0.0, 0, 33, 33]]), "labels": torch.tensor([1]), "scores": torch.tensor([0.9])}]
    evaluator = DetectionEvaluator(2)
    evaluator.update(preds, targets)
    out = evaluator.compute()
    stats, _ = _pycocotools(preds, targets, 2, "bbox")
    assert out["ap_small"] == pytest.approx(stats[3], abs=1e-3) and out["ap_small"] == pytest.approx(0.7, abs=1e-3)
    assert out["ap_medium"] == pytest.approx(stats[4], abs=1e-3)


def _shard_worker(rank: int, world: int, port: int, preds: list, targets: list, out: dict) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    evaluator = DetectionEvaluator(5)
    evaluator.update(preds[rank::world], targets[rank::world])
    evaluator.gather()
    evaluator.gather()  # a second call adds nothing
    out[rank] = (evaluator.n_images, evaluator.compute()["map"])
    dist.destroy_process_group()


def test_shards_merge_to_the_whole_set_in_process_and_across_processes():
    import socket

    import torch.multiprocessing as mp

    preds, targets = _dataset(seed=3, n=9)
    whole = DetectionEvaluator(5)
    whole.update(preds, targets)
    expected = whole.compute()["map"]
    first, second = DetectionEvaluator(5), DetectionEvaluator(5)
    first.update(preds[:4], targets[:4])
    second.update(preds[4:], targets[4:])
    assert first.compute()["map"] != pytest.approx(expected)  # one shard alone is not the set
    first.merge([second])
    assert first.n_images == 9 and first.compute()["map"] == pytest.approx(expected)
    with pytest.raises(ValueError, match="settings differ"):
        first.merge([DetectionEvaluator(5, iou_type="segm")])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = mp.Manager().dict()
    mp.spawn(_shard_worker, args=(2, port, preds, targets, out), nprocs=2)
    assert {rank: n for rank, (n, _) in out.items()} == {0: 9, 1: 9}
    assert all(value == pytest.approx(expected) for _, value in out.values())
