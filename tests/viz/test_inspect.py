"""Filters, feature maps, top-activating images and embeddings: properties of what they return, and the commands."""

import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

import convzoo
from convzoo.analysis import ReceptiveField, receptive_fields
from convzoo.cli import main
from convzoo.data import load_dataset
from convzoo.viz._load import load_network
from convzoo.viz.embed import nearest_neighbour_accuracy, nearest_neighbours, penultimate_features, project
from convzoo.viz.filters import filter_grid, filter_tiles, filter_weights
from convzoo.viz.grid import make_grid, normalize_each
from convzoo.viz.maps import feature_map_grid, feature_maps, receptive_box, top_activations

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def network():
    """ResNet-20 with its shipped CIFAR-10 weights (loaded offline), and its preprocessing."""
    return load_network("resnet20")


@pytest.fixture(scope="module")
def trained(network):
    return network.model


@pytest.fixture(scope="module")
def shapes():
    """300 test images of the shapes set (6 classes, 3x32x32, uint8)."""
    _, test = load_dataset("shapes", n_train=6, n_test=300)
    return test


def _is_png(path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == PNG_MAGIC


# Embeddings


def test_nearest_neighbour_accuracy_on_hand_made_points():
    points = np.array([[1.0, 0.0], [2.0, 0.1], [0.0, 1.0], [0.1, 3.0]])
    assert nearest_neighbour_accuracy(points, [0, 0, 1, 1]) == 1.0
    assert nearest_neighbour_accuracy(points, [0, 1, 0, 1]) == 0.0
    # By angle (cosine) the long vector (10, 0) sits on top of (1, 0); by Euclidean distance it is nearer (6, 5).
    points = np.array([[1.0, 0.0], [10.0, 0.0], [6.0, 5.0]])
    assert nearest_neighbour_accuracy(points, [0, 0, 1], metric="cosine") == pytest.approx(2 / 3)
    assert nearest_neighbour_accuracy(points, [0, 0, 1], metric="euclidean") == 0.0


def test_nearest_neighbours_leave_the_query_out_and_come_nearest_first():
    points = np.array([[0.0, 0.0], [3.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    indices, distances = nearest_neighbours(points, points[0], k=2, metric="euclidean", exclude=0)
    assert indices.tolist() == [2, 3]
    np.testing.assert_allclose(distances, [1.0, 2.0])


def test_trained_features_separate_classes_better_than_random_ones(network, trained, shapes):
    x = network.normalize(shapes.images)
    torch.manual_seed(0)
    random = convzoo.create_model("resnet20").eval()
    accuracy = {}
    for name, model in (("trained", trained), ("random", random)):
        features = penultimate_features(model, x)
        assert features.shape == (300, model.head_hidden_size)
        accuracy[name] = nearest_neighbour_accuracy(features, shapes.labels)
    # Measured: about 0.59 trained and 0.19 random (chance is 1/6); the margin asked for is well inside that gap.
    assert accuracy["trained"] > accuracy["random"] + 0.2, accuracy
    points = project(penultimate_features(trained, x[:50]), "pca")
    assert points.shape == (50, 2) and np.isfinite(points).all()


# Filters


def test_first_layer_filters_are_a_colour_grid_of_tiles_each_spanning_0_to_1(trained):
    weights = filter_weights(trained)
    assert weights.shape == (16, 3, 3, 3)
    tiles = filter_tiles(trained)
    assert tiles.shape == (16, 3, 3, 3)  # (kernel, height, width, RGB)
    assert np.allclose(tiles.reshape(16, -1).min(axis=1), 0) and np.allclose(tiles.reshape(16, -1).max(axis=1), 1)
    grid = filter_grid(trained)
    assert grid.shape == (4 * 4 + 1, 4 * 4 + 1, 3)  # 4x4 kernels of 3x3, one pixel between and around
    np.testing.assert_allclose(grid[1:4, 1:4], tiles[0])
    np.testing.assert_allclose(grid[5:8, 9:12], tiles[6])  # row 1, column 2
    # Each tile keeps its kernel's pattern: an affine map of the weights, RGB channels last.
    w = weights[6].transpose(1, 2, 0)
    np.testing.assert_allclose(tiles[6], (w - w.min()) / (w.max() - w.min()), atol=1e-6)


def test_deeper_filters_are_grey_channel_means(trained):
    weights = filter_weights(trained, "layer2.0.conv1")
    assert weights.shape == (32, 16, 3, 3)
    tiles = filter_tiles(trained, "layer2.0.conv1")
    np.testing.assert_allclose(tiles, normalize_each(weights.mean(axis=1)), atol=1e-6)
    assert filter_grid(trained, "layer2.0.conv1").shape == (6 * 4 + 1, 6 * 4 + 1)  # 32 kernels: 6 per row, 6 rows


def test_single_channel_filters_are_grey():
    model = nn.Sequential(nn.Conv2d(1, 4, 5), nn.ReLU())
    tiles = filter_tiles(model)
    assert tiles.shape == (4, 5, 5)
    assert filter_grid(model, ncols=4).shape == (7, 4 * 6 + 1)


def test_filters_of_an_unknown_layer_list_the_convolutions(trained):
    with pytest.raises(
        KeyError,
        match=r"did you mean layer2\.0\.conv2, layer2\.0\.conv1.*Valid names: conv1, layer1\.0\.conv1, layer1",
    ):
        filter_weights(trained, "layer2.0.conv")
    with pytest.raises(KeyError, match="no convolution named 'layer2'"):
        filter_weights(trained, "layer2")  # a module, but not a convolution


# Feature maps


def test_feature_map_grid_shows_the_tapped_feature_maps(network, trained, shapes):
    x = network.normalize(shapes.images[:1])
    expected = trained.forward_taps(x, {"layer2"})["layer2"][0]
    maps = feature_maps(trained, x, "layer2")
    np.testing.assert_allclose(maps, expected.detach().numpy(), rtol=1e-5, atol=1e-6)
    grid = feature_map_grid(trained, x, "layer2")
    assert grid.shape == (6 * 17 + 1, 6 * 17 + 1)  # 32 maps of 16x16, 6 per row
    tiles = normalize_each(maps)
    np.testing.assert_allclose(grid[1 + 17 : 1 + 17 + 16, 1 + 2 * 17 : 1 + 2 * 17 + 16], tiles[8], atol=1e-6)
    assert feature_map_grid(trained, x, "layer2", channels=[3, 5], ncols=2).shape == (18, 35)


def test_feature_maps_of_an_unknown_layer_list_the_tap_points(trained):
    with pytest.raises(KeyError, match=r"no layer named 'layer4'.*Valid names: relu, layer1, layer2, layer3, conv1"):
        feature_maps(trained, torch.zeros(1, 3, 32, 32), "layer4")


# Top-activating images


def test_top_activations_are_sorted_and_equal_a_direct_computation(network, trained, shapes):
    images = shapes.images[:40]
    tops = top_activations(trained, images, "layer1", [0, 3], k=5, normalize=network.normalize, batch_size=16)
    direct = trained.forward_taps(network.normalize(images), {"layer1"})["layer1"].detach()
    field = receptive_fields(trained, (3, 32, 32))["layer1"]
    assert field.size == (15, 15) and field.jump == (1, 1)
    for top, channel in zip(tops, [0, 3]):
        assert top.channel == channel and top.field == field
        per_image = direct[:, channel].amax(dim=(1, 2))
        expected, order = torch.sort(per_image, descending=True)
        assert np.all(np.diff(top.values) <= 0)
        np.testing.assert_allclose(top.values, expected[:5].numpy(), rtol=1e-5)
        assert top.indices.tolist() == order[:5].tolist()
        for index, (row, col), box, crop in zip(top.indices, top.positions, top.boxes, top.crops):
            assert direct[index, channel, row, col] == pytest.approx(float(per_image[index]), rel=1e-5)
            # A 15-pixel field centred on the unit, clipped to the 32x32 image.
            assert tuple(box) == (max(0, row - 7), max(0, col - 7), min(32, row + 8), min(32, col + 8))
            assert crop.shape == (box[2] - box[0], box[3] - box[1], 3)
            np.testing.assert_allclose(crop, images[index, :, box[0] : box[2], box[1] : box[3]].permute(1, 2, 0) / 255)


def _pyramid(size: int) -> torch.Tensor:
    """A kernel peaked at its centre (the outer product of 1, 2, ..., 2, 1), so a lone pixel's response peaks where
    the kernel is centred on it."""
    ramp = torch.tensor([min(i, size - 1 - i) + 1.0 for i in range(size)])
    return torch.outer(ramp, ramp).view(1, 1, size, size)


def test_top_activation_crops_are_the_receptive_field_of_the_peak_unit():
    # Two 3x3 convolutions, the second of stride 2: a field of 5, jump 2, the first unit centred on pixel 2.
    model = nn.Sequential(nn.Conv2d(1, 1, 3, bias=False), nn.Conv2d(1, 1, 3, stride=2, bias=False)).eval()
    with torch.no_grad():
        model[0].weight.copy_(_pyramid(3))
        model[1].weight.copy_(_pyramid(3))
    field = receptive_fields(model, (1, 16, 16))["1"]
    assert field == ReceptiveField(size=(5.0, 5.0), jump=(2.0, 2.0), start=(2.0, 2.0))
    images = torch.zeros(3, 1, 16, 16, dtype=torch.uint8)
    images[0, 0, 6, 8] = 100
    images[1, 0, 10, 4] = 255
    images[2, 0, 0, 0] = 50
    (top,) = top_activations(model, images, "1", 0, k=2)
    assert top.indices.tolist() == [1, 0]
    assert top.positions.tolist() == [[4, 1], [2, 3]]  # the units centred on (10, 4) and (6, 8)
    assert top.boxes.tolist() == [[8, 2, 13, 7], [4, 6, 9, 11]]
    for crop, value in zip(top.crops, (1.0, 100 / 255)):
        assert crop.shape == (5, 5) and crop[2, 2] == pytest.approx(value) and crop.sum() == pytest.approx(value)


def test_top_activation_crops_are_clipped_at_the_border():
    model = nn.Sequential(nn.Conv2d(1, 1, 5, padding=2, bias=False)).eval()
    with torch.no_grad():
        model[0].weight.copy_(_pyramid(5))
    images = torch.zeros(1, 1, 8, 8, dtype=torch.uint8)
    images[0, 0, 0, 1] = 255
    (top,) = top_activations(model, images, "0", k=1)
    assert top.positions.tolist() == [[0, 1]]
    assert top.boxes.tolist() == [[0, 0, 3, 4]]  # rows -2..2 and columns -1..3, clipped to the image
    assert top.crops[0].shape == (3, 4) and top.crops[0][0, 1] == 1.0
    assert receptive_box(ReceptiveField(is_global=True), (0, 0), (8, 8)) == (0, 0, 8, 8)


def test_top_activations_refuse_a_channel_the_layer_lacks(network, trained, shapes):
    with pytest.raises(ValueError, match="has 16 channels"):
        top_activations(trained, shapes.images[:4], "layer1", [16], normalize=network.normalize)


# Grids


def test_make_grid_centres_tiles_of_different_sizes():
    grid = make_grid([np.zeros((3, 3)), np.zeros((1, 3))], pad=1)
    assert grid.shape == (5, 9)
    assert grid[1:4, 5:8].tolist() == [[1, 1, 1], [0, 0, 0], [1, 1, 1]]


# The commands


@pytest.fixture
def image_file(tmp_path):
    path = tmp_path / "image.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 30, 3), dtype=np.uint8)).save(path)
    return path


def test_filters_and_maps_commands_write_pngs(tmp_path, image_file, capsys):
    out = tmp_path / "out"
    assert main(["viz", "filters", "resnet20", "--out", str(out)]) == 0
    assert main(["viz", "filters", "resnet20", "--layer", "layer3.0.conv2", "--out", str(out)]) == 0
    assert main(["viz", "maps", "resnet20", str(image_file), "--layer", "layer1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    for name in ("filters-conv1", "filters-layer3.0.conv2", "maps-layer1"):
        assert _is_png(out / f"resnet20-{name}.png") and name in printed


def test_top_and_embed_commands_write_pngs_and_print_the_accuracy(tmp_path, capsys):
    out = tmp_path / "out"
    data = ["--data", "shapes", "--limit", "60", "--out", str(out), "--device", "cpu"]
    assert main(["viz", "top", "resnet20", "--layer", "layer2", "--channels", "0-1,5", "-k", "4", *data]) == 0
    printed = capsys.readouterr().out
    assert "channel 5:" in printed and "receptive field of layer2: 37" in printed
    assert main(["viz", "embed", "resnet20", "--query", "3", "--neighbours", "4", *data]) == 0
    printed = capsys.readouterr().out
    assert "leave-one-out 1-NN accuracy (cosine) on 60 images" in printed
    for name in ("top-layer2", "embed-pca", "embed-tsne", "neighbours"):
        assert _is_png(out / f"resnet20-{name}.png")


def test_an_unknown_layer_lists_the_valid_names(tmp_path, image_file, capsys):
    out = tmp_path / "out"
    argv = ["viz", "maps", "resnet20", str(image_file), "--layer", "layer1", "--layer", "layer9", "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "no layer named 'layer9'" in err and "Valid names: relu, layer1, layer2, layer3, conv1" in err
    assert not out.exists()  # every layer is checked before any file is written


@pytest.mark.parametrize("content", [None, b"not an image"], ids=["missing", "unreadable"])
def test_an_unreadable_image_is_a_clear_error(tmp_path, capsys, content):
    path = tmp_path / "photo.png"
    if content is not None:
        path.write_bytes(content)
    with warnings.catch_warnings():
        # bagnet9 has no registered weights: building it warns, which this turns into a failure. The image is
        # checked first, so that a typo costs no network.
        warnings.simplefilter("error")
        assert main(["viz", "maps", "bagnet9", str(path), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("convzoo: error:") and "photo.png" in err
    assert ("no such image" if content is None else "not a readable image") in err
