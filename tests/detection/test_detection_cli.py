"""`convzoo detect`: detection checkpoints and saved R-CNNs on image files, drawn into PNGs."""

import numpy as np
import pytest
import torch
from PIL import Image

import convzoo
from convzoo.cli import main
from convzoo.data import make_scenes
from convzoo.detection.data import read_image
from convzoo.detection.draw import draw_detections, load_detector
from convzoo.detection.rcnn import RCNN, RCNNConfig
from convzoo.train.checkpoint import save_checkpoint

CLASSES = ["background", "circle", "square", "triangle", "diamond", "star", "cross"]


def _checkpoint(path, name, image_size=64):
    """A training checkpoint of an untrained ``name``, as the engine writes one."""
    torch.manual_seed(0)
    model = convzoo.create_model(name, num_classes=7)
    state = {
        "model": {"name": name, "num_classes": 7, "in_chans": 3, "model_args": {}, "state_dict": model.state_dict()},
        "data": {"classes": CLASSES, "image_size": [3, image_size, image_size], "mean": [0.2] * 3, "std": [0.3] * 3},
    }
    return save_checkpoint(state, path)


def _image(path, width, height):
    scene = make_scenes(1, image_size=64, seed=3).images[0].permute(1, 2, 0).numpy()
    Image.fromarray(scene).resize((width, height)).save(path)
    return path


def _rcnn(folder):
    """A saved R-CNN with random weights: no fitting, so only the plumbing is tested here."""
    rcnn = RCNN(CLASSES, RCNNConfig(backbone="lenet5", max_proposals=20, device="cpu"))
    torch.manual_seed(0)
    rcnn.cnn = convzoo.create_model("lenet5", num_classes=7, in_chans=3).eval()
    rng = np.random.default_rng(0)
    dim = rcnn.cnn.head_hidden_size
    rcnn.svm_weight, rcnn.svm_bias = rng.normal(size=(7, dim)), np.full(7, 2.0)
    rcnn.reg_weight, rcnn.reg_bias = np.zeros((7, dim, 4)), np.zeros((7, 4))
    rcnn.image_size = (64, 64)
    return rcnn.save(folder)


def test_detect_with_a_saved_rcnn(tmp_path, capsys):
    folder = _rcnn(tmp_path / "rcnn")
    image = _image(tmp_path / "wide.png", 128, 96)
    assert main(["detect", str(folder), str(image), "--out", str(tmp_path / "out"), "--score-threshold", "0"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"{image}: ") and "detection(s)" in lines[0] and len(lines) > 1
    drawn = Image.open(tmp_path / "out" / "wide_detections.png")
    assert drawn.size == (128 * 3, 96 * 3)  # enlarged for legible labels
    # Boxes come back in the image's pixels (128 x 96), not the detector's 64 x 64.
    found = load_detector(folder).detect(read_image(image))
    assert found["boxes"][:, 2].max() > 64 and found["boxes"][:, 2].max() <= 128 and found["boxes"][:, 3].max() <= 96


@pytest.mark.parametrize("name", ["faster_rcnn", "mask_rcnn", "fast_rcnn"])
def test_detect_with_a_detection_checkpoint(tmp_path, capsys, name):
    checkpoint = _checkpoint(tmp_path / "best.pt", name)
    image = _image(tmp_path / "scene.png", 64, 64)
    code = main(["detect", str(tmp_path), str(image), "--out", str(tmp_path / "out"), "--score-threshold", "0"])
    assert code == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert out.startswith(f"{image}: ") and (tmp_path / "out" / "scene_detections.png").is_file()
    found = load_detector(checkpoint).detect(read_image(image))
    assert ("masks" in found) == (name == "mask_rcnn")
    if name == "mask_rcnn" and len(found["boxes"]):
        assert found["masks"].shape[-2:] == (64, 64)


def test_detect_refuses_a_classifier_and_missing_files(tmp_path, capsys):
    checkpoint = _checkpoint(tmp_path / "classifier.pt", "resnet20", image_size=32)
    image = _image(tmp_path / "scene.png", 64, 64)
    assert main(["detect", str(checkpoint), str(image)]) == 2
    err = capsys.readouterr().err
    assert "classification checkpoint (resnet20)" in err and "detection checkpoint" in err
    assert main(["detect", str(tmp_path), str(image)]) == 2
    assert "neither a saved R-CNN" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["detect", str(checkpoint), str(image), "--score-threshold", "2"])


def test_draw_detections_draws_boxes_and_masks():
    image = torch.zeros(3, 32, 32, dtype=torch.uint8)
    masks = torch.zeros(2, 32, 32)
    masks[0, 4:12, 4:12] = 1
    found = {
        "boxes": torch.tensor([[4.0, 4, 12, 12], [20, 20, 30, 30]]),
        "labels": torch.tensor([1, 2]),
        "scores": torch.tensor([0.9, 0.2]),
        "masks": masks,
    }
    drawn = draw_detections(image, found, CLASSES, score_threshold=0.5, min_side=64)
    assert drawn.shape == (3, 64, 64) and drawn.dtype == torch.uint8
    assert drawn[:, 8:24, 8:24].float().sum() > 0  # the kept detection's mask and box, doubled in size
    assert drawn[:, 42:58, 42:58].sum() == 0  # the one below the threshold is not drawn
    with pytest.raises(ValueError, match="uint8"):
        draw_detections(image.float(), found, CLASSES)


@pytest.mark.slow  # 50 s: 500 test images evaluated twice; test_one_epoch_through_the_engine covers the same steps
def test_train_then_eval_a_registered_detector_from_the_command_line(tmp_path, capsys):
    out = tmp_path / "frcnn"
    args = ["train", "faster_rcnn", "--data", "scenes", "--image-size", "64", "--iterations", "2"]
    assert main([*args, "--batch-size", "8", "--out", str(out), "--no-progress", "--device", "cpu"]) == 0
    assert "best map" in capsys.readouterr().out
    assert main(["eval", str(out / "best.pt")]) == 0
    shown = capsys.readouterr().out
    assert "scenes test set, 500 images" in shown and "map" in shown and "ap50" in shown
