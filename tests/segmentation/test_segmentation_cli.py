"""`convzoo segment` and the prediction and drawing it is built on, with a tiny network trained for one epoch."""

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

from convzoo import registry
from convzoo.cli import main
from convzoo.data import load_dataset
from convzoo.segmentation.predict import (
    PALETTE,
    Segmenter,
    class_shares,
    colorize,
    describe_shares,
    load_segmenter,
    overlay,
    segment_image,
)
from convzoo.train import TrainConfig, Trainer

CARD = {"family": "test", "input_size": (3, 32, 32), "mean": (0.5,) * 3, "std": (0.25,) * 3}
PAPER = registry.Paper("Nobody", "A test network", 2024, "none")


def _tiny(*, num_classes: int, in_chans: int, padding: int = 1) -> nn.Module:
    return nn.Sequential(nn.Conv2d(in_chans, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, num_classes, 3, padding=padding))


def _tiny_classifier(*, num_classes: int, in_chans: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(in_chans, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, num_classes))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """best.pt of a tiny segmentation network and of a tiny classifier, each trained one epoch on 32 scenes."""
    names = {"tiny-seg-test": ("segmentation", _tiny), "tiny-cls-test": ("classification", _tiny_classifier)}
    for name, (task, builder) in names.items():
        card = registry.ModelCard(name=name, paper=PAPER, num_classes=7, task=task, **CARD)
        registry.register_model(card, builder)
    folder = tmp_path_factory.mktemp("segment")
    try:
        data = load_dataset("scenes", image_size=32, n_train=32, n_test=16)
        out = {}
        for name in names:
            config = TrainConfig(
                model=name,
                data="scenes",
                image_size=32,
                out=str(folder / name),
                recipe_overrides={"epochs": 1, "batch_size": 16},
                progress=False,
                amp="off",
                channels_last=False,
            )
            Trainer(config, datasets=data).run()
            out[name] = folder / name / "best.pt"
        yield out
    finally:
        for name in names:
            registry._REGISTRY.pop(name, None)


def _write_image(path, h: int = 40, w: int = 50) -> None:
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[10:30, 10:30] = (250, 40, 40)
    Image.fromarray(rgb).save(path)


def test_segment_writes_overlays_and_prints_the_classes(checkpoints, tmp_path, capsys):
    _write_image(tmp_path / "a.png")
    Image.open(tmp_path / "a.png").convert("L").save(tmp_path / "b.png")  # a grey image
    code = main(["segment", str(checkpoints["tiny-seg-test"]), str(tmp_path / "a.png"), str(tmp_path / "b.png"),
                 "--out", str(tmp_path / "out"), "--alpha", "0.7", "--device", "cpu"])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 2 and printed[0].startswith(str(tmp_path / "a.png"))
    assert "%" in printed[0] and printed[0].endswith("a.segment.png")
    for name in ("a", "b"):
        drawn = Image.open(tmp_path / "out" / f"{name}.segment.png")
        assert drawn.width > 2 * 50 and drawn.height >= 40  # image, overlay and legend side by side


def test_segment_refuses_a_classifier_checkpoint(checkpoints, tmp_path, capsys):
    _write_image(tmp_path / "a.png")
    code = main(["segment", str(checkpoints["tiny-cls-test"]), str(tmp_path / "a.png"), "--out", str(tmp_path)])
    assert code == 2
    assert "not of a segmentation network" in capsys.readouterr().err


def test_segment_image_returns_a_mask_of_the_image_size(checkpoints, tmp_path):
    _write_image(tmp_path / "a.png", 40, 50)
    segmenter = load_segmenter(checkpoints["tiny-seg-test"])
    assert segmenter.image_size == 32 and segmenter.classes[1] == "circle"
    mask = segment_image(segmenter, tmp_path / "a.png")
    assert mask.shape == (40, 50) and mask.dtype == np.uint8 and mask.max() < 7
    assert np.array_equal(segment_image(checkpoints["tiny-seg-test"], tmp_path / "a.png"), mask)


def test_a_network_of_valid_convolutions_leaves_the_border_unlabelled():
    net = _tiny(num_classes=3, in_chans=3, padding=0).eval()
    segmenter = Segmenter(net, ["bg", "a", "b"], 16, (0.5,) * 3, (0.25,) * 3)
    mask = segmenter.predict(torch.zeros(3, 16, 16, dtype=torch.uint8))
    assert mask.shape == (16, 16)
    assert (mask[0] == 255).all() and (mask[:, -1] == 255).all() and (mask[1:-1, 1:-1] < 3).all()


def test_palette_overlay_and_shares():
    assert PALETTE[0].tolist() == [0, 0, 0] and PALETTE[1].tolist() == [128, 0, 0]
    assert PALETTE[15].tolist() == [192, 128, 128] and PALETTE[255].tolist() == [224, 224, 192]  # VOC's colours
    mask = np.array([[0, 1], [1, 255]], np.uint8)
    image = np.full((2, 2, 3), 100, np.uint8)
    drawn = overlay(image, mask, alpha=0.5)
    assert drawn[0, 0].tolist() == [100, 100, 100] and drawn[1, 1].tolist() == [100, 100, 100]
    assert drawn[0, 1].tolist() == [114, 50, 50]
    assert colorize(mask)[0, 1].tolist() == [128, 0, 0]
    assert class_shares(mask, 3) == [(1, pytest.approx(2 / 3)), (0, pytest.approx(1 / 3))]
    assert describe_shares(mask, ["bg", "car", "tree"]) == "car 66.7%, bg 33.3%"
    tiny_share = np.zeros((100, 100), np.uint8)
    tiny_share[0, 0] = 2
    assert describe_shares(tiny_share, ["bg", "car", "tree"]) == "bg 100.0%, tree <0.1%"
    grey = overlay(np.full((2, 2, 1), 100, np.uint8), mask, alpha=0.5)
    assert grey.shape == (2, 2, 3) and grey[0, 1].tolist() == [114, 50, 50]
    with pytest.raises(ValueError, match="same size"):
        overlay(image, mask[:1], alpha=0.5)


def test_a_registered_network_from_train_to_eval_to_segment(tmp_path, capsys):
    out = tmp_path / "unet"
    args = ["train", "unet_small", "--data", "scenes", "--image-size", "32", "--arch", "width=4"]
    args += ["--iterations", "3", "--batch-size", "16", "--out", str(out), "--no-progress", "--device", "cpu"]
    assert main(args) == 0
    assert "best miou" in capsys.readouterr().out
    assert main(["eval", str(out / "best.pt")]) == 0
    shown = capsys.readouterr().out
    assert "scenes test set, 500 images" in shown and "miou" in shown and "pixel_acc" in shown
    image = tmp_path / "scene.png"
    Image.fromarray(load_dataset("scenes", n_train=1, n_test=1)[0].images[0].permute(1, 2, 0).numpy()).save(image)
    assert main(["segment", str(out / "best.pt"), str(image), "--out", str(tmp_path / "seg")]) == 0
    assert (tmp_path / "seg" / "scene.segment.png").is_file()


def test_models_and_info_show_the_segmentation_and_detection_networks(capsys):
    assert main(["models", "--task", "segmentation"]) == 0
    shown = capsys.readouterr().out
    assert "fcn8s" in shown and "134,489,759" in shown and "unet_original" in shown and "resnet20" not in shown
    assert main(["models", "*rcnn*", "--task", "all"]) == 0
    assert "mask_rcnn" in capsys.readouterr().out
    assert main(["models", "fcn*"]) == 1  # the classifiers by default
    assert "--task all" in capsys.readouterr().err
    assert main(["info", "unet_original"]) == 0
    assert "task:       segmentation" in capsys.readouterr().out
