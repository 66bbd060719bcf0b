"""The registered detectors: losses in training, torchvision-style detections in evaluation, bad targets refused."""

import pytest
import torch

from convzoo.detection.anchors import AnchorConfig
from convzoo.detection.detectors import FasterRCNN, FastRCNN, MaskRCNN
from convzoo.detection.rpn import RPNConfig
from convzoo.factory import create_model
from convzoo.registry import get_model_card, list_models

DETECTORS = ["fast_rcnn", "faster_rcnn", "faster_rcnn_fpn", "mask_rcnn"]


def _targets(masks: bool = False) -> list[dict[str, torch.Tensor]]:
    """Two objects in the first image, none in the second."""
    boxes = torch.tensor([[8.0, 10.0, 26.0, 30.0], [36.0, 30.0, 56.0, 44.0]])
    first = {"boxes": boxes, "labels": torch.tensor([1, 4])}
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}
    if masks:
        m = torch.zeros(2, 64, 64, dtype=torch.bool)
        m[0, 10:30, 8:26] = True
        m[1, 30:44, 36:56] = True
        first["masks"], empty["masks"] = m, torch.zeros(0, 64, 64, dtype=torch.bool)
    return [first, empty]


def _proposals(targets: list[dict[str, torch.Tensor]]) -> list[torch.Tensor]:
    """Jittered ground-truth boxes plus random boxes, as a stand-in for selective search."""
    g = torch.Generator().manual_seed(0)
    out = []
    for t in targets:
        jitter = t["boxes"].repeat(4, 1) + torch.randn(t["boxes"].shape[0] * 4, 4, generator=g) * 2
        corner = torch.rand(20, 2, generator=g) * 48
        random = torch.cat([corner, corner + 4 + torch.rand(20, 2, generator=g) * 20], 1)
        out.append(torch.cat([jitter, random]))
    return out


@pytest.mark.parametrize("name", DETECTORS)
def test_registered_detector_trains_and_detects(name):
    torch.manual_seed(0)
    model = create_model(name)
    card = get_model_card(name)
    assert card.task == "detection" and card.num_classes == 7 and model.num_classes == 7
    masks = isinstance(model, MaskRCNN)
    targets = _targets(masks)
    kwargs = {"proposals": _proposals(targets)} if isinstance(model, FastRCNN) else {}
    x = torch.randn(2, 3, 64, 64, requires_grad=True)
    losses = model.train()(x, targets, **kwargs)
    expected = {"loss_classifier", "loss_box_reg"}
    expected |= {"loss_objectness", "loss_rpn_box_reg"} if isinstance(model, FasterRCNN) else set()
    expected |= {"loss_mask"} if masks else set()
    assert set(losses) == expected
    assert all(v.dim() == 0 and v.isfinite() for v in losses.values())
    sum(losses.values()).backward()
    assert x.grad.abs().sum() > 0  # the gradient reaches the images through the shared backbone
    model.eval()
    with torch.no_grad():
        detections = model(x.detach(), **kwargs)
    assert len(detections) == 2
    for d in detections:
        k = d["boxes"].shape[0]
        assert d["boxes"].shape == (k, 4) and d["scores"].shape == (k,) and d["labels"].dtype == torch.int64
        assert ((d["labels"] >= 1) & (d["labels"] <= 6)).all() and ((d["boxes"] >= 0) & (d["boxes"] <= 64)).all()
        if masks:
            assert d["masks"].shape == (k, 64, 64) and ((d["masks"] >= 0) & (d["masks"] <= 1)).all()


def test_detectors_listed_under_their_task():
    assert set(DETECTORS) <= set(list_models(task="detection"))
    assert not set(DETECTORS) & set(list_models())


def test_images_without_objects_train_as_background():
    torch.manual_seed(0)
    model = create_model("faster_rcnn").train()
    empty = _targets()[1]
    losses = model(torch.randn(2, 3, 64, 64), [empty, empty])
    assert all(v.isfinite() for v in losses.values())
    assert losses["loss_box_reg"].item() == 0 and losses["loss_rpn_box_reg"].item() == 0
    assert losses["loss_classifier"].item() > 0  # every RoI is taught to be background
    # Fast R-CNN with no proposals and no objects has no RoI at all: a zero loss, not NaN.
    fast = create_model("fast_rcnn").train()
    losses = fast(torch.randn(1, 3, 64, 64), [empty], proposals=[torch.zeros(0, 4)])
    assert all(v.item() == 0 for v in losses.values())
    sum(losses.values()).backward()


@pytest.mark.parametrize(
    ("boxes", "labels", "message"),
    [
        ([[10.0, 10.0, 10.0, 20.0]], [1], "no area"),  # zero width
        ([[70.0, 10.0, 90.0, 20.0]], [1], "no area"),  # outside the image
        ([[10.0, 10.0, 20.0, 20.0]], [7], "class ids"),  # num_classes is 7: classes 1..6
        ([[10.0, 10.0, 20.0, 20.0]], [0], "class ids"),  # the background is no object
    ],
)
def test_bad_targets_raise(boxes, labels, message):
    model = create_model("faster_rcnn").train()
    target = {"boxes": torch.tensor(boxes), "labels": torch.tensor(labels)}
    with pytest.raises(ValueError, match=message):
        model(torch.randn(1, 3, 64, 64), [target])


def test_proposals_are_required_exactly_where_there_is_no_rpn():
    x = torch.randn(1, 3, 64, 64)
    with pytest.raises(ValueError, match="needs proposals"):
        create_model("fast_rcnn").eval()(x)
    with pytest.raises(ValueError, match="its own proposals"):
        create_model("faster_rcnn").eval()(x, proposals=[torch.zeros(0, 4)])
    with pytest.raises(ValueError, match="needs targets"):
        create_model("faster_rcnn").train()(x)
    detections = create_model("fast_rcnn").eval()(x, proposals=[torch.zeros(0, 4)])
    assert detections[0]["boxes"].shape == (0, 4)


def test_parts_are_configured_by_dataclasses_or_dicts():
    model = create_model(
        "faster_rcnn",
        num_classes=3,
        rpn={"nms_thresh": 0.6, "post_nms_top_n_test": 7},
        anchors=AnchorConfig(sizes=((12.0, 24.0),), aspect_ratios=((1.0,),)),
        roi_heads={"pooling": "pool", "output_size": 5},
    )
    assert model.rpn.cfg == RPNConfig(nms_thresh=0.6, post_nms_top_n_test=7)
    assert model.rpn.head.cls_logits.out_channels == 2 and model.roi_heads.pooler.kind == "pool"
    assert model.roi_heads.predictor.cls_score.out_features == 3
    proposals, _ = model.eval().rpn((64, 64), model.backbone(torch.randn(1, 3, 64, 64)))
    assert proposals[0].shape[0] <= 7
    # Any registered classifier serves as backbone, through its feature_info; FPN on any model with an RPN.
    model = create_model("mask_rcnn", backbone="resnet18", backbone_indices=(-3, -2), fpn={"out_channels": 32})
    assert model.backbone.strides == [8, 16] and model.neck.strides == [8, 16, 32]
    assert model.rpn.anchors.cfg.sizes == ((8.0,), (16.0,), (32.0,))  # one anchor size per pyramid level


def test_unknown_settings_raise():
    with pytest.raises(TypeError, match="rpn"):
        create_model("faster_rcnn", rnp={})
    with pytest.raises(TypeError, match="fast_rcnn got unexpected"):
        create_model("fast_rcnn", rpn={})  # Fast R-CNN has no RPN
    with pytest.raises(TypeError, match="no settings"):
        create_model("faster_rcnn", rpn={"nms": 0.5})
    with pytest.raises(ValueError, match="levels"):
        create_model("faster_rcnn_fpn", anchors={"sizes": ((8.0, 16.0),)})
