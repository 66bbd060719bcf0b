"""Selective search finds the objects of simple images, and runs over a whole data set."""

import pytest
import torch

from convzoo.data import make_scenes
from convzoo.detection.evaluate import box_iou
from convzoo.detection.selective_search import add_proposals, selective_search

RECTANGLES = [(4, 6, 24, 30), (34, 8, 60, 22), (30, 36, 50, 58)]  # x0, y0, x1, y1


def _rectangles_image() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    image = torch.full((3, 64, 64), 40, dtype=torch.uint8)
    image += torch.randint(0, 12, (3, 64, 64), generator=g, dtype=torch.uint8)  # a little noise
    for (x0, y0, x1, y1), colour in zip(RECTANGLES, [(220, 40, 40), (40, 200, 60), (60, 80, 230)]):
        image[:, y0:y1, x0:x1] = torch.tensor(colour, dtype=torch.uint8).view(3, 1, 1)
    return image


def test_finds_coloured_rectangles():
    boxes = selective_search(_rectangles_image())
    assert boxes.dtype == torch.float32 and boxes.dim() == 2 and boxes.shape[1] == 4
    assert len(boxes) == len(torch.unique(boxes, dim=0))  # no duplicates
    assert (boxes[:, 2:] > boxes[:, :2]).all() and boxes.min() >= 0 and boxes.max() <= 64
    best = box_iou(torch.tensor(RECTANGLES).numpy(), boxes.numpy()).max(1)
    assert (best > 0.9).all(), best
    assert [0, 0, 64, 64] in boxes.tolist()  # the last merge covers the image


def test_ranking_is_seeded_and_options_are_checked():
    image = _rectangles_image()
    a = selective_search(image, seed=3)
    assert torch.equal(a, selective_search(image, seed=3))
    assert not torch.equal(a, selective_search(image, seed=4))  # the same boxes, ranked differently
    assert sorted(a.tolist()) == sorted(selective_search(image, seed=4).tolist())
    few = selective_search(image, strategies=("F",), color_spaces=("lab",), max_proposals=5)
    assert len(few) == 5
    grey = selective_search(image[:1].permute(1, 2, 0).numpy())  # an (H, W, 1) array
    assert len(grey) > 0
    with pytest.raises(ValueError, match="letters"):
        selective_search(image, strategies=("CX",))
    with pytest.raises(ValueError, match="color spaces"):
        selective_search(image, color_spaces=("yuv",))


def test_add_proposals_pads_and_keeps_the_rest():
    scenes = make_scenes(4, seed=1)
    out = add_proposals(scenes, max_proposals=30, progress=False)
    proposals = out.extras["proposals"]
    assert proposals.shape[:2] == (4, 30) and proposals.shape[2] == 4
    assert out.images is scenes.images and set(out.extras) == {*scenes.extras, "proposals"}
    assert "proposals" not in scenes.extras
    first = selective_search(scenes.images[0], max_proposals=30)
    assert torch.equal(proposals[0, : len(first)], first)
    assert (proposals[0, len(first) :] == 0).all()
    # Every object of these scenes is found at IoU 0.5.
    for i in range(4):
        gt = scenes.extras["boxes"][i][scenes.extras["box_labels"][i] >= 0]
        found = box_iou(gt.numpy(), selective_search(scenes.images[i]).numpy()).max(1) if len(gt) else []
        assert all(iou >= 0.5 for iou in found)
