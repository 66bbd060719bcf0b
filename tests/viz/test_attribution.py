"""Activation maximisation and saliency maps: the properties that make them worth looking at, and their CLI."""

import argparse
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

from convzoo.cli import main
from convzoo.models.base import FeatureInfo
from convzoo.viz._load import load_network
from convzoo.viz.maximize import MaximizeConfig, Objective, _total_variation, evaluate_objective, maximize
from convzoo.viz.saliency import attribute, default_layer, overlay

SIZE = 16  # the quadrant data set's image side


@pytest.fixture(scope="module")
def resnet():
    """ResNet-20 with its shipped CIFAR-10 weights: a real network whose units respond to real image structure."""
    return load_network("resnet20")


def quadrant_images(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Grey noise everywhere but the top-right quadrant, which is reddish (class 0) or greenish (class 1).

    The quadrant is off the diagonal, so a map transposed by mistake would miss it.
    """
    x = torch.rand(n, 1, SIZE, SIZE, generator=generator).expand(n, 3, SIZE, SIZE).clone()
    y = torch.randint(0, 2, (n,), generator=generator)
    h = SIZE // 2
    colour = torch.tensor([[0.8, 0.3, 0.3], [0.3, 0.8, 0.3]])[y].view(-1, 3, 1, 1)
    x[:, :, :h, h:] = colour * (0.7 + 0.6 * torch.rand(n, 1, h, h, generator=generator))
    return (x.clamp(0, 1) * 255).round().byte(), y


@pytest.fixture(scope="module")
def quadrant():
    """A small CNN trained until it decides by the top-right quadrant alone, and test images of the task.

    Its head is a linear layer on the flattened feature map, started at zero and trained with SGD: the weights of
    positions outside the quadrant get no consistent signal, so the network truly looks at one region (a network
    with global pooling is sensitive to every position alike, whatever it has learned).
    """
    torch.manual_seed(0)
    model = nn.Sequential(
        OrderedDict(
            conv1=nn.Conv2d(3, 16, 3, padding=1),
            relu1=nn.ReLU(),
            conv2=nn.Conv2d(16, 16, 3, padding=1, stride=2),
            relu2=nn.ReLU(),
            flatten=nn.Flatten(),
            fc=nn.Linear(16 * (SIZE // 2) ** 2, 2),
        )
    )
    nn.init.zeros_(model.fc.weight)
    model.feature_info = [FeatureInfo(16, 1, "relu1"), FeatureInfo(16, 2, "relu2")]
    generator = torch.Generator().manual_seed(0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(200):
        images, labels = quadrant_images(32, generator)
        loss = nn.functional.cross_entropy(model(images.float() / 255), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    optimizer.zero_grad()
    model.eval()
    images, labels = quadrant_images(16, generator)
    with torch.no_grad():
        accuracy = (model(images.float() / 255).argmax(1) == labels).float().mean().item()
    assert accuracy == 1.0, "the quadrant task is easy; the network should have learned it"
    return model, images, labels


def top_right_mass(maps: np.ndarray) -> np.ndarray:
    h = SIZE // 2
    return maps[:, :h, h:].sum((1, 2)) / maps.sum((1, 2))


# Activation maximisation


@pytest.mark.parametrize("param", ["fourier", "pixel"])
def test_channel_objective_rises_many_fold(resnet, param):
    objective = Objective.channel_mean("layer3", 5)
    result = maximize(resnet, objective, steps=40, param=param)
    assert result.image.shape == (32, 32, 3) and result.image.dtype == np.float32
    assert result.image.min() >= 0 and result.image.max() <= 1
    assert result.curve.shape == (40,)
    # From faint noise the channel is nearly silent; the ascent must make it fire far above that.
    assert result.value >= 5 * result.start and result.value - result.start > 1.0
    assert result.curve[-5:].mean() >= 5 * result.curve[:3].mean()
    assert evaluate_objective(resnet, objective, result.image) == pytest.approx(result.value, rel=1e-4)


def test_class_objective_makes_the_network_see_the_class(resnet):
    result = maximize(resnet, Objective.logit(3), steps=40)
    assert result.value - result.start > 5.0
    x = resnet.normalize(torch.from_numpy(result.uint8()).permute(2, 0, 1)[None].contiguous())
    with torch.no_grad():
        probabilities = resnet.model(x).softmax(1)[0]
    assert probabilities.argmax() == 3 and probabilities[3] > 0.9


def test_unit_and_whole_layer_objectives_rise(resnet):
    # The unit at the centre of layer2's channel 3 is silent (0 after its ReLU) on grey: no gradient to follow
    # until the ascent starts from a noisy image that wakes it.
    unit = maximize(resnet, Objective.unit("layer2", 3), steps=24)
    assert unit.value > 1.0
    corner = maximize(resnet, Objective.unit("layer3", 5, position=(0, 7)), steps=24)
    assert corner.value >= 3 * max(corner.start, 0.1)
    dream = maximize(resnet, Objective.whole_layer("layer2"), steps=24)
    assert dream.value >= 3 * dream.start


def test_penalties_smooth_and_grey_the_image(resnet):
    objective = Objective.channel_mean("layer3", 5)
    plain = maximize(resnet, objective, steps=32)
    smooth = maximize(resnet, objective, steps=32, tv_weight=50.0)
    grey = maximize(resnet, objective, steps=32, l2_weight=200.0)

    def tv(image: np.ndarray) -> float:
        return float(_total_variation(torch.from_numpy(image).permute(2, 0, 1)))

    assert tv(smooth.image) < 0.6 * tv(plain.image)
    assert ((grey.image - 0.5) ** 2).mean() < 0.6 * ((plain.image - 0.5) ** 2).mean()
    assert smooth.value > smooth.start and grey.value > grey.start


def test_maximize_leaves_the_model_as_it_was_and_is_reproducible(resnet):
    model = resnet.model
    model.train()
    try:
        config = MaximizeConfig(steps=6, seed=3, param="pixel", init="blank")
        first = maximize(resnet, Objective.channel_mean("layer1", 2), config)
        again = maximize(resnet, Objective.channel_mean("layer1", 2), config)
        other = maximize(resnet, Objective.channel_mean("layer1", 2), config, seed=4)
        assert model.training
        assert all(p.grad is None and p.requires_grad for p in model.parameters())
    finally:
        model.eval()
    np.testing.assert_array_equal(first.curve, again.curve)
    assert not np.array_equal(first.curve, other.curve)


def test_image_size_option(resnet):
    result = maximize(resnet, Objective.channel_mean("layer3", 0), steps=2, image_size=48)
    assert result.image.shape == (48, 48, 3) and result.uint8().dtype == np.uint8


def test_bad_objectives_say_what_is_valid(resnet):
    with pytest.raises(KeyError, match=r"layr3.*did you mean layer3.*tap points: relu, layer1, layer2, layer3"):
        maximize(resnet, Objective.channel_mean("layr3", 0), steps=1)
    with pytest.raises(KeyError, match=r"did you mean layer1\.0\.conv2, "):
        maximize(resnet, Objective.whole_layer("conv2"), steps=1)
    with pytest.raises(ValueError, match="64 channels"):
        maximize(resnet, Objective.channel_mean("layer3", 64), steps=1)
    with pytest.raises(ValueError, match="10 classes"):
        maximize(resnet, Objective.logit(10), steps=1)
    with pytest.raises(ValueError, match="outside the 8x8 map"):
        maximize(resnet, Objective.unit("layer3", 0, position=(8, 0)), steps=1)
    with pytest.raises(TypeError, match="unknown settings.*'stpes'"):
        maximize(resnet, Objective.logit(0), stpes=3)
    with pytest.raises(ValueError, match="param must be one of"):
        MaximizeConfig(param="wavelet")
    with pytest.raises(ValueError, match="channel"):
        Objective("channel", layer="layer3")


# Saliency


@pytest.mark.parametrize("method", ["gradient", "smoothgrad", "gradcam"])
def test_maps_highlight_the_region_the_network_looks_at(quadrant, method):
    model, images, labels = quadrant
    found = attribute(model, images, method=method, image_size=SIZE, samples=8)
    maps = np.stack([a.map for a in found])
    assert maps.shape == (len(images), SIZE, SIZE)
    assert [a.predicted for a in found] == labels.tolist()
    # A quarter of the image holds all the evidence: a map that spread its mass evenly would put 1/4 there. Grad-CAM
    # is coarser (a map at half the resolution, upsampled), so more of it spills over the quadrant's edges.
    mass = top_right_mass(maps)
    assert mass.mean() > (0.55 if method == "gradcam" else 0.7), f"{method}: mass in the quadrant {mass.round(2)}"
    if method == "gradcam":
        assert found[0].layer == "relu2"  # the last tap point of feature_info


def test_smoothgrad_map_is_normalised_and_seeded(quadrant):
    model, images, _ = quadrant
    (a,) = attribute(model, images[0], method="smoothgrad", image_size=SIZE, samples=6, seed=1)
    (b,) = attribute(model, images[0], method="smoothgrad", image_size=SIZE, samples=6, seed=1)
    (c,) = attribute(model, images[0], method="smoothgrad", image_size=SIZE, samples=6, seed=2)
    assert a.map.shape == (SIZE, SIZE) and a.map.dtype == np.float32
    assert a.map.min() == 0 and a.map.max() == pytest.approx(1)
    np.testing.assert_array_equal(a.map, b.map)
    assert not np.array_equal(a.map, c.map)
    assert a.image.shape == (SIZE, SIZE, 3) and a.image.dtype == np.uint8
    np.testing.assert_array_equal(a.image, images[0].permute(1, 2, 0).numpy())


def test_target_class_option(quadrant):
    model, images, labels = quadrant
    for method in ("gradient", "gradcam"):
        for_zero = attribute(model, images[:4], method=method, target=0, image_size=SIZE)
        for_each = attribute(model, images[:4], method=method, target=[1, 0, 1, 0], image_size=SIZE)
        assert [a.target for a in for_zero] == [0] * 4 and [a.target for a in for_each] == [1, 0, 1, 0]
        for a, b in zip(for_zero, for_each):
            if a.target == b.target:
                assert a.probability == b.probability and np.array_equal(a.map, b.map)
            else:  # two classes: the probabilities of the one and the other add up to 1
                assert a.probability + b.probability == pytest.approx(1) and not np.array_equal(a.map, b.map)
    with pytest.raises(ValueError, match="out of range"):
        attribute(model, images[:1], target=2, image_size=SIZE)


def test_overlay_blends_a_heat_map(quadrant):
    model, images, _ = quadrant
    (a,) = attribute(model, images[:1], method="gradcam", layer="conv1", image_size=SIZE)
    assert a.layer == "conv1"
    blended = a.overlay()
    assert blended.shape == (SIZE, SIZE, 3) and blended.dtype == np.uint8
    np.testing.assert_array_equal(a.overlay(alpha=0), a.image)
    grey = overlay(np.zeros((2, 2, 1), np.uint8), np.array([[0.0, 1.0], [0.0, 1.0]]), alpha=1)
    assert grey.shape == (2, 2, 3) and not np.array_equal(grey[0, 0], grey[0, 1])
    with pytest.raises(ValueError, match="differ in size"):
        overlay(a.image, a.map[:4])


def test_saliency_leaves_the_model_as_it_was(quadrant):
    model, images, _ = quadrant
    model.train()
    try:
        for method in ("gradient", "gradcam"):
            attribute(model, images[:2], method=method, image_size=SIZE)
        assert model.training
        assert all(p.grad is None and p.requires_grad for p in model.parameters())
    finally:
        model.eval()


def test_saliency_errors(quadrant):
    model, images, _ = quadrant
    with pytest.raises(ValueError, match="method must be one of"):
        attribute(model, images[:1], method="occlusion", image_size=SIZE)
    with pytest.raises(KeyError, match="did you mean relu2"):
        attribute(model, images[:1], method="gradcam", layer="relu3", image_size=SIZE)
    with pytest.raises(ValueError, match="no spatial map"):
        attribute(model, images[:1], method="gradcam", layer="fc", image_size=SIZE)
    assert default_layer(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3))) == "2"


# The command line


def test_cli_maximize_writes_image_and_curve(tmp_path, capsys):
    out = tmp_path / "viz"
    args = ["viz", "maximize", "resnet20", "--layer", "layer3", "--channel", "5", "--steps", "4", "--out", str(out)]
    assert main(args) == 0
    with Image.open(out / "maximize-layer3.c5.png") as image:
        assert image.size == (256, 256) and image.mode == "RGB"  # 32 pixels, each drawn 8 times
    with Image.open(out / "maximize-layer3.c5-curve.png") as curve:
        assert curve.format == "PNG"
    assert "layer3.c5: objective" in capsys.readouterr().out
    args = ["viz", "maximize", "resnet20", "--class", "cat", "--steps", "2", "--param", "pixel", "--tv", "1"]
    assert main([*args, "--zoom", "2", "--out", str(out)]) == 0
    with Image.open(out / "maximize-class3.png") as image:
        assert image.size == (64, 64)
    assert "class3 (cat)" in capsys.readouterr().out
    assert main(["viz", "maximize", "resnet20", "--layer", "layer2", "--channel", "3", "--unit", "1,2", "--steps", "2",
                 "--out", str(out)]) == 0  # fmt: skip
    assert (out / "maximize-layer2.c3-at-1-2.png").is_file()


def test_cli_maximize_errors(tmp_path, capsys):
    out = str(tmp_path)
    assert main(["viz", "maximize", "resnet20", "--layer", "layer9", "--steps", "1", "--out", out]) == 2
    err = capsys.readouterr().err
    assert "no layer named 'layer9'" in err and "tap points: relu, layer1, layer2, layer3" in err
    assert main(["viz", "maximize", "resnet20", "--layer", "layer3", "--class", "3", "--out", out]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["viz", "maximize", "resnet20", "--class", "kat", "--out", out]) == 2
    assert "did you mean cat" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_cli_saliency_writes_overlays(tmp_path, capsys):
    path = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(path)
    out = tmp_path / "maps"
    argv = ["viz", "saliency", "resnet20", str(path), "--method", "all", "--samples", "4", "--target", "cat"]
    assert main([*argv, "--out", str(out)]) == 0
    for method in ("gradient", "smoothgrad", "gradcam"):
        with Image.open(out / f"noise-{method}.png") as image:
            assert image.size == (256, 256) and image.mode == "RGB"
    printed = capsys.readouterr().out
    assert "gradcam at layer3 for 3 (cat)" in printed and printed.count("noise.png: predicted") == 3
    assert main(["viz", "saliency", "resnet20", str(path), "--layer", "layer2", "--out", str(out)]) == 0
    assert (out / "noise-gradcam-layer2.png").is_file()


def test_cli_saliency_bad_images(tmp_path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    assert main(["viz", "saliency", "resnet20", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("convzoo: error:") and "bad.png is not a readable image" in err
    assert main(["viz", "saliency", "resnet20", str(tmp_path / "missing.png"), "--out", str(tmp_path / "o")]) == 2
    assert "no such image" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_cli_actions_are_described(capsys):
    from convzoo.cli import build_parser

    viz = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices["viz"]
    actions = next(a for a in viz._actions if isinstance(a, argparse._SubParsersAction)).choices
    for name in ("maximize", "saliency"):
        undescribed = [a.dest for a in actions[name]._actions if not a.help]
        assert not undescribed, f"{name}: {undescribed}"
        with pytest.raises(SystemExit):
            main(["viz", name, "--help"])
        assert f"examples:\n  convzoo viz {name} resnet20" in capsys.readouterr().out
