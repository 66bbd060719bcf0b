"""R-CNN: region warping, a small end-to-end fit on scenes, detection output and saving."""

import json

import numpy as np
import pytest
import torch

from convzoo.data import make_scenes
from convzoo.detection.evaluate import voc_evaluate
from convzoo.detection.rcnn import RCNN, RCNNConfig, is_rcnn_folder, warp_regions


def test_warp_without_context_is_a_resize():
    image = torch.arange(16, dtype=torch.uint8).view(1, 4, 4).repeat(3, 1, 1) * 10
    crop = warp_regions(image, torch.tensor([[0.0, 0, 4, 4]]), 4, context=0)
    assert crop.shape == (1, 3, 4, 4) and crop.dtype == torch.uint8
    assert torch.equal(crop[0], image)
    quarter = warp_regions(image, torch.tensor([[2.0, 0, 4, 2]]), 2, context=0)
    assert torch.equal(quarter[0], image[:, :2, 2:])
    shrunk = warp_regions(image, torch.tensor([[0.0, 0, 4, 4]]), 2, context=0)  # each pixel averages 2 x 2
    assert shrunk[0, 0].tolist() == [[25, 45], [105, 125]]


def test_warp_context_fills_beyond_the_image():
    image = torch.full((3, 8, 8), 200, dtype=torch.uint8)
    crop = warp_regions(image, torch.tensor([[0.0, 0, 8, 8]]), 227, context=16, fill=(10, 20, 30))
    # 16 of 227 pixels on each side lie beyond the image and take the fill colour; the middle is the image.
    assert crop[0, :, 113, 113].tolist() == [200, 200, 200]
    assert crop[0, :, 15, 113].tolist() == [10, 20, 30] and crop[0, :, 113, 211].tolist() == [10, 20, 30]
    assert crop[0, 0, 16, 113].item() == 200 and crop[0, 0, 113, 210].item() == 200
    with pytest.raises(ValueError, match="context"):
        warp_regions(image, torch.tensor([[0.0, 0, 8, 8]]), 32, context=120)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    torch.manual_seed(0)
    train = make_scenes(12, seed=0)
    config = RCNNConfig(
        backbone="lenet5",
        epochs=1,
        batch_size=32,
        proposals={"strategies": ("CTSF",), "color_spaces": ("rgb",)},
        max_proposals=30,
        background_per_object=2,
        device="cpu",
    )
    rcnn = RCNN(train.classes, config)
    stats = rcnn.fit(train, out=tmp_path_factory.mktemp("rcnn") / "finetune", progress=False)
    return rcnn, stats, train


def test_fit_and_predict_follow_the_detection_contract(fitted):
    rcnn, stats, train = fitted
    assert stats["finetune_regions"] > 12 and 0 < stats["proposals_per_image"] <= 30
    assert rcnn.svm_weight.shape == (7, rcnn.cnn.head_hidden_size) and np.abs(rcnn.svm_weight[1:]).sum() > 0
    preds = rcnn.predict(train.images[:4])
    assert len(preds) == 4
    for pred in preds:
        assert set(pred) == {"boxes", "labels", "scores"}
        assert pred["boxes"].shape[1] == 4 and len(pred["labels"]) == len(pred["scores"]) <= 100
        assert pred["labels"].dtype == torch.int64 and ((pred["labels"] >= 1) & (pred["labels"] <= 6)).all()
        assert ((pred["scores"] > 0) & (pred["scores"] < 1)).all()
        assert (pred["scores"][:-1] >= pred["scores"][1:]).all()  # best first
        assert (pred["boxes"] >= 0).all() and (pred["boxes"] <= 64).all()
    assert 0 < rcnn.stats["forward_passes_per_image"] <= 30 and rcnn.stats["seconds_per_image"] > 0
    # On its own training images the detector finds most objects.
    targets = [
        {"boxes": b[k >= 0], "labels": k[k >= 0]} for b, k in zip(train.extras["boxes"], train.extras["box_labels"])
    ]
    assert voc_evaluate(rcnn.predict(train), targets, 7)["map"] > 0.3


def test_save_and_load_give_the_same_detections(fitted, tmp_path):
    rcnn, _, train = fitted
    folder = rcnn.save(tmp_path / "rcnn")
    assert is_rcnn_folder(folder) and not is_rcnn_folder(tmp_path)
    assert json.loads((folder / "rcnn.json").read_text())["classes"] == train.classes
    again = RCNN.load(folder, device="cpu")
    proposals = [torch.tensor([[2.0, 2, 30, 30], [10, 12, 40, 50], [0, 0, 64, 64]])] * 2
    a, b = rcnn.predict(train.images[:2], proposals=proposals), again.predict(train.images[:2], proposals=proposals)
    for x, y in zip(a, b):
        assert torch.equal(x["labels"], y["labels"]) and torch.allclose(x["scores"], y["scores"], atol=1e-6)
        assert torch.allclose(x["boxes"], y["boxes"], atol=1e-4)
    assert again.stats["forward_passes_per_image"] == 3


def test_bad_use_is_explained(tmp_path):
    with pytest.raises(ValueError, match="background"):
        RCNN(["background"])
    with pytest.raises(RuntimeError, match="not fitted"):
        RCNN(["background", "a"]).predict(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), proposals=[torch.ones(1, 4)])
    with pytest.raises(FileNotFoundError, match="no saved R-CNN"):
        RCNN.load(tmp_path)
    plain = make_scenes(2)
    plain.extras.clear()
    with pytest.raises(ValueError, match="detection set"):
        RCNN(plain.classes).fit(plain)
