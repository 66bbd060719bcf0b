"""Every view works on a checkpoint the training engine wrote, as on a registered model."""

import numpy as np
import pytest
from PIL import Image

from convzoo.cli import main
from convzoo.train import TrainConfig, train
from convzoo.viz import load_network


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """ResNet-20 trained one short epoch on the shapes at 16x16 (3 channels, 6 classes)."""
    out = tmp_path_factory.mktemp("run") / "shapes"
    run = train(
        TrainConfig(
            model="resnet20",
            data="shapes",
            image_size=16,
            recipe_overrides={"epochs": 1, "batch_size": 128},
            out=str(out),
            progress=False,
            deterministic=True,
        )
    )
    return run.out / "best.pt"


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "square.png"
    pixels = np.zeros((24, 24, 3), dtype=np.uint8)
    pixels[6:18, 6:18] = (220, 40, 40)
    Image.fromarray(pixels).save(path)
    return path


def test_a_checkpoint_loads_with_its_classes_and_preprocessing(checkpoint):
    network = load_network(checkpoint)
    assert network.trained and network.arch == "resnet20" and network.image_size == 16
    assert network.classes[:2] == ["circle", "square"] and len(network.classes) == 6


@pytest.mark.parametrize(
    ("action", "produced"),
    [
        (["filters"], "filters"),
        (["maps", "{image}", "--layer", "layer2"], "maps"),
        (["saliency", "{image}", "--method", "gradcam"], "gradcam"),
        (["maximize", "--class", "square", "--steps", "8"], "maximize"),
    ],
)
def test_every_view_runs_on_a_training_checkpoint(checkpoint, image, tmp_path, capsys, action, produced):
    out = tmp_path / "viz"
    args = [a.replace("{image}", str(image)) for a in action]
    assert main(["viz", args[0], str(checkpoint), *args[1:], "--out", str(out)]) == 0
    written = sorted(p.name for p in out.glob("*.png"))
    assert written and any(produced in name for name in written), written
    assert all((out / name).stat().st_size > 500 for name in written)
    assert str(out) in capsys.readouterr().out
