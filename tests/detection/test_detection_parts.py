"""The detector parts: anchors and box coding against torchvision, matching, sampling, RoI pooling, FPN, RPN."""

import math

import pytest
import torch
from torchvision.models.detection import _utils as tv_utils
from torchvision.models.detection.anchor_utils import AnchorGenerator as TVAnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import box_iou, roi_align, roi_pool

from convzoo.detection.anchors import AnchorConfig, AnchorGenerator
from convzoo.detection.boxes import BACKGROUND, BETWEEN, BoxCoder, Matcher, check_targets, sample_balanced
from convzoo.detection.fpn import FeaturePyramid, FPNConfig
from convzoo.detection.roi_heads import RoIPooler, paste_masks
from convzoo.detection.rpn import RegionProposalNetwork, RPNConfig, RPNHead


@pytest.mark.parametrize(
    ("sizes", "ratios", "grids"),
    [
        (((8.0, 16.0, 32.0),), ((0.5, 1.0, 2.0),), [(16, 16)]),
        (((8.0,), (16.0,), (32.0,)), ((0.5, 1.0, 2.0),) * 3, [(32, 24), (16, 12), (8, 6)]),
    ],
)
def test_anchors_agree_with_torchvision(sizes, ratios, grids):
    ours = AnchorGenerator(AnchorConfig(sizes=sizes, aspect_ratios=ratios, offset=0.0))
    theirs = TVAnchorGenerator(sizes=sizes, aspect_ratios=ratios)
    maps = [torch.zeros(2, 4, h, w) for h, w in grids]
    images = ImageList(torch.zeros(2, 3, 64, 48), [(64, 48)] * 2)
    expected = theirs(images, maps)[0]
    got = ours((64, 48), maps)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=0, rtol=0)
    assert ours.num_anchors() == theirs.num_anchors_per_location()


def test_anchor_offset_centres_the_cells():
    maps = [torch.zeros(1, 1, 16, 16)]
    at_corner = AnchorGenerator(AnchorConfig(offset=0.0))((64, 64), maps)
    centred = AnchorGenerator(AnchorConfig(offset=0.5))((64, 64), maps)
    torch.testing.assert_close(centred - at_corner, torch.full_like(centred, 2.0))  # half the stride of 4
    assert centred.shape == (16 * 16 * 9, 4)


def test_box_coder_agrees_with_torchvision():
    g = torch.Generator().manual_seed(0)
    ref = torch.rand(50, 2, generator=g) * 50
    ref = torch.cat([ref, ref + 1 + torch.rand(50, 2, generator=g) * 30], 1)
    boxes = torch.rand(50, 2, generator=g) * 50
    boxes = torch.cat([boxes, boxes + 1 + torch.rand(50, 2, generator=g) * 30], 1)
    for weights in [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)]:
        ours, theirs = BoxCoder(weights), tv_utils.BoxCoder(weights)
        codes = ours.encode(boxes, ref)
        torch.testing.assert_close(codes, theirs.encode_single(boxes, ref), atol=1e-5, rtol=1e-5)
        # Several boxes per reference (class-specific deltas), with large dw/dh that hit the clamp.
        deltas = torch.randn(50, 12, generator=g) * 3
        deltas[:, 2] = 20.0
        expected = theirs.decode_single(deltas, ref).view(50, 3, 4)
        torch.testing.assert_close(ours.decode(deltas, ref), expected, atol=1e-4, rtol=1e-5)
        torch.testing.assert_close(ours.decode(codes, ref)[:, 0], boxes, atol=1e-4, rtol=1e-5)
    assert (
        BoxCoder().decode(torch.tensor([[0.0, 0.0, 100.0, 0.0]]), torch.tensor([[0.0, 0.0, 1.0, 1.0]])).isfinite().all()
    )


def test_matcher_thresholds_and_best_anchor():
    iou = torch.tensor([[0.8, 0.5, 0.2, 0.0], [0.1, 0.6, 0.65, 0.05]])  # 2 objects x 4 anchors
    assert Matcher(0.7, 0.3)(iou).tolist() == [0, BETWEEN, BETWEEN, BACKGROUND]
    # Object 1 has no anchor above 0.7: its best one (anchor 2, IoU 0.65) becomes positive.
    assert Matcher(0.7, 0.3, keep_best=True)(iou).tolist() == [0, BETWEEN, 1, BACKGROUND]
    assert Matcher(0.7, 0.3)(torch.zeros(0, 4)).tolist() == [BACKGROUND] * 4


def test_sample_balanced_caps_positives():
    labels = torch.tensor([1] * 200 + [0] * 1000 + [-1] * 50)
    pos, neg = sample_balanced(labels, 256, 0.5, torch.Generator().manual_seed(0))
    assert len(pos) == 128 and len(neg) == 128 and (labels[pos] == 1).all() and (labels[neg] == 0).all()
    pos, neg = sample_balanced(torch.tensor([1] * 10 + [0] * 1000), 256, 0.5)
    assert len(pos) == 10 and len(neg) == 246  # few positives leave room for more negatives


def test_roi_pool_hand_worked_example():
    # A 4x4 map holding 0..15 row by row, and a second channel of its negatives.
    x = torch.arange(16.0).view(1, 1, 4, 4)
    x = torch.cat([x, -x], 1)
    # The box x 0..3, y 0..3 at scale 1 covers cells 0..3 (roi_pool rounds the box and includes the end cell);
    # a 2x2 grid splits it into 2x2 cells each. Maxima: top-left cells {0,1,4,5} -> 5, top-right {2,3,6,7} -> 7,
    # bottom-left {8,9,12,13} -> 13, bottom-right -> 15; in the negated channel the maxima are the minima negated.
    out = roi_pool(x, torch.tensor([[0.0, 0.0, 0.0, 3.0, 3.0]]), (2, 2), spatial_scale=1.0)
    torch.testing.assert_close(out[0, 0], torch.tensor([[5.0, 7.0], [13.0, 15.0]]))
    torch.testing.assert_close(out[0, 1], torch.tensor([[0.0, -2.0], [-8.0, -10.0]]))
    # In image pixels with stride 2: the box (2.6, 0.4, 6.2, 2.8) rounds to cells x 1..3, y 0..1 (0.4*... -> 0).
    out = RoIPooler([2], 1, kind="pool")([x[:, :1]], [torch.tensor([[2.6, 0.4, 6.2, 2.8]])])
    assert out.item() == 7.0  # the max of cells x in {1, 2, 3}, y in {0, 1}: row 1 holds 4..7


def test_roi_align_fixes_the_quantisation_of_roi_pool():
    # A linear ramp f(x, y) = x on a 16x16 map of stride 1: the feature at pixel centre j is j, so the exact
    # average of f over an interval [a, b] of image coordinates is (a + b) / 2 - 0.5.
    x = torch.arange(16.0).view(1, 1, 1, 16).expand(1, 1, 16, 16).contiguous()
    box = torch.tensor([[0.0, 2.3, 3.0, 7.7, 9.0]])  # x from 2.3 to 7.7, 2 bins of 2.7 pixels
    aligned = roi_align(x, box, (1, 2), spatial_scale=1.0, sampling_ratio=2, aligned=True)[0, 0, 0]
    exact = torch.tensor([(2.3 + 5.0) / 2 - 0.5, (5.0 + 7.7) / 2 - 0.5])
    torch.testing.assert_close(aligned, exact, atol=1e-5, rtol=0)  # bilinear samples of a ramp are exact
    pooled = roi_pool(x, box, (1, 2), spatial_scale=1.0)[0, 0, 0]
    # RoIPool rounds 2.3 -> 2 and 7.7 -> 8, so the box spans cells 2..8 (7 cells); bins of 3.5 cells are widened
    # to whole cells, 2..5 and 5..8, and take their maxima.
    torch.testing.assert_close(pooled, torch.tensor([5.0, 8.0]))
    assert (pooled - exact).abs().min() > 0.9  # off by far more than a rounding error
    # The quantisation: RoIPool cannot tell the box from its rounded version; RoIAlign moves with the box.
    rounded = torch.tensor([[0.0, 2.0, 3.0, 8.0, 9.0]])
    torch.testing.assert_close(roi_pool(x, rounded, (1, 2), spatial_scale=1.0)[0, 0, 0], pooled)
    moved = roi_align(x, rounded, (1, 2), spatial_scale=1.0, sampling_ratio=2, aligned=True)[0, 0, 0]
    torch.testing.assert_close(moved, torch.tensor([(2.0 + 5.0) / 2 - 0.5, (5.0 + 8.0) / 2 - 0.5]))


def test_pooler_assigns_levels_by_box_size():
    pooler = RoIPooler([2, 4, 8], 7, canonical_size=16.0, canonical_stride=4)
    boxes = torch.tensor([[0.0, 0.0, 8.0, 8.0], [0.0, 0.0, 16.0, 16.0], [0.0, 0.0, 31.0, 31.0], [0, 0, 64.0, 64.0]])
    assert pooler.level_of(boxes).tolist() == [0, 1, 1, 2]
    maps = [torch.full((1, 3, 64 // s, 64 // s), float(s)) for s in (2, 4, 8)]
    out = pooler(maps, [boxes])
    assert out.shape == (4, 3, 7, 7) and out[:, 0, 3, 3].tolist() == [2.0, 4.0, 4.0, 8.0]


def test_fpn_levels_and_strides():
    fpn = FeaturePyramid([32, 64], [2, 4], FPNConfig(out_channels=16, extra_levels=1))
    outs = fpn([torch.randn(2, 32, 32, 32), torch.randn(2, 64, 16, 16)])
    assert [tuple(o.shape) for o in outs] == [(2, 16, 32, 32), (2, 16, 16, 16), (2, 16, 8, 8)]
    assert fpn.strides == [2, 4, 8] and fpn.channels == [16, 16, 16]


def test_paste_masks_puts_masks_in_their_boxes():
    masks = torch.ones(2, 28, 28)
    boxes = torch.tensor([[4.0, 8.0, 20.0, 16.0], [0.0, 0.0, 64.0, 64.0]])
    pasted = paste_masks(masks, boxes, (32, 48))
    assert pasted.shape == (2, 32, 48)
    inside = pasted[0] > 0.5
    assert inside.sum() == 16 * 8 and inside[8:16, 4:20].all()
    assert (pasted[1] > 0.5).all()


def _rpn(cfg: RPNConfig | None = None) -> RegionProposalNetwork:
    return RegionProposalNetwork(AnchorGenerator(AnchorConfig()), RPNHead(8, 9), cfg or RPNConfig())


def test_rpn_proposals_and_losses():
    torch.manual_seed(0)
    rpn = _rpn(RPNConfig(post_nms_top_n_train=50)).train()
    features = [torch.randn(2, 8, 16, 16, requires_grad=True)]
    targets = [
        {"boxes": torch.tensor([[10.0, 10.0, 30.0, 26.0]]), "labels": torch.tensor([1])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)},  # no object: all background
    ]
    proposals, losses = rpn((64, 64), features, targets)
    assert len(proposals) == 2 and all(p.shape[0] <= 50 and p.shape[1] == 4 for p in proposals)
    assert all(((p >= 0) & (p <= 64)).all() for p in proposals)
    assert set(losses) == {"loss_objectness", "loss_rpn_box_reg"} and all(v.isfinite() for v in losses.values())
    sum(losses.values()).backward()
    assert features[0].grad.abs().sum() > 0
    # Without objects anywhere, the box loss is zero and the objectness loss still trains.
    _, losses = rpn((64, 64), features, [targets[1], targets[1]])
    assert losses["loss_rpn_box_reg"].item() == 0 and losses["loss_objectness"].item() > 0


def test_rpn_objectness_loss_counts_the_sampled_anchors():
    # A head scoring every anchor 10 pays softplus(-10) on each sampled positive and softplus(10) on each negative.
    rpn = _rpn(RPNConfig(batch_size_per_image=16, positive_fraction=0.5)).train()
    for p in rpn.head.parameters():
        torch.nn.init.zeros_(p)
    torch.nn.init.constant_(rpn.head.cls_logits.bias, 10.0)
    box = torch.tensor([[10.0, 10.0, 30.0, 26.0]])
    features = [torch.zeros(1, 8, 16, 16)]
    _, losses = rpn((64, 64), features, [{"boxes": box, "labels": torch.tensor([1])}])
    anchors = AnchorGenerator(AnchorConfig())((64, 64), features)
    n_pos = min(8, int((Matcher(0.7, 0.3, keep_best=True)(box_iou(box, anchors)) >= 0).sum()))
    assert n_pos >= 1
    softplus = torch.nn.functional.softplus
    expected = (n_pos * softplus(torch.tensor(-10.0)) + (16 - n_pos) * softplus(torch.tensor(10.0))) / 16
    assert losses["loss_objectness"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_check_targets_rejects_bad_boxes_and_classes():
    ok = {"boxes": torch.tensor([[-3.0, 2.0, 10.0, 70.0]]), "labels": torch.tensor([2])}
    (checked,) = check_targets([ok], num_classes=7, image_size=(64, 64))
    assert checked["boxes"].tolist() == [[0.0, 2.0, 10.0, 64.0]]  # clipped to the image
    bad = [
        ({"boxes": torch.tensor([[5.0, 5.0, 5.0, 9.0]]), "labels": torch.tensor([1])}, "no area"),
        ({"boxes": torch.tensor([[70.0, 5.0, 80.0, 9.0]]), "labels": torch.tensor([1])}, "no area"),
        ({"boxes": torch.tensor([[1.0, 1.0, 5.0, 9.0]]), "labels": torch.tensor([7])}, "class ids"),
        ({"boxes": torch.tensor([[1.0, 1.0, 5.0, 9.0]]), "labels": torch.tensor([0])}, "class ids"),
        ({"boxes": torch.tensor([[1.0, 1.0, math.nan, 9.0]]), "labels": torch.tensor([1])}, "non-finite"),
    ]
    for target, message in bad:
        with pytest.raises(ValueError, match=message):
            check_targets([target], num_classes=7, image_size=(64, 64))
